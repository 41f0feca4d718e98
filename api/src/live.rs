//! The live stream: the pipeline's totals and rates ([`Stats`]), the events the host pushes
//! ([`LiveEvent`]), and [`LiveView`], the fold of those events both sides use.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cluster::RebalanceEvent;
use crate::plugins::{PluginEvent, PluginFailure, PluginStatus};
use crate::rows::{AggregateRow, PredictionRow, ReadingRow};
use crate::vocabulary::OutageCode;

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
    /// Window emissions stored, all time: each partition's partial of a window, and each
    /// revision of it, is one.
    pub aggregates_total: u64,
    /// Dead-lettered messages, all time.
    pub dead_letters_total: u64,
    /// Rows the database refused for good and the pipeline committed its batches without, since
    /// this host started (a plugin's output, or readings kept as dead letters instead).
    #[serde(default)]
    pub storage_refused_total: u64,
    /// Sensors heard from in the last 5 minutes.
    pub active_sensors: u64,
    /// Readings per second over the last 10 seconds.
    pub readings_per_second: f64,
    /// Messages the consumer is behind the ends of its partitions, summed over them, as librdkafka
    /// last reported (`None` until it has: no partition assigned yet, or no statistics report).
    #[serde(default)]
    pub consumer_lag: Option<u64>,
    /// Batch latency percentiles (Kafka timestamp to database commit), milliseconds, recent batches.
    pub latency_ms_p50: f64,
    /// 99th percentile of the same.
    pub latency_ms_p99: f64,
    /// Whether the last database write succeeded (false: the pipeline is retrying it).
    pub database_ok: bool,
    /// Why the last database write failed, while it is failing: the code's short message.
    #[serde(default)]
    pub database_error: Option<String>,
    /// The same as a stable code.
    #[serde(default)]
    pub database_code: Option<OutageCode>,
    /// Whether the Kafka brokers answer (false: the consumer is reconnecting).
    #[serde(default = "yes")]
    pub broker_ok: bool,
    /// Why the brokers are not available, while they are not: the code's short message.
    #[serde(default)]
    pub broker_error: Option<String>,
    /// The same as a stable code.
    #[serde(default)]
    pub broker_code: Option<OutageCode>,
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
        /// The windows it closed or revised, each merged over all its partitions' partials as
        /// stored after the batch; a window shown before is replaced by its newer merge.
        aggregates: Vec<AggregateRow>,
        /// The plugins.
        plugins: Vec<PluginStatus>,
    },
    /// Something happened to a plugin: loaded, swapped, removed or refused.
    Plugin {
        /// What happened.
        event: PluginEvent,
    },
    /// This host went through a rebalance of its consumer group. The view keeps no rebalances: the
    /// dashboard reads them, with every host's partitions, from `GET /api/partitions`, at once on
    /// this event.
    Rebalance {
        /// What changed.
        event: RebalanceEvent,
    },
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
    /// Newest windows, newest first, each once (at its newest merge).
    pub aggregates: Vec<AggregateRow>,
    /// The plugins.
    pub plugins: Vec<PluginStatus>,
    /// What happened to plugins lately, newest first.
    pub plugin_events: Vec<PluginEvent>,
}

impl LiveView {
    /// Folds one event in: a snapshot replaces everything, a batch prepends its rows (keeping at
    /// most [`LIVE_ROWS`] of each kind) and replaces the stats and plugins, a plugin event is
    /// prepended to the others. A window the batch carries replaces the same window shown before
    /// (the batch's is its newer merge: another partition's partial or a revision joined it).
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
            LiveEvent::Rebalance { .. } => {}
            LiveEvent::Batch { stats, readings, detections, aggregates, plugins } => {
                self.stats = stats;
                self.plugins = plugins;
                prepend(&mut self.readings, readings);
                prepend(&mut self.detections, detections);
                self.aggregates.retain(|shown| !aggregates.iter().any(|newer| newer.same_window(shown)));
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
    use crate::*;

    fn reading(n: usize) -> ReadingRow {
        ReadingRow {
            sensor_id: format!("s{n}"),
            sensor_type: SensorType::Co2,
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

    fn window(minute: i64, location: &str, count: i32) -> AggregateRow {
        let start = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::minutes(minute);
        AggregateRow {
            stage: "tumbling-window".into(),
            window_start: start,
            window_end: start + chrono::TimeDelta::minutes(1),
            location: location.into(),
            sensor_type: SensorType::Co2,
            avg_value: 400.0,
            min_value: 400.0,
            max_value: 400.0,
            stddev_value: 0.0,
            count_readings: count,
            anomaly_count: 0,
            revision: 0,
            late_count: 0,
        }
    }

    fn windows(aggregates: Vec<AggregateRow>) -> LiveEvent {
        LiveEvent::Batch {
            stats: Stats::default(),
            readings: Vec::new(),
            detections: Vec::new(),
            aggregates,
            plugins: Vec::new(),
        }
    }

    #[test]
    fn a_window_merged_again_replaces_its_earlier_merge_and_shows_once() {
        let mut view = LiveView::default();
        view.apply(windows(vec![window(2, "hall", 4), window(1, "hall", 6), window(1, "lab", 5)]));
        // Another partition's partial of minute 1 in the hall: the batch carries the window's new merge.
        view.apply(windows(vec![window(1, "hall", 9)]));
        let shown: Vec<(i64, &str, i32)> = view
            .aggregates
            .iter()
            .map(|a| (a.window_start.timestamp() / 60, a.location.as_str(), a.count_readings))
            .collect();
        assert_eq!(shown, [(1, "hall", 9), (2, "hall", 4), (1, "lab", 5)]);
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
            action: PluginAction::Swapped,
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
