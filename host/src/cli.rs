//! The command line of the `iotstream` binary and the dispatch of a parsed command to the module that
//! does it (here, in the library, so tests can check that `docker-compose.yml` sets only variables it
//! knows).

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::commands::bench::BenchConfig;
use crate::commands::bench_forest::BenchForestConfig;
use crate::commands::bench_memory::BenchMemoryConfig;
use crate::commands::bench_plugins::BenchPluginsConfig;
use crate::commands::evaluate::EvaluateConfig;
use crate::commands::health::HealthConfig;
use crate::commands::iforest::IforestConfig;
use crate::commands::plugin_check::CheckConfig;
use crate::commands::plugin_new::NewConfig;
use crate::commands::replay::ReplayConfig;
use crate::commands::{
    bench, bench_forest, bench_memory, bench_plugins, blocking, evaluate, health, iforest, plugin_check, plugin_new,
    print_json, replay,
};
use crate::config::{KafkaOptions, RunConfig, heading};
use crate::kafka::KafkaOption;
use crate::simulate::SimulateConfig;

/// A real-time IoT monitoring pipeline: Kafka in, WebAssembly plugins, PostgreSQL out, live dashboard.
#[derive(Parser)]
#[command(name = "iotstream", version, after_help = ROOT_EXAMPLES)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "IOTSTREAM_LOG", default_value = "info", global = true, help_heading = heading::LOGGING)]
    pub log: String,
    /// Log lines as text (for people) or JSON objects (for a log collector). Logs go to stderr;
    /// stdout carries only the commands' reports.
    #[arg(
        long,
        env = "IOTSTREAM_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true,
        help_heading = heading::LOGGING
    )]
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
    #[command(after_help = PLUGIN_CHECK_EXAMPLES)]
    Check(CheckConfig),
    /// Scaffold a plugin crate that builds as it is, in any folder (a documented detector, or with
    /// --kind aggregator an aggregator, with a unit test, a manifest, the SDK and the WIT contract
    /// of this binary, and a README).
    #[command(after_help = PLUGIN_NEW_EXAMPLES)]
    New(NewConfig),
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the pipeline, the API and the dashboard (with no --brokers: an embedded broker and simulator too).
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunConfig>),
    /// Print the effective configuration of `run` (defaults, config file, environment, flags) as a
    /// TOML config file, each value with its source, secrets masked.
    #[command(after_help = CONFIG_EXAMPLES)]
    Config(Box<ShowConfig>),
    /// Measure the whole pipeline: embedded broker, simulator, plugins, a scratch database.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(Box<BenchConfig>),
    /// Time the Isolation Forest's fit and score on labelled CSVs, natively and as `.wasm`.
    BenchForest(BenchForestConfig),
    /// Measure each plugin alone: its algorithm and its SDK stage natively, its `.wasm` through the host.
    BenchPlugins(BenchPluginsConfig),
    /// Replay hours of simulated stream through a plugin's instances (one a lane, checkpointed as
    /// `run` does) in a minute or two: their linear memory as it goes.
    BenchMemory(BenchMemoryConfig),
    /// Ask a running host's probe (`/readyz`, or `/healthz`): exit 0 when it passes, 3 when not.
    Health(HealthConfig),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Fit the Isolation Forest on a tabular CSV and write one score per row (and the ROC AUC).
    Iforest(IforestConfig),
    /// Run one detector plugin over a recorded `timestamp,value` CSV and write its scores.
    #[command(after_help = REPLAY_EXAMPLES)]
    Replay(ReplayConfig),
    /// Score detector plugins against labels: a corpus in NAB's layout (NAB's standard, low-FP and
    /// low-FN scores, per category) and the simulator's labelled stream.
    Evaluate(EvaluateConfig),
    /// Produce simulated sensor readings to a Kafka topic.
    #[command(after_help = SIMULATE_EXAMPLES)]
    Simulate {
        /// Kafka bootstrap servers.
        #[arg(long, env = "IOTSTREAM_BROKERS", default_value = "127.0.0.1:9092", help_heading = heading::KAFKA)]
        brokers: String,
        /// Topic to produce to.
        #[arg(long, env = "IOTSTREAM_TOPIC", default_value = "iot_sensors", help_heading = heading::KAFKA)]
        topic: String,
        /// Options of the producer (TLS, SASL...).
        #[command(flatten)]
        kafka: KafkaOptions,
        /// The fleet and its pace.
        #[command(flatten, next_help_heading = heading::SIMULATOR)]
        simulate: SimulateConfig,
    },
}

/// `iotstream config`: `run`'s settings, and what is printed.
#[derive(Debug, clap::Args)]
pub struct ShowConfig {
    /// The settings, parsed as `run` parses them.
    #[command(flatten)]
    pub run: RunConfig,
    /// The effective configuration as a TOML file ([`crate::config_file`] renders it from what
    /// clap parsed, with each value's source).
    #[arg(skip)]
    pub rendered: String,
}

/// How the process ends: one code per kind of outcome, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did its job (`run` and `simulate` stopped by a signal included: that is how
    /// they end).
    Success,
    /// It failed while running: a database, broker, file or plugin error.
    Failure,
    /// The command line, the config file or a Kafka option is wrong (clap's own code for usage).
    Usage,
    /// `iotstream health`: the probe answered, but not ready (or did not answer).
    NotReady,
    /// A command with a job to finish (`bench`, `replay`, `iforest`...) was stopped by SIGINT or
    /// SIGTERM before it finished (128 + SIGINT, as shells report it).
    Interrupted,
}

