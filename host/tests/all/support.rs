//! Helpers shared by the integration tests.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};

/// The built plugin `name` (`dist/plugins/NAME.wasm`, written by `cargo xtask build`).
pub fn plugin_path(name: &str) -> PathBuf {
    let path = built_plugins().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask build` first", path.display());
    path
}

/// The built plugins, `dist/plugins` (the built-ins of a host in a checkout).
pub fn built_plugins() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/plugins")
}

/// The built test plugin `name` (`dist/test-plugins/NAME.wasm`, a plugin in another language,
/// written by `cargo xtask plugins` and `cargo xtask test`).
pub fn test_plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/test-plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask plugins` first", path.display());
    path
}

/// A reading of `sensor` (type and location fixed per call) at `ms` after the epoch.
pub fn reading(sensor: &str, sensor_type: SensorType, location: &str, ms: i64, value: f64) -> Reading {
    Reading {
        sensor_id: sensor.into(),
        sensor_type,
        location: location.into(),
        value,
        timestamp: Utc.timestamp_millis_opt(ms).single().expect("valid timestamp"),
        anomaly: false,
        unit: sensor_type.default_unit().into(),
    }
}

/// A running host (pipeline + HTTP) against an embedded broker and a test database.
pub struct Host {
    /// The broker (mock cluster) the host consumes from.
    pub broker: iotstream::kafka::EmbeddedBroker,
    /// The API's address.
    pub addr: std::net::SocketAddr,
    /// The topic.
    pub topic: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), iotstream::app::RunError>>,
}

/// `iotstream run` flags as a test would type them.
#[derive(clap::Parser)]
struct RunFlags {
    #[command(flatten)]
    config: iotstream::config::RunConfig,
}

/// Parses `iotstream run` flags (plus the test's own) into a configuration.
/// A consumer group that notices a member joining, gone or back within seconds: the mock cluster
/// waits up to the session timeout (45 s by default) for a rebalance's members, and a member that
/// lost the coordinator in a broker outage rejoins through such a rebalance.
pub const FAST_GROUP: &[&str] =
    &["--kafka-option", "session.timeout.ms=6000", "--kafka-option", "heartbeat.interval.ms=500"];

pub fn run_config(flags: &[&str]) -> iotstream::config::RunConfig {
    use clap::Parser;
    let args = std::iter::once("iotstream-run").chain(flags.iter().copied());
    RunFlags::try_parse_from(args).expect("valid flags").config
}

