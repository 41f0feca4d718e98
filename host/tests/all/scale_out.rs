//! Hosts that share a topic through the consumer group, attacked: three `iotstream run` processes
//! with every built-in plugin in one group on a six-partition topic; one is killed with SIGKILL in
//! the middle of the stream and a third joins after. Every reading must be stored exactly once,
//! every window (merged from the partitions' partials) must equal a single pass over the readings,
//! and every z-score verdict must equal a single host's over the same messages.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iotstream::kafka::EmbeddedBroker;
use iotstream::reading::{SensorType, encode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;

use crate::support::{database_url, reading, scratch_folder};

const PARTITIONS: i32 = 6;
const SENSORS: i64 = 36;
/// Readings per sensor, one every 5 s of event time: 10 minutes, ten windows per sensor.
const PER_SENSOR: i64 = 120;
/// 2026-11-30T08:00:00Z.
const START_MS: i64 = 1_796_025_600_000;
const STEP_MS: i64 = 5_000;
/// The closing readings' event time: an hour after the stream, so every lane's watermark passes
/// every window of it.
const CLOSE_MS: i64 = START_MS + 3_600_000;
const LOCATIONS: [&str; 3] = ["lab_1", "office_2", "warehouse_3"];

/// Sensor `s`'s type, location and `k`-th value (plausible for its type; a spike every 40th).
fn sensor(s: i64) -> (String, SensorType, &'static str) {
    let sensor_type = SensorType::ALL[usize::try_from(s).expect("small") % SensorType::ALL.len()];
    (format!("mh-{s:02}"), sensor_type, LOCATIONS[usize::try_from(s / 5).expect("small") % LOCATIONS.len()])
}

fn value(sensor_type: SensorType, s: i64, k: i64) -> f64 {
    let (base, swing) = match sensor_type {
        SensorType::Temperature => (22.0, 1.5),
        SensorType::Humidity => (45.0, 4.0),
        SensorType::AirQuality => (60.0, 8.0),
        SensorType::Pressure => (1013.0, 2.0),
        SensorType::Co2 => (600.0, 40.0),
    };
    let wave = ((k as f64) * 0.21 + s as f64).sin() * swing + ((k * 7 + s) % 11) as f64 * swing * 0.05;
    let spike = if k % 40 == 39 { 6.0 * swing } else { 0.0 };
    // Two decimals, as sensors report.
    ((base + wave + spike) * 100.0).round() / 100.0
}

/// One produced reading: key, event time, value, and where it is stored.
#[derive(Debug, Clone)]
struct Sent {
    sensor: String,
    sensor_type: SensorType,
    location: &'static str,
    at_ms: i64,
    value: f64,
}

/// The stream, in event-time order across sensors.
fn stream() -> Vec<Sent> {
    let mut sent = Vec::new();
    for k in 0..PER_SENSOR {
        for s in 0..SENSORS {
            let (sensor, sensor_type, location) = sensor(s);
            sent.push(Sent {
                value: value(sensor_type, s, k),
                sensor,
                sensor_type,
                location,
                at_ms: START_MS + k * STEP_MS,
            });
        }
    }
    sent
}

async fn produce(producer: &FutureProducer, topic: &str, readings: &[Sent]) {
    for r in readings {
        let payload = encode(&reading(&r.sensor, r.sensor_type, r.location, r.at_ms, r.value));
        let record = FutureRecord::to(topic).key(&r.sensor).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(err, _)| err).expect("acknowledged");
    }
}

/// One reading per partition an hour after the stream (a sensor of its own, in a location of its
/// own), which moves every lane's watermark past every window of the stream.
async fn close_windows(producer: &FutureProducer, topic: &str) {
    for partition in 0..PARTITIONS {
        let key = format!("closer-{partition}");
        let payload = encode(&reading(&key, SensorType::Temperature, "closing_room", CLOSE_MS, 21.0));
        let record = FutureRecord::to(topic).partition(partition).key(&key).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(err, _)| err).expect("acknowledged");
    }
}

/// An `iotstream run` process of group `group` on `topic`, logging JSON to `log`.
fn host(name: &str, brokers: &str, topic: &str, group: &str, url: &str, log: &std::path::Path) -> Child {
    let plugins = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins");
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_iotstream"))
        .args(["run", "--brokers", brokers, "--topic", topic, "--group", group, "--host-name", name])
        .args(["--database-url", url, "--listen", "127.0.0.1:0", "--builtin-plugins", plugins])
        .args(["--max-age", "off", "--checkpoint-interval", "2s", "--log-format", "json"])
        // The group notices a member gone within 6 s (the mock cluster waits up to the session
        // timeout for a rebalance's members).
        .args(["--kafka-option", "session.timeout.ms=6000", "--kafka-option", "heartbeat.interval.ms=500"])
        .env("IOTSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start iotstream")
}

async fn scalar(pool: &PgPool, sql: &'static str, topic: &str) -> i64 {
    sqlx::query_scalar(sql).bind(topic).fetch_one(pool).await.expect("query")
}

