//! What an operator sees of the hosts sharing a topic (migration 0011, `GET /api/partitions`): the
//! rebalances each host went through, the consumer lag each host reports for the partitions it owns,
//! and the read that puts them beside the partitions' owners and stored positions.
//!
//! Every host writes only its own rows: a rebalance under its name, and lag on the
//! `partition_owners` rows whose owner it is (a host that lost a partition cannot overwrite the new
//! owner's report). So any host's API shows the whole group, and a report's age says whether its
//! host is still alive.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use iotstream_api::{PartitionStatus, RebalanceEvent};

use crate::store::{Store, StoreError};

/// Rebalances kept per source: a thousand is weeks of an ordinary group's history (a rebalance
/// when a host starts, stops or is deployed) and days of a flapping one's, while staying a table a
/// dashboard reads whole in a millisecond.
pub const REBALANCES_KEPT: i64 = 1000;
/// How long a rebalance is kept: a week covers the deploys and incidents an operator looks back on.
pub const REBALANCES_KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a lag report waits for a partition row a batch transaction holds (each batch takes its
/// partitions' rows shared): a report skipped is harmless, the next comes a few seconds later, and
/// a batch never waits behind a report that waits.
const LAG_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

/// One rebalance of this host's consumer group, as the pipeline saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebalance {
    /// When it finished (the pipeline runs again).
    pub at: DateTime<Utc>,
    /// Partitions the group gave this host.
    pub assigned: Vec<i32>,
    /// Partitions the group took from it.
    pub revoked: Vec<i32>,
    /// How long the pipeline stood still for it (`None`: not measured).
    pub pause: Option<Duration>,
}

impl Rebalance {
    /// The event the API and the live stream show, with `host`'s name and the partitions ascending.
    pub fn event(&self, host: &str) -> RebalanceEvent {
        RebalanceEvent {
            at: self.at,
            host: host.to_owned(),
            assigned: ascending(&self.assigned),
            revoked: ascending(&self.revoked),
            pause_ms: self.pause.map(|pause| pause.as_secs_f64() * 1000.0),
        }
    }
}

/// A partition as `cluster_view` reads it: partition, owner, since, generation, next offset, lag,
/// lag's time and age.
type PartitionRow = (
    i32,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<i64>,
);
/// A rebalance as `cluster_view` reads it: at, host, assigned, revoked, pause.
type RebalanceRow = (DateTime<Utc>, String, Vec<i32>, Vec<i32>, Option<f64>);

