//! The plugin sandbox through the real host: a clock and random numbers from the host, waits that
//! cannot block (in batches and in ticks), output checked against what the database can store,
//! a `stage-info` it cannot store refused at load and by `plugin check`, and manifests held to the
//! host's ceilings. Test plugins: `misbehaving`, `misbehaving-windows` and `long-version`.

use std::time::{Duration, Instant};

use iotstream::commands::plugin_check::{CheckConfig, check};
use iotstream::plugins::bindings::Reading as WitReading;
use iotstream::plugins::{Clock, Plugin, PluginError, PluginLimits, PluginRuntime, PluginState, SensorCatalog};
use iotstream::reading::SensorType;

use crate::support::{plugin_path, reading, scratch_folder, test_plugin_path};

/// A deadline short enough that passing it is quick.
const DEADLINE: Duration = Duration::from_millis(200);

fn runtime(clock: &Clock) -> PluginRuntime {
    PluginRuntime::with_limits(PluginLimits {
        call_deadline: DEADLINE,
        clock: clock.clone(),
        ..PluginLimits::default()
    })
    .expect("runtime")
}

fn load(runtime: &PluginRuntime, plugin: &str, mode: &str, after_calls: u32) -> Plugin {
    let config = format!(r#"{{"mode": "{mode}", "after_calls": {after_calls}}}"#);
    runtime.load_with_config(&test_plugin_path(plugin), Some(config)).expect("loads")
}

/// Readings of sensor `a` (lab_1, temperature) at `(ms, value)`, keyed in `catalog`.
fn readings(catalog: &mut SensorCatalog, at: &[(i64, f64)]) -> Vec<WitReading> {
    at.iter().map(|&(ms, v)| catalog.wit_reading(&reading("a", SensorType::Temperature, "lab_1", ms, v))).collect()
}

#[test]
fn plugins_read_the_hosts_clock_and_random_numbers_seeded_by_their_name() {
    let runtime = runtime(&Clock::manual());
    let mut catalog = SensorCatalog::default();
    let batch = readings(&mut catalog, &[(5_000, 1.0), (9_000, 2.0), (7_000, 3.0)]);
    // The clock of a batch call reads the batch's newest event time, not the machine's.
    let mut clock = load(&runtime, "misbehaving", "clock", 0);
    let scores: Vec<f64> = clock.detect(&catalog, &batch).expect("detects").iter().map(|d| d.score).collect();
    assert_eq!(scores, [9_000.0; 3]);
    let later = readings(&mut catalog, &[(61_000, 1.0)]);
    assert_eq!(clock.detect(&catalog, &later).expect("detects")[0].score, 61_000.0);

    // Two instances of one plugin draw the same random seed; a plugin of another name another.
    let random = |plugin: &mut Plugin| plugin.detect(&catalog, &batch).expect("detects")[0].score;
    let first = random(&mut load(&runtime, "misbehaving", "random", 0));
    assert_eq!(random(&mut load(&runtime, "misbehaving", "random", 0)), first);
    let scratch = scratch_folder("renamed");
    let renamed = scratch.path().join("renamed.wasm");
    std::fs::copy(test_plugin_path("misbehaving"), &renamed).expect("copy");
    let mut other = runtime.load_with_config(&renamed, Some(r#"{"mode": "random"}"#.into())).expect("loads");
    assert_ne!(random(&mut other), first);
}

#[test]
fn sleeps_in_aggregate_and_in_tick_cost_no_more_than_the_deadline() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batch = readings(&mut catalog, &[(1_000, 1.0)]);
    for (mode, tick) in [("sleep", false), ("sleep_in_tick", true)] {
        let mut plugin = load(&runtime, "misbehaving-windows", mode, 0);
        let started = Instant::now();
        let err = if tick {
            plugin.aggregate(&catalog, &batch).expect("aggregate behaves in this mode");
            plugin.tick(&catalog, 2_000).expect_err("the tick sleeps")
        } else {
            plugin.aggregate(&catalog, &batch).expect_err("aggregate sleeps")
        };
        assert!(started.elapsed() < DEADLINE, "{mode}: blocked for {:?}", started.elapsed());
        assert!(
            matches!(err, PluginError::Blocked { asked, deadline, .. } if asked == Duration::from_secs(60) && deadline == DEADLINE),
            "{mode}: {err:?}"
        );
        assert_eq!((plugin.state(), plugin.metrics().consecutive_failures), (PluginState::Backoff, 1), "{mode}");
    }
}

#[test]
fn windows_the_database_cannot_store_are_malformed_output_of_that_plugin() {
    let runtime = runtime(&Clock::manual());
    let mut catalog = SensorCatalog::default();
    let batch = readings(&mut catalog, &[(1_000, 1.0), (2_000, 2.0), (3_000, 3.0)]);
    for (mode, message) in [
        ("long_location", "aggregate 0: its location is 101 characters, more than the 100 the host stores"),
        ("nul_location", "aggregate 0: its location holds a control character at 3"),
        ("far_time", "aggregate 0: a window time outside years 1 to 9999"),
        ("duplicate", "aggregate 1: the same window (location, sensor type, start, revision) as an earlier one"),
    ] {
        let mut plugin = load(&runtime, "misbehaving-windows", mode, 1);
        let windows = plugin.aggregate(&catalog, &batch).expect("call 1 behaves");
        let w = &windows[..];
        assert_eq!(
            (w.len(), w[0].window_start_ms, w[0].window_end_ms, w[0].count, w[0].revision),
            (1, 1_000, 3_001, 3, 1)
        );
        // Mean 2; population variance ((1-2)² + 0 + (3-2)²) / 3 = 2/3.
        assert_eq!((w[0].avg, w[0].min, w[0].max, w[0].stddev), (2.0, 1.0, 3.0, (2.0f64 / 3.0).sqrt()));
        assert_eq!(w[0].location, "lab_1");
        let err = plugin.aggregate(&catalog, &batch).expect_err("call 2 misbehaves");
        assert!(matches!(&err, PluginError::MalformedOutput { message: m, .. } if m == message), "{mode}: {err:?}");
        assert_eq!((plugin.state(), plugin.metrics().restarts), (PluginState::Backoff, 0), "{mode}");
    }
}

#[test]
fn a_version_the_host_cannot_store_is_refused_at_load_and_by_plugin_check() {
    let expected =
        "plugin long-version cannot be loaded: its version is 76 characters, more than the 50 the host stores";
    let err = PluginRuntime::new().expect("runtime").load(&test_plugin_path("long-version")).err();
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some(expected));
    let checked = check(&CheckConfig {
        file: test_plugin_path("long-version"),
        config: None,
        readings: 10,
        max_flagged_share: 0.1,
    });
    assert_eq!(checked.map_err(|e| e.to_string()), Err(expected.to_owned()));
    // And an aggregator whose windows the host would refuse fails the check, naming why.
    let duplicate = check(&CheckConfig {
        file: test_plugin_path("misbehaving-windows"),
        config: Some(r#"{"mode": "duplicate"}"#.into()),
        readings: 2000,
        max_flagged_share: 0.1,
    });
    assert_eq!(
        duplicate.map_err(|e| e.to_string()),
        Err("plugin misbehaving-windows returned malformed output: aggregate 1: the same window (location, sensor \
             type, start, revision) as an earlier one"
            .to_owned())
    );
}

#[test]
fn a_manifest_past_the_hosts_ceilings_or_granting_its_environment_is_refused() {
    let scratch = scratch_folder("ceilings");
    let wasm = scratch.path().join("zscore.wasm");
    std::fs::copy(plugin_path("zscore"), &wasm).expect("copy");
    let manifest = scratch.path().join("zscore.toml");
    let runtime = PluginRuntime::new().expect("runtime");
    let refusal = |toml: &str| {
        std::fs::write(&manifest, toml).expect("manifest");
        runtime.load(&wasm).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let prefix = format!("plugin manifest {}: ", manifest.display());
    assert_eq!(
        refusal("[limits]\nmemory_mib = 4096\n"),
        format!("{prefix}asks for memory_mib = 4096, past the host's ceiling of 256 MiB")
    );
    assert_eq!(
        refusal("[limits]\ncall_deadline_ms = 600000\n"),
        format!("{prefix}asks for call_deadline_ms = 600000, past the host's ceiling of 5000 ms")
    );
    assert_eq!(
        refusal("[grants]\nenv = [\"DATABASE_URL\"]\n"),
        format!(
            "{prefix}grants the environment variable \"DATABASE_URL\", which the host does not allow plugins (allowed: none)"
        )
    );
    // The live detector a shadow names is stored beside each of its verdicts: it must fit too.
    assert_eq!(
        refusal(&format!("shadow_of = \"{}\"\n", "z".repeat(101))),
        "plugin zscore cannot be loaded: its shadow_of is 101 characters, more than the 100 the host stores"
    );
    std::fs::write(&manifest, "[limits]\nmemory_mib = 128\ncall_deadline_ms = 1000\n").expect("manifest");
    runtime.load(&wasm).expect("lower limits are always allowed");
}

#[test]
fn a_traps_message_is_fit_to_show() {
    let runtime = runtime(&Clock::manual());
    let mut catalog = SensorCatalog::default();
    let batch = readings(&mut catalog, &[(1_000, 1.0)]);
    let err = load(&runtime, "misbehaving", "trap", 0).detect(&catalog, &batch).expect_err("traps");
    let PluginError::Trap { message, .. } = &err else { panic!("{err:?}") };
    // wasmtime's message holds the wasm backtrace, a line per frame: the cause first, on one line,
    // cut to 200 characters.
    assert!(message.starts_with("wasm trap: wasm `unreachable` instruction executed; "), "{message}");
    assert_eq!((message.chars().count(), message.ends_with('…')), (200, true), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn the_operator_raises_the_ceilings_and_allows_variables_with_run_flags() {
    use iotstream::plugins::PluginCeilings;
    let defaults = crate::support::run_config(&[]).plugin_limits().ceilings;
    assert_eq!(
        defaults,
        PluginCeilings { memory_bytes: 256 << 20, call_deadline: Duration::from_secs(5), env_allowed: vec![] }
    );
    let flags = [
        "--plugin-max-memory-mib",
        "1024",
        "--plugin-max-call-deadline",
        "30s",
        "--plugin-env-allow",
        "TZ,IOTSTREAM_SANDBOX_TEST_UNSET",
    ];
    let limits = crate::support::run_config(&flags).plugin_limits();
    let expected = PluginCeilings {
        memory_bytes: 1 << 30,
        call_deadline: Duration::from_secs(30),
        env_allowed: vec!["TZ".into(), "IOTSTREAM_SANDBOX_TEST_UNSET".into()],
    };
    assert_eq!(limits.ceilings, expected);
    // Under those ceilings the manifest the defaults refuse loads.
    let scratch = scratch_folder("raised");
    let wasm = scratch.path().join("zscore.wasm");
    std::fs::copy(plugin_path("zscore"), &wasm).expect("copy");
    let manifest =
        "[limits]\nmemory_mib = 1024\ncall_deadline_ms = 30000\n[grants]\nenv = [\"IOTSTREAM_SANDBOX_TEST_UNSET\"]\n";
    std::fs::write(scratch.path().join("zscore.toml"), manifest).expect("manifest");
    assert!(PluginRuntime::new().expect("runtime").load(&wasm).is_err(), "refused under the defaults");
    PluginRuntime::with_limits(limits).expect("runtime").load(&wasm).expect("loads under the raised ceilings");
}

#[test]
fn plugin_text_published_to_the_api_is_cut_and_stripped_of_control_characters() {
    use iotstream::http::live::Live;
    use iotstream::store::Totals;
    use iotstream_api::PluginAction;
    let live = Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new());
    // A name is cut at 200 characters; a detail (the host's sentence quoting plugin text) at 1000.
    let error = format!("refused:\u{1b}[2J{}", "x".repeat(1500));
    live.set_plugin_failure(&format!("evil\n{}", "n".repeat(300)), Some(error.clone()));
    live.plugin_event(&format!("evil\n{}", "n".repeat(300)), PluginAction::Refused, error);
    let expected_error = format!("refused: [2J{}…", "x".repeat(1000 - "refused: [2J".len() - 1));
    let expected_name = format!("evil {}…", "n".repeat(200 - "evil ".len() - 1));
    let failures = live.plugin_failures();
    assert_eq!((&failures[0].plugin, &failures[0].error), (&expected_name, &expected_error));
    let events = live.plugin_events();
    assert_eq!((&events[0].plugin, &events[0].detail), (&expected_name, &expected_error));
}
