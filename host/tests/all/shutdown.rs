//! Stopping: a shutdown lets the write in progress finish (within a bound) and checkpoints the
//! stages; a stop that leaves a batch unstored is an error, so the process exits non-zero and a
//! supervisor restarts it (the batch is replayed then, so nothing is lost either way).

use std::time::{Duration, Instant};

use iotstream::app::RunError;
use iotstream::pipeline::PipelineError;
use iotstream::reading::{SensorType, encode};
use sqlx::PgPool;

use crate::faults::{DatabaseCut, wait_for_health};
use crate::support::{Host, count_rows, reading, wait_for};

fn payloads(count: i64, first_ms: i64) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let sensor = format!("s{}", i % 5);
            (sensor.clone(), encode(&reading(&sensor, SensorType::Humidity, "lab_1", first_ms + i * 100, 40.0)))
        })
        .collect()
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_stop_with_a_batch_not_stored_is_an_error(pool: PgPool) {
    let (cut, proxied) = DatabaseCut::in_front_of(&pool).await;
    let host = Host::start(proxied, None, &[]).await;
    host.produce(&payloads(20, 1_764_064_800_000)).await;
    wait_for("sensor_readings", 20, || count_rows(&pool, "sensor_readings")).await;
    cut.set_up(false);
    host.produce(&payloads(20, 1_764_064_900_000)).await;
    wait_for_health(host.addr, "database", false).await;
    let stopped = Instant::now();
    let result = host.stop().await;
    assert!(
        matches!(result, Err(RunError::Pipeline(PipelineError::NotStored))),
        "a stop with a batch not stored must be an error, got {result:?}"
    );
    // Within the write grace (5 s) and the HTTP drain, not after an unbounded retry.
    assert!(stopped.elapsed() < Duration::from_secs(12), "took {:?}", stopped.elapsed());
    assert_eq!(count_rows(&pool, "sensor_readings").await, 20);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_stop_while_batches_are_written_finishes_them_and_checkpoints(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &["--checkpoint-interval", "0s"]).await;
    host.produce(&payloads(2000, 1_764_064_800_000)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_rows(&pool, "sensor_readings").await == 0 {
        assert!(Instant::now() < deadline, "nothing stored in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stop while batches are still being written: each write in progress finishes.
    host.stop().await.expect("a clean stop");
    let stored = count_rows(&pool, "sensor_readings").await;
    let (checkpoints, positions): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT kafka_partition) FROM stage_checkpoints WHERE reason = 'shutdown'), \
         (SELECT sum(next_offset)::int8 FROM kafka_offsets)",
    )
    .fetch_one(&pool)
    .await
    .expect("checkpoints");
    assert_eq!(checkpoints, 3, "the shutdown checkpoint of each partition's lane is written");
    // Every stored reading is covered by the stored position (one partition: offsets 0..n).
    assert_eq!(positions, Some(stored));
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_sensor_that_keeps_moving_does_not_grow_the_catalog_without_end(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &["--checkpoint-interval", "0s"]).await;
    // One sensor reporting from a new location with every reading: a key each.
    let moves: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|i| {
            let at = 1_764_064_800_000 + i * 1000;
            ("mover".to_owned(), encode(&reading("mover", SensorType::Co2, &format!("room_{i}"), at, 400.0)))
        })
        .collect();
    host.produce(&moves).await;
    wait_for("sensor_readings", 1500, || count_rows(&pool, "sensor_readings")).await;
    // The shutdown checkpoint compacts the catalog: the mover's current identity only.
    let (stopped, broker) = host.stop_keeping_broker().await;
    stopped.expect("clean stop");
    let (ids, locations): (Vec<String>, Vec<String>) =
        sqlx::query_as("SELECT sensor_ids, locations FROM stage_checkpoints WHERE reason = 'shutdown'")
            .fetch_one(&pool)
            .await
            .expect("checkpoint");
    assert_eq!((ids, locations), (vec!["mover".to_owned()], vec!["room_1499".to_owned()]));
    // A host restored from it carries on: every plugin judges the next readings.
    let host = Host::start_on(broker, pool.clone(), None, &[]).await;
    let more: Vec<(String, Vec<u8>)> = (1500..1540)
        .map(|i| {
            let at = 1_764_064_800_000 + i * 1000;
            ("mover".to_owned(), encode(&reading("mover", SensorType::Co2, "room_1499", at, 400.0 + (i % 3) as f64)))
        })
        .collect();
    host.produce(&more).await;
    wait_for("sensor_readings", 1540, || count_rows(&pool, "sensor_readings")).await;
    host.stop().await.expect("clean stop");
    let judged: Vec<(String, i64)> = sqlx::query_as(
        "SELECT detector, count(*) FROM ml_anomaly_predictions WHERE kafka_offset >= 1500 AND detector IN ('zscore', 'isolation-forest') GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("verdicts");
    assert_eq!(judged, vec![("isolation-forest".to_owned(), 40), ("zscore".to_owned(), 40)]);
}
