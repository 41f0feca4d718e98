//! The command line of the `iotstream` binary and the dispatch of a parsed command to the module that
//! does it (here, in the library, so tests can check that `docker-compose.yml` sets only variables it
//! knows).

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::commands::bench::BenchConfig;
use crate::commands::bench_forest::BenchForestConfig;
use crate::commands::bench_plugins::BenchPluginsConfig;
use crate::commands::evaluate::EvaluateConfig;
use crate::commands::health::HealthConfig;
use crate::commands::iforest::IforestConfig;
use crate::commands::plugin_check::CheckConfig;
use crate::commands::plugin_new::NewConfig;
use crate::commands::replay::ReplayConfig;
use crate::commands::{
    bench, bench_forest, bench_plugins, blocking, evaluate, health, iforest, plugin_check, plugin_new, print_json,
    replay,
};
use crate::config::RunConfig;
use crate::simulate::SimulateConfig;

/// A real-time IoT monitoring pipeline: Kafka in, WebAssembly plugins, PostgreSQL out, live dashboard.
#[derive(Parser)]
#[command(name = "iotstream", version)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "IOTSTREAM_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log lines as text (for people) or JSON objects (for a log collector). Logs go to stderr;
    /// stdout carries only the commands' reports.
    #[arg(long, env = "IOTSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (coloured on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, the message and fields, the spans.
    Json,
}

impl Cli {
    /// Starts logging to stderr in the chosen format, filtered by `--log`.
    pub fn init_logging(&self) -> Result<(), tracing_subscriber::filter::ParseError> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)?;
        let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
        match self.log_format {
            // Colours only for a terminal: logs piped to a file or a collector stay plain text.
            LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
            LogFormat::Json => builder.json().with_current_span(false).init(),
        }
        Ok(())
    }
}

/// `iotstream plugin ...`.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Load a component as the host would, run it on simulated readings, check its output and its
    /// state hand-off.
    Check(CheckConfig),
    /// Scaffold a plugin crate that builds as it is, in any folder (a documented detector, or with
    /// --kind aggregator an aggregator, with a unit test, a manifest, the SDK and the WIT contract
    /// of this binary, and a README).
    New(NewConfig),
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the pipeline, the API and the dashboard (with no --brokers: an embedded broker and simulator too).
    Run(Box<RunConfig>),
    /// Measure the whole pipeline: embedded broker, simulator, plugins, a scratch database.
    Bench(Box<BenchConfig>),
    /// Time the Isolation Forest's fit and score on labelled CSVs, natively and as `.wasm`.
    BenchForest(BenchForestConfig),
    /// Measure each plugin alone: its algorithm natively and its `.wasm` through the host.
    BenchPlugins(BenchPluginsConfig),
    /// Ask a running host's probe (`/readyz`, or `/healthz`): exit 0 when it passes, 1 when not.
    Health(HealthConfig),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Fit the Isolation Forest on a tabular CSV and write one score per row (and the ROC AUC).
    Iforest(IforestConfig),
    /// Run one detector plugin over a recorded `timestamp,value` CSV and write its scores.
    Replay(ReplayConfig),
    /// Score detector plugins against labels: a corpus in NAB's layout (NAB's standard, low-FP and
    /// low-FN scores, per category) and the simulator's labelled stream.
    Evaluate(EvaluateConfig),
    /// Produce simulated sensor readings to a Kafka topic.
    Simulate {
        /// Kafka bootstrap servers.
        #[arg(long, env = "IOTSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Topic to produce to.
        #[arg(long, env = "IOTSTREAM_TOPIC", default_value = "iot_sensors")]
        topic: String,
        /// The fleet and its pace.
        #[command(flatten)]
        simulate: SimulateConfig,
    },
}

impl Command {
    /// Runs the command until it is done or `shutdown` is cancelled, printing its report.
    pub async fn execute(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        match self {
            Command::Run(config) => Ok(crate::app::start(&config, shutdown).await?),
            Command::Bench(config) => bench::print(&bench::bench(&config).await?),
            Command::BenchForest(config) => {
                let timings = blocking(move || bench_forest::bench_forest(&config)).await?;
                timings.iter().try_for_each(print_json)
            }
            Command::BenchPlugins(config) => {
                bench_plugins::print(&blocking(move || bench_plugins::bench_plugins(&config)).await?)
            }
            Command::Health(config) => {
                println!("{}", health::check(&config).await?);
                Ok(())
            }
            Command::Plugin(PluginCommand::New(config)) => plugin_new::print(&config, plugin_new::scaffold(&config)?),
            Command::Plugin(PluginCommand::Check(config)) => {
                plugin_check::print(&blocking(move || plugin_check::check(&config)).await?)
            }
            Command::Iforest(config) => iforest::print(&blocking(move || iforest::iforest(&config)).await?),
            Command::Replay(config) => replay::print(&blocking(move || replay::replay(&config)).await?),
            Command::Evaluate(config) => evaluate::print(&blocking(move || evaluate::evaluate(&config)).await?),
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
}
