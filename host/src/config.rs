//! The configuration of `iotstream run`: every flag also settable by an environment variable, with
//! documented defaults. `docker-compose.yml` sets exactly these variables (a test keeps the two in
//! step).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::kafka::{Brokers, KafkaOption};
use crate::pipeline::PipelineConfig;
use crate::plugins::{PluginCeilings, PluginFolders, PluginLimits, READINGS_PER_CALL};
use crate::reading::ReadingLimits;
use crate::simulate::SimulateConfig;
use crate::store::partitions::Retention;

/// `iotstream run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// A TOML file of these settings: keys are the long flag names (`batch-max = 1000`), the
    /// `[kafka]` table holds librdkafka options. Environment variables and flags override it;
    /// `iotstream config` prints the result.
    #[arg(long = "config", env = crate::config_file::CONFIG_ENV, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Kafka bootstrap servers. Without it, an embedded broker and simulator start in-process.
    #[arg(help_heading = heading::KAFKA, long, env = "IOTSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Topic of the readings.
    #[arg(help_heading = heading::KAFKA, long, env = "IOTSTREAM_TOPIC", default_value = "iot_sensors")]
    pub topic: String,
    /// Kafka consumer group: hosts of one group share the topic's partitions (docs/scaling.md).
    #[arg(help_heading = heading::KAFKA, long, env = "IOTSTREAM_GROUP", default_value = "iotstream")]
    pub group: String,
    /// This host's name among the group's members, shown as the owner of its partitions (default:
    /// the machine's hostname and the process id).
    #[arg(help_heading = heading::KAFKA, long, env = "IOTSTREAM_HOST_NAME")]
    pub host_name: Option<String>,
    /// PostgreSQL URL.
    #[arg(
        help_heading = heading::POSTGRES,
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// The built-in and drop-in plugins folders.
    #[command(flatten)]
    pub plugin_folders: PluginFolderArgs,
    /// Folder of the built dashboard. Default: `PREFIX/share/iotstream/dashboard` beside the
    /// installed binary, else `dist/dashboard` of the checkout it runs in.
    #[arg(help_heading = heading::HTTP, long = "dashboard", env = "IOTSTREAM_DASHBOARD", default_value_os_t = default_dist_folder("dashboard"))]
    pub dashboard_dir: PathBuf,
    /// HTTP address of the API and dashboard (port 0 picks a free port).
    #[arg(help_heading = heading::HTTP, long, env = "IOTSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Live streams (`/api/stream`, one per open dashboard) served at once; more are refused (503).
    #[arg(help_heading = heading::HTTP, long, env = "IOTSTREAM_MAX_STREAMS", default_value_t = crate::http::MAX_STREAMS)]
    pub max_streams: usize,
    /// Most messages per batch.
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_BATCH_MAX", default_value_t = PipelineConfig::BATCH_MAX)]
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first, in milliseconds.
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_BATCH_LINGER_MS", default_value_t = PipelineConfig::BATCH_LINGER.as_millis() as u64)]
    pub batch_linger_ms: u64,
    /// Transactions a batch is written in, side by side, each with whole partitions: a
    /// transaction keeps one database core busy (default: this machine's cores, at most 8; 1: one
    /// transaction a batch).
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_WRITERS", default_value_t = PipelineConfig::default_writers())]
    pub writers: usize,
    /// Batches whose transactions run at once: the next batch's rows are sent while the one
    /// before commits, and it commits after it (1: a batch's transaction starts once the one
    /// before has committed).
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_BATCHES_IN_FLIGHT", default_value_t = PipelineConfig::BATCHES_IN_FLIGHT)]
    pub batches_in_flight: usize,
    /// How often every stage's state is checkpointed with the offsets it includes ("0s": only at
    /// shutdown). After a crash the host replays at most this much of the stream.
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_CHECKPOINT_INTERVAL", default_value_t = PipelineConfig::CHECKPOINT_INTERVAL.into())]
    pub checkpoint_interval: humantime::Duration,
    /// After a restart, how long the host waits, with no message of it arriving while the brokers
    /// are up, for the rest of a batch it committed before the crash, to form it again; then it
    /// reads on in arrival order (docs/guarantees.md).
    #[arg(help_heading = heading::BATCHING, long, env = "IOTSTREAM_REPLAY_PATIENCE", default_value_t = PipelineConfig::REPLAY_PATIENCE.into())]
    pub replay_patience: humantime::Duration,
    /// Largest message accepted as a reading, in bytes (larger ones are dead-lettered).
    #[arg(help_heading = heading::LIMITS, long, env = "IOTSTREAM_MAX_MESSAGE_BYTES", default_value_t = ReadingLimits::default().max_bytes)]
    pub max_message_bytes: usize,
    /// How far ahead of this host's clock an event time may be.
    #[arg(help_heading = heading::LIMITS, long, env = "IOTSTREAM_MAX_FUTURE", default_value_t = ReadingLimits::default().max_future.into())]
    pub max_future: humantime::Duration,
    /// How old an event time may be ("off": no limit, to backfill history).
    #[arg(help_heading = heading::LIMITS, long, env = "IOTSTREAM_MAX_AGE", default_value_t = OptionalDuration(ReadingLimits::default().max_age))]
    pub max_age: OptionalDuration,
    /// Start even though the stored positions are past the end of the broker's log (a topic
    /// created again, a broker's log wiped): store the new log as a new epoch of the source, from
    /// its start, with fresh stages (docs/guarantees.md). Without it the host refuses to start.
    #[arg(help_heading = heading::KAFKA, long, env = "IOTSTREAM_ACCEPT_NEW_LOG")]
    pub accept_new_log: bool,
    /// The largest memory cap, in MiB, a plugin's manifest (`[limits] memory_mib`) may ask for; a
    /// manifest asking for more is refused. The default is the default cap: a manifest may only
    /// lower it.
    #[arg(help_heading = heading::PLUGINS, long, env = "IOTSTREAM_PLUGIN_MAX_MEMORY_MIB", default_value_t = PluginCeilings::default().memory_bytes >> 20)]
    pub plugin_max_memory_mib: usize,
    /// The longest call deadline a plugin's manifest (`[limits] call_deadline_ms`) may ask for; a
    /// manifest asking for more is refused. The default is the default deadline.
    #[arg(help_heading = heading::PLUGINS, long, env = "IOTSTREAM_PLUGIN_MAX_CALL_DEADLINE", default_value_t = PluginCeilings::default().call_deadline.into())]
    pub plugin_max_call_deadline: humantime::Duration,
    /// The most readings one plugin call carries: a lane's batch larger than this is passed to each
    /// plugin in calls of at most this many, in order, so the memory a plugin keeps for its calls
    /// does not grow with the consumer's lag (docs/plugins.md, "Memory").
    #[arg(help_heading = heading::PLUGINS, long, env = "IOTSTREAM_PLUGIN_READINGS_PER_CALL", default_value_t = READINGS_PER_CALL)]
    pub plugin_readings_per_call: NonZeroUsize,
    /// Environment variables a plugin's manifest (`[grants] env`) may grant, comma-separated (none
    /// by default: the host's environment holds its database URL). A manifest granting another is
    /// refused.
    #[arg(help_heading = heading::PLUGINS, long, env = "IOTSTREAM_PLUGIN_ENV_ALLOW", value_delimiter = ',')]
    pub plugin_env_allow: Vec<String>,
    /// The bearer token the admin endpoints (`/api/admin/*`: release a quarantined plugin, promote
    /// or discard a shadow, reload) require. Unset: they are off (403).
    #[arg(help_heading = heading::HTTP, long, env = "IOTSTREAM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How long `sensor_readings` (and so every verdict) keeps a day: the days that ended longer
    /// ago than this before the newest stored reading (or now, if that is earlier) are dropped
    /// whole, one partition each, every 10 minutes. `off`: kept for ever.
    #[arg(help_heading = heading::POSTGRES, long, env = "IOTSTREAM_KEEP_READINGS", default_value = "30days")]
    pub keep_readings: OptionalDuration,
    /// How long `dead_letters` keeps a day of refused messages (by when they arrived); `off`: for
    /// ever. Windows (`sensor_aggregates`) are always kept.
    #[arg(help_heading = heading::POSTGRES, long, env = "IOTSTREAM_KEEP_DEAD_LETTERS", default_value = "30days")]
    pub keep_dead_letters: OptionalDuration,
    /// How often a one-line throughput summary is logged ("0s": never). A minute keeps the log
    /// readable at any rate while an operator still sees a stall within one.
    #[arg(help_heading = heading::LOGGING, long, env = "IOTSTREAM_SUMMARY_INTERVAL", default_value = "1m")]
    pub summary_interval: humantime::Duration,
    /// Partitions of the embedded broker's topic (each keeps ~5 MB: size for the data).
    #[arg(help_heading = heading::EMBEDDED, long, env = "IOTSTREAM_EMBEDDED_PARTITIONS", default_value_t = 12)]
    pub embedded_partitions: i32,
    /// With the embedded broker, do not start the simulator (produce with your own client).
    #[arg(help_heading = heading::EMBEDDED, long, env = "IOTSTREAM_NO_SIMULATOR")]
    pub no_simulator: bool,
    /// Options of every Kafka client the host makes.
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// The embedded simulator.
    #[command(flatten, next_help_heading = heading::SIMULATOR)]
    pub simulate: SimulateConfig,
}

