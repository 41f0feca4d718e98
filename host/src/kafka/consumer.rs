//! The pipeline's Kafka source: reads every partition of one topic from the positions the pipeline
//! says (PostgreSQL is the truth of where it stands) and hands out batches, in the canonical order
//! of [`super::batches`], forming the batches committed after the restored checkpoint again first.
//!
//! The source assigns itself all partitions (`assign`, not a group subscription): one host owns the
//! topic's stateful stages, and where it resumes comes from PostgreSQL, not from the group. It still
//! stores each durable batch's offsets with the group (committed in the background and on close),
//! so Kafka tools show the consumer's lag. Broker outages are librdkafka's to reconnect from; the
//! source records them in its [`SourceHealth`] for the API and dashboard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::batches::Pending;
use super::health::{SourceContext, SourceHealth};
use super::replay::Replay;
use super::{Brokers, KafkaError};

/// A position that means "the partition's first message" (librdkafka's `OFFSET_BEGINNING`), for a
/// partition nothing was read from yet.
pub const BEGINNING: i64 = -2;

/// How long the source waits after a consumer error before asking again.
const ERROR_PAUSE: Duration = Duration::from_millis(250);
/// Keys and payloads one batch may hold: a batch of the default 5000 seed-format readings is about
/// 1 MB, so this only splits batches of unusually large messages (a topic of 1 MB messages would
/// otherwise make one batch of gigabytes).
pub const BATCH_MAX_BYTES: usize = 32 << 20;
/// How long one metadata request may take before it is retried.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub(super) consumer: Arc<StreamConsumer<SourceContext>>,
    pub(super) topic: String,
    identity: String,
    partitions: Vec<i32>,
    pub(super) health: Arc<SourceHealth>,
    /// Received, not yet handed out.
    pub(super) pending: Pending,
    /// The committed batches to form again before reading on.
    pub(super) replay: Replay,
}

impl Source {
    /// Connects to `brokers` as a member of `group` and looks up the cluster's identity and the
    /// topic's partitions (one attempt: [`Source::connect_retrying`] waits for the brokers).
    pub async fn connect(brokers: &Brokers, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let health = Arc::new(SourceHealth::default());
        let consumer: StreamConsumer<SourceContext> = brokers
            .client_config(&[
                ("group.id", group),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                // The broker answers a fetch as soon as there is data, or after 100 ms (librdkafka's
                // default, 500 ms, is most of the end-to-end latency at moderate rates).
                ("fetch.wait.max.ms", "100"),
                // What librdkafka prefetches while the pipeline is blocked (a database outage): 16 MiB
                // instead of 64, so memory stays bounded however long the outage lasts.
                ("queued.max.messages.kbytes", "16384"),
                // After an outage, reconnect within 2 s of the broker's return (librdkafka's default
                // backoff grows to 10 s).
                ("reconnect.backoff.max.ms", "2000"),
                // Broker states every second (SourceHealth): a broker back, or a passing error on an
                // idle topic, is seen within a second without waiting for a message; a report is a
                // few KB of JSON, parsed once a second.
                ("statistics.interval.ms", "1000"),
            ])
            .create_with_context(SourceContext { health: health.clone() })?;
        let consumer = Arc::new(consumer);
        let (lookup, topic_name) = (consumer.clone(), topic.to_owned());
        // Metadata requests block: keep them off the async threads.
        let (identity, partitions) = tokio::task::spawn_blocking(move || lookup_topic(&lookup, &topic_name))
            .await
            .map_err(|err| KafkaError::Lookup(err.to_string()))??;
        let identity = source_identity(&identity, &brokers.servers);
        Ok(Source {
            consumer,
            topic: topic.to_owned(),
            identity,
            partitions,
            health,
            pending: Pending::default(),
            replay: Replay::default(),
        })
    }

