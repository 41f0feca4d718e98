//! The processing loop: Kafka batch → validate → detector plugins → aggregator plugins → one
//! PostgreSQL transaction (rows, positions, sometimes a checkpoint) → live view.
//!
//! Invariants (docs/guarantees.md):
//! * A batch's rows and the source positions after it are committed in one transaction; a replayed
//!   message's rows are no-ops, so whatever crashes, each message is stored once.
//! * Every `checkpoint_interval`, the stages' exported states go into the transaction of the batch
//!   they follow, with the positions they include; on start the host restores the newest checkpoint
//!   and reads from its positions, so the stages see every message exactly once in effect.
//! * A message that does not decode or validate goes to `dead_letters` with its reason, in the same
//!   transaction as the readings around it.
//! * A failing plugin costs only its own output for the batch: the raw readings, the other plugins
//!   and the stream go on.
//! * While PostgreSQL is unreachable the loop retries the same batch with backoff and consumes
//!   nothing more (librdkafka's prefetch queue is bounded), so memory stays bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{AggregateRow, PluginStatus, PredictionRow, ReadingRow};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::kafka::{KafkaError, RawMessage, Source, SourceHealth};
use crate::live::{BatchSummary, EVENT_ROWS, Live};
use crate::plugins::bindings::{Reading as WitReading, Verdict, WindowAggregate};
use crate::plugins::{Plugin, SensorCatalog, StageKind};
use crate::reading::{ReadingLimits, SensorType};
use crate::store::{
    BatchRows, Checkpoint, DEAD_LETTER_PAYLOAD_LIMIT, DeadLetter, Prediction, StageState, Store, StoreError,
    StoredReading, Written,
};

/// How long the shutdown checkpoint may take before the host exits without it (the previous
/// checkpoint and a replay then cover the difference).
const SHUTDOWN_CHECKPOINT_LIMIT: Duration = Duration::from_secs(5);

/// How the loop batches, ticks, validates and checkpoints.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Most messages in one batch.
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first.
    pub batch_linger: Duration,
    /// How often aggregators are told the processing time.
    pub tick_interval: Duration,
    /// How often the stages' state is checkpointed (`None`: only at shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// What a message must satisfy besides its format.
    pub limits: ReadingLimits,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max: 5000,
            batch_linger: Duration::from_millis(50),
            tick_interval: Duration::from_secs(1),
            checkpoint_interval: Some(Duration::from_secs(10)),
            limits: ReadingLimits::default(),
        }
    }
}

/// The plugins and the sensor keys they share. Plugin calls are blocking CPU work, so the stages
/// move onto a blocking thread for each batch and come back with its results.
#[derive(Default)]
struct Stages {
    detectors: Vec<Plugin>,
    aggregators: Vec<Plugin>,
    catalog: SensorCatalog,
}

/// The loop's parts.
pub struct Pipeline {
    config: PipelineConfig,
    source: Source,
    source_health: Arc<SourceHealth>,
    /// The `kafka_sources` id of the source.
    source_id: i16,
    /// The next offset of each partition: what the stages' state includes.
    positions: BTreeMap<i32, i64>,
    last_checkpoint: Instant,
    stages: Stages,
    store: Store,
    live: Arc<Live>,
}

