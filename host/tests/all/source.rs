//! The Kafka source and who owns it: event times judged against the message's Kafka timestamp, a
//! log that started again refused (and accepted as a new epoch with the operator's flag), two hosts
//! on one source taking turns, and a batch refused once its host's lock is gone. The hosts run
//! without plugins: what is checked is where rows go, not what stages make of them.

use std::time::Duration;

use iotstream::kafka::{EmbeddedBroker, Source};
use iotstream::reading::{SensorType, encode};
use iotstream::store::{BatchRows, Ownership, Store, StoreError};
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::{Host, count_rows, produce_to_partition_0, reading, run_config, scratch_folder, wait_for};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// 2020-06-01T00:00:00Z: a Kafka timestamp years before any run of this test.
const LONG_AGO_MS: i64 = 1_590_969_600_000;

/// Produces `payloads` to partition 0 with the Kafka timestamp `timestamp_ms` each.
async fn produce_at(broker: &EmbeddedBroker, payloads: &[(&str, Vec<u8>, i64)]) {
    let producer =
        iotstream::kafka::producer(&iotstream::kafka::Brokers::new(broker.bootstrap_servers())).expect("producer");
    for (key, payload, timestamp_ms) in payloads {
        let record = FutureRecord::to("iot_sensors").partition(0).key(*key).payload(payload).timestamp(*timestamp_ms);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(err, _)| err).expect("broker acknowledged");
    }
}

/// `(sensor id, value, event time in ms)` of every stored reading, by offset.
async fn stored(pool: &PgPool) -> Vec<(String, f64, i64)> {
    let rows: Vec<(String, f64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT sensor_id, value, timestamp FROM sensor_readings ORDER BY source_id, kafka_offset")
            .fetch_all(pool)
            .await
            .expect("readings");
    rows.into_iter().map(|(sensor, value, at)| (sensor, value, at.timestamp_millis())).collect()
}

/// A replay long after a crash judges a message as the first run did: against its Kafka
/// timestamp. Messages produced in 2020 with event times valid then are readings today (the host's
/// clock would make them years old); event times too far from their Kafka timestamp are refused.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn event_times_are_judged_against_the_kafka_timestamp(pool: PgPool) {
    let plugins = scratch_folder("no-plugins");
    let host = Host::start(pool.clone(), Some(plugins.path()), &["--max-age", "30days"]).await;
    let at = |ms: i64, value: f64| encode(&reading("s1", SensorType::Temperature, "lab", ms, value));
    produce_at(
        &host.broker,
        &[
            ("s1", at(LONG_AGO_MS - 3600 * 1000, 20.5), LONG_AGO_MS),
            ("s1", at(LONG_AGO_MS - 31 * DAY_MS, 21.5), LONG_AGO_MS),
            ("s1", at(LONG_AGO_MS + 600 * 1000, 22.5), LONG_AGO_MS),
            ("s1", at(LONG_AGO_MS + 299 * 1000, 23.5), LONG_AGO_MS),
        ],
    )
    .await;
    wait_for("stored and dead-lettered", 4, || async {
        count_rows(&pool, "sensor_readings").await + count_rows(&pool, "dead_letters").await
    })
    .await;
    host.stop().await.expect("clean stop");
    assert_eq!(
        stored(&pool).await,
        vec![("s1".into(), 20.5, LONG_AGO_MS - 3600 * 1000), ("s1".into(), 23.5, LONG_AGO_MS + 299 * 1000)]
    );
    let dead: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT kafka_offset, reason, error FROM dead_letters ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .expect("dead letters");
    assert_eq!(
        dead,
        vec![
            (1, "too_old".into(), "timestamp 2020-05-01T00:00:00.000Z is 2678400 s old (more than 2592000 s)".into()),
            (
                2,
                "from_the_future".into(),
                "timestamp 2020-06-01T00:10:00.000Z is 600 s in the future (more than 300 s)".into()
            ),
        ]
    );
}

