//! The live view of the pipeline: all-time totals, rates, the newest rows and the plugins' state,
//! kept in memory and pushed to every live-stream subscriber after each batch; and this host's
//! place in its consumer group (its name, its source, the partitions it owns, its rebalances).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use iotstream_api::{
    AggregateRow, LIVE_ROWS, LiveEvent, LiveView, OutageCode, PluginAction, PluginEvent, PluginFailure, PluginStatus,
    PredictionRow, ReadingRow, RebalanceEvent, Stats,
};
use tokio::sync::broadcast;
use tracing::error;

use super::metrics::{PipelineMetrics, Snapshot};
use crate::pipeline::AdminChannel;
use crate::plugins::output::{display_detail, display_text};
use crate::store::{Refused, RefusedOrigin, Totals};

/// Rows of each kind sent with one batch event: enough for a live table, small for the browser.
pub const EVENT_ROWS: usize = 25;
/// Window of the readings-per-second rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// A sensor heard from within this long is active (the seed's dashboard used 5 minutes).
const ACTIVE_WINDOW: Duration = Duration::from_secs(300);
/// Latency samples kept for the percentiles.
const LATENCY_SAMPLES: usize = 4096;
/// Plugin events kept for the API: the recent history of loads, swaps and refusals.
const PLUGIN_EVENTS: usize = 100;
/// Events a slow subscriber may fall behind before it skips to a fresh snapshot.
const EVENT_BUFFER: usize = 64;

/// What one batch contributed. Only the newest rows are copied: the hot path does not clone a
/// whole batch for the dashboard.
#[derive(Debug, Default)]
pub struct BatchSummary<'a> {
    /// The sensor id of every stored reading (for the active-sensor count).
    pub sensor_ids: Vec<&'a str>,
    /// Readings stored.
    pub stored: u64,
    /// Stored readings a detector flagged.
    pub flagged: u64,
    /// Its newest readings (at most [`EVENT_ROWS`]), newest first.
    pub newest_readings: Vec<ReadingRow>,
    /// Its newest anomalous predictions (at most [`EVENT_ROWS`]), newest first.
    pub detections: Vec<PredictionRow>,
    /// The windows it closed or revised, each merged over every partition's partial stored so far
    /// (not the batch's partials: a partial is a fraction of its window).
    pub aggregates: Vec<AggregateRow>,
    /// Window emissions (partials, revisions) it stored that were not stored before (the others
    /// replace an emission a replay repeated).
    pub new_aggregates: u64,
    /// Messages dead-lettered.
    pub dead_letters: u64,
    /// Per message, ms from its Kafka timestamp to the database commit.
    pub latencies_ms: Vec<f64>,
}

struct State {
    totals: Totals,
    /// Rows the database refused since start.
    storage_refused: u64,
    /// The newest rows and the plugins, exactly as a subscriber folds them from the events.
    view: LiveView,
    batches: VecDeque<(Instant, u64)>,
    latencies: VecDeque<f64>,
    last_seen: HashMap<String, Instant>,
    /// Why the database is unavailable (`None`: it took the last write).
    database_down: Option<OutageCode>,
    /// Why the brokers are unavailable (`None`: they answer).
    broker_down: Option<OutageCode>,
    last_checkpoint: Option<DateTime<Utc>>,
    /// Whether the pipeline runs: it joined the group, its plugins are installed and it consumes.
    processing: bool,
    /// Messages behind each partition's end, as librdkafka last reported.
    consumer_lag: std::collections::BTreeMap<i32, i64>,
    /// Plugin files refused, by plugin (cleared when a later version loads or the file goes).
    plugin_failures: std::collections::BTreeMap<String, String>,
    /// What happened to plugins while the host ran, oldest first (at most [`PLUGIN_EVENTS`]).
    plugin_events: VecDeque<PluginEvent>,
    /// This host in its consumer group.
    member: GroupMember,
}

