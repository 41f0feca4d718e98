//! Who owns each partition of a source. Kafka's consumer group decides which host reads which
//! partition; PostgreSQL must agree, because a partition's stage state, batch log and checkpoints
//! are written by one host at a time: a host that lost a partition while it ran on (paused past
//! the group's session timeout, cut off from the brokers but not from the database) would
//! otherwise overwrite what the partition's new owner wrote.
//!
//! So a host given a partition counts the partition's ownership up in `partition_owners`
//! ([`Store::own_partitions`]); the update takes the row's lock, which waits for every batch
//! transaction the old owner has in flight. Every batch transaction takes its partitions' rows
//! shared and checks their counts are still this host's ([`Fence`]): a host that was taken over
//! from is refused (and stops; its restart joins the group again), a database outage alone changes
//! nothing here.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::store::{Store, StoreError};

/// The partitions a batch transaction writes, as their owner proves it: the source's first id
/// (its lineage, constant across epochs) and the ownership count this host set on each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The source's first id.
    pub lineage: i16,
    /// Each partition written, with this host's ownership count of it.
    pub generations: BTreeMap<i32, i64>,
}

/// One partition's owner as `partition_owners` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOwner {
    /// The partition.
    pub partition: i32,
    /// The owning host's name.
    pub owner: String,
    /// Its ownership count.
    pub generation: i64,
}

impl Store {
    /// Makes `owner` the owner of `partitions` of the source whose first id is `lineage`, waiting
    /// for the batch transactions a previous owner has in flight on them; returns each partition's
    /// new ownership count.
    pub async fn own_partitions(
        &self,
        lineage: i16,
        owner: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, StoreError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let owned: Vec<(i32, i64)> = sqlx::query_as(
            "INSERT INTO partition_owners (source_id, kafka_partition, owner) SELECT $1, p, $3 FROM UNNEST($2::int4[]) p \
             ON CONFLICT (source_id, kafka_partition) DO UPDATE SET owner = EXCLUDED.owner, \
             generation = partition_owners.generation + 1, since = now() RETURNING kafka_partition, generation",
        )
        .bind(lineage)
        .bind(partitions)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(owned.into_iter().collect())
    }

    /// Who owns each partition of the source whose first id is `lineage`, by partition.
    pub async fn partition_owners(&self, lineage: i16) -> Result<Vec<PartitionOwner>, StoreError> {
        let rows: Vec<(i32, String, i64)> = sqlx::query_as(
            "SELECT kafka_partition, owner, generation FROM partition_owners WHERE source_id = $1 ORDER BY kafka_partition",
        )
        .bind(lineage)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(partition, owner, generation)| PartitionOwner { partition, owner, generation })
            .collect())
    }
}

impl Fence {
    /// Within a batch transaction: takes the fenced partitions' ownership rows shared (a new owner's
    /// take-over waits for this transaction) and checks each count is still this host's;
    /// [`StoreError::NotOwner`] names the first partition another host took over since.
    pub(super) async fn check(&self, tx: &mut PgConnection) -> Result<(), StoreError> {
        if self.generations.is_empty() {
            return Ok(());
        }
        let partitions: Vec<i32> = self.generations.keys().copied().collect();
        let found: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT kafka_partition, generation FROM partition_owners WHERE source_id = $1 \
             AND kafka_partition = ANY($2::int4[]) ORDER BY kafka_partition FOR SHARE",
        )
        .bind(self.lineage)
        .bind(&partitions)
        .fetch_all(&mut *tx)
        .await?;
        let found: BTreeMap<i32, i64> = found.into_iter().collect();
        for (&partition, &generation) in &self.generations {
            let current = found.get(&partition).copied().unwrap_or(0);
            if current != generation {
                return Err(StoreError::NotOwner { lineage: self.lineage, partition, generation, current });
            }
        }
        Ok(())
    }
}
