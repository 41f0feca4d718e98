//! The pipeline's Kafka source: a member of the consumer group (`--group`, cooperative-sticky
//! assignment), which reads the partitions the group gives this host from the positions the
//! pipeline says (PostgreSQL is the truth of where each partition stands) and hands out batches
//! (see [`super::batches`]), forming each lane's batches committed after its restored checkpoint
//! again first, and the group's rebalances as they come (see [`super::group`]).
//!
//! It still stores each durable batch's offsets with the group (committed in the background and on
//! close), so Kafka tools show the consumer's lag. Broker outages are librdkafka's to reconnect
//! from; the source records them in its [`SourceHealth`] for the API and dashboard.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use super::batches::Pending;
use super::group::{self, Fetched, GroupChange, GroupContext};
use super::health::{SourceContext, SourceHealth};
use super::replay::Replay;
use super::{Brokers, KafkaError};

/// A position that means "the partition's first message" (librdkafka's `OFFSET_BEGINNING`), for a
/// partition nothing was read from yet.
pub const BEGINNING: i64 = -2;

/// Keys and payloads one batch may hold: a batch of the default 5000 seed-format readings is about
/// 1 MB, so this only splits batches of unusually large messages (a topic of 1 MB messages would
/// otherwise make one batch of gigabytes).
pub const BATCH_MAX_BYTES: usize = 32 << 20;
/// How long one metadata request may take before it is retried.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long leaving the group at shutdown may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

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

