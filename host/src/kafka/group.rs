//! Membership of the consumer group: the group decides which partitions this host reads, and the
//! pipeline must act on each change before librdkafka does: a partition taken away has its batch
//! committed and its stages checkpointed first (its next owner restores exactly that), and a
//! partition given is read from the position PostgreSQL stores for it, not from the group's
//! committed offset.
//!
//! librdkafka calls the rebalance callback on the thread that polls the consumer. So one thread of
//! the source's own (the fetcher) polls it and hands everything to the pipeline over one channel, in
//! order: messages, errors, and each rebalance, for which the fetcher waits, inside the callback,
//! until the pipeline answered (the positions of the partitions given) or acknowledged (the
//! partitions taken are committed). Messages the fetcher handed over but the pipeline did not take
//! yet are bounded: past [`HELD_MAX_BYTES`] the fetcher pauses its partitions until the pipeline
//! caught up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use super::RawMessage;
use super::health::SourceContext;

/// Bytes of keys and payloads handed to the pipeline and not taken into a batch yet, past which
/// the fetcher pauses its partitions (16 MiB: memory stays bounded however long the pipeline is
/// blocked, say by a database outage).
pub const HELD_MAX_BYTES: usize = 16 << 20;
/// How long one poll of the consumer waits for a message: also how soon the fetcher sees it should
/// stop.
const POLL: Duration = Duration::from_millis(100);

/// What the fetcher hands the pipeline.
#[derive(Debug)]
pub enum Fetched {
    /// A message of an assigned partition.
    Message(RawMessage),
    /// A consumer error (librdkafka reconnects by itself).
    Error(RdKafkaError),
    /// A rebalance, which the fetcher waits on.
    Group(GroupChange),
}

/// A rebalance of the consumer group, as the pipeline acts on it before librdkafka does.
#[derive(Debug)]
pub enum GroupChange {
    /// The group gave this host `partitions`: the pipeline answers with the next offset to read of
    /// each ([`super::BEGINNING`] or absent: from its first message), and the fetcher assigns them at
    /// those positions.
    Assigned {
        /// The partitions given.
        partitions: Vec<i32>,
        /// Where to read each from.
        reply: std::sync::mpsc::SyncSender<BTreeMap<i32, i64>>,
    },
    /// The group takes `partitions` from this host: the pipeline commits what it processed of them
    /// and checkpoints their lanes, then acknowledges, and only then are they given up (what the
    /// source held of them is dropped).
    Revoked {
        /// The partitions taken.
        partitions: Vec<i32>,
        /// Acknowledged once they are committed.
        done: std::sync::mpsc::SyncSender<()>,
    },
}

/// The consumer's callbacks: the health (errors, statistics) and the rebalances.
pub struct GroupContext {
    pub(super) health: SourceContext,
    pub(super) topic: String,
    pub(super) events: UnboundedSender<Fetched>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        self.health.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.health.stats(statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.health.log(level, fac, message);
    }
}

impl ConsumerContext for GroupContext {
    /// Runs on the fetcher thread (inside its poll): asks the pipeline and waits for its answer
    /// before librdkafka assigns or gives up the partitions. A pipeline that is gone (the host is
    /// stopping) answers nothing: partitions given are then not assigned, and partitions taken are
    /// given up at once.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<i32> = tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let (reply, answer) = sync_channel(1);
                let asked = self
                    .events
                    .send(Fetched::Group(GroupChange::Assigned { partitions: partitions.clone(), reply }))
                    .is_ok();
                let Some(positions) = asked.then(|| answer.recv().ok()).flatten() else {
                    debug!(?partitions, "partitions given while the pipeline stops: not assigned");
                    return;
                };
                for &partition in &partitions {
                    let offset = match positions.get(&partition) {
                        Some(&next) if next >= 0 => Offset::Offset(next),
                        _ => Offset::Beginning,
                    };
                    if let Err(err) = tpl.set_partition_offset(&self.topic, partition, offset) {
                        warn!(partition, error = %err, "could not set the partition's start position");
                    }
                }
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let (done, finished) = sync_channel(1);
                if self.events.send(Fetched::Group(GroupChange::Revoked { partitions, done })).is_ok() {
                    // An error means the pipeline stopped: nothing more of these partitions is written.
                    let _ = finished.recv();
                }
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            other => {
                warn!(error = ?other, "consumer group rebalance failed; librdkafka retries it");
                if cooperative { Ok(()) } else { consumer.unassign() }
            }
        };
        if let Err(err) = outcome {
            warn!(error = %err, "applying the group's assignment failed");
        }
    }
}

/// The fetcher thread's side: polls `consumer` until `stop`, handing messages and errors to
/// `events`, and pausing the assignment while the pipeline holds more than [`HELD_MAX_BYTES`]
/// (`held`, counted up here and down as the pipeline takes messages into batches).
pub fn fetch(consumer: Arc<BaseConsumer<GroupContext>>, held: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut paused = false;
    while !stop.load(Ordering::Relaxed) {
        let over = held.load(Ordering::Relaxed) > HELD_MAX_BYTES;
        if over || (paused && held.load(Ordering::Relaxed) > HELD_MAX_BYTES / 2) {
            // Again at every poll: a partition assigned meanwhile starts unpaused.
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            paused = true;
        } else if paused {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            paused = false;
        }
        let events = &consumer.context().events;
        let sent = match consumer.poll(POLL) {
            None => continue,
            Some(Ok(message)) => {
                let raw = RawMessage {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    timestamp_ms: message.timestamp().to_millis(),
                };
                held.fetch_add(raw.size(), Ordering::Relaxed);
                events.send(Fetched::Message(raw))
            }
            Some(Err(err)) => {
                let sent = events.send(Fetched::Error(err));
                // Not a busy loop while the brokers are away.
                std::thread::sleep(POLL);
                sent
            }
        };
        if sent.is_err() {
            // The pipeline is gone.
            break;
        }
    }
}
