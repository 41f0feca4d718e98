//! What a plugin sees of the world outside its own memory: a clock and random numbers the host
//! hands it, and WASI calls that cannot block.
//!
//! WASI is linked synchronously and the epoch deadline interrupts only wasm code, so a guest that
//! sleeps (`std::thread::sleep`, a `poll` on a clock) would hold its call, and the pipeline, for as
//! long as it asked. So the clock's `subscribe-duration` and `subscribe-instant`, the only WASI
//! calls a plugin can wait on (it has no files, sockets or input), are replaced by the host's own:
//! the pollable they return is ready at once, and the plugin's [`GuestClock`] moves forward by the
//! time it asked to wait. Sleeps that add up to more than the call's deadline fail the call with
//! [`SleptPastDeadline`] (a [`PluginError::Blocked`](super::PluginError::Blocked)) in no time.
//!
//! The clock never reads the host's: each call's wall clock starts at the call's own time (the
//! newest event time of the batch, or a tick's time) and its monotonic clock counts only the
//! sleeps. Random numbers come from generators seeded by the plugin's name. So a plugin's answers
//! depend only on its input and state, and a replay gives the same answers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_wasi::SeedableRng;
use rand_wasi::rngs::StdRng;
use sha2::Digest;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::runtime::StageCtx;

/// The WASI clock interface whose waits the host replaces, as wasmtime-wasi 48 names it (guests
/// importing any 0.2 version of it are linked to this one).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A call slept (in WASI, not in wasm code) for longer in total than its deadline: in real time
/// it would have held the pipeline that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the plugin slept {asked:?} in one call, past its deadline")]
pub struct SleptPastDeadline {
    /// The sleeps of the call, added up.
    pub asked: Duration,
}

/// The clock of one stage instance, shared by its WASI context and the host's clock functions.
#[derive(Clone, Debug, Default)]
pub(crate) struct GuestClock(Arc<Mutex<ClockState>>);

#[derive(Debug, Default)]
struct ClockState {
    /// The wall-clock time the current call started at, ms since the Unix epoch.
    call_time_ms: i64,
    /// Monotonic time, ns: every sleep of the instance, added up.
    monotonic_ns: u64,
    /// Monotonic time when the current call started.
    call_started_ns: u64,
    /// How long the current call may sleep in total.
    budget: Duration,
}

impl GuestClock {
    /// A clock at the Unix epoch whose calls may sleep `budget` each.
    pub(crate) fn new(budget: Duration) -> Self {
        GuestClock(Arc::new(Mutex::new(ClockState { budget, ..ClockState::default() })))
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // The state is plain numbers, consistent after any panic: take it even if poisoned.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a call at `time_ms` (`None`: the time the last call ended at).
    pub(crate) fn begin_call(&self, time_ms: Option<i64>) {
        let mut state = self.state();
        if let Some(time_ms) = time_ms {
            state.call_time_ms = time_ms;
        } else {
            let elapsed = state.monotonic_ns - state.call_started_ns;
            state.call_time_ms = state.call_time_ms.saturating_add((elapsed / 1_000_000) as i64);
        }
        state.call_started_ns = state.monotonic_ns;
    }

    /// The guest waits `duration`: the clock moves on by it, at once, unless the call's sleeps
    /// then pass its budget.
    pub(crate) fn sleep(&self, duration: Duration) -> Result<(), SleptPastDeadline> {
        let mut state = self.state();
        let slept = Duration::from_nanos(state.monotonic_ns - state.call_started_ns).saturating_add(duration);
        if slept > state.budget {
            return Err(SleptPastDeadline { asked: slept });
        }
        state.monotonic_ns = state.monotonic_ns.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Monotonic time, ns.
    fn monotonic_ns(&self) -> u64 {
        self.state().monotonic_ns
    }

    /// Wall-clock time since the Unix epoch (the epoch itself for a call time before it).
    fn wall(&self) -> Duration {
        let state = self.state();
        let start = Duration::from_millis(u64::try_from(state.call_time_ms).unwrap_or(0));
        start.saturating_add(Duration::from_nanos(state.monotonic_ns - state.call_started_ns))
    }
}

impl HostWallClock for GuestClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.wall()
    }
}

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.monotonic_ns()
    }
}

