//! Loading and running the WebAssembly component plugins that do every processing stage.
//!
//! One [`PluginRuntime`] per process holds the wasmtime `Engine` and `Linker`. Each `.wasm` file in
//! the plugins folder becomes a [`Plugin`]: one long-lived `Store` with one stage instance, its
//! configuration (`NAME.json` beside `NAME.wasm`, `{}` when absent), its sensor-declaration
//! progress and its metrics. Every call runs under a memory cap and a CPU deadline; a trap, a refused
//! call or malformed output is a [`PluginError`] for that plugin alone, never a host crash.
//!
//! Fault isolation: [`Plugin::export_state`] (the pipeline's checkpoints, or [`Plugin::snapshot`])
//! keeps the exported bytes as the plugin's last good state. A trap or malformed output drops the
//! instance; the next call re-creates it and imports the last good state. Every failure extends the
//! plugin's failure streak: it backs off (its calls are skipped, [`PluginError::BackingOff`]), and
//! after [`QUARANTINE_AFTER`] failures in a row it is quarantined ([`PluginError::Quarantined`])
//! until [`Plugin::release_quarantine`]. A successful call ends the streak.
//!
//! Layout: [`bindings`] (the one `bindgen!` per WIT world), [`catalog`] (sensor keys), `limits`
//! ([`PluginLimits`], the memory meter), `health` (backoff and quarantine), `metrics`
//! ([`PluginMetrics`], call-time histogram), this module (runtime, loading, calls).

pub mod bindings;
pub mod catalog;
mod health;
mod limits;
mod manifest;
mod metrics;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::bindings::aggregator::AggregatorPlugin;
use self::bindings::detector::DetectorPlugin;
use self::bindings::{AGGREGATOR_EXPORT, DETECTOR_EXPORT, Detection, Reading, StageInfo, WindowAggregate};
pub use self::catalog::SensorCatalog;
pub use self::health::{Clock, PluginState};
use self::health::{Health, Refusal};
pub use self::limits::{
    BACKOFF_INITIAL, BACKOFF_MAX, CALL_DEADLINE, MEMORY_LIMIT_BYTES, PluginLimits, QUARANTINE_AFTER,
};
use self::limits::{EPOCH_TICK, MemoryMeter};
pub use self::manifest::{Grants, Manifest, ManifestLimits, PluginSpec};
pub use self::metrics::{CallTimes, PluginMetrics};

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The folder or file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a component wasmtime can compile.
    #[error("{path} is not a valid component: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// The compiler's reason.
        message: String,
    },
    /// The component exports neither stage interface of this contract version.
    #[error("{path} exports neither {DETECTOR_EXPORT} nor {AGGREGATOR_EXPORT}")]
    UnknownWorld {
        /// The file.
        path: PathBuf,
    },
    /// The component was built against a version of the contract this host does not run.
    #[error("{path} was built against {found}; this host runs {DETECTOR_EXPORT} and {AGGREGATOR_EXPORT}")]
    WitVersion {
        /// The file.
        path: PathBuf,
        /// The stage interface it exports.
        found: String,
    },
    /// The manifest beside the plugin is malformed, or the component is not what it expects.
    #[error("plugin manifest {path}: {message}")]
    Manifest {
        /// The manifest (or configuration) file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Instantiating, or a call, trapped or failed in the runtime (a panic, `unreachable`, a host
    /// error); the deadline and the memory cap have their own cases.
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// What the runtime reported.
        message: String,
    },
    /// A call ran past its CPU deadline and was interrupted.
    #[error("plugin {plugin} ran past its CPU deadline of {deadline:?} per call")]
    Deadline {
        /// The plugin.
        plugin: String,
        /// The deadline.
        deadline: Duration,
    },
    /// The instance tried to grow a linear memory past the cap, which traps.
    #[error("plugin {plugin} tried to grow its memory to {requested} bytes, past its cap of {limit} bytes")]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// The size it asked for, bytes.
        requested: usize,
        /// The cap, bytes.
        limit: usize,
    },
    /// The stage refused a call with a `stage-error`.
    #[error("plugin {plugin} refused the call: {message}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// The stage's reason.
        message: String,
    },
    /// The stage answered with output that breaks the contract.
    #[error("plugin {plugin} returned malformed output: {message}")]
    MalformedOutput {
        /// The plugin.
        plugin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The call was skipped: the plugin failed lately and is backing off.
    #[error("plugin {plugin} is backing off after {failures} failures in a row; calls skipped for {retry_in:?} more")]
    BackingOff {
        /// The plugin.
        plugin: String,
        /// Its failures in a row.
        failures: u32,
        /// Time left until it is called again.
        retry_in: Duration,
    },
    /// The call was skipped: the plugin failed too often in a row and is not called until released.
    #[error("plugin {plugin} is quarantined after {failures} failures in a row; it is not called until reloaded")]
    Quarantined {
        /// The plugin.
        plugin: String,
        /// Its failures in a row.
        failures: u32,
    },
}

