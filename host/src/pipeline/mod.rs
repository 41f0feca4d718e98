//! The processing loop: Kafka batch → validate → detector plugins → aggregator plugins (each
//! partition's messages through its own lane's instances) → one PostgreSQL transaction (rows,
//! positions, the lanes' batch log, sometimes their checkpoints) → live view; and the consumer
//! group's rebalances, between batches: a partition given gets a lane restored from its
//! checkpoint, a partition taken has its lane committed and checkpointed before it goes.
//!
//! Invariants (docs/guarantees.md):
//! * A batch's rows and the source positions after it are committed in one transaction; a replayed
//!   message's rows are no-ops, so whatever crashes, each message is stored once.
//! * Every `checkpoint_interval`, each lane's exported states go into the transaction of the batch
//!   they follow, with the position they include; a host given the partition restores its newest
//!   checkpoint and reads from its position, forming the lane's logged batches after it again, so
//!   the stages see every message exactly once in effect, across restarts and rebalances.
//! * A message that does not decode or validate goes to `dead_letters` with its reason, in the same
//!   transaction as the readings around it.
//! * A failing plugin costs only its own output for the batch: the raw readings, the other plugins
//!   and the stream go on.
//! * While PostgreSQL is unreachable the loop retries the same batch with backoff and consumes
//!   nothing more (librdkafka's prefetch queue is bounded), so memory stays bounded.
//! * Plugins change only between batches: a new version is installed, with the old one's state,
//!   at a batch boundary, so no reading is judged by neither or both.
//!
//! # Layout
//! * this module: the loop ([`Pipeline::run`]), ticks, the shutdown checkpoint;
//! * `start`: joining the group; `lanes`: a lane per owned partition, instantiated from the loaded
//!   plugins; `rebalance`: a partition given (its lane restored from its newest checkpoint, the
//!   replay planned) or taken (its lane committed and checkpointed);
//! * `batch`: one batch: validate, run the stages, start its transaction, publish it;
//! * `stages`: the plugins and the sensor catalog they share (run, restore, checkpoint, install);
//! * `reload`: the watched plugins folder, changes applied at batch boundaries.
//! * `admin`: admin actions from the API, through a channel drained at batch boundaries.

pub use self::admin::{ANSWER_WITHIN, AdminAction, AdminChannel, AdminError};
use self::lanes::Lanes;
pub use self::reload::PluginReload;
pub use self::stages::plugin_status;

mod admin;
mod batch;
mod lanes;
mod rebalance;
mod reload;
mod stages;
mod start;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use iotstream_api::{OutageCode, PluginStatus};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::http::live::Live;
use crate::http::metrics::LoopPhase;
use crate::kafka::{GroupChange, KafkaError, Next, Source, SourceHealth};
use crate::reading::ReadingLimits;
use crate::store::order::EarlierBatch;
use crate::store::{BatchRows, CheckpointReason, SourceIds, Store, StoreError};

/// How long the shutdown checkpoint may take before the host exits without it (the previous
/// checkpoint and a replay then cover the difference).
const SHUTDOWN_CHECKPOINT_LIMIT: Duration = Duration::from_secs(5);
/// How long a write in progress at shutdown may still take (retries included) before the host
/// stops without it: a healthy write takes milliseconds, so this only cuts short an outage.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);

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
    /// Whether a log that started again (stored positions past the broker's end) is stored as a
    /// new epoch of the source; without it the host refuses to start.
    pub accept_new_log: bool,
    /// The name this host owns partitions under (`partition_owners`, the API's cluster view).
    pub host_name: String,
    /// How many transactions a batch is written in, side by side, each with whole partitions
    /// (1: one transaction a batch).
    pub writers: usize,
    /// How many batches' transactions may run at once, committing in batch order (1: one at a
    /// time; see [`crate::store::order`]).
    pub batches_in_flight: usize,
}