impl Pipeline {
    /// Assembles a pipeline (`plugins` may be of both kinds, in any order), restores the stages
    /// from the source's newest checkpoint, and points the source at the positions the restored
    /// state includes (without a checkpoint: at the stored positions, with fresh stages).
    pub async fn start(
        config: PipelineConfig,
        source: Source,
        plugins: Vec<Plugin>,
        store: Store,
        live: Arc<Live>,
    ) -> Result<Self, StartError> {
        let (detectors, aggregators) = plugins.into_iter().partition(|p| p.kind() == StageKind::Detector);
        let mut stages = Stages { detectors, aggregators, catalog: SensorCatalog::default() };
        let source_id = store.source_id(source.identity(), source.topic()).await?;
        let stored = store.positions(source_id).await?;
        let positions = match store.latest_checkpoint(source_id).await? {
            Some(checkpoint) => {
                stages.restore(&checkpoint);
                let replay: i64 = checkpoint
                    .positions
                    .iter()
                    .map(|(partition, from)| stored.get(partition).map_or(0, |to| (to - from.max(&0)).max(0)))
                    .sum();
                info!(
                    source = source.identity(),
                    reason = checkpoint.reason,
                    stages = checkpoint.states.len(),
                    sensors = checkpoint.catalog.len(),
                    replay_messages = replay,
                    "restored the stages from their checkpoint; replaying what followed it"
                );
                checkpoint.positions
            }
            None => {
                info!(source = source.identity(), partitions = stored.len(), "no checkpoint: stages start fresh");
                stored
            }
        };
        source.start_at(&positions)?;
        let source_health = source.health();
        let pipeline = Pipeline {
            config,
            source,
            source_health,
            source_id,
            positions,
            last_checkpoint: Instant::now(),
            stages,
            store,
            live,
        };
        pipeline.live.set_plugins(pipeline.plugin_statuses());
        Ok(pipeline)
    }

