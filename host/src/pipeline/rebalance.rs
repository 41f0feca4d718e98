//! The consumer group's rebalances, between batches (the fetcher waits for each):
//!
//! * partitions given: this host counts their ownership up (which waits for a previous owner's
//!   transaction in flight), restores each lane from the partition's newest checkpoint, plans the
//!   replay of the lane's batches logged after it, and answers the positions to read from;
//! * partitions taken: the batch in flight commits, then each lane's stages are checkpointed (a
//!   `handoff` checkpoint) in one transaction, so the next owner restores exactly what this host
//!   processed and replays nothing; only then are the partitions given up.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Pipeline, PipelineError};
use crate::http::live::Live;
use crate::kafka::BEGINNING;
use crate::store::{BatchRows, CheckpointReason, Rebalance, StoreError};

impl Pipeline {
    /// Takes `partitions` over and gives each a lane; returns where to read each from.
    pub(super) async fn assign(
        &mut self,
        partitions: &[i32],
        shutdown: &CancellationToken,
    ) -> Result<BTreeMap<i32, i64>, PipelineError> {
        let started = Instant::now();
        let new: Vec<i32> = partitions.iter().copied().filter(|p| !self.lanes.owned.contains_key(p)).collect();
        let (store, lineage, host) = (self.store.clone(), self.ids.lineage, self.config.host_name.clone());
        let live = self.live.clone();
        let generations =
            retrying("taking the partitions over", &live, shutdown, || store.own_partitions(lineage, &host, &new))
                .await?;
        let source_id = self.ids.current;
        let stored = retrying("reading the stored positions", &live, shutdown, || store.positions(source_id)).await?;
        let mut positions = BTreeMap::new();
        for &partition in partitions {
            if let Some(lane) = self.lanes.owned.get(&partition) {
                // Still this host's (an eager rebalance hands every partition out again).
                positions.insert(partition, lane.next_offset);
                continue;
            }
            let checkpoint =
                retrying("reading the checkpoint", &live, shutdown, || store.latest_checkpoint(source_id, partition))
                    .await?;
            let logged_until =
                retrying("reading the batch log", &live, shutdown, || store.last_batch(source_id, partition)).await?;
            let mut lane = self.lanes.new_lane(partition, generations.get(&partition).copied().unwrap_or(0));
            lane.logged_until = logged_until;
            lane.batch_seq = logged_until;
            // Read after taking the partition over, which waited for the previous owner's
            // transactions: nothing at or past this position is stored.
            lane.fresh_from = stored.get(&partition).copied().unwrap_or(0);
            match checkpoint {
                Some(checkpoint) => {
                    lane.stages.restore(&checkpoint);
                    lane.next_offset = checkpoint.next_offset;
                    if let Some(after) = checkpoint.after_batch {
                        lane.batch_seq = after;
                        let logged = retrying("reading the batch log", &live, shutdown, || {
                            store.batches_after(source_id, partition, after)
                        })
                        .await?;
                        let replay = stored.get(&partition).map_or(0, |to| (to - checkpoint.next_offset.max(0)).max(0));
                        info!(
                            partition,
                            reason = checkpoint.reason.as_str(),
                            sensors = checkpoint.catalog.len(),
                            batches = logged.len(),
                            replay_messages = replay,
                            "partition given: its stages restored from their checkpoint, its logged batches formed again"
                        );
                        self.source.replay(partition, logged, self.config.replay_patience);
                    }
                }
                // Stored positions without a checkpoint: the checkpoints were deleted, or written
                // before lanes (they hold every partition's state in one): rebuild the lane's state
                // from the start of its partition (the rows it replays are stored and skipped).
                None if stored.contains_key(&partition) => warn!(
                    partition,
                    "partition given with stored positions but no checkpoint of its own: replaying it from its start to rebuild its stages' state"
                ),
                None => info!(partition, "partition given: first read, from its start"),
            }
            positions.insert(partition, lane.next_offset);
            self.lanes.owned.insert(partition, lane);
        }
        info!(
            given = ?partitions,
            owned = ?self.lanes.owned.keys().collect::<Vec<_>>(),
            took = ?started.elapsed(),
            "consumer group rebalance: partitions given"
        );
        self.live.set_plugins(self.plugin_statuses());
        self.record_rebalance(new, Vec::new(), started);
        Ok(positions.into_iter().map(|(p, next)| (p, if next >= 0 { next } else { BEGINNING })).collect())
    }

