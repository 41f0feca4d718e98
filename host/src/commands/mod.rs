//! The commands beside `iotstream run`: each module is one subcommand (its `clap` arguments, its
//! work and its report), and [`execute`] dispatches a parsed command line to them. `run` and
//! `simulate` are the data path itself ([`crate::app`], [`crate::simulate`]); everything here
//! measures, checks or scaffolds around it.
//!
//! Reports go to stdout as JSON lines (for scripts) and a one-line summary to stderr (for people).
//!
//! # Layout
//! * [`bench`]: the whole pipeline, measured; [`bench_plugins`]: each plugin natively and as
//!   `.wasm`; [`bench_forest`]: the forest both ways.
//! * [`replay`]: one detector over a recorded series; [`iforest`]: the forest on any tabular CSV.
//! * [`plugin_check`]: a plugin author's check of a component; [`plugin_new`]: a new plugin crate.

pub mod bench;
pub mod bench_forest;
pub mod bench_plugins;
pub mod iforest;
pub mod plugin_check;
pub mod plugin_new;
pub mod replay;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, PluginCommand};

/// Runs `command` until it is done or `shutdown` is cancelled, printing its report.
pub async fn execute(command: Command, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Run(config) => Ok(crate::app::start(&config, shutdown).await?),
        Command::Bench(config) => bench::print(&bench::bench(&config).await?),
        Command::BenchForest(config) => {
            let timings = blocking(move || bench_forest::bench_forest(&config)).await?;
            timings.iter().try_for_each(print_json)
        }
        Command::BenchPlugins(config) => {
            bench_plugins::print(&blocking(move || bench_plugins::bench_plugins(&config)).await?)
        }
        Command::Plugin(PluginCommand::New(config)) => plugin_new::print(&config, plugin_new::scaffold(&config)?),
        Command::Plugin(PluginCommand::Check(config)) => {
            plugin_check::print(&blocking(move || plugin_check::check(&config)).await?)
        }
        Command::Iforest(config) => iforest::print(&blocking(move || iforest::iforest(&config)).await?),
        Command::Replay(config) => replay::print(&blocking(move || replay::replay(&config)).await?),
        Command::Simulate { brokers, topic, simulate } => {
            let report = crate::simulate::run(&simulate, &brokers, &topic, shutdown).await?;
            println!(
                "produced {} readings ({} delivered, {} failed, {} labelled anomalous)",
                report.fleet.readings, report.delivered, report.failed, report.fleet.anomalous
            );
            Ok(())
        }
    }
}

/// Runs a CPU-bound command off the async runtime's workers.
async fn blocking<T: Send + 'static, E: std::error::Error + Send + Sync + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(work).await.context("the command's thread panicked")??)
}

/// One report as a JSON line on stdout.
fn print_json(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