impl Host {
    /// The simulator producing to this host's embedded broker with `flags` (`--rate`,
    /// `--sensors`...) until its count is reached or `stop` is cancelled.
    pub fn simulate(
        &self,
        flags: &[&str],
        stop: &tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<Result<iotstream::simulate::SimulationReport, iotstream::kafka::KafkaError>> {
        let brokers = iotstream::kafka::Brokers::new(self.broker.bootstrap_servers());
        let (config, topic, stop) = (simulate_config(flags), self.topic.clone(), stop.clone());
        tokio::spawn(async move { iotstream::simulate::run(&config, &brokers, &topic, stop).await })
    }

    /// Starts a host with the built plugins as its built-ins (or only the plugins of `plugins_dir`,
    /// its drop-in folder, with `--no-builtin-plugins`) on `pool`, consuming `iot_sensors` (3
    /// partitions) from a fresh embedded broker, with no simulator. `extra` may name the folders
    /// itself (`--plugins`, `--builtin-plugins`, `--no-builtin-plugins`) with `plugins_dir` `None`.
    pub async fn start(pool: sqlx::PgPool, plugins_dir: Option<&std::path::Path>, extra: &[&str]) -> Host {
        let broker = iotstream::kafka::EmbeddedBroker::start("iot_sensors", 3).expect("embedded broker");
        Host::start_on(broker, pool, plugins_dir, extra).await
    }

    /// [`Host::start`] on a broker of the test's, whose topic is `iot_sensors` (a host restarted on
    /// the broker of one stopped with [`Host::stop_keeping_broker`] finds its source again).
    pub async fn start_on(
        broker: iotstream::kafka::EmbeddedBroker,
        pool: sqlx::PgPool,
        plugins_dir: Option<&std::path::Path>,
        extra: &[&str],
    ) -> Host {
        // The host's logs, shown with a failing test's output (IOTSTREAM_LOG filters them).
        let filter = std::env::var("IOTSTREAM_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
        let topic = "iot_sensors".to_owned();
        let builtin = built_plugins().display().to_string();
        let dropin = plugins_dir.map(|dir| dir.display().to_string());
        let dashboard = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/dashboard");
        let dashboard_flag = dashboard.display().to_string();
        let mut flags = vec!["--brokers", broker.bootstrap_servers(), "--group", "iotstream-test"];
        match &dropin {
            Some(dropin) => flags.extend_from_slice(&["--no-builtin-plugins", "--plugins", dropin]),
            None if !extra.iter().any(|flag| flag.ends_with("builtin-plugins")) => {
                flags.extend_from_slice(&["--builtin-plugins", &builtin])
            }
            None => {}
        }
        flags.extend_from_slice(&["--dashboard", &dashboard_flag, "--batch-max", "500", "--batch-linger-ms", "20"]);
        if !extra.contains(&"--kafka-option") {
            flags.extend_from_slice(FAST_GROUP);
        }
        if !extra.contains(&"--listen") {
            // Any free port, unless the test restarts a host where its page expects it.
            flags.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--max-age") {
            // The tests' readings have fixed dates.
            flags.extend_from_slice(&["--max-age", "off"]);
        }
        flags.extend_from_slice(extra);
        let config = run_config(&flags);
        let store = iotstream::store::Store::new(pool);
        store.migrate().await.expect("migrations");
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let brokers = broker.bootstrap_servers().to_owned();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                iotstream::app::run(&config, store, listener, &config.kafka.brokers(&brokers), shutdown).await
            })
        };
        Host { broker, addr, topic, shutdown, task }
    }

    /// Produces `payloads` (key, bytes) to partition 0 of the topic with a real Kafka client, waiting
    /// for each ack. One partition keeps production order, which event-time assertions rely on.
    /// Waits until the consumer group gave this host its partitions (the group's join takes about
    /// 3 s): a message produced from then on is read as it comes, not in the backlog of the first
    /// fetch.
    pub async fn joined(&self) {
        let url = format!("http://{}/api/health", self.addr);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let health: serde_json::Value = match reqwest::get(&url).await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            if health["partitions"].as_array().is_some_and(|owned| !owned.is_empty()) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the group gave the host no partition in 30 s: {health}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn produce(&self, payloads: &[(String, Vec<u8>)]) {
        produce_to_partition_0(&self.broker, payloads).await;
    }

    /// Stops the host and returns how `run` ended.
    pub async fn stop(self) -> Result<(), iotstream::app::RunError> {
        self.stop_keeping_broker().await.0
    }

    /// Waits (at most 60 s) for the host to end by itself, without asking it to, and returns how
    /// `run` ended and its broker, still running.
    pub async fn ended(self) -> (Result<(), iotstream::app::RunError>, iotstream::kafka::EmbeddedBroker) {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(60), self.task).await;
        (ended.expect("the host ended by itself within 60 s").expect("host task"), self.broker)
    }

    /// Stops the host and returns how `run` ended, and its broker, still running.
    pub async fn stop_keeping_broker(self) -> (Result<(), iotstream::app::RunError>, iotstream::kafka::EmbeddedBroker) {
        self.shutdown.cancel();
        (self.task.await.expect("host task"), self.broker)
    }
}

/// Produces `payloads` (key, bytes) to partition 0 of `iot_sensors` on `broker`, waiting for each
/// ack.
pub async fn produce_to_partition_0(broker: &iotstream::kafka::EmbeddedBroker, payloads: &[(String, Vec<u8>)]) {
    let producer =
        iotstream::kafka::producer(&iotstream::kafka::Brokers::new(broker.bootstrap_servers())).expect("producer");
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(rdkafka::producer::FutureRecord::to("iot_sensors").partition(0).key(key).payload(payload))
                .map_err(|(err, _)| err)
                .expect("enqueue")
        })
        .collect();
    for delivery in deliveries {
        delivery.await.expect("delivery future").map_err(|(err, _)| err).expect("broker acknowledged");
    }
}