/// This host as a member of its topic's consumer group, as the pipeline told the view.
#[derive(Debug, Default)]
struct GroupMember {
    /// Its name (`--host-name`).
    host: Option<String>,
    /// The first id of the source it reads (the key of `partition_owners` and `rebalances`).
    lineage: Option<i16>,
    /// The partitions the group gave it (`None`: not told yet).
    owned: Option<std::collections::BTreeSet<i32>>,
}

/// Shared between the pipeline (writer) and the API (readers).
pub struct Live {
    state: Mutex<State>,
    events: broadcast::Sender<LiveEvent>,
    started_at: DateTime<Utc>,
    metrics: PipelineMetrics,
    admin: AdminChannel,
}

impl Live {
    /// Starts from the database's totals and newest rows.
    pub fn new(
        totals: Totals,
        readings: Vec<ReadingRow>,
        detections: Vec<PredictionRow>,
        aggregates: Vec<AggregateRow>,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Live {
            state: Mutex::new(State {
                totals,
                storage_refused: 0,
                view: LiveView {
                    stats: Stats::default(),
                    readings,
                    detections,
                    aggregates,
                    plugins: Vec::new(),
                    ..LiveView::default()
                },
                batches: VecDeque::new(),
                latencies: VecDeque::new(),
                last_seen: HashMap::new(),
                database_down: None,
                broker_down: None,
                last_checkpoint: None,
                processing: false,
                consumer_lag: Default::default(),
                plugin_failures: Default::default(),
                plugin_events: VecDeque::new(),
                member: GroupMember::default(),
            }),
            events,
            started_at: Utc::now(),
            metrics: PipelineMetrics::default(),
            admin: AdminChannel::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave these counters inconsistent in a way that
        // matters more than stopping the dashboard would: keep serving.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current totals and rates.
    pub fn stats(&self) -> Stats {
        let mut state = self.lock();
        self.stats_of(&mut state)
    }

    fn stats_of(&self, state: &mut State) -> Stats {
        let now = Instant::now();
        while state.batches.front().is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW) {
            state.batches.pop_front();
        }
        state.last_seen.retain(|_, seen| now.duration_since(*seen) <= ACTIVE_WINDOW);
        let recent: u64 = state.batches.iter().map(|(_, n)| n).sum();
        let mut latencies: Vec<f64> = state.latencies.iter().copied().collect();
        latencies.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            if latencies.is_empty() { 0.0 } else { latencies[((latencies.len() - 1) as f64 * p).round() as usize] }
        };
        Stats {
            readings_total: state.totals.readings,
            anomalies_total: state.totals.flagged,
            aggregates_total: state.totals.aggregates,
            dead_letters_total: state.totals.dead_letters,
            storage_refused_total: state.storage_refused,
            active_sensors: state.last_seen.len() as u64,
            readings_per_second: recent as f64 / RATE_WINDOW.as_secs_f64(),
            consumer_lag: (!state.consumer_lag.is_empty())
                .then(|| state.consumer_lag.values().map(|&behind| behind.max(0).unsigned_abs()).sum()),
            latency_ms_p50: percentile(0.5),
            latency_ms_p99: percentile(0.99),
            database_ok: state.database_down.is_none(),
            database_error: state.database_down.map(|code| code.message().to_owned()),
            database_code: state.database_down,
            broker_ok: state.broker_down.is_none(),
            broker_error: state.broker_down.map(|code| code.message().to_owned()),
            broker_code: state.broker_down,
            last_checkpoint: state.last_checkpoint,
            plugin_failures: failures_of(state),
            started_at: self.started_at,
        }
    }

