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
//! * Plugins change only between batches: a new version is installed, with the old one's state,
//!   at a batch boundary, so no reading is judged by neither or both.
//!
//! Layout: this module (the loop), [`stages`] (running the plugins, checkpoints, installing),
//! [`reload`] (the watched plugins folder).

use self::reload::Change;
pub use self::reload::PluginReload;
pub use self::stages::plugin_status;
use self::stages::{Installed, Stages};

mod reload;
mod stages;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use iotstream_api::{Named, PluginAction, PluginStatus, PredictionRow, ReadingRow};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::http::live::{BatchSummary, EVENT_ROWS, Live};
use crate::kafka::{KafkaError, RawMessage, Source, SourceHealth};
use crate::plugins::Plugin;
use crate::reading::ReadingLimits;
use crate::store::rows::DEAD_LETTER_PAYLOAD_LIMIT;
use crate::store::{BatchRows, CheckpointReason, DeadLetter, Store, StoreError, StoredReading, Totals};

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
    /// How long a restart waits for the messages of a logged batch (with no message of it arriving
    /// while the brokers are up) before it reads on without it.
    pub replay_patience: Duration,
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
            replay_patience: Duration::from_secs(60),
            limits: ReadingLimits::default(),
        }
    }
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
    /// The number of the last batch the stages processed (batches are logged with their extents).
    batch_seq: i64,
    /// The newest batch logged when the pipeline started: a replay forms batches up to it again.
    logged_until: i64,
    /// When this process last checkpointed (`None`: not yet; the first batch always does, so
    /// stored positions never run ahead of every checkpoint).
    last_checkpoint: Option<Instant>,
    stages: Stages,
    reload: Option<PluginReload>,
    /// The previous batch's transaction, running while this batch is computed.
    in_flight: Option<InFlight>,
    store: Store,
    live: Arc<Live>,
}

impl Pipeline {
    /// Assembles a pipeline (`plugins` may be of both kinds, in any order), restores the stages
    /// from the source's newest checkpoint, and points the source at the positions the restored
    /// state includes (without a checkpoint: at the start of every partition, with fresh stages).
    /// With `reload`, plugins change while it runs as their folder does.
    pub async fn start(
        config: PipelineConfig,
        mut source: Source,
        plugins: Vec<Plugin>,
        reload: Option<PluginReload>,
        store: Store,
        live: Arc<Live>,
    ) -> Result<Self, StartError> {
        let mut stages = Stages::new(plugins);
        let source_id = store.source_id(source.identity(), source.topic()).await?;
        let stored = store.positions(source_id).await?;
        // The batches to form again: those committed after the checkpoint restored (none without a
        // checkpoint, or with one older than the batch log).
        let mut after_batch = None;
        let positions = match store.latest_checkpoint(source_id).await? {
            Some(checkpoint) => {
                stages.restore(&checkpoint);
                after_batch = checkpoint.after_batch;
                let replay: i64 = checkpoint
                    .positions
                    .iter()
                    .map(|(partition, from)| stored.get(partition).map_or(0, |to| (to - from.max(&0)).max(0)))
                    .sum();
                info!(
                    source = source.identity(),
                    reason = checkpoint.reason.as_str(),
                    stages = checkpoint.states.len(),
                    sensors = checkpoint.catalog.len(),
                    replay_messages = replay,
                    "restored the stages from their checkpoint; replaying what followed it"
                );
                checkpoint.positions
            }
            // Every process checkpoints with its first batch, so stored positions without a
            // checkpoint mean the checkpoints were deleted: rebuild the stages' state from the
            // start of the log (the rows it replays are already stored and skipped).
            None if !stored.is_empty() => {
                warn!(
                    source = source.identity(),
                    "stored positions but no checkpoint: replaying the topic from its start to rebuild the stages' state"
                );
                BTreeMap::new()
            }
            None => {
                info!(source = source.identity(), "first start on this source: reading every partition from its start");
                BTreeMap::new()
            }
        };
        source.start_at(&positions)?;
        let logged_until = store.last_batch(source_id).await?;
        let batch_seq = match after_batch {
            Some(after) => {
                let extents = store.batches_after(source_id, after).await?;
                if !extents.is_empty() {
                    info!(batches = extents.len(), "forming the batches committed after the checkpoint again");
                }
                source.replay(extents, config.replay_patience);
                after
            }
            None => logged_until,
        };
        let source_health = source.health();
        let pipeline = Pipeline {
            config,
            source,
            source_health,
            source_id,
            positions,
            batch_seq,
            logged_until,
            last_checkpoint: None,
            stages,
            reload,
            in_flight: None,
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
            let broker_up = self.source_health.is_up();
            self.live.set_broker(broker_up, if broker_up { None } else { self.source_health.last_error() });
            // Nothing to compute meanwhile: let the batch in flight finish.
            if batch.is_empty() && !self.finish_in_flight().await {
                consistent = false;
                break;
            }
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
            self.apply_plugin_changes();
        }
        if consistent && !self.finish_in_flight().await {
            consistent = false;
        }
        if consistent {
            self.checkpoint_at_shutdown().await;
        } else {
            info!("stopping with a batch not stored: no shutdown checkpoint (the last one and a replay cover it)");
        }
        info!("pipeline stopping: committing group offsets");
        self.source.commit_now()
    }

