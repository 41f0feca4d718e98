//! What one stage instance may use and how a failing plugin is held back: [`PluginLimits`], and
//! [`MemoryMeter`], the store's resource limiter that enforces the memory cap and measures memory.

use std::time::Duration;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::health::Clock;

/// Memory a stage instance may grow to. 256 MiB holds an Isolation Forest per sensor type with its
/// training rows many times over, and keeps a runaway plugin from taking the host down.
pub const MEMORY_LIMIT_BYTES: usize = 256 << 20;
/// How often the engine's epoch advances; the unit of the CPU deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// CPU deadline of one call: a batch of thousands of readings with a forest retraining takes well
/// under a second, so only a stuck plugin reaches it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Calls skipped after a first failure. A second is a few batches: long enough not to pay a broken
/// plugin's deadline on every batch, short enough that a one-off fault costs little output.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// The longest backoff (each failure in a row doubles it up to here).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failures in a row that quarantine a plugin. Five failures with backoffs of 1, 2, 4 and 8 s
/// between them mean four restarts from its last good state, over at least 15 s of different
/// input, did not help: the fault is in the plugin or its state, not a passing batch, and retrying
/// would only spend up to the 5 s deadline a batch on it. An operator reloads it.
pub const QUARANTINE_AFTER: u32 = 5;

/// The limits every stage instance of a runtime runs under, and its plugins' failure policy.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory one instance may grow to (each memory of it), bytes.
    pub memory_bytes: usize,
    /// CPU time one call may take; counted in epoch ticks of [`EPOCH_TICK`], rounded up.
    pub call_deadline: Duration,
    /// Calls are skipped for this long after a first failure.
    pub backoff_initial: Duration,
    /// Each further failure in a row doubles the backoff up to this.
    pub backoff_max: Duration,
    /// Failures in a row after which the plugin is quarantined (at least 1).
    pub quarantine_after: u32,
    /// The clock backoffs are measured with.
    pub clock: Clock,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: MEMORY_LIMIT_BYTES,
            call_deadline: CALL_DEADLINE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            quarantine_after: QUARANTINE_AFTER,
            clock: Clock::system(),
        }
    }
}

impl PluginLimits {
    /// The call deadline in epoch ticks (at least one).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.call_deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
    }
}

/// The resource limiter of a stage's store: wasmtime's [`StoreLimits`] (the memory cap, a trap on
/// a refused growth), plus the linear memory the instance holds, and whether a growth was refused,
/// so that the trap that follows is reported as the memory cap it is.
pub(crate) struct MemoryMeter {
    limits: StoreLimits,
    /// Bytes of every linear memory of the instance (memories only grow).
    bytes: usize,
    /// The last growth allowed, taken back if wasmtime then fails to grow.
    last_growth: usize,
    /// The size a refused growth asked for.
    refused: Option<usize>,
}

impl MemoryMeter {
    /// A meter with a cap of `memory_bytes` per memory; a growth past it traps.
    pub(crate) fn new(memory_bytes: usize) -> Self {
        let limits = StoreLimitsBuilder::new().memory_size(memory_bytes).trap_on_grow_failure(true).build();
        MemoryMeter { limits, bytes: 0, last_growth: 0, refused: None }
    }

    /// Linear memory held, bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The size a refused growth asked for, since the last call to this; clears it.
    pub(crate) fn take_refused(&mut self) -> Option<usize> {
        self.refused.take()
    }
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if matches!(allowed, Ok(true)) {
            self.last_growth = desired.saturating_sub(current);
            self.bytes += self.last_growth;
        } else {
            self.refused = Some(desired);
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.bytes -= std::mem::take(&mut self.last_growth);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_counts_allowed_growth_and_remembers_a_refusal() {
        let mut meter = MemoryMeter::new(1 << 20);
        assert!(meter.memory_growing(0, 64 << 10, None).expect("allowed"));
        assert!(meter.memory_growing(64 << 10, 128 << 10, None).expect("allowed"));
        assert_eq!((meter.bytes(), meter.take_refused()), (128 << 10, None));
        // wasmtime could not grow after all: the growth is taken back (and, capped, it traps).
        assert!(meter.memory_growing(128 << 10, 192 << 10, None).expect("allowed"));
        assert!(meter.memory_grow_failed(wasmtime::Error::msg("no memory")).is_err());
        assert_eq!(meter.bytes(), 128 << 10);
        assert!(meter.memory_growing(128 << 10, 2 << 20, None).is_err(), "past the cap traps");
        assert_eq!((meter.bytes(), meter.take_refused(), meter.take_refused()), (128 << 10, Some(2 << 20), None));
    }

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        let ticks = |ms| PluginLimits { call_deadline: Duration::from_millis(ms), ..PluginLimits::default() };
        assert_eq!(PluginLimits::default().deadline_ticks(), 500);
        assert_eq!((ticks(0).deadline_ticks(), ticks(15).deadline_ticks(), ticks(20).deadline_ticks()), (1, 2, 2));
    }
}
