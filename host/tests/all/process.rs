//! The `iotstream` binary as an operator runs it: `iotstream run` with no broker starts the embedded
//! broker, logs the dashboard URL and the broker address; an external Kafka client (kcat) produces
//! to that broker; the readings are stored; SIGTERM stops the process cleanly and quickly. Its logs
//! go to stderr (here as JSON, `--log-format json`), never to stdout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::{count_rows, database_url, wait_for};

/// A JSON log line's field `key` (`--log-format json` puts an event's fields under `fields`).
fn field(line: &serde_json::Value, key: &str) -> Option<String> {
    line["fields"][key].as_str().map(str::to_owned)
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn embedded_default_takes_readings_from_kcat_and_stops_on_sigterm(pool: PgPool) {
    let url = database_url(&pool);
    let plugins = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iotstream"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--no-simulator",
            "--builtin-plugins",
            plugins,
            "--database-url",
            &url,
        ])
        // The readings below have fixed dates.
        .args(["--max-age", "off", "--log-format", "json", "--summary-interval", "1s"])
        .env_remove("IOTSTREAM_BROKERS")
        .env("IOTSTREAM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iotstream");
    let rx = crate::support::json_log_lines(child.stderr.take().expect("stderr"));
    let (mut dashboard, mut bootstrap) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dashboard.is_none() || bootstrap.is_none() {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("iotstream logs its addresses");
        let message = field(&line, "message").unwrap_or_default();
        if message == "dashboard served" {
            dashboard = field(&line, "url");
        }
        if message == "embedded Kafka-protocol broker started" {
            bootstrap = field(&line, "bootstrap");
            assert_eq!(line["level"], "INFO", "{line}");
        }
    }
    let (dashboard, bootstrap) = (dashboard.unwrap_or_default(), bootstrap.unwrap_or_default());
    assert!(dashboard.starts_with("http://127.0.0.1:") && !dashboard.ends_with(":0/"), "{dashboard}");

    // kcat: a real, external Kafka client, producing three seed-format readings and one bad message.
    let messages = [
        r#"{"sensor_id":"kc-1","sensor_type":"pressure","location":"lab_1","value":1012.5,"timestamp":"2026-11-25T10:00:00","anomaly":false,"unit":"hPa"}"#,
        r#"{"sensor_id":"kc-1","sensor_type":"pressure","location":"lab_1","value":1012.75,"timestamp":"2026-11-25T10:00:01"}"#,
        "definitely not a reading",
        r#"{"sensor_id":"kc-2","sensor_type":"co2","location":"office_1","value":612,"timestamp":1795600802000}"#,
    ];
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "iot_sensors"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (cargo xtask test installs it)");
    {
        use std::io::Write;
        let mut stdin = kcat.stdin.take().expect("kcat stdin");
        for message in messages {
            writeln!(stdin, "{message}").expect("write to kcat");
        }
    }
    assert!(kcat.wait().expect("kcat").success(), "kcat failed to produce");
    wait_for("sensor_readings", 3, || count_rows(&pool, "sensor_readings")).await;
    wait_for("dead_letters", 1, || count_rows(&pool, "dead_letters")).await;
    let sum: f64 = sqlx::query_scalar("SELECT sum(value) FROM sensor_readings").fetch_one(&pool).await.expect("sum");
    assert_eq!(sum, 1012.5 + 1012.75 + 612.0);
    let stats: serde_json::Value =
        reqwest::get(format!("{dashboard}api/stats")).await.expect("api").json().await.expect("json");
    assert_eq!(stats["readings_total"], 3);
    assert_summary_and_metrics(&dashboard, &rx).await;

    // SIGTERM: a clean exit (status 0) within a few seconds.
    let stopped = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(stopped.elapsed() < Duration::from_secs(15), "iotstream still running 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    // `run` reports nothing on stdout: the logs are all on stderr.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout).expect("read stdout");
    assert_eq!(stdout, "");
}

/// The periodic summary (every second here) and `/metrics` of the host at `dashboard`, after it
/// stored three readings and dead-lettered one message; `rx` carries its JSON log lines.
async fn assert_summary_and_metrics(dashboard: &str, rx: &std::sync::mpsc::Receiver<serde_json::Value>) {
    // The periodic summary (every second here) counts the four messages and the three readings.
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a throughput line");
        if field(&line, "message").as_deref() == Some("throughput") && line["fields"]["stored_total"] == 3 {
            break line;
        }
    };
    assert_eq!(summary["fields"]["received_total"], 4, "{summary}");
    // /metrics: the pipeline's counters, the dead letter by its reason, the request just made.
    let metrics = reqwest::get(format!("{dashboard}metrics")).await.expect("metrics").text().await.expect("text");
    for expected in [
        "iotstream_messages_received_total 4",
        "iotstream_readings_stored_total 3",
        r#"iotstream_dead_letters_total{reason="malformed"} 1"#,
        r#"iotstream_http_requests_total{route="/api/stats",status="200"} 1"#,
        "iotstream_database_up 1",
        "iotstream_broker_up 1",
        "iotstream_pipeline_running 1",
    ] {
        assert!(metrics.lines().any(|l| l == expected), "{expected} missing from:\n{metrics}");
    }
    // The consumer lag, from librdkafka's statistics: every message read and committed, nothing
    // behind on any partition it reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("{dashboard}metrics")).await.expect("metrics").text().await.expect("text");
        let lag: Vec<i64> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("iotstream_consumer_lag_messages{")?.rsplit(' ').next()?.parse().ok())
            .collect();
        if !lag.is_empty() && lag.iter().all(|&behind| behind == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "consumer lag never 0: {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