/// Polls `count` until it returns `expected` (or fails after 60 s, showing the last value).
pub async fn wait_for<F, Fut>(what: &str, expected: i64, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let value = count().await;
        if value == expected {
            return;
        }
        assert!(value < expected, "{what}: {value}, more than the expected {expected}");
        assert!(std::time::Instant::now() < deadline, "{what}: still {value} after 60 s, expected {expected}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `SELECT count(*) FROM <table>` (a fixed table name from the test).
pub async fn count_rows(pool: &sqlx::PgPool, table: &'static str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count")
}

/// `iotstream simulate` options as a test would type them.
#[derive(clap::Parser)]
struct SimulateFlags {
    #[command(flatten)]
    config: iotstream::simulate::SimulateConfig,
}

/// Parses simulator flags into a configuration.
pub fn simulate_config(flags: &[&str]) -> iotstream::simulate::SimulateConfig {
    use clap::Parser;
    SimulateFlags::try_parse_from(std::iter::once("simulate").chain(flags.iter().copied())).expect("valid flags").config
}

/// The URL of `pool`'s database (the test's own, on the server `DATABASE_URL` names), for a host
/// process the test starts.
pub fn database_url(pool: &sqlx::PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let database = pool.connect_options().get_database().expect("test database").to_owned();
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let server = base[host_start..].find('/').map_or(base.as_str(), |i| &base[..host_start + i]);
    format!("{server}/{database}")
}

/// The z-score detector with its default configuration run natively, once, over `readings` in
/// order: its judgement of each, by (sensor id, event time in ms). What an uncrashed host with the
/// built `zscore` plugin must have stored.
pub fn zscore_reference(
    readings: &[Reading],
) -> std::collections::BTreeMap<(String, i64), iotstream_plugin_sdk::detector::Judgement> {
    use iotstream_plugin_sdk::detector::Detector;
    let mut reference = zscore::zscore::ZScore::create(Default::default()).expect("default config");
    readings
        .iter()
        .map(|r| {
            let identity = iotstream_plugin_sdk::SensorIdentity {
                sensor_id: r.sensor_id.as_str().into(),
                sensor_type: r.sensor_type,
                location: r.location.as_str().into(),
            };
            let judgement = reference.judge(&identity, r.timestamp.timestamp_millis(), r.value);
            ((r.sensor_id.to_string(), r.timestamp.timestamp_millis()), judgement)
        })
        .collect()
}

/// Every stored verdict of the `zscore` detector: (sensor id, event time in ms, verdict, score).
pub async fn zscore_verdicts(pool: &sqlx::PgPool) -> Vec<(String, i64, String, f64)> {
    let rows: Vec<(String, chrono::DateTime<Utc>, String, f64)> = sqlx::query_as(
        "SELECT sensor_id, timestamp, verdict, anomaly_score FROM ml_anomaly_predictions WHERE detector = 'zscore'",
    )
    .fetch_all(pool)
    .await
    .expect("verdicts");
    rows.into_iter().map(|(sensor, at, verdict, score)| (sensor, at.timestamp_millis(), verdict, score)).collect()
}

/// Prints a test's figures (`FAULT …`, swap times) past the test harness's output capture, so that
/// CI logs show them for passing tests too.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes `bytes` to `dir/name` the way a careful operator does: beside, then renamed.
pub fn put(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, bytes).expect("write");
    std::fs::rename(&partial, dir.join(name)).expect("rename");
}

/// A new, empty folder for one test, `name` telling tests apart; deleted when dropped, also when the
/// test fails.
pub fn scratch_folder(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("iotstream-{name}-")).tempdir().expect("scratch folder")
}

/// Each line a host process writes to `stderr` with `--log-format json`, parsed, on a channel. A
/// line that is not one JSON object stops the reader (the channel closes, and the test waiting on
/// it fails) with the line in the panic message.
pub fn json_log_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            if tx.send(parsed).is_err() {
                break;
            }
        }
    });
    rx
}

/// A host process, killed if the test ends (or fails) with it still running; its `stderr` lines
/// (its logs) on a channel.
pub struct HostProcess(Option<std::process::Child>, std::sync::mpsc::Receiver<String>);

impl HostProcess {
    /// Spawns `command` (an `iotstream run`), its stdout dropped and its stderr read line by line.
    pub fn spawn(mut command: std::process::Command) -> HostProcess {
        use std::process::Stdio;
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start iotstream");
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        HostProcess(Some(child), lines)
    }

    /// The first log line from now on that holds `text` (the test fails after 60 s without one).
    pub fn wait_for_line(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let line = self
                .1
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|err| panic!("no log line with {text:?} ({err})"));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits until the host has connected to its source (it handles SIGTERM from its first
    /// instant; this makes sure the final stop is a stop of a running pipeline).
    pub fn wait_ready(&self) {
        self.wait_for_line("kafka source connected");
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("a running host").id()
    }

    /// `kill -9`, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// The process, no longer killed when this is dropped.
    pub fn take(&mut self) -> std::process::Child {
        self.0.take().expect("a running host")
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
