//! The pipeline's Kafka source: a consumer-group member that hands out batches and advances its
//! offsets only for messages whose results are durable.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`) after the pipeline committed a
//! batch to PostgreSQL; librdkafka commits stored offsets to the group in the background and once
//! more on close. A crash therefore replays the last uncommitted batches, never skips them.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use tracing::warn;

use super::KafkaError;

/// A message detached from the consumer.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Key (the sensor id, by convention).
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Option<Vec<u8>>,
    /// The message's Kafka timestamp (create or log-append time), ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// The consumer of one topic.
pub struct Source {
    consumer: StreamConsumer,
    topic: String,
}

impl Source {
    /// Joins consumer group `group` on `brokers` and subscribes to `topic`.
    pub fn subscribe(brokers: &str, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            // The broker answers a fetch as soon as there is data, or after 100 ms (librdkafka's
            // default, 500 ms, is most of the end-to-end latency at moderate rates).
            .set("fetch.wait.max.ms", "100")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(Source { consumer, topic: topic.to_owned() })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits up to `idle` for a first message, then collects more until `max` messages or until
    /// `linger` passed since the first. Returns an empty batch when nothing arrived within `idle`.
    /// A consumer error is logged and ends the batch early (librdkafka reconnects by itself).
    pub async fn next_batch(&self, max: usize, linger: Duration, idle: Duration) -> Vec<RawMessage> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(idle, self.consumer.recv()).await {
            Err(_) => return batch,
            Ok(first) => first,
        };
        let deadline = tokio::time::Instant::now() + linger;
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(message) => batch.push(RawMessage {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                }),
                Err(err) => {
                    warn!(topic = %self.topic, error = %err, "kafka consumer error");
                    break;
                }
            }
            if batch.len() >= max {
                break;
            }
            next = tokio::time::timeout_at(deadline, self.consumer.recv()).await.ok();
        }
        batch
    }

    /// Marks every message of `batch` as processed: the group commit will move past them.
    pub fn mark_processed(&self, batch: &[RawMessage]) -> Result<(), KafkaError> {
        let mut next_by_partition: HashMap<i32, i64> = HashMap::new();
        for message in batch {
            let next = next_by_partition.entry(message.partition).or_insert(message.offset + 1);
            *next = (*next).max(message.offset + 1);
        }
        for (partition, next) in next_by_partition {
            // store_offset takes the offset of the processed message; librdkafka commits it + 1.
            self.consumer.store_offset(&self.topic, partition, next - 1)?;
        }
        Ok(())
    }

    /// Commits the stored offsets now, synchronously (at shutdown).
    pub fn commit_now(&self) -> Result<(), KafkaError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => Ok(other?),
        }
    }
}
