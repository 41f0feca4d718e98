//! [`Plugin`]: one loaded plugin, its long-lived store and stage instance, and every call to it.
//!
//! Every call runs under a memory cap and a CPU deadline, declares new sensors first, is timed and
//! counted, and has its answer checked against the contract. A trap or malformed output drops the
//! instance; the next call re-creates it from the [`Blueprint`] and imports the last good state.
//! Every failure extends the failure streak (backoff, then quarantine); a successful batch ends it.
//!
//! A WebAssembly memory only grows, so an instance's memory is the highest its stage ever needed,
//! plus whatever its allocator's free space fragmented into, kept for as long as the instance
//! lives: weeks, for a pipeline's stage. [`Plugin::checkpoint_state`] replaces an instance whose
//! memory has grown well past what it took when it settled with a fresh one holding the state it
//! just exported, which needs only what that state needs.

use std::num::NonZeroUsize;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::Engine;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceAny};

use super::bindings::{self, ContractVersion, Detection, Reading, StageError, StageInfo, WindowAggregate};
use super::error::fault;
use super::health::{Health, PluginState, Refusal};
use super::limits::PluginLimits;
use super::metrics::PluginMetrics;
use super::output::{self, check_aggregates, check_detections, display_text};
use super::runtime::StageCtx;
use super::sandbox::{self, GuestClock};
use super::stage::{self, Call, StageBindings};
use super::{PluginError, PluginLayer, SensorCatalog, StageKind};

/// What every instance of a plugin is made from: the compiled component, its kind, configuration
/// and limits. A restart, a new instance for a hot swap and the first load all start from one.
#[derive(Clone)]
pub(super) struct Blueprint {
    /// The plugin's name (its file name without `.wasm`).
    pub(super) name: String,
    /// The stage interface it exports.
    pub(super) kind: StageKind,
    /// The version of the contract it was built against.
    pub(super) contract: ContractVersion,
    /// The configuration handed to `create`.
    pub(super) config: String,
    /// The compiled component.
    pub(super) component: Component,
    /// The process's engine.
    pub(super) engine: Engine,
    /// The process's linker.
    pub(super) linker: Linker<StageCtx>,
    /// Memory cap, deadline, backoff and quarantine.
    pub(super) limits: PluginLimits,
    /// Environment variables the manifest grants.
    pub(super) env: Vec<(String, String)>,
    /// The live detector this one shadows.
    pub(super) shadow_of: Option<String>,
    /// The plugins folder its file is in, when loaded from the folders.
    pub(super) layer: Option<PluginLayer>,
}

/// A running instance: its store and the handle of its stage resource.
struct Instance {
    store: Store<StageCtx>,
    stage: ResourceAny,
    bindings: Box<dyn StageBindings>,
    /// Keys of the host catalog this instance was told about.
    declared: usize,
    /// When it was made (by the limits' clock).
    created: Instant,
    /// Its linear memory, bytes, at its first checkpoint once it had run for the limits'
    /// `memory_settle` (`None` before): an instance holding its state that has done all its kinds
    /// of work and written its state. What it may grow to before a checkpoint replaces it is
    /// [`memory_ceiling`] of this.
    settled_bytes: Option<usize>,
}

/// The linear memory past which a checkpoint replaces an instance that settled at `settled` bytes:
/// a sixteenth more, and at least 512 KiB more. Its working peaks are in `settled` already; past
/// this it is a leak or fragmentation, which a fresh instance given the same state does not have.
pub fn memory_ceiling(settled: usize) -> usize {
    settled + (settled / 16).max(512 << 10)
}

/// What a call is, for the failure streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// `detect` or `aggregate`: the stage's work; success ends a failure streak.
    Batch,
    /// `tick`, `export-state`, `import-state`.
    Control,
}

/// One loaded plugin.
pub struct Plugin {
    blueprint: Blueprint,
    info: StageInfo,
    instance: Option<Instance>,
    health: Health,
    /// The state last exported or imported: what a re-created instance starts from (shared with
    /// the checkpoint that writes it, not copied).
    last_good: Option<Bytes>,
    metrics: PluginMetrics,
}

