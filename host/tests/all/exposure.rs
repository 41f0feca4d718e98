//! What the host must not show: the database password (in `--help`, in messages), and internals
//! (driver errors, broker addresses) on the API, which names an outage by a stable code and a short
//! message while the detail goes to the log.

use std::process::Command;

use iotstream_api::OutageCode;
use sqlx::PgPool;

use crate::faults::{DatabaseCut, wait_for_health};
use crate::support::Host;

#[test]
fn run_help_does_not_print_the_database_password() {
    let output = Command::new(env!("CARGO_BIN_EXE_iotstream"))
        .args(["run", "--help"])
        .env("DATABASE_URL", "postgres://iot:s3cret-password@db.example:5432/iot_db")
        .output()
        .expect("run iotstream");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && help.contains("--database-url"), "{help}");
    assert!(!help.contains("s3cret-password"), "--help shows the password:\n{help}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn health_names_outages_by_code_without_internals(pool: PgPool) {
    let (cut, proxied) = DatabaseCut::in_front_of(&pool).await;
    let host = Host::start(proxied, None, &[]).await;
    let reading = |ms| {
        let reading = crate::support::reading("s1", iotstream::reading::SensorType::Co2, "lab_1", ms, 420.0);
        ("s1".to_owned(), iotstream::reading::encode(&reading))
    };
    // The pipeline is up once a reading is stored; then the database goes away under a write.
    host.produce(&[reading(1_764_064_800_000)]).await;
    crate::support::wait_for("sensor_readings", 1, || crate::support::count_rows(&pool, "sensor_readings")).await;
    cut.set_up(false);
    host.produce(&[reading(1_764_064_801_000)]).await;
    let health = wait_for_health(host.addr, "database", false).await;
    let code = OutageCode::DatabaseUnreachable;
    assert_eq!(health["database"]["code"], code.to_string());
    assert_eq!(health["database"]["error"], code.message());
    host.broker.set_up(false).expect("broker down");
    let health = wait_for_health(host.addr, "broker", false).await;
    let code = OutageCode::BrokersUnreachable;
    assert_eq!(
        (health["broker"]["code"].clone(), health["broker"]["error"].clone()),
        (code.to_string().into(), code.message().into())
    );
    let body = health.to_string();
    for internal in [
        "127.0.0.1",
        "localhost",
        &cut.port.to_string(),
        "error communicating",
        "Connection refused",
        "BrokerTransportFailure",
    ] {
        assert!(!body.contains(internal), "/api/health shows {internal:?}: {body}");
    }
    let stats =
        reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("stats").text().await.expect("body");
    assert!(!stats.contains("127.0.0.1") && !stats.contains(&cut.port.to_string()), "{stats}");
    cut.set_up(true);
    host.broker.set_up(true).expect("broker up");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn refused_plugin_files_are_named_without_the_hosts_paths(pool: PgPool) {
    let dir = crate::support::scratch_folder("exposure");
    let zscore = std::fs::read(crate::support::plugin_path("zscore")).expect("zscore");
    crate::support::put(dir.path(), "zscore.wasm", &zscore);
    crate::support::put(dir.path(), "broken.wasm", b"\0asm not really");
    let host = Host::start(pool, Some(dir.path()), &[]).await;
    let api: serde_json::Value =
        reqwest::get(format!("http://{}/api/plugins", host.addr)).await.expect("api").json().await.expect("json");
    let failures = api["failures"].to_string();
    assert!(failures.contains("broken.wasm is not a valid component"), "{failures}");
    let folder = dir.path().display().to_string();
    assert!(!api.to_string().contains(&folder), "/api/plugins shows the plugins folder {folder}: {api}");
    host.stop().await.expect("clean stop");
}