/// Registers positions for `iot_sensors` on `broker` as an earlier log left them: what a topic
/// created again (or a wiped broker) under the same cluster id looks like to the host. The mock
/// cluster's identity is unique per run, so the test writes them under this run's identity.
async fn positions_of_an_earlier_log(broker: &EmbeddedBroker, store: &Store, positions: &[(i32, i64)]) -> i16 {
    let source =
        Source::connect(&iotstream::kafka::Brokers::new(broker.bootstrap_servers()), "iotstream-test", "iot_sensors")
            .await
            .expect("source");
    let id = store.source_id(source.identity(), "iot_sensors").await.expect("source id");
    for (partition, next) in positions {
        sqlx::query("INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(partition)
            .bind(next)
            .execute(store.pool())
            .await
            .expect("stored position");
    }
    id
}

/// Offsets past the end of the broker's log mean its log started again: the host refuses to start
/// (rather than have the new messages dropped as replays of stored ones) and says how to accept
/// it; with `--accept-new-log` it stores the new log as a new epoch, every message once.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_log_that_started_again_is_refused_then_accepted_as_a_new_epoch(pool: PgPool) {
    let plugins = scratch_folder("no-plugins");
    let broker = EmbeddedBroker::start("iot_sensors", 3).expect("embedded broker");
    let store = Store::new(pool.clone());
    store.migrate().await.expect("migrations");
    let old = positions_of_an_earlier_log(&broker, &store, &[(0, 100), (1, 0), (2, 0)]).await;
    let readings: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| ("s1".to_owned(), encode(&reading("s1", SensorType::Humidity, "lab", 1_000 * i, 40.0 + i as f64))))
        .collect();
    produce_to_partition_0(&broker, &readings).await;

    let host = Host::start_on(broker, pool.clone(), Some(plugins.path()), &[]).await;
    let (refused, broker) = host.ended().await;
    let message = refused.expect_err("refused to start").to_string();
    assert!(
        message.contains("started again (partition 0: stored next offset 100, broker's log ends at 4)")
            && message.contains("--accept-new-log (IOTSTREAM_ACCEPT_NEW_LOG=true)"),
        "{message}"
    );
    assert_eq!(count_rows(&pool, "sensor_readings").await, 0);

    let host = Host::start_on(broker, pool.clone(), Some(plugins.path()), &["--accept-new-log"]).await;
    wait_for("readings of the new log", 4, || count_rows(&pool, "sensor_readings")).await;
    host.stop().await.expect("clean stop");
    let expected: Vec<_> = (0..4).map(|i| ("s1".to_owned(), 40.0 + i as f64, 1_000 * i)).collect();
    assert_eq!(stored(&pool).await, expected);
    let epochs: Vec<(i16, i32, Option<String>)> =
        sqlx::query_as("SELECT id, epoch, reason FROM kafka_sources ORDER BY epoch").fetch_all(&pool).await.expect("");
    let new = epochs[1].0;
    assert_eq!(
        epochs,
        vec![(old, 0, None), (new, 1, Some("partition 0: stored next offset 100, broker's log ends at 4".into()))]
    );
    let keyed: Vec<i16> =
        sqlx::query_scalar("SELECT DISTINCT source_id FROM sensor_readings").fetch_all(&pool).await.expect("");
    assert_eq!(keyed, vec![new]);
}

/// A host's `/api/health` as JSON.
async fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{addr}/api/health")).await.expect("api").json().await.expect("json")
}

