//! Loading and running the WebAssembly component plugins that do every processing stage.
//!
//! One [`PluginRuntime`] per process holds the wasmtime `Engine` and `Linker`. Each `.wasm` file in
//! the plugins folder becomes a [`Plugin`]: one long-lived `Store` with one stage instance, its
//! configuration (`NAME.json` beside `NAME.wasm`, `{}` when absent), its sensor-declaration
//! progress and its metrics. Every call runs under a memory cap and a CPU deadline; a trap, a refused
//! call or malformed output is a [`PluginError`] for that plugin alone, never a host crash.
//!
//! Layout: [`bindings`] (the one `bindgen!` per WIT world), [`catalog`] (sensor keys), this module
//! (runtime, loading, calls).

pub mod bindings;
pub mod catalog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::bindings::aggregator::AggregatorPlugin;
use self::bindings::detector::DetectorPlugin;
use self::bindings::{AGGREGATOR_EXPORT, DETECTOR_EXPORT, Detection, Reading, StageInfo, WindowAggregate};
pub use self::catalog::SensorCatalog;

/// Memory a stage instance may grow to. 256 MiB holds an Isolation Forest per sensor type with its
/// training rows many times over, and keeps a runaway plugin from taking the host down.
const MEMORY_LIMIT_BYTES: usize = 256 << 20;
/// How often the engine's epoch advances; the unit of the CPU deadline.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// CPU deadline of one call, in epoch ticks (5 s): a batch of thousands of readings with a forest
/// retraining takes well under a second, so only a stuck plugin reaches it.
const CALL_DEADLINE_TICKS: u64 = 500;

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
    /// Instantiating, or a call, trapped or failed in the runtime (deadline, memory cap, panic).
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// What the runtime reported.
        message: String,
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
}

/// The kind of stage a plugin is, from the interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Exports `detector`.
    Detector,
    /// Exports `aggregator`.
    Aggregator,
}

/// Per-instance store data: WASI with nothing granted, and the memory cap.
pub struct StageCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
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
}

impl PluginRuntime {
    /// Creates the engine (with epoch interruption) and the linker (WASI p2, nothing granted).
    pub fn new() -> Result<Self, PluginError> {
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
        Ok(PluginRuntime { engine, linker, ticker_stop })
    }

