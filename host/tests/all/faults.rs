//! Fault injection: the host killed with SIGKILL again and again, its database cut off, its broker
//! taken down, all while readings stream in. Every test asserts that each reading produced is
//! stored exactly once (and, for the kills, that every window and every z-score verdict equals a
//! reference computed here from the produced readings, and every Isolation Forest verdict and model
//! equals one uncrashed forest fed each partition's readings in offset order), and prints its
//! figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use iotstream::kafka::EmbeddedBroker;
use iotstream::reading::{Reading, SensorType, encode};
use iotstream_plugin_sdk::detector::Judgement;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{
    Host, HostProcess, count_rows, database_url, plugin_path, reading, report, scratch_folder, wait_for,
    zscore_reference, zscore_verdicts,
};

const TOPIC: &str = "iot_sensors";
const SENSORS: usize = 40;
const MINUTE: i64 = 60_000;

/// `n` readings of a fleet of [`SENSORS`] sensors, round after round, one second of event time
/// apart, starting an hour ago: smooth signals with noise and, now and then, a spike for the
/// z-score detector to flag. Seeded: the same every run.
fn fleet(n: usize, seed: u64) -> Vec<Reading> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Utc::now().timestamp_millis() / MINUTE * MINUTE - 60 * MINUTE;
    (0..n)
        .map(|i| {
            let (round, sensor) = ((i / SENSORS) as i64, i % SENSORS);
            let sensor_type = SensorType::ALL[sensor % 5];
            let location = format!("room_{}", sensor / 10);
            let base = [21.0, 45.0, 30.0, 1013.0, 600.0][sensor % 5];
            let spike = if rng.random_bool(0.01) { 25.0 } else { 0.0 };
            let value = base + (round as f64 / 30.0).sin() + rng.random_range(-0.5..0.5) + spike;
            let value = (value * 100.0).round() / 100.0;
            reading(&format!("s{sensor:02}"), sensor_type, &location, start + round * 1000, value)
        })
        .collect()
}

/// Produces `readings` keyed by sensor at about `per_second`, in order; returns how many the broker
/// acknowledged (librdkafka retries through a broker outage). Each sensor's gateway clock is off by
/// up to 3 s, so the Kafka timestamps do not follow the order of arrival across partitions.
async fn produce(brokers: String, readings: Arc<Vec<Reading>>, per_second: usize) -> usize {
    let producer: FutureProducer =
        iotstream::kafka::producer(&iotstream::kafka::Brokers::new(brokers.as_str())).expect("producer");
    let chunk = (per_second / 20).max(1);
    let mut deliveries = Vec::with_capacity(readings.len());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for batch in readings.chunks(chunk) {
        tick.tick().await;
        for r in batch {
            let payload = encode(r);
            let delivery = producer
                .send_result(
                    FutureRecord::to(TOPIC)
                        .key(r.sensor_id.as_str())
                        .payload(&payload)
                        .timestamp(gateway_clock(&r.sensor_id)),
                )
                .map_err(|(err, _)| err)
                .expect("enqueue");
            deliveries.push(delivery);
        }
    }
    let mut acknowledged = 0;
    for delivery in deliveries {
        if matches!(delivery.await, Ok(Ok(_))) {
            acknowledged += 1;
        }
    }
    acknowledged
}

/// Now, by the clock of `sensor`'s gateway: off by -3 s to +3 s, in whole seconds, per sensor.
fn gateway_clock(sensor: &str) -> i64 {
    let skew = sensor.bytes().map(i64::from).sum::<i64>() % 7 - 3;
    Utc::now().timestamp_millis() + skew * 1000
}

/// A folder holding copies of the built `plugins`, with their configurations.
fn plugins_folder(name: &str, plugins: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = scratch_folder(name);
    for (plugin, config) in plugins {
        std::fs::copy(plugin_path(plugin), dir.path().join(format!("{plugin}.wasm"))).expect("copy plugin");
        std::fs::write(dir.path().join(format!("{plugin}.json")), config).expect("plugin config");
    }
    dir
}

