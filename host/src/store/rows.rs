//! What the pipeline hands the store: the rows of one batch, as plain data. The store knows rows,
//! not plugins: a detector's model lineage arrives as a [`ModelLineage`], not as a WIT binding.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use iotstream_api::{AggregateRow, DeadLetterReason, ReadingRow, Verdict};

use crate::reading::Reading;
use crate::store::checkpoints::Checkpoint;
use crate::store::ownership::Fence;

/// Longest payload prefix kept in a dead letter: a whole valid-sized message (see
/// `ReadingLimits::max_bytes`), and a bounded piece of an oversized one.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 16 * 1024;
/// Longest message key kept in a dead letter: producers key readings by sensor id (at most 100
/// characters); a longer key is kept in part, never whole (a key can be as large as a message).
pub const DEAD_LETTER_KEY_LIMIT: usize = 1024;

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

impl StoredReading {
    /// The reading as the API and the live view show it.
    pub fn api_row(&self) -> ReadingRow {
        let r = &self.reading;
        ReadingRow {
            sensor_id: r.sensor_id.clone(),
            sensor_type: r.sensor_type,
            location: r.location.clone(),
            value: r.value,
            unit: r.unit.clone(),
            timestamp: r.timestamp,
            anomaly: r.anomaly,
            flagged: self.flagged,
        }
    }
}

/// One detector's verdict on one reading of the batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The detector plugin.
    pub detector: String,
    /// Index of the reading in [`BatchRows::readings`].
    pub reading: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// The detector's score.
    pub score: f64,
    /// The detector plugin's version.
    pub detector_version: String,
    /// The model behind the verdict, for a detector that trains models.
    pub model: Option<ModelLineage>,
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
    /// The verdict.
    pub verdict: Verdict,
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
    pub reason: DeadLetterReason,
}

/// A window one lane's aggregator closed: a partial of the window, over the readings of one Kafka
/// partition (migration 0010). The partials of a window, from every partition, on any host, are
/// merged exactly by `sensor_aggregates_latest`; the API and the live view show only merged
/// windows, so the partition stays here, with the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    /// The Kafka partition of the lane that emitted it.
    pub partition: i32,
    /// The partial, as the aggregator reported it.
    pub window: AggregateRow,
}

/// The model behind a verdict, for a detector that trains models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelLineage {
    /// How many models the detector trained for this sensor type so far.
    pub generation: i32,
    /// When the model was trained (event time), if that is a valid time.
    pub trained_at: Option<DateTime<Utc>>,
    /// How many readings it was trained on.
    pub training_rows: i32,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// The `kafka_sources` id the messages came from.
    pub source: i16,
    /// The topic they came from (for the dead letters of readings the database refuses).
    pub topic: String,
    /// The next offset of each partition the batch read from: its extent.
    pub positions: BTreeMap<i32, i64>,
    /// Each lane's part of the batch, logged under the lane's batch number.
    pub lanes: Vec<LaneBatch>,
    /// Checkpoints to store with the batch, at most one per lane.
    pub checkpoints: Vec<Checkpoint>,
    /// What the transaction checks first: the partitions it writes are still this host's (`None`:
    /// unfenced, for tools and tests).
    pub fence: Option<Fence>,
    /// Valid readings.
    pub readings: Vec<StoredReading>,
    /// Detector verdicts.
    pub predictions: Vec<Prediction>,
    /// Shadow detectors' verdicts.
    pub shadow_predictions: Vec<ShadowPrediction>,
    /// Closed windows: each a partial, of its lane's partition.
    pub aggregates: Vec<StoredWindow>,
    /// Refused messages.
    pub dead_letters: Vec<DeadLetter>,
}

impl BatchRows {
    /// Adds `other`'s rows (a lane's share of the batch) to these: its verdicts keep pointing at
    /// its readings.
    pub fn append(&mut self, mut other: BatchRows) {
        let base = self.readings.len();
        for prediction in &mut other.predictions {
            prediction.reading += base;
        }
        for shadow in &mut other.shadow_predictions {
            shadow.reading += base;
        }
        self.readings.append(&mut other.readings);
        self.predictions.append(&mut other.predictions);
        self.shadow_predictions.append(&mut other.shadow_predictions);
        self.aggregates.append(&mut other.aggregates);
        self.dead_letters.append(&mut other.dead_letters);
        self.positions.append(&mut other.positions);
        self.lanes.append(&mut other.lanes);
        self.checkpoints.append(&mut other.checkpoints);
    }
}

/// One lane's part of a batch, as the batch log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneBatch {
    /// The lane's partition.
    pub partition: i32,
    /// The batch's number among the lane's batches (0: not logged).
    pub batch_seq: i64,
    /// The partition's next offset after the batch.
    pub next_offset: i64,
    /// Logged batches to forget first, numbers after the first and up to the second: those a new
    /// owner gave up forming again.
    pub forget: Option<(i64, i64)>,
}

/// Row counts: all-time ones, or the rows one write added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `sensor_readings` rows.
    pub readings: u64,
    /// `sensor_readings` rows a detector flagged.
    pub flagged: u64,
    /// `sensor_aggregates` rows: window emissions stored (each partition's partial of a window,
    /// and each revision of it, is one; a partial emitted again by a replay is not).
    pub aggregates: u64,
    /// `dead_letters` rows.
    pub dead_letters: u64,
}

/// One verdict as `sensor_readings.verdicts` keeps it (migration 0008): short keys, since every
/// reading carries one object per detector.
#[derive(serde::Serialize)]
struct StoredVerdict<'a> {
    d: Cow<'a, str>,
    ver: Cow<'a, str>,
    v: &'static str,
    /// A score that is not a number is kept as JSON `null` (JSON has no NaN).
    s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    g: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<i32>,
}

/// Each reading's verdicts as the JSON array its `sensor_readings.verdicts` holds (`[]` for a
/// reading no detector judged), in the order of `readings`.
///
/// The array is always one PostgreSQL takes (a verdict can never make the database refuse its
/// reading): a verdict is one of three words, a score that is not finite becomes `null`, and a NUL
/// in a detector's name or version (which `jsonb` refuses; the host refuses such plugins at load)
/// becomes U+FFFD.
pub fn verdicts_json(readings: usize, predictions: &[Prediction]) -> Vec<String> {
    let mut per_reading: Vec<Vec<StoredVerdict<'_>>> = (0..readings).map(|_| Vec::new()).collect();
    for p in predictions {
        let Some(verdicts) = per_reading.get_mut(p.reading) else { continue };
        verdicts.push(StoredVerdict {
            d: without_nul(&p.detector),
            ver: without_nul(&p.detector_version),
            v: iotstream_api::Named::as_str(p.verdict),
            s: p.score.is_finite().then_some(p.score),
            g: p.model.map(|m| m.generation),
            t: p.model.and_then(|m| m.trained_at),
            n: p.model.map(|m| m.training_rows),
        });
    }
    per_reading
        .iter()
        .map(|verdicts| {
            if verdicts.is_empty() {
                "[]".to_owned()
            } else {
                // Serializing borrowed strings, numbers and times into a String cannot fail.
                serde_json::to_string(verdicts).unwrap_or_else(|_| "[]".to_owned())
            }
        })
        .collect()
}

/// `text` with any NUL replaced by U+FFFD: PostgreSQL's `jsonb` refuses `\u0000`.
fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(text) }
}
