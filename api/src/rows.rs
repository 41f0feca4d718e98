//! Stored rows as the API serves them: readings, verdicts, windows, dead letters, shadows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocabulary::{DeadLetterReason, SensorType, Verdict};

/// One raw reading as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    /// The sensor's identifier.
    pub sensor_id: String,
    /// What it measures.
    pub sensor_type: SensorType,
    /// Where the sensor is.
    pub location: String,
    /// The measured value.
    pub value: f64,
    /// The unit of the value.
    pub unit: String,
    /// Event time.
    pub timestamp: DateTime<Utc>,
    /// The source's own anomaly flag (the simulator's label).
    pub anomaly: bool,
    /// Whether a detector flagged it.
    pub flagged: bool,
}

/// One detector's judgement of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRow {
    /// The detector plugin.
    pub detector: String,
    /// The sensor's identifier.
    pub sensor_id: String,
    /// The sensor's type.
    pub sensor_type: SensorType,
    /// The reading's value.
    pub value: f64,
    /// The reading's event time.
    pub timestamp: DateTime<Utc>,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the verdict is `anomaly`.
    pub is_anomaly: bool,
    /// The detector's score (larger is more anomalous).
    pub anomaly_score: f64,
    /// The source's own anomaly flag for the reading.
    pub rule_based_anomaly: bool,
    /// The detector plugin's version.
    pub detector_version: String,
    /// The generation of the model that judged it (detectors that train models).
    pub model_generation: Option<i32>,
}

/// One closed window: the exact merge of the partials that the lanes of its Kafka partitions
/// emitted (each lane's aggregator sees only its partition's readings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateRow {
    /// The aggregator plugin.
    pub stage: String,
    /// Window start (inclusive).
    pub window_start: DateTime<Utc>,
    /// Window end (exclusive).
    pub window_end: DateTime<Utc>,
    /// Location of the readings.
    pub location: String,
    /// Sensor type of the readings.
    pub sensor_type: SensorType,
    /// Mean value.
    pub avg_value: f64,
    /// Smallest value.
    pub min_value: f64,
    /// Largest value.
    pub max_value: f64,
    /// Population standard deviation.
    pub stddev_value: f64,
    /// Readings in the window.
    pub count_readings: i32,
    /// Readings a detector flagged.
    pub anomaly_count: i32,
    /// The sum of its partials' revisions: 0 until late readings revise a partial, and one more
    /// for each revision of any of them. A higher revision supersedes a lower one; so does, at the
    /// same revision, a higher `count_readings` (another partition's partial joined the window).
    pub revision: i32,
    /// Readings in `count_readings` that arrived late.
    pub late_count: i32,
}

impl AggregateRow {
    /// Whether `other` is (an emission of) the same window: same stage, location, sensor type
    /// and start.
    pub fn same_window(&self, other: &AggregateRow) -> bool {
        self.window_start == other.window_start
            && self.sensor_type == other.sensor_type
            && self.location == other.location
            && self.stage == other.stage
    }

    /// Whether this merge of a window holds more than `other`, an earlier one of the same window:
    /// a higher revision, or the same with more readings (another partition's partial joined).
    /// Merges only grow, so of two reads of a window the newer is the one this prefers.
    pub fn is_newer_than(&self, other: &AggregateRow) -> bool {
        (self.revision, self.count_readings) > (other.revision, other.count_readings)
    }
}

/// A message that could not be decoded, kept with its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Row id.
    pub id: i64,
    /// When the host received it.
    pub received_at: DateTime<Utc>,
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Why it was refused.
    pub error: String,
    /// The kind of refusal.
    pub reason: DeadLetterReason,
    /// The payload, as text (invalid UTF-8 replaced), at most 16 KiB.
    pub payload: String,
}

/// A shadow detector against the live detector it shadows (`GET /api/shadows`), over the readings
/// both judged: how often they agree and how their scores are distributed, and how long their
/// calls take, for the operator deciding to promote or discard the shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowComparison {
    /// The shadow plugin.
    pub shadow: String,
    /// Its version.
    pub shadow_version: String,
    /// The live detector.
    pub live_detector: String,
    /// Readings both judged (warming-up verdicts left out).
    pub judged_by_both: i64,
    /// Readings with the same verdict.
    pub agreed: i64,
    /// Readings both flagged.
    pub both_anomalous: i64,
    /// Readings the shadow flagged.
    pub shadow_anomalies: i64,
    /// Readings the live detector flagged.
    pub live_anomalies: i64,
    /// `agreed / judged_by_both`.
    pub agreement: Option<f64>,
    /// The shadow's score at the 50th, 90th and 99th percentiles.
    pub shadow_score_p50_p90_p99: Vec<f64>,
    /// The live detector's, likewise.
    pub live_score_p50_p90_p99: Vec<f64>,
    /// Median time of the shadow's calls, microseconds (while it is loaded).
    pub shadow_call_micros_p50: Option<f64>,
    /// The live detector's, likewise.
    pub live_call_micros_p50: Option<f64>,
}

/// How many dead letters there are of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterCount {
    /// The kind of refusal.
    pub reason: DeadLetterReason,
    /// Dead letters of that kind, all time.
    pub count: i64,
}
