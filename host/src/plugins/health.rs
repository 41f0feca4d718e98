//! Whether a plugin is called: the failure streak, its exponential backoff and quarantine.
//!
//! A failed call (a trap, a refusal, malformed output) starts or extends a streak. Each failure of
//! a streak but the last puts the plugin in backoff: calls are skipped until it ends, the first
//! backoff lasting [`PluginLimits::backoff_initial`], each next one twice as long up to
//! [`PluginLimits::backoff_max`] (backon's exponential backoff, without jitter: one process, one
//! plugin, nothing to spread out). The failure that reaches [`PluginLimits::quarantine_after`]
//! quarantines it: it is not called again until released. A successful call ends the streak.

pub use iotstream_api::PluginState;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::limits::PluginLimits;

/// The time backoffs are measured in: the system's monotonic clock, or a manual clock that moves
/// only when [`advance`](Clock::advance)d, for tests.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Instant>>>);

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock standing still until advanced.
    pub fn manual() -> Self {
        Clock(Some(Arc::new(Mutex::new(Instant::now()))))
    }

    /// Moves a manual clock on by `by` (the system clock moves by itself: no effect).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.0 {
            *now.lock().unwrap_or_else(PoisonError::into_inner) += by;
        }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        match &self.0 {
            Some(now) => *now.lock().unwrap_or_else(PoisonError::into_inner),
            None => Instant::now(),
        }
    }
}

/// Why a call is not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// In backoff, for this much longer.
    Backoff(Duration),
    /// Quarantined.
    Quarantined,
}

/// The failure streak of one plugin and what it implies.
#[derive(Debug)]
pub(crate) struct Health {
    policy: ExponentialBuilder,
    /// The delays of the current streak (none while it has no failure).
    delays: Option<ExponentialBackoff>,
    failures: u32,
    retry_at: Option<Instant>,
    quarantined: bool,
    clock: Clock,
}

impl Health {
    pub(crate) fn new(limits: &PluginLimits) -> Self {
        let policy = ExponentialBuilder::new()
            .with_min_delay(limits.backoff_initial)
            .with_max_delay(limits.backoff_max)
            .with_factor(2.0)
            // The delays between the failures of a streak; the one after the last is quarantine.
            .with_max_times(limits.quarantine_after.saturating_sub(1) as usize);
        Health { policy, delays: None, failures: 0, retry_at: None, quarantined: false, clock: limits.clock.clone() }
    }

    /// Whether a call may be made now.
    pub(crate) fn admit(&self) -> Result<(), Refusal> {
        if self.quarantined {
            return Err(Refusal::Quarantined);
        }
        match self.retry_at.map(|at| at.saturating_duration_since(self.clock.now())) {
            Some(left) if !left.is_zero() => Err(Refusal::Backoff(left)),
            _ => Ok(()),
        }
    }

    /// A call failed: back off, or quarantine.
    pub(crate) fn failed(&mut self) {
        self.failures += 1;
        match self.delays.get_or_insert_with(|| self.policy.build()).next() {
            Some(delay) => self.retry_at = Some(self.clock.now() + delay),
            None => self.quarantined = true,
        }
    }

    /// A call succeeded: the streak is over.
    pub(crate) fn succeeded(&mut self) {
        (self.failures, self.delays, self.retry_at) = (0, None, None);
    }

    /// Lifts a quarantine (and any backoff), with a fresh streak.
    pub(crate) fn release(&mut self) {
        self.succeeded();
        self.quarantined = false;
    }

    /// Failures in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Running, in backoff or quarantined, now.
    pub(crate) fn state(&self) -> PluginState {
        match self.admit() {
            Ok(()) => PluginState::Running,
            Err(Refusal::Backoff(_)) => PluginState::Backoff,
            Err(Refusal::Quarantined) => PluginState::Quarantined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(clock: &Clock) -> Health {
        Health::new(&PluginLimits {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3),
            quarantine_after: 4,
            clock: clock.clone(),
            ..PluginLimits::default()
        })
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_then_quarantines() {
        let clock = Clock::manual();
        let mut health = health(&clock);
        assert_eq!((health.admit(), health.state()), (Ok(()), PluginState::Running));
        for expected in [1, 2, 3] {
            health.failed();
            assert_eq!(health.admit(), Err(Refusal::Backoff(Duration::from_secs(expected))));
            assert_eq!(health.state(), PluginState::Backoff);
            clock.advance(Duration::from_millis(expected * 1000 - 1));
            assert_eq!(health.admit(), Err(Refusal::Backoff(Duration::from_millis(1))));
            clock.advance(Duration::from_millis(1));
            assert_eq!(health.admit(), Ok(()));
        }
        health.failed();
        assert_eq!(
            (health.admit(), health.state(), health.failures()),
            (Err(Refusal::Quarantined), PluginState::Quarantined, 4)
        );
        clock.advance(Duration::from_secs(3600));
        assert_eq!(health.admit(), Err(Refusal::Quarantined), "quarantine does not wear off");
        health.release();
        assert_eq!((health.admit(), health.failures()), (Ok(()), 0));
    }

    #[test]
    fn a_success_ends_the_streak() {
        let clock = Clock::manual();
        let mut health = health(&clock);
        for _ in 0..3 {
            health.failed();
            clock.advance(Duration::from_secs(5));
        }
        health.succeeded();
        assert_eq!((health.failures(), health.state()), (0, PluginState::Running));
        // The next streak starts again from the first backoff and the full count.
        health.failed();
        assert_eq!(health.admit(), Err(Refusal::Backoff(Duration::from_secs(1))));
    }
}
