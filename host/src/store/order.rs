//! Batches written side by side, committed in order.
//!
//! A batch's transaction may start while the batch before it is still being written: its `COPY`
//! then runs while the other commits, whose WAL flush and round trips would otherwise leave the
//! database's cores idle between two batches (docs/performance.md). But a batch is durable only
//! after every batch before it, so a crash or a failed write never leaves a gap behind a stored
//! position: a transaction inserts its rows, then waits for the batch before it to be stored, and
//! only then takes what batches share (the fence, the positions, the batch log, the totals, the
//! models) and commits.
//!
//! Waiting inside a transaction must never close a cycle the database cannot see (it would see
//! the rows' locks, not the host's wait). So a transaction holds only its own new rows while it
//! waits, and it gives way as soon as the batch before it fails an attempt: it rolls back, and
//! its writer waits for that batch's outcome before beginning again. What a retried write may
//! need (a day partition made, a connection from the pool) is then never held by the batch after
//! it.

use tokio::sync::watch;

/// How far a batch's write has got, as the batch after it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Its first attempt is under way.
    Writing,
    /// An attempt failed and it is being written again.
    Retrying,
    /// Stored, and published to the live view.
    Stored,
    /// Given up on (the host stops); the batches after it must not be stored either.
    NotStored,
}

/// The writing side: the batch's commit task reports its progress here. Dropped before
/// [`stored`](Self::stored), the batch counts as not stored.
#[derive(Debug)]
pub struct BatchProgress(watch::Sender<Progress>);

/// The batch after's view of the batch before it: a batch's writer holds one while the batch
/// before it may still be in flight.
#[derive(Debug, Clone)]
pub struct EarlierBatch(watch::Receiver<Progress>);

/// Where a batch's write stands among the batches in flight: the batch before it, which it commits
/// after, and its own progress, which the batch after it waits on.
#[derive(Debug, Clone, Copy)]
pub struct Order<'a> {
    /// This batch's progress: marked [`retrying`](BatchProgress::retrying) whenever its
    /// transaction rolls back to begin again, so the batch after it gives way too.
    pub progress: &'a BatchProgress,
    /// The batch before it.
    pub after: &'a EarlierBatch,
}

/// What the earlier batch has become, once it is no longer on its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Stored: the later batch may commit.
    Stored,
    /// Being written again: the later batch must give way (roll back) and wait for
    /// [`EarlierBatch::outcome`].
    Retrying,
    /// Never to be stored: neither is the later batch.
    NotStored,
}

impl BatchProgress {
    /// A batch about to be written, and the handle the batch after it waits on.
    pub fn start() -> (BatchProgress, EarlierBatch) {
        let (sender, receiver) = watch::channel(Progress::Writing);
        (BatchProgress(sender), EarlierBatch(receiver))
    }

    /// An attempt failed; the batch is being written again.
    pub fn retrying(&self) {
        self.0.send_if_modified(|p| {
            let was_writing = *p == Progress::Writing;
            if was_writing {
                *p = Progress::Retrying;
            }
            was_writing
        });
    }

    /// Stored: the batch after it may commit.
    pub fn stored(self) {
        self.0.send_replace(Progress::Stored);
    }

    /// Not stored, for good (as when dropped).
    pub fn not_stored(self) {
        self.0.send_replace(Progress::NotStored);
    }
}

impl Drop for BatchProgress {
    fn drop(&mut self) {
        self.0.send_if_modified(|p| {
            let open = matches!(p, Progress::Writing | Progress::Retrying);
            if open {
                *p = Progress::NotStored;
            }
            open
        });
    }
}

impl EarlierBatch {
    /// A batch with nothing before it in flight (tests, tools): stored already.
    pub fn stored() -> EarlierBatch {
        let (progress, earlier) = BatchProgress::start();
        progress.stored();
        earlier
    }

    /// Whether the earlier batch has failed an attempt (or given up): a write that has not begun
    /// yet waits for [`outcome`](Self::outcome) instead of writing beside it.
    pub(super) fn is_retrying(&self) -> bool {
        matches!(*self.0.borrow(), Progress::Retrying | Progress::NotStored)
    }

    /// Waits until the earlier batch is past its first attempt.
    pub(super) async fn settled(&self) -> Settled {
        let mut receiver = self.0.clone();
        match receiver.wait_for(|p| *p != Progress::Writing).await.map(|p| *p) {
            Ok(Progress::Stored) => Settled::Stored,
            Ok(Progress::Retrying) => Settled::Retrying,
            Ok(Progress::Writing | Progress::NotStored) | Err(_) => Settled::NotStored,
        }
    }

    /// Waits until the earlier batch is stored (`true`) or given up on (`false`).
    pub(super) async fn outcome(&self) -> bool {
        let mut receiver = self.0.clone();
        let done = receiver.wait_for(|p| matches!(p, Progress::Stored | Progress::NotStored)).await.map(|p| *p);
        matches!(done, Ok(Progress::Stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_batch_after_sees_each_step_of_the_batch_before() {
        let (progress, earlier) = BatchProgress::start();
        assert!(!earlier.is_retrying());
        let settled = tokio::spawn({
            let earlier = earlier.clone();
            async move { earlier.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished(), "settled while the first attempt is under way");
        progress.retrying();
        assert_eq!(settled.await.expect("task"), Settled::Retrying);
        assert!(earlier.is_retrying());
        // A second failed attempt changes nothing; the outcome waits for the end.
        progress.retrying();
        let outcome = tokio::spawn({
            let earlier = earlier.clone();
            async move { earlier.outcome().await }
        });
        tokio::task::yield_now().await;
        assert!(!outcome.is_finished(), "an outcome while the batch is still being written");
        progress.stored();
        assert!(outcome.await.expect("task"));
        assert_eq!(earlier.settled().await, Settled::Stored);
        assert!(!earlier.is_retrying());
    }

    #[tokio::test]
    async fn a_batch_given_up_on_or_dropped_is_not_stored() {
        let (progress, earlier) = BatchProgress::start();
        progress.not_stored();
        assert_eq!(earlier.settled().await, Settled::NotStored);
        assert!(!earlier.outcome().await);

        let (progress, earlier) = BatchProgress::start();
        drop(progress);
        assert_eq!(earlier.settled().await, Settled::NotStored);
        assert!(!earlier.outcome().await);
        assert!(earlier.is_retrying(), "a write not begun must not start beside a batch given up on");

        let (progress, earlier) = BatchProgress::start();
        progress.retrying();
        drop(progress);
        assert!(!earlier.outcome().await, "dropped while retrying");

        assert!(EarlierBatch::stored().outcome().await);
    }
}