impl Plugin {
    /// A plugin made from `blueprint`, its first instance created.
    pub(super) fn create(blueprint: Blueprint) -> Result<Plugin, PluginError> {
        let mut plugin = Plugin {
            health: Health::new(&blueprint.limits),
            blueprint,
            info: StageInfo { name: String::new(), version: String::new(), state_version: 0 },
            instance: None,
            last_good: None,
            metrics: PluginMetrics::default(),
        };
        plugin.instantiate()?;
        Ok(plugin)
    }

    /// The plugin's name (its file name without `.wasm`).
    pub fn name(&self) -> &str {
        &self.blueprint.name
    }

    /// Detector or aggregator.
    pub fn kind(&self) -> StageKind {
        self.blueprint.kind
    }

    /// This plugin, marked as loaded from the plugins folder of `layer`.
    pub fn with_layer(mut self, layer: PluginLayer) -> Self {
        self.blueprint.layer = Some(layer);
        self
    }

    /// The plugins folder its file is in, when loaded from the folders.
    pub fn layer(&self) -> Option<PluginLayer> {
        self.blueprint.layer
    }

    /// The version of the contract it was built against.
    pub fn contract(&self) -> ContractVersion {
        self.blueprint.contract
    }

    /// The live detector this one shadows (from its manifest), if it is a shadow.
    pub fn shadow_of(&self) -> Option<&str> {
        self.blueprint.shadow_of.as_deref()
    }

    /// What the stage says about itself.
    pub fn info(&self) -> &StageInfo {
        &self.info
    }

    /// Its counters and gauges, now.
    pub fn metrics(&self) -> PluginMetrics {
        PluginMetrics {
            consecutive_failures: self.health.failures(),
            state: self.health.state(),
            memory_bytes: self.instance.as_ref().map_or(0, |i| i.store.data().memory_bytes() as u64),
            ..self.metrics.clone()
        }
    }

    /// Running, in backoff or quarantined.
    pub fn state(&self) -> PluginState {
        self.health.state()
    }

    /// The state a re-created instance starts from: the last one exported or imported.
    pub fn last_good_state(&self) -> Option<&[u8]> {
        self.last_good.as_deref()
    }

    /// Lifts a quarantine (or a backoff) and forgets the failure streak; the next call runs on a
    /// fresh instance that starts from the last good state, as after a reload.
    pub fn release_quarantine(&mut self) {
        self.health.release();
        self.instance = None;
    }

    /// Another plugin from the same compiled component, with fresh state and `config` (`None`: this
    /// plugin's configuration), for a state hand-off or a configuration change. It costs an
    /// instantiation, not a second compile, which matters for a large component (one that embeds an
    /// interpreter compiles for seconds).
    pub fn new_instance(&self, config: Option<String>) -> Result<Plugin, PluginError> {
        let mut blueprint = self.blueprint.clone();
        if let Some(config) = config {
            blueprint.config = config;
        }
        Plugin::create(blueprint)
    }

    /// Creates a fresh store and stage instance from the configuration; refuses a `stage-info` the
    /// host could not store.
    fn instantiate(&mut self) -> Result<(), PluginError> {
        let blueprint = &self.blueprint;
        let clock = GuestClock::new(blueprint.limits.call_deadline);
        let wasi = sandbox::wasi_ctx(&blueprint.name, &blueprint.env, &clock);
        let mut store = Store::new(&blueprint.engine, StageCtx::new(wasi, blueprint.limits.memory_bytes, clock));
        store.limiter(|ctx| ctx.meter());
        store.set_epoch_deadline(blueprint.limits.deadline_ticks());
        let created = (|| -> wasmtime::Result<_> {
            let bindings = stage::instantiate(
                blueprint.kind,
                blueprint.contract,
                &mut store,
                &blueprint.component,
                &blueprint.linker,
            )?;
            let info = bindings.info(&mut store)?;
            let created = bindings.create(&mut store, &blueprint.config)?;
            Ok((bindings, info, created))
        })();
        let (bindings, info, created) = created
            .map_err(|err| fault(&blueprint.name, &blueprint.limits, err, store.data_mut().meter().take_refused()))?;
        let stage = created.map_err(|err| refused_call(&blueprint.name, &err))?;
        output::check_info(&info)
            .map_err(|message| PluginError::Unstorable { plugin: blueprint.name.clone(), message })?;
        self.info = info;
        let created = blueprint.limits.clock.now();
        self.instance = Some(Instance { store, stage, bindings, declared: 0, created, settled_bytes: None });
        Ok(())
    }