impl PluginError {
    /// Whether the call was skipped rather than made (backoff or quarantine). Skips are counted in
    /// the plugin's metrics; a caller logs the failure that caused them, not every skipped batch.
    pub fn is_skip(&self) -> bool {
        matches!(self, PluginError::BackingOff { .. } | PluginError::Quarantined { .. })
    }
}

/// The plugins of a folder that loaded, and the (name, error) of those that did not.
pub type LoadedDir = (Vec<Plugin>, Vec<(String, PluginError)>);

/// What every stage interface of this contract's package starts with, whatever its version.
const CONTRACT_PREFIX: &str = "iotstream:pipeline/";

/// The kind of stage a plugin is, from the interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Exports `detector`.
    Detector,
    /// Exports `aggregator`.
    Aggregator,
}

/// Per-instance store data: WASI with nothing granted, and the memory cap and meter.
pub struct StageCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: MemoryMeter,
}

impl WasiView for StageCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The process-wide engine and linker, and the thread that advances the epoch.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<StageCtx>,
    ticker_stop: Arc<AtomicBool>,
    limits: PluginLimits,
}

impl PluginRuntime {
    /// Creates the engine (with epoch interruption) and the linker (WASI p2, nothing granted), with
    /// the default limits.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_limits(PluginLimits::default())
    }

    /// [`new`](Self::new), with `limits` for every plugin it loads (tests shorten them).
    pub fn with_limits(limits: PluginLimits) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|err| runtime_error("engine", err))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|err| runtime_error("linker", err))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("iotstream-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|source| PluginError::Read { path: "epoch thread".into(), source })?;
        Ok(PluginRuntime { engine, linker, ticker_stop, limits })
    }

    /// Loads every `*.wasm` in `dir`, in name order. A file that fails to load is reported in the
    /// second list, by plugin name, and skipped; the others still load.
    pub fn load_dir(&self, dir: &Path) -> Result<LoadedDir, PluginError> {
        let entries = std::fs::read_dir(dir).map_err(|source| PluginError::Read { path: dir.to_owned(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        paths.sort();
        let (mut loaded, mut failed) = (Vec::new(), Vec::new());
        for path in paths {
            match self.load(&path) {
                Ok(plugin) => loaded.push(plugin),
                Err(err) => failed.push((plugin_name(&path), err)),
            }
        }
        Ok((loaded, failed))
    }

    /// Compiles and instantiates one plugin file, with the manifest (or configuration) beside it.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        self.load_spec(path, PluginSpec::beside(path)?)
    }

    /// Compiles and instantiates one plugin file with `config`, or (`None`) the manifest or
    /// configuration beside it.
    pub fn load_with_config(&self, path: &Path, config: Option<String>) -> Result<Plugin, PluginError> {
        let spec = match config {
            Some(config) => PluginSpec::with_config(config),
            None => PluginSpec::beside(path)?,
        };
        self.load_spec(path, spec)
    }

    /// Compiles and instantiates one plugin file as `spec` says, checking it is what `spec` expects.
    pub fn load_spec(&self, path: &Path, spec: PluginSpec) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
        spec.check_digest(&bytes)?;
        let component = Component::new(&self.engine, &bytes)
            .map_err(|err| PluginError::Compile { path: path.to_owned(), message: format!("{err:#}") })?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let kind = if exports.iter().any(|e| e == DETECTOR_EXPORT) {
            StageKind::Detector
        } else if exports.iter().any(|e| e == AGGREGATOR_EXPORT) {
            StageKind::Aggregator
        } else if let Some(found) = exports.iter().find(|e| e.starts_with(CONTRACT_PREFIX)) {
            return Err(PluginError::WitVersion { path: path.to_owned(), found: found.clone() });
        } else {
            return Err(PluginError::UnknownWorld { path: path.to_owned() });
        };
        let name = plugin_name(path);
        let limits = spec.limits(&self.limits);
        let mut plugin = Plugin {
            name,
            kind,
            info: StageInfo { name: String::new(), version: String::new(), state_version: 0 },
            config: spec.config.clone(),
            component,
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            instance: None,
            health: Health::new(&limits),
            limits,
            env: spec.env(),
            shadow_of: spec.manifest.shadow_of.clone(),
            last_good: None,
            metrics: PluginMetrics::default(),
        };
        plugin.instantiate()?;
        spec.check_component(plugin.kind, &plugin.info.version)?;
        Ok(plugin)
    }
}

