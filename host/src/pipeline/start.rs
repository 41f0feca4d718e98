//! Starting the loop: the source owned (one host per source), its stored positions checked against
//! the broker's log, the stages restored from the newest checkpoint, the source pointed at the
//! positions that state includes, and the batches committed after it planned to be formed again
//! (exact replay, docs/guarantees.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::stages::Stages;
use super::{Pipeline, PipelineConfig, PluginReload, StartError};
use crate::http::live::Live;
use crate::kafka::Source;
use crate::kafka::log_check::LogCheck;
use crate::plugins::Plugin;
use crate::store::{Ownership, SourceLock, Store};

/// How often a host waiting for a source tries its lock again: it takes over within a second of
/// the owner's exit, and a try is one trivial query.
const OWNER_POLL: Duration = Duration::from_secs(1);

impl Pipeline {
    /// Assembles a pipeline (`plugins` may be of both kinds, in any order): waits until this host
    /// owns the source (another host may; `None` if `shutdown` came first), checks that the stored
    /// positions still mean the same messages, restores the stages from the source's newest
    /// checkpoint, and points the source at the positions the restored state includes (without a
    /// checkpoint: at the start of every partition, with fresh stages). With `reload`, plugins
    /// change while it runs as their folder does.
    pub async fn start(
        config: PipelineConfig,
        mut source: Source,
        plugins: Vec<Plugin>,
        reload: Option<PluginReload>,
        store: Store,
        live: Arc<Live>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, StartError> {
        let Some(owner) = own_source(&store, &source, &live, shutdown).await? else { return Ok(None) };
        // Every batch transaction checks no other host took the source over since.
        let store = store.fenced(owner.fence());
        let mut stages = Stages::new(plugins);
        let source_id = check_log(&config, &store, &source).await?;
        // The batches to form again: those committed after the checkpoint restored (none without a
        // checkpoint, or with one older than the batch log).
        let (positions, after_batch) = restore(&store, &source, source_id, &mut stages).await?;
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
            admin: live.admin().take_receiver(),
            in_flight: None,
            store,
            live,
            _owner: owner,
        };
        pipeline.live.set_plugins(pipeline.plugin_statuses());
        Ok(Some(pipeline))
    }
}

/// Waits until this host owns `source` (docs/guarantees.md: one host per source), saying on the
/// live view and in the log which session holds it meanwhile; `None` if `shutdown` came first.
async fn own_source(
    store: &Store,
    source: &Source,
    live: &Live,
    shutdown: &CancellationToken,
) -> Result<Option<SourceLock>, StartError> {
    let (identity, topic) = (source.identity(), source.topic());
    let ids = store.source_ids(identity, topic).await?;
    let mut waiting = false;
    loop {
        match store.try_own_source(ids.lineage).await? {
            Ownership::Owned(lock) => {
                if waiting {
                    info!(source = identity, topic, "the other host let the source go: this host owns it now");
                    live.set_standby(None);
                }
                return Ok(Some(lock));
            }
            Ownership::HeldBy(holder) if !waiting => {
                let holder = holder.map_or_else(|| "a session that just let go".to_owned(), |h| h.to_string());
                warn!(
                    source = identity,
                    topic,
                    %holder,
                    "another host owns this source (its stages' state, positions and batch log): waiting for it to stop"
                );
                live.set_standby(Some(format!(
                    "waiting for topic {topic} of {identity}: another host owns it ({holder})"
                )));
                waiting = true;
            }
            Ownership::HeldBy(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(OWNER_POLL) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// The source id to read under: the current epoch's, once its stored positions are checked
/// against the broker's offset ranges ([`LogCheck`]). A log that started again is refused unless
/// `config.accept_new_log`, which registers a new epoch (a new id: old rows keep their keys, the
/// new log's messages get theirs); messages retention deleted unread are warned about with their
/// count.
async fn check_log(config: &PipelineConfig, store: &Store, source: &Source) -> Result<i16, StartError> {
    let (identity, topic) = (source.identity(), source.topic());
    let ids = store.source_ids(identity, topic).await?;
    let stored = store.positions(ids.current).await?;
    if stored.is_empty() {
        return Ok(ids.current);
    }
    let check = LogCheck::compare(&stored, &source.watermarks().await?);
    for expired in &check.expired {
        warn!(
            topic,
            partition = expired.partition,
            stored_next_offset = expired.stored,
            oldest_offset = expired.low,
            lost = expired.lost(),
            "retention deleted messages this host never stored: the broker lost them; reading on from its oldest"
        );
    }
    if check.rewound.is_empty() {
        return Ok(ids.current);
    }
    let rewound = check.describe_rewound();
    if !config.accept_new_log {
        return Err(StartError::LogRewound { topic: topic.to_owned(), identity: identity.to_owned(), rewound });
    }
    let ids = store.new_epoch(identity, topic, &rewound).await?;
    warn!(
        topic,
        epoch = ids.epoch,
        source_id = ids.current,
        %rewound,
        "the log started again: storing it as a new epoch of the source, from its start, with fresh stages"
    );
    Ok(ids.current)
}

/// Restores `stages` from the newest checkpoint of `source_id`; returns the positions the restored
/// state includes (empty: from the start of every partition) and the batch the checkpoint follows.
async fn restore(
    store: &Store,
    source: &Source,
    source_id: i16,
    stages: &mut Stages,
) -> Result<(BTreeMap<i32, i64>, Option<i64>), StartError> {
    let stored = store.positions(source_id).await?;
    Ok(match store.latest_checkpoint(source_id).await? {
        Some(checkpoint) => {
            stages.restore(&checkpoint);
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
            (checkpoint.positions, checkpoint.after_batch)
        }
        // Every process checkpoints with its first batch, so stored positions without a
        // checkpoint mean the checkpoints were deleted: rebuild the stages' state from the
        // start of the log (the rows it replays are already stored and skipped).
        None if !stored.is_empty() => {
            warn!(
                source = source.identity(),
                "stored positions but no checkpoint: replaying the topic from its start to rebuild the stages' state"
            );
            (BTreeMap::new(), None)
        }
        None => {
            info!(source = source.identity(), "first start on this source: reading every partition from its start");
            (BTreeMap::new(), None)
        }
    })
}