impl PipelineConfig {
    /// Most messages in a batch: large enough that a batch's fixed costs (a transaction, a thread
    /// hop, one call per plugin) vanish per reading, small enough that a batch commits in tens of
    /// milliseconds.
    pub const BATCH_MAX: usize = 5000;
    /// How long a batch waits for more messages after its first: bounds the latency a quiet stream
    /// adds, while a busy one fills batches long before.
    pub const BATCH_LINGER: Duration = Duration::from_millis(50);
    /// How often aggregators are told the time: windows close for idleness within a second.
    pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
    /// How often the stages are checkpointed: a crash replays at most this much of the stream, and
    /// a checkpoint (about 1.2 MB with the three plugins) costs nothing measurable this often.
    pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
    /// How long a restart waits for a logged batch's messages (docs/guarantees.md).
    pub const REPLAY_PATIENCE: Duration = Duration::from_secs(60);
    /// Batches in flight: the next batch's `COPY` runs while the one before commits, which keeps
    /// the database's cores busy through the commit's WAL flush and round trips; a third would
    /// only hold more memory while the database's CPU sets the pace (docs/performance.md).
    pub const BATCHES_IN_FLIGHT: usize = 2;

    /// Most transactions a batch is written in by default, however many cores: with two batches
    /// in flight a host holds `writers × 2 + 2` connections (and its API 4 more), and PostgreSQL
    /// allows 100 by default, shared by every host of the topic.
    pub const MOST_DEFAULT_WRITERS: usize = 8;

    /// Transactions a batch is written in by default: one per core, at most
    /// [`MOST_DEFAULT_WRITERS`](Self::MOST_DEFAULT_WRITERS). A transaction is one PostgreSQL
    /// backend, which runs on one core; a batch of several partitions, written in one, keeps the
    /// database on one core however many it has (docs/performance.md).
    pub fn default_writers() -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(Self::MOST_DEFAULT_WRITERS)
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max: Self::BATCH_MAX,
            batch_linger: Self::BATCH_LINGER,
            tick_interval: Self::TICK_INTERVAL,
            checkpoint_interval: Some(Self::CHECKPOINT_INTERVAL),
            replay_patience: Self::REPLAY_PATIENCE,
            limits: ReadingLimits::default(),
            accept_new_log: false,
            host_name: default_host_name(),
            writers: Self::default_writers(),
            batches_in_flight: Self::BATCHES_IN_FLIGHT,
        }
    }
}

