//! The JSON the iotstream host serves and its dashboard reads: REST responses and live-stream
//! events. Shared by both sides so they cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One raw reading as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRow {
    /// The sensor's identifier.
    pub sensor_id: String,
    /// `temperature`, `humidity`, `air_quality`, `pressure` or `co2`.
    pub sensor_type: String,
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
    pub sensor_type: String,
    /// The reading's value.
    pub value: f64,
    /// The reading's event time.
    pub timestamp: DateTime<Utc>,
    /// `warming_up`, `normal` or `anomaly`.
    pub verdict: String,
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

/// One closed window.
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
    pub sensor_type: String,
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
    /// 0 for the first emission; a higher revision (after late readings) supersedes it.
    pub revision: i32,
    /// Readings in `count_readings` that arrived late.
    pub late_count: i32,
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
    /// The kind of refusal (`malformed`, `out_of_range`, `too_old`, `oversized`, ...).
    #[serde(default)]
    pub reason: String,
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
    pub reason: String,
    /// Dead letters of that kind, all time.
    pub count: i64,
}

/// The state of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// File name without `.wasm`.
    pub name: String,
    /// `detector` or `aggregator`.
    pub kind: String,
    /// The version the plugin reports.
    pub version: String,
    /// Calls made.
    pub calls: u64,
    /// Readings passed in.
    pub readings_in: u64,
    /// Outputs returned.
    pub outputs: u64,
    /// Failed calls.
    pub errors: u64,
    /// Re-instantiations after a trap.
    pub restarts: u64,
    /// Mean time per call, microseconds.
    pub mean_call_micros: f64,
    /// The last failure.
    pub last_error: Option<String>,
    /// `running`; `backoff` (it failed lately and its calls are skipped until the backoff ends); or
    /// `quarantined` (it failed too often in a row and is not called until it is reloaded).
    pub state: String,
    /// Failed calls in a row (0 after a successful call).
    pub consecutive_failures: u32,
    /// Readings not passed to it because it was in backoff or quarantined.
    pub skipped_readings: u64,
    /// Linear memory of its live instance, bytes (0 while it has none).
    pub memory_bytes: u64,
    /// Size of its last exported state, the point it restarts from after a failure, bytes.
    pub state_bytes: u64,
    /// Median time per call, microseconds, estimated from `call_micros_buckets`.
    pub p50_call_micros: f64,
    /// 99th percentile time per call, microseconds, estimated from `call_micros_buckets`.
    pub p99_call_micros: f64,
    /// Total time in calls, microseconds.
    pub busy_micros: u64,
    /// Per bound of [`CALL_MICROS_BUCKETS`], the calls that took at most that long (cumulative; the
    /// calls above the last bound are `calls` minus the last count).
    pub call_micros_buckets: Vec<u64>,
}

/// Upper bounds of the call-time histogram, microseconds: 1-2-5 steps from 10 µs to 10 s (a call
/// is stopped at its 5 s deadline), so any percentile is known within its bucket at every scale.
pub const CALL_MICROS_BUCKETS: [u64; 19] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    2_000_000, 5_000_000, 10_000_000,
];

/// The `q` quantile (0 to 1) of a histogram of `count` observations with `cumulative` counts per
/// bound of [`CALL_MICROS_BUCKETS`], interpolated linearly within its bucket (as Prometheus's
/// `histogram_quantile` does); 0 without observations.
pub fn call_micros_quantile(cumulative: &[u64], count: u64, q: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let (mut lower, mut below) = (0.0, 0);
    for (&bound, &at_most) in CALL_MICROS_BUCKETS.iter().zip(cumulative) {
        if at_most as f64 >= rank && at_most > below {
            let within = (rank - below as f64) / (at_most - below) as f64;
            return lower + (bound as f64 - lower) * within;
        }
        (lower, below) = (bound as f64, at_most);
    }
    // Above the last bound: report the bound, as Prometheus does for its +Inf bucket.
    lower
}

/// A plugin file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFailure {
    /// The plugin (its file name without `.wasm`).
    #[serde(default)]
    pub plugin: String,
    /// The error.
    pub error: String,
}

/// Something that happened to a plugin while the host ran: loaded, swapped, removed, refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// The plugin.
    pub plugin: String,
    /// `loaded`, `swapped`, `removed` or `refused`.
    pub action: String,
    /// Details: the version, whether its state was handed over, how long the swap paused the
    /// pipeline, or why the file was refused.
    pub detail: String,
}

fn yes() -> bool {
    true
}

