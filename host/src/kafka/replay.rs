//! Forming the committed batches again after a restart (docs/guarantees.md, "exact replay"): the
//! batches logged after the restored checkpoint are handed out again, message for message and in
//! the same canonical order, before the source reads on. A batch whose messages do not come (no
//! progress for the patience while the brokers are up), or a partition so far behind that too much
//! is held, gives the replay up: the source reads on in arrival order and the pipeline forgets the
//! logged batches it did not form.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::batches::Extent;
use super::{RawMessage, Source};

/// Messages a replay may hold while it waits for the rest of a committed batch (a partition far
/// behind the others) before it gives up forming batches again.
const REPLAY_BUFFER_LIMIT: usize = 200_000;
/// Bytes of keys and payloads a replay may hold likewise (messages may be up to 16 KiB).
const REPLAY_BUFFER_BYTES: usize = 128 << 20;
/// What is left to form again, and how the waiting goes.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Committed batches to form again before reading on (their numbers and extents), oldest first.
    batches: VecDeque<(i64, Extent)>,
    /// The number of the logged batch the last call formed again, until taken.
    replayed: Option<i64>,
    /// Since when the replay waits, with the brokers up, for any message.
    waiting_since: Option<Instant>,
    /// How long it waits for them before it gives up.
    patience: Duration,
    /// Whether a replay was given up since [`Source::take_replay_given_up`] last asked.
    given_up: bool,
}

impl Replay {
    /// Whether batches are still to be formed again.
    pub(super) fn is_pending(&self) -> bool {
        !self.batches.is_empty()
    }
}

impl Source {
    /// Has the source form `extents` again (oldest first) before it reads on: the batches committed
    /// after the checkpoint the pipeline restored, message for message (see [`super::batches`]).
    /// When the batch waited for makes no progress (no message of it arrives) for `patience` while
    /// the brokers are up, it gives the replay up.
    pub fn replay(&mut self, extents: Vec<(i64, Extent)>, patience: Duration) {
        self.replay.batches = extents.into();
        self.replay.patience = patience;
        self.replay.waiting_since = None;
    }

    /// Whether the replay was given up since the last call: the batches after that did not form
    /// the logged ones again.
    pub fn take_replay_given_up(&mut self) -> bool {
        std::mem::take(&mut self.replay.given_up)
    }

    /// The logged number of the batch the last [`Source::next_batch`] formed again (`None` for a
    /// batch read on, which the pipeline numbers past the log).
    pub fn take_replayed(&mut self) -> Option<i64> {
        self.replay.replayed.take()
    }

    /// The next batch to form again, once every message of its extent arrived; `None` when none
    /// arrived within `idle` (or an error came), or when the replay was given up.
    pub(super) async fn next_replayed_batch(&mut self, idle: Duration) -> Option<Vec<RawMessage>> {
        let consumer = Arc::clone(&self.consumer);
        loop {
            if !self.health.is_up() {
                // Waiting out a broker outage is not waiting for messages that do not exist.
                self.replay.waiting_since = None;
            }
            let waiting_since = *self.replay.waiting_since.get_or_insert_with(Instant::now);
            let (seq, extent) = self.replay.batches.front()?;
            if self.pending.covers(extent) {
                let (seq, batch) = (*seq, self.pending.take_extent(extent));
                self.replay.batches.pop_front();
                self.replay.waiting_since = None;
                if batch.is_empty() {
                    // Every message of it was deleted by retention.
                    continue;
                }
                self.replay.replayed = Some(seq);
                return Some(batch);
            }
            let held_too_much = self.pending.len() > REPLAY_BUFFER_LIMIT || self.pending.bytes() > REPLAY_BUFFER_BYTES;
            if held_too_much || waiting_since.elapsed() > self.replay.patience {
                warn!(
                    topic = %self.topic,
                    batches_left = self.replay.batches.len(),
                    held = self.pending.len(),
                    "could not form the committed batches again (their messages did not arrive); reading on in \
                     arrival order: stages that span partitions may differ from an uncrashed run"
                );
                self.replay.batches.clear();
                self.replay.given_up = true;
                return None;
            }
            let received = tokio::time::timeout(idle, consumer.recv()).await.ok()?;
            let (partition, offset) = self.receive(received).await?;
            let awaited = self.replay.batches.front().and_then(|(_, extent)| extent.get(&partition));
            if awaited.is_some_and(|&next| offset < next) {
                // Progress on the batch waited for: patience counts from here.
                self.replay.waiting_since = None;
            }
        }
    }
}