/// This host's default name: its hostname and process id (two processes on one machine are two
/// members of the group).
pub fn default_host_name() -> String {
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The loop's parts.
pub struct Pipeline {
    config: PipelineConfig,
    source: Source,
    source_health: Arc<SourceHealth>,
    /// The source's `kafka_sources` ids: its lineage (partition ownership) and its current epoch
    /// (the rows' key).
    ids: SourceIds,
    /// The loaded plugins and a lane per partition this host owns.
    lanes: Lanes,
    reload: Option<PluginReload>,
    /// Admin requests from the API, done at batch boundaries (`None`: another pipeline of this
    /// process took them).
    admin: Option<tokio::sync::mpsc::Receiver<admin::AdminRequest>>,
    /// The transactions of the batches before this one, oldest first: running while this batch is
    /// computed, at most [`PipelineConfig::batches_in_flight`].
    in_flight: VecDeque<InFlight>,
    /// The batch started last, which the next batch's transaction commits after.
    last_started: EarlierBatch,
    store: Store,
    live: Arc<Live>,
}

impl Pipeline {
    /// Runs until `shutdown`, then checkpoints the stages (if everything they processed is stored)
    /// and commits the group offsets.
    ///
    /// A stop short of that (the stages panicked, a transaction task failed, or a batch was not
    /// stored before the shutdown grace ended) is an error, so the process exits non-zero and a
    /// supervisor restarts it; what was not stored is replayed then.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), PipelineError> {
        let mut last_tick = Instant::now();
        let mut failure = None;
        loop {
            let waited = Instant::now();
            let next = tokio::select! {
                next = self.source.next(self.config.batch_max, self.config.batch_linger, self.config.tick_interval) => next,
                _ = shutdown.cancelled() => break,
            };
            self.live.metrics().record_loop(LoopPhase::Source, waited.elapsed());
            let broker_up = self.source_health.is_up();
            self.live.set_broker((!broker_up).then_some(OutageCode::BrokersUnreachable));
            self.live.set_consumer_lag(self.source_health.consumer_lag());
            let step = match next {
                Next::Group(GroupChange::Assigned { partitions, reply }) => {
                    match self.assign(&partitions, &shutdown).await {
                        Ok(positions) => {
                            // The fetcher may have stopped waiting (the host is stopping).
                            let _ = reply.send(positions);
                            Ok(())
                        }
                        Err(err) => Err(err),
                    }
                }
                Next::Group(GroupChange::Revoked { partitions, done }) => {
                    let revoked = self.revoke(&partitions, &shutdown).await;
                    let _ = done.send(());
                    revoked
                }
                // Nothing to compute meanwhile: let the batch in flight finish.
                Next::Batch(batch) if batch.is_empty() => self.finish_in_flight().await,
                Next::Batch(batch) => self.process(batch, &shutdown).await,
            };
            let step = match step {
                Ok(()) if last_tick.elapsed() >= self.config.tick_interval => {
                    last_tick = Instant::now();
                    self.tick(&shutdown).await
                }
                other => other,
            };
            if let Err(err) = step {
                failure = Some(err);
                break;
            }
            self.apply_plugin_changes();
            if let Err(err) = self.apply_admin_requests().await {
                failure = Some(err);
                break;
            }
        }
        if failure.is_none() {
            failure = self.finish_in_flight().await.err();
        }
        match &failure {
            None => self.checkpoint_at_shutdown().await,
            Some(err) => {
                // The batches still in flight stop here, not stored (rolled back, or committed
                // already: a replay skips what they stored), and the batches after them never start.
                for task in self.in_flight.drain(..) {
                    task.abort();
                }
                error!(error = %err, "stopping with a batch not stored: no shutdown checkpoint (the last one and a replay cover it)")
            }
        }
        info!("pipeline stopping: committing group offsets and leaving the group");
        // The group's offsets are for monitoring (PostgreSQL holds the positions): one that does
        // not commit (a rebalance in progress as hosts stop together) is no failure of the run.
        if let Err(err) = self.source.commit_now() {
            warn!(error = %err, "group offsets not committed at shutdown; lag tools catch up at the next commit");
        }
        self.source.close().await;
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits for every batch in flight to commit, oldest first ([`finish_oldest`](Self::finish_oldest)).
    async fn finish_in_flight(&mut self) -> Result<(), PipelineError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight to commit, then stores its offsets with the consumer
    /// group; an error if it was not stored (the shutdown grace ended during its retries) or its
    /// task failed.
    async fn finish_oldest(&mut self) -> Result<(), PipelineError> {
        let Some(task) = self.in_flight.pop_front() else { return Ok(()) };
        let waited = Instant::now();
        let committed = task.await;
        self.live.metrics().record_loop(LoopPhase::Database, waited.elapsed());
        let committed = match committed {
            Ok(Some(committed)) => committed,
            Ok(None) => return Err(PipelineError::NotStored),
            Err(panic) => return Err(PipelineError::CommitTask(panic.to_string())),
        };
        if committed.checkpoint {
            self.live.set_checkpoint(Utc::now());
        }
        self.source.mark_stored(&committed.positions);
        Ok(())
    }

    /// Tells aggregators the time and stores the windows they close for idleness.
    async fn tick(&mut self, shutdown: &CancellationToken) -> Result<(), PipelineError> {
        self.finish_in_flight().await?;
        let now_ms = Utc::now().timestamp_millis();
        // A tick runs plugin code, which may take up to its call deadline: on a blocking thread, as
        // a batch does, never on the async workers that serve the API and the live streams.
        let mut lanes = std::mem::take(&mut self.lanes);
        let ticked = tokio::task::spawn_blocking(move || {
            let closed: Vec<_> = lanes.owned.values_mut().flat_map(|lane| lane.stages.tick(now_ms)).collect();
            (lanes, closed)
        })
        .await;
        let aggregates = match ticked {
            Ok((lanes, closed)) => {
                self.lanes = lanes;
                closed
            }
            Err(panic) => {
                error!(error = %panic, "plugin stages panicked in a tick; stopping the pipeline");
                return Err(PipelineError::StagesPanicked);
            }
        };
        let fence = Some(self.lanes.fence_all(self.ids.lineage));
        let rows = BatchRows { source: self.ids.current, aggregates, fence, ..BatchRows::default() };
        if rows.aggregates.is_empty() {
            self.live.set_plugins(self.plugin_statuses());
            return Ok(());
        }
        let written =
            Self::commit_alone(&self.store, &self.live, &rows, shutdown).await.ok_or(PipelineError::NotStored)?;
        batch::publish(&self.live, std::slice::from_ref(&rows), written, Vec::new(), self.plugin_statuses());
        Ok(())
    }

    /// Exports every lane's stages' state with its position, within [`SHUTDOWN_CHECKPOINT_LIMIT`].
    async fn checkpoint_at_shutdown(&mut self) {
        let started = Instant::now();
        let checkpoints = self
            .lanes
            .owned
            .values_mut()
            .map(|lane| lane.stages.checkpoint(CheckpointReason::Shutdown, lane.next_offset, lane.batch_seq))
            .collect();
        let fence = Some(self.lanes.fence_all(self.ids.lineage));
        let rows = BatchRows { source: self.ids.current, checkpoints, fence, ..BatchRows::default() };
        match tokio::time::timeout(SHUTDOWN_CHECKPOINT_LIMIT, self.store.write(&rows)).await {
            Ok(Ok(_)) => info!(took = ?started.elapsed(), "stages checkpointed at shutdown"),
            Ok(Err(err)) => warn!(error = %err, "shutdown checkpoint not stored; the last one and a replay cover it"),
            Err(_) => {
                warn!(after = ?SHUTDOWN_CHECKPOINT_LIMIT, "shutdown checkpoint timed out; the last one and a replay cover it")
            }
        }
    }

    fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.lanes.statuses()
    }
}

