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
    tracing_subscriber::fmt()
        // Colours only for a terminal: logs piped to a file or a collector stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    cli.command.execute(shutdown).await
}