    /// Runs `invoke` on the live instance, unless the plugin is backing off or quarantined; takes
    /// its answer through `accept` (which converts it to the host's type and counts the outputs, or
    /// says what breaks the contract), and
    /// keeps the metrics and the failure streak. An instance a trap or malformed output destroyed
    /// is re-created first, from the last good state.
    ///
    /// Any failure extends the streak, but only a successful [`CallKind::Batch`] ends it: a plugin
    /// whose batches always fail is quarantined even though its checkpoints or ticks succeed.
    fn call<T, U>(
        &mut self,
        kind: CallKind,
        catalog: &SensorCatalog,
        (readings, at): (usize, Option<i64>),
        invoke: impl FnOnce(&mut Instance) -> Call<T>,
        accept: impl FnOnce(T) -> Result<(U, usize), String>,
    ) -> Result<U, PluginError> {
        if let Err(refusal) = self.health.admit() {
            self.metrics.skipped_readings += readings as u64;
            let (plugin, failures) = (self.blueprint.name.clone(), self.health.failures());
            return Err(match refusal {
                Refusal::Backoff(retry_in) => PluginError::BackingOff { plugin, failures, retry_in },
                Refusal::Quarantined => PluginError::Quarantined { plugin, failures },
            });
        }
        let result =
            self.restart_if_needed().and_then(|()| self.call_measured(catalog, (readings, at), invoke, accept));
        match result {
            Ok(value) => {
                if kind == CallKind::Batch {
                    self.health.succeeded();
                }
                Ok(value)
            }
            Err(err) => {
                if !matches!(err, PluginError::Refused { .. }) {
                    // A trapped instance may be in any state, and one that broke the contract is not
                    // trusted with its state: drop it; the next call starts from the last good state.
                    // (A refusal leaves the state as it was, by contract.)
                    self.instance = None;
                }
                self.health.failed();
                self.record_error(&err);
                Err(err)
            }
        }
    }

    /// Re-creates a destroyed instance and gives it the last good state.
    fn restart_if_needed(&mut self) -> Result<(), PluginError> {
        if self.instance.is_some() {
            return Ok(());
        }
        self.metrics.restarts += 1;
        let last_good = self.last_good.clone();
        self.instantiate_from(last_good.as_deref())
    }

