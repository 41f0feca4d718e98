//! The `iotstream` binary: parses the command line over the config file, starts logging,
//! dispatches to the library and ends with the documented exit code ([`ExitStatus`]).

use std::process::ExitCode;

use iotstream::cli::ExitStatus;
use iotstream::config_file::{ParseError, parse_from};
use iotstream::shutdown::Signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    // First of all: a SIGTERM during start-up must stop the host gracefully, not kill it.
    let signals = Signals::register();
    let cli = match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        // Clap prints usage errors (exit 2) and --help/--version (exit 0) itself.
        Err(ParseError::Clap(err)) => err.exit(),
        Err(ParseError::Config(err)) => {
            eprintln!("error: {err}");
            return ExitStatus::Usage.into();
        }
    };
    if let Err(err) = cli.init_logging() {
        eprintln!("error: invalid --log filter: {err}");
        return ExitStatus::Usage.into();
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    let ends_on_signal = cli.command.ends_on_signal();
    let work = cli.command.execute(shutdown.clone());
    let result = if ends_on_signal {
        work.await
    } else {
        tokio::select! {
            result = work => result,
            _ = shutdown.cancelled() => {
                eprintln!("interrupted");
                // A blocking job (a replay, a forest's fit) does not watch for the signal: end the
                // process now rather than wait for it.
                std::process::exit(ExitStatus::Interrupted.code().into());
            }
        }
    };
    match result {
        Ok(()) => ExitStatus::Success.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitStatus::of_error(&err).into()
        }
    }
}
