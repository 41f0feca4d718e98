//! [`PluginError`]: why a plugin could not be loaded or a call failed, one case per thing an
//! operator would do differently about it; and [`fault`], which names a runtime failure.

use std::path::PathBuf;
use std::time::Duration;

use super::bindings::ContractVersion;
use super::limits::PluginLimits;
use super::output::{display_detail, display_text};
use super::sandbox::SleptPastDeadline;

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
    /// The runtime itself could not be set up (the engine, the linker, the epoch thread): no plugin
    /// is at fault.
    #[error("plugin runtime: cannot set up the {what}: {message}")]
    Runtime {
        /// What could not be set up.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The file is not a component wasmtime can compile.
    #[error("{path} is not a valid component: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// The compiler's reason.
        message: String,
    },
    /// The component exports no stage interface of the contract.
    #[error(
        "{path} exports no iotstream stage (iotstream:pipeline/detector or iotstream:pipeline/aggregator, \
         contract version {versions})",
        versions = ContractVersion::all_numbers()
    )]
    UnknownWorld {
        /// The file.
        path: PathBuf,
    },
    /// The component was built against a version of the contract this host does not run.
    #[error(
        "{path} was built against {found}; this host runs contract versions {versions}",
        versions = ContractVersion::all_numbers()
    )]
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
    /// A call slept (a blocking WASI call, which the CPU deadline does not interrupt) for longer in
    /// total than its deadline. The host's clock lets no sleep block, so this cost no time.
    #[error(
        "plugin {plugin} blocked in a WASI call (a sleep of {asked:?} in one call) past its deadline of {deadline:?} per call"
    )]
    Blocked {
        /// The plugin.
        plugin: String,
        /// The sleeps of the call, added up.
        asked: Duration,
        /// The deadline.
        deadline: Duration,
    },
    /// The instance tried to grow its linear memories past the cap, which traps.
    #[error("plugin {plugin} tried to grow its memory to {requested} bytes, past its cap of {limit} bytes")]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// The size it asked for, all its memories together, bytes.
        requested: usize,
        /// The cap, bytes.
        limit: usize,
    },
    /// The plugin's name, or the name or version its `stage-info` reports, cannot be stored: too
    /// long for its column, or holding a control character. It is not loaded.
    #[error("plugin {plugin} cannot be loaded: {message}")]
    Unstorable {
        /// The plugin.
        plugin: String,
        /// What does not fit.
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

    /// The error as the API shows it: what happened, without the host's file paths (a file is
    /// named by its name) or a trap's wasm backtrace (its cause only). The full error goes to the
    /// log.
    pub fn public(&self) -> String {
        let file =
            |path: &PathBuf| path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        let first_line = |text: &str| text.lines().next().unwrap_or_default().to_owned();
        let shown = match self {
            PluginError::Read { path, source } => format!("cannot read {}: {}", file(path), source.kind()),
            PluginError::Compile { path, message } => {
                format!("{} is not a valid component: {}", file(path), first_line(message))
            }
            PluginError::UnknownWorld { path } => PluginError::UnknownWorld { path: file(path).into() }.to_string(),
            PluginError::WitVersion { path, found } => {
                PluginError::WitVersion { path: file(path).into(), found: found.clone() }.to_string()
            }
            PluginError::Manifest { path, message } => format!("plugin manifest {}: {message}", file(path)),
            // The cause comes first, then "; " and what wraps it (the wasm backtrace).
            PluginError::Trap { plugin, message } => {
                format!("plugin {plugin} trapped: {}", message.split("; ").next().unwrap_or_default())
            }
            other => other.to_string(),
        };
        display_detail(&shown)
    }
}

/// Names a runtime failure of `plugin`: a sleep past the deadline, the memory cap when the limiter
/// refused a growth during the call (`refused`, the size asked for), the deadline for an epoch
/// interrupt, else a trap (whose message, which may quote the plugin, is made fit to show).
pub(super) fn fault(plugin: &str, limits: &PluginLimits, err: wasmtime::Error, refused: Option<usize>) -> PluginError {
    let plugin = plugin.to_owned();
    if let Some(slept) = err.downcast_ref::<SleptPastDeadline>() {
        PluginError::Blocked { plugin, asked: slept.asked, deadline: limits.call_deadline }
    } else if let Some(requested) = refused {
        PluginError::MemoryLimit { plugin, requested, limit: limits.memory_bytes }
    } else if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        PluginError::Deadline { plugin, deadline: limits.call_deadline }
    } else {
        PluginError::Trap { plugin, message: trap_message(&err) }
    }
}

/// A trap's message fit to show: its cause first (a trap code, a host error), then what wraps it
/// (the wasm backtrace, which names the plugin's functions), control characters out, shortened.
fn trap_message(err: &wasmtime::Error) -> String {
    let cause = err.root_cause().to_string();
    if err.chain().count() > 1 { display_text(&format!("{cause}; {err}")) } else { display_text(&cause) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_form_names_files_not_paths_and_traps_by_their_cause() {
        let compile = PluginError::Compile {
            path: "/srv/iotstream/plugins/broken.wasm".into(),
            message: "failed to parse WebAssembly module\n\nCaused by: magic header not detected".into(),
        };
        assert_eq!(compile.public(), "broken.wasm is not a valid component: failed to parse WebAssembly module");
        let trap = PluginError::Trap {
            plugin: "misbehaving".into(),
            message: "wasm trap: wasm `unreachable` instruction executed; error while executing at wasm backtrace: \
                      0: 0x1f2 - misbehaving::detect"
                .into(),
        };
        assert_eq!(trap.public(), "plugin misbehaving trapped: wasm trap: wasm `unreachable` instruction executed");
        let read = PluginError::Read {
            path: "/srv/iotstream/plugins/gone.wasm".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(read.public(), "cannot read gone.wasm: entity not found");
    }
}
