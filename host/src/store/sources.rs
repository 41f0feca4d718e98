//! Where the store's rows came from: the `kafka_sources` registry (one id per topic of a cluster),
//! the stored position of each partition, and the batch log (each committed batch's extent), which a
//! restart reads to form the same batches again.

use std::collections::BTreeMap;

use crate::kafka::batches::Extent;
use crate::store::{Store, StoreError};

impl Store {
    /// The `kafka_sources` id of `topic` on the cluster `identity`, registering it on first use.
    pub async fn source_id(&self, identity: &str, topic: &str) -> Result<i16, StoreError> {
        sqlx::query("INSERT INTO kafka_sources (cluster_id, topic) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(identity)
            .bind(topic)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT id FROM kafka_sources WHERE cluster_id = $1 AND topic = $2")
            .bind(identity)
            .bind(topic)
            .fetch_one(&self.pool)
            .await?)
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
    /// The numbers and extents of the batches of `source` committed after batch `after`, oldest
    /// first.
    pub async fn batches_after(&self, source: i16, after: i64) -> Result<Vec<(i64, Extent)>, StoreError> {
        let rows: Vec<(i64, Vec<i32>, Vec<i64>)> = sqlx::query_as(
            "SELECT batch_seq, partitions, offsets FROM kafka_batches WHERE source_id = $1 AND batch_seq > $2 \
             ORDER BY batch_seq",
        )
        .bind(source)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, partitions, offsets)| (seq, partitions.into_iter().zip(offsets).collect()))
            .collect())
    }

    /// The number of the newest logged batch of `source` (0 when none is).
    pub async fn last_batch(&self, source: i16) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT coalesce(max(batch_seq), 0) FROM kafka_batches WHERE source_id = $1")
            .bind(source)
            .fetch_one(&self.pool)
            .await?)
    }
}