/// Starts the `iotstream` binary on `brokers` and the test's database.
fn spawn_host(brokers: &str, url: &str, plugins: &Path) -> HostProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotstream"));
    command
        .args(["run", "--brokers", brokers, "--database-url", url, "--listen", "127.0.0.1:0"])
        .args(["--no-builtin-plugins", "--plugins", &plugins.display().to_string(), "--checkpoint-interval", "1s"])
        .args(["--batch-max", "500", "--batch-linger-ms", "20"])
        // A restart is given the killed host's partitions once the group notices it is gone: within
        // the session timeout (45 s by default, 6 s here).
        .args(["--kafka-option", "session.timeout.ms=6000", "--kafka-option", "heartbeat.interval.ms=500"])
        .env("IOTSTREAM_LOG", "warn,iotstream::app=info");
    HostProcess::spawn(command)
}

/// (rows, distinct messages) of `sensor_readings`.
async fn stored(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM sensor_readings")
        .fetch_one(pool)
        .await
        .expect("count readings")
}

/// Asserts every produced reading is stored once (by its sensor and event time, which the test
/// makes unique) and prints the figures.
async fn assert_exactly_once(test: &str, pool: &PgPool, produced: &[Reading], extra: &str) {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (sensor_id, timestamp)) FROM sensor_readings")
            .fetch_one(pool)
            .await
            .expect("count readings");
    let duplicates = rows - distinct;
    let lost = produced.len() as i64 - distinct;
    crate::support::report(&format!(
        "FAULT {test}: produced {} stored {rows} distinct {distinct} duplicates {duplicates} lost {lost}{extra}",
        produced.len()
    ));
    assert_eq!((duplicates, lost), (0, 0), "{test}: every reading stored exactly once");
    let by_message = stored(pool).await;
    assert_eq!(by_message, (rows, rows), "{test}: one row per Kafka message");
}

/// (location, sensor type, window start in ms).
type WindowKey = (String, String, i64);
/// (count, mean, min, max, population stddev).
type WindowStats = (i64, f64, f64, f64, f64);