    /// Runs until `shutdown`, then checkpoints the stages (if everything they processed is stored)
    /// and commits the group offsets.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        let mut last_tick = Instant::now();
        let mut consistent = true;
        loop {
            let batch = tokio::select! {
                batch = self.source.next_batch(self.config.batch_max, self.config.batch_linger, self.config.tick_interval) => batch,
                _ = shutdown.cancelled() => break,
            };
            self.live.set_broker(self.source_health.is_up(), self.source_health.last_error());
            if !batch.is_empty() && !self.process(&batch, &shutdown).await {
                consistent = false;
                break;
            }
            if last_tick.elapsed() >= self.config.tick_interval {
                last_tick = Instant::now();
                if !self.tick(&shutdown).await {
                    consistent = false;
                    break;
                }
            }
        }
        if consistent {
            self.checkpoint_at_shutdown().await;
        } else {
            info!("stopping with a batch not stored: no shutdown checkpoint (the last one and a replay cover it)");
        }
        info!("pipeline stopping: committing group offsets");
        self.source.commit_now()
    }

    /// Processes one batch; false if shutdown interrupted the database retries (the batch is then
    /// not stored, to be replayed).
    async fn process(&mut self, batch: &[RawMessage], shutdown: &CancellationToken) -> bool {
        let mut rows = BatchRows { source: self.source_id, ..BatchRows::default() };
        let mut wit = Vec::with_capacity(batch.len());
        let now = Utc::now();
        for message in batch {
            match self.config.limits.check(message.payload.as_deref(), now) {
                Ok(reading) => {
                    wit.push(self.stages.catalog.wit_reading(&reading));
                    rows.readings.push(StoredReading {
                        reading,
                        flagged: false,
                        partition: message.partition,
                        offset: message.offset,
                    });
                }
                Err(err) => {
                    debug!(partition = message.partition, offset = message.offset, error = %err, "dead-lettering a message");
                    rows.dead_letters.push(DeadLetter {
                        topic: self.source.topic().to_owned(),
                        partition: message.partition,
                        offset: message.offset,
                        key: message.key.clone(),
                        payload: message.payload.as_ref().map(|p| p[..p.len().min(DEAD_LETTER_PAYLOAD_LIMIT)].to_vec()),
                        error: err.to_string(),
                        reason: err.kind(),
                    });
                }
            }
            let next = self.positions.entry(message.partition).or_insert(message.offset + 1);
            *next = (*next).max(message.offset + 1);
            rows.positions.insert(message.partition, *next);
        }
        let checkpoint_due =
            self.config.checkpoint_interval.is_some_and(|every| self.last_checkpoint.elapsed() >= every);
        if !wit.is_empty() || checkpoint_due {
            let mut stages = std::mem::take(&mut self.stages);
            let positions = checkpoint_due.then(|| self.positions.clone());
            match tokio::task::spawn_blocking(move || {
                if !wit.is_empty() {
                    stages.run(&mut wit, &mut rows);
                }
                if let Some(positions) = positions {
                    rows.checkpoint = Some(stages.checkpoint("interval", positions));
                }
                (stages, rows)
            })
            .await
            {
                Ok((stages, processed)) => {
                    self.stages = stages;
                    rows = processed;
                }
                Err(panic) => {
                    error!(error = %panic, "plugin stages panicked; stopping the pipeline (the batch will be replayed)");
                    return false;
                }
            }
        }
        let Some(written) = Self::commit(&self.store, &self.live, &rows, shutdown).await else {
            return false;
        };
        if rows.checkpoint.is_some() {
            self.last_checkpoint = Instant::now();
            self.live.set_checkpoint(Utc::now());
        }
        if let Err(err) = self.source.mark_processed(batch) {
            warn!(error = %err, "could not store offsets with the consumer group");
        }
        let now_ms = Utc::now().timestamp_millis();
        let latencies_ms = batch.iter().filter_map(|m| m.timestamp_ms).map(|t| (now_ms - t).max(0) as f64).collect();
        self.publish(&rows, written, latencies_ms);
        true
    }

    /// Tells aggregators the time and stores the windows they close for idleness.
    async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        let now_ms = Utc::now().timestamp_millis();
        // A tick is a few microseconds per aggregator: not worth a thread hop.
        let rows = BatchRows { source: self.source_id, aggregates: self.stages.tick(now_ms), ..BatchRows::default() };
        if rows.aggregates.is_empty() {
            self.live.set_plugins(self.plugin_statuses());
            return true;
        }
        let Some(written) = Self::commit(&self.store, &self.live, &rows, shutdown).await else {
            return false;
        };
        self.publish(&rows, written, Vec::new());
        true
    }

    /// Exports every stage's state with the current positions, within [`SHUTDOWN_CHECKPOINT_LIMIT`].
    async fn checkpoint_at_shutdown(&mut self) {
        let started = Instant::now();
        let checkpoint = self.stages.checkpoint("shutdown", self.positions.clone());
        let rows = BatchRows { source: self.source_id, checkpoint: Some(checkpoint), ..BatchRows::default() };
        match tokio::time::timeout(SHUTDOWN_CHECKPOINT_LIMIT, self.store.write(&rows)).await {
            Ok(Ok(_)) => info!(took = ?started.elapsed(), "stages checkpointed at shutdown"),
            Ok(Err(err)) => warn!(error = %err, "shutdown checkpoint not stored; the last one and a replay cover it"),
            Err(_) => {
                warn!(after = ?SHUTDOWN_CHECKPOINT_LIMIT, "shutdown checkpoint timed out; the last one and a replay cover it")
            }
        }
    }

    /// Writes `rows`, retrying with exponential backoff (0.1 s doubling to 10 s) until it succeeds
    /// or shutdown is requested (`None`).
    /// (A free function of the store and live view: the plugin stores are not `Sync`, so no `&self`
    /// may live across an await.)
    async fn commit(store: &Store, live: &Live, rows: &BatchRows, shutdown: &CancellationToken) -> Option<Written> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let write = || store.write(rows);
        let retried = write.retry(backoff).notify(|err, delay| {
            live.set_database(false, Some(err.to_string()));
            warn!(error = %err, retry_in = ?delay, "batch not stored; retrying");
        });
        tokio::select! {
            result = retried => {
                if result.is_ok() {
                    live.set_database(true, None);
                }
                result.ok()
            }
            _ = shutdown.cancelled() => None,
        }
    }

    fn publish(&self, rows: &BatchRows, written: Written, latencies_ms: Vec<f64>) {
        let detections = rows
            .predictions
            .iter()
            .rev()
            .filter(|p| p.verdict == "anomaly")
            .take(EVENT_ROWS)
            .map(|p| {
                let stored = &rows.readings[p.reading];
                PredictionRow {
                    detector: p.detector.clone(),
                    sensor_id: stored.reading.sensor_id.clone(),
                    sensor_type: stored.reading.sensor_type.as_str().to_owned(),
                    value: stored.reading.value,
                    timestamp: stored.reading.timestamp,
                    verdict: p.verdict.to_owned(),
                    is_anomaly: true,
                    anomaly_score: p.score,
                    rule_based_anomaly: stored.reading.anomaly,
                    detector_version: p.detector_version.clone(),
                    model_generation: p.model.as_ref().map(|m| i32::try_from(m.generation).unwrap_or(i32::MAX)),
                }
            })
            .collect();
        let summary = BatchSummary {
            sensor_ids: rows.readings.iter().map(|r| r.reading.sensor_id.as_str()).collect(),
            stored: written.readings,
            flagged: written.flagged,
            newest_readings: rows.readings.iter().rev().take(EVENT_ROWS).map(reading_row).collect(),
            detections,
            aggregates: rows.aggregates.clone(),
            new_aggregates: written.aggregates,
            dead_letters: written.dead_letters,
            latencies_ms,
        };
        self.live.record_batch(summary, self.plugin_statuses());
    }

    fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.stages.statuses()
    }
}