/// The sections of `--help` (and of `iotstream config`'s output): one constant each, so every
/// command that takes a setting files it under the same heading.
pub mod heading {
    /// Brokers, topic, group, client options.
    pub const KAFKA: &str = "Kafka";
    /// The database.
    pub const POSTGRES: &str = "PostgreSQL";
    /// The plugins folders and the limits plugins run under.
    pub const PLUGINS: &str = "Plugins";
    /// The API, the dashboard and the admin actions.
    pub const HTTP: &str = "HTTP";
    /// Batches, checkpoints and replay after a restart.
    pub const BATCHING: &str = "Batching";
    /// What a message may be to count as a reading.
    pub const LIMITS: &str = "Limits";
    /// Logs and the periodic summary.
    pub const LOGGING: &str = "Logging";
    /// The in-process broker used when no brokers are given.
    pub const EMBEDDED: &str = "Embedded broker";
    /// The simulated sensor fleet.
    pub const SIMULATOR: &str = "Simulator";
}

/// The plugins folders, as `iotstream run` and every command that opens a plugin by name take
/// them: the built-ins (shipped with the binary) under the drop-in folder (the operator's).
#[derive(Debug, Clone, clap::Args)]
pub struct PluginFolderArgs {
    /// Folder of the built-in plugins (`*.wasm`, each with an optional `NAME.toml` manifest); an
    /// upgrade replaces them, so put yours in `--plugins`. Default: the ones installed beside the binary (`PREFIX/share/iotstream/plugins` for
    /// `PREFIX/bin/iotstream`), else `dist/plugins` of the checkout it runs in.
    #[arg(
        help_heading = heading::PLUGINS,
        long = "builtin-plugins",
        env = "IOTSTREAM_BUILTIN_PLUGINS",
        value_name = "DIR",
        default_value_os_t = default_dist_folder("plugins")
    )]
    pub builtin_plugins: PathBuf,
    /// Load no built-in plugin: only those of the drop-in folder.
    #[arg(help_heading = heading::PLUGINS, long = "no-builtin-plugins", env = "IOTSTREAM_NO_BUILTIN_PLUGINS")]
    pub no_builtin_plugins: bool,
    /// The drop-in plugins folder, yours: each `NAME.wasm` (with its `NAME.toml` manifest or
    /// `NAME.json`) is added to the built-ins, or replaces the built-in of the same name; removing
    /// it brings the built-in back. `iotstream run` creates it if missing and watches it (and the
    /// built-ins): files dropped, replaced or removed take effect while it runs. Default: none, the
    /// built-ins only.
    #[arg(help_heading = heading::PLUGINS, long = "plugins", env = "IOTSTREAM_PLUGINS", value_name = "DIR")]
    pub dropin_plugins: Option<PathBuf>,
}

