//! Checkpoints: one lane's (one partition's) stages' exported states, the sensor catalog their keys
//! refer to, and the position whose messages the states include, written in the transaction of the
//! batch they follow and restored when a host is given the partition (docs/guarantees.md).

use bytes::Bytes;

use crate::kafka::BEGINNING;
use crate::reading::{SensorIdentity, SensorType};
use crate::store::{Store, StoreError};

/// Checkpoints kept per lane: the newest is the one restored; two older ones are kept for an
/// operator who wants to look back, and cost a few MB at most.
const CHECKPOINTS_KEPT: i64 = 3;

/// Why a checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointReason {
    /// On the checkpoint interval, the first batch of a process, or the first after a plugin change.
    #[default]
    Interval,
    /// At shutdown.
    Shutdown,
    /// When the partition was taken from this host (a rebalance), for its next owner.
    Handoff,
}

impl CheckpointReason {
    /// The name stored in `stage_checkpoints.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointReason::Interval => "interval",
            CheckpointReason::Shutdown => "shutdown",
            CheckpointReason::Handoff => "handoff",
        }
    }
}

/// One stage's exported state.
#[derive(Debug, Clone, PartialEq)]
pub struct StageState {
    /// The plugin's name.
    pub stage: String,
    /// The plugin's version.
    pub stage_version: String,
    /// The version of its state format.
    pub state_version: u32,
    /// The bytes its `export-state` returned, shared with the plugin's last good state (a lane's
    /// states are megabytes: a checkpoint in flight must not hold a second copy of each).
    pub state: Bytes,
}

/// A lane's stages' states and the position (the partition's next offset; `BEGINNING` when nothing
/// was read from it) whose messages the states include, and no others.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Why it was taken.
    pub reason: CheckpointReason,
    /// The partition whose stages it holds.
    pub partition: i32,
    /// The lane's batch it follows (its `batch_seq`; `None` for a checkpoint older than the log).
    pub after_batch: Option<i64>,
    /// The partition's next offset.
    pub next_offset: i64,
    /// The sensor keys the states refer to (key = position in the list).
    pub catalog: Vec<SensorIdentity>,
    /// The stages' states.
    pub states: Vec<StageState>,
}

impl Store {
    /// The newest checkpoint of `partition` of `source` (checkpoints from before lanes, which hold
    /// every partition's state in one, are never restored).
    pub async fn latest_checkpoint(&self, source: i16, partition: i32) -> Result<Option<Checkpoint>, StoreError> {
        type Head = (i64, String, Option<i64>, Vec<i32>, Vec<i64>, Vec<String>, Vec<String>, Vec<String>);
        let head: Option<Head> = sqlx::query_as(
            "SELECT id, reason, after_batch, partitions, offsets, sensor_ids, sensor_types, locations FROM stage_checkpoints \
             WHERE source_id = $1 AND kafka_partition = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(source)
        .bind(partition)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, reason, after_batch, partitions, offsets, sensor_ids, sensor_types, locations)) = head else {
            return Ok(None);
        };
        let states: Vec<(String, String, i32, Vec<u8>)> = sqlx::query_as(
            "SELECT stage, stage_version, state_version, state FROM stage_checkpoint_states WHERE checkpoint_id = $1 \
             ORDER BY stage",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let catalog = sensor_ids
            .into_iter()
            .zip(sensor_types)
            .zip(locations)
            .map(|((sensor_id, sensor_type), location)| {
                let sensor_type = SensorType::from_name(&sensor_type).ok_or_else(|| {
                    sqlx::Error::Decode(format!("checkpoint {id} names an unknown sensor type {sensor_type:?}").into())
                })?;
                Ok(SensorIdentity { sensor_id, sensor_type, location })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(Checkpoint {
            reason: [CheckpointReason::Shutdown, CheckpointReason::Handoff]
                .into_iter()
                .find(|r| r.as_str() == reason)
                .unwrap_or(CheckpointReason::Interval),
            partition,
            after_batch,
            next_offset: partitions.iter().zip(&offsets).find(|(p, _)| **p == partition).map_or(BEGINNING, |(_, o)| *o),
            catalog,
            states: states
                .into_iter()
                .map(|(stage, stage_version, state_version, state)| StageState {
                    stage,
                    stage_version,
                    state_version: u32::try_from(state_version).unwrap_or_default(),
                    state: Bytes::from(state),
                })
                .collect(),
        }))
    }
}

/// Stores `checkpoint` in the batch's transaction `tx` and prunes older checkpoints (and the batch
/// log they no longer need).
pub(super) async fn write_checkpoint(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    source: i16,
    checkpoint: &Checkpoint,
) -> Result<(), sqlx::Error> {
    let c = checkpoint;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO stage_checkpoints (source_id, reason, partitions, offsets, sensor_ids, sensor_types, locations, \
         after_batch, kafka_partition) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(source)
    .bind(c.reason.as_str())
    .bind(vec![c.partition])
    .bind(vec![c.next_offset])
    .bind(c.catalog.iter().map(|e| e.sensor_id.as_str()).collect::<Vec<_>>())
    .bind(c.catalog.iter().map(|e| e.sensor_type.as_str()).collect::<Vec<_>>())
    .bind(c.catalog.iter().map(|e| e.location.as_str()).collect::<Vec<_>>())
    .bind(c.after_batch)
    .bind(c.partition)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO stage_checkpoint_states (checkpoint_id, stage, stage_version, state_version, state) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int4[], $5::bytea[])",
    )
    .bind(id)
    .bind(c.states.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>())
    .bind(c.states.iter().map(|s| s.stage_version.as_str()).collect::<Vec<_>>())
    .bind(c.states.iter().map(|s| i32::try_from(s.state_version).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(c.states.iter().map(|s| s.state.as_ref()).collect::<Vec<&[u8]>>())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM stage_checkpoints WHERE source_id = $1 AND kafka_partition = $2 AND id NOT IN \
         (SELECT id FROM stage_checkpoints WHERE source_id = $1 AND kafka_partition = $2 ORDER BY id DESC LIMIT $3)",
    )
    .bind(source)
    .bind(c.partition)
    .bind(CHECKPOINTS_KEPT)
    .execute(&mut **tx)
    .await?;
    // The batches no kept checkpoint is followed by (a restart forms only those after its own).
    sqlx::query(
        "DELETE FROM kafka_batches WHERE source_id = $1 AND kafka_partition = $2 AND batch_seq < \
         (SELECT min(after_batch) FROM stage_checkpoints WHERE source_id = $1 AND kafka_partition = $2)",
    )
    .bind(source)
    .bind(c.partition)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