impl Stages {
    /// Runs every detector, then every aggregator, over the batch, filling `rows`.
    fn run(&mut self, wit: &mut [WitReading], rows: &mut BatchRows) {
        for detector in &mut self.detectors {
            match detector.detect(&self.catalog, wit) {
                Ok(detections) => {
                    for (index, detection) in detections.iter().enumerate() {
                        let flagged = detection.verdict == Verdict::Anomaly;
                        rows.readings[index].flagged |= flagged;
                        rows.predictions.push(Prediction {
                            detector: detector.name().to_owned(),
                            reading: index,
                            verdict: verdict_name(detection.verdict),
                            score: detection.score,
                            detector_version: detector.info().version.clone(),
                            model: detection.model,
                        });
                    }
                }
                Err(err) => {
                    error!(plugin = detector.name(), error = %err, "detector failed; its verdicts for this batch are lost")
                }
            }
        }
        for (reading, stored) in wit.iter_mut().zip(&rows.readings) {
            reading.flagged = stored.flagged;
        }
        for aggregator in &mut self.aggregators {
            match aggregator.aggregate(&self.catalog, wit) {
                Ok(aggregates) => {
                    rows.aggregates.extend(aggregates.into_iter().map(|a| aggregate_row(aggregator.name(), a)))
                }
                Err(err) => error!(plugin = aggregator.name(), error = %err, "aggregator failed on a batch"),
            }
        }
    }

    /// Tells every aggregator the processing time; returns the windows closed for idleness.
    fn tick(&mut self, now_ms: i64) -> Vec<AggregateRow> {
        let mut closed = Vec::new();
        for aggregator in &mut self.aggregators {
            match aggregator.tick(&self.catalog, now_ms) {
                Ok(aggregates) => closed.extend(aggregates.into_iter().map(|a| aggregate_row(aggregator.name(), a))),
                Err(err) => error!(plugin = aggregator.name(), error = %err, "aggregator failed on a tick"),
            }
        }
        closed
    }

    /// Restores the catalog and every stage whose state is in `checkpoint` with the state format it
    /// declares now; a stage with no state there, or another format, starts fresh.
    fn restore(&mut self, checkpoint: &Checkpoint) {
        self.catalog = SensorCatalog::restore(&checkpoint.catalog);
        let catalog = &self.catalog;
        for plugin in self.detectors.iter_mut().chain(&mut self.aggregators) {
            let Some(saved) = checkpoint.states.iter().find(|s| s.stage == plugin.name()) else {
                info!(plugin = plugin.name(), "no checkpointed state: the stage starts fresh");
                continue;
            };
            if saved.state_version != plugin.info().state_version {
                warn!(
                    plugin = plugin.name(),
                    checkpointed = saved.state_version,
                    declared = plugin.info().state_version,
                    "the stage's state format changed since its checkpoint: it starts fresh"
                );
                continue;
            }
            match plugin.import_state(catalog, &saved.state) {
                Ok(()) => info!(plugin = plugin.name(), bytes = saved.state.len(), "stage state restored"),
                Err(err) => {
                    error!(plugin = plugin.name(), error = %err, "checkpointed state refused: the stage starts fresh")
                }
            }
        }
    }

