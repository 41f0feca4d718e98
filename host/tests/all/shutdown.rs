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
    let options = pool.connect_options();
    let cut = DatabaseCut::start((options.get_host().to_owned(), options.get_port())).await;
    let proxied = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with((*options).clone().port(cut.port))
        .await
        .expect("pool through the proxy");
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
        "SELECT (SELECT count(*) FROM stage_checkpoints WHERE reason = 'shutdown'), \
         (SELECT sum(next_offset)::int8 FROM kafka_offsets)",
    )
    .fetch_one(&pool)
    .await
    .expect("checkpoints");
    assert_eq!(checkpoints, 1, "the shutdown checkpoint is written");
    // Every stored reading is covered by the stored position (one partition: offsets 0..n).
    assert_eq!(positions, Some(stored));
}
