//! Kafka: the consumer the pipeline reads batches from, the producer the simulator writes with,
//! and the embedded broker (librdkafka's mock cluster) that runs when no broker is configured.
//!
//! # Layout
//! * `consumer`: [`Source`], connecting, batching, the group offsets for monitoring;
//! * `group`: membership of the consumer group: the fetcher thread and the rebalances the pipeline
//!   acts on before librdkafka does;
//! * [`batches`]: what a batch holds and extents; `replay`: forming a lane's committed batches again
//!   when a host is given its partition; `health`: [`SourceHealth`], whether the brokers answer;
//! * [`log_check`]: whether stored positions still mean the same messages (a log that started
//!   again, messages retention deleted unread);
//! * `client`: [`Brokers`], the bootstrap servers and the operator's librdkafka options every
//!   client gets (`--kafka-option`);
//! * `embedded`: [`EmbeddedBroker`]; [`producer`] here.

pub mod batches;
mod client;
mod consumer;
mod embedded;
mod group;
mod health;
pub mod log_check;
mod replay;

pub use client::{Brokers, KafkaOption, KafkaOptionError};
pub use consumer::{BATCH_MAX_BYTES, BEGINNING, Next, RawMessage, Source};
pub use embedded::EmbeddedBroker;
pub use group::GroupChange;
pub use health::SourceHealth;

use rdkafka::producer::FutureProducer;

/// Why a Kafka client could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the configuration or the operation.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The topic is not on the brokers (yet).
    #[error("topic {0} does not exist yet")]
    TopicMissing(String),
    /// The brokers answered the metadata request without their cluster id, or not in time: the
    /// source's identity is unknown, so connecting is retried (never an empty identity).
    #[error("the brokers did not report their cluster id (yet)")]
    ClusterIdMissing,
    /// The metadata lookup's thread failed.
    #[error("kafka metadata lookup failed: {0}")]
    Lookup(String),
    /// The embedded broker could not be started.
    #[error("embedded broker: {0}")]
    Embedded(String),
}

/// A producer for `brokers`, tuned for throughput (batches of up to 10 ms, lz4 off: readings are
/// small and the broker is usually near).
pub fn producer(brokers: &Brokers) -> Result<FutureProducer, KafkaError> {
    Ok(brokers
        .client_config(&[
            ("linger.ms", "10"),
            ("queue.buffering.max.messages", "1000000"),
            ("message.timeout.ms", "30000"),
            ("reconnect.backoff.max.ms", "2000"),
        ])
        .create()?)
}
