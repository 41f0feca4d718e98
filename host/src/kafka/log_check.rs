//! Whether the stored positions still mean the same messages: the check a source's positions pass
//! before the host reads from them.
//!
//! A topic deleted and created again, or a broker whose log was wiped (a `docker-compose down`
//! without a volume for Kafka), starts its offsets at zero again under the same cluster id and
//! topic name. Reading on from the stored positions would find nothing, librdkafka would reset to
//! the start, and every new message would collide with an old row's (source, partition, offset)
//! key and be dropped as a replay. rdkafka 0.39 does not expose the topic ids librdkafka reads
//! (only through raw FFI of the admin API), so the check is the one the offsets themselves allow:
//! a stored next offset beyond a partition's high watermark means the log the positions belong to
//! is gone ([`Rewound`], refused unless the operator accepts a new epoch). A stored offset below
//! the low watermark means retention deleted messages this host never stored ([`Expired`]): lost
//! by the broker, warned and counted, and reading goes on from the oldest message there is.
//!
//! A new log that already holds more messages than the old one held cannot be told apart by
//! offsets: that needs the topic id (docs/guarantees.md).

use std::collections::BTreeMap;

/// A partition whose stored position is past the end of the broker's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewound {
    /// The partition.
    pub partition: i32,
    /// The next offset stored for it.
    pub stored: i64,
    /// The broker's high watermark (the offset its next message will get).
    pub high: i64,
}

/// A partition whose oldest messages retention deleted before this host stored them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The partition.
    pub partition: i32,
    /// The next offset stored for it.
    pub stored: i64,
    /// The broker's low watermark (its oldest message's offset).
    pub low: i64,
}

impl Expired {
    /// How many messages were deleted unread.
    pub fn lost(&self) -> i64 {
        self.low - self.stored
    }
}

/// What comparing stored positions with the broker's offset ranges found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCheck {
    /// Partitions whose log started again: their positions mean other messages now.
    pub rewound: Vec<Rewound>,
    /// Partitions with messages deleted unread.
    pub expired: Vec<Expired>,
}

impl LogCheck {
    /// Compares each `stored` next offset with its partition's (low, high) `watermarks`. A stored
    /// partition the broker no longer has counts as rewound to 0 (a topic created again with fewer
    /// partitions).
    pub fn compare(stored: &BTreeMap<i32, i64>, watermarks: &BTreeMap<i32, (i64, i64)>) -> Self {
        let mut check = LogCheck::default();
        for (&partition, &stored) in stored {
            let (low, high) = watermarks.get(&partition).copied().unwrap_or((0, 0));
            if stored > high {
                check.rewound.push(Rewound { partition, stored, high });
            } else if stored < low {
                check.expired.push(Expired { partition, stored, low });
            }
        }
        check
    }

    /// The rewound partitions, as an operator reads them: `partition 0: stored next offset 120,
    /// broker's log ends at 4; …`.
    pub fn describe_rewound(&self) -> String {
        self.rewound
            .iter()
            .map(|r| {
                format!("partition {}: stored next offset {}, broker's log ends at {}", r.partition, r.stored, r.high)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_past_the_end_are_rewound_and_before_the_start_expired() {
        let stored = BTreeMap::from([(0, 120), (1, 50), (2, 7), (3, 10), (4, 3)]);
        let watermarks = BTreeMap::from([(0, (0, 4)), (1, (0, 50)), (2, (20, 90)), (3, (10, 10))]);
        let check = LogCheck::compare(&stored, &watermarks);
        assert_eq!(
            check.rewound,
            vec![Rewound { partition: 0, stored: 120, high: 4 }, Rewound { partition: 4, stored: 3, high: 0 }]
        );
        assert_eq!(check.expired, vec![Expired { partition: 2, stored: 7, low: 20 }]);
        assert_eq!(check.expired[0].lost(), 13);
        assert_eq!(
            check.describe_rewound(),
            "partition 0: stored next offset 120, broker's log ends at 4; \
             partition 4: stored next offset 3, broker's log ends at 0"
        );
    }

    #[test]
    fn positions_within_the_log_pass() {
        let stored = BTreeMap::from([(0, 0), (1, 50), (2, 20)]);
        let watermarks = BTreeMap::from([(0, (0, 0)), (1, (0, 50)), (2, (20, 90))]);
        assert_eq!(LogCheck::compare(&stored, &watermarks), LogCheck::default());
    }
}
