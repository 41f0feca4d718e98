//! The batch log in PostgreSQL, per lane (partition): each committed batch's end is kept while a
//! kept checkpoint of its lane may need it, a batch formed again keeps its first end, a new owner
//! gets the lane's batches after its checkpoint, oldest first, and the batches a given-up replay
//! did not form are forgotten. One lane's log and checkpoints never touch another's.

use iotstream::store::{BatchRows, Checkpoint, CheckpointReason, LaneBatch, Store};
use sqlx::PgPool;

/// Batch `seq` of two lanes: partition 0 read up to `10 * seq` (checkpointed when `checkpoint`),
/// partition 1 up to `seq` (never checkpointed).
fn batch(source: i16, seq: i64, checkpoint: bool) -> BatchRows {
    let lane = |partition, next_offset| LaneBatch { partition, batch_seq: seq, next_offset, forget: None };
    BatchRows {
        source,
        lanes: vec![lane(0, 10 * seq), lane(1, seq)],
        checkpoints: if checkpoint {
            vec![Checkpoint {
                reason: CheckpointReason::Interval,
                partition: 0,
                after_batch: Some(seq),
                next_offset: 10 * seq,
                ..Checkpoint::default()
            }]
        } else {
            Vec::new()
        },
        positions: [(0, 10 * seq), (1, seq)].into(),
        ..BatchRows::default()
    }
}

async fn logged(pool: &PgPool, partition: i32) -> Vec<i64> {
    sqlx::query_scalar("SELECT batch_seq FROM kafka_batches WHERE kafka_partition = $1 ORDER BY batch_seq")
        .bind(partition)
        .fetch_all(pool)
        .await
        .expect("log")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn each_lanes_log_keeps_what_its_kept_checkpoints_need_and_hands_a_new_owner_the_batches_after_its_own(
    pool: PgPool,
) {
    let store = Store::new(pool.clone());
    let source = store.source_id("cluster", "topic").await.expect("source");
    assert_eq!(store.last_batch(source, 0).await.expect("last"), 0);
    // Lane 0 checkpoints with batches 1, 3 and 4: all three kept, the oldest follows batch 1.
    for (seq, checkpoint) in [(1, true), (2, false), (3, true), (4, true), (5, false)] {
        store.write(&batch(source, seq, checkpoint)).await.expect("write");
    }
    assert_eq!(logged(&pool, 0).await, vec![1, 2, 3, 4, 5]);
    // A fourth checkpoint (batch 6) drops the one after batch 1: lane 0's batches before 3 are not
    // needed; lane 1, which never checkpointed, keeps its whole log.
    store.write(&batch(source, 6, true)).await.expect("write");
    assert_eq!(logged(&pool, 0).await, vec![3, 4, 5, 6]);
    assert_eq!(logged(&pool, 1).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(store.last_batch(source, 0).await.expect("last"), 6);

    let checkpoint = store.latest_checkpoint(source, 0).await.expect("read").expect("a checkpoint");
    assert_eq!((checkpoint.partition, checkpoint.after_batch, checkpoint.next_offset), (0, Some(6), 60));
    assert_eq!(store.latest_checkpoint(source, 1).await.expect("read"), None, "lane 1 never checkpointed");
    // A batch formed again after a crash keeps the end logged first.
    store.write(&batch(source, 7, false)).await.expect("write");
    let mut again = batch(source, 7, false);
    again.lanes[0].next_offset = 999;
    store.write(&again).await.expect("write again");
    assert_eq!(store.batches_after(source, 0, 5).await.expect("after 5"), vec![(6, 60), (7, 70)]);
    assert_eq!(store.batches_after(source, 1, 5).await.expect("after 5"), vec![(6, 6), (7, 7)]);
    assert_eq!(store.batches_after(source, 0, 7).await.expect("after 7"), Vec::<(i64, i64)>::new());
    // Another source's log is its own.
    let other = store.source_id("cluster", "other").await.expect("source");
    assert_eq!(store.batches_after(other, 0, 0).await.expect("other"), Vec::<(i64, i64)>::new());
    // A batch after lane 0 gave its replay up forgets the logged batches it did not form; lane 1's
    // log is untouched.
    let mut after_giving_up = batch(source, 8, false);
    after_giving_up.lanes[0].forget = Some((6, 7));
    store.write(&after_giving_up).await.expect("write");
    assert_eq!(logged(&pool, 0).await, vec![3, 4, 5, 6, 8]);
    assert_eq!(logged(&pool, 1).await, vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

/// A checkpoint's states are stored compressed with lz4 (migration 0014: pglz held the batch a
/// checkpoint rides with for ~100 ms more) and read back byte for byte.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn checkpoint_states_are_stored_with_lz4_and_read_back_exactly(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("cluster", "topic").await.expect("source");
    // 256 KiB that compresses (a forest's state does, to about 60%), not all alike.
    let state: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
    let mut rows = batch(source, 1, true);
    rows.checkpoints[0].states = vec![iotstream::store::StageState {
        stage: "isolation-forest".into(),
        stage_version: "0.3.0".into(),
        state_version: 2,
        state: state.clone().into(),
    }];
    store.write(&rows).await.expect("write");
    let (compression, stored): (Option<String>, i32) =
        sqlx::query_as("SELECT pg_column_compression(state)::text, pg_column_size(state) FROM stage_checkpoint_states")
            .fetch_one(&pool)
            .await
            .expect("stored");
    assert_eq!(compression.as_deref(), Some("lz4"));
    assert!(stored < state.len() as i32 / 2, "{stored} bytes stored of {}", state.len());
    let read = store.latest_checkpoint(source, 0).await.expect("read").expect("a checkpoint");
    assert_eq!(read.states.len(), 1);
    assert_eq!(read.states[0].state.as_ref(), state.as_slice());
}
