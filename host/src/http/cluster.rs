//! The hosts sharing a topic, as an operator watches them: `GET /api/partitions` answers, from
//! PostgreSQL, which host owns each partition of this host's source, since when and in which
//! generation, its stored position, the lag its owner last reported and how old that report is, and
//! the newest rebalances of every host; [`report_lag_every`] is this host's side of those reports.
//!
//! Every host answers for the whole group, so an operator may open any host's dashboard: each
//! writes its own rows (store/cluster.rs) and reads everyone's.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use iotstream_api::ClusterView;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::live::Live;
use super::{ApiError, ApiState};
use crate::store::Store;
use crate::store::cluster::REBALANCES_KEPT;

/// How often a host reports its partitions' lag: as often as the dashboard reads it (every 5 s),
/// one small update each time, and soon enough that a report older than a few intervals tells of a
/// host that stopped.
pub const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Rebalances `GET /api/partitions` lists without `?rebalances=`: a screenful.
const DEFAULT_REBALANCES: i64 = 20;

/// `?rebalances=` of `/api/partitions`: 1 to [`REBALANCES_KEPT`], default [`DEFAULT_REBALANCES`].
#[derive(Debug, Deserialize)]
pub(super) struct PartitionsQuery {
    rebalances: Option<i64>,
}

/// `GET /api/partitions`: the [`ClusterView`] of this host's source; 503 `source_not_connected`
/// until this host has joined its topic's consumer group (it is connecting to the brokers).
pub(super) async fn partitions(
    State(state): State<ApiState>,
    Query(q): Query<PartitionsQuery>,
) -> Result<Json<ClusterView>, ApiError> {
    let (lineage, host) = state.live.group_member().ok_or(ApiError::SourceNotConnected)?;
    let limit = q.rebalances.unwrap_or(DEFAULT_REBALANCES).clamp(1, REBALANCES_KEPT);
    let (partitions, rebalances) = state.store.cluster_view(lineage, limit).await?;
    Ok(Json(ClusterView { host, partitions, rebalances }))
}

/// Tells the live view that this host, named `host`, reads the source whose first id is `lineage`
/// (from then on `GET /api/partitions` answers for it), then every `every` until `shutdown`
/// reports the consumer lag of the partitions this host owns on their `partition_owners` rows. A
/// failed report is logged once, and tried again at the next interval; `every` zero reports
/// nothing. Spawned once the source is known:
///
/// ```ignore
/// tokio::spawn(report_lag_every(store.clone(), live.clone(), ids.lineage, host, LAG_REPORT_INTERVAL, shutdown.clone()));
/// ```
pub async fn report_lag_every(
    store: Store,
    live: Arc<Live>,
    lineage: i16,
    host: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    live.set_source(lineage, &host);
    if every.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // Before librdkafka's first statistics report the lag is unknown: nothing to say.
        let lags = live.consumer_lag();
        if lags.is_empty() {
            continue;
        }
        match store.report_lag(lineage, &host, &lags).await {
            Ok(_) if failing => {
                info!(source = lineage, "consumer lag reported again");
                failing = false;
            }
            Ok(_) => {}
            Err(err) if !failing => {
                warn!(source = lineage, error = %err, every = ?every, "cannot report the consumer lag; trying again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
