//! How the source's messages become batches, in an order a replay forms again exactly.
//!
//! Kafka orders each partition, not the topic. Every stage runs once per partition (a lane, see
//! `pipeline`), so a stage's state depends on its partition's messages and on where its batches
//! were cut, never on how partitions interleave. So:
//!
//! * a batch holds, for each partition, a run of consecutive messages in offset order (partitions
//!   merged by Kafka timestamp, then partition, which only decides which messages a full batch
//!   takes first);
//! * each lane's part of a committed batch is logged with the partition's next offset after it, in
//!   the batch's own transaction;
//! * a host given a partition restores the partition's newest checkpoint and forms the lane's
//!   batches committed after it again ([`Extent`]s of one partition) before it reads on.
//!
//! The stages then see exactly the sequence of an uncrashed run, and their state comes out
//! identical. What an uncommitted batch held was never stored, so reading it again cut otherwise
//! changes nothing anyone saw.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::RawMessage;

/// Which messages a batch holds: for each partition it read, the offset after its last message
/// there (it holds that partition's messages from where the previous batch stopped up to this).
pub type Extent = BTreeMap<i32, i64>;

/// Messages received from the consumer and not yet handed out, by partition, in offset order.
#[derive(Debug, Default)]
pub struct Pending {
    by_partition: BTreeMap<i32, VecDeque<RawMessage>>,
    /// The highest offset received of each partition.
    received: BTreeMap<i32, i64>,
    len: usize,
    bytes: usize,
}

impl Pending {
    /// Adds a message (the consumer delivers each partition in offset order).
    pub fn push(&mut self, message: RawMessage) {
        let received = self.received.entry(message.partition).or_insert(message.offset);
        *received = (*received).max(message.offset);
        self.bytes += size(&message);
        self.by_partition.entry(message.partition).or_default().push_back(message);
        self.len += 1;
    }

    /// Bytes of keys and payloads held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every message of `extent` has been received (a partition has, once a message at or
    /// past the extent's last offset arrived; offsets a topic's retention deleted never will).
    pub fn covers(&self, extent: &Extent) -> bool {
        extent.iter().all(|(partition, &next)| self.received.get(partition).is_some_and(|&got| got >= next - 1))
    }

    /// Takes the held messages that `extent` holds, in canonical order.
    pub fn take_extent(&mut self, extent: &Extent) -> Vec<RawMessage> {
        let mut taken: BTreeMap<i32, VecDeque<RawMessage>> = BTreeMap::new();
        for (partition, &next) in extent {
            let Some(queue) = self.by_partition.get_mut(partition) else { continue };
            let count = queue.iter().take_while(|m| m.offset < next).count();
            taken.insert(*partition, queue.drain(..count).collect());
        }
        let batch = merge(&mut taken, usize::MAX, usize::MAX);
        self.taken(&batch);
        batch
    }

    /// Takes up to `max` held messages, in canonical order (a prefix of each partition).
    pub fn take_up_to(&mut self, max: usize) -> Vec<RawMessage> {
        self.take_bounded(max, usize::MAX)
    }

    /// [`Pending::take_up_to`], also stopping before the batch's keys and payloads would pass
    /// `max_bytes` (a batch always takes its first message, however large).
    pub fn take_bounded(&mut self, max: usize, max_bytes: usize) -> Vec<RawMessage> {
        let batch = merge(&mut self.by_partition, max, max_bytes);
        self.taken(&batch);
        batch
    }

    /// Like [`Pending::take_bounded`], leaving the messages of the partitions `held` names (their
    /// lanes are forming logged batches again).
    pub fn take_bounded_except(&mut self, max: usize, max_bytes: usize, held: &BTreeSet<i32>) -> Vec<RawMessage> {
        let mut kept: BTreeMap<i32, VecDeque<RawMessage>> =
            held.iter().filter_map(|p| self.by_partition.remove(p).map(|queue| (*p, queue))).collect();
        let batch = merge(&mut self.by_partition, max, max_bytes);
        self.by_partition.append(&mut kept);
        self.taken(&batch);
        batch
    }