/// The window statistics of `readings` (count, mean, min, max, population stddev) per
/// (location, type, window start), computed plainly.
fn reference_windows(readings: &[Reading]) -> BTreeMap<WindowKey, WindowStats> {
    let mut groups: BTreeMap<(String, String, i64), Vec<f64>> = BTreeMap::new();
    for r in readings {
        let start = r.timestamp.timestamp_millis().div_euclid(MINUTE) * MINUTE;
        groups.entry((r.location.to_string(), r.sensor_type.as_str().to_owned(), start)).or_default().push(r.value);
    }
    groups
        .into_iter()
        .map(|(key, values)| {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (key, (values.len() as i64, mean, min, max, variance.sqrt()))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

/// SIGTERM, then wait for the exit code.
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the host did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn killed_again_and_again_the_host_stores_every_reading_once_with_reference_windows_and_verdicts(pool: PgPool) {
    const READINGS: usize = 24_000;
    const KILLS: usize = 6;
    let broker = EmbeddedBroker::start(TOPIC, 3).expect("broker");
    let brokers = broker.bootstrap_servers().to_owned();
    let url = database_url(&pool);
    let plugins = plugins_folder("kills", &[("zscore", "{}"), ("isolation-forest", "{}"), ("tumbling-window", "{}")]);
    let mut readings = fleet(READINGS, 7);
    // Readings far ahead move every partition's watermark past every window of the stream: all
    // close. (Each lane has its own watermark; twelve keys land on each of the three partitions.)
    let last = readings.last().map_or(0, |r| r.timestamp.timestamp_millis());
    for i in 0..12 {
        readings.push(reading(&format!("flush-{i}"), SensorType::Pressure, "elsewhere", last + 10 * MINUTE, 1000.0));
    }
    let readings = Arc::new(readings);
    // 2 000 readings/s: the stream lasts about 12 s, across which the host is killed 6 times.
    let producer = tokio::spawn(produce(brokers.clone(), readings.clone(), 2000));

    let mut rng = StdRng::seed_from_u64(11);
    let mut recoveries = Vec::new();
    let mut host = spawn_host(&brokers, &url, plugins.path());
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1200..2400))).await;
        host.kill();
        let at_kill = count_rows(&pool, "sensor_readings").await;
        let restarted = Instant::now();
        host = spawn_host(&brokers, &url, plugins.path());
        // Recovery: from the restart until the host stores readings beyond what was stored when it
        // died (the stream is still running, so there always are some).
        loop {
            if count_rows(&pool, "sensor_readings").await > at_kill || producer.is_finished() {
                recoveries.push(restarted.elapsed());
                break;
            }
            assert!(restarted.elapsed() < Duration::from_secs(60), "no progress within 60 s of a restart");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let acknowledged = producer.await.expect("producer");
    assert_eq!(acknowledged, readings.len(), "the broker acknowledged every reading");
    wait_for("sensor_readings", readings.len() as i64, || count_rows(&pool, "sensor_readings")).await;
    let windows = reference_windows(&readings[..READINGS]);
    wait_for("closed windows", windows.len() as i64, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sensor_aggregates_latest")
            .fetch_one(&pool)
            .await
            .expect("windows")
    })
    .await;
    host.wait_ready();
    let status = terminate(host.take());
    assert!(status.success(), "SIGTERM exits cleanly: {status}");

    let mean_ms = recoveries.iter().map(Duration::as_millis).sum::<u128>() / recoveries.len().max(1) as u128;
    let max_ms = recoveries.iter().map(Duration::as_millis).max().unwrap_or_default();
    let extra = format!(" kills {KILLS} recovery mean {mean_ms} ms max {max_ms} ms");
    assert_exactly_once("kill -9", &pool, &readings, &extra).await;

    // Every window equals the reference, and counts the readings a detector flagged.
    type Window = (String, String, DateTime<Utc>, i32, f64, f64, f64, f64, i32);
    let stored_windows: Vec<Window> = sqlx::query_as(
        "SELECT location, sensor_type, window_start, count_readings, avg_value, min_value, max_value, stddev_value, \
         anomaly_count FROM sensor_aggregates_latest ORDER BY location, sensor_type, window_start",
    )
    .fetch_all(&pool)
    .await
    .expect("windows");
    assert_eq!(stored_windows.len(), windows.len());
    for ((location, sensor_type, start, count, avg, min, max, stddev, anomalies), (key, expected)) in
        stored_windows.iter().zip(&windows)
    {
        assert_eq!((location, sensor_type, start.timestamp_millis()), (&key.0, &key.1, key.2));
        assert_eq!(i64::from(*count), expected.0, "window {key:?}");
        let stats = [*avg, *min, *max, *stddev];
        let reference = [expected.1, expected.2, expected.3, expected.4];
        assert!(stats.iter().zip(reference).all(|(a, b)| close(*a, b)), "window {key:?}: {stats:?} vs {reference:?}");
        let flagged: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sensor_readings WHERE flagged AND location = $1 AND sensor_type = $2 \
             AND timestamp >= $3 AND timestamp < $3 + interval '1 minute'",
        )
        .bind(location)
        .bind(sensor_type)
        .bind(start)
        .fetch_one(&pool)
        .await
        .expect("flagged");
        assert_eq!(i64::from(*anomalies), flagged, "window {key:?}: anomaly count");
    }

    // Every z-score verdict equals the detector run once, uncrashed, over each sensor's readings.
    let expected: BTreeMap<(String, i64), (String, f64)> = zscore_reference(&readings)
        .into_iter()
        .map(|(key, judgement)| {
            let verdict = match judgement {
                Judgement::WarmingUp => ("warming_up", 0.0),
                Judgement::Scored { score, anomaly } => (if anomaly { "anomaly" } else { "normal" }, score),
            };
            (key, (verdict.0.to_owned(), verdict.1))
        })
        .collect();
    let verdicts = zscore_verdicts(&pool).await;
    assert_eq!(verdicts.len(), expected.len(), "one z-score verdict per reading");
    let anomalies = expected.values().filter(|(v, _)| v == "anomaly").count();
    assert!(anomalies > 50, "the stream has spikes to flag ({anomalies})");
    for (sensor, at, verdict, score) in verdicts {
        let key = (sensor, at);
        assert_eq!(Some(&(verdict, score)), expected.get(&key), "z-score verdict of {key:?}");
    }
    let models = assert_forest_uncrashed(&pool, readings.len()).await;
    report(&format!(
        "FAULT kill -9: {} Isolation Forest verdicts and {models} models identical to an uncrashed forest's",
        readings.len()
    ));
}