const STORED: &str =
    "SELECT count(*) FROM sensor_readings r JOIN kafka_sources k ON k.id = r.source_id WHERE k.topic = $1";

/// Waits until `sql` (bound to `topic`) counts `expected`, for up to `secs`.
async fn wait_until(pool: &PgPool, what: &str, sql: &'static str, topic: &str, expected: i64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = scalar(pool, sql, topic).await;
        if now == expected {
            return;
        }
        assert!(now < expected, "{what}: {now}, more than {expected}");
        assert!(Instant::now() < deadline, "{what}: {now} after {secs} s, expected {expected}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The hosts owning the partitions of `topic`, by partition.
async fn owners(pool: &PgPool, topic: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT o.owner FROM partition_owners o JOIN kafka_sources k ON k.id = o.source_id WHERE k.topic = $1 \
         ORDER BY o.kafka_partition",
    )
    .bind(topic)
    .fetch_all(pool)
    .await
    .expect("owners")
}

async fn wait_for_owners(pool: &PgPool, topic: &str, hosts: &[&str], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = owners(pool, topic).await;
        let covered = now.len() == PARTITIONS as usize;
        if covered
            && now.iter().all(|o| hosts.contains(&o.as_str()))
            && hosts.iter().all(|h| now.iter().any(|o| o == h))
        {
            return;
        }
        assert!(Instant::now() < deadline, "partitions never owned by {hosts:?} alone: {now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "host {pid} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A window: (location, sensor type, start in ms).
type WindowKey = (String, String, i64);
/// A window's (count, avg, population stddev, min, max).
type WindowStats = (i64, f64, f64, f64, f64);
/// A merged window as `sensor_aggregates_latest` shows it.
type StoredWindow = (String, String, chrono::DateTime<chrono::Utc>, i32, f64, f64, f64, f64, i32);

/// Every window of the stream as one pass over its readings computes it.
fn reference_windows(sent: &[Sent]) -> BTreeMap<WindowKey, WindowStats> {
    let mut groups: BTreeMap<(String, String, i64), Vec<f64>> = BTreeMap::new();
    for r in sent {
        let start = r.at_ms - r.at_ms.rem_euclid(60_000);
        groups.entry((r.location.to_owned(), r.sensor_type.as_str().to_owned(), start)).or_default().push(r.value);
    }
    groups
        .into_iter()
        .map(|(key, values)| {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (key, (values.len() as i64, mean, var.sqrt(), min, max))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The z-score verdict and score of every reading of `topic`, by (sensor, event time).
async fn zscores(pool: &PgPool, topic: &str) -> BTreeMap<(String, i64), (String, Option<f64>)> {
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>, String, Option<f64>)> = sqlx::query_as(
        "SELECT p.sensor_id, p.timestamp, p.verdict::text, p.anomaly_score FROM ml_anomaly_predictions p \
         JOIN kafka_sources k ON k.id = p.source_id WHERE k.topic = $1 AND p.detector = 'zscore'",
    )
    .bind(topic)
    .fetch_all(pool)
    .await
    .expect("verdicts");
    rows.into_iter().map(|(s, at, v, score)| ((s, at.timestamp_millis()), (v, score))).collect()
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn three_hosts_one_killed_one_added_store_every_reading_once_with_exact_windows(pool: PgPool) {
    let url = database_url(&pool);
    let logs = scratch_folder("scale-out");
    let sent = stream();
    let total = sent.len() as i64 + i64::from(PARTITIONS);
    let third = sent.len() / 3;

    // The shared topic, on one broker; the single-host reference, on another.
    let shared = EmbeddedBroker::start("iot_shared", PARTITIONS).expect("broker");
    let single = EmbeddedBroker::start("iot_single", PARTITIONS).expect("broker");
    let brokers = |b: &EmbeddedBroker| iotstream::kafka::Brokers::new(b.bootstrap_servers());
    let to_shared = iotstream::kafka::producer(&brokers(&shared)).expect("producer");
    let to_single = iotstream::kafka::producer(&brokers(&single)).expect("producer");
    let started = Instant::now();

    let a = host("host-a", shared.bootstrap_servers(), "iot_shared", "scale", &url, &logs.path().join("a.log"));
    let b = host("host-b", shared.bootstrap_servers(), "iot_shared", "scale", &url, &logs.path().join("b.log"));
    wait_for_owners(&pool, "iot_shared", &["host-a", "host-b"], 90).await;
    produce(&to_shared, "iot_shared", &sent[..third]).await;
    wait_until(&pool, "the first third stored", STORED, "iot_shared", third as i64, 90).await;

    // The second third: host b is killed half-way through it, mid-stream.
    produce(&to_shared, "iot_shared", &sent[third..third + third / 2]).await;
    let mut b = b;
    b.kill().expect("SIGKILL");
    let _ = b.wait();
    produce(&to_shared, "iot_shared", &sent[third + third / 2..2 * third]).await;
    wait_for_owners(&pool, "iot_shared", &["host-a"], 90).await;

    // A third host joins; the rest of the stream and the closing readings.
    let c = host("host-c", shared.bootstrap_servers(), "iot_shared", "scale", &url, &logs.path().join("c.log"));
    produce(&to_shared, "iot_shared", &sent[2 * third..]).await;
    wait_for_owners(&pool, "iot_shared", &["host-a", "host-c"], 90).await;
    close_windows(&to_shared, "iot_shared").await;
    wait_until(&pool, "every reading stored", STORED, "iot_shared", total, 120).await;
    let reference = reference_windows(&sent);
    let windows_sql = "SELECT count(*) FROM sensor_aggregates_latest WHERE location <> 'closing_room' \
                       AND stage = 'tumbling-window' AND source_id = (SELECT id FROM kafka_sources WHERE topic = $1)";
    wait_until(&pool, "every window of the stream stored", windows_sql, "iot_shared", reference.len() as i64, 60).await;
    let shared_elapsed = started.elapsed();
    stop(a);
    stop(c);

    // The single-host reference run over the same messages (same keys, same partitions).
    produce(&to_single, "iot_single", &sent).await;
    close_windows(&to_single, "iot_single").await;
    let s = host("single", single.bootstrap_servers(), "iot_single", "single", &url, &logs.path().join("s.log"));
    wait_until(&pool, "every reading stored by the single host", STORED, "iot_single", total, 120).await;
    stop(s);

    // Exactly once: as many rows as messages, no message twice, the readings sent.
    let distinct = scalar(
        &pool,
        "SELECT count(DISTINCT (r.kafka_partition, r.kafka_offset)) FROM sensor_readings r \
         JOIN kafka_sources k ON k.id = r.source_id WHERE k.topic = $1",
        "iot_shared",
    )
    .await;
    let rows = scalar(&pool, STORED, "iot_shared").await;
    let mut stored: Vec<(String, i64, f64)> = sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>, f64)>(
        "SELECT r.sensor_id, r.timestamp, r.value FROM sensor_readings r JOIN kafka_sources k ON k.id = r.source_id \
         WHERE k.topic = 'iot_shared' AND r.sensor_id NOT LIKE 'closer-%'",
    )
    .fetch_all(&pool)
    .await
    .expect("readings")
    .into_iter()
    .map(|(s, at, v)| (s, at.timestamp_millis(), v))
    .collect();
    stored.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    let mut expected: Vec<(String, i64, f64)> = sent.iter().map(|r| (r.sensor.clone(), r.at_ms, r.value)).collect();
    expected.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    eprintln!(
        "scale-out: {total} messages, {rows} rows, {} duplicates, {} lost, {:.1} s with the rebalances",
        rows - distinct,
        total - distinct,
        shared_elapsed.as_secs_f64()
    );
    assert_eq!((rows, distinct), (total, total), "every message stored exactly once");
    let first_difference = stored.iter().zip(&expected).find(|(got, sent)| got != sent);
    assert_eq!((stored.len(), first_difference), (expected.len(), None), "the readings sent, each once");

    // Windows: the merge of the partitions' partials equals a single pass, and counts the
    // readings the detectors flagged.
    let windows: Vec<StoredWindow> = sqlx::query_as(
        "SELECT location, sensor_type, window_start, count_readings, avg_value, stddev_value, min_value, max_value, \
         anomaly_count FROM sensor_aggregates_latest WHERE stage = 'tumbling-window' AND location <> 'closing_room' \
         AND source_id = (SELECT id FROM kafka_sources WHERE topic = 'iot_shared')",
    )
    .fetch_all(&pool)
    .await
    .expect("windows");
    assert_eq!(windows.len(), reference.len(), "one merged window per (location, type, minute)");
    for (location, sensor_type, start, count, avg, stddev, min, max, anomalies) in windows {
        let key = (location.clone(), sensor_type.clone(), start.timestamp_millis());
        let (n, mean, sd, lo, hi) = reference.get(&key).copied().unwrap_or_else(|| panic!("unexpected window {key:?}"));
        assert_eq!(i64::from(count), n, "{key:?}");
        assert!(close(avg, mean) && close(stddev, sd), "{key:?}: avg {avg} vs {mean}, stddev {stddev} vs {sd}");
        assert_eq!((min, max), (lo, hi), "{key:?}");
        let flagged: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sensor_readings r JOIN kafka_sources k ON k.id = r.source_id \
             WHERE k.topic = 'iot_shared' AND r.flagged AND r.location = $1 AND r.sensor_type = $2 \
             AND r.timestamp >= $3 AND r.timestamp < $3 + interval '1 minute'",
        )
        .bind(&location)
        .bind(&sensor_type)
        .bind(start)
        .fetch_one(&pool)
        .await
        .expect("flagged");
        assert_eq!(i64::from(anomalies), flagged, "{key:?}: the window counts the readings flagged");
    }

    // z-scores: every verdict and score as the single host's.
    let (shared_z, single_z) = (zscores(&pool, "iot_shared").await, zscores(&pool, "iot_single").await);
    assert_eq!(shared_z.len(), total as usize);
    assert_eq!(shared_z, single_z, "z-score verdicts equal a single host's");
    assert!(shared_z.values().any(|(v, _)| v == "anomaly"), "the spikes are judged anomalies");
}