impl PluginRuntime {
    /// Runs a WASI command component (`main`) with `args`, the host folder `dir` readable at
    /// `/data`, and no other access; returns what it printed. For tools such as `forest-bench`,
    /// not for stages.
    pub fn run_command(&self, path: &Path, args: &[String], dir: &Path) -> Result<String, PluginError> {
        use wasmtime_wasi::FsPerms;
        use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
        let plugin = path.display().to_string();
        let trap = |err: wasmtime::Error| PluginError::Trap { plugin: plugin.clone(), message: format!("{err:#}") };
        let component = Component::from_file(&self.engine, path)
            .map_err(|err| PluginError::Compile { path: path.to_owned(), message: format!("{err:#}") })?;
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut wasi = WasiCtx::builder();
        wasi.args(args).stdout(stdout.clone()).inherit_stderr();
        wasi.preopened_dir(dir, "/data", FsPerms::ReadOnly).map_err(trap)?;
        let ctx = StageCtx {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            meter: MemoryMeter::new(self.limits.memory_bytes),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.meter);
        // A tool may run for minutes: no CPU deadline.
        store.set_epoch_deadline(u64::MAX / 2);
        let command = wasmtime_wasi::p2::bindings::sync::Command::instantiate(&mut store, &component, &self.linker)
            .map_err(trap)?;
        let outcome = command.wasi_cli_run().call_run(&mut store).map_err(trap)?;
        if outcome.is_err() {
            return Err(PluginError::Trap { plugin, message: "the command exited with a failure".into() });
        }
        Ok(String::from_utf8_lossy(&stdout.contents()).into_owned())
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A plugin's name: its file name without `.wasm`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn runtime_error(what: &str, err: wasmtime::Error) -> PluginError {
    PluginError::Trap { plugin: format!("<{what}>"), message: format!("{err:#}") }
}

/// Names a runtime failure of `plugin`: the memory cap when the limiter refused a growth during
/// the call (`refused`, the size asked for), the deadline for an epoch interrupt, else a trap.
fn fault(plugin: &str, limits: &PluginLimits, err: wasmtime::Error, refused: Option<usize>) -> PluginError {
    let plugin = plugin.to_owned();
    if let Some(requested) = refused {
        PluginError::MemoryLimit { plugin, requested, limit: limits.memory_bytes }
    } else if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        PluginError::Deadline { plugin, deadline: limits.call_deadline }
    } else {
        PluginError::Trap { plugin, message: format!("{err:#}") }
    }
}

/// A running instance: its store and the handle of its stage resource.
struct Instance {
    store: Store<StageCtx>,
    stage: ResourceAny,
    bindings: Bindings,
    /// Keys of the host catalog this instance was told about.
    declared: usize,
}

/// What a call is, for the failure streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// `detect` or `aggregate`: the stage's work; success ends a failure streak.
    Batch,
    /// `tick`, `export-state`, `import-state`.
    Control,
}

enum Bindings {
    Detector(DetectorPlugin),
    Aggregator(AggregatorPlugin),
}

