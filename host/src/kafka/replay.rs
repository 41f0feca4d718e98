//! Forming a lane's committed batches again (docs/guarantees.md, "exact replay"): when a host is
//! given a partition, the lane's batches logged after the checkpoint it restored are handed out
//! again, message for message, before the lane reads on. A batch whose messages do not come (no
//! progress for the patience while the brokers are up), or a lane so far behind that too much is
//! held, gives that lane's replay up: it reads on, and the pipeline forgets the logged batches it
//! did not form.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use tracing::warn;

use super::batches::{Extent, Pending};
use super::{BATCH_MAX_BYTES, RawMessage, Source};

/// Messages a replay may hold while it waits for the rest of a committed batch before it gives up
/// forming batches again.
const REPLAY_BUFFER_LIMIT: usize = 200_000;
/// Bytes of keys and payloads a replay may hold likewise (messages may be up to 16 KiB).
const REPLAY_BUFFER_BYTES: usize = 128 << 20;

/// One lane's batches to form again.
#[derive(Debug)]
struct LaneReplay {
    /// Its committed batches (numbers and the partition's next offset after each), oldest first.
    batches: VecDeque<(i64, i64)>,
    /// Since when it waits, with the brokers up, for a message of the batch it forms.
    waiting_since: Option<Instant>,
}

/// What is left to form again, lane by lane.
#[derive(Debug, Default)]
pub(super) struct Replay {
    lanes: BTreeMap<i32, LaneReplay>,
    /// How long a lane waits for a batch's messages before it gives up.
    patience: Duration,
    /// The lanes that gave their replay up since [`Source::take_replay_given_up`] last asked.
    given_up: BTreeSet<i32>,
    /// The logged number of each lane's batch the last batch formed again, until taken.
    replayed: BTreeMap<i32, i64>,
}

impl Replay {
    /// Whether every message held belongs to a lane that forms a logged batch again and cannot
    /// yet (lingering would not make a fuller batch).
    pub(super) fn waits_for_all(&self, pending: &Pending) -> bool {
        !self.lanes.is_empty() && self.lanes.keys().all(|p| !pending.covers(&next_extent(*p, &self.lanes[p])))
    }

    /// A message of `partition` at `offset` arrived: progress for a lane waiting for it.
    pub(super) fn received(&mut self, partition: i32, offset: i64) {
        if let Some(lane) = self.lanes.get_mut(&partition)
            && lane.batches.front().is_some_and(|&(_, next)| offset < next)
        {
            lane.waiting_since = None;
        }
    }

    /// Forgets the lanes of `partitions` (taken from this host).
    pub(super) fn forget(&mut self, partitions: &[i32]) {
        for partition in partitions {
            self.lanes.remove(partition);
            self.given_up.remove(partition);
            self.replayed.remove(partition);
        }
    }
}

/// The extent of a lane's next batch to form again.
fn next_extent(partition: i32, lane: &LaneReplay) -> Extent {
    lane.batches.front().map(|&(_, next)| [(partition, next)].into()).unwrap_or_default()
}

impl Source {
    /// Has the lane of `partition` form `batches` again (numbers and the partition's next offset
    /// after each, oldest first) before it reads on. When the batch waited for makes no progress
    /// for `patience` while the brokers are up, the lane gives its replay up.
    pub fn replay(&mut self, partition: i32, batches: Vec<(i64, i64)>, patience: Duration) {
        self.replay.patience = patience;
        if batches.is_empty() {
            self.replay.lanes.remove(&partition);
        } else {
            self.replay.lanes.insert(partition, LaneReplay { batches: batches.into(), waiting_since: None });
        }
    }

    /// The lanes whose replay was given up since the last call: their batches after that did not
    /// form the logged ones again.
    pub fn take_replay_given_up(&mut self) -> BTreeSet<i32> {
        std::mem::take(&mut self.replay.given_up)
    }

    /// The logged number of each lane's batch the last [`Source::next`] formed again (a lane not
    /// named read on: the pipeline numbers its batch past its log).
    pub fn take_replayed(&mut self) -> BTreeMap<i32, i64> {
        std::mem::take(&mut self.replay.replayed)
    }

    /// The batch to hand out: each replaying lane's next logged batch once all its messages
    /// arrived, and up to `max` messages of the other lanes. A replaying lane without progress for
    /// the patience (or holding too much) gives its replay up.
    pub(super) fn form_batch(&mut self, max: usize) -> Vec<RawMessage> {
        let mut batch = Vec::new();
        let mut held: BTreeSet<i32> = BTreeSet::new();
        let held_too_much = self.pending.len() > REPLAY_BUFFER_LIMIT || self.pending.bytes() > REPLAY_BUFFER_BYTES;
        let brokers_up = self.health.is_up();
        let partitions: Vec<i32> = self.replay.lanes.keys().copied().collect();
        for partition in partitions {
            let Some(lane) = self.replay.lanes.get_mut(&partition) else { continue };
            // Logged batches whose every message retention deleted form nothing: skip them.
            while let Some(&(seq, next)) = lane.batches.front() {
                let extent: Extent = [(partition, next)].into();
                if !self.pending.covers(&extent) {
                    break;
                }
                lane.batches.pop_front();
                lane.waiting_since = None;
                let formed = self.pending.take_extent(&extent);
                if !formed.is_empty() {
                    self.replay.replayed.insert(partition, seq);
                    batch.extend(formed);
                    break;
                }
            }
            held.insert(partition);
            if lane.batches.is_empty() {
                self.replay.lanes.remove(&partition);
                continue;
            }
            if !brokers_up {
                // Waiting out a broker outage is not waiting for messages that do not exist.
                lane.waiting_since = None;
                continue;
            }
            let waiting_since = *lane.waiting_since.get_or_insert_with(Instant::now);
            if held_too_much || waiting_since.elapsed() > self.replay.patience {
                warn!(
                    topic = %self.topic,
                    partition,
                    batches_left = lane.batches.len(),
                    held = self.pending.len(),
                    "could not form the partition's committed batches again (their messages did not arrive); \
                     reading on: its stages may differ from an uncrashed run"
                );
                self.replay.lanes.remove(&partition);
                self.replay.given_up.insert(partition);
            }
        }
        let room = max.saturating_sub(batch.len());
        if room > 0 {
            // A lane that formed a logged batch takes nothing more in this one: its part must be
            // exactly the logged batch.
            batch.extend(self.pending.take_bounded_except(room, BATCH_MAX_BYTES, &held));
        }
        batch
    }
}
