//! PostgreSQL: the schema (`migrations/`), the batch writer and the queries the API serves.
//!
//! A batch is written in one transaction with `INSERT ... SELECT FROM UNNEST(arrays)`: one
//! statement per table, whatever the batch size (550-600k rows/s measured here, against 12-17k for
//! row-by-row inserts), and its parameters are bound, never spliced into SQL.
//!
//! Effectively-once (docs/guarantees.md): the same transaction advances the source's offsets in
//! `kafka_offsets` (and, on the checkpoint interval, stores every stage's state with the offsets it
//! includes); every row carries its message's source, partition and offset, which a unique index
//! makes a key, so a replayed message is a no-op (`ON CONFLICT DO NOTHING`), and a window revision
//! emitted again replaces its earlier emission.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{
    AggregateRow, DeadLetterCount, DeadLetterRow, DetectorAgreement, DetectorQuality, PredictionRow, QualityReport,
    ReadingRow, ShadowComparison,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::kafka::batches::Extent;
use crate::reading::{Reading, SensorType};

/// The schema, embedded from `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Longest payload prefix kept in a dead letter: a whole valid-sized message (see
/// `ReadingLimits::max_bytes`), and a bounded piece of an oversized one.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 16 * 1024;
/// Checkpoints kept per source: the newest is the one restored; two older ones are kept for an
/// operator who wants to look back, and cost a few MB at most.
const CHECKPOINTS_KEPT: i64 = 3;

/// Why a database operation failed. Every case is retryable from the pipeline's point of view.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or the connection failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A reading with where it came from and what the detectors said.
#[derive(Debug, Clone)]
pub struct StoredReading {
    /// The reading.
    pub reading: Reading,
    /// Whether any detector flagged it.
    pub flagged: bool,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// One detector's verdict on one reading of the batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The detector plugin.
    pub detector: String,
    /// Index of the reading in [`BatchRows::readings`].
    pub reading: usize,
    /// `warming_up`, `normal` or `anomaly`.
    pub verdict: &'static str,
    /// The detector's score.
    pub score: f64,
    /// The detector plugin's version.
    pub detector_version: String,
    /// The model behind the verdict, for a detector that trains models.
    pub model: Option<crate::plugins::bindings::ModelInfo>,
}

/// A shadow detector's verdict on one reading of the batch.
#[derive(Debug, Clone)]
pub struct ShadowPrediction {
    /// The shadow plugin.
    pub shadow: String,
    /// The live detector it shadows.
    pub live_detector: String,
    /// The shadow plugin's version.
    pub shadow_version: String,
    /// Index of the reading in [`BatchRows::readings`].
    pub reading: usize,
    /// `warming_up`, `normal` or `anomaly`.
    pub verdict: &'static str,
    /// The shadow's score.
    pub score: f64,
}

/// A message that did not decode.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The payload (at most [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes).
    pub payload: Option<Vec<u8>>,
    /// Why it was refused.
    pub error: String,
    /// The kind of refusal (`DecodeError::kind`).
    pub reason: &'static str,
}

/// One sensor of the host's catalog, as checkpointed (key = position in the list).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The sensor's id.
    pub sensor_id: String,
    /// Its type.
    pub sensor_type: SensorType,
    /// Its location.
    pub location: String,
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
    /// The bytes its `export-state` returned.
    pub state: Vec<u8>,
}