/// One loaded plugin.
pub struct Plugin {
    name: String,
    kind: StageKind,
    info: StageInfo,
    config: String,
    component: Component,
    engine: Engine,
    linker: Linker<StageCtx>,
    instance: Option<Instance>,
    limits: PluginLimits,
    /// Environment variables the manifest grants.
    env: Vec<(String, String)>,
    /// The live detector this one shadows.
    shadow_of: Option<String>,
    health: Health,
    /// The state last exported or imported: what a re-created instance starts from.
    last_good: Option<Vec<u8>>,
    metrics: PluginMetrics,
}

impl Plugin {
    /// The plugin's name (its file name without `.wasm`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Detector or aggregator.
    pub fn kind(&self) -> StageKind {
        self.kind
    }

    /// The live detector this one shadows (from its manifest), if it is a shadow.
    pub fn shadow_of(&self) -> Option<&str> {
        self.shadow_of.as_deref()
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
            memory_bytes: self.instance.as_ref().map_or(0, |i| i.store.data().meter.bytes() as u64),
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
        let mut plugin = Plugin {
            name: self.name.clone(),
            kind: self.kind,
            info: StageInfo { name: String::new(), version: String::new(), state_version: 0 },
            config: config.unwrap_or_else(|| self.config.clone()),
            component: self.component.clone(),
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            instance: None,
            limits: self.limits.clone(),
            env: self.env.clone(),
            shadow_of: self.shadow_of.clone(),
            health: Health::new(&self.limits),
            last_good: None,
            metrics: PluginMetrics::default(),
        };
        plugin.instantiate()?;
        Ok(plugin)
    }