/// Polls `addr`'s health until its status is `status` (at most 60 s).
async fn wait_for_status(addr: std::net::SocketAddr, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health = health(addr).await;
        if health["status"] == status {
            return health;
        }
        assert!(std::time::Instant::now() < deadline, "status still {health} after 60 s, expected {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ten humidity readings of sensor `s{round}`, values `round * 10 + i`.
fn round_of(round: i64) -> Vec<(String, Vec<u8>)> {
    (0..10)
        .map(|i| {
            let sensor = format!("s{round}");
            let value = (round * 10 + i) as f64;
            (sensor.clone(), encode(&reading(&sensor, SensorType::Humidity, "lab", round * 60_000 + i * 1_000, value)))
        })
        .collect()
}

/// Two hosts on one source and database: the second waits, says so on `/api/health` and processes
/// nothing while the first runs; when the first stops it takes over, and every reading is stored
/// once.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_second_host_on_a_source_waits_then_takes_over(pool: PgPool) {
    let plugins = scratch_folder("no-plugins");
    let first = Host::start(pool.clone(), Some(plugins.path()), &[]).await;
    first.produce(&round_of(1)).await;
    wait_for("readings under the first host", 10, || count_rows(&pool, "sensor_readings")).await;

    // The second host: its own pool on the same database, the same brokers.
    let second_pool = PgPoolOptions::new().connect_with((*pool.connect_options()).clone()).await.expect("pool");
    let brokers = first.broker.bootstrap_servers().to_owned();
    let plugins_flag = plugins.path().display().to_string();
    let config = run_config(&[
        "--brokers",
        &brokers,
        "--group",
        "iotstream-test",
        "--no-builtin-plugins",
        "--plugins",
        &plugins_flag,
        "--listen",
        "127.0.0.1:0",
        "--batch-linger-ms",
        "20",
        "--max-age",
        "off",
    ]);
    let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
    let second_addr = listener.local_addr().expect("addr");
    let second_shutdown = tokio_util::sync::CancellationToken::new();
    let second = {
        let (store, shutdown) = (Store::new(second_pool), second_shutdown.clone());
        tokio::spawn(async move {
            iotstream::app::run(&config, store, listener, &iotstream::kafka::Brokers::new(brokers), shutdown).await
        })
    };
    let standby = wait_for_status(second_addr, "standby").await;
    let waiting = standby["source"]["waiting"].as_str().expect("what it waits for").to_owned();
    assert!(waiting.starts_with("waiting for topic iot_sensors of mockCluster"), "{waiting}");
    assert_eq!(standby["source"]["owned"], false);

    first.produce(&round_of(2)).await;
    wait_for("readings under the first host", 20, || count_rows(&pool, "sensor_readings")).await;
    // Still waiting: it has not restored, positioned or read anything.
    assert_eq!(health(second_addr).await["status"], "standby");

    let (stopped, broker) = first.stop_keeping_broker().await;
    stopped.expect("the first host stopped cleanly");
    let took_over = wait_for_status(second_addr, "ok").await;
    assert_eq!(took_over["source"]["owned"], true);
    produce_to_partition_0(&broker, &round_of(3)).await;
    wait_for("readings under the second host", 30, || count_rows(&pool, "sensor_readings")).await;
    second_shutdown.cancel();
    second.await.expect("host task").expect("the second host stopped cleanly");

    let mut expected: Vec<(String, f64, i64)> = (1..=3)
        .flat_map(|round| {
            (0..10).map(move |i| (format!("s{round}"), (round * 10 + i) as f64, round * 60_000 + i * 1_000))
        })
        .collect();
    expected.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(stored(&pool).await, expected, "every reading once, in offset order");
}

/// A batch transaction checks that no other host took its source over: an owner whose lock
/// session merely ended (as in a database outage) writes on; once another host took the source,
/// the old owner's writes are refused, not retried, and the new owner's go through.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_is_refused_once_another_host_took_its_source_over(pool: PgPool) {
    let store = Store::new(pool.clone());
    let ids = store.source_ids("cluster", "topic").await.expect("source");
    let Ownership::Owned(lock) = store.try_own_source(ids.lineage).await.expect("try") else {
        panic!("a free source is owned at the first try")
    };
    let fence = lock.fence();
    let owner = store.fenced(fence);
    let batch = |next: i64| BatchRows { source: ids.current, positions: [(0, next)].into(), ..BatchRows::default() };
    owner.write(&batch(5)).await.expect("the owner writes");
    match store.try_own_source(ids.lineage).await.expect("try") {
        Ownership::HeldBy(Some(holder)) => assert_eq!(holder.pid, fence.pid),
        other => panic!("held by the first lock's session, got {other:?}"),
    }
    // The lock's session ends (as when the server drops it in an outage): nobody else owns the
    // source, so the owner writes on.
    sqlx::query("SELECT pg_terminate_backend($1, 5000)").bind(fence.pid).execute(&pool).await.expect("terminate");
    drop(lock);
    owner.write(&batch(6)).await.expect("no other owner: the write goes through");
    // Another host takes the source over: the old owner's next write is refused.
    let Ownership::Owned(second) = store.try_own_source(ids.lineage).await.expect("try") else {
        panic!("the lock is free once its session ended")
    };
    assert_eq!(second.fence().generation, fence.generation + 1);
    let refused = owner.write(&batch(7)).await.expect_err("refused");
    assert!(
        matches!(refused, StoreError::NotOwner { generation, current, .. } if generation == fence.generation && current == fence.generation + 1),
        "{refused}"
    );
    store.fenced(second.fence()).write(&batch(8)).await.expect("the new owner writes");
    assert_eq!(store.positions(ids.current).await.expect("positions"), [(0, 8)].into());
}