/// Every stage's state and the positions (next offset per partition; `BEGINNING` for a partition
/// nothing was read from) whose messages the states include, and no others.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// `interval` or `shutdown`.
    pub reason: &'static str,
    /// The batch it follows (its `batch_seq`; `None` for a checkpoint older than the batch log).
    pub after_batch: Option<i64>,
    /// Next offset per partition.
    pub positions: BTreeMap<i32, i64>,
    /// The sensor keys the states refer to.
    pub catalog: Vec<CatalogEntry>,
    /// The stages' states.
    pub states: Vec<StageState>,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// The `kafka_sources` id the messages came from.
    pub source: i16,
    /// The batch's number among the source's batches (logged with its extent, `positions`).
    pub batch_seq: i64,
    /// Logged batches to forget, numbers after the first and up to the second: those a restart
    /// gave up forming again.
    pub forget_batches: Option<(i64, i64)>,
    /// The next offset of each partition the batch read from: its extent.
    pub positions: BTreeMap<i32, i64>,
    /// A checkpoint to store with the batch.
    pub checkpoint: Option<Checkpoint>,
    /// Valid readings.
    pub readings: Vec<StoredReading>,
    /// Detector verdicts.
    pub predictions: Vec<Prediction>,
    /// Shadow detectors' verdicts.
    pub shadow_predictions: Vec<ShadowPrediction>,
    /// Closed windows.
    pub aggregates: Vec<AggregateRow>,
    /// Refused messages.
    pub dead_letters: Vec<DeadLetter>,
}

/// Row counts: all-time ones, or the rows one write added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `sensor_readings` rows.
    pub readings: u64,
    /// `sensor_readings` rows a detector flagged.
    pub flagged: u64,
    /// `sensor_aggregates` rows.
    pub aggregates: u64,
    /// `dead_letters` rows.
    pub dead_letters: u64,
}