    /// Creates a fresh instance and gives it `state` (the last good state), if any; on failure no
    /// instance is left.
    fn instantiate_from(&mut self, state: Option<&[u8]>) -> Result<(), PluginError> {
        self.instantiate()?;
        let (Some(state), Some(instance)) = (state, self.instance.as_mut()) else { return Ok(()) };
        let failure = match import(instance, state) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => PluginError::Refused {
                plugin: self.blueprint.name.clone(),
                message: format!("its last good state: {}", display_text(&bindings::describe(&err))),
            },
            Err(err) => fault(
                &self.blueprint.name,
                &self.blueprint.limits,
                err,
                instance.store.data_mut().meter().take_refused(),
            ),
        };
        self.instance = None;
        Err(failure)
    }

    /// [`call_live`](Self::call_live), timed and counted, its answer accepted.
    fn call_measured<T, U>(
        &mut self,
        catalog: &SensorCatalog,
        (readings, at): (usize, Option<i64>),
        invoke: impl FnOnce(&mut Instance) -> Call<T>,
        accept: impl FnOnce(T) -> Result<(U, usize), String>,
    ) -> Result<U, PluginError> {
        let started = Instant::now();
        let result = self.call_live(catalog, at, invoke);
        let took = started.elapsed();
        self.metrics.calls += 1;
        self.metrics.readings_in += readings as u64;
        self.metrics.busy_micros += took.as_micros() as u64;
        self.metrics.call_times.record(took);
        match accept(result?) {
            Ok((value, outputs)) => {
                self.metrics.outputs += outputs as u64;
                Ok(value)
            }
            Err(message) => Err(PluginError::MalformedOutput { plugin: self.blueprint.name.clone(), message }),
        }
    }

    /// Runs `invoke` on the live instance with a fresh deadline and the instance's clock at `at`
    /// (ms since the Unix epoch; `None`: where the last call left it), declaring new sensors first.
    fn call_live<T>(
        &mut self,
        catalog: &SensorCatalog,
        at: Option<i64>,
        invoke: impl FnOnce(&mut Instance) -> Call<T>,
    ) -> Result<T, PluginError> {
        let Some(instance) = self.instance.as_mut() else {
            return Err(PluginError::Trap { plugin: self.blueprint.name.clone(), message: "no live instance".into() });
        };
        instance.store.set_epoch_deadline(self.blueprint.limits.deadline_ticks());
        instance.store.data().clock().begin_call(at);
        let result = declare(instance, catalog).and_then(|()| invoke(instance));
        let refused = instance.store.data_mut().meter().take_refused();
        result
            .map_err(|err| fault(&self.blueprint.name, &self.blueprint.limits, err, refused))?
            .map_err(|err| refused_call(&self.blueprint.name, &err))
    }

    fn record_error(&mut self, err: &PluginError) {
        self.metrics.errors += 1;
        self.metrics.last_error = Some(err.public());
    }

    /// Runs a detector over a batch: one detection per reading, every score finite (in calls of
    /// at most the limits' `readings_per_call`, see [`call_in_runs`](Self::call_in_runs)).
    pub fn detect(&mut self, catalog: &SensorCatalog, readings: &[Reading]) -> Result<Vec<Detection>, PluginError> {
        self.call_in_runs(
            catalog,
            readings,
            |instance, run| instance.bindings.detect(&mut instance.store, instance.stage, run),
            |answer, run| {
                let detections = answer.into_detections(run.len())?;
                check_detections(&detections, run.len()).map(|n| (detections, n))
            },
        )
    }

    /// Runs an aggregator over a batch (in calls of at most the limits' `readings_per_call`, see
    /// [`call_in_runs`](Self::call_in_runs)); returns the windows it closed, in order.
    pub fn aggregate(
        &mut self,
        catalog: &SensorCatalog,
        readings: &[Reading],
    ) -> Result<Vec<WindowAggregate>, PluginError> {
        self.call_in_runs(
            catalog,
            readings,
            |instance, run| instance.bindings.aggregate(&mut instance.store, instance.stage, run),
            |aggregates, _| check_aggregates(&aggregates).map(|n| (aggregates, n)),
        )
    }

    /// Passes a batch to the stage in runs of at most the limits' `readings_per_call` readings, in
    /// order, each one [`call`](Self::call) ([`READINGS_PER_CALL`](super::READINGS_PER_CALL)), and
    /// joins their answers. The first failure ends the batch: its answers are lost, and the rest of
    /// it is not passed.
    fn call_in_runs<T, U>(
        &mut self,
        catalog: &SensorCatalog,
        readings: &[Reading],
        invoke: impl Fn(&mut Instance, &[Reading]) -> Call<T>,
        accept: impl Fn(T, &[Reading]) -> Result<(Vec<U>, usize), String>,
    ) -> Result<Vec<U>, PluginError> {
        let mut answers = Vec::new();
        for run in calls(readings, self.blueprint.limits.readings_per_call) {
            let answer = self.call(
                CallKind::Batch,
                catalog,
                (run.len(), newest(run)),
                |instance| invoke(instance, run),
                |answer| accept(answer, run),
            )?;
            // A batch of one call (a live lane's) keeps its answer as it came, with no copy.
            if answers.is_empty() {
                answers = answer;
            } else {
                answers.extend(answer);
            }
        }
        Ok(answers)
    }

    /// Tells an aggregator the processing time; returns the windows it closed for idleness.
    pub fn tick(&mut self, catalog: &SensorCatalog, now_ms: i64) -> Result<Vec<WindowAggregate>, PluginError> {
        self.call(
            CallKind::Control,
            catalog,
            (0, Some(now_ms)),
            |instance| instance.bindings.tick(&mut instance.store, instance.stage, now_ms),
            |aggregates| check_aggregates(&aggregates).map(|n| (aggregates, n)),
        )
    }

    /// The stage's complete state, which the plugin also keeps as its last good state: the point a
    /// re-created instance starts from after a failure. The pipeline's checkpoints call it.
    pub fn export_state(&mut self, catalog: &SensorCatalog) -> Result<Bytes, PluginError> {
        let state = self.call(
            CallKind::Control,
            catalog,
            (0, None),
            |instance| Ok(Ok(instance.bindings.export_state(&mut instance.store, instance.stage)?)),
            |state| Ok((state, 0)),
        )?;
        let state = Bytes::from(state);
        self.remember(state.clone());
        Ok(state)
    }

    /// The stage's state for a checkpoint (as [`state_to_carry`](Self::state_to_carry)); then, when
    /// the live instance's linear memory has grown past [`memory_ceiling`] of what it took when it
    /// settled (its first checkpoint after the limits' `memory_settle`), replaces it with a fresh
    /// instance given the state just exported (its memory only what that state needs; every sensor
    /// declared again at the next call). This is what a restart from this checkpoint would do, so
    /// the stage goes on exactly as it would have; if the fresh instance cannot be made or refuses
    /// the state, the old one stays.
    pub fn checkpoint_state(&mut self, catalog: &SensorCatalog) -> Result<Bytes, PluginError> {
        let state = match self.export_state(catalog) {
            Err(err) if err.is_skip() => return self.last_good.clone().ok_or(err),
            exported => exported?,
        };
        self.replace_if_grown(&state);
        Ok(state)
    }

    /// Replaces the live instance (settled, grown past its ceiling) with a fresh one given `state`,
    /// which it just exported (so its last good state).
    fn replace_if_grown(&mut self, state: &[u8]) {
        let Some(instance) = self.instance.as_mut() else { return };
        let grown = instance.store.data().memory_bytes();
        let Some(settled) = instance.settled_bytes else {
            let age = self.blueprint.limits.clock.now().saturating_duration_since(instance.created);
            if age >= self.blueprint.limits.memory_settle {
                instance.settled_bytes = Some(grown);
            }
            return;
        };
        if grown <= memory_ceiling(settled) {
            return;
        }
        let old = self.instance.take();
        match self.instantiate_from(Some(state)) {
            Ok(()) => {
                let fresh = self.instance.as_ref().map_or(0, |i| i.store.data().memory_bytes());
                self.metrics.memory_replacements += 1;
                tracing::info!(
                    plugin = self.blueprint.name,
                    grown_bytes = grown,
                    settled_bytes = settled,
                    fresh_bytes = fresh,
                    "the instance's memory grew past its ceiling: replaced by a fresh one holding its state"
                );
            }
            Err(err) => {
                // The old instance goes on; it is not tried again until it grows as much again.
                self.instance = old;
                if let Some(instance) = self.instance.as_mut() {
                    instance.settled_bytes = Some(grown);
                }
                tracing::warn!(plugin = self.blueprint.name, error = %err, "the instance's memory grew past its ceiling, but a fresh one could not take its state: it goes on");
            }
        }
    }

    /// Takes the stage's state now as its last good state (as [`export_state`](Self::export_state),
    /// without handing the bytes out); returns its size.
    pub fn snapshot(&mut self, catalog: &SensorCatalog) -> Result<usize, PluginError> {
        self.export_state(catalog).map(|state| state.len())
    }

    /// The state to carry forward (into a checkpoint, or to a successor at a hot swap): exported
    /// now, or, while the plugin is in backoff or quarantine, its last good state.
    pub fn state_to_carry(&mut self, catalog: &SensorCatalog) -> Result<Bytes, PluginError> {
        match self.export_state(catalog) {
            Err(err) if err.is_skip() => self.last_good.clone().ok_or(err),
            exported => exported,
        }
    }

    /// Replaces the stage's state, which becomes its last good state; every sensor is declared
    /// again before the next call.
    pub fn import_state(&mut self, catalog: &SensorCatalog, state: &[u8]) -> Result<(), PluginError> {
        self.import_shared(catalog, Bytes::copy_from_slice(state))
    }

    /// [`import_state`](Self::import_state) of state held elsewhere too (a checkpoint's), which
    /// becomes the last good state without a copy.
    pub fn import_shared(&mut self, catalog: &SensorCatalog, state: Bytes) -> Result<(), PluginError> {
        self.call(CallKind::Control, catalog, (0, None), |instance| import(instance, &state), |()| Ok(((), 0)))?;
        self.remember(state);
        Ok(())
    }

    /// Moves the stage from catalog `from` to `to`, which numbers the sensors anew (the host
    /// compacted its keys): its state, keyed by identity, is exported against `from` and imported
    /// against `to`. When the plugin cannot take it now (backing off, quarantined or failing), its
    /// instance is dropped so that the next call re-creates it from that state and declares every
    /// sensor anew: no instance keeps the old keys either way.
    pub fn renumber(&mut self, from: &SensorCatalog, to: &SensorCatalog) -> Result<(), PluginError> {
        let state = match self.state_to_carry(from) {
            Ok(state) => state,
            Err(err) => {
                self.instance = None;
                return Err(err);
            }
        };
        self.import_shared(to, state.clone()).inspect_err(|_| {
            self.last_good = Some(state);
            self.instance = None;
        })
    }

    fn remember(&mut self, state: Bytes) {
        self.metrics.state_bytes = state.len() as u64;
        self.last_good = Some(state);
    }
}