/// The WASI context of an instance of plugin `name`: `env` granted, `clock` for both clocks,
/// random numbers seeded by the name; nothing else (no files, sockets, stdio).
pub(crate) fn wasi_ctx(name: &str, env: &[(String, String)], clock: &GuestClock) -> WasiCtx {
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(env)
        .wall_clock(clock.clone())
        .monotonic_clock(clock.clone())
        .secure_random(StdRng::from_seed(seed(name, "secure-random")))
        .insecure_random(StdRng::from_seed(seed(name, "insecure-random")))
        .insecure_random_seed(u128::from_le_bytes(seed(name, "insecure-seed")[..16].try_into().unwrap_or_default()));
    wasi.build()
}

/// 32 bytes derived from the plugin's name and the purpose (`label`).
fn seed(name: &str, label: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("iotstream plugin {label}: {name}")).into()
}

/// Replaces the clock's waits in `linker` (which has WASI already) with ones that never block.
pub(crate) fn link_clock_waits(linker: &mut Linker<StageCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, StageCtx>, (ns,): (u64,)| {
        wait(store.data_mut(), Duration::from_nanos(ns)).map(|pollable| (pollable,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, StageCtx>, (when,): (u64,)| {
        let ctx = store.data_mut();
        let now = ctx.clock().monotonic_ns();
        wait(ctx, Duration::from_nanos(when.saturating_sub(now))).map(|pollable| (pollable,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Moves the instance's clock on by `duration` and returns a pollable that is ready now; a trap
/// ([`SleptPastDeadline`]) if the call's sleeps pass its deadline.
fn wait(ctx: &mut StageCtx, duration: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    ctx.clock().sleep(duration)?;
    let table: &mut ResourceTable = ctx.table();
    let elapsed = table.push(Elapsed)?;
    subscribe(table, elapsed)
}

/// A wait that is over: the clock already moved past it.
struct Elapsed;

#[async_trait::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_move_the_clock_until_they_pass_the_calls_budget() {
        let clock = GuestClock::new(Duration::from_secs(5));
        clock.begin_call(Some(1_000));
        assert_eq!((HostWallClock::now(&clock), HostMonotonicClock::now(&clock)), (Duration::from_secs(1), 0));
        clock.sleep(Duration::from_secs(3)).expect("within the budget");
        assert_eq!(HostWallClock::now(&clock), Duration::from_secs(4));
        assert_eq!(HostMonotonicClock::now(&clock), 3_000_000_000);
        let past = clock.sleep(Duration::from_millis(2_500)).expect_err("3 s + 2.5 s > 5 s");
        assert_eq!(past, SleptPastDeadline { asked: Duration::from_millis(5_500) });
        assert_eq!(HostMonotonicClock::now(&clock), 3_000_000_000, "a refused sleep does not move the clock");
        // The next call has its own budget, starts where the last ended unless given a time.
        clock.begin_call(None);
        assert_eq!(HostWallClock::now(&clock), Duration::from_secs(4));
        clock.sleep(Duration::from_secs(5)).expect("a new budget");
        clock.begin_call(Some(-7));
        assert_eq!((HostWallClock::now(&clock), HostMonotonicClock::now(&clock)), (Duration::ZERO, 8_000_000_000));
    }

    #[test]
    fn random_seeds_depend_on_the_plugin_and_the_purpose_only() {
        // `printf 'iotstream plugin secure-random: zscore' | sha256sum`
        let expected = "0e0569b9957e32cd1b18d799991236ce3b9078b48f822c072535d9521f10947f";
        let hex: String = seed("zscore", "secure-random").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        assert_ne!(seed("zscore", "secure-random"), seed("zscore", "insecure-random"));
        assert_ne!(seed("zscore", "secure-random"), seed("forest", "secure-random"));
    }
}
