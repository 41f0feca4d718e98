//! The `iotstream` binary: parses the command line over the config file, starts logging,
//! dispatches to the library and ends with the documented exit code ([`ExitStatus`]).

use std::process::ExitCode;

use iotstream::cli::ExitStatus;
use iotstream::config_file::{ParseError, parse_from};
use iotstream::shutdown::Signals;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    keep_large_allocations_off_the_heap();
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

/// Gives glibc's `malloc` a fixed mmap threshold of 128 KiB (its initial one). By default glibc
/// raises the threshold to the size of the largest block freed, up to 32 MiB, and from then on
/// serves blocks that large from its heaps: the host's large, short-lived buffers (a batch's rows
/// and `COPY` data, a lane's megabyte of checkpointed state) then came from the heaps of whichever
/// threads made them, and each heap kept its high-water mark. With 10,000 sensors the run's peak
/// RSS fell from 278-295 MiB to 230-245 MiB (docs/performance.md). A fixed threshold is what
/// `MALLOC_MMAP_THRESHOLD_=131072` sets; set in the environment, that wins (glibc reads it first).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_large_allocations_off_the_heap() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator, which it reads under its own
    // locks; it takes plain integers and touches no memory of ours.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
    if set != 1 {
        eprintln!("warning: glibc refused mmap threshold {THRESHOLD}; memory may creep up in long runs");
    }
}

/// Other platforms' allocators have no such threshold to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_allocations_off_the_heap() {}
