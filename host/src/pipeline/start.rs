//! Starting the loop: the source's identity, the stages restored from the newest checkpoint, the
//! source pointed at the positions that state includes, and the batches committed after it
//! planned to be formed again (exact replay, docs/guarantees.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::stages::Stages;
use super::{Pipeline, PipelineConfig, PluginReload, StartError};
use crate::http::live::Live;
use crate::kafka::Source;
use crate::plugins::Plugin;
use crate::store::Store;

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
            in_flight: None,
            store,
            live,
        };
        pipeline.live.set_plugins(pipeline.plugin_statuses());
        Ok(pipeline)
    }
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
