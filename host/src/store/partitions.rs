//! Day partitions of the tables that grow with the stream (migration 0008): `sensor_readings` by
//! event time, `dead_letters` by arrival. At 10,000 readings/s a table gains close to a billion
//! rows a day; partitions by day let retention drop a whole day at once (`DROP TABLE`: no
//! `DELETE`, no vacuum, no bloat) and let a query over a time range read only its days.
//!
//! A row needs its day's partition before it is inserted (PostgreSQL refuses a row no partition
//! takes), so the host makes them ahead: [`Store::maintain_partitions`] at start and then every
//! [`MAINTENANCE_INTERVAL`] makes today's and the next two days', and drops the days past the
//! [`Retention`]; every batch write first makes the days of its own readings that are missing (a
//! replay of old data, a clock ahead), once each, remembered in [`KnownPartitions`]. A row that
//! finds no partition of its day anyway (inserted by hand) goes to the table's default partition,
//! never refused, and moves into its day's partition at the next maintenance.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tracing::info;

use crate::store::isolate::is_permanent;
use crate::store::{Store, StoreError};

/// How often a running host makes the coming days' partitions and applies retention.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// Days ahead of today whose partitions are made in advance.
const DAYS_AHEAD: u64 = 2;

/// Sets how long a partition's creation or drop may wait for the table's lock (an API query
/// holding it): then it is a transient error, tried again on the next write or maintenance.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// The names of a partitioned table's partitions (`$1`: the table).
const PARTITION_NAMES: &str = "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = to_regclass($1)";

/// A table partitioned by day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionedTable {
    /// `sensor_readings`, by the reading's event time.
    Readings,
    /// `dead_letters`, by when the host received the message.
    DeadLetters,
}

impl PartitionedTable {
    /// Both tables.
    pub const ALL: [PartitionedTable; 2] = [PartitionedTable::Readings, PartitionedTable::DeadLetters];

    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            PartitionedTable::Readings => "sensor_readings",
            PartitionedTable::DeadLetters => "dead_letters",
        }
    }

    /// Locks the table against writes until the transaction ends (reads go on).
    fn lock_against_writes(self) -> &'static str {
        match self {
            PartitionedTable::Readings => "LOCK TABLE sensor_readings IN SHARE ROW EXCLUSIVE MODE",
            PartitionedTable::DeadLetters => "LOCK TABLE dead_letters IN SHARE ROW EXCLUSIVE MODE",
        }
    }

    /// The days of the rows in its default partition: rows inserted by hand, or while their day had
    /// no partition (each moves into its day's when that is made).
    fn stranded_days_query(self) -> &'static str {
        match self {
            PartitionedTable::Readings => {
                "SELECT DISTINCT (timestamp AT TIME ZONE 'UTC')::date FROM sensor_readings_default"
            }
            PartitionedTable::DeadLetters => {
                "SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM dead_letters_default"
            }
        }
    }

    /// The name of its partition for `day` (as `iotstream_ensure_day_partition` names it).
    fn partition(self, day: NaiveDate) -> String {
        format!("{}_{}", self.table(), day.format("%Y%m%d"))
    }

    /// The day of one of its partitions' names.
    fn day_of(self, partition: &str) -> Option<NaiveDate> {
        let suffix = partition.strip_prefix(self.table())?.strip_prefix('_')?;
        NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()
    }
}

/// How long each partitioned table keeps its rows (`None`: for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// `sensor_readings` (and so the verdicts): days older than this before the newest stored
    /// reading (or now, if that is earlier) are dropped. Measured from the newest reading, not only
    /// from the clock, so that a replay of last year's data is not dropped as it is stored.
    pub readings: Option<Duration>,
    /// `dead_letters`: days received longer ago than this are dropped.
    pub dead_letters: Option<Duration>,
}

/// The partitions this process knows exist (made or seen), so that a batch asks the database only
/// for days it has not met yet.
#[derive(Debug, Clone, Default)]
pub struct KnownPartitions(Arc<Mutex<HashSet<(PartitionedTable, NaiveDate)>>>);

impl KnownPartitions {
    fn contains(&self, table: PartitionedTable, day: NaiveDate) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(&(table, day))
    }

    fn insert(&self, table: PartitionedTable, day: NaiveDate) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert((table, day));
    }

    fn remove(&self, table: PartitionedTable, day: NaiveDate) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&(table, day));
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Partitions made, `table_YYYYMMDD`.
    pub created: Vec<String>,
    /// Partitions dropped by retention.
    pub dropped: Vec<String>,
    /// Detector models deleted with them: no reading left names them (see `store::models`).
    pub models_pruned: u64,
}