impl PluginFolderArgs {
    /// The folders these flags name.
    pub fn folders(&self) -> PluginFolders {
        let builtin = (!self.no_builtin_plugins).then(|| self.builtin_plugins.clone());
        PluginFolders::new(builtin, self.dropin_plugins.clone())
    }
}

/// `--kafka-option KEY=VALUE`: librdkafka properties for every Kafka client the host makes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaOptions {
    /// A librdkafka property for every Kafka client (TLS, SASL, timeouts...), set after the host's
    /// own. Repeat the flag for more; in the variable, separate them with `;`; in the config file,
    /// use the `[kafka]` table.
    #[arg(
        long = "kafka-option",
        env = "IOTSTREAM_KAFKA_OPTIONS",
        value_name = "KEY=VALUE",
        value_delimiter = ';',
        hide_env_values = true,
        help_heading = heading::KAFKA
    )]
    pub options: Vec<KafkaOption>,
}

impl KafkaOptions {
    /// `servers` with these options.
    pub fn brokers(&self, servers: &str) -> Brokers {
        Brokers::with_options(servers, &self.options)
    }
}

/// The default folder of `what` (`plugins` or `dashboard`): `PREFIX/share/iotstream/WHAT` when the
/// binary is `PREFIX/bin/iotstream` and that folder exists (the layout `cargo xtask install` writes),
/// else `dist/WHAT`, relative to the working folder (a checkout, where `cargo xtask build` writes
/// them).
pub fn default_dist_folder(what: &str) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let installed = exe.as_deref().and_then(|exe| Some(exe.parent()?.parent()?.join("share/iotstream").join(what)));
    installed.filter(|dir| dir.is_dir()).unwrap_or_else(|| PathBuf::from("dist").join(what))
}