/// Declares the catalog's sensors the instance has not been told about.
fn declare(instance: &mut Instance, catalog: &SensorCatalog) -> wasmtime::Result<()> {
    let new_sensors = catalog.since(instance.declared);
    if new_sensors.is_empty() {
        return Ok(());
    }
    instance.bindings.declare_sensors(&mut instance.store, instance.stage, new_sensors)?;
    instance.declared = catalog.len();
    Ok(())
}

/// Gives the instance `state`; after it, every sensor must be declared again.
fn import(instance: &mut Instance, state: &[u8]) -> Call<()> {
    let result = instance.bindings.import_state(&mut instance.store, instance.stage, state)?;
    instance.declared = 0;
    Ok(result)
}

/// `readings` in consecutive runs of at most `per_call`: one plugin call each. An empty batch is one
/// empty call, as it always was.
fn calls(readings: &[Reading], per_call: NonZeroUsize) -> impl Iterator<Item = &[Reading]> {
    let empty = readings.is_empty().then_some(readings);
    readings.chunks(per_call.get()).chain(empty)
}

/// The newest event time of `readings`: the time a batch call's clock reads.
fn newest(readings: &[Reading]) -> Option<i64> {
    readings.iter().map(|r| r.timestamp_ms).max()
}

/// A stage's refusal of a call, its reason made fit to show.
fn refused_call(plugin: &str, err: &StageError) -> PluginError {
    PluginError::Refused { plugin: plugin.to_owned(), message: display_text(&bindings::describe(err)) }
}