    /// Commits and checkpoints the lanes of `partitions`, then drops them.
    pub(super) async fn revoke(
        &mut self,
        partitions: &[i32],
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        let started = Instant::now();
        self.finish_in_flight().await?;
        let revoked: Vec<i32> = partitions.iter().copied().filter(|p| self.lanes.owned.contains_key(p)).collect();
        if revoked.is_empty() {
            return Ok(());
        }
        let fence = Some(self.lanes.fence(self.ids.lineage, revoked.iter().copied()));
        let checkpoints = self
            .lanes
            .owned
            .iter_mut()
            .filter(|(p, _)| revoked.contains(p))
            .map(|(_, lane)| lane.stages.checkpoint(CheckpointReason::Handoff, lane.next_offset, lane.batch_seq))
            .collect();
        let rows = BatchRows { source: self.ids.current, checkpoints, fence, ..BatchRows::default() };
        let stored = Self::commit_alone(&self.store, &self.live, &rows, shutdown).await;
        for partition in &revoked {
            self.lanes.owned.remove(partition);
        }
        self.live.set_plugins(self.plugin_statuses());
        match stored {
            Some(_) => {
                info!(
                    taken = ?revoked,
                    owned = ?self.lanes.owned.keys().collect::<Vec<_>>(),
                    took = ?started.elapsed(),
                    "consumer group rebalance: partitions taken, their stages checkpointed for their next owner"
                );
                self.record_rebalance(Vec::new(), revoked, started);
                Ok(())
            }
            // Not stored: the next owner restores the previous checkpoint and replays the rest.
            None => Err(PipelineError::NotStored),
        }
    }
}

impl Pipeline {
    /// Tells the live view (the API, `/metrics`, the dashboard) and the `rebalances` table what a
    /// rebalance moved and how long the pipeline stood still for it (since `started`). The table
    /// is a record for operators, written off the pipeline: a failure to write it is logged.
    fn record_rebalance(&self, assigned: Vec<i32>, revoked: Vec<i32>, started: Instant) {
        let host = self.config.host_name.clone();
        self.live.set_assignment(&host, self.lanes.owned.keys().copied().collect());
        if assigned.is_empty() && revoked.is_empty() {
            // A cooperative rebalance's round that moved nothing here.
            return;
        }
        let rebalance = Rebalance { at: Utc::now(), assigned, revoked, pause: Some(started.elapsed()) };
        self.live.record_rebalance(rebalance.event(&host));
        let (store, lineage) = (self.store.clone(), self.ids.lineage);
        tokio::spawn(async move {
            if let Err(err) = store.record_rebalance(lineage, &host, &rebalance).await {
                warn!(error = %err, "the rebalance was not recorded in the database");
            }
        });
    }
}

/// `attempt`, retried with backoff (0.1 s doubling to 5 s) until it succeeds or `shutdown`.
/// A database outage meanwhile is reported on the live view, as a batch's is.
async fn retrying<T, F, Fut>(
    what: &'static str,
    live: &Live,
    shutdown: &CancellationToken,
    attempt: F,
) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    let retried = attempt.retry(backoff).notify(|err, delay| {
        live.set_database(Some(err.outage()));
        warn!(error = %err, retry_in = ?delay, "{what} failed; retrying");
    });
    tokio::select! {
        done = retried => {
            if done.is_ok() {
                live.set_database(None);
            }
            done.map_err(PipelineError::Store)
        }
        _ = shutdown.cancelled() => Err(PipelineError::Interrupted(what)),
    }
}
