//! The configuration of `iotstream run`: every flag also settable by an environment variable, with
//! documented defaults. `docker-compose.yml` sets exactly these variables (a test keeps the two in
//! step).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pipeline::PipelineConfig;
use crate::simulate::SimulateConfig;

/// `iotstream run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// Kafka bootstrap servers. Without it, an embedded broker and simulator start in-process.
    #[arg(long, env = "IOTSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Topic of the readings.
    #[arg(long, env = "IOTSTREAM_TOPIC", default_value = "iot_sensors")]
    pub topic: String,
    /// Kafka consumer group.
    #[arg(long, env = "IOTSTREAM_GROUP", default_value = "iotstream")]
    pub group: String,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub database_url: String,
    /// Folder of plugin components (`*.wasm`, each with an optional `NAME.json` configuration).
    #[arg(long = "plugins", env = "IOTSTREAM_PLUGINS", default_value = "dist/plugins")]
    pub plugins_dir: PathBuf,
    /// Folder of the built dashboard.
    #[arg(long = "dashboard", env = "IOTSTREAM_DASHBOARD", default_value = "dist/dashboard")]
    pub dashboard_dir: PathBuf,
    /// HTTP address of the API and dashboard (port 0 picks a free port).
    #[arg(long, env = "IOTSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Most messages per batch.
    #[arg(long, env = "IOTSTREAM_BATCH_MAX", default_value_t = 5000)]
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first, in milliseconds.
    #[arg(long, env = "IOTSTREAM_BATCH_LINGER_MS", default_value_t = 50)]
    pub batch_linger_ms: u64,
    /// Partitions of the embedded broker's topic (each keeps ~5 MB: size for the data).
    #[arg(long, env = "IOTSTREAM_EMBEDDED_PARTITIONS", default_value_t = 12)]
    pub embedded_partitions: i32,
    /// With the embedded broker, do not start the simulator (produce with your own client).
    #[arg(long, env = "IOTSTREAM_NO_SIMULATOR")]
    pub no_simulator: bool,
    /// The embedded simulator.
    #[command(flatten)]
    pub simulate: SimulateConfig,
}

impl RunConfig {
    /// The processing loop's part.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            batch_max: self.batch_max.max(1),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            ..PipelineConfig::default()
        }
    }
}
