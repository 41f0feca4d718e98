//! The Kafka source and who owns its partitions: event times judged against the message's Kafka
//! timestamp, a log that started again refused (and accepted as a new epoch with the operator's
//! flag), two hosts of one group sharing the partitions, and a batch refused once another host took
//! one of its partitions over. The hosts run
//! without plugins: what is checked is where rows go, not what stages make of them.

use std::time::Duration;

use iotstream::kafka::{EmbeddedBroker, Source};
use iotstream::reading::{SensorType, encode};
use iotstream::store::{BatchRows, Fence, Store, StoreError};
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::{
    FAST_GROUP, Host, count_rows, produce_to_partition_0, reading, run_config, scratch_folder, wait_for,
};

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

/// Produces `round_of(round)` to partition `round % 3`.
async fn produce_round(broker: &EmbeddedBroker, round: i64) {
    let producer =
        iotstream::kafka::producer(&iotstream::kafka::Brokers::new(broker.bootstrap_servers())).expect("producer");
    let partition = i32::try_from(round % 3).expect("small");
    for (key, payload) in round_of(round) {
        let record = FutureRecord::to("iot_sensors").partition(partition).key(&key).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(err, _)| err).expect("broker acknowledged");
    }
}

/// The owner of each partition of the test topic, by partition.
async fn owners(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT owner FROM partition_owners ORDER BY kafka_partition")
        .fetch_all(pool)
        .await
        .expect("owners")
}

/// Two hosts in one consumer group on one database: the second joins and is given some of the
/// three partitions (the first keeps the rest and reads on); when the first stops, the second is
/// given them all; every reading is stored once.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn two_hosts_share_the_partitions_and_the_last_one_takes_them_all(pool: PgPool) {
    let plugins = scratch_folder("no-plugins");
    let first = Host::start(pool.clone(), Some(plugins.path()), &["--host-name", "first"]).await;
    for round in 1..=3 {
        produce_round(&first.broker, round).await;
    }
    wait_for("readings under the first host", 30, || count_rows(&pool, "sensor_readings")).await;
    assert_eq!(owners(&pool).await, vec!["first"; 3]);

    // The second host: its own pool on the same database, the same brokers and group.
    let second_pool = PgPoolOptions::new().connect_with((*pool.connect_options()).clone()).await.expect("pool");
    let brokers = first.broker.bootstrap_servers().to_owned();
    let plugins_flag = plugins.path().display().to_string();
    let config = run_config(
        &[
            FAST_GROUP,
            &[
                "--brokers",
                &brokers,
                "--group",
                "iotstream-test",
                "--host-name",
                "second",
                "--no-builtin-plugins",
                "--plugins",
                &plugins_flag,
                "--listen",
                "127.0.0.1:0",
                "--batch-linger-ms",
                "20",
                "--max-age",
                "off",
            ],
        ]
        .concat(),
    );
    let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
    let second_addr = listener.local_addr().expect("addr");
    let second_shutdown = tokio_util::sync::CancellationToken::new();
    let second = {
        let (store, shutdown) = (Store::new(second_pool), second_shutdown.clone());
        tokio::spawn(async move {
            iotstream::app::run(&config, store, listener, &config.kafka.brokers(&brokers), shutdown).await
        })
    };
    wait_for_status(second_addr, "ok").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = owners(&pool).await;
        if now.iter().any(|o| o == "second") && now.iter().any(|o| o == "first") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the group never shared the partitions: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for round in 4..=6 {
        produce_round(&first.broker, round).await;
    }
    wait_for("readings under both hosts", 60, || count_rows(&pool, "sensor_readings")).await;

    let (stopped, broker) = first.stop_keeping_broker().await;
    stopped.expect("the first host stopped cleanly");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while owners(&pool).await != vec!["second"; 3] {
        assert!(std::time::Instant::now() < deadline, "the second host was never given every partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for round in 7..=9 {
        produce_round(&broker, round).await;
    }
    wait_for("readings under the second host", 90, || count_rows(&pool, "sensor_readings")).await;
    second_shutdown.cancel();
    second.await.expect("host task").expect("the second host stopped cleanly");

    let mut expected: Vec<(String, f64, i64)> = (1..=9)
        .flat_map(|round| {
            (0..10).map(move |i| (format!("s{round}"), (round * 10 + i) as f64, round * 60_000 + i * 1_000))
        })
        .collect();
    expected.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut got = stored(&pool).await;
    got.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(got, expected, "every reading once");
}

/// A batch transaction checks that no other host took its partitions over: once another host
/// took one, the old owner's writes to it are refused, not retried, while its writes to the
/// partitions it still owns go through, and the new owner's go through. A take-over waits for the
/// old owner's transaction in flight.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_is_refused_once_another_host_took_one_of_its_partitions_over(pool: PgPool) {
    let store = Store::new(pool.clone());
    let ids = store.source_ids("cluster", "topic").await.expect("source");
    let first = store.own_partitions(ids.lineage, "host-a", &[0, 1]).await.expect("own");
    assert_eq!(first, [(0, 1), (1, 1)].into());
    let fence = |generations: &[(i32, i64)]| {
        Some(Fence { lineage: ids.lineage, generations: generations.iter().copied().collect() })
    };
    let batch = |partition: i32, next: i64, fence| BatchRows {
        source: ids.current,
        positions: [(partition, next)].into(),
        fence,
        ..BatchRows::default()
    };
    store.write(&batch(0, 5, fence(&[(0, 1)]))).await.expect("the owner writes");
    store.write(&batch(1, 5, fence(&[(1, 1)]))).await.expect("the owner writes");

    // Host b takes partition 1 over while host a holds it in a transaction: b waits for it.
    let mut in_flight = pool.begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM partition_owners WHERE source_id = $1 AND kafka_partition = 1 FOR SHARE")
        .bind(ids.lineage)
        .execute(&mut *in_flight)
        .await
        .expect("share");
    let taking = {
        let store = store.clone();
        tokio::spawn(async move { store.own_partitions(ids.lineage, "host-b", &[1]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!taking.is_finished(), "the take-over waits for the old owner's transaction");
    in_flight.commit().await.expect("commit");
    let second = taking.await.expect("task").expect("own");
    assert_eq!(second, [(1, 2)].into());

    let refused = store.write(&batch(1, 7, fence(&[(0, 1), (1, 1)]))).await.expect_err("refused");
    assert!(matches!(refused, StoreError::NotOwner { partition: 1, generation: 1, current: 2, .. }), "{refused}");
    store.write(&batch(0, 8, fence(&[(0, 1)]))).await.expect("host a still owns partition 0");
    store.write(&batch(1, 9, fence(&[(1, 2)]))).await.expect("the new owner writes");
    assert_eq!(store.positions(ids.current).await.expect("positions"), [(0, 8), (1, 9)].into());
    let owners: Vec<(i32, String, i64)> = store
        .partition_owners(ids.lineage)
        .await
        .expect("owners")
        .into_iter()
        .map(|o| (o.partition, o.owner, o.generation))
        .collect();
    assert_eq!(owners, vec![(0, "host-a".to_owned(), 1), (1, "host-b".to_owned(), 2)]);
}