    /// Processes one batch and starts its transaction once the previous batch's has committed;
    /// false if shutdown interrupted the database retries (what is not stored is replayed).
    async fn process(&mut self, batch: &[RawMessage], shutdown: &CancellationToken) -> bool {
        // The logged batches a given-up replay did not form again are forgotten with this batch, so
        // that a later restart does not form batches this run never processed.
        let forget_batches = self.source.take_replay_given_up().then_some((self.batch_seq, self.logged_until));
        // A batch formed again keeps its logged number; one read on is numbered past the log.
        self.batch_seq = self.source.take_replayed().unwrap_or(self.batch_seq.max(self.logged_until) + 1);
        let batch_seq = self.batch_seq;
        let mut rows = BatchRows { source: self.source_id, batch_seq, forget_batches, ..BatchRows::default() };
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
        let checkpoint_due = match (self.last_checkpoint, self.config.checkpoint_interval) {
            (None, _) => true,
            (Some(last), Some(every)) => last.elapsed() >= every,
            (Some(_), None) => false,
        };
        if !wit.is_empty() || checkpoint_due {
            let mut stages = std::mem::take(&mut self.stages);
            let positions = checkpoint_due.then(|| self.positions.clone());
            match tokio::task::spawn_blocking(move || {
                if !wit.is_empty() {
                    stages.run(&mut wit, &mut rows);
                }
                if let Some(positions) = positions {
                    rows.checkpoint = Some(stages.checkpoint(CheckpointReason::Interval, positions, batch_seq));
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
        if rows.checkpoint.is_some() {
            self.last_checkpoint = Some(Instant::now());
        }
        // One transaction at a time, in batch order: this batch's starts when the previous one's
        // has committed, and runs while the next batch is computed.
        if !self.finish_in_flight().await {
            return false;
        }
        let sent_ms: Vec<i64> = batch.iter().filter_map(|m| m.timestamp_ms).collect();
        let (store, live, shutdown, plugins) =
            (self.store.clone(), self.live.clone(), shutdown.clone(), self.plugin_statuses());
        let task = tokio::spawn(async move {
            let written = Self::commit(&store, &live, &rows, &shutdown).await?;
            // Published as soon as it is durable, not when the next batch comes.
            let now_ms = Utc::now().timestamp_millis();
            let latencies_ms = sent_ms.iter().map(|t| (now_ms - t).max(0) as f64).collect();
            publish(&live, &rows, written, latencies_ms, plugins);
            Some(Committed { positions: rows.positions, checkpoint: rows.checkpoint.is_some() })
        });
        self.in_flight = Some(task);
        true
    }

    /// Waits for the batch in flight to commit, then stores its offsets with the consumer group;
    /// false if it was not stored (shutdown during its retries).
    async fn finish_in_flight(&mut self) -> bool {
        let Some(task) = self.in_flight.take() else { return true };
        let committed = match task.await {
            Ok(Some(committed)) => committed,
            Ok(None) => return false,
            Err(panic) => {
                error!(error = %panic, "the batch's transaction task failed; stopping (the batch will be replayed)");
                return false;
            }
        };
        if committed.checkpoint {
            self.live.set_checkpoint(Utc::now());
        }
        if let Err(err) = self.source.mark_stored(&committed.positions) {
            warn!(error = %err, "could not store offsets with the consumer group");
        }
        true
    }

    /// Tells aggregators the time and stores the windows they close for idleness.
    async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        if !self.finish_in_flight().await {
            return false;
        }
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
        publish(&self.live, &rows, written, Vec::new(), self.plugin_statuses());
        true
    }

    /// Installs the plugin versions that finished loading and stops the plugins whose files are
    /// gone (between batches).
    fn apply_plugin_changes(&mut self) {
        let Some(reload) = self.reload.as_mut() else { return };
        let changes = reload.poll();
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match change {
                Change::Ready { plugin, load_ms } => {
                    let (name, version) = (plugin.name().to_owned(), plugin.info().version.clone());
                    let paused = Instant::now();
                    let installed = self.stages.install(*plugin);
                    let pause_ms = paused.elapsed().as_secs_f64() * 1000.0;
                    let (action, detail) = match &installed {
                        Installed::New => (PluginAction::Loaded, format!("version {version}, loaded in {load_ms} ms")),
                        Installed::StateHandedOver { bytes } => (
                            PluginAction::Swapped,
                            format!(
                                "version {version}: state handed over ({bytes} bytes); loaded in {load_ms} ms, pipeline paused {pause_ms:.1} ms"
                            ),
                        ),
                        Installed::Fresh(why) => (
                            PluginAction::Swapped,
                            format!(
                                "version {version}: starts fresh because {why}; loaded in {load_ms} ms, pipeline paused {pause_ms:.1} ms"
                            ),
                        ),
                    };
                    info!(plugin = %name, action = action.as_str(), "{detail}");
                    self.live.set_plugin_failure(&name, None);
                    self.live.plugin_event(&name, action, detail);
                    // Checkpoint with the next batch: a restart then replays nothing from before
                    // the change with the changed plugins.
                    self.last_checkpoint = None;
                }
                Change::Refused { name, error } => {
                    let running = self.stages.contains(&name);
                    let detail = if running { format!("{error}; the running version keeps running") } else { error };
                    error!(plugin = %name, "plugin file refused: {detail}");
                    self.live.set_plugin_failure(&name, Some(detail.clone()));
                    self.live.plugin_event(&name, PluginAction::Refused, detail);
                }
                Change::Removed { name } => {
                    self.live.set_plugin_failure(&name, None);
                    if self.stages.remove(&name) {
                        info!(plugin = %name, "plugin file removed: plugin stopped");
                        self.live.plugin_event(
                            &name,
                            PluginAction::Removed,
                            "its file was removed; the plugin stopped".into(),
                        );
                    }
                }
            }
        }
        self.live.set_plugins(self.plugin_statuses());
    }

    /// Exports every stage's state with the current positions, within [`SHUTDOWN_CHECKPOINT_LIMIT`].
    async fn checkpoint_at_shutdown(&mut self) {
        let started = Instant::now();
        let checkpoint = self.stages.checkpoint(CheckpointReason::Shutdown, self.positions.clone(), self.batch_seq);
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
    async fn commit(store: &Store, live: &Live, rows: &BatchRows, shutdown: &CancellationToken) -> Option<Totals> {
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

    fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.stages.statuses()
    }
}

/// Pushes a committed batch (what it `written`, its newest rows) to the live view.
fn publish(live: &Live, rows: &BatchRows, written: Totals, latencies_ms: Vec<f64>, plugins: Vec<PluginStatus>) {
    let detections = rows
        .predictions
        .iter()
        .rev()
        .filter(|p| p.verdict.is_anomaly())
        .take(EVENT_ROWS)
        .map(|p| {
            let stored = &rows.readings[p.reading];
            PredictionRow {
                detector: p.detector.clone(),
                sensor_id: stored.reading.sensor_id.clone(),
                sensor_type: stored.reading.sensor_type,
                value: stored.reading.value,
                timestamp: stored.reading.timestamp,
                verdict: p.verdict,
                is_anomaly: true,
                anomaly_score: p.score,
                rule_based_anomaly: stored.reading.anomaly,
                detector_version: p.detector_version.clone(),
                model_generation: p.model.map(|m| m.generation),
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
    live.record_batch(summary, plugins);
}

/// A batch's transaction in progress: it commits the rows (retrying) and publishes them; `None` if
/// shutdown interrupted its retries.
type InFlight = tokio::task::JoinHandle<Option<Committed>>;

/// What a committed batch leaves for the loop.
struct Committed {
    /// The positions it stored.
    positions: BTreeMap<i32, i64>,
    /// Whether it carried a checkpoint.
    checkpoint: bool,
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

fn reading_row(stored: &StoredReading) -> ReadingRow {
    let r = &stored.reading;
    ReadingRow {
        sensor_id: r.sensor_id.clone(),
        sensor_type: r.sensor_type,
        location: r.location.clone(),
        value: r.value,
        unit: r.unit.clone(),
        timestamp: r.timestamp,
        anomaly: r.anomaly,
        flagged: stored.flagged,
    }
}
