//! The commands beside `iotstream run`: each module is one subcommand (its `clap` arguments, its
//! work and its report). `run` and
//! `simulate` are the data path itself ([`crate::app`], [`crate::simulate`]); everything here
//! measures, checks or scaffolds around it. [`crate::cli`] parses the command line and dispatches
//! here.
//!
//! Reports go to stdout as JSON lines (for scripts) and a one-line summary to stderr (for people).
//!
//! # Layout
//! * [`bench`]: the whole pipeline, measured ([`bench_stream`]: its dashboard client);
//!   [`bench_plugins`]: each plugin natively and as
//!   `.wasm`; [`bench_forest`]: the forest both ways; [`bench_memory`]: a plugin's memory over
//!   hours of simulated stream.
//! * [`replay`]: one detector over a recorded series; [`evaluate`]: detectors scored against labels
//!   (NAB's method, the simulator's episodes); [`iforest`]: the forest on any tabular CSV.
//! * [`plugin_check`]: a plugin author's check of a component; [`plugin_new`]: a new plugin crate.
//! * [`health`]: a running host's probe, for healthchecks.
//! * [`progress`]: the progress bars of the long commands (stderr, terminals only).

pub mod bench;
pub mod bench_forest;
pub mod bench_memory;
pub mod bench_plugins;
pub mod bench_stream;
pub mod evaluate;
pub mod health;
pub mod iforest;
pub mod plugin_check;
pub mod plugin_new;
pub mod progress;
pub mod replay;

use anyhow::Context;

/// Runs a CPU-bound command off the async runtime's workers.
pub(crate) async fn blocking<T: Send + 'static, E: std::error::Error + Send + Sync + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(work).await.context("the command's thread panicked")??)
}

/// One report as a JSON line on stdout.
pub(crate) fn print_json(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
