//! Loading and running the WebAssembly component plugins that do every processing stage.
//!
//! One [`PluginRuntime`] per process holds the wasmtime `Engine` and `Linker`. Each `.wasm` file of
//! the plugins folders (the built-ins, overridden by name by the drop-ins) becomes a [`Plugin`]:
//! one long-lived `Store` with one stage instance, its configuration (its manifest `NAME.toml`, or
//! a bare `NAME.json`, beside `NAME.wasm`; `{}` when absent), its sensor-declaration progress and
//! its metrics. Every call runs under a memory cap and a CPU deadline; a trap, a refused call or
//! malformed output is a [`PluginError`] for that plugin alone, never a host crash.
//!
//! Fault isolation: [`Plugin::export_state`] (the pipeline's checkpoints, or [`Plugin::snapshot`])
//! keeps the exported bytes as the plugin's last good state. A trap or malformed output drops the
//! instance; the next call re-creates it and imports the last good state. Every failure extends the
//! plugin's failure streak: it backs off (its calls are skipped, [`PluginError::BackingOff`]), and
//! after [`QUARANTINE_AFTER`] failures in a row it is quarantined ([`PluginError::Quarantined`])
//! until [`Plugin::release_quarantine`]. A successful call ends the streak.
//!
//! # Layout
//! * `runtime`: [`PluginRuntime`] (engine, linker, epoch thread) and loading a file;
//! * `plugin`: [`Plugin`], its instance and every call, checked and counted;
//! * `stage`: one trait over the two generated stage worlds, so the kind is matched once;
//! * `sandbox`: the host's clock and seeded random numbers for plugins, and clock waits that never
//!   block; [`output`]: what a plugin's answers must be to be stored and shown;
//! * `error`: [`PluginError`]; `command`: WASI commands (tools, not stages);
//! * [`bindings`] (the one `bindgen!` per WIT world), [`catalog`] (sensor keys), [`manifest`
//!   ](PluginSpec) (`NAME.toml`), [`folders`] (the built-in and drop-in folders, and which file a
//!   name loads from), [`watch`] (a plugins folder's changes), `limits` ([`PluginLimits`], the
//!   memory meter), `health` (backoff and quarantine), `metrics` ([`PluginMetrics`]).

pub mod bindings;
pub mod catalog;
mod command;
mod error;
pub mod folders;
mod health;
mod limits;
mod manifest;
mod metrics;
pub mod output;
mod plugin;
mod runtime;
mod sandbox;
mod stage;
pub mod watch;

pub use self::catalog::SensorCatalog;
pub use self::error::PluginError;
pub use self::folders::{PluginFile, PluginFolders, PluginLayer};
pub use self::health::{Clock, PluginState};
pub use self::limits::{
    BACKOFF_INITIAL, BACKOFF_MAX, CALL_DEADLINE, INSTANCES_MAX, MEMORIES_MAX, MEMORY_LIMIT_BYTES, PluginCeilings,
    PluginLimits, QUARANTINE_AFTER, READINGS_PER_CALL, TABLE_ELEMENTS_MAX, TABLES_MAX,
};
pub use self::manifest::{Grants, Manifest, ManifestLimits, PluginSpec};
pub use self::metrics::{CallTimes, PluginMetrics};
pub use self::plugin::{Plugin, memory_ceiling};
pub use self::runtime::{LoadedDir, LoadedFolders, PluginRuntime, StageCtx, plugin_name};

/// The kind of stage a plugin is, from the interface it exports.
pub use iotstream_api::StageKind;
