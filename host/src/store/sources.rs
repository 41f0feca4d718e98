//! Where the store's rows came from: the `kafka_sources` registry (one id per epoch of a topic of a
//! cluster), the stored position of each partition, and the batch log (each lane's committed
//! batches and where each ended), which a new owner of a partition reads to form them again.

use std::collections::BTreeMap;

use crate::store::{Store, StoreError};

/// Which `kafka_sources` rows a topic of a cluster has: its first (the key its owner's lock is
/// derived from, whatever epoch runs) and its current epoch (the id new rows are keyed by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceIds {
    /// The id of the source's first epoch.
    pub lineage: i16,
    /// The id of its newest epoch.
    pub current: i16,
    /// The newest epoch's number (0: the log never started again).
    pub epoch: i32,
}

impl Store {
    /// The `kafka_sources` id of `topic` on the cluster `identity`, its newest epoch's, registering
    /// it on first use.
    pub async fn source_id(&self, identity: &str, topic: &str) -> Result<i16, StoreError> {
        Ok(self.source_ids(identity, topic).await?.current)
    }

    /// The ids of `topic` on the cluster `identity` ([`SourceIds`]), registering it on first use.
    pub async fn source_ids(&self, identity: &str, topic: &str) -> Result<SourceIds, StoreError> {
        sqlx::query("INSERT INTO kafka_sources (cluster_id, topic) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(identity)
            .bind(topic)
            .execute(&self.pool)
            .await?;
        let (lineage, current, epoch) = sqlx::query_as(
            "SELECT (SELECT id FROM kafka_sources WHERE cluster_id = $1 AND topic = $2 AND epoch = 0), id, epoch \
             FROM kafka_sources WHERE cluster_id = $1 AND topic = $2 ORDER BY epoch DESC LIMIT 1",
        )
        .bind(identity)
        .bind(topic)
        .fetch_one(&self.pool)
        .await?;
        Ok(SourceIds { lineage, current, epoch })
    }

    /// Registers a new epoch of `topic` on `identity` (the log started again; `reason` says how it
    /// was seen) and returns its ids: rows from now on are keyed by the new id.
    pub async fn new_epoch(&self, identity: &str, topic: &str, reason: &str) -> Result<SourceIds, StoreError> {
        sqlx::query(
            "INSERT INTO kafka_sources (cluster_id, topic, epoch, reason) \
             SELECT $1, $2, max(epoch) + 1, $3 FROM kafka_sources WHERE cluster_id = $1 AND topic = $2",
        )
        .bind(identity)
        .bind(topic)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        self.source_ids(identity, topic).await
    }

    /// The next offset of each partition of `source` whose messages are stored.
    pub async fn positions(&self, source: i16) -> Result<BTreeMap<i32, i64>, StoreError> {
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT kafka_partition, next_offset FROM kafka_offsets WHERE source_id = $1")
                .bind(source)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The numbers and ends (the partition's next offset after each) of the batches of `partition`
    /// of `source` committed after its batch `after`, oldest first.
    pub async fn batches_after(&self, source: i16, partition: i32, after: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT batch_seq, next_offset FROM kafka_batches WHERE source_id = $1 AND kafka_partition = $2 \
             AND batch_seq > $3 ORDER BY batch_seq",
        )
        .bind(source)
        .bind(partition)
        .bind(after)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The number of the newest logged batch of `partition` of `source` (0 when none is).
    pub async fn last_batch(&self, source: i16, partition: i32) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(batch_seq), 0) FROM kafka_batches WHERE source_id = $1 AND kafka_partition = $2",
        )
        .bind(source)
        .bind(partition)
        .fetch_one(&self.pool)
        .await?)
    }
}