    /// Drops every message held of `partitions` (taken from this host), and what was received of
    /// them; returns the bytes dropped.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let mut bytes = 0;
        for partition in partitions {
            self.received.remove(partition);
            if let Some(queue) = self.by_partition.remove(partition) {
                let dropped: usize = queue.iter().map(size).sum();
                self.len -= queue.len();
                self.bytes -= dropped;
                bytes += dropped;
            }
        }
        bytes
    }

    fn taken(&mut self, batch: &[RawMessage]) {
        self.len -= batch.len();
        self.bytes -= batch.iter().map(size).sum::<usize>();
    }
}

/// What a held message weighs: its key and payload.
fn size(message: &RawMessage) -> usize {
    message.size()
}

/// The canonical order: repeatedly the partition whose next message has the lowest Kafka
/// timestamp (a message without one first), the lower partition on a tie. Each partition keeps its
/// offset order. Takes at most `max` messages off the queues, and no message that would take the
/// batch past `max_bytes` (but always a first one).
fn merge(queues: &mut BTreeMap<i32, VecDeque<RawMessage>>, max: usize, max_bytes: usize) -> Vec<RawMessage> {
    let total: usize = queues.values().map(VecDeque::len).sum();
    let mut merged = Vec::with_capacity(total.min(max));
    let mut bytes = 0;
    while merged.len() < max {
        let next = queues
            .iter()
            .filter_map(|(&partition, queue)| queue.front().map(|m| (m.timestamp_ms.unwrap_or(i64::MIN), partition)))
            .min();
        let Some(queue) = next.and_then(|(_, partition)| queues.get_mut(&partition)) else { break };
        let weight = queue.front().map_or(0, size);
        if !merged.is_empty() && bytes + weight > max_bytes {
            break;
        }
        let Some(message) = queue.pop_front() else { break };
        bytes += weight;
        merged.push(message);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64, timestamp_ms: i64) -> RawMessage {
        RawMessage { partition, offset, key: None, payload: None, timestamp_ms: Some(timestamp_ms) }
    }

    fn ids(batch: &[RawMessage]) -> Vec<(i32, i64)> {
        batch.iter().map(|m| (m.partition, m.offset)).collect()
    }

    /// Partition 0: offsets 0-2 at 10, 30, 20 ms (not monotone); partition 1: 0-1 at 20, 25 ms.
    fn arrivals() -> Vec<RawMessage> {
        vec![message(1, 0, 20), message(0, 0, 10), message(0, 1, 30), message(1, 1, 25), message(0, 2, 20)]
    }

    #[test]
    fn a_batch_merges_partitions_by_timestamp_and_keeps_each_partition_in_offset_order() {
        let mut pending = Pending::default();
        arrivals().into_iter().for_each(|m| pending.push(m));
        // Heads 10 (p0) vs 20 (p1): p0/0. Then 30 vs 20: p1/0. 30 vs 25: p1/1. Then p0 alone: 1, 2
        // (offset 2's 20 ms does not jump ahead of offset 1).
        assert_eq!(ids(&pending.take_up_to(10)), vec![(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn the_order_does_not_depend_on_how_partitions_arrived_interleaved() {
        let mut a = Pending::default();
        let mut b = Pending::default();
        arrivals().into_iter().for_each(|m| a.push(m));
        // Partition 1 entirely before partition 0.
        let mut other = arrivals();
        other.sort_by_key(|m| (-m.partition, m.offset));
        other.into_iter().for_each(|m| b.push(m));
        assert_eq!(ids(&a.take_up_to(10)), ids(&b.take_up_to(10)));
    }

    #[test]
    fn a_limited_batch_takes_a_prefix_of_the_order_and_leaves_the_rest() {
        let mut pending = Pending::default();
        arrivals().into_iter().for_each(|m| pending.push(m));
        assert_eq!(ids(&pending.take_up_to(2)), vec![(0, 0), (1, 0)]);
        assert_eq!(pending.len(), 3);
        assert_eq!(ids(&pending.take_up_to(10)), vec![(1, 1), (0, 1), (0, 2)]);
    }

    #[test]
    fn an_extent_is_formed_once_all_its_messages_arrived_and_takes_only_them() {
        let mut pending = Pending::default();
        let extent: Extent = [(0, 2), (1, 1)].into();
        for m in arrivals().into_iter().take(3) {
            // p1/0, p0/0, p0/1 received: partition 1 is complete (next 1), partition 0 too (next 2).
            pending.push(m);
        }
        assert!(pending.covers(&extent));
        assert!(!pending.covers(&[(0, 3)].into()), "p0/2 not received yet");
        assert!(!pending.covers(&[(2, 1)].into()), "nothing of partition 2 received");
        assert_eq!(ids(&pending.take_extent(&extent)), vec![(0, 0), (1, 0), (0, 1)]);
        assert!(pending.is_empty());
        // Later messages stay for the next batch.
        pending.push(message(1, 1, 25));
        pending.push(message(0, 2, 20));
        assert_eq!(ids(&pending.take_extent(&[(0, 3)].into())), vec![(0, 2)]);
        assert_eq!(ids(&pending.take_up_to(10)), vec![(1, 1)]);
    }

    #[test]
    fn held_partitions_stay_out_of_a_batch_and_dropped_ones_are_forgotten() {
        let mut pending = Pending::default();
        arrivals().into_iter().for_each(|m| pending.push(m));
        assert_eq!(ids(&pending.take_bounded_except(10, usize::MAX, &[1].into())), vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!(pending.len(), 2);
        assert!(pending.covers(&[(1, 2)].into()));
        pending.drop_partitions(&[1]);
        assert!(pending.is_empty());
        assert!(!pending.covers(&[(1, 1)].into()), "nothing of partition 1 is received any more");
    }

    #[test]
    fn held_bytes_count_keys_and_payloads_until_taken() {
        let mut pending = Pending::default();
        let mut with_payload = message(0, 0, 1);
        (with_payload.key, with_payload.payload) = (Some(b"s1".to_vec()), Some(vec![0; 100]));
        pending.push(with_payload);
        pending.push(message(1, 0, 2));
        assert_eq!((pending.len(), pending.bytes()), (2, 102));
        pending.take_up_to(1);
        assert_eq!((pending.len(), pending.bytes()), (1, 0));
    }

    #[test]
    fn a_batch_stops_before_its_bytes_pass_the_cap_but_takes_a_first_message_however_large() {
        let sized =
            |offset: i64, bytes: usize| RawMessage { payload: Some(vec![b'x'; bytes]), ..message(0, offset, offset) };
        let mut pending = Pending::default();
        for (offset, bytes) in [(0, 1000), (1, 1000), (2, 1000), (3, 5000), (4, 10)] {
            pending.push(sized(offset, bytes));
        }
        assert_eq!(ids(&pending.take_bounded(10, 2500)), vec![(0, 0), (0, 1)]);
        assert_eq!(ids(&pending.take_bounded(10, 2500)), vec![(0, 2)]);
        assert_eq!(ids(&pending.take_bounded(10, 2500)), vec![(0, 3)]);
        assert_eq!((ids(&pending.take_bounded(10, 2500)), pending.bytes()), (vec![(0, 4)], 0));
    }

    #[test]
    fn offsets_deleted_by_retention_do_not_hold_an_extent_back() {
        let mut pending = Pending::default();
        // The extent ends at 5, but offsets 2-4 are gone: 7 arrives after 1.
        pending.push(message(0, 1, 1));
        assert!(!pending.covers(&[(0, 5)].into()));
        pending.push(message(0, 7, 2));
        assert!(pending.covers(&[(0, 5)].into()));
        assert_eq!(ids(&pending.take_extent(&[(0, 5)].into())), vec![(0, 1)]);
        assert_eq!(pending.len(), 1);
    }
}