    /// Loads every `*.wasm` in `dir`, in name order. A file that fails to load is reported in the
    /// second list and skipped; the others still load.
    pub fn load_dir(&self, dir: &Path) -> Result<(Vec<Plugin>, Vec<PluginError>), PluginError> {
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
                Err(err) => failed.push(err),
            }
        }
        Ok((loaded, failed))
    }

    /// Compiles and instantiates one plugin file, with the configuration beside it.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        self.load_with_config(path, None)
    }

    /// Compiles and instantiates one plugin file with `config`, or (`None`) the configuration beside it.
    pub fn load_with_config(&self, path: &Path, config: Option<String>) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
        let component = Component::new(&self.engine, &bytes)
            .map_err(|err| PluginError::Compile { path: path.to_owned(), message: format!("{err:#}") })?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let kind = if exports.iter().any(|e| e == DETECTOR_EXPORT) {
            StageKind::Detector
        } else if exports.iter().any(|e| e == AGGREGATOR_EXPORT) {
            StageKind::Aggregator
        } else {
            return Err(PluginError::UnknownWorld { path: path.to_owned() });
        };
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let config_path = path.with_extension("json");
        let config = match config {
            Some(config) => config,
            None => match std::fs::read_to_string(&config_path) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => "{}".to_owned(),
                Err(source) => return Err(PluginError::Read { path: config_path, source }),
            },
        };
        let mut plugin = Plugin {
            name,
            kind,
            info: StageInfo { name: String::new(), version: String::new(), state_version: 0 },
            config,
            component,
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            instance: None,
            metrics: PluginMetrics::default(),
        };
        plugin.instantiate()?;
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
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT_BYTES).build(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
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

fn runtime_error(what: &str, err: wasmtime::Error) -> PluginError {
    PluginError::Trap { plugin: format!("<{what}>"), message: format!("{err:#}") }
}

/// Counters of one plugin, since it was loaded.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PluginMetrics {
    /// Calls made (declare, detect, aggregate, tick).
    pub calls: u64,
    /// Readings passed in.
    pub readings_in: u64,
    /// Detections or aggregates returned.
    pub outputs: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Times the instance was re-created after a trap.
    pub restarts: u64,
    /// Total time in calls, microseconds.
    pub busy_micros: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// A running instance: its store and the handle of its stage resource.
struct Instance {
    store: Store<StageCtx>,
    stage: ResourceAny,
    bindings: Bindings,
    /// Keys of the host catalog this instance was told about.
    declared: usize,
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

    /// What the stage says about itself.
    pub fn info(&self) -> &StageInfo {
        &self.info
    }

    /// Its counters.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
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
            metrics: PluginMetrics::default(),
        };
        plugin.instantiate()?;
        Ok(plugin)
    }

    /// Creates a fresh store and stage instance from the configuration.
    fn instantiate(&mut self) -> Result<(), PluginError> {
        let ctx = StageCtx {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT_BYTES).trap_on_grow_failure(true).build(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let trap = |err: wasmtime::Error| PluginError::Trap { plugin: self.name.clone(), message: format!("{err:#}") };
        let refused = |err: bindings::StageError| PluginError::Refused {
            plugin: self.name.clone(),
            message: bindings::describe(&err),
        };
        let (bindings, info, created) = match self.kind {
            StageKind::Detector => {
                let plugin = DetectorPlugin::instantiate(&mut store, &self.component, &self.linker).map_err(trap)?;
                let guest = plugin.iotstream_pipeline_detector();
                let info = guest.call_info(&mut store).map_err(trap)?;
                let created = guest.detector_stage().call_create(&mut store, &self.config).map_err(trap)?;
                (Bindings::Detector(plugin), info, created)
            }
            StageKind::Aggregator => {
                let plugin = AggregatorPlugin::instantiate(&mut store, &self.component, &self.linker).map_err(trap)?;
                let guest = plugin.iotstream_pipeline_aggregator();
                let info = guest.call_info(&mut store).map_err(trap)?;
                let created = guest.aggregator_stage().call_create(&mut store, &self.config).map_err(trap)?;
                (Bindings::Aggregator(plugin), info, created)
            }
        };
        let stage = created.map_err(refused)?;
        self.info = info;
        self.instance = Some(Instance { store, stage, bindings, declared: 0 });
        Ok(())
    }

    /// Runs `call` on the live instance (re-creating it first if a trap destroyed it), with a fresh
    /// deadline, declaring new sensors first, and keeps the metrics.
    fn call<T>(
        &mut self,
        catalog: &SensorCatalog,
        readings: usize,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, bindings::StageError>>,
        outputs: impl Fn(&T) -> usize,
    ) -> Result<T, PluginError> {
        if self.instance.is_none() {
            self.metrics.restarts += 1;
            self.instantiate().inspect_err(|err| self.record_error(err))?;
        }
        let started = Instant::now();
        let result = self.call_live(catalog, call);
        self.metrics.calls += 1;
        self.metrics.readings_in += readings as u64;
        self.metrics.busy_micros += started.elapsed().as_micros() as u64;
        match result {
            Ok(value) => {
                self.metrics.outputs += outputs(&value) as u64;
                Ok(value)
            }
            Err(err) => {
                if matches!(err, PluginError::Trap { .. }) {
                    // A trapped instance may be in any state: drop it; the next call starts afresh.
                    self.instance = None;
                }
                self.record_error(&err);
                Err(err)
            }
        }
    }

    fn call_live<T>(
        &mut self,
        catalog: &SensorCatalog,
        call: impl FnOnce(&mut Instance) -> wasmtime::Result<Result<T, bindings::StageError>>,
    ) -> Result<T, PluginError> {
        let name = self.name.clone();
        let trap = |err: wasmtime::Error| PluginError::Trap { plugin: name.clone(), message: format!("{err:#}") };
        let Some(instance) = self.instance.as_mut() else {
            return Err(PluginError::Trap { plugin: self.name.clone(), message: "no live instance".into() });
        };
        instance.store.set_epoch_deadline(CALL_DEADLINE_TICKS);
        let new_sensors = catalog.since(instance.declared);
        if !new_sensors.is_empty() {
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
            }
            .map_err(&trap)?;
            instance.declared = catalog.len();
        }
        call(instance)
            .map_err(&trap)?
            .map_err(|err| PluginError::Refused { plugin: self.name.clone(), message: bindings::describe(&err) })
    }

    fn record_error(&mut self, err: &PluginError) {
        self.metrics.errors += 1;
        self.metrics.last_error = Some(err.to_string());
    }

    /// Runs a detector over a batch: one detection per reading, every score finite.
    pub fn detect(&mut self, catalog: &SensorCatalog, readings: &[Reading]) -> Result<Vec<Detection>, PluginError> {
        let detections = self.call(
            catalog,
            readings.len(),
            |instance| match &instance.bindings {
                Bindings::Detector(p) => Ok(p.iotstream_pipeline_detector().detector_stage().call_detect(
                    &mut instance.store,
                    instance.stage,
                    readings,
                )?),
                Bindings::Aggregator(_) => Ok(Err(bindings::StageError::InvalidInput("not a detector".into()))),
            },
            Vec::len,
        )?;
        let problem = if detections.len() != readings.len() {
            Some(format!("{} detections for {} readings", detections.len(), readings.len()))
        } else {
            detections.iter().position(|d| !d.score.is_finite()).map(|i| format!("score of reading {i} is not finite"))
        };
        match problem {
            Some(message) => {
                let err = PluginError::MalformedOutput { plugin: self.name.clone(), message };
                self.record_error(&err);
                Err(err)
            }
            None => Ok(detections),
        }
    }

    /// Runs an aggregator over a batch; returns the windows it closed.
    pub fn aggregate(
        &mut self,
        catalog: &SensorCatalog,
        readings: &[Reading],
    ) -> Result<Vec<WindowAggregate>, PluginError> {
        let aggregates = self.call(
            catalog,
            readings.len(),
            |instance| match &instance.bindings {
                Bindings::Aggregator(p) => Ok(p.iotstream_pipeline_aggregator().aggregator_stage().call_aggregate(
                    &mut instance.store,
                    instance.stage,
                    readings,
                )?),
                Bindings::Detector(_) => Ok(Err(bindings::StageError::InvalidInput("not an aggregator".into()))),
            },
            Vec::len,
        )?;
        self.check_aggregates(aggregates)
    }

    /// Tells an aggregator the processing time; returns the windows it closed for idleness.
    pub fn tick(&mut self, catalog: &SensorCatalog, now_ms: i64) -> Result<Vec<WindowAggregate>, PluginError> {
        let aggregates = self.call(
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
            Vec::len,
        )?;
        self.check_aggregates(aggregates)
    }

    fn check_aggregates(&mut self, aggregates: Vec<WindowAggregate>) -> Result<Vec<WindowAggregate>, PluginError> {
        let bad = aggregates.iter().position(|a| {
            a.count == 0
                || a.window_end_ms <= a.window_start_ms
                || ![a.avg, a.min, a.max, a.stddev].iter().all(|v| v.is_finite())
        });
        match bad {
            Some(i) => {
                let err = PluginError::MalformedOutput {
                    plugin: self.name.clone(),
                    message: format!("aggregate {i} has no readings, an empty window or a non-finite statistic"),
                };
                self.record_error(&err);
                Err(err)
            }
            None => Ok(aggregates),
        }
    }

    /// The stage's complete state.
    pub fn export_state(&mut self, catalog: &SensorCatalog) -> Result<Vec<u8>, PluginError> {
        self.call(
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
            |_| 0,
        )
    }

    /// Replaces the stage's state; every sensor is declared again before the next call.
    pub fn import_state(&mut self, catalog: &SensorCatalog, state: &[u8]) -> Result<(), PluginError> {
        self.call(
            catalog,
            0,
            |instance| {
                let stage = instance.stage;
                let result = match &instance.bindings {
                    Bindings::Detector(p) => p.iotstream_pipeline_detector().detector_stage().call_import_state(
                        &mut instance.store,
                        stage,
                        state,
                    )?,
                    Bindings::Aggregator(p) => p.iotstream_pipeline_aggregator().aggregator_stage().call_import_state(
                        &mut instance.store,
                        stage,
                        state,
                    )?,
                };
                instance.declared = 0;
                Ok(result)
            },
            |_| 0,
        )
    }
}