impl ExitStatus {
    /// Every status, in code order.
    pub const ALL: [ExitStatus; 5] =
        [ExitStatus::Success, ExitStatus::Failure, ExitStatus::Usage, ExitStatus::NotReady, ExitStatus::Interrupted];

    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::NotReady => 3,
            ExitStatus::Interrupted => 130,
        }
    }

    /// What it means, for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitStatus::Success => "done (`run` and `simulate` stopped by SIGINT/SIGTERM included)",
            ExitStatus::Failure => "failed while running (database, broker, file or plugin error)",
            ExitStatus::Usage => "usage error: bad flag, config file or Kafka option",
            ExitStatus::NotReady => "`health`: the probe is not ready or did not answer",
            ExitStatus::Interrupted => "interrupted (SIGINT/SIGTERM) before a bounded job finished",
        }
    }

    /// The status of a command that failed with `err`.
    pub fn of_error(err: &anyhow::Error) -> ExitStatus {
        if err.downcast_ref::<health::HealthError>().is_some() { ExitStatus::NotReady } else { ExitStatus::Failure }
    }

    /// The `Exit codes:` section of `--help`.
    pub fn help() -> String {
        let lines: Vec<String> =
            ExitStatus::ALL.iter().map(|status| format!("  {:>3}  {}", status.code(), status.meaning())).collect();
        format!("{ROOT_EXAMPLES}\n\nExit codes:\n{}", lines.join("\n"))
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        std::process::ExitCode::from(status.code())
    }
}

const ROOT_EXAMPLES: &str = "Examples:
  iotstream run                                  # embedded broker and simulator: a demo
  iotstream run --brokers kafka:9092 --database-url postgres://u:pw@db/iot
  iotstream config --config iotstream.toml       # the effective configuration
  iotstream health                               # is the host on :8080 ready?";
const RUN_EXAMPLES: &str = "Examples:
  iotstream run                                  # embedded broker and simulator, dashboard on :8080
  iotstream run --config iotstream.toml          # settings from a file (see `iotstream config`)
  iotstream run --brokers kafka:9092 --kafka-option security.protocol=SASL_SSL \\
      --kafka-option sasl.mechanism=SCRAM-SHA-512 --kafka-option sasl.username=iot \\
      --kafka-option sasl.password=secret
  IOTSTREAM_BATCH_MAX=10000 iotstream run --listen 0.0.0.0:8080";
const CONFIG_EXAMPLES: &str = "Examples:
  iotstream config                               # the defaults, as a config file to start from
  iotstream config --config iotstream.toml --batch-max 100
  iotstream config > iotstream.toml              # save it (secrets are masked: fill them in)";
const BENCH_EXAMPLES: &str = "Examples:
  iotstream bench --readings 1000000             # as fast as it goes; JSON report on stdout
  iotstream bench --producer-rate 20000 --sensors 500
  iotstream bench --swap-plugin zscore --swap-after-s 5";
const REPLAY_EXAMPLES: &str = "Examples:
  iotstream replay --input machine_temperature.csv --plugin zscore --out scores.csv
  iotstream replay --input series.csv --plugin my_detector.wasm --config '{\"window\": 30}' --out scores.csv";
const SIMULATE_EXAMPLES: &str = "Examples:
  iotstream simulate --brokers localhost:29092 --rate 1000
  iotstream simulate --count 100000 --rate 0     # as fast as the broker takes them, then stop";
const PLUGIN_NEW_EXAMPLES: &str = "Examples:
  iotstream plugin new my-detector               # a crate in ./my-detector that builds as it is";
const PLUGIN_CHECK_EXAMPLES: &str = "Examples:
  iotstream plugin check dist/plugins/zscore.wasm
  iotstream plugin check target/wasm32-wasip2/release/my_detector.wasm";

impl Command {
    /// The Kafka options the command's clients get, if it makes any.
    pub fn kafka_options_mut(&mut self) -> Option<&mut Vec<KafkaOption>> {
        match self {
            Command::Run(config) => Some(&mut config.kafka.options),
            Command::Config(show) => Some(&mut show.run.kafka.options),
            Command::Bench(config) => Some(&mut config.run.kafka.options),
            Command::Simulate { kafka, .. } => Some(&mut kafka.options),
            Command::Health(config) => Some(&mut config.kafka.options),
            _ => None,
        }
    }

    /// Whether SIGINT or SIGTERM is how the command ends (it stops gracefully and succeeds), rather
    /// than an interruption of a job it would finish by itself.
    pub fn ends_on_signal(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Simulate { .. })
    }

    /// Runs the command until it is done or `shutdown` is cancelled, printing its report.
    pub async fn execute(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        match self {
            Command::Run(config) => Ok(crate::app::start(&config, shutdown).await?),
            Command::Config(show) => {
                print!("{}", show.rendered);
                Ok(())
            }
            Command::Bench(config) => bench::print(&bench::bench(&config).await?),
            Command::BenchForest(config) => {
                let timings = blocking(move || bench_forest::bench_forest(&config)).await?;
                timings.iter().try_for_each(print_json)
            }
            Command::BenchPlugins(config) => {
                bench_plugins::print(&blocking(move || bench_plugins::bench_plugins(&config)).await?)
            }
            Command::BenchMemory(config) => {
                bench_memory::print(&blocking(move || bench_memory::bench_memory(&config)).await?)
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
            Command::Simulate { brokers, topic, kafka, simulate } => {
                let progress = crate::commands::progress::bar_or_counter(simulate.count, "readings")
                    .with_message(format!("producing to {topic}"));
                let brokers = kafka.brokers(&brokers);
                let report =
                    crate::simulate::run_with_progress(&simulate, &brokers, &topic, shutdown, &progress).await?;
                println!(
                    "produced {} readings ({} delivered, {} failed, {} labelled anomalous)",
                    report.fleet.readings, report.delivered, report.failed, report.fleet.anomalous
                );
                Ok(())
            }
        }
    }
}
