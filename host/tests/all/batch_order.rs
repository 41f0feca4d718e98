//! Batches in flight side by side, committed in order (`store::order`): a batch's transaction
//! sends its rows while the batch before it is still being written, but commits only after it.
//! Attacked here: the later batch, its rows sent, stays invisible (rows, position, totals) until
//! the earlier one is stored, then commits whole; it is not stored at all when the earlier one is
//! given up on; and when the earlier one fails an attempt, the later one gives way at once,
//! releasing what the earlier one's next attempt needs (a new day partition of the table both
//! write), and commits after it.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::order::{BatchProgress, EarlierBatch, Order};
use iotstream::store::partitions::PartitionedTable;
use iotstream::store::{BatchRows, LaneBatch, Store, StoreError, StoredReading, Written};
use sqlx::PgPool;

fn reading(offset: i64, at: DateTime<Utc>) -> StoredReading {
    StoredReading {
        reading: Reading {
            sensor_id: format!("s-{}", offset % 3).into(),
            sensor_type: SensorType::Temperature,
            location: "hall".into(),
            value: offset as f64 / 4.0,
            timestamp: at + chrono::Duration::seconds(offset),
            anomaly: false,
            unit: "C".into(),
        },
        flagged: false,
        partition: 1,
        offset,
    }
}

/// The fresh batch of offsets `from..to` of partition 1, the lane's batch `seq`.
fn batch(source: i16, from: i64, to: i64, seq: i64, at: DateTime<Utc>) -> BatchRows {
    BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(1, to)].into(),
        lanes: vec![LaneBatch { partition: 1, batch_seq: seq, next_offset: to, forget: None }],
        readings: (from..to).map(|o| reading(o, at)).collect(),
        fresh: true,
        ..BatchRows::default()
    }
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).single().expect("valid time")
}

/// What is stored, read from another connection: the readings' offsets, partition 1's position
/// and the source's total of readings.
async fn stored(pool: &PgPool) -> (Vec<i64>, Option<i64>, Option<i64>) {
    let offsets = sqlx::query_scalar("SELECT kafka_offset FROM sensor_readings ORDER BY kafka_offset")
        .fetch_all(pool)
        .await
        .expect("offsets");
    let position = sqlx::query_scalar("SELECT next_offset FROM kafka_offsets WHERE kafka_partition = 1")
        .fetch_optional(pool)
        .await
        .expect("position");
    let total =
        sqlx::query_scalar("SELECT sum(readings)::int8 FROM stored_totals").fetch_one(pool).await.expect("total");
    (offsets, position, total)
}

/// Waits until `n` transactions of this test's database have sent their readings' `COPY` and
/// wait (idle in their transactions); panics after 10 s.
async fn until_copied_and_waiting(pool: &PgPool, n: i64) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'idle in transaction' AND query LIKE 'COPY sensor_readings%'",
        )
        .fetch_one(pool)
        .await
        .expect("activity");
        if waiting == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the later batches' transactions never sent their rows before waiting");
}

type Write = tokio::task::JoinHandle<Result<Written, StoreError>>;

/// Writes `rows` after `after`, as the pipeline's commit task does (its own progress says stored
/// once it is); returns the write and what the batch after it waits on.
fn write_after(store: &Store, rows: BatchRows, after: EarlierBatch) -> (Write, EarlierBatch) {
    let (progress, this) = BatchProgress::start();
    let store = store.clone();
    let write = tokio::spawn(async move {
        let written = store.write_in_order(&rows, Order { progress: &progress, after: &after }).await;
        if written.is_ok() {
            progress.stored();
        }
        written
    });
    (write, this)
}

