//! What one stage instance may use and how a failing plugin is held back: [`PluginLimits`] (with
//! the [`PluginCeilings`] no manifest may pass), and [`MemoryMeter`], the store's resource limiter
//! that enforces the memory cap over the whole instance, bounds its tables and counts, and
//! measures its memory.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::health::Clock;

/// Memory a stage instance may grow to, all its linear memories together. 256 MiB holds an
/// Isolation Forest per sensor type with its training rows many times over, and keeps a runaway
/// plugin from taking the host down.
pub const MEMORY_LIMIT_BYTES: usize = 256 << 20;
/// Table elements an instance may hold, all its tables together. A Rust plugin's function table
/// has a few thousand entries and CPython's tens of thousands; a million (8 MiB of host memory)
/// leaves room for both and still stops a plugin growing tables without end.
pub const TABLE_ELEMENTS_MAX: usize = 1 << 20;
/// Core instances one stage instance may create. A Rust component has a handful (its module and
/// wit-component's shims); one built by componentize-py a few dozen (CPython and its libraries).
pub const INSTANCES_MAX: usize = 100;
/// Tables one stage instance may create (each core module usually has at most one or two).
pub const TABLES_MAX: usize = 100;
/// Linear memories one stage instance may create. Components share one memory between their core
/// modules; a few more leave room for toolchains that do not, and the cap counts them all.
pub const MEMORIES_MAX: usize = 8;
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

/// How long an instance runs before its linear memory is taken as settled (at its first checkpoint
/// after): what a checkpoint later compares its memory with, to replace an instance that kept
/// growing (docs/plugins.md, "Memory"). Ten minutes see a stage through all its kinds of work at
/// least once (the Isolation Forest refits each sensor type's model every 5 minutes), so the
/// memory it settles at holds its own working peaks, and what grows after is a leak or
/// fragmentation.
pub const MEMORY_SETTLE: Duration = Duration::from_secs(600);
/// The most readings one `detect` or `aggregate` call carries: a larger batch is passed in calls of
/// at most this many, in order. What a call needs in the stage's linear memory (the batch's columns,
/// the answer, the stage's scratch) is then bounded by this rather than by the batch. A live lane's
/// batch is tens of readings, but one catching up on a backlog takes whole fetches, thousands of
/// readings, and a linear memory never shrinks: without a bound every stage would keep room for the
/// largest batch it ever saw, and its memory would follow the consumer's lag. In calls of 256 the
/// built-in stages' lanes falling behind take what live lanes take (in calls of 512 the z-score's
/// take a page more each). The calls cost the cheap detectors nothing measurable and the windows
/// about 0.06 µs a reading (their end-of-call emission), under half a percent of the host's CPU
/// per reading (docs/performance.md).
pub const READINGS_PER_CALL: NonZeroUsize = NonZeroUsize::new(256).expect("256 is not zero");

/// The most a manifest may raise a plugin's limits to, and the environment it may be granted. The
/// host's operator sets them (`iotstream run --plugin-max-memory-mib` and the rest); a manifest is
/// text beside a plugin file, so by default it may lower its limits but not raise them, and be
/// granted no environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCeilings {
    /// The largest memory cap a manifest may ask for, bytes.
    pub memory_bytes: usize,
    /// The longest call deadline a manifest may ask for.
    pub call_deadline: Duration,
    /// The environment variables a manifest may grant (none by default: the host's environment
    /// holds its database URL and credentials).
    pub env_allowed: Vec<String>,
}

impl Default for PluginCeilings {
    fn default() -> Self {
        PluginCeilings { memory_bytes: MEMORY_LIMIT_BYTES, call_deadline: CALL_DEADLINE, env_allowed: Vec::new() }
    }
}

/// The limits every stage instance of a runtime runs under, and its plugins' failure policy.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory one instance may grow to (all its memories together), bytes.
    pub memory_bytes: usize,
    /// CPU time one call may take; counted in epoch ticks of [`EPOCH_TICK`], rounded up.
    pub call_deadline: Duration,
    /// Calls are skipped for this long after a first failure.
    pub backoff_initial: Duration,
    /// Each further failure in a row doubles the backoff up to this.
    pub backoff_max: Duration,
    /// Failures in a row after which the plugin is quarantined (at least 1).
    pub quarantine_after: u32,
    /// How long an instance runs before its memory is taken as settled ([`MEMORY_SETTLE`]).
    pub memory_settle: Duration,
    /// The most readings one call carries ([`READINGS_PER_CALL`]).
    pub readings_per_call: NonZeroUsize,
    /// The clock backoffs and the settling of an instance's memory are measured with.
    pub clock: Clock,
    /// What a manifest may raise these limits to, and grant.
    pub ceilings: PluginCeilings,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: MEMORY_LIMIT_BYTES,
            call_deadline: CALL_DEADLINE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            quarantine_after: QUARANTINE_AFTER,
            memory_settle: MEMORY_SETTLE,
            readings_per_call: READINGS_PER_CALL,
            clock: Clock::system(),
            ceilings: PluginCeilings::default(),
        }
    }
}