/// Writes batches and answers the API's queries.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store over `pool`; call [`Store::migrate`] before the first write.
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

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

    /// The newest checkpoint of `source`.
    pub async fn latest_checkpoint(&self, source: i16) -> Result<Option<Checkpoint>, StoreError> {
        type Head = (i64, String, Option<i64>, Vec<i32>, Vec<i64>, Vec<String>, Vec<String>, Vec<String>);
        let head: Option<Head> = sqlx::query_as(
            "SELECT id, reason, after_batch, partitions, offsets, sensor_ids, sensor_types, locations FROM stage_checkpoints \
             WHERE source_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(source)
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
                Ok(CatalogEntry { sensor_id, sensor_type, location })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(Checkpoint {
            reason: if reason == "shutdown" { "shutdown" } else { "interval" },
            after_batch,
            positions: partitions.into_iter().zip(offsets).collect(),
            catalog,
            states: states
                .into_iter()
                .map(|(stage, stage_version, state_version, state)| StageState {
                    stage,
                    stage_version,
                    state_version: u32::try_from(state_version).unwrap_or_default(),
                    state,
                })
                .collect(),
        }))
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

    /// Writes a whole batch in one transaction: its rows (a replayed message's rows are no-ops),
    /// the source's new positions and the checkpoint, if any. Returns the rows it added (a
    /// replayed message adds none), as counts like the all-time [`Totals`].
    pub async fn write(&self, batch: &BatchRows) -> Result<Totals, StoreError> {
        let mut written = Totals::default();
        let mut tx = self.pool.begin().await?;
        if !batch.readings.is_empty() {
            let r = &batch.readings;
            let (inserted, flagged): (i64, i64) = sqlx::query_as(
                "WITH inserted AS (INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, anomaly, \
                 unit, flagged, kafka_partition, kafka_offset, source_id) \
                 SELECT *, $11 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::timestamptz[], $6::bool[], \
                 $7::text[], $8::bool[], $9::int4[], $10::int8[]) \
                 ON CONFLICT (source_id, kafka_partition, kafka_offset) WHERE source_id > 0 DO NOTHING RETURNING flagged) \
                 SELECT count(*), count(*) FILTER (WHERE flagged) FROM inserted",
            )
            .bind(r.iter().map(|s| s.reading.sensor_id.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.sensor_type.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.location.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.value).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.timestamp).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.anomaly).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.reading.unit.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.flagged).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.partition).collect::<Vec<_>>())
            .bind(r.iter().map(|s| s.offset).collect::<Vec<_>>())
            .bind(batch.source)
            .fetch_one(&mut *tx)
            .await?;
            written.readings = inserted.max(0) as u64;
            written.flagged = flagged.max(0) as u64;
        }
        if !batch.predictions.is_empty() {
            let p = &batch.predictions;
            let of = |i: usize| &batch.readings[i];
            sqlx::query(
                "INSERT INTO ml_anomaly_predictions (detector, sensor_id, sensor_type, value, timestamp, verdict, is_anomaly, \
                 anomaly_score, rule_based_anomaly, kafka_partition, kafka_offset, detector_version, model_generation, \
                 model_trained_at, model_training_rows, source_id) \
                 SELECT *, $16 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::timestamptz[], $6::text[], \
                 $7::bool[], $8::float8[], $9::bool[], $10::int4[], $11::int8[], $12::text[], $13::int4[], \
                 $14::timestamptz[], $15::int4[]) \
                 ON CONFLICT (source_id, kafka_partition, kafka_offset, detector) WHERE source_id > 0 DO NOTHING",
            )
            .bind(p.iter().map(|p| p.detector.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.sensor_id.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.sensor_type.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.value).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.timestamp).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.verdict).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.verdict == "anomaly").collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.score).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.anomaly).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).partition).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).offset).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.detector_version.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.model.as_ref().map(|m| i32::try_from(m.generation).unwrap_or(i32::MAX))).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.model.as_ref().and_then(|m| Utc.timestamp_millis_opt(m.trained_at_ms).single())).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.model.as_ref().map(|m| i32::try_from(m.training_rows).unwrap_or(i32::MAX))).collect::<Vec<_>>())
            .bind(batch.source)
            .execute(&mut *tx)
            .await?;
        }
        if !batch.shadow_predictions.is_empty() {
            let p = &batch.shadow_predictions;
            let of = |i: usize| &batch.readings[i];
            sqlx::query(
                "INSERT INTO shadow_predictions (shadow, shadow_version, live_detector, sensor_id, sensor_type, value, \
                 timestamp, verdict, is_anomaly, anomaly_score, kafka_partition, kafka_offset, source_id) \
                 SELECT *, $13 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], \
                 $7::timestamptz[], $8::text[], $9::bool[], $10::float8[], $11::int4[], $12::int8[]) \
                 ON CONFLICT (source_id, kafka_partition, kafka_offset, shadow) WHERE source_id > 0 DO NOTHING",
            )
            .bind(p.iter().map(|p| p.shadow.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.shadow_version.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.live_detector.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.sensor_id.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.sensor_type.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.value).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).reading.timestamp).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.verdict).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.verdict == "anomaly").collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.score).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).partition).collect::<Vec<_>>())
            .bind(p.iter().map(|p| of(p.reading).offset).collect::<Vec<_>>())
            .bind(batch.source)
            .execute(&mut *tx)
            .await?;
        }
        if !batch.aggregates.is_empty() {
            let a = &batch.aggregates;
            // `xmax = 0` tells a new row from a replaced emission.
            let inserted: i64 = sqlx::query_scalar(
                "WITH upserted AS (INSERT INTO sensor_aggregates (stage, window_start, window_end, location, sensor_type, avg_value, min_value, \
                 max_value, stddev_value, count_readings, anomaly_count, revision, late_count, source_id) \
                 SELECT *, $14 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], \
                 $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::int4[], $11::int4[], $12::int4[], $13::int4[]) \
                 ON CONFLICT (source_id, stage, location, sensor_type, window_start, revision) WHERE source_id > 0 \
                 DO UPDATE SET window_end = EXCLUDED.window_end, avg_value = EXCLUDED.avg_value, \
                 min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value, stddev_value = EXCLUDED.stddev_value, \
                 count_readings = EXCLUDED.count_readings, anomaly_count = EXCLUDED.anomaly_count, \
                 late_count = EXCLUDED.late_count, emitted_at = now(), emission = nextval('sensor_aggregates_emission') \
                 RETURNING xmax = 0 AS inserted) SELECT count(*) FILTER (WHERE inserted) FROM upserted",
            )
            .bind(a.iter().map(|a| a.stage.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.window_start).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.window_end).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.location.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.sensor_type.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.avg_value).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.min_value).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.max_value).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.stddev_value).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.count_readings).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.anomaly_count).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.revision).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.late_count).collect::<Vec<_>>())
            .bind(batch.source)
            .fetch_one(&mut *tx)
            .await?;
            written.aggregates = inserted.max(0) as u64;
        }
        if !batch.dead_letters.is_empty() {
            let d = &batch.dead_letters;
            written.dead_letters = sqlx::query(
                "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, message_key, payload, error, reason, source_id) \
                 SELECT *, $8 FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], \
                 $7::text[]) \
                 ON CONFLICT (source_id, kafka_partition, kafka_offset) WHERE source_id > 0 DO NOTHING",
            )
            .bind(d.iter().map(|l| l.topic.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.partition).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.offset).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.key.as_deref()).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.payload.as_deref()).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.error.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|l| l.reason).collect::<Vec<_>>())
            .bind(batch.source)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if !batch.positions.is_empty() {
            // A replay after a crash re-reads offsets already stored: never move a position back.
            sqlx::query(
                "INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) \
                 SELECT $1, * FROM UNNEST($2::int4[], $3::int8[]) \
                 ON CONFLICT (source_id, kafka_partition) DO UPDATE \
                 SET next_offset = GREATEST(kafka_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
            )
            .bind(batch.source)
            .bind(batch.positions.keys().copied().collect::<Vec<_>>())
            .bind(batch.positions.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if let Some((after, until)) = batch.forget_batches {
            sqlx::query("DELETE FROM kafka_batches WHERE source_id = $1 AND batch_seq > $2 AND batch_seq <= $3")
                .bind(batch.source)
                .bind(after)
                .bind(until)
                .execute(&mut *tx)
                .await?;
        }
        if batch.batch_seq > 0 {
            // A batch formed again after a crash is logged already, with the same extent.
            sqlx::query(
                "INSERT INTO kafka_batches (source_id, batch_seq, partitions, offsets) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (source_id, batch_seq) DO NOTHING",
            )
            .bind(batch.source)
            .bind(batch.batch_seq)
            .bind(batch.positions.keys().copied().collect::<Vec<_>>())
            .bind(batch.positions.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(checkpoint) = &batch.checkpoint {
            write_checkpoint(&mut tx, batch.source, checkpoint).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// All-time row counts (exact; run once at start, then kept by the pipeline).
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM sensor_readings), (SELECT count(*) FROM sensor_readings WHERE flagged), \
             (SELECT count(*) FROM sensor_aggregates), (SELECT count(*) FROM dead_letters)",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |i: usize| row.try_get::<i64, _>(i).map(|n| n.max(0) as u64);
        Ok(Totals { readings: count(0)?, flagged: count(1)?, aggregates: count(2)?, dead_letters: count(3)? })
    }

    /// The newest readings, optionally of one sensor.
    pub async fn recent_readings(&self, limit: i64, sensor_id: Option<&str>) -> Result<Vec<ReadingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT sensor_id, sensor_type, location, value, unit, timestamp, anomaly, flagged FROM sensor_readings \
             WHERE ($2::text IS NULL OR sensor_id = $2) ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .bind(sensor_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(reading_row).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// The newest predictions, optionally of one detector and only anomalies.
    pub async fn recent_predictions(
        &self,
        limit: i64,
        detector: Option<&str>,
        anomalies_only: bool,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT detector, sensor_id, sensor_type, value, timestamp, verdict, is_anomaly, anomaly_score, \
             rule_based_anomaly, detector_version, model_generation FROM ml_anomaly_predictions \
             WHERE ($2::text IS NULL OR detector = $2) AND (NOT $3 OR is_anomaly) ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .bind(detector)
        .bind(anomalies_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(prediction_row).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// The newest window aggregates.
    pub async fn recent_aggregates(&self, limit: i64) -> Result<Vec<AggregateRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage, window_start, window_end, location, sensor_type, avg_value, min_value, max_value, stddev_value, \
             count_readings, anomaly_count, revision, late_count FROM sensor_aggregates ORDER BY emission DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(aggregate_row).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// Each detector against the source's labels (the simulator labels what it injects), and each
    /// pair of detectors against each other, per sensor type, over readings with event time in
    /// `[from, to)` (either end open when `None`). Warming-up verdicts are left out.
    pub async fn quality(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<QualityReport, StoreError> {
        let detectors: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT detector, sensor_type, count(*), \
             count(*) FILTER (WHERE is_anomaly AND rule_based_anomaly), \
             count(*) FILTER (WHERE is_anomaly AND NOT rule_based_anomaly), \
             count(*) FILTER (WHERE NOT is_anomaly AND rule_based_anomaly) \
             FROM ml_anomaly_predictions \
             WHERE verdict <> 'warming_up' AND ($1::timestamptz IS NULL OR timestamp >= $1) \
             AND ($2::timestamptz IS NULL OR timestamp < $2) \
             GROUP BY detector, sensor_type ORDER BY detector, sensor_type",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let agreement: Vec<(String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT a.sensor_type, a.detector, b.detector, count(*), count(*) FILTER (WHERE a.is_anomaly = b.is_anomaly), \
             count(*) FILTER (WHERE a.is_anomaly AND b.is_anomaly) \
             FROM ml_anomaly_predictions a JOIN ml_anomaly_predictions b \
             ON a.sensor_id = b.sensor_id AND a.timestamp = b.timestamp AND a.kafka_partition = b.kafka_partition \
             AND a.kafka_offset = b.kafka_offset AND a.detector < b.detector \
             WHERE a.verdict <> 'warming_up' AND b.verdict <> 'warming_up' \
             AND ($1::timestamptz IS NULL OR a.timestamp >= $1) AND ($2::timestamptz IS NULL OR a.timestamp < $2) \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(QualityReport {
            detectors: detectors
                .into_iter()
                .map(|(detector, sensor_type, judged, tp, fp, fn_)| {
                    DetectorQuality {
                        detector,
                        sensor_type,
                        judged,
                        true_positives: tp,
                        false_positives: fp,
                        false_negatives: fn_,
                        precision: None,
                        recall: None,
                        f1: None,
                    }
                    .with_rates()
                })
                .collect(),
            agreement: agreement
                .into_iter()
                .map(|(sensor_type, detector_a, detector_b, both, agreed, both_anomalous)| DetectorAgreement {
                    sensor_type,
                    detector_a,
                    detector_b,
                    judged_by_both: both,
                    agreed,
                    both_anomalous,
                    agreement: (both > 0).then(|| agreed as f64 / both as f64),
                })
                .collect(),
        })
    }

    /// Each shadow detector against the live detector it shadows, over the readings both judged
    /// (warming-up verdicts left out): agreement and score distributions.
    pub async fn shadow_comparisons(&self) -> Result<Vec<ShadowComparison>, StoreError> {
        type Row = (String, String, String, i64, i64, i64, i64, i64, Option<Vec<f64>>, Option<Vec<f64>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.shadow, max(s.shadow_version), s.live_detector, count(*), \
             count(*) FILTER (WHERE s.is_anomaly = p.is_anomaly), \
             count(*) FILTER (WHERE s.is_anomaly AND p.is_anomaly), \
             count(*) FILTER (WHERE s.is_anomaly), count(*) FILTER (WHERE p.is_anomaly), \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY s.anomaly_score), \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY p.anomaly_score) \
             FROM shadow_predictions s JOIN ml_anomaly_predictions p ON p.source_id = s.source_id \
             AND p.kafka_partition = s.kafka_partition AND p.kafka_offset = s.kafka_offset \
             AND p.detector = s.live_detector \
             WHERE s.verdict <> 'warming_up' AND p.verdict <> 'warming_up' AND s.source_id > 0 \
             GROUP BY s.shadow, s.live_detector ORDER BY s.shadow",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(shadow, shadow_version, live, judged, agreed, both, shadow_anomalies, live_anomalies, s, l)| {
                ShadowComparison {
                    shadow,
                    shadow_version,
                    live_detector: live,
                    judged_by_both: judged,
                    agreed,
                    both_anomalous: both,
                    shadow_anomalies,
                    live_anomalies,
                    agreement: (judged > 0).then(|| agreed as f64 / judged as f64),
                    shadow_score_p50_p90_p99: s.unwrap_or_default(),
                    live_score_p50_p90_p99: l.unwrap_or_default(),
                    shadow_call_micros_p50: None,
                    live_call_micros_p50: None,
                }
            })
            .collect())
    }

    /// Dead letters per kind of refusal, most frequent first.
    pub async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC, 1")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(reason, count)| DeadLetterCount { reason, count }).collect())
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, received_at, topic, kafka_partition, kafka_offset, error, payload, reason FROM dead_letters \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterRow {
                    id: row.try_get(0)?,
                    received_at: row.try_get(1)?,
                    topic: row.try_get(2)?,
                    partition: row.try_get(3)?,
                    offset: row.try_get(4)?,
                    error: row.try_get(5)?,
                    payload: row
                        .try_get::<Option<Vec<u8>>, _>(6)?
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .unwrap_or_default(),
                    reason: row.try_get(7)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

async fn write_checkpoint(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    source: i16,
    checkpoint: &Checkpoint,
) -> Result<(), sqlx::Error> {
    let c = checkpoint;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO stage_checkpoints (source_id, reason, partitions, offsets, sensor_ids, sensor_types, locations, \
         after_batch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(source)
    .bind(c.reason)
    .bind(c.positions.keys().copied().collect::<Vec<_>>())
    .bind(c.positions.values().copied().collect::<Vec<_>>())
    .bind(c.catalog.iter().map(|e| e.sensor_id.as_str()).collect::<Vec<_>>())
    .bind(c.catalog.iter().map(|e| e.sensor_type.as_str()).collect::<Vec<_>>())
    .bind(c.catalog.iter().map(|e| e.location.as_str()).collect::<Vec<_>>())
    .bind(c.after_batch)
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
    .bind(c.states.iter().map(|s| s.state.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM stage_checkpoints WHERE source_id = $1 AND id NOT IN \
         (SELECT id FROM stage_checkpoints WHERE source_id = $1 ORDER BY id DESC LIMIT $2)",
    )
    .bind(source)
    .bind(CHECKPOINTS_KEPT)
    .execute(&mut **tx)
    .await?;
    // The batches no kept checkpoint is followed by (a restart forms only those after its own).
    sqlx::query(
        "DELETE FROM kafka_batches WHERE source_id = $1 AND batch_seq < \
         (SELECT min(after_batch) FROM stage_checkpoints WHERE source_id = $1)",
    )
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn reading_row(row: &PgRow) -> Result<ReadingRow, sqlx::Error> {
    Ok(ReadingRow {
        sensor_id: row.try_get(0)?,
        sensor_type: row.try_get(1)?,
        location: row.try_get(2)?,
        value: row.try_get(3)?,
        unit: row.try_get(4)?,
        timestamp: row.try_get::<DateTime<Utc>, _>(5)?,
        anomaly: row.try_get(6)?,
        flagged: row.try_get(7)?,
    })
}

fn prediction_row(row: &PgRow) -> Result<PredictionRow, sqlx::Error> {
    Ok(PredictionRow {
        detector: row.try_get(0)?,
        sensor_id: row.try_get(1)?,
        sensor_type: row.try_get(2)?,
        value: row.try_get(3)?,
        timestamp: row.try_get(4)?,
        verdict: row.try_get(5)?,
        is_anomaly: row.try_get(6)?,
        anomaly_score: row.try_get(7)?,
        rule_based_anomaly: row.try_get(8)?,
        detector_version: row.try_get(9)?,
        model_generation: row.try_get(10)?,
    })
}

fn aggregate_row(row: &PgRow) -> Result<AggregateRow, sqlx::Error> {
    Ok(AggregateRow {
        stage: row.try_get(0)?,
        window_start: row.try_get(1)?,
        window_end: row.try_get(2)?,
        location: row.try_get(3)?,
        sensor_type: row.try_get(4)?,
        avg_value: row.try_get(5)?,
        min_value: row.try_get(6)?,
        max_value: row.try_get(7)?,
        stddev_value: row.try_get(8)?,
        count_readings: row.try_get(9)?,
        anomaly_count: row.try_get(10)?,
        revision: row.try_get(11)?,
        late_count: row.try_get(12)?,
    })
}