/// The later batch (offsets 10..25, the lane's second), written beside an earlier batch still
/// in flight: the store, the source, the earlier batch's progress, the later write and what a
/// batch after it waits on, once its transaction has sent its rows and waits.
async fn later_batch_waiting(pool: &PgPool) -> (Store, i16, BatchProgress, Write, EarlierBatch) {
    let store = Store::new(pool.clone());
    let source = store.source_id("order-test", "iot_sensors").await.expect("source");
    let (progress, earlier) = BatchProgress::start();
    let (later, after_later) = write_after(&store, batch(source, 10, 25, 2, noon()), earlier);
    until_copied_and_waiting(pool, 1).await;
    (store, source, progress, later, after_later)
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_commits_only_after_the_one_before_it(pool: PgPool) {
    let (store, source, progress, later, _) = later_batch_waiting(&pool).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!later.is_finished(), "committed before the batch before it was stored");
    assert_eq!(stored(&pool).await, (Vec::new(), None, None));

    // The earlier batch, written beside it: nothing the later one holds is in its way.
    let first = tokio::time::timeout(Duration::from_secs(10), store.write(&batch(source, 0, 10, 1, noon())))
        .await
        .expect("the earlier batch waited for the later one")
        .expect("earlier batch stored");
    assert_eq!(first.totals.readings, 10);
    assert_eq!(stored(&pool).await, ((0..10).collect(), Some(10), Some(10)));
    assert!(!later.is_finished(), "committed before the earlier batch said it was stored");

    progress.stored();
    let written = later.await.expect("task").expect("later batch stored");
    assert_eq!(written.totals.readings, 15);
    assert_eq!(stored(&pool).await, ((0..25).collect(), Some(25), Some(25)));
    let logged: Vec<(i64, i64)> =
        sqlx::query_as("SELECT batch_seq, next_offset FROM kafka_batches WHERE kafka_partition = 1 ORDER BY batch_seq")
            .fetch_all(&pool)
            .await
            .expect("batch log");
    assert_eq!(logged, vec![(1, 10), (2, 25)]);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_after_one_not_stored_is_not_stored(pool: PgPool) {
    let (store, source, progress, later, _) = later_batch_waiting(&pool).await;
    let later_rows = || batch(source, 10, 25, 2, noon());
    progress.not_stored();
    let result = later.await.expect("task");
    assert!(matches!(result, Err(StoreError::EarlierNotStored)), "{result:?}");
    assert_eq!(stored(&pool).await, (Vec::new(), None, None));
    // Nor does a write not yet begun start beside it.
    let (gone, given_up) = BatchProgress::start();
    gone.not_stored();
    let (not_begun, _) = write_after(&store, later_rows(), given_up);
    assert!(matches!(not_begun.await.expect("task"), Err(StoreError::EarlierNotStored)));
    assert_eq!(stored(&pool).await, (Vec::new(), None, None));

    // The host's restart replays both: nothing was half stored.
    store.write(&batch(source, 0, 10, 1, noon())).await.expect("earlier batch stored");
    store.write(&later_rows()).await.expect("later batch stored");
    assert_eq!(stored(&pool).await, ((0..25).collect(), Some(25), Some(25)));
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_gives_way_to_the_one_before_it_being_written_again(pool: PgPool) {
    let (store, source, progress, later, after_later) = later_batch_waiting(&pool).await;
    // A third batch in flight (`--batches-in-flight 3`), after the second.
    let (last, _) = write_after(&store, batch(source, 25, 40, 3, noon()), after_later);
    until_copied_and_waiting(&pool, 2).await;

    // The earlier batch's first attempt failed; its next one has a reading of a day not yet
    // partitioned, whose partition cannot be made while any transaction writes the table
    // (`ensure_partitions` gives up after 2 s): both batches after it give way.
    progress.retrying();
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).expect("valid day");
    let made = store.ensure_partitions(PartitionedTable::Readings, [day]).await.expect("partition made");
    assert_eq!(made, vec!["sensor_readings_20261120".to_owned()]);
    assert!(!later.is_finished(), "committed while the batch before it was being written again");
    assert!(!last.is_finished(), "committed while a batch before it was being written again");
    assert_eq!(stored(&pool).await, (Vec::new(), None, None));

    let late = Utc.with_ymd_and_hms(2026, 11, 20, 23, 0, 0).single().expect("valid time");
    let mut retried = batch(source, 0, 10, 1, noon());
    retried.readings[0] = reading(0, late);
    store.write(&retried).await.expect("earlier batch stored");
    progress.stored();
    let written = later.await.expect("task").expect("later batch stored");
    assert_eq!(written.totals.readings, 15);
    let written = last.await.expect("task").expect("last batch stored");
    assert_eq!(written.totals.readings, 15);
    assert_eq!(stored(&pool).await, ((0..40).collect(), Some(40), Some(40)));
    let in_day: i64 = sqlx::query_scalar("SELECT count(*) FROM sensor_readings_20261120")
        .fetch_one(&pool)
        .await
        .expect("partition's rows");
    assert_eq!(in_day, 1);
}
