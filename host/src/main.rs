//! The `iotstream` binary: parses the command line, starts logging and dispatches to the library.

use anyhow::Context;
use clap::Parser;
use iotstream::cli::Cli;
use iotstream::shutdown::Signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // First of all: a SIGTERM during start-up must stop the host gracefully, not kill it.
    let signals = Signals::register();
    let cli = Cli::parse();
    cli.init_logging().context("invalid --log filter")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    cli.command.execute(shutdown).await
}
