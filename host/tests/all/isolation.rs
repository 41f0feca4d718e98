//! Fault isolation through the real host: the `misbehaving` test plugin (built by `cargo xtask
//! plugins` into `dist/test-plugins/`) breaks the contract in each of its ways beside a
//! well-behaved z-score, under short limits and a manual clock, so nothing here waits on time.

use std::path::PathBuf;
use std::time::Duration;

use iotstream::plugins::bindings::{Detection, Reading as WitReading};
use iotstream::plugins::{Clock, Plugin, PluginError, PluginLimits, PluginRuntime, PluginState, SensorCatalog};
use iotstream::reading::SensorType;

use crate::support::{plugin_path, reading};

/// A memory cap and a deadline small enough that breaching them is quick.
const MEMORY_CAP: usize = 64 << 20;
const DEADLINE: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const QUARANTINE_AFTER: u32 = 4;
/// Readings per batch: two of each of three sensors.
const BATCH: usize = 6;

/// The built test plugin `name` (`dist/test-plugins/NAME.wasm`).
fn test_plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/test-plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask plugins` first", path.display());
    path
}

fn runtime(clock: &Clock) -> PluginRuntime {
    PluginRuntime::with_limits(PluginLimits {
        memory_bytes: MEMORY_CAP,
        call_deadline: DEADLINE,
        backoff_initial: FIRST_BACKOFF,
        backoff_max: Duration::from_secs(60),
        quarantine_after: QUARANTINE_AFTER,
        clock: clock.clone(),
        ..PluginLimits::default()
    })
    .expect("runtime")
}

fn misbehaving(runtime: &PluginRuntime, mode: &str, after_calls: u32) -> Plugin {
    let config = format!(r#"{{"mode": "{mode}", "after_calls": {after_calls}}}"#);
    runtime.load_with_config(&test_plugin_path("misbehaving"), Some(config)).expect("misbehaving loads")
}

fn zscore(runtime: &PluginRuntime) -> Plugin {
    runtime.load_with_config(&plugin_path("zscore"), Some(r#"{"history": 8, "min_history": 2}"#.into())).expect("loads")
}

/// `n` batches of sensors a, b, c, a, b, c with varying values, keyed in `catalog`.
fn batches(catalog: &mut SensorCatalog, n: usize) -> Vec<Vec<WitReading>> {
    (0..n * BATCH)
        .map(|i| {
            let sensor = ["a", "b", "c"][i % 3];
            let value = 20.0 + ((i * 7) % 5) as f64 + if i == 20 { 30.0 } else { 0.0 };
            catalog.wit_reading(&reading(sensor, SensorType::Temperature, "lab_1", i as i64 * 1000, value))
        })
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[WitReading]>::to_vec)
        .collect()
}

fn scores(detections: &[Detection]) -> Vec<f64> {
    detections.iter().map(|d| d.score).collect()
}

/// Checks the error of the call that misbehaved.
fn assert_failure(mode: &str, err: &PluginError) {
    let text = err.to_string();
    let right = match mode {
        "spin" => {
            matches!(err, PluginError::Deadline { deadline, .. } if *deadline == DEADLINE)
                && text == "plugin misbehaving ran past its CPU deadline of 200ms per call"
        }
        "allocate" => {
            matches!(err, PluginError::MemoryLimit { requested, limit, .. } if *limit == MEMORY_CAP && *requested > MEMORY_CAP)
                && text.contains(&format!("past its cap of {MEMORY_CAP} bytes"))
        }
        "trap" => matches!(err, PluginError::Trap { message, .. } if message.contains("unreachable")),
        "nan" => {
            matches!(err, PluginError::MalformedOutput { message, .. } if message == "score of reading 0 is not finite")
        }
        "short" => {
            matches!(err, PluginError::MalformedOutput { message, .. } if message == "5 scores for 6 readings")
        }
        "sleep" => {
            matches!(err, PluginError::Blocked { asked, deadline, .. } if *asked == Duration::from_secs(60) && *deadline == DEADLINE)
                && text
                    == "plugin misbehaving blocked in a WASI call (a sleep of 60s in one call) past its deadline of 200ms per call"
        }
        "refuse" => matches!(err, PluginError::Refused { message, .. }
            if message == "invalid input: misbehaving detector refuses call 3"),
        _ => false,
    };
    assert!(right, "{mode}: unexpected {err:?}");
}

#[test]
fn each_misbehaviour_costs_only_its_plugin_which_restarts_from_its_last_good_state() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batches = batches(&mut catalog, 5);
    let mut alone = zscore(&runtime);
    let expected: Vec<Vec<Detection>> = batches.iter().map(|b| alone.detect(&catalog, b).expect("detects")).collect();
    assert!(expected[3].iter().any(|d| d.score > 3.0), "the spike in batch 3 scores high");

    for mode in ["spin", "allocate", "trap", "nan", "short", "sleep"] {
        let mut good = zscore(&runtime);
        let mut bad = misbehaving(&runtime, mode, 2);
        let mut run_good = |i: usize| assert_eq!(good.detect(&catalog, &batches[i]).expect("good"), expected[i]);

        // Call 1 behaves: every sensor's readings count 1, 2.
        run_good(0);
        assert_eq!(scores(&bad.detect(&catalog, &batches[0]).expect("call 1")), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        let snapshot = bad.snapshot(&catalog).expect("snapshot");
        assert_eq!(bad.metrics().state_bytes, snapshot as u64);
        assert!(bad.metrics().memory_bytes > 0 && bad.metrics().memory_bytes <= MEMORY_CAP as u64);
        // Call 2 behaves too (counts 3, 4), but comes after the snapshot.
        run_good(1);
        assert_eq!(scores(&bad.detect(&catalog, &batches[1]).expect("call 2"))[..3], [3.0, 3.0, 3.0]);

        // Call 3 misbehaves; the z-score beside it gives what it gives alone.
        run_good(2);
        let err = bad.detect(&catalog, &batches[2]).expect_err("call 3 misbehaves");
        assert_failure(mode, &err);
        let m = bad.metrics();
        assert_eq!((m.errors, m.consecutive_failures, m.state, m.memory_bytes), (1, 1, PluginState::Backoff, 0));
        assert_eq!(m.last_error, Some(err.public()));

        // During the backoff its calls are skipped, and counted.
        run_good(3);
        let skipped = bad.detect(&catalog, &batches[3]).expect_err("skipped");
        assert!(
            matches!(skipped, PluginError::BackingOff { failures: 1, retry_in, .. } if retry_in == FIRST_BACKOFF),
            "{skipped:?}"
        );
        assert!(skipped.is_skip());
        assert_eq!((bad.metrics().skipped_readings, bad.metrics().calls), (6, 3 + 1));

        // After it, a new instance starts from the snapshot: counts 2 (batch 0), not 4 (batch 1).
        clock.advance(FIRST_BACKOFF);
        run_good(4);
        let resumed = bad.detect(&catalog, &batches[4]).expect("restarted");
        assert_eq!(scores(&resumed), [3.0, 3.0, 3.0, 4.0, 4.0, 4.0], "{mode}: not restarted from the snapshot");
        let m = bad.metrics();
        assert_eq!((m.restarts, m.consecutive_failures, m.state), (1, 0, PluginState::Running), "{mode}");
        assert_eq!(m.call_times.count(), m.calls);
    }
}

#[test]
fn a_refusal_keeps_the_instance_and_its_state() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batches = batches(&mut catalog, 4);
    let mut bad = misbehaving(&runtime, "refuse", 2);
    bad.detect(&catalog, &batches[0]).expect("call 1");
    bad.snapshot(&catalog).expect("snapshot");
    bad.detect(&catalog, &batches[1]).expect("call 2");
    assert_failure("refuse", &bad.detect(&catalog, &batches[2]).expect_err("call 3 refused"));
    clock.advance(FIRST_BACKOFF);
    // The instance lives on (no restart) with the counts of both good calls: 4 per sensor.
    let state = bad.export_state(&catalog).expect("exports");
    let mut reader = misbehaving(&runtime, "behave", 0);
    reader.import_state(&SensorCatalog::default(), &state).expect("imports");
    let mut fresh = SensorCatalog::default();
    let next = batches_for(&mut fresh);
    assert_eq!(scores(&reader.detect(&fresh, &next).expect("detects")), [5.0, 5.0, 5.0, 6.0, 6.0, 6.0]);
    let m = bad.metrics();
    assert_eq!((m.restarts, m.errors), (0, 1));
    // An export is no batch: the streak goes on until a detect succeeds.
    assert_eq!(m.consecutive_failures, 1);
}

/// One batch of the same three sensors, keyed afresh in `catalog`.
fn batches_for(catalog: &mut SensorCatalog) -> Vec<WitReading> {
    batches(catalog, 1).remove(0)
}

#[test]
fn failures_in_a_row_back_off_longer_then_quarantine_until_released() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batch = batches_for(&mut catalog);
    let mut good = zscore(&runtime);
    let mut bad = misbehaving(&runtime, "trap", 0);
    let mut backoff = FIRST_BACKOFF;
    for failure in 1..=QUARANTINE_AFTER {
        good.detect(&catalog, &batch).expect("the good plugin goes on");
        let err = bad.detect(&catalog, &batch).expect_err("traps");
        assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
        assert_eq!(bad.metrics().consecutive_failures, failure);
        if failure < QUARANTINE_AFTER {
            let skipped = bad.detect(&catalog, &batch).expect_err("skipped");
            assert!(matches!(skipped, PluginError::BackingOff { retry_in, .. } if retry_in == backoff), "{skipped:?}");
            clock.advance(backoff);
            backoff *= 2;
        }
    }
    let m = bad.metrics();
    assert_eq!((m.state, m.errors, m.restarts, m.calls), (PluginState::Quarantined, 4, 3, 4));
    clock.advance(Duration::from_secs(24 * 3600));
    let err = bad.detect(&catalog, &batch).expect_err("quarantined");
    assert_eq!(
        err.to_string(),
        "plugin misbehaving is quarantined after 4 failures in a row; it is not called until reloaded"
    );
    assert_eq!(bad.metrics().skipped_readings, (3 + 1) * BATCH as u64);

    bad.release_quarantine();
    assert_eq!((bad.state(), bad.metrics().consecutive_failures), (PluginState::Running, 0));
    let err = bad.detect(&catalog, &batch).expect_err("called again, and traps again");
    assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
    assert_eq!(bad.state(), PluginState::Backoff);
}

#[test]
fn a_plugin_that_fails_on_another_thread_leaves_the_host_thread_running() {
    let clock = Clock::manual();
    let runtime = std::sync::Arc::new(runtime(&clock));
    // As the pipeline does: plugin calls run on a blocking thread, the host waits for them.
    let worker = std::thread::spawn({
        let runtime = runtime.clone();
        move || {
            let mut catalog = SensorCatalog::default();
            let batch = batches_for(&mut catalog);
            let mut bad = misbehaving(&runtime, "trap", 0);
            bad.detect(&catalog, &batch).map(|_| ()).map_err(|err| err.to_string())
        }
    });
    let outcome = worker.join().expect("the worker thread did not panic");
    assert!(outcome.is_err_and(|err| err.starts_with("plugin misbehaving trapped")));
}

#[tokio::test]
async fn metrics_endpoint_serves_a_failing_plugins_counters_to_prometheus() {
    use iotstream::http::live::Live;
    use iotstream::http::{ApiState, router};
    use iotstream::pipeline::plugin_status;
    use iotstream::store::{Store, Totals};

    // Plugin calls block (WASI's sync bindings refuse to run on an async thread), as in the pipeline.
    let status = tokio::task::spawn_blocking(|| {
        let clock = Clock::manual();
        let runtime = runtime(&clock);
        let mut catalog = SensorCatalog::default();
        let batch = batches_for(&mut catalog);
        let mut bad = misbehaving(&runtime, "trap", 0);
        bad.detect(&catalog, &batch).expect_err("traps");
        bad.detect(&catalog, &batch).expect_err("skipped");
        plugin_status(&bad)
    })
    .await
    .expect("plugin thread");
    let live = std::sync::Arc::new(Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new()));
    live.set_plugins(vec![status]);
    // /metrics needs no database: a pool that never connects will do.
    let pool =
        sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://unused@127.0.0.1/unused").expect("lazy pool");
    let state = ApiState::new(Store::new(pool), live, tokio_util::sync::CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = router(state, "/nonexistent".into());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{addr}/metrics")).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.expect("body");
    let labels = r#"{plugin="misbehaving",kind="detector"}"#;
    for line in [
        format!("iotstream_plugin_calls_total{labels} 1"),
        format!("iotstream_plugin_readings_total{labels} 6"),
        format!("iotstream_plugin_errors_total{labels} 1"),
        format!("iotstream_plugin_restarts_total{labels} 0"),
        format!("iotstream_plugin_skipped_readings_total{labels} 6"),
        format!("iotstream_plugin_consecutive_failures{labels} 1"),
        format!("iotstream_plugin_memory_bytes{labels} 0"),
        r#"iotstream_plugin_state{plugin="misbehaving",kind="detector",state="backoff"} 1"#.into(),
        format!("iotstream_plugin_call_duration_seconds_count{labels} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
}

#[test]
fn a_plugin_that_sleeps_costs_at_most_its_deadline_and_backs_off_like_the_others() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batches = batches(&mut catalog, 3);
    let mut bad = misbehaving(&runtime, "sleep", 1);
    assert_eq!(scores(&bad.detect(&catalog, &batches[0]).expect("call 1")), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    bad.snapshot(&catalog).expect("snapshot");
    // Call 2 sleeps 60 s: a blocking WASI call, which the epoch deadline alone would not stop.
    let started = std::time::Instant::now();
    let err = bad.detect(&catalog, &batches[1]).expect_err("call 2 sleeps");
    let took = started.elapsed();
    assert!(took < DEADLINE, "the sleep blocked the caller for {took:?}");
    crate::support::report(&format!("SANDBOX a 60 s sleep under a {DEADLINE:?} deadline failed the call in {took:?}"));
    assert_failure("sleep", &err);
    assert_eq!((bad.metrics().consecutive_failures, bad.state()), (1, PluginState::Backoff));
    assert!(bad.detect(&catalog, &batches[2]).expect_err("skipped").is_skip());
}
