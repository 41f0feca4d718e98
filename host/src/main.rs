//! The `iotstream` binary: parses the command line, starts logging, and calls the library.

use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use clap::Parser;
use iotstream::cli::{Cli, Command, PluginCommand};
use iotstream::config::RunConfig;
use iotstream::store::Store;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    match cli.command {
        Command::Run(config) => run(*config, shutdown).await,
        Command::Bench(config) => {
            let report = iotstream::bench::bench(&config).await?;
            println!("{}", serde_json::to_string(&report)?);
            eprintln!(
                "{} of {} readings stored in {:.1} s: {:.0} readings/s; latency p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms; peak RSS {:.0} MiB",
                report.readings,
                report.produced,
                report.seconds,
                report.readings_per_s,
                report.latency_ms_p50,
                report.latency_ms_p95,
                report.latency_ms_p99,
                report.peak_rss_mib
            );
            Ok(())
        }
        Command::BenchForest(config) => {
            let timings = tokio::task::spawn_blocking(move || iotstream::bench_forest::bench_forest(&config)).await??;
            for t in &timings {
                println!("{}", serde_json::to_string(t)?);
            }
            Ok(())
        }
        Command::BenchPlugins(config) => {
            let results =
                tokio::task::spawn_blocking(move || iotstream::bench_plugins::bench_plugins(&config)).await??;
            for r in &results {
                println!("{}", serde_json::to_string(r)?);
                eprintln!(
                    "{:<17} native {:>12.0} readings/s   wasm {:>12.0} readings/s   ({:.2}x)   longest call {:.2} ms   \
                     load {:.0} ms   new instance {:.2} ms   call overhead {:.1} us",
                    r.plugin,
                    r.native_readings_per_s,
                    r.wasm_readings_per_s,
                    r.native_readings_per_s / r.wasm_readings_per_s,
                    r.longest_native_call_ms,
                    r.load_ms,
                    r.instantiate_ms,
                    r.call_overhead_us
                );
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::New(config)) => {
            let (dir, files) = iotstream::plugin_new::scaffold(&config)?;
            for file in &files {
                println!("{}", file.display());
            }
            eprintln!(
                "created plugin {} in {}: `cargo test` there runs its unit test, \
                 `cargo build --target wasm32-wasip2 --release` builds it (see its README.md)",
                config.name,
                dir.display()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Check(config)) => {
            let report = tokio::task::spawn_blocking(move || iotstream::plugin_check::check(&config)).await??;
            println!("{}", serde_json::to_string(&report)?);
            eprintln!(
                "ok: {} {} {} handled {} readings ({} anomalies, {} warming up, {} windows); its {}-byte state loads into a fresh instance",
                report.kind,
                report.name,
                report.version,
                report.readings,
                report.anomalies,
                report.warming_up,
                report.windows,
                report.state_bytes
            );
            Ok(())
        }
        Command::Iforest(config) => {
            let summary = tokio::task::spawn_blocking(move || iotstream::iforest::iforest(&config)).await??;
            let auc = summary.auc.map(|auc| format!(" auc={auc:.5}")).unwrap_or_default();
            println!(
                "rows={} features={} fit_score_ms={:.2}{auc}",
                summary.rows, summary.features, summary.fit_score_ms
            );
            Ok(())
        }
        Command::Replay(config) => {
            let summary = tokio::task::spawn_blocking(move || iotstream::replay::replay(&config)).await??;
            eprintln!(
                "replayed {} rows: {} anomalies{}",
                summary.rows,
                summary.anomalies,
                if summary.rescaled { " (scores mapped through s / (1 + s))" } else { "" }
            );
            Ok(())
        }
        Command::Simulate { brokers, topic, simulate } => {
            let report = iotstream::simulate::run(&simulate, &brokers, &topic, shutdown).await?;
            println!(
                "produced {} readings ({} delivered, {} failed, {} labelled anomalous)",
                report.fleet.readings, report.delivered, report.failed, report.fleet.anomalous
            );
            Ok(())
        }
    }
}

async fn run(config: RunConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::new(connect(&config.database_url).await?);
    store.migrate().await.context("migrating the database")?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let embedded;
    let brokers = match &config.brokers {
        Some(brokers) => brokers.clone(),
        None => {
            embedded = iotstream::app::start_embedded(&config, shutdown.clone()).await?;
            embedded.bootstrap_servers().to_owned()
        }
    };
    iotstream::app::run(&config, store, listener, &brokers, shutdown).await?;
    Ok(())
}

/// Connects to PostgreSQL, retrying for about a minute (in docker-compose the database may start
/// after iotstream).
async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let attempt = || PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(5)).connect(url);
    let backoff = ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(15);
    attempt
        .retry(backoff)
        .notify(|err, delay| warn!(error = %err, retry_in = ?delay, "database not reachable yet"))
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// The signals that stop the host, registered when created (so none is missed while it starts).
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        #[cfg(unix)]
        let listen = |kind| tokio::signal::unix::signal(kind).ok();
        Signals {
            #[cfg(unix)]
            interrupt: listen(tokio::signal::unix::SignalKind::interrupt()),
            #[cfg(unix)]
            terminate: listen(tokio::signal::unix::SignalKind::terminate()),
        }
    }

    /// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM.
    #[cfg(unix)]
    async fn cancel_on_signal(self, shutdown: CancellationToken) {
        async fn received(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = received(self.interrupt) => {},
            _ = received(self.terminate) => {},
        }
        info!("shutdown requested");
        shutdown.cancel();
    }

    /// Cancels `shutdown` on Ctrl-C.
    #[cfg(not(unix))]
    async fn cancel_on_signal(self, shutdown: CancellationToken) {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown requested");
        shutdown.cancel();
    }
}
