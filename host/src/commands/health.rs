//! `iotstream health`: asks a running host's probe (`/readyz` by default, or `/healthz`) and exits
//! 0 when it answers 2xx, 3 (`ExitStatus::NotReady`) otherwise. It is the image's `HEALTHCHECK` and the compose service's
//! healthcheck: the image has no `curl`, and the binary already speaks HTTP.
//!
//! The probe's body goes to stdout either way, so `docker inspect` shows which check failed.
//!
//! With `--brokers`, it asks Kafka instead: healthy when the brokers answer with the topic's
//! partitions. That is the simulator's check, a producer that serves no HTTP.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaOptions;
use crate::kafka::{Brokers, KafkaError};

/// The default probe: `/readyz` at `iotstream run`'s default port, on loopback (a healthcheck runs
/// inside the host's container). A test holds its port to `run --listen`'s default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/readyz";

/// `iotstream health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthConfig {
    /// The probe to ask: a host's `/readyz` (does its job) or `/healthz` (is alive).
    #[arg(long, env = "IOTSTREAM_HEALTH_URL", default_value = DEFAULT_URL)]
    pub url: reqwest::Url,
    /// How long to wait for the answer. The default stays under Docker's 30 s healthcheck timeout
    /// with room to spare; a probe answers from memory in microseconds.
    #[arg(long, env = "IOTSTREAM_HEALTH_TIMEOUT", default_value = "3s")]
    pub timeout: humantime::Duration,
    /// Ask these Kafka brokers for `--topic` instead of a host's probe.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The topic that must exist on `--brokers`.
    #[arg(long, default_value = "iot_sensors", requires = "brokers")]
    pub topic: String,
    /// Options of the Kafka client that asks `--brokers` (the host's TLS and SASL settings).
    #[command(flatten)]
    pub kafka: KafkaOptions,
}

/// Why the probe did not pass.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No answer: the host is not running, not listening there, or too slow.
    #[error("no answer from {url}: {source}")]
    Unreachable {
        /// The probe.
        url: reqwest::Url,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than 2xx.
    #[error("{url} answered {status}: {body}")]
    Failing {
        /// The probe.
        url: reqwest::Url,
        /// Its status.
        status: reqwest::StatusCode,
        /// Its body (which check failed).
        body: String,
    },
    /// The brokers did not answer, or without the topic.
    #[error("kafka health: {0}")]
    Kafka(#[from] KafkaError),
}

/// Asks the probe of `config` (or its brokers); what it answered when healthy.
pub async fn check(config: &HealthConfig) -> Result<String, HealthError> {
    match &config.brokers {
        Some(brokers) => {
            let (brokers, topic, timeout) =
                (config.kafka.brokers(brokers), config.topic.clone(), Duration::from(config.timeout));
            let partitions = tokio::task::spawn_blocking(move || topic_partitions(&brokers, &topic, timeout))
                .await
                .map_err(|join| KafkaError::Lookup(join.to_string()))??;
            Ok(format!("topic {} has {partitions} partitions", config.topic))
        }
        None => probe(config).await,
    }
}

/// Asks the HTTP probe of `config`; its body when it answers 2xx.
async fn probe(config: &HealthConfig) -> Result<String, HealthError> {
    let unreachable = |source| HealthError::Unreachable { url: config.url.clone(), source };
    let client = reqwest::Client::builder().timeout(Duration::from(config.timeout)).build().map_err(unreachable)?;
    let response = client.get(config.url.clone()).send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if status.is_success() { Ok(body) } else { Err(HealthError::Failing { url: config.url.clone(), status, body }) }
}

/// The partitions of `topic` on `brokers`, asked within `timeout` (blocking).
fn topic_partitions(brokers: &Brokers, topic: &str, timeout: Duration) -> Result<usize, KafkaError> {
    // A consumer that may not create topics: asking for a missing topic must not create it.
    let client: BaseConsumer = brokers.client_config(&[("allow.auto.create.topics", "false")]).create()?;
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(found) if found.error().is_none() && !found.partitions().is_empty() => Ok(found.partitions().len()),
        _ => Err(KafkaError::TopicMissing(topic.to_owned())),
    }
}