impl Store {
    /// Makes `table`'s partitions of `days` that do not exist yet. A day PostgreSQL cannot hold
    /// (before 4713 BC) is left out: a row of that day is refused as it would be anyway, and kept
    /// as a dead letter. Returns the partitions it made.
    pub async fn ensure_partitions(
        &self,
        table: PartitionedTable,
        days: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<Vec<String>, StoreError> {
        let mut created = Vec::new();
        for day in days {
            if self.known_partitions.contains(table, day) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
            let made = sqlx::query_scalar::<_, bool>("SELECT iotstream_ensure_day_partition($1, $2)")
                .bind(table.table())
                .bind(day)
                .fetch_one(&mut *tx)
                .await;
            match made {
                Ok(made) => {
                    tx.commit().await?;
                    self.known_partitions.insert(table, day);
                    if made {
                        created.push(table.partition(day));
                    }
                }
                Err(err) if is_permanent(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(created)
    }

    /// Makes the partitions of today (UTC, `now`) and the next days, and those of the days of rows
    /// found in the default partitions (which move into them), and drops those past `retention`.
    pub async fn maintain_partitions(
        &self,
        retention: &Retention,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport, StoreError> {
        let today = now.date_naive();
        let days: Vec<NaiveDate> = today.iter_days().take(DAYS_AHEAD as usize + 1).collect();
        let mut report = MaintenanceReport::default();
        for table in PartitionedTable::ALL {
            let stranded: Vec<NaiveDate> =
                sqlx::query_scalar(table.stranded_days_query()).fetch_all(&self.pool).await?;
            report.created.extend(self.ensure_partitions(table, days.iter().copied().chain(stranded)).await?);
        }
        if let Some(keep) = retention.readings {
            let dropped = self.drop_old_partitions(PartitionedTable::Readings, keep, now).await?;
            if !dropped.is_empty() {
                report.models_pruned = self.prune_detector_models().await?;
            }
            report.dropped.extend(dropped);
        }
        if let Some(keep) = retention.dead_letters {
            report.dropped.extend(self.drop_old_partitions(PartitionedTable::DeadLetters, keep, now).await?);
        }
        if !report.created.is_empty() || !report.dropped.is_empty() {
            info!(created = ?report.created, dropped = ?report.dropped, models_pruned = report.models_pruned, "partitions maintained");
        }
        Ok(report)
    }

    /// `table`'s day partitions, oldest first.
    pub async fn partition_days(&self, table: PartitionedTable) -> Result<Vec<NaiveDate>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(PARTITION_NAMES).bind(table.table()).fetch_all(&self.pool).await?;
        let mut days: Vec<NaiveDate> = names.iter().filter_map(|name| table.day_of(name)).collect();
        days.sort_unstable();
        Ok(days)
    }

    /// Drops `table`'s partitions whose whole day ended more than `keep` before its reference time:
    /// for readings the newest stored reading's event time (or `now`, if earlier; nothing is
    /// dropped from a table with no reading), for dead letters `now`.
    ///
    /// In one transaction that first locks the table against writes (a batch in flight commits
    /// before, or waits until after): the newest reading it reads is the newest there is, so a
    /// day is never dropped on the word of a reference read before a batch of that day committed.
    async fn drop_old_partitions(
        &self,
        table: PartitionedTable,
        keep: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
        sqlx::query(table.lock_against_writes()).execute(&mut *tx).await?;
        let until = match table {
            PartitionedTable::Readings => {
                let newest: Option<DateTime<Utc>> =
                    sqlx::query_scalar("SELECT max(timestamp) FROM sensor_readings").fetch_one(&mut *tx).await?;
                match newest {
                    Some(newest) => newest.min(now),
                    None => return Ok(Vec::new()),
                }
            }
            PartitionedTable::DeadLetters => now,
        };
        let Some(cutoff) = chrono::Duration::from_std(keep).ok().and_then(|keep| until.checked_sub_signed(keep)) else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = sqlx::query_scalar(PARTITION_NAMES).bind(table.table()).fetch_all(&mut *tx).await?;
        let mut days: Vec<NaiveDate> = names.iter().filter_map(|name| table.day_of(name)).collect();
        days.sort_unstable();
        let mut dropped = Vec::new();
        for day in days {
            // The partition holds [day, day + 1): all of it is older than the cutoff.
            let Some(end) = day.succ_opt().and_then(|next| next.and_hms_opt(0, 0, 0)) else { continue };
            if end.and_utc() > cutoff {
                break;
            }
            sqlx::query("SELECT iotstream_drop_day_partition($1, $2)")
                .bind(table.table())
                .bind(day)
                .execute(&mut *tx)
                .await?;
            dropped.push(day);
        }
        tx.commit().await?;
        for day in &dropped {
            self.known_partitions.remove(table, *day);
        }
        Ok(dropped.into_iter().map(|day| table.partition(day)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_days_agree() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 2).expect("date");
        assert_eq!(PartitionedTable::Readings.partition(day), "sensor_readings_20261202");
        assert_eq!(PartitionedTable::DeadLetters.partition(day), "dead_letters_20261202");
        assert_eq!(PartitionedTable::Readings.day_of("sensor_readings_20261202"), Some(day));
        assert_eq!(PartitionedTable::Readings.day_of("dead_letters_20261202"), None);
        assert_eq!(PartitionedTable::Readings.day_of("sensor_readings_default"), None);
    }
}