fn ascending(partitions: &[i32]) -> Vec<i32> {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

impl Store {
    /// Records a rebalance `host` went through on the source whose first id is `source_lineage`,
    /// and prunes: every source's rebalances older than [`REBALANCES_KEPT_FOR`], and this source's
    /// beyond its newest [`REBALANCES_KEPT`].
    pub async fn record_rebalance(&self, source_lineage: i16, host: &str, event: &Rebalance) -> Result<(), StoreError> {
        let event = event.event(host);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rebalances (source_id, host, at, assigned, revoked, pause_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(source_lineage)
        .bind(&event.host)
        .bind(event.at)
        .bind(&event.assigned)
        .bind(&event.revoked)
        .bind(event.pause_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM rebalances WHERE at < now() - $2::int8 * interval '1 second' \
             OR (source_id = $1 AND id <= (SELECT id FROM rebalances WHERE source_id = $1 ORDER BY id DESC \
             OFFSET $3 LIMIT 1))",
        )
        .bind(source_lineage)
        .bind(REBALANCES_KEPT_FOR.as_secs() as i64)
        .bind(REBALANCES_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reports `lags` (messages behind, by partition) of the source whose first id is
    /// `source_lineage` on the partitions `host` owns; a partition it does not own (any more) is
    /// left as its owner reported it. Returns how many partitions were updated.
    pub async fn report_lag(
        &self,
        source_lineage: i16,
        host: &str,
        lags: &BTreeMap<i32, i64>,
    ) -> Result<u64, StoreError> {
        let (partitions, behind): (Vec<i32>, Vec<i64>) = lags.iter().map(|(&p, &lag)| (p, lag)).unzip();
        let mut tx = self.pool.begin().await?;
        sqlx::query(LAG_LOCK_TIMEOUT).execute(&mut *tx).await?;
        let updated = sqlx::query(
            "UPDATE partition_owners o SET lag = r.lag, lag_at = now() \
             FROM unnest($3::int4[], $4::int8[]) AS r(kafka_partition, lag) \
             WHERE o.source_id = $1 AND o.owner = $2 AND o.kafka_partition = r.kafka_partition",
        )
        .bind(source_lineage)
        .bind(host)
        .bind(&partitions)
        .bind(&behind)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated)
    }

    /// Every partition of the source whose first id is `source_lineage` that has an owner or a
    /// stored position (of its current epoch), by partition, and its newest `rebalances`, newest
    /// first (by the time their hosts gave). A lag reported before the partition's owner took it
    /// (the previous owner's last report) is not its owner's: left out.
    pub async fn cluster_view(
        &self,
        source_lineage: i16,
        rebalances: i64,
    ) -> Result<(Vec<PartitionStatus>, Vec<RebalanceEvent>), StoreError> {
        let rows: Vec<PartitionRow> = sqlx::query_as(
            "WITH current_epoch AS ( \
                 SELECT e.id FROM kafka_sources e JOIN kafka_sources l \
                     ON l.id = $1 AND e.cluster_id = l.cluster_id AND e.topic = l.topic \
                 ORDER BY e.epoch DESC LIMIT 1), \
             offsets AS ( \
                 SELECT kafka_partition, next_offset FROM kafka_offsets \
                 WHERE source_id = (SELECT id FROM current_epoch)), \
             owners AS ( \
                 SELECT kafka_partition, owner, since, generation, \
                     CASE WHEN lag_at >= since THEN lag END AS lag, CASE WHEN lag_at >= since THEN lag_at END AS lag_at \
                 FROM partition_owners WHERE source_id = $1) \
             SELECT coalesce(o.kafka_partition, f.kafka_partition), o.owner, o.since, o.generation, f.next_offset, \
                 o.lag, o.lag_at, floor(extract(epoch FROM now() - o.lag_at))::int8 \
             FROM owners o FULL JOIN offsets f ON f.kafka_partition = o.kafka_partition \
             ORDER BY 1",
        )
        .bind(source_lineage)
        .fetch_all(&self.api_pool)
        .await?;
        let partitions =
            rows.into_iter()
                .map(|(partition, owner, since, generation, next_offset, lag, lag_at, lag_age_seconds)| {
                    PartitionStatus { partition, owner, since, generation, next_offset, lag, lag_at, lag_age_seconds }
                })
                .collect();
        let rows: Vec<RebalanceRow> = sqlx::query_as(
            "SELECT at, host, assigned, revoked, pause_ms FROM rebalances WHERE source_id = $1 \
             ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(source_lineage)
        .bind(rebalances)
        .fetch_all(&self.api_pool)
        .await?;
        let rebalances = rows
            .into_iter()
            .map(|(at, host, assigned, revoked, pause_ms)| RebalanceEvent { at, host, assigned, revoked, pause_ms })
            .collect();
        Ok((partitions, rebalances))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_lists_partitions_ascending_once_and_the_pause_in_milliseconds() {
        let rebalance = Rebalance {
            at: DateTime::<Utc>::UNIX_EPOCH,
            assigned: vec![5, 2, 5],
            revoked: vec![],
            pause: Some(Duration::from_micros(1_500)),
        };
        let event = rebalance.event("node-b-7");
        assert_eq!((event.host.as_str(), event.assigned, event.revoked), ("node-b-7", vec![2, 5], vec![]));
        assert_eq!(event.pause_ms, Some(1.5));
        assert_eq!(Rebalance { pause: None, ..rebalance }.event("x").pause_ms, None);
    }
}
