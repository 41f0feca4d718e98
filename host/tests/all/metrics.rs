//! `/metrics` of a running host covers the pipeline, not only the plugins: after a known input
//! (20 readings and 2 malformed messages, one API request) every family docs/metrics.md lists is
//! there, with its type, and with the value that input must give. The consumer group's metrics
//! (partitions owned, partitions moved, the pipeline's pause) have the values the live view was
//! told.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iotstream::reading::{SensorType, encode};
use sqlx::PgPool;

use crate::support::{Host, count_rows, reading, wait_for};

/// A scrape: each sample (`name{labels}`) with its value, and each family's `# TYPE`.
pub(crate) struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    async fn of(host: &Host) -> Scrape {
        Scrape::at(host.addr).await
    }

    pub(crate) async fn at(addr: std::net::SocketAddr) -> Scrape {
        let text = reqwest::get(format!("http://{addr}/metrics")).await.expect("scrape").text().await.expect("text");
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declared.split_once(' ').expect("# TYPE name kind");
                types.insert(family.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (sample, value) = line.rsplit_once(' ').expect("sample value");
                samples.insert(sample.to_owned(), value.parse().unwrap_or_else(|_| panic!("value of {line}")));
            }
        }
        Scrape { samples, types }
    }

    pub(crate) fn value(&self, sample: &str) -> f64 {
        *self.samples.get(sample).unwrap_or_else(|| panic!("{sample} missing from {:#?}", self.samples.keys()))
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn every_family_is_scraped_with_the_value_the_input_gives(pool: PgPool) {
    let started = Instant::now();
    let host = Host::start(pool.clone(), None, &["--checkpoint-interval", "1s"]).await;
    let mut payloads = Vec::new();
    for i in 0..20 {
        let r = reading("co2-1", SensorType::Co2, "office_1", 1_767_225_600_000 + i * 1000, 400.0 + i as f64);
        payloads.push((r.sensor_id.to_string(), encode(&r)));
    }
    payloads.push(("bad-1".to_owned(), b"not json".to_vec()));
    payloads.push(("bad-2".to_owned(), b"{".to_vec()));
    host.produce(&payloads).await;
    wait_for("sensor_readings", 20, || count_rows(&pool, "sensor_readings")).await;
    wait_for("dead_letters", 2, || count_rows(&pool, "dead_letters")).await;
    let stats = reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("stats");
    assert_eq!(stats.status().as_u16(), 200);

    // The lag and the checkpoint age come from the live view: wait until both are reported.
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let scrape = Scrape::of(&host).await;
        let lag = scrape.samples.get(r#"iotstream_consumer_lag_messages{partition="0"}"#);
        if lag == Some(&0.0) && scrape.samples.contains_key("iotstream_checkpoint_age_seconds") {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no lag 0 and checkpoint age: {:#?}", scrape.samples);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let families = [
        ("iotstream_messages_received", "counter"),
        ("iotstream_readings_stored", "counter"),
        ("iotstream_dead_letters", "counter"),
        ("iotstream_batch_messages", "histogram"),
        ("iotstream_batch_write_seconds", "histogram"),
        ("iotstream_reading_writes", "counter"),
        ("iotstream_http_requests", "counter"),
        ("iotstream_database_up", "gauge"),
        ("iotstream_broker_up", "gauge"),
        ("iotstream_pipeline_running", "gauge"),
        ("iotstream_checkpoint_age_seconds", "gauge"),
        ("iotstream_consumer_lag_messages", "gauge"),
        ("iotstream_partitions_owned", "gauge"),
        ("iotstream_rebalances", "counter"),
        ("iotstream_rebalance_pause_seconds", "histogram"),
        ("iotstream_pipeline_loop_seconds", "counter"),
        ("iotstream_plugin_calls", "counter"),
        ("iotstream_plugin_readings", "counter"),
        ("iotstream_plugin_outputs", "counter"),
        ("iotstream_plugin_errors", "counter"),
        ("iotstream_plugin_restarts", "counter"),
        ("iotstream_plugin_skipped_readings", "counter"),
        ("iotstream_plugin_consecutive_failures", "gauge"),
        ("iotstream_plugin_memory_bytes", "gauge"),
        ("iotstream_plugin_exported_state_bytes", "gauge"),
        ("iotstream_plugin_state", "gauge"),
        ("iotstream_plugin_call_duration_seconds", "histogram"),
    ];
    for (family, kind) in families {
        // The 0.0.4 text format declares a counter by its sample's name, `_total` included.
        let declared = if kind == "counter" { format!("{family}_total") } else { family.to_owned() };
        assert_eq!(scrape.types.get(&declared).map(String::as_str), Some(kind), "{declared}: {:?}", scrape.types);
    }

    assert_eq!(scrape.value("iotstream_messages_received_total"), 22.0);
    assert_eq!(scrape.value("iotstream_readings_stored_total"), 20.0);
    assert_eq!(scrape.value(r#"iotstream_dead_letters_total{reason="malformed"}"#), 2.0);
    // Every message was in exactly one batch, and every batch was written once.
    assert_eq!(scrape.value("iotstream_batch_messages_sum"), 22.0);
    let batches = scrape.value("iotstream_batch_messages_count");
    assert!((1.0..=22.0).contains(&batches), "{batches} batches");
    assert_eq!(scrape.value("iotstream_batch_write_seconds_count"), batches);
    let written = scrape.value("iotstream_batch_write_seconds_sum");
    assert!(written > 0.0 && written < 10.0, "{written} s writing");
    // A first run replays nothing: every transaction with readings copied them.
    let copies = scrape.value(r#"iotstream_reading_writes_total{path="copy"}"#);
    assert!(copies >= 1.0 && copies <= 2.0 * batches, "{copies} copies in {batches} batches");
    assert_eq!(scrape.value(r#"iotstream_reading_writes_total{path="insert"}"#), 0.0);
    assert_eq!(scrape.value(r#"iotstream_reading_writes_total{path="copy_redone"}"#), 0.0);
    assert_eq!(scrape.value(r#"iotstream_http_requests_total{route="/api/stats",status="200"}"#), 1.0);
    // The group's one host was given the topic's three partitions when it joined, and kept them.
    assert_eq!(scrape.value("iotstream_partitions_owned"), 3.0);
    assert_eq!(scrape.value(r#"iotstream_rebalances_total{change="assigned"}"#), 3.0);
    assert_eq!(scrape.value(r#"iotstream_rebalances_total{change="revoked"}"#), 0.0);
    assert_eq!(scrape.value("iotstream_rebalance_pause_seconds_count"), 1.0);
    for up in ["iotstream_database_up", "iotstream_broker_up", "iotstream_pipeline_running"] {
        assert_eq!(scrape.value(up), 1.0, "{up}");
    }
    // The loop waited for the messages (the host started before they were produced), ran the
    // stages of every batch, and its phases never add up to more than the time it ran.
    let phase = |p: &str| scrape.value(&format!(r#"iotstream_pipeline_loop_seconds_total{{phase="{p}"}}"#));
    let (source, stages, database) = (phase("source"), phase("stages"), phase("database"));
    assert!(source > 0.0 && stages > 0.0 && database >= 0.0, "{source} / {stages} / {database} s");
    let ran = started.elapsed().as_secs_f64();
    assert!(source + stages + database <= ran, "{source} + {stages} + {database} s in {ran} s");
    let age = scrape.value("iotstream_checkpoint_age_seconds");
    assert!((0.0..5.0).contains(&age), "checkpoint {age} s ago with a 1 s interval");
    // The z-score detector saw every reading, in calls it timed.
    let zscore = r#"{plugin="zscore",kind="detector"}"#;
    assert_eq!(scrape.value(&format!("iotstream_plugin_readings_total{zscore}")), 20.0);
    let calls = scrape.value(&format!("iotstream_plugin_calls_total{zscore}"));
    assert!(calls >= 1.0, "{calls} calls");
    assert_eq!(scrape.value(&format!("iotstream_plugin_call_duration_seconds_count{zscore}")), calls);
    assert_eq!(scrape.value(&format!("iotstream_plugin_errors_total{zscore}")), 0.0);
    assert_eq!(scrape.value(r#"iotstream_plugin_state{plugin="zscore",kind="detector",state="running"}"#), 1.0);
    assert!(scrape.value(&format!("iotstream_plugin_memory_bytes{zscore}")) >= 65536.0, "one wasm page at least");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_groups_metrics_are_what_the_live_view_was_told(pool: PgPool) {
    use iotstream::http::live::Live;
    use iotstream::http::{ApiState, router};
    use iotstream_api::RebalanceEvent;

    let live = std::sync::Arc::new(Live::new(iotstream::store::Totals::default(), Vec::new(), Vec::new(), Vec::new()));
    let state =
        ApiState::new(iotstream::store::Store::new(pool), live.clone(), tokio_util::sync::CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router(state, "/nonexistent".into())).await });
    // Before the group has said anything: no partition count, no partition moved.
    let scrape = Scrape::at(addr).await;
    assert!(!scrape.samples.contains_key("iotstream_partitions_owned"), "{:#?}", scrape.samples);
    assert_eq!(scrape.value(r#"iotstream_rebalances_total{change="assigned"}"#), 0.0);
    assert_eq!(scrape.value("iotstream_rebalance_pause_seconds_count"), 0.0);

    // Given 0, 1 and 2 at start (pause not measured), then 1 taken away (a 250 ms pause).
    let event = |assigned: Vec<i32>, revoked: Vec<i32>, pause_ms| RebalanceEvent {
        at: chrono::Utc::now(),
        host: "node-a".into(),
        assigned,
        revoked,
        pause_ms,
    };
    live.set_consumer_lag(BTreeMap::from([(0, 4), (1, 9), (2, 0)]));
    live.set_assignment("node-a", vec![0, 1, 2]);
    live.record_rebalance(event(vec![0, 1, 2], vec![], None));
    live.set_assignment("node-a", vec![0, 2]);
    live.record_rebalance(event(vec![], vec![1], Some(250.0)));

    let scrape = Scrape::at(addr).await;
    for (family, kind) in [
        ("iotstream_partitions_owned", "gauge"),
        ("iotstream_rebalances_total", "counter"),
        ("iotstream_rebalance_pause_seconds", "histogram"),
        ("iotstream_consumer_lag_messages", "gauge"),
    ] {
        assert_eq!(scrape.types.get(family).map(String::as_str), Some(kind), "{family}: {:?}", scrape.types);
    }
    assert_eq!(scrape.value("iotstream_partitions_owned"), 2.0);
    assert_eq!(scrape.value(r#"iotstream_rebalances_total{change="assigned"}"#), 3.0);
    assert_eq!(scrape.value(r#"iotstream_rebalances_total{change="revoked"}"#), 1.0);
    assert_eq!(scrape.value("iotstream_rebalance_pause_seconds_count"), 1.0);
    assert_eq!(scrape.value("iotstream_rebalance_pause_seconds_sum"), 0.25);
    // 0.25 s falls in (0.16, 0.32].
    assert_eq!(scrape.value(r#"iotstream_rebalance_pause_seconds_bucket{le="0.16"}"#), 0.0);
    assert_eq!(scrape.value(r#"iotstream_rebalance_pause_seconds_bucket{le="0.32"}"#), 1.0);
    // The lag of the partition taken away is no longer this host's to report.
    let lag: Vec<&String> =
        scrape.samples.keys().filter(|s| s.starts_with("iotstream_consumer_lag_messages")).collect();
    assert_eq!(
        lag,
        [r#"iotstream_consumer_lag_messages{partition="0"}"#, r#"iotstream_consumer_lag_messages{partition="2"}"#]
    );
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_restarted_host_inserts_what_it_replays_and_copies_what_is_new(pool: PgPool) {
    let payloads = |from: i64| -> Vec<(String, Vec<u8>)> {
        (from..from + 50)
            .map(|i| ("s1".to_owned(), encode(&reading("s1", SensorType::Co2, "lab", i * 1000, 500.0 + i as f64))))
            .collect()
    };
    let broker = iotstream::kafka::EmbeddedBroker::start("iot_sensors", 3).expect("broker");
    let first = Host::start_on(broker, pool.clone(), None, &[]).await;
    first.produce(&payloads(0)).await;
    wait_for("readings", 50, || count_rows(&pool, "sensor_readings")).await;
    let (stopped, broker) = first.stop_keeping_broker().await;
    stopped.expect("clean stop");
    // Without its checkpoints the next host replays the partition from its start to rebuild the
    // stages' state: the 50 stored readings come again.
    sqlx::query("DELETE FROM stage_checkpoints").execute(&pool).await.expect("checkpoints deleted");

    let second = Host::start_on(broker, pool.clone(), None, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Scrape::of(&second).await.value("iotstream_messages_received_total") < 50.0 {
        assert!(Instant::now() < deadline, "the replay was not consumed in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.produce(&payloads(50)).await;
    wait_for("readings after the replay", 100, || count_rows(&pool, "sensor_readings")).await;
    let scrape = Scrape::of(&second).await;
    second.stop().await.expect("clean stop");

    // The replayed batches skipped what was stored; the new ones were copied; no COPY met a stored
    // reading (which would mean the host took a replayed batch for fresh).
    assert!(scrape.value(r#"iotstream_reading_writes_total{path="insert"}"#) >= 1.0, "{:#?}", scrape.samples);
    assert!(scrape.value(r#"iotstream_reading_writes_total{path="copy"}"#) >= 1.0, "{:#?}", scrape.samples);
    assert_eq!(scrape.value(r#"iotstream_reading_writes_total{path="copy_redone"}"#), 0.0);
    assert_eq!(scrape.value("iotstream_readings_stored_total"), 50.0);
    let offsets: Vec<i64> = sqlx::query_scalar("SELECT kafka_offset FROM sensor_readings ORDER BY kafka_offset")
        .fetch_all(&pool)
        .await
        .expect("offsets");
    assert_eq!(offsets, (0..100).collect::<Vec<i64>>());
}
