//! The batch log in PostgreSQL: each committed batch's extent is kept while a kept checkpoint may
//! need it, a batch formed again keeps its first extent, a restart gets the batches after its
//! checkpoint, oldest first, and the batches a given-up replay did not form are forgotten.

use std::collections::BTreeMap;

use iotstream::store::{BatchRows, Checkpoint, CheckpointReason, Store};
use sqlx::PgPool;

/// Batch `seq` of the source: it read partition 0 up to `10 * seq` and partition 1 up to `seq`.
fn batch(source: i16, seq: i64, checkpoint: bool) -> BatchRows {
    let positions: BTreeMap<i32, i64> = [(0, 10 * seq), (1, seq)].into();
    BatchRows {
        source,
        batch_seq: seq,
        checkpoint: checkpoint.then(|| Checkpoint {
            reason: CheckpointReason::Interval,
            after_batch: Some(seq),
            positions: positions.clone(),
            ..Checkpoint::default()
        }),
        positions,
        ..BatchRows::default()
    }
}

async fn logged(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT batch_seq FROM kafka_batches ORDER BY batch_seq").fetch_all(pool).await.expect("log")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_batch_log_keeps_what_the_kept_checkpoints_need_and_hands_a_restart_the_batches_after_its_own(
    pool: PgPool,
) {
    let store = Store::new(pool.clone());
    let source = store.source_id("cluster", "topic").await.expect("source");
    assert_eq!(store.last_batch(source).await.expect("last"), 0);
    // Checkpoints with batches 1, 3 and 4: all three kept, the oldest follows batch 1.
    for (seq, checkpoint) in [(1, true), (2, false), (3, true), (4, true), (5, false)] {
        store.write(&batch(source, seq, checkpoint)).await.expect("write");
    }
    assert_eq!(logged(&pool).await, vec![1, 2, 3, 4, 5]);
    // A fourth checkpoint (batch 6) drops the one after batch 1: batches before 3 are not needed.
    store.write(&batch(source, 6, true)).await.expect("write");
    assert_eq!(logged(&pool).await, vec![3, 4, 5, 6]);
    assert_eq!(store.last_batch(source).await.expect("last"), 6);

    let checkpoint = store.latest_checkpoint(source).await.expect("read").expect("a checkpoint");
    assert_eq!(checkpoint.after_batch, Some(6));
    // A batch formed again after a crash keeps the extent logged first.
    store.write(&batch(source, 7, false)).await.expect("write");
    let mut again = batch(source, 7, false);
    again.positions = [(0, 999)].into();
    store.write(&again).await.expect("write again");
    type Logged = Vec<(i64, BTreeMap<i32, i64>)>;
    let after_5: Logged = vec![(6, [(0, 60), (1, 6)].into()), (7, [(0, 70), (1, 7)].into())];
    assert_eq!(store.batches_after(source, 5).await.expect("after 5"), after_5);
    assert_eq!(store.batches_after(source, 7).await.expect("after 7"), Logged::new());
    // Another source's log is its own.
    let other = store.source_id("cluster", "other").await.expect("source");
    assert_eq!(store.batches_after(other, 0).await.expect("other"), Logged::new());
    // A batch after a given-up replay forgets the logged batches that were not formed again.
    let mut after_giving_up = batch(source, 8, false);
    after_giving_up.forget_batches = Some((6, 7));
    store.write(&after_giving_up).await.expect("write");
    assert_eq!(logged(&pool).await, vec![3, 4, 5, 6, 8]);
}