impl RunConfig {
    /// The processing loop's part.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            batch_max: self.batch_max.max(1),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            checkpoint_interval: (!self.checkpoint_interval.is_zero()).then_some(*self.checkpoint_interval),
            replay_patience: *self.replay_patience,
            limits: ReadingLimits {
                max_bytes: self.max_message_bytes,
                max_future: *self.max_future,
                max_age: self.max_age.0,
            },
            accept_new_log: self.accept_new_log,
            host_name: self.host_name.clone().unwrap_or_else(crate::pipeline::default_host_name),
            writers: self.writers.max(1),
            batches_in_flight: self.batches_in_flight.max(1),
            ..PipelineConfig::default()
        }
    }
}

impl RunConfig {
    /// How long the partitioned tables keep their rows.
    pub fn retention(&self) -> Retention {
        Retention { readings: self.keep_readings.0, dead_letters: self.keep_dead_letters.0 }
    }

    /// The limits every plugin runs under, with the ceilings its manifest may not pass.
    pub fn plugin_limits(&self) -> PluginLimits {
        PluginLimits {
            ceilings: PluginCeilings {
                memory_bytes: self.plugin_max_memory_mib.saturating_mul(1 << 20),
                call_deadline: *self.plugin_max_call_deadline,
                env_allowed: self.plugin_env_allow.iter().filter(|k| !k.is_empty()).cloned().collect(),
            },
            readings_per_call: self.plugin_readings_per_call,
            ..PluginLimits::default()
        }
    }
}

/// A duration, or `off` (no limit): `--max-age`, `--keep-readings`, `--keep-dead-letters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

impl std::str::FromStr for OptionalDuration {
    type Err = humantime::DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            Ok(OptionalDuration(None))
        } else {
            humantime::parse_duration(text).map(|d| OptionalDuration(Some(d)))
        }
    }
}

impl std::fmt::Display for OptionalDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(age) => write!(f, "{}", humantime::format_duration(age)),
            None => f.write_str("off"),
        }
    }
}