impl RawMessage {
    /// Bytes of its key and payload: what holding it costs.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// What the source has for the pipeline next.
#[derive(Debug)]
pub enum Next {
    /// A batch (empty after `idle` without a message).
    Batch(Vec<RawMessage>),
    /// A rebalance: the fetcher waits for the pipeline's answer.
    Group(GroupChange),
}

/// The consumer of one topic, a member of the consumer group.
pub struct Source {
    pub(super) consumer: Arc<BaseConsumer<GroupContext>>,
    pub(super) topic: String,
    identity: String,
    partitions: Vec<i32>,
    pub(super) health: Arc<SourceHealth>,
    /// What the fetcher hands over, in order.
    events: UnboundedReceiver<Fetched>,
    /// Bytes handed over and not taken into a batch yet (the fetcher pauses past its bound).
    held: Arc<AtomicUsize>,
    /// Set to stop the fetcher.
    stop: Arc<AtomicBool>,
    fetcher: Option<std::thread::JoinHandle<()>>,
    /// Received, not yet handed out.
    pub(super) pending: Pending,
    /// Each lane's committed batches to form again before it reads on.
    pub(super) replay: Replay,
}

impl Source {
    /// Connects to `brokers` as a member of `group` and looks up the cluster's identity and the
    /// topic's partitions (one attempt: [`Source::connect_retrying`] waits for the brokers). It
    /// joins the group with [`Source::subscribe`].
    pub async fn connect(brokers: &Brokers, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let health = Arc::new(SourceHealth::default());
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let context =
            GroupContext { health: SourceContext { health: health.clone() }, topic: topic.to_owned(), events: sender };
        let consumer: BaseConsumer<GroupContext> = brokers
            .client_config(&[
                ("group.id", group),
                // Partitions move one at a time and the others read on through a rebalance.
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                // The broker answers a fetch as soon as there is data, or after 100 ms (librdkafka's
                // default, 500 ms, is most of the end-to-end latency at moderate rates).
                ("fetch.wait.max.ms", "100"),
                // What librdkafka prefetches: 8 MiB instead of 64, so memory stays bounded however
                // long an outage lasts (the fetcher bounds what the pipeline holds besides, and
                // leaves the next messages here while the pipeline holds its bound: group.rs).
                // With 10,000 sensors 16 MiB took the peak RSS from 246 to 292 MiB for no more
                // readings/s (docs/performance.md).
                ("queued.max.messages.kbytes", "8192"),
                // Once that queue has room, fetch again within 100 ms (librdkafka waits up to a
                // second): 8 MiB is a quarter of a second of a backlog at full speed, and with the
                // default wait the pipeline ran dry on it.
                ("fetch.queue.backoff.ms", "100"),
                // After an outage, reconnect within 2 s of the broker's return (librdkafka's default
                // backoff grows to 10 s).
                ("reconnect.backoff.max.ms", "2000"),
                // Broker states every second (SourceHealth): a broker back, or a passing error on an
                // idle topic, is seen within a second without waiting for a message; a report is a
                // few KB of JSON, parsed once a second.
                ("statistics.interval.ms", "1000"),
            ])
            .create_with_context(context)?;
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
            events,
            held: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            fetcher: None,
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

    /// The topic's partitions (all of them, whichever this host is given).
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

    /// Joins the consumer group on the topic and starts the fetcher thread: from now on
    /// [`Source::next`] hands out the group's assignments and the messages of the partitions given.
    pub fn subscribe(&mut self) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.topic])?;
        let (consumer, held, stop) = (self.consumer.clone(), self.held.clone(), self.stop.clone());
        let fetcher = std::thread::Builder::new()
            .name("kafka-fetcher".into())
            .spawn(move || group::fetch(consumer, held, stop))
            .map_err(|err| KafkaError::Lookup(format!("could not start the fetcher thread: {err}")))?;
        self.fetcher = Some(fetcher);
        Ok(())
    }

    /// What comes next: a rebalance as soon as the group asks for one, otherwise a batch. While a
    /// lane forms its logged batches again, its part of a batch is the next of them once all its
    /// messages arrived; otherwise the call waits up to `idle` for a first message, then collects
    /// more until `max` messages or until `linger` passed. A consumer error is logged, recorded in
    /// the health and ends the batch early (librdkafka reconnects by itself). Cancelling the call
    /// loses nothing: what was received stays for the next call.
    pub async fn next(&mut self, max: usize, linger: Duration, idle: Duration) -> Next {
        let idle_until = tokio::time::Instant::now() + idle;
        let mut linger_until = None;
        while self.pending.len() < max && self.pending.bytes() < BATCH_MAX_BYTES {
            if linger_until.is_none() && !self.pending.is_empty() && !self.replay.waits_for_all(&self.pending) {
                linger_until = Some(tokio::time::Instant::now() + linger);
            }
            let Ok(received) = tokio::time::timeout_at(linger_until.unwrap_or(idle_until), self.events.recv()).await
            else {
                break;
            };
            match received {
                Some(Fetched::Message(message)) => self.receive(message),
                Some(Fetched::Error(err)) => {
                    self.record_error(&err);
                    break;
                }
                Some(Fetched::Group(change)) => {
                    if let GroupChange::Revoked { partitions, .. } = &change {
                        let dropped = self.pending.drop_partitions(partitions);
                        self.held.fetch_sub(dropped, Ordering::Relaxed);
                        self.replay.forget(partitions);
                    }
                    return Next::Group(change);
                }
                // The fetcher stopped (the host is stopping).
                None => {
                    tokio::time::sleep_until(linger_until.unwrap_or(idle_until)).await;
                    break;
                }
            }
        }
        let batch = self.form_batch(max);
        self.held.fetch_sub(batch.iter().map(RawMessage::size).sum(), Ordering::Relaxed);
        Next::Batch(batch)
    }

    /// Holds a received message.
    fn receive(&mut self, message: RawMessage) {
        self.health.record_message();
        self.replay.received(message.partition, message.offset);
        self.pending.push(message);
    }

    /// Logs a consumer error once per outage and records it in the health.
    fn record_error(&self, err: &RdKafkaError) {
        // Once per outage at WARN: librdkafka repeats an error for as long as it lasts.
        if self.health.is_up() {
            warn!(topic = %self.topic, error = %err, "kafka consumer error; reconnecting");
        } else {
            debug!(topic = %self.topic, error = %err, "kafka consumer error");
        }
        self.health.record_error(err.to_string());
    }

    /// Stores the positions of a durable batch (next offset per partition) with the group, for lag
    /// monitoring (PostgreSQL holds the positions the host resumes from). A partition given away
    /// meanwhile is skipped.
    pub fn mark_stored(&self, positions: &BTreeMap<i32, i64>) {
        for (&partition, &next) in positions {
            // store_offset takes the offset of the processed message; librdkafka commits it + 1.
            if let Err(err) = self.consumer.store_offset(&self.topic, partition, next - 1) {
                debug!(partition, error = %err, "offset not stored with the group (the partition moved)");
            }
        }
    }

    /// Commits the stored offsets to the group now, synchronously (at shutdown).
    pub fn commit_now(&self) -> Result<(), KafkaError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Err(RdKafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Stops the fetcher and leaves the group (its partitions go to the other members at once, not
    /// after the session timeout). Rebalances from here on are not asked of the pipeline.
    pub async fn close(mut self) {
        self.events.close();
        self.stop.store(true, Ordering::Relaxed);
        let (consumer, fetcher) = (self.consumer.clone(), self.fetcher.take());
        drop(self);
        let (left, closed) = tokio::sync::oneshot::channel();
        // A thread of its own, not the runtime's blocking pool: librdkafka's close waits for the
        // group's coordinator, without a bound, and a runtime shuts down only once its blocking
        // tasks end; a detached thread ends with the process.
        let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            if let Some(fetcher) = fetcher {
                let _ = fetcher.join();
            }
            // Dropping the last handle closes the consumer: it leaves the group.
            drop(consumer);
            let _ = left.send(());
        });
        if closing.is_err() || tokio::time::timeout(CLOSE_LIMIT, closed).await.is_err() {
            warn!(after = ?CLOSE_LIMIT, "leaving the consumer group timed out; the group notices at its session timeout");
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The cluster id and the partitions of `topic` (an error if the topic does not exist yet).
fn lookup_topic(consumer: &BaseConsumer<GroupContext>, topic: &str) -> Result<(String, Vec<i32>), KafkaError> {
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