    /// A snapshot for a new subscriber, and the subscription for what follows.
    pub fn subscribe(&self) -> (LiveEvent, broadcast::Receiver<LiveEvent>) {
        let mut state = self.lock();
        let receiver = self.events.subscribe();
        let snapshot = LiveEvent::Snapshot {
            stats: self.stats_of(&mut state),
            readings: state.view.readings.clone(),
            detections: state.view.detections.clone(),
            aggregates: state.view.aggregates.clone(),
            plugins: state.view.plugins.clone(),
            plugin_events: state.plugin_events.iter().rev().take(LIVE_ROWS).cloned().collect(),
        };
        (snapshot, receiver)
    }

    /// The plugins' current state.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.lock().view.plugins.clone()
    }

    /// Records whether the last database write succeeded (`None`) or why not; a change is pushed
    /// to subscribers at once (a stalled pipeline sends no batch events).
    pub fn set_database(&self, down: Option<OutageCode>) {
        let mut state = self.lock();
        if state.database_down != down {
            state.database_down = down;
            self.push_status(state);
        }
    }

    /// Records whether the brokers answer (`None`) or why not; a change is pushed.
    pub fn set_broker(&self, down: Option<OutageCode>) {
        let mut state = self.lock();
        if state.broker_down != down {
            state.broker_down = down;
            self.push_status(state);
        }
    }

    /// Records that the pipeline runs (`true`: it joined the group with its plugins installed and
    /// consumes) or has stopped; `/readyz` answers from it.
    pub fn set_processing(&self, processing: bool) {
        self.lock().processing = processing;
    }

    /// Whether the pipeline runs (see [`Live::set_processing`]).
    pub fn processing(&self) -> bool {
        self.lock().processing
    }

    /// Records each partition's consumer lag (of the partitions this host owns, once it was told
    /// which: librdkafka may report one revoked a moment ago).
    pub fn set_consumer_lag(&self, mut lag: std::collections::BTreeMap<i32, i64>) {
        let mut state = self.lock();
        if let Some(owned) = &state.member.owned {
            lag.retain(|partition, _| owned.contains(partition));
        }
        state.consumer_lag = lag;
    }

    /// Records which partitions the consumer group gave this host, named `host`, now (after each
    /// rebalance): `iotstream_partitions_owned`, and the lag of the others is dropped.
    pub fn set_assignment(&self, host: &str, owned: Vec<i32>) {
        let mut state = self.lock();
        let owned: std::collections::BTreeSet<i32> = owned.into_iter().collect();
        state.consumer_lag.retain(|partition, _| owned.contains(partition));
        state.member.owned = Some(owned);
        state.member.host = Some(host.to_owned());
    }

    /// The partitions this host owns (`None` until the group first assigned them).
    pub fn owned_partitions(&self) -> Option<Vec<i32>> {
        self.lock().member.owned.as_ref().map(|owned| owned.iter().copied().collect())
    }

    /// Records that this host, named `host`, reads the source whose first id is `lineage`: from then
    /// on `GET /api/partitions` answers for that source.
    pub fn set_source(&self, lineage: i16, host: &str) {
        let mut state = self.lock();
        state.member.lineage = Some(lineage);
        state.member.host = Some(host.to_owned());
    }

    /// The source this host reads (its first id) and this host's name, once both are known.
    pub fn group_member(&self) -> Option<(i16, String)> {
        let state = self.lock();
        Some((state.member.lineage?, state.member.host.clone()?))
    }

    /// The consumer lag of each partition this host owns, as librdkafka last reported.
    pub fn consumer_lag(&self) -> std::collections::BTreeMap<i32, i64> {
        self.lock().consumer_lag.clone()
    }

    /// Records a rebalance this host went through: the rebalance metrics, and a `rebalance` event
    /// to every live-stream subscriber.
    pub fn record_rebalance(&self, event: RebalanceEvent) {
        let pause =
            event.pause_ms.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| Duration::from_secs_f64(ms / 1000.0));
        self.metrics.record_rebalance(event.assigned.len(), event.revoked.len(), pause);
        // No subscriber yet is fine: a dashboard reads the rebalances from `/api/partitions`.
        let _ = self.events.send(LiveEvent::Rebalance { event });
    }

    /// The channel of admin requests to the pipeline.
    pub fn admin(&self) -> &AdminChannel {
        &self.admin
    }

    /// The pipeline's counters and histograms.
    pub fn metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    /// What `/metrics` reads off the view at a scrape.
    pub fn snapshot(&self) -> Snapshot {
        let mut state = self.lock();
        let stats = self.stats_of(&mut state);
        Snapshot {
            database_up: stats.database_ok,
            broker_up: stats.broker_ok,
            pipeline_running: state.processing,
            checkpoint_age: state.last_checkpoint.and_then(|at| (Utc::now() - at).to_std().ok()),
            consumer_lag: state.consumer_lag.clone(),
            partitions_owned: state.member.owned.as_ref().map(std::collections::BTreeSet::len),
        }
    }

    /// Records that the file of `plugin` was refused (`Some`) or that it loaded (`None`).
    /// A change is pushed to subscribers at once. Both texts may quote the plugin's files: they are
    /// shown fit ([`display_text`], [`display_detail`]).
    pub fn set_plugin_failure(&self, plugin: &str, error: Option<String>) {
        let (plugin, error) = (display_text(plugin), error.as_deref().map(display_detail));
        let plugin = plugin.as_str();
        let mut state = self.lock();
        let before = state.plugin_failures.get(plugin).cloned();
        match &error {
            Some(error) => state.plugin_failures.insert(plugin.to_owned(), error.clone()),
            None => state.plugin_failures.remove(plugin),
        };
        if before != error {
            self.push_status(state);
        }
    }

    /// The plugin files refused and not since fixed.
    pub fn plugin_failures(&self) -> Vec<PluginFailure> {
        failures_of(&self.lock())
    }

    /// Records something that happened to a plugin (its name and the detail shown fit, as
    /// [`display_text`] and [`display_detail`] make them).
    pub fn plugin_event(&self, plugin: &str, action: PluginAction, detail: String) {
        let mut state = self.lock();
        if state.plugin_events.len() == PLUGIN_EVENTS {
            state.plugin_events.pop_front();
        }
        let event =
            PluginEvent { at: Utc::now(), plugin: display_text(plugin), action, detail: display_detail(&detail) };
        state.plugin_events.push_back(event.clone());
        // No subscriber yet is fine: each new one gets the events in its snapshot.
        let _ = self.events.send(LiveEvent::Plugin { event });
    }

    /// What happened to plugins, oldest first.
    pub fn plugin_events(&self) -> Vec<PluginEvent> {
        self.lock().plugin_events.iter().cloned().collect()
    }

    /// Records a stored checkpoint.
    pub fn set_checkpoint(&self, at: DateTime<Utc>) {
        self.lock().last_checkpoint = Some(at);
    }

    /// Pushes the current stats as an event with no rows.
    fn push_status(&self, mut state: std::sync::MutexGuard<'_, State>) {
        let event = LiveEvent::Batch {
            stats: self.stats_of(&mut state),
            readings: Vec::new(),
            detections: Vec::new(),
            aggregates: Vec::new(),
            plugins: state.view.plugins.clone(),
        };
        state.view.apply(event.clone());
        drop(state);
        let _ = self.events.send(event);
    }

    /// Records the plugins' state without a batch (after loading, or after a tick).
    pub fn set_plugins(&self, plugins: Vec<PluginStatus>) {
        self.lock().view.plugins = plugins;
    }

    /// Records a committed batch and pushes it to subscribers.
    /// Records rows the database refused for good (logged as an ERROR: that output is lost, or the
    /// reading is kept only as a dead letter).
    pub fn record_refused(&self, refused: &Refused) {
        match &refused.origin {
            RefusedOrigin::Plugin(plugin) => {
                error!(plugin = %plugin, rows = refused.rows, error = %refused.error, "the database refused a plugin's output; the batch was stored without it")
            }
            RefusedOrigin::Readings => {
                error!(rows = refused.rows, error = %refused.error, "the database refused readings; they are kept as dead letters")
            }
            RefusedOrigin::DeadLetters => {
                error!(rows = refused.rows, error = %refused.error, "the database refused dead letters; they are lost")
            }
        }
        self.lock().storage_refused += refused.rows as u64;
    }

    /// Folds a committed batch into the view and pushes it to every subscriber.
    pub fn record_batch(&self, batch: BatchSummary<'_>, plugins: Vec<PluginStatus>) {
        let now = Instant::now();
        let mut state = self.lock();
        state.totals.readings += batch.stored;
        state.totals.flagged += batch.flagged;
        state.totals.aggregates += batch.new_aggregates;
        state.totals.dead_letters += batch.dead_letters;
        state.batches.push_back((now, batch.stored));
        for sensor_id in batch.sensor_ids {
            match state.last_seen.get_mut(sensor_id) {
                Some(seen) => *seen = now,
                None => {
                    state.last_seen.insert(sensor_id.to_owned(), now);
                }
            }
        }
        for latency in batch.latencies_ms {
            if state.latencies.len() == LATENCY_SAMPLES {
                state.latencies.pop_front();
            }
            state.latencies.push_back(latency);
        }
        let aggregates: Vec<AggregateRow> = batch.aggregates.into_iter().rev().collect();
        let stats = self.stats_of(&mut state);
        let event = LiveEvent::Batch {
            stats,
            readings: batch.newest_readings,
            detections: batch.detections,
            aggregates,
            plugins,
        };
        state.view.apply(event.clone());
        drop(state);
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

fn failures_of(state: &State) -> Vec<PluginFailure> {
    state
        .plugin_failures
        .iter()
        .map(|(plugin, error)| PluginFailure { plugin: plugin.clone(), error: error.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_lag_is_the_sum_over_partitions_once_reported() {
        let live = Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new());
        // Before librdkafka's first statistics report the lag is unknown, not zero.
        assert_eq!(live.stats().consumer_lag, None);
        live.set_consumer_lag(std::collections::BTreeMap::from([(0, 7), (1, 0), (2, 35)]));
        assert_eq!(live.stats().consumer_lag, Some(42));
        live.set_consumer_lag(std::collections::BTreeMap::from([(0, 0)]));
        assert_eq!(live.stats().consumer_lag, Some(0));
    }

    #[test]
    fn an_assignment_keeps_the_lag_of_owned_partitions_only_and_a_rebalance_is_pushed() {
        let live = Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new());
        assert_eq!(live.group_member(), None);
        live.set_consumer_lag(std::collections::BTreeMap::from([(0, 7), (1, 3), (2, 35)]));
        live.set_assignment("node-a-41", vec![2, 0]);
        assert_eq!(live.consumer_lag(), std::collections::BTreeMap::from([(0, 7), (2, 35)]));
        // librdkafka still reporting a partition revoked a moment ago.
        live.set_consumer_lag(std::collections::BTreeMap::from([(1, 9), (2, 30)]));
        assert_eq!(live.stats().consumer_lag, Some(30));
        assert_eq!(live.snapshot().partitions_owned, Some(2));
        // The API answers once the source is known too.
        assert_eq!(live.group_member(), None);
        live.set_source(3, "node-a-41");
        assert_eq!(live.group_member(), Some((3, "node-a-41".to_owned())));

        let (_, mut events) = live.subscribe();
        let event = RebalanceEvent {
            at: Utc::now(),
            host: "node-a-41".into(),
            assigned: vec![2],
            revoked: vec![1],
            pause_ms: Some(40.0),
        };
        live.record_rebalance(event.clone());
        assert_eq!(events.try_recv().ok(), Some(LiveEvent::Rebalance { event }));
    }
}
