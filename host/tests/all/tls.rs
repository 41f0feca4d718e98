//! TLS to PostgreSQL and Kafka options on the wire: the store connects with `sslmode=require`
//! (the server's `pg_stat_ssl` says the connection is encrypted, and says so only then), and a
//! `--kafka-option` reaches the client `iotstream health` makes: a valid one changes nothing, one
//! that makes the client speak TLS to the plaintext embedded broker makes it fail.

use std::process::Command;

use iotstream::store::{Store, pipeline_connections};
use sqlx::PgPool;

/// Whether the store's own connection is encrypted, as the server sees it.
async fn encrypted(store: &Store) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_store_connects_over_tls_when_the_url_requires_it(pool: PgPool) {
    let url = crate::support::database_url(&pool);
    let over_tls = Store::connect(format!("{url}?sslmode=require").parse().expect("url"), pipeline_connections(2, 2))
        .await
        .expect("TLS connect");
    assert!(encrypted(&over_tls).await, "sslmode=require gave a plaintext connection");
    let plain = Store::connect(format!("{url}?sslmode=disable").parse().expect("url"), pipeline_connections(2, 2))
        .await
        .expect("plain connect");
    assert!(!encrypted(&plain).await, "pg_stat_ssl cannot tell the two apart");
}

#[test]
fn kafka_options_reach_the_client() {
    let broker = iotstream::kafka::EmbeddedBroker::start("iot_sensors", 2).expect("embedded broker");
    let health = |option: &str| {
        let args = ["health", "--brokers", broker.bootstrap_servers(), "--timeout", "3s", "--kafka-option", option];
        Command::new(env!("CARGO_BIN_EXE_iotstream")).args(args).env_remove("IOTSTREAM_KAFKA_OPTIONS").output()
    };
    let named = health("client.id=iotstream-probe-7").expect("run health");
    assert_eq!(named.status.code(), Some(0), "{named:?}");
    assert_eq!(String::from_utf8_lossy(&named.stdout).trim(), "topic iot_sensors has 2 partitions");
    // TLS to a plaintext broker: the handshake fails, so the option was on the client that asked.
    let tls = health("security.protocol=ssl").expect("run health");
    assert_eq!(tls.status.code(), Some(3), "{tls:?}");
}