/// A batch's transaction in progress: it commits the rows (retrying) and publishes them; `None` if
/// shutdown interrupted its retries.
type InFlight = tokio::task::JoinHandle<Option<Committed>>;

/// What a committed batch leaves for the loop.
struct Committed {
    /// The positions it stored.
    positions: std::collections::BTreeMap<i32, i64>,
    /// Whether it carried a checkpoint.
    checkpoint: bool,
}

/// Why the loop stopped short of a clean shutdown (nothing is lost: what was not stored is
/// replayed at the next start).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The plugin stages' thread panicked (a host bug: plugin faults are caught).
    #[error("the plugin stages panicked")]
    StagesPanicked,
    /// A batch's transaction task failed.
    #[error("a batch's transaction task failed: {0}")]
    CommitTask(String),
    /// A batch was not stored before the shutdown grace ended (the database was unreachable).
    #[error("a batch was not stored before the shutdown grace ended; it is replayed at the next start")]
    NotStored,
    /// Committing the group offsets at the end.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Shutdown came while a rebalance waited for the database.
    #[error("shutdown came while {0}")]
    Interrupted(&'static str),
    /// The database refused a rebalance's reads for good.
    #[error(transparent)]
    Store(StoreError),
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Reading the positions or the checkpoint.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Assigning the partitions, or reading their offset ranges.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The stored positions are past the end of the broker's log: the topic was created again or
    /// the broker's log wiped, and its offsets name other messages now.
    #[error(
        "the log of topic {topic} on {identity} started again ({rewound}): its offsets now name other messages, which \
         would be dropped as replays of the stored ones. Check the broker (a topic deleted and created again, a log \
         wiped), then start with --accept-new-log (IOTSTREAM_ACCEPT_NEW_LOG=true) to store it as a new epoch of the \
         source"
    )]
    LogRewound {
        /// The topic.
        topic: String,
        /// The source's identity (the cluster).
        identity: String,
        /// Each partition: stored next offset and the broker's end.
        rewound: String,
    },
}
