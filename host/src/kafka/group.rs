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
//! yet are bounded: past [`HELD_MAX_BYTES`] the fetcher stops polling, so that librdkafka's own
//! bounded queue holds what comes next, and if the pipeline has not caught up within
//! [`HOLD_OFF_BEFORE_PAUSE`] (a database outage, say), pauses its partitions and polls on for the
//! group's events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

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
/// How long the fetcher, holding [`HELD_MAX_BYTES`], stops polling before it pauses its partitions.
/// A pause drops what librdkafka fetched ahead, and reading on after it took about half a second
/// to bring the next message on a backlog (measured on tansu): a pipeline working through a
/// backlog, holding the bound for a fraction of a second at a time, starved at every resume. Not
/// polling instead leaves the next messages in librdkafka's queue (bounded by
/// `queued.max.messages.kbytes`), ready when the pipeline has room. It delays a rebalance's
/// callbacks by as long, so a longer stall (the database away) pauses and polls on.
pub const HOLD_OFF_BEFORE_PAUSE: Duration = Duration::from_secs(2);
/// How often the fetcher looks whether the pipeline took messages while it does not poll.
const HOLD_OFF_STEP: Duration = Duration::from_millis(2);

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

/// What the fetcher does before its next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Poll.
    Poll,
    /// Not poll for a moment: the pipeline holds the bound (librdkafka's queue holds what comes).
    HoldOff,
    /// Pause the assignment (and poll on, for the group's events): the pipeline held the bound
    /// for [`HOLD_OFF_BEFORE_PAUSE`], or, paused, still holds more than half of it.
    Pause,
    /// Read on: paused, and the pipeline holds at most half of the bound.
    Resume,
}

/// The fetcher's flow control: `holding` bytes handed over and not taken, over the bound for
/// `full_for` (zero when not over), the assignment `paused` or not.
fn flow(holding: usize, full_for: Duration, paused: bool) -> Flow {
    if full_for >= HOLD_OFF_BEFORE_PAUSE || (paused && holding > HELD_MAX_BYTES / 2) {
        Flow::Pause
    } else if paused {
        Flow::Resume
    } else if holding > HELD_MAX_BYTES {
        Flow::HoldOff
    } else {
        Flow::Poll
    }
}

/// The fetcher thread's side: polls `consumer` until `stop`, handing messages and errors to
/// `events`, holding off while the pipeline holds more than [`HELD_MAX_BYTES`] (`held`, counted up
/// here and down as the pipeline takes messages into batches) and pausing the assignment when it
/// does for long (see [`flow`]).
pub fn fetch(consumer: Arc<BaseConsumer<GroupContext>>, held: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut paused = false;
    let mut full_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let holding = held.load(Ordering::Relaxed);
        let full = holding > HELD_MAX_BYTES;
        let full_for = if full { full_since.get_or_insert_with(Instant::now).elapsed() } else { Duration::ZERO };
        if !full {
            full_since = None;
        }
        match flow(holding, full_for, paused) {
            Flow::Poll => {}
            Flow::HoldOff => {
                std::thread::sleep(HOLD_OFF_STEP);
                continue;
            }
            Flow::Pause => {
                // Again at every poll: a partition assigned meanwhile starts unpaused.
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.pause(&assignment);
                }
                paused = true;
            }
            Flow::Resume => {
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.resume(&assignment);
                }
                paused = false;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Under the bound the fetcher polls; over it, it holds off for two seconds, then pauses and
    /// stays paused until the pipeline holds half the bound or less, then reads on.
    #[test]
    fn the_fetcher_holds_off_over_the_bound_and_pauses_only_when_it_lasts() {
        let max = HELD_MAX_BYTES;
        assert_eq!(flow(0, Duration::ZERO, false), Flow::Poll);
        assert_eq!(flow(max, Duration::ZERO, false), Flow::Poll, "at the bound is not over it");
        assert_eq!(flow(max + 1, Duration::ZERO, false), Flow::HoldOff);
        assert_eq!(flow(max + 1, 2 * SECOND - Duration::from_millis(1), false), Flow::HoldOff);
        assert_eq!(flow(max + 1, 2 * SECOND, false), Flow::Pause);
        assert_eq!(flow(max + 1, 5 * SECOND, true), Flow::Pause);
        assert_eq!(flow(max / 2 + 1, Duration::ZERO, true), Flow::Pause, "paused until half the bound");
        assert_eq!(flow(max / 2, Duration::ZERO, true), Flow::Resume);
        assert_eq!(flow(0, Duration::ZERO, true), Flow::Resume);
    }
}