    /// Every stage's exported state with `positions` and the catalog. A stage whose export fails
    /// is left out (it would restore fresh) and logged.
    fn checkpoint(&mut self, reason: &'static str, positions: BTreeMap<i32, i64>) -> Checkpoint {
        let catalog = &self.catalog;
        let mut states = Vec::new();
        for plugin in self.detectors.iter_mut().chain(&mut self.aggregators) {
            match plugin.export_state(catalog) {
                Ok(state) => states.push(StageState {
                    stage: plugin.name().to_owned(),
                    stage_version: plugin.info().version.clone(),
                    state_version: plugin.info().state_version,
                    state,
                }),
                Err(err) => {
                    warn!(plugin = plugin.name(), error = %err, "stage state not exported: left out of the checkpoint")
                }
            }
        }
        Checkpoint { reason, positions, catalog: self.catalog.entries(), states }
    }

    fn statuses(&self) -> Vec<PluginStatus> {
        self.detectors.iter().chain(&self.aggregators).map(plugin_status).collect()
    }
}

/// The API's view of a plugin.
pub fn plugin_status(plugin: &Plugin) -> PluginStatus {
    let m = plugin.metrics();
    PluginStatus {
        name: plugin.name().to_owned(),
        kind: match plugin.kind() {
            StageKind::Detector => "detector".into(),
            StageKind::Aggregator => "aggregator".into(),
        },
        version: plugin.info().version.clone(),
        calls: m.calls,
        readings_in: m.readings_in,
        outputs: m.outputs,
        errors: m.errors,
        restarts: m.restarts,
        mean_call_micros: if m.calls == 0 { 0.0 } else { m.busy_micros as f64 / m.calls as f64 },
        last_error: m.last_error.clone(),
        state: m.state.as_str().into(),
        consecutive_failures: m.consecutive_failures,
        skipped_readings: m.skipped_readings,
        memory_bytes: m.memory_bytes,
        state_bytes: m.state_bytes,
        p50_call_micros: m.call_times.quantile_micros(0.5),
        p99_call_micros: m.call_times.quantile_micros(0.99),
        busy_micros: m.busy_micros,
        call_micros_buckets: m.call_times.cumulative(),
    }
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::WarmingUp => "warming_up",
        Verdict::Normal => "normal",
        Verdict::Anomaly => "anomaly",
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Reading the positions or the checkpoint.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Assigning the partitions.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn aggregate_row(stage: &str, a: WindowAggregate) -> AggregateRow {
    AggregateRow {
        stage: stage.to_owned(),
        window_start: millis(a.window_start_ms),
        window_end: millis(a.window_end_ms),
        location: a.location,
        sensor_type: SensorType::from(a.sensor_type).as_str().to_owned(),
        avg_value: a.avg,
        min_value: a.min,
        max_value: a.max,
        stddev_value: a.stddev,
        count_readings: i32::try_from(a.count).unwrap_or(i32::MAX),
        anomaly_count: i32::try_from(a.anomaly_count).unwrap_or(i32::MAX),
        revision: i32::try_from(a.revision).unwrap_or(i32::MAX),
        late_count: i32::try_from(a.late_count).unwrap_or(i32::MAX),
    }
}

fn reading_row(stored: &StoredReading) -> ReadingRow {
    let r = &stored.reading;
    ReadingRow {
        sensor_id: r.sensor_id.clone(),
        sensor_type: r.sensor_type.as_str().to_owned(),
        location: r.location.clone(),
        value: r.value,
        unit: r.unit.clone(),
        timestamp: r.timestamp,
        anomaly: r.anomaly,
        flagged: stored.flagged,
    }
}