/// Totals and rates of the whole pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Readings stored, all time.
    pub readings_total: u64,
    /// Stored readings a detector flagged, all time.
    pub anomalies_total: u64,
    /// Window aggregates stored, all time.
    pub aggregates_total: u64,
    /// Dead-lettered messages, all time.
    pub dead_letters_total: u64,
    /// Sensors heard from in the last 5 minutes.
    pub active_sensors: u64,
    /// Readings per second over the last 10 seconds.
    pub readings_per_second: f64,
    /// Batch latency percentiles (Kafka timestamp to database commit), milliseconds, recent batches.
    pub latency_ms_p50: f64,
    /// 99th percentile of the same.
    pub latency_ms_p99: f64,
    /// Whether the last database write succeeded (false: the pipeline is retrying it).
    pub database_ok: bool,
    /// Why the last database write failed, while it is failing.
    #[serde(default)]
    pub database_error: Option<String>,
    /// Whether the Kafka brokers answer (false: the consumer is reconnecting).
    #[serde(default = "yes")]
    pub broker_ok: bool,
    /// The consumer's last error, while the brokers do not answer.
    #[serde(default)]
    pub broker_error: Option<String>,
    /// When the stages' state was last checkpointed by this process.
    #[serde(default)]
    pub last_checkpoint: Option<DateTime<Utc>>,
    /// Plugin files refused and not since fixed (the running version, if any, keeps running).
    #[serde(default)]
    pub plugin_failures: Vec<PluginFailure>,
    /// When this host process started.
    pub started_at: DateTime<Utc>,
}

/// What the live stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Sent first on every connection: the current state.
    Snapshot {
        /// Totals and rates.
        stats: Stats,
        /// Newest readings, newest first.
        readings: Vec<ReadingRow>,
        /// Newest anomalous predictions, newest first.
        detections: Vec<PredictionRow>,
        /// Newest aggregates, newest first.
        aggregates: Vec<AggregateRow>,
        /// The plugins.
        plugins: Vec<PluginStatus>,
        /// What happened to plugins lately (loads, swaps, removals, refusals), newest first.
        #[serde(default)]
        plugin_events: Vec<PluginEvent>,
    },
    /// One processed batch.
    Batch {
        /// Totals and rates after it.
        stats: Stats,
        /// Its newest readings (at most a few dozen), newest first.
        readings: Vec<ReadingRow>,
        /// Its anomalous predictions (at most a few dozen), newest first.
        detections: Vec<PredictionRow>,
        /// The windows it closed.
        aggregates: Vec<AggregateRow>,
        /// The plugins.
        plugins: Vec<PluginStatus>,
    },
    /// Something happened to a plugin: loaded, swapped, removed or refused.
    Plugin {
        /// What happened.
        event: PluginEvent,
    },
}

/// How one detector did against the source's labels on one sensor type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorQuality {
    /// The detector.
    pub detector: String,
    /// The sensor type.
    pub sensor_type: String,
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
}

/// How often two detectors agreed on the readings both judged, per sensor type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorAgreement {
    /// The sensor type.
    pub sensor_type: String,
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
    /// `agreed / judged_by_both`, when defined.
    pub agreement: Option<f64>,
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
    /// Fills precision, recall and F1 from the counts.
    pub fn with_rates(mut self) -> Self {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        self.precision = ratio(self.true_positives, self.true_positives + self.false_positives);
        self.recall = ratio(self.true_positives, self.true_positives + self.false_negatives);
        self.f1 = match (self.precision, self.recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        self
    }
}

/// Rows of each kind a live view keeps.
pub const LIVE_ROWS: usize = 50;

/// What a live-stream subscriber knows: the state the dashboard renders, folded from events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveView {
    /// Totals and rates.
    pub stats: Stats,
    /// Newest readings, newest first.
    pub readings: Vec<ReadingRow>,
    /// Newest anomalous predictions, newest first.
    pub detections: Vec<PredictionRow>,
    /// Newest aggregates, newest first.
    pub aggregates: Vec<AggregateRow>,
    /// The plugins.
    pub plugins: Vec<PluginStatus>,
    /// What happened to plugins lately, newest first.
    pub plugin_events: Vec<PluginEvent>,
}

impl LiveView {
    /// Folds one event in: a snapshot replaces everything, a batch prepends its rows (keeping at
    /// most [`LIVE_ROWS`] of each kind) and replaces the stats and plugins, a plugin event is
    /// prepended to the others.
    pub fn apply(&mut self, event: LiveEvent) {
        match event {
            LiveEvent::Snapshot { stats, readings, detections, aggregates, plugins, plugin_events } => {
                *self = LiveView { stats, readings, detections, aggregates, plugins, plugin_events };
                self.truncate();
            }
            LiveEvent::Plugin { event } => {
                prepend(&mut self.plugin_events, vec![event]);
                self.truncate();
            }
            LiveEvent::Batch { stats, readings, detections, aggregates, plugins } => {
                self.stats = stats;
                self.plugins = plugins;
                prepend(&mut self.readings, readings);
                prepend(&mut self.detections, detections);
                prepend(&mut self.aggregates, aggregates);
                self.truncate();
            }
        }
    }

