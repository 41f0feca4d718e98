//! Starting the loop: the stored positions checked against the broker's log (a log that started
//! again is refused, or opens a new epoch), the plugins loaded as the prototype of every lane, and
//! the consumer group joined. Which partitions this host reads, and from where, the group's first
//! assignment says (see `rebalance`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lanes::Lanes;
use super::stages::Stages;
use super::{Pipeline, PipelineConfig, PluginReload, StartError};
use crate::http::live::Live;
use crate::kafka::Source;
use crate::kafka::log_check::LogCheck;
use crate::plugins::Plugin;
use crate::store::order::EarlierBatch;
use crate::store::{SourceIds, Store};

impl Pipeline {
    /// Assembles a pipeline (`plugins` may be of both kinds, in any order): checks that the stored
    /// positions still mean the same messages and joins the consumer group; `None` if `shutdown`
    /// came first. With `reload`, plugins change while it runs as their folder does.
    pub async fn start(
        config: PipelineConfig,
        mut source: Source,
        plugins: Vec<Plugin>,
        reload: Option<PluginReload>,
        store: Store,
        live: Arc<Live>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, StartError> {
        let ids = tokio::select! {
            ids = check_log(&config, &store, &source) => ids?,
            _ = shutdown.cancelled() => return Ok(None),
        };
        source.subscribe()?;
        info!(
            topic = source.topic(),
            partitions = source.partitions().len(),
            host = %config.host_name,
            "joined the consumer group: waiting for its assignment"
        );
        let source_health = source.health();
        let lanes = Lanes { prototype: Stages::new(plugins), owned: Default::default() };
        let pipeline = Pipeline {
            config,
            source,
            source_health,
            ids,
            lanes,
            reload,
            admin: live.admin().take_receiver(),
            in_flight: Default::default(),
            last_started: EarlierBatch::stored(),
            store,
            live,
        };
        pipeline.live.set_plugins(pipeline.plugin_statuses());
        Ok(Some(pipeline))
    }
}

/// The source ids to read under (the current epoch's), once its stored positions are checked
/// against the broker's offset ranges ([`LogCheck`]). A log that started again is refused unless
/// `config.accept_new_log`, which registers a new epoch (a new id: old rows keep their keys, the
/// new log's messages get theirs); messages retention deleted unread are warned about with their
/// count.
async fn check_log(config: &PipelineConfig, store: &Store, source: &Source) -> Result<SourceIds, StartError> {
    let (identity, topic) = (source.identity(), source.topic());
    let ids = store.source_ids(identity, topic).await?;
    let stored = store.positions(ids.current).await?;
    if stored.is_empty() {
        return Ok(ids);
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
        return Ok(ids);
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
    Ok(ids)
}
