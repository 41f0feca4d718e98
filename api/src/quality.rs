//! `GET /api/quality`: each detector against the source's labels, and against each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocabulary::SensorType;

/// How one detector did against the source's labels on one sensor type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorQuality {
    /// The detector.
    pub detector: String,
    /// The sensor type.
    pub sensor_type: SensorType,
    /// Readings it judged (warming-up ones excluded).
    pub judged: i64,
    /// Judged anomalous and labelled anomalous.
    pub true_positives: i64,
    /// Judged anomalous, labelled normal.
    pub false_positives: i64,
    /// Judged normal, labelled anomalous.
    pub false_negatives: i64,
    /// `tp / (tp + fp)`, when defined.
    pub precision: Option<f64>,
    /// `tp / (tp + fn)`, when defined.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall, when defined.
    pub f1: Option<f64>,
    /// Event time from its first to its last judged reading, seconds.
    pub span_s: f64,
    /// Readings it flagged per hour of that event time, when the span is not empty: what an
    /// operator watching it would see.
    pub alarms_per_hour: Option<f64>,
}

/// How often two detectors agreed on the readings both judged, per sensor type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorAgreement {
    /// The sensor type.
    pub sensor_type: SensorType,
    /// One detector (the alphabetically first).
    pub detector_a: String,
    /// The other.
    pub detector_b: String,
    /// Readings both judged.
    pub judged_by_both: i64,
    /// Readings where both said the same.
    pub agreed: i64,
    /// Readings both called anomalous.
    pub both_anomalous: i64,
    /// Readings only `detector_a` called anomalous (`detector_b` normal).
    pub only_a_anomalous: i64,
    /// Readings only `detector_b` called anomalous (`detector_a` normal).
    pub only_b_anomalous: i64,
    /// `agreed / judged_by_both`, when defined.
    pub agreement: Option<f64>,
}

impl DetectorAgreement {
    /// Readings both called normal: the fourth cell of the 2×2 confusion of their verdicts.
    pub fn both_normal(&self) -> i64 {
        self.judged_by_both - self.both_anomalous - self.only_a_anomalous - self.only_b_anomalous
    }
}

/// One model a detector trained, as its verdicts record it (`GET /api/models`): for a detector
/// that retrains online (the Isolation Forest), its generations are its retrain history.
///
/// Each Kafka partition's readings go through a lane of their own, with its own instance of every
/// stage, so a detector trains one model per sensor type *in each lane*, and each lane counts its
/// own generations: a model is named by its source, partition, detector, type and generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelGeneration {
    /// The detector plugin.
    pub detector: String,
    /// The sensor type the model judges (a detector trains one model per type).
    pub sensor_type: SensorType,
    /// The source (a topic's epoch on one cluster) whose lane trained it.
    pub source_id: i16,
    /// The Kafka partition whose lane trained it, on the readings of that partition.
    pub partition: i32,
    /// How many models the detector had trained for the type in its lane when it trained this one.
    pub generation: i32,
    /// The detector plugin's version that used it.
    pub detector_version: String,
    /// When it was trained: the event time of the newest reading it learned from.
    pub trained_at: Option<DateTime<Utc>>,
    /// Readings it was trained on.
    pub training_rows: Option<i32>,
    /// Verdicts it gave in the range asked for.
    pub verdicts: i64,
    /// Of those, anomalies.
    pub anomalies: i64,
    /// Event time of its first verdict in the range.
    pub first_verdict: DateTime<Utc>,
    /// Event time of its last verdict in the range.
    pub last_verdict: DateTime<Utc>,
}

/// `GET /api/quality`: detectors against the labels, and against each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Per detector and sensor type.
    pub detectors: Vec<DetectorQuality>,
    /// Per pair of detectors and sensor type.
    pub agreement: Vec<DetectorAgreement>,
}

impl DetectorQuality {
    /// Fills precision, recall, F1 and alarms per hour from the counts and the span.
    pub fn with_rates(mut self) -> Self {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        self.precision = ratio(self.true_positives, self.true_positives + self.false_positives);
        self.recall = ratio(self.true_positives, self.true_positives + self.false_negatives);
        self.f1 = match (self.precision, self.recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        let flagged = (self.true_positives + self.false_positives) as f64;
        self.alarms_per_hour = (self.span_s > 0.0).then(|| flagged * 3600.0 / self.span_s);
        self
    }
}
