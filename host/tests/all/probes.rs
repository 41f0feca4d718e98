//! The probes (`/healthz`, `/readyz`) of a running host and `iotstream health`, the binary a
//! healthcheck runs: ready only while database, brokers and pipeline are, alive regardless; the
//! command's exit status follows the probe's answer (0 ready, 3 not), and with `--brokers` the topic's presence.

use std::process::Output;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::Host;

/// `iotstream health ARGS`, run as a healthcheck runs it.
async fn health(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_iotstream"))
            .arg("health")
            .args(&args)
            .env_remove("IOTSTREAM_HEALTH_URL")
            .output()
            .expect("run iotstream health")
    })
    .await
    .expect("health thread")
}

/// Polls `url` (at most 30 s) until it answers `status`; its JSON body.
pub(crate) async fn wait_for_status(url: &str, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Ok(response) = reqwest::get(url).await {
            let answered = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("json body");
            if answered == status {
                return body;
            }
            last = Some((answered, body));
        }
        assert!(Instant::now() < deadline, "{url} never answered {status}; last: {last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn readyz_follows_the_brokers_and_health_exits_by_it(pool: PgPool) {
    let host = Host::start(pool, None, &[]).await;
    let (readyz, healthz) = (format!("http://{}/readyz", host.addr), format!("http://{}/healthz", host.addr));
    let ready = wait_for_status(&readyz, 200).await;
    let all = serde_json::json!({ "database": true, "broker": true, "pipeline": true });
    assert_eq!((ready["ready"].clone(), ready["checks"].clone()), (true.into(), all.clone()));
    assert_eq!(ready["quarantined"], serde_json::json!([]));
    let passed = health(&["--url", &readyz]).await;
    assert_eq!(passed.status.code(), Some(0), "{passed:?}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&passed.stdout).expect("body on stdout"), ready);

    host.broker.set_up(false).expect("broker down");
    let down = wait_for_status(&readyz, 503).await;
    assert_eq!(down["checks"], serde_json::json!({ "database": true, "broker": false, "pipeline": true }));
    assert_eq!(reqwest::get(&healthz).await.expect("healthz").status().as_u16(), 200, "alive though not ready");
    let failed = health(&["--url", &readyz]).await;
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("503"), "{failed:?}");
    assert_eq!(health(&["--url", &healthz]).await.status.code(), Some(0));

    host.broker.set_up(true).expect("broker up");
    assert_eq!(wait_for_status(&readyz, 200).await["checks"], all);
    host.stop().await.expect("clean stop");
    // Nothing listens there any more.
    let gone = health(&["--url", &readyz, "--timeout", "2s"]).await;
    assert_eq!(gone.status.code(), Some(3), "{gone:?}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no answer from"), "{gone:?}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn not_ready_until_the_pipeline_runs(pool: PgPool) {
    // The brokers have no such topic: the host serves, but keeps connecting.
    let host = Host::start(pool, None, &["--topic", "absent_topic"]).await;
    let readyz = format!("http://{}/readyz", host.addr);
    let waiting = wait_for_status(&readyz, 503).await;
    assert_eq!(waiting["checks"], serde_json::json!({ "database": true, "broker": false, "pipeline": false }));
    assert_eq!(wait_for_status(&format!("http://{}/healthz", host.addr), 200).await["status"], "alive");
    host.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_with_brokers_checks_the_topic() {
    let broker = iotstream::kafka::EmbeddedBroker::start("iot_sensors", 3).expect("embedded broker");
    let brokers = broker.bootstrap_servers().to_owned();
    let found = health(&["--brokers", &brokers, "--topic", "iot_sensors"]).await;
    assert_eq!(found.status.code(), Some(0), "{found:?}");
    assert_eq!(String::from_utf8_lossy(&found.stdout).trim(), "topic iot_sensors has 3 partitions");
    let missing = health(&["--brokers", &brokers, "--topic", "absent_topic"]).await;
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("topic absent_topic does not exist"), "{missing:?}");
}