/// Asserts that every stored Isolation Forest verdict, score and model (generation, training time
/// and rows) equals what one forest per partition (a lane's) that never crashed gives when fed the
/// partition's readings in offset order, the order its lane's stages see them. (Not in the rows'
/// `id` order: with two batches in flight the next batch's `COPY` may take its ids before the
/// earlier batch's, which still commits first.) A lane's models span its sensors of a type, so
/// this holds only if each restart restored the state its checkpoint was taken with and replayed
/// every message after it exactly once. Returns how many models judged.
async fn assert_forest_uncrashed(pool: &PgPool, readings: usize) -> usize {
    use iotstream::plugins::bindings::Verdict;
    use iotstream::plugins::{PluginRuntime, SensorCatalog};
    type Row =
        (String, String, String, DateTime<Utc>, f64, String, f64, Option<i32>, Option<DateTime<Utc>>, Option<i32>, i32);
    let stored: Vec<Row> = sqlx::query_as(
        "SELECT p.sensor_id, p.sensor_type, r.location, p.timestamp, p.value, p.verdict, p.anomaly_score, \
         p.model_generation, p.model_trained_at, p.model_training_rows, p.kafka_partition FROM ml_anomaly_predictions p \
         JOIN sensor_readings r USING (source_id, kafka_partition, kafka_offset) \
         WHERE p.detector = 'isolation-forest' ORDER BY p.kafka_partition, p.kafka_offset",
    )
    .fetch_all(pool)
    .await
    .expect("forest verdicts");
    let runtime = PluginRuntime::new().expect("runtime");
    let (mut generations, mut anomalies) = (std::collections::BTreeSet::new(), 0);
    for lane in stored.chunk_by(|a, b| a.10 == b.10) {
        let mut forest = runtime.load_with_config(&plugin_path("isolation-forest"), Some("{}".into())).expect("forest");
        let mut catalog = SensorCatalog::default();
        for chunk in lane.chunks(500) {
            let wit: Vec<_> = chunk
                .iter()
                .map(|(sensor, sensor_type, location, at, value, ..)| {
                    let sensor_type = SensorType::from_name(sensor_type).expect("sensor type");
                    catalog.wit_reading(&reading(sensor, sensor_type, location, at.timestamp_millis(), *value))
                })
                .collect();
            let detections = forest.detect(&catalog, &wit).expect("reference forest");
            for (row, detection) in chunk.iter().zip(detections) {
                let verdict = match detection.verdict {
                    Verdict::WarmingUp => "warming_up",
                    Verdict::Normal => "normal",
                    Verdict::Anomaly => "anomaly",
                };
                let model = detection.model.map(|m| (m.generation as i32, m.trained_at_ms, m.training_rows as i32));
                let stored_model = row.7.map(|generation| {
                    (generation, row.8.map_or(0, |t| t.timestamp_millis()), row.9.unwrap_or_default())
                });
                let key = (&row.0, row.3.timestamp_millis());
                assert_eq!((row.5.as_str(), row.6), (verdict, detection.score), "forest verdict of {key:?}");
                assert_eq!(stored_model, model, "model behind the forest verdict of {key:?}");
                if let Some((generation, ..)) = model {
                    generations.insert((row.10, row.1.clone(), generation));
                }
                anomalies += usize::from(verdict == "anomaly");
            }
        }
    }
    // The stream is long enough for each type's model to be retrained a few times.
    assert_eq!(stored.len(), readings, "one forest verdict per reading");
    assert!(generations.len() >= 5 * 3, "models trained: {generations:?}");
    assert!(anomalies > 0, "the forest flagged something");
    generations.len()
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_logged_batch_whose_messages_never_come_is_given_up_and_the_stream_goes_on(pool: PgPool) {
    let payloads = |from: i64| -> Vec<(String, Vec<u8>)> {
        (from..from + 50)
            .map(|i| ("s1".to_owned(), encode(&reading("s1", SensorType::Co2, "lab", i * 1000, 500.0))))
            .collect()
    };
    let broker = EmbeddedBroker::start(TOPIC, 3).expect("broker");
    let first = Host::start_on(broker, pool.clone(), None, &[]).await;
    first.produce(&payloads(0)).await;
    wait_for("readings", 50, || count_rows(&pool, "sensor_readings")).await;
    let (stopped, broker) = first.stop_keeping_broker().await;
    stopped.expect("clean stop");
    // As if the host had committed one more batch before a crash, reaching past the end of the log.
    let (source, after): (i16, i64) = sqlx::query_as(
        "SELECT source_id, after_batch FROM stage_checkpoints WHERE kafka_partition = 0 ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("the shutdown checkpoint");
    sqlx::query(
        "INSERT INTO kafka_batches (source_id, kafka_partition, batch_seq, next_offset) VALUES ($1, 0, $2, 1000000)",
    )
    .bind(source)
    .bind(after + 1)
    .execute(&pool)
    .await
    .expect("log a batch");
    // The next 50 are in the topic before the host starts: one live batch once the replay gives up.
    crate::support::produce_to_partition_0(&broker, &payloads(50)).await;
    let second = Host::start_on(broker, pool.clone(), None, &["--replay-patience", "1s"]).await;
    wait_for("readings after the replay gave up", 100, || count_rows(&pool, "sensor_readings")).await;
    second.stop().await.expect("clean stop");
    // The batch that was never formed is forgotten; the live one is numbered past it.
    let logged: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT batch_seq, next_offset FROM kafka_batches WHERE kafka_partition = 0 AND batch_seq > $1 ORDER BY batch_seq",
    )
    .bind(after)
    .fetch_all(&pool)
    .await
    .expect("log");
    assert_eq!(logged, vec![(after + 2, 100)]);
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones, as a
/// stopped server does.
pub(crate) struct DatabaseCut {
    pub(crate) port: u16,
    up: watch::Sender<bool>,
}

impl DatabaseCut {
    pub(crate) async fn start(upstream: (String, u16)) -> DatabaseCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (up, _) = watch::channel(true);
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = state.subscribe();
                if !*up.borrow() {
                    continue; // refused: dropped at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        DatabaseCut { port, up }
    }

    /// A cut in front of the database of `pool`, and a pool that connects through it.
    pub(crate) async fn in_front_of(pool: &PgPool) -> (DatabaseCut, PgPool) {
        let options = pool.connect_options();
        let cut = DatabaseCut::start((options.get_host().to_owned(), options.get_port())).await;
        let proxied = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with((*options).clone().port(cut.port))
            .await
            .expect("pool through the proxy");
        (cut, proxied)
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// Polls `/api/health` until `part` ("database" or "broker") reports `ok`, or fails after 30 s.
pub(crate) async fn wait_for_health(addr: std::net::SocketAddr, part: &str, ok: bool) -> serde_json::Value {
    let url = format!("http://{addr}/api/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The server may not be listening yet.
        let health = match reqwest::get(&url).await {
            Ok(response) => response.json().await.expect("json"),
            Err(_) => serde_json::Value::Null,
        };
        if health[part]["ok"] == ok {
            return health;
        }
        assert!(Instant::now() < deadline, "{part} never reported ok={ok}: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_database_outage_pauses_the_pipeline_and_loses_nothing(pool: PgPool) {
    let (cut, proxied) = DatabaseCut::in_front_of(&pool).await;
    let host = Host::start(proxied, None, &[]).await;
    let readings = Arc::new(fleet(12_000, 3));
    let producer = tokio::spawn(produce(host.broker.bootstrap_servers().to_owned(), readings.clone(), 2000));
    wait_for_health(host.addr, "database", true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cut.set_up(false);
    let cut_at = Instant::now();
    let down = wait_for_health(host.addr, "database", false).await;
    assert_eq!(down["status"], "degraded");
    let during = count_rows(&pool, "sensor_readings").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count_rows(&pool, "sensor_readings").await, during, "nothing is stored while the database is cut off");
    cut.set_up(true);
    let restored_at = Instant::now();
    wait_for_health(host.addr, "database", true).await;
    let outage = restored_at - cut_at;
    assert_eq!(producer.await.expect("producer"), readings.len());
    wait_for("sensor_readings", readings.len() as i64, || count_rows(&pool, "sensor_readings")).await;
    let caught_up = restored_at.elapsed();
    host.stop().await.expect("clean stop");
    let extra = format!(" outage {} ms caught up {} ms after", outage.as_millis(), caught_up.as_millis());
    assert_exactly_once("database outage", &pool, &readings, &extra).await;
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_broker_outage_is_reported_and_the_stream_resumes_with_nothing_lost(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &[]).await;
    let readings = Arc::new(fleet(12_000, 5));
    let producer = tokio::spawn(produce(host.broker.bootstrap_servers().to_owned(), readings.clone(), 2000));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.broker.set_up(false).expect("broker down");
    let down_at = Instant::now();
    let down = wait_for_health(host.addr, "broker", false).await;
    assert_eq!(down["status"], "degraded");
    tokio::time::sleep(Duration::from_secs(3)).await;
    host.broker.set_up(true).expect("broker up");
    let up_at = Instant::now();
    let outage = up_at - down_at;
    assert_eq!(producer.await.expect("producer"), readings.len(), "the producer delivered everything after the outage");
    wait_for("sensor_readings", readings.len() as i64, || count_rows(&pool, "sensor_readings")).await;
    wait_for_health(host.addr, "broker", true).await;
    let caught_up = up_at.elapsed();
    host.stop().await.expect("clean stop");
    let extra = format!(" outage {} ms caught up {} ms after", outage.as_millis(), caught_up.as_millis());
    assert_exactly_once("broker outage", &pool, &readings, &extra).await;
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn with_the_brokers_unreachable_at_start_the_api_serves_and_says_so(pool: PgPool) {
    // A port nobody listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let brokers = unused.local_addr().expect("address").to_string();
    drop(unused);
    let empty = plugins_folder("unreachable", &[]);
    let plugins = empty.path().display().to_string();
    let config = crate::support::run_config(&[
        "--brokers",
        &brokers,
        "--no-builtin-plugins",
        "--plugins",
        &plugins,
        "--listen",
        "127.0.0.1:0",
    ]);
    let store = iotstream::store::Store::new(pool);
    store.migrate().await.expect("migrations");
    let listener = TcpListener::bind(config.listen).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = {
        let (shutdown, brokers) = (shutdown.clone(), brokers.clone());
        tokio::spawn(async move {
            iotstream::app::run(&config, store, listener, &iotstream::kafka::Brokers::new(brokers), shutdown).await
        })
    };
    let health = wait_for_health(addr, "broker", false).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["database"]["ok"], true);
    let connecting = iotstream_api::OutageCode::BrokersConnecting;
    assert_eq!(
        (health["broker"]["code"].clone(), health["broker"]["error"].clone()),
        (connecting.to_string().into(), connecting.message().into())
    );
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops within 10 s");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}