impl PluginLimits {
    /// The call deadline in epoch ticks (at least one).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.call_deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
    }
}

/// The resource limiter of a stage's store: the memory cap over all the instance's linear memories
/// together (a refused growth traps, and is remembered so that the trap is reported as the memory
/// cap it is), the bound on table elements, the counts of instances, tables and memories, and the
/// linear memory the instance holds.
pub(crate) struct MemoryMeter {
    /// The cap, bytes, over every memory of the instance.
    cap: usize,
    /// Bytes of every linear memory of the instance (memories only grow).
    bytes: usize,
    /// Elements of every table of the instance.
    table_elements: usize,
    /// The last growth allowed, taken back if wasmtime then fails to grow.
    last_growth: usize,
    /// The last table growth allowed, taken back likewise.
    last_table_growth: usize,
    /// The total a refused growth asked for.
    refused: Option<usize>,
}

impl MemoryMeter {
    /// A meter with a cap of `memory_bytes` over the instance's memories; a growth past it traps.
    pub(crate) fn new(memory_bytes: usize) -> Self {
        MemoryMeter {
            cap: memory_bytes,
            bytes: 0,
            table_elements: 0,
            last_growth: 0,
            last_table_growth: 0,
            refused: None,
        }
    }

    /// Linear memory held, bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The total a refused growth asked for, since the last call to this; clears it.
    pub(crate) fn take_refused(&mut self) -> Option<usize> {
        self.refused.take()
    }
}

impl wasmtime::ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.bytes.saturating_add(growth);
        if total > self.cap || maximum.is_some_and(|max| desired > max) {
            self.refused = Some(total);
            return Err(wasmtime::Error::msg(format!(
                "memory growth to {total} bytes in all refused: past the cap of {} bytes",
                self.cap
            )));
        }
        self.last_growth = growth;
        self.bytes = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.bytes -= std::mem::take(&mut self.last_growth);
        Err(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.table_elements.saturating_add(growth);
        if total > TABLE_ELEMENTS_MAX || maximum.is_some_and(|max| desired > max) {
            return Err(wasmtime::Error::msg(format!(
                "table growth to {total} elements in all refused: past the bound of {TABLE_ELEMENTS_MAX}"
            )));
        }
        self.last_table_growth = growth;
        self.table_elements = total;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements -= std::mem::take(&mut self.last_table_growth);
        Err(error)
    }

    fn instances(&self) -> usize {
        INSTANCES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use wasmtime::ResourceLimiter;

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
    fn the_cap_holds_over_every_memory_of_the_instance_together() {
        let mut meter = MemoryMeter::new(1 << 20);
        // Two memories of 512 KiB each fill the 1 MiB cap exactly...
        assert!(meter.memory_growing(0, 512 << 10, None).expect("first memory"));
        assert!(meter.memory_growing(0, 512 << 10, None).expect("second memory"));
        assert_eq!(meter.bytes(), 1 << 20);
        // ...so a third memory of one 64 KiB page is past it, though each alone is under the cap.
        let err = meter.memory_growing(0, 64 << 10, None).expect_err("a third memory");
        assert_eq!(err.to_string(), "memory growth to 1114112 bytes in all refused: past the cap of 1048576 bytes");
        assert_eq!((meter.bytes(), meter.take_refused()), (1 << 20, Some((1 << 20) + (64 << 10))));
        // A memory's own maximum holds too.
        let mut meter = MemoryMeter::new(1 << 20);
        assert!(meter.memory_growing(0, 128 << 10, Some(64 << 10)).is_err());
    }

    #[test]
    fn tables_are_bounded_over_the_instance_and_counts_are_limited() {
        let mut meter = MemoryMeter::new(1 << 20);
        assert!(meter.table_growing(0, TABLE_ELEMENTS_MAX - 10, None).expect("first table"));
        assert!(meter.table_growing(0, 10, None).expect("second table, up to the bound"));
        let err = meter.table_growing(10, 11, None).expect_err("one past the bound");
        assert_eq!(err.to_string(), "table growth to 1048577 elements in all refused: past the bound of 1048576");
        // A failed growth is taken back: room for one element again after it.
        let mut meter = MemoryMeter::new(1 << 20);
        assert!(meter.table_growing(0, TABLE_ELEMENTS_MAX, None).expect("to the bound"));
        assert!(meter.table_grow_failed(wasmtime::Error::msg("no memory")).is_err());
        assert!(meter.table_growing(0, 1, None).expect("the failed growth was taken back"));
        assert_eq!((meter.instances(), meter.tables(), meter.memories()), (100, 100, 8));
    }

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        let ticks = |ms| PluginLimits { call_deadline: Duration::from_millis(ms), ..PluginLimits::default() };
        assert_eq!(PluginLimits::default().deadline_ticks(), 500);
        assert_eq!((ticks(0).deadline_ticks(), ticks(15).deadline_ticks(), ticks(20).deadline_ticks()), (1, 2, 2));
    }
}