    /// [`Source::connect`], retried with backoff (0.5 s doubling to 10 s) until the brokers answer
    /// and the topic exists; `None` if `shutdown` came first.
    pub async fn connect_retrying(
        brokers: &Brokers,
        group: &str,
        topic: &str,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Self> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let attempt = || Self::connect(brokers, group, topic);
        let retried = attempt.retry(backoff).notify(|err, delay| {
            warn!(error = %err, retry_in = ?delay, brokers = %brokers.servers, topic, "kafka not reachable yet");
        });
        tokio::select! {
            source = retried => source.ok(),
            _ = shutdown.cancelled() => None,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Which log the offsets belong to: the cluster id the brokers report (and, for librdkafka's
    /// mock cluster, whose id is not unique across runs, its address too).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Whether the brokers are reachable.
    pub fn health(&self) -> Arc<SourceHealth> {
        self.health.clone()
    }

    /// Each partition's (low, high) watermarks: the offset of its oldest message and the offset its
    /// next message will get, as the brokers report them now.
    pub async fn watermarks(&self) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
        let (consumer, topic, partitions) = (self.consumer.clone(), self.topic.clone(), self.partitions.clone());
        // Offset requests block: keep them off the async threads.
        tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|&partition| Ok((partition, consumer.fetch_watermarks(&topic, partition, METADATA_TIMEOUT)?)))
                .collect()
        })
        .await
        .map_err(|err| KafkaError::Lookup(err.to_string()))?
    }

    /// Starts reading every partition at `positions` (next offsets; a partition not in it, or at
    /// [`BEGINNING`], from its first message).
    pub fn start_at(&self, positions: &BTreeMap<i32, i64>) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        for &partition in &self.partitions {
            let offset = match positions.get(&partition) {
                Some(&next) if next >= 0 => Offset::Offset(next),
                _ => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.topic, partition, offset)?;
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }

    /// The next batch, in canonical order. While batches are to be formed again, the next of them
    /// once all its messages arrived (an empty batch after `idle` without progress). Otherwise:
    /// waits up to `idle` for a first message, then collects more until `max` messages or until
    /// `linger` passed. A consumer error is logged, recorded in the health and ends the batch early
    /// (librdkafka reconnects by itself). Cancelling the call loses nothing: what was received
    /// stays for the next call.
    pub async fn next_batch(&mut self, max: usize, linger: Duration, idle: Duration) -> Vec<RawMessage> {
        if self.replay.is_pending() {
            match self.next_replayed_batch(idle).await {
                Some(batch) => return batch,
                None if self.replay.is_pending() => return Vec::new(),
                None => {}
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let idle_until = tokio::time::Instant::now() + idle;
        let mut linger_until = None;
        while self.pending.len() < max && self.pending.bytes() < BATCH_MAX_BYTES {
            if linger_until.is_none() && !self.pending.is_empty() {
                linger_until = Some(tokio::time::Instant::now() + linger);
            }
            let Ok(received) = tokio::time::timeout_at(linger_until.unwrap_or(idle_until), consumer.recv()).await
            else {
                break;
            };
            if self.receive(received).await.is_none() {
                break;
            }
        }
        self.pending.take_bounded(max, BATCH_MAX_BYTES)
    }

    /// Holds a received message and returns its partition and offset; `None` on a consumer error
    /// (logged once per outage and recorded in the health, after a pause when no batch can be
    /// handed out: not a busy loop while the brokers are away).
    pub(super) async fn receive(&mut self, received: Result<BorrowedMessage<'_>, RdKafkaError>) -> Option<(i32, i64)> {
        match received {
            Ok(message) => {
                self.health.record_message();
                let (partition, offset) = (message.partition(), message.offset());
                self.pending.push(RawMessage {
                    partition,
                    offset,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                });
                Some((partition, offset))
            }
            Err(err) => {
                // Once per outage at WARN: librdkafka repeats an error for as long as it lasts.
                if self.health.is_up() {
                    warn!(topic = %self.topic, error = %err, "kafka consumer error; reconnecting");
                } else {
                    debug!(topic = %self.topic, error = %err, "kafka consumer error");
                }
                self.health.record_error(err.to_string());
                if self.pending.is_empty() || self.replay.is_pending() {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                None
            }
        }
    }

    /// Stores the positions of a durable batch (next offset per partition) with the group, for lag
    /// monitoring (PostgreSQL holds the positions the host resumes from).
    pub fn mark_stored(&self, positions: &BTreeMap<i32, i64>) -> Result<(), KafkaError> {
        for (&partition, &next) in positions {
            // store_offset takes the offset of the processed message; librdkafka commits it + 1.
            self.consumer.store_offset(&self.topic, partition, next - 1)?;
        }
        Ok(())
    }

    /// Commits the stored offsets to the group now, synchronously (at shutdown).
    pub fn commit_now(&self) -> Result<(), KafkaError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Err(RdKafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => Ok(other?),
        }
    }
}

/// The cluster id and the partitions of `topic` (an error if the topic does not exist yet).
fn lookup_topic(consumer: &StreamConsumer<SourceContext>, topic: &str) -> Result<(String, Vec<i32>), KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let partitions: Vec<i32> = match found {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => Vec::new(),
    };
    if partitions.is_empty() {
        return Err(KafkaError::TopicMissing(topic.to_owned()));
    }
    let cluster = cluster_id(consumer.client().fetch_cluster_id(METADATA_TIMEOUT))?;
    Ok((cluster, partitions))
}

/// The cluster id a lookup returned, or the retryable error that none came: a slow or starting
/// broker answers without one (or not in time), and an empty id would name a new source whose
/// offsets start at zero: the whole retained topic stored again, every stage started empty.
fn cluster_id(looked_up: Option<String>) -> Result<String, KafkaError> {
    match looked_up {
        Some(id) if !id.trim().is_empty() => Ok(id),
        _ => Err(KafkaError::ClusterIdMissing),
    }
}

/// A Kafka cluster's id is a UUID, stable for the cluster's life. librdkafka's mock cluster derives
/// its id from a memory address, so two runs could share one: its address (a fresh port each run)
/// tells them apart.
fn source_identity(cluster_id: &str, brokers: &str) -> String {
    if cluster_id.starts_with("mockCluster") { format!("{cluster_id}@{brokers}") } else { cluster_id.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clusters_are_known_by_id_and_mock_ones_by_address_too() {
        assert_eq!(source_identity("vIG2dFxPS0mF3bbd5wT3cg", "kafka:9092"), "vIG2dFxPS0mF3bbd5wT3cg");
        assert_eq!(source_identity("mockCluster7f3a", "127.0.0.1:40117"), "mockCluster7f3a@127.0.0.1:40117");
    }

    /// A lookup that timed out (`None`) or answered without an id is an error `connect_retrying`
    /// retries, never an empty identity (the mock cluster cannot be made slow to answer, so the
    /// lookup's outcomes are fed here directly).
    #[test]
    fn a_missing_cluster_id_is_a_retryable_error_not_a_new_identity() {
        assert_eq!(cluster_id(Some("vIG2dFxPS0mF3bbd5wT3cg".into())).ok().as_deref(), Some("vIG2dFxPS0mF3bbd5wT3cg"));
        for missing in [None, Some(String::new()), Some("  ".into())] {
            let err = cluster_id(missing.clone()).expect_err("no identity");
            assert!(matches!(err, KafkaError::ClusterIdMissing), "{missing:?}: {err}");
            assert_eq!(err.to_string(), "the brokers did not report their cluster id (yet)");
        }
    }
}