    /// Creates a fresh store and stage instance from the configuration.
    fn instantiate(&mut self) -> Result<(), PluginError> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env);
        let ctx = StageCtx {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            meter: MemoryMeter::new(self.limits.memory_bytes),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.meter);
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let (component, linker, config) = (&self.component, &self.linker, &self.config);
        let created = (|| -> wasmtime::Result<_> {
            Ok(match self.kind {
                StageKind::Detector => {
                    let plugin = DetectorPlugin::instantiate(&mut store, component, linker)?;
                    let guest = plugin.iotstream_pipeline_detector();
                    let info = guest.call_info(&mut store)?;
                    let created = guest.detector_stage().call_create(&mut store, config)?;
                    (Bindings::Detector(plugin), info, created)
                }
                StageKind::Aggregator => {
                    let plugin = AggregatorPlugin::instantiate(&mut store, component, linker)?;
                    let guest = plugin.iotstream_pipeline_aggregator();
                    let info = guest.call_info(&mut store)?;
                    let created = guest.aggregator_stage().call_create(&mut store, config)?;
                    (Bindings::Aggregator(plugin), info, created)
                }
            })
        })();
        let (bindings, info, created) =
            created.map_err(|err| fault(&self.name, &self.limits, err, store.data_mut().meter.take_refused()))?;
        let stage = created
            .map_err(|err| PluginError::Refused { plugin: self.name.clone(), message: bindings::describe(&err) })?;
        self.info = info;
        self.instance = Some(Instance { store, stage, bindings, declared: 0 });
        Ok(())
    }

    /// Runs `invoke` on the live instance, unless the plugin is backing off or quarantined; checks
    /// its answer with `check` (which counts the outputs or says what breaks the contract), and
    /// keeps the metrics and the failure streak. An instance a trap or malformed output destroyed
    /// is re-created first, from the last good state.
    ///
    /// Any failure extends the streak, but only a successful [`CallKind::Batch`] ends it: a plugin
    /// whose batches always fail is quarantined even though its checkpoints or ticks succeed.
    fn call<T>(
        &mut self,
        kind: CallKind,
        catalog: &SensorCatalog,
        readings: usize,
        invoke: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, bindings::StageError>>,
        check: impl FnOnce(&T) -> Result<usize, String>,
    ) -> Result<T, PluginError> {
        if let Err(refusal) = self.health.admit() {
            self.metrics.skipped_readings += readings as u64;
            let (plugin, failures) = (self.name.clone(), self.health.failures());
            return Err(match refusal {
                Refusal::Backoff(retry_in) => PluginError::BackingOff { plugin, failures, retry_in },
                Refusal::Quarantined => PluginError::Quarantined { plugin, failures },
            });
        }
        let result = self.restart_if_needed().and_then(|()| self.call_measured(catalog, readings, invoke, check));
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
        self.instantiate()?;
        let (Some(state), Some(instance)) = (&self.last_good, self.instance.as_mut()) else { return Ok(()) };
        let failure = match import(instance, state) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => PluginError::Refused {
                plugin: self.name.clone(),
                message: format!("its last good state: {}", bindings::describe(&err)),
            },
            Err(err) => fault(&self.name, &self.limits, err, instance.store.data_mut().meter.take_refused()),
        };
        self.instance = None;
        Err(failure)
    }

    /// [`call_live`](Self::call_live), timed and counted, its answer checked.
    fn call_measured<T>(
        &mut self,
        catalog: &SensorCatalog,
        readings: usize,
        invoke: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, bindings::StageError>>,
        check: impl FnOnce(&T) -> Result<usize, String>,
    ) -> Result<T, PluginError> {
        let started = Instant::now();
        let result = self.call_live(catalog, invoke);
        let took = started.elapsed();
        self.metrics.calls += 1;
        self.metrics.readings_in += readings as u64;
        self.metrics.busy_micros += took.as_micros() as u64;
        self.metrics.call_times.record(took);
        let value = result?;
        match check(&value) {
            Ok(outputs) => {
                self.metrics.outputs += outputs as u64;
                Ok(value)
            }
            Err(message) => Err(PluginError::MalformedOutput { plugin: self.name.clone(), message }),
        }
    }

    /// Runs `invoke` on the live instance with a fresh deadline, declaring new sensors first.
    fn call_live<T>(
        &mut self,
        catalog: &SensorCatalog,
        invoke: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, bindings::StageError>>,
    ) -> Result<T, PluginError> {
        let Some(instance) = self.instance.as_mut() else {
            return Err(PluginError::Trap { plugin: self.name.clone(), message: "no live instance".into() });
        };
        instance.store.set_epoch_deadline(self.limits.deadline_ticks());
        let result = declare(instance, catalog).and_then(|()| invoke(instance));
        let refused = instance.store.data_mut().meter.take_refused();
        result
            .map_err(|err| fault(&self.name, &self.limits, err, refused))?
            .map_err(|err| PluginError::Refused { plugin: self.name.clone(), message: bindings::describe(&err) })
    }

    fn record_error(&mut self, err: &PluginError) {
        self.metrics.errors += 1;
        self.metrics.last_error = Some(err.to_string());
    }

    /// Runs a detector over a batch: one detection per reading, every score finite.
    pub fn detect(&mut self, catalog: &SensorCatalog, readings: &[Reading]) -> Result<Vec<Detection>, PluginError> {
        self.call(
            CallKind::Batch,
            catalog,
            readings.len(),
            |instance| match &instance.bindings {
                Bindings::Detector(p) => p.iotstream_pipeline_detector().detector_stage().call_detect(
                    &mut instance.store,
                    instance.stage,
                    readings,
                ),
                Bindings::Aggregator(_) => Ok(Err(bindings::StageError::InvalidInput("not a detector".into()))),
            },
            |detections| {
                if detections.len() != readings.len() {
                    return Err(format!("{} detections for {} readings", detections.len(), readings.len()));
                }
                match detections.iter().position(|d| !d.score.is_finite()) {
                    Some(i) => Err(format!("score of reading {i} is not finite")),
                    None => Ok(detections.len()),
                }
            },
        )
    }

    /// Runs an aggregator over a batch; returns the windows it closed.
    pub fn aggregate(
        &mut self,
        catalog: &SensorCatalog,
        readings: &[Reading],
    ) -> Result<Vec<WindowAggregate>, PluginError> {
        self.call(
            CallKind::Batch,
            catalog,
            readings.len(),
            |instance| match &instance.bindings {
                Bindings::Aggregator(p) => p.iotstream_pipeline_aggregator().aggregator_stage().call_aggregate(
                    &mut instance.store,
                    instance.stage,
                    readings,
                ),
                Bindings::Detector(_) => Ok(Err(bindings::StageError::InvalidInput("not an aggregator".into()))),
            },
            |aggregates| check_aggregates(aggregates),
        )
    }

    /// Tells an aggregator the processing time; returns the windows it closed for idleness.
    pub fn tick(&mut self, catalog: &SensorCatalog, now_ms: i64) -> Result<Vec<WindowAggregate>, PluginError> {
        self.call(
            CallKind::Control,
            catalog,
            0,
            |instance| match &instance.bindings {
                Bindings::Aggregator(p) => Ok(Ok(p.iotstream_pipeline_aggregator().aggregator_stage().call_tick(
                    &mut instance.store,
                    instance.stage,
                    now_ms,
                )?)),
                Bindings::Detector(_) => Ok(Ok(Vec::new())),
            },
            |aggregates| check_aggregates(aggregates),
        )
    }

    /// The stage's complete state, which the plugin also keeps as its last good state: the point a
    /// re-created instance starts from after a failure. The pipeline's checkpoints call it.
    pub fn export_state(&mut self, catalog: &SensorCatalog) -> Result<Vec<u8>, PluginError> {
        let state = self.call(
            CallKind::Control,
            catalog,
            0,
            |instance| {
                let stage = instance.stage;
                Ok(Ok(match &instance.bindings {
                    Bindings::Detector(p) => p
                        .iotstream_pipeline_detector()
                        .detector_stage()
                        .call_export_state(&mut instance.store, stage)?,
                    Bindings::Aggregator(p) => p
                        .iotstream_pipeline_aggregator()
                        .aggregator_stage()
                        .call_export_state(&mut instance.store, stage)?,
                }))
            },
            |_| Ok(0),
        )?;
        self.remember(state.clone());
        Ok(state)
    }

    /// Takes the stage's state now as its last good state (as [`export_state`](Self::export_state),
    /// without handing the bytes out); returns its size.
    pub fn snapshot(&mut self, catalog: &SensorCatalog) -> Result<usize, PluginError> {
        self.export_state(catalog).map(|state| state.len())
    }

    /// The state to carry forward (into a checkpoint, or to a successor at a hot swap): exported
    /// now, or, while the plugin is in backoff or quarantine, its last good state.
    pub fn state_to_carry(&mut self, catalog: &SensorCatalog) -> Result<Vec<u8>, PluginError> {
        match self.export_state(catalog) {
            Err(err) if err.is_skip() => self.last_good.clone().ok_or(err),
            exported => exported,
        }
    }

    /// Replaces the stage's state, which becomes its last good state; every sensor is declared
    /// again before the next call.
    pub fn import_state(&mut self, catalog: &SensorCatalog, state: &[u8]) -> Result<(), PluginError> {
        self.call(CallKind::Control, catalog, 0, |instance| import(instance, state), |_| Ok(0))?;
        self.remember(state.to_vec());
        Ok(())
    }

    fn remember(&mut self, state: Vec<u8>) {
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
    let stage = instance.stage;
    match &instance.bindings {
        Bindings::Detector(p) => p.iotstream_pipeline_detector().detector_stage().call_declare_sensors(
            &mut instance.store,
            stage,
            new_sensors,
        ),
        Bindings::Aggregator(p) => p.iotstream_pipeline_aggregator().aggregator_stage().call_declare_sensors(
            &mut instance.store,
            stage,
            new_sensors,
        ),
    }?;
    instance.declared = catalog.len();
    Ok(())
}

/// Gives the instance `state`; after it, every sensor must be declared again.
fn import(instance: &mut Instance, state: &[u8]) -> wasmtime::Result<Result<(), bindings::StageError>> {
    let stage = instance.stage;
    let result = match &instance.bindings {
        Bindings::Detector(p) => {
            p.iotstream_pipeline_detector().detector_stage().call_import_state(&mut instance.store, stage, state)?
        }
        Bindings::Aggregator(p) => {
            p.iotstream_pipeline_aggregator().aggregator_stage().call_import_state(&mut instance.store, stage, state)?
        }
    };
    instance.declared = 0;
    Ok(result)
}

/// Counts an aggregator's windows, or names the first that breaks the contract.
fn check_aggregates(aggregates: &[WindowAggregate]) -> Result<usize, String> {
    let bad = aggregates.iter().position(|a| {
        a.count == 0
            || a.window_end_ms <= a.window_start_ms
            || ![a.avg, a.min, a.max, a.stddev].iter().all(|v| v.is_finite())
    });
    match bad {
        Some(i) => Err(format!("aggregate {i} has no readings, an empty window or a non-finite statistic")),
        None => Ok(aggregates.len()),
    }
}
