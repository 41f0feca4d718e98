//! Hosts sharing a topic through Kafka's consumer group, as an operator watches them
//! (`GET /api/partitions`): which host owns each partition, since when and how far behind it is, and
//! the group's recent rebalances. Every host answers for the whole group: it reads what each host
//! wrote to PostgreSQL, not only what it knows itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One partition of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The Kafka partition.
    pub partition: i32,
    /// The host that owns it, as it names itself (`--host-name`); `None` for a partition with
    /// stored positions that no host has owned since hosts share partitions.
    pub owner: Option<String>,
    /// When its owner was given it.
    pub since: Option<DateTime<Utc>>,
    /// Its take-overs, counted (1: the first owner's).
    pub generation: Option<i64>,
    /// The next offset whose message is not stored yet, in the source's current epoch (`None`: none
    /// of its messages is stored).
    pub next_offset: Option<i64>,
    /// Messages behind the partition's end, as its owner last reported (`None`: its owner has not
    /// reported yet; a previous owner's last report is not shown).
    pub lag: Option<i64>,
    /// When the owner reported [`PartitionStatus::lag`].
    pub lag_at: Option<DateTime<Utc>>,
    /// Whole seconds since then, by the database's clock (a report older than a few seconds is from
    /// a host that stopped reporting: stopped, paused or cut off from the database).
    pub lag_age_seconds: Option<i64>,
}

/// One host's rebalance: the partitions the group gave it and those it took away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebalanceEvent {
    /// When the host finished it.
    pub at: DateTime<Utc>,
    /// The host, as it names itself.
    pub host: String,
    /// Partitions it was given, ascending.
    pub assigned: Vec<i32>,
    /// Partitions taken from it, ascending.
    pub revoked: Vec<i32>,
    /// How long its pipeline stood still for it, milliseconds (`None`: not measured).
    pub pause_ms: Option<f64>,
}

/// `GET /api/partitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The host that answered, as it names itself (the dashboard marks its partitions).
    pub host: String,
    /// Every partition of the source known to the database, by partition.
    pub partitions: Vec<PartitionStatus>,
    /// The newest rebalances of every host, newest first.
    pub rebalances: Vec<RebalanceEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LiveEvent, LiveView};

    #[test]
    fn a_rebalance_is_a_tagged_live_event_that_leaves_the_view_as_it_was() {
        let event = RebalanceEvent {
            at: DateTime::<Utc>::UNIX_EPOCH,
            host: "node-a-41".into(),
            assigned: vec![2],
            revoked: vec![0, 1],
            pause_ms: Some(12.5),
        };
        let json = serde_json::to_string(&LiveEvent::Rebalance { event: event.clone() }).expect("serialises");
        assert_eq!(
            json,
            r#"{"type":"rebalance","event":{"at":"1970-01-01T00:00:00Z","host":"node-a-41","assigned":[2],"revoked":[0,1],"pause_ms":12.5}}"#
        );
        assert_eq!(serde_json::from_str::<LiveEvent>(&json).expect("parses"), LiveEvent::Rebalance { event });
        let mut view = LiveView::default();
        view.apply(serde_json::from_str(&json).expect("parses"));
        assert_eq!(view, LiveView::default());
    }
}
