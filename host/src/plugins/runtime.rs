//! [`PluginRuntime`]: the process's one wasmtime `Engine` and `Linker`, the thread that advances
//! the epoch (the CPU deadline's clock), and loading: a file (with its manifest) becomes a
//! [`Plugin`] of the kind the component exports, or a [`PluginError`] that says why not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ProfilingStrategy};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ContractVersion;
use super::folders::{PluginFolders, PluginLayer};
use super::limits::{EPOCH_TICK, MemoryMeter, PluginLimits};
use super::plugin::{Blueprint, Plugin};
use super::sandbox::{self, GuestClock};
use super::{PluginError, PluginSpec, output};

/// The plugins of a folder that loaded, and the (name, error) of those that did not.
pub type LoadedDir = (Vec<Plugin>, Vec<(String, PluginError)>);

/// The plugins of the built-in and drop-in folders that loaded (each knows its [`Plugin::layer`]),
/// and the (name, error) of those that did not.
#[derive(Default)]
pub struct LoadedFolders {
    /// The plugins, in name order.
    pub plugins: Vec<Plugin>,
    /// The files refused. A drop-in refused in place of a built-in is here while the built-in of
    /// its name runs (in `plugins`), as a refused file leaves the running version running.
    pub failures: Vec<(String, PluginError)>,
}

/// What every stage interface of this contract's package starts with, whatever its version.
const CONTRACT_PREFIX: &str = "iotstream:pipeline/";

/// Per-instance store data: WASI with nothing granted but the host's clock and seeded random
/// numbers, and the memory cap and meter.
pub struct StageCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: MemoryMeter,
    clock: GuestClock,
}

impl WasiView for StageCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StageCtx {
    /// Store data with `wasi` (whose clocks are `clock`) and a memory cap of `memory_bytes`.
    pub(super) fn new(wasi: WasiCtx, memory_bytes: usize, clock: GuestClock) -> Self {
        StageCtx { wasi, table: ResourceTable::new(), meter: MemoryMeter::new(memory_bytes), clock }
    }

    /// The instance's clock.
    pub(super) fn clock(&self) -> &GuestClock {
        &self.clock
    }

    /// The instance's WASI resources.
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The memory meter (the store's resource limiter).
    pub(super) fn meter(&mut self) -> &mut MemoryMeter {
        &mut self.meter
    }

    /// Linear memory in use, bytes.
    pub(super) fn memory_bytes(&self) -> usize {
        self.meter.bytes()
    }
}

/// Set (to anything but `0`), the engine writes `/tmp/perf-PID.map` naming the JIT-compiled plugin
/// functions, so that `perf record` profiles of the host show plugin code by name.
pub const PERF_MAP_ENV: &str = "IOTSTREAM_PERF_MAP";

/// The process-wide engine and linker, and the thread that advances the epoch.
pub struct PluginRuntime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<StageCtx>,
    ticker_stop: Arc<AtomicBool>,
    pub(super) limits: PluginLimits,
}

impl PluginRuntime {
    /// Creates the engine (with epoch interruption) and the linker (WASI p2, nothing granted, clock
    /// waits that never block), with the default limits.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_limits(PluginLimits::default())
    }

    /// [`new`](Self::new), with `limits` for every plugin it loads (tests shorten them).
    pub fn with_limits(limits: PluginLimits) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            // `perf report` then names the plugins' compiled functions (docs/performance.md).
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|err| runtime_error("engine", err))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|err| runtime_error("linker", err))?;
        sandbox::link_clock_waits(&mut linker).map_err(|err| runtime_error("linker", err))?;
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
            .map_err(|err| PluginError::Runtime { what: "epoch thread", message: err.to_string() })?;
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
                Err(err) => failed.push((output::display_text(&plugin_name(&path)), err)),
            }
        }
        Ok((loaded, failed))
    }

    /// Loads every plugin of `folders`: each name from the drop-in folder if it is there, else
    /// from the built-ins ([`PluginFolders::resolve`]). A drop-in that fails to load in place of a
    /// built-in is reported, and the built-in of its name loads instead; any other file that fails
    /// is reported and skipped. A configured folder that cannot be read is an error.
    pub fn load_folders(&self, folders: &PluginFolders) -> Result<LoadedFolders, PluginError> {
        let mut loaded = LoadedFolders::default();
        for (name, file) in folders.resolve()? {
            match self.load(&file.path) {
                Ok(plugin) => loaded.plugins.push(plugin.with_layer(file.layer)),
                Err(err) => {
                    loaded.failures.push((output::display_text(&name), err));
                    let builtin = folders.builtin().filter(|_| file.overrides_builtin);
                    if let Some(Ok(plugin)) = builtin.map(|dir| self.load(&dir.join(format!("{name}.wasm")))) {
                        loaded.plugins.push(plugin.with_layer(PluginLayer::BuiltIn));
                    }
                }
            }
        }
        Ok(loaded)
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
        let name = plugin_name(path);
        output::check_name("the plugin's file name", &name)
            .map_err(|message| PluginError::Unstorable { plugin: output::display_text(&name), message })?;
        if let Some(live) = &spec.manifest.shadow_of {
            output::check_name("its shadow_of", live)
                .map_err(|message| PluginError::Unstorable { plugin: name.clone(), message })?;
        }
        let limits = spec.limits(&self.limits)?;
        let env = spec.env(&self.limits.ceilings.env_allowed)?;
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
        spec.check_digest(&bytes)?;
        let component = Component::new(&self.engine, &bytes).map_err(|err| PluginError::Compile {
            path: path.to_owned(),
            message: output::display_text(&format!("{err:#}")),
        })?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let (contract, kind) = if let Some(stage) = exports.iter().find_map(|e| ContractVersion::of_export(e)) {
            stage
        } else if let Some(found) = exports.iter().find(|e| e.starts_with(CONTRACT_PREFIX)) {
            return Err(PluginError::WitVersion { path: path.to_owned(), found: found.clone() });
        } else {
            return Err(PluginError::UnknownWorld { path: path.to_owned() });
        };
        let plugin = Plugin::create(Blueprint {
            name,
            kind,
            contract,
            config: spec.config.clone(),
            component,
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            limits,
            env,
            shadow_of: spec.manifest.shadow_of.clone(),
            layer: None,
        })?;
        spec.check_component(plugin.kind(), &plugin.info().version)?;
        Ok(plugin)
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

fn runtime_error(what: &'static str, err: wasmtime::Error) -> PluginError {
    PluginError::Runtime { what, message: format!("{err:#}") }
}