    fn truncate(&mut self) {
        self.readings.truncate(LIVE_ROWS);
        self.detections.truncate(LIVE_ROWS);
        self.aggregates.truncate(LIVE_ROWS);
        self.plugin_events.truncate(LIVE_ROWS);
    }
}

fn prepend<T>(rows: &mut Vec<T>, mut newest_first: Vec<T>) {
    newest_first.append(rows);
    *rows = newest_first;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(n: usize) -> ReadingRow {
        ReadingRow {
            sensor_id: format!("s{n}"),
            sensor_type: "co2".into(),
            location: "lab_1".into(),
            value: n as f64,
            unit: "ppm".into(),
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
            anomaly: false,
            flagged: false,
        }
    }

    fn batch(readings: Vec<ReadingRow>, total: u64) -> LiveEvent {
        LiveEvent::Batch {
            stats: Stats { readings_total: total, ..Stats::default() },
            readings,
            detections: Vec::new(),
            aggregates: Vec::new(),
            plugins: Vec::new(),
        }
    }

    #[test]
    fn batches_prepend_newest_first_and_keep_the_last_fifty() {
        let mut view = LiveView::default();
        view.apply(batch(vec![reading(2), reading(1)], 2));
        view.apply(batch(vec![reading(4), reading(3)], 4));
        let ids: Vec<&str> = view.readings.iter().map(|r| r.sensor_id.as_str()).collect();
        assert_eq!(ids, ["s4", "s3", "s2", "s1"]);
        assert_eq!(view.stats.readings_total, 4);
        view.apply(batch((0..60).rev().map(|n| reading(100 + n)).collect(), 64));
        assert_eq!(view.readings.len(), LIVE_ROWS);
        assert_eq!(view.readings[0].sensor_id, "s159");
        assert_eq!(view.readings[49].sensor_id, "s110");
    }

    #[test]
    fn a_snapshot_replaces_everything() {
        let mut view = LiveView::default();
        view.apply(batch(vec![reading(1)], 1));
        let snapshot = LiveEvent::Snapshot {
            stats: Stats { readings_total: 9, ..Stats::default() },
            readings: vec![reading(9)],
            detections: Vec::new(),
            aggregates: Vec::new(),
            plugins: Vec::new(),
            plugin_events: vec![plugin_event(1)],
        };
        view.apply(snapshot);
        assert_eq!(view.readings, vec![reading(9)]);
        assert_eq!(view.stats.readings_total, 9);
        assert_eq!(view.plugin_events, vec![plugin_event(1)]);
    }

    fn plugin_event(n: usize) -> PluginEvent {
        PluginEvent {
            at: DateTime::<Utc>::UNIX_EPOCH,
            plugin: format!("p{n}"),
            action: "swapped".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn plugin_events_are_prepended_and_the_last_fifty_kept_through_batches() {
        let mut view = LiveView::default();
        for n in 0..60 {
            view.apply(LiveEvent::Plugin { event: plugin_event(n) });
        }
        view.apply(batch(vec![reading(1)], 1));
        let plugins: Vec<&str> = view.plugin_events.iter().map(|e| e.plugin.as_str()).collect();
        assert_eq!(plugins.len(), LIVE_ROWS);
        assert_eq!((plugins[0], plugins[49]), ("p59", "p10"));
        let json = serde_json::to_string(&LiveEvent::Plugin { event: plugin_event(7) }).expect("serialises");
        assert!(json.starts_with(r#"{"type":"plugin","event":{"#), "{json}");
    }

    #[test]
    fn events_round_trip_through_json_with_a_type_tag() {
        let event = batch(vec![reading(1)], 1);
        let json = serde_json::to_string(&event).expect("serialises");
        assert!(json.starts_with(r#"{"type":"batch""#), "{json}");
        assert_eq!(serde_json::from_str::<LiveEvent>(&json).expect("parses"), event);
    }

    #[test]
    fn call_time_quantiles_interpolate_within_their_bucket() {
        assert_eq!(call_micros_quantile(&[0; 19], 0, 0.5), 0.0);
        // 4 calls of at most 10 µs, 5 in (10, 20], 1 in (20, 50].
        let mut cumulative = [10; 19];
        (cumulative[0], cumulative[1]) = (4, 9);
        // p50: rank 5 is the first of the five in (10, 20]: 10 + 10 * 1/5.
        assert!((call_micros_quantile(&cumulative, 10, 0.5) - 12.0).abs() < 1e-9);
        // p99: rank 9.9 is 0.9 of the way through (20, 50].
        assert!((call_micros_quantile(&cumulative, 10, 0.99) - 47.0).abs() < 1e-9);
        // Calls slower than the last bound are reported at the bound.
        assert_eq!(call_micros_quantile(&[0; 19], 3, 0.5), 10_000_000.0);
    }
}
