//! The batch writer: a whole batch in one transaction, with `INSERT ... SELECT FROM UNNEST(arrays)`:
//! one statement per table, whatever the batch size (550-600k rows/s measured here, against 12-17k
//! for row-by-row inserts), and its parameters are bound, never spliced into SQL. A reading and
//! its detectors' verdicts are one row (migration 0008): the verdicts are the row's JSON array
//! (`json`, not `jsonb`: migration 0013), each naming its model in `detector_models` (migration
//! 0015, [`super::models`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{NaiveDate, Utc};
use iotstream_api::Named;
use sqlx::{Connection as _, Postgres, Transaction};

use iotstream_api::AggregateRow;
use tracing::{debug, warn};

use crate::store::checkpoints::write_checkpoint;
use crate::store::copy::{COPY_READINGS, HEADER, TRAILER, readings_copy_data};
use crate::store::queries::decode_aggregate;

use crate::store::isolate::{ReadingsPath, Written, is_permanent};
use crate::store::order::{BatchProgress, EarlierBatch, Order, Settled};
use crate::store::partitions::PartitionedTable;
use crate::store::rows::{DeadLetter, LaneBatch, ShadowPrediction, StoredReading, StoredWindow, verdicts_json};
use crate::store::{BatchRows, Store, StoreError, Totals};

/// The batch's transaction.
pub(super) type Tx<'a> = Transaction<'a, Postgres>;

impl Store {
    /// The windows `partials` belong to, merged over all their partials stored now (see
    /// [`merged_windows`]): for a batch written in several transactions, once all committed.
    pub async fn merged_windows(&self, partials: &[StoredWindow]) -> Result<Vec<AggregateRow>, StoreError> {
        Ok(merged_windows(&self.pool, partials).await?)
    }

    /// Writes a whole batch in one transaction (fenced: only while this host owns its partitions, see
    /// [`super::ownership`]): its rows (a replayed message's rows are no-ops),
    /// the source's new positions and the checkpoint, if any. Returns the rows it added (a
    /// replayed message adds none), as counts like the all-time [`Totals`], what the database
    /// refused, and the windows its partials belong to, merged over every partition as the
    /// transaction saw them (read in it, so a window is never shown without this batch's partial).
    ///
    /// A transient failure (the connection, a timeout, a serialization conflict) is returned, for
    /// the caller to retry the same batch. A permanent one (data the database will refuse however
    /// often it is sent: SQLSTATE classes 22, 23, 54) must not stop ingestion: the batch is written
    /// again with each plugin's output and then each reading apart, behind savepoints, and what is
    /// still refused is left out and reported ([`crate::store::Refused`]); a refused reading becomes a dead letter,
    /// so nothing is lost silently.
    ///
    /// A [`BatchRows::fresh`] batch copies its readings (see [`super::copy`]); a batch holding a
    /// stored message (a replay, or a retry after a commit whose answer was lost) inserts only its
    /// messages the database does not hold yet ([`StoredPositions`]).
    pub async fn write(&self, batch: &BatchRows) -> Result<Written, StoreError> {
        let (progress, after) = (BatchProgress::start().0, EarlierBatch::stored());
        self.write_in_order(batch, Order { progress: &progress, after: &after }).await
    }

    /// [`write`](Self::write), while the batch before it may still be in flight: the transaction
    /// commits only once `order.after` is stored, and is not stored at all if that one is not
    /// ([`StoreError::EarlierNotStored`]; see [`super::order`]). Whenever this batch's transaction
    /// rolls back to begin again, it says so in `order.progress`, so the batch after it gives way.
    pub async fn write_in_order(&self, batch: &BatchRows, order: Order<'_>) -> Result<Written, StoreError> {
        // Not beside a batch being written again: what its next attempt needs is never held here.
        if order.after.is_retrying() {
            order.progress.retrying();
            if !order.after.outcome().await {
                return Err(StoreError::EarlierNotStored);
            }
        }
        self.ensure_partitions_for(batch).await?;
        match self.write_whole(batch, order).await {
            Err(StoreError::Database(err)) if is_permanent(&err) => {
                warn!(error = %err, "the database refused the batch; writing it again, isolating what it refuses");
                order.progress.retrying();
                if !order.after.outcome().await {
                    return Err(StoreError::EarlierNotStored);
                }
                self.write_isolating(batch).await
            }
            other => other,
        }
    }

    /// Makes the day partitions the batch's rows need (see [`super::partitions`]): its readings'
    /// days, and today's for its dead letters (made ahead by maintenance; this covers a host whose
    /// maintenance could not run).
    async fn ensure_partitions_for(&self, batch: &BatchRows) -> Result<(), StoreError> {
        let days: BTreeSet<NaiveDate> = batch.readings.iter().map(|r| r.reading.timestamp.date_naive()).collect();
        self.ensure_partitions(PartitionedTable::Readings, days).await?;
        if !batch.dead_letters.is_empty() || !batch.readings.is_empty() {
            self.ensure_partitions(PartitionedTable::DeadLetters, [Utc::now().date_naive()]).await?;
        }
        Ok(())
    }

    /// The fast path: one statement per table; begun again if the earlier batch fails an attempt
    /// while this transaction waits for it.
    async fn write_whole(&self, batch: &BatchRows, order: Order<'_>) -> Result<Written, StoreError> {
        loop {
            match self.write_whole_once(batch, order.after).await? {
                Some(written) => return Ok(written),
                // Rolled back, giving way (and the batch after this one with it): begin again once
                // the earlier batch is stored.
                None => {
                    order.progress.retrying();
                    if !order.after.outcome().await {
                        return Err(StoreError::EarlierNotStored);
                    }
                }
            }
        }
    }

    /// One attempt of [`write_whole`](Self::write_whole): first the fence (its partitions' ownership
    /// rows taken shared, as the earlier batch's transaction takes them) and the batch's own rows,
    /// which no other batch's transaction touches; then, once `earlier` is stored, what batches
    /// share, and the commit. `None`: rolled back because `earlier` failed an attempt meanwhile.
    async fn write_whole_once(&self, batch: &BatchRows, earlier: &EarlierBatch) -> Result<Option<Written>, StoreError> {
        let mut written = Totals::default();
        let mut tx = self.pool.begin().await?;
        // First, so that a new owner's take-over waits for this transaction before it writes any
        // of these partitions' messages.
        check_fence(&mut tx, batch).await?;
        let source = batch.source;
        let mut path = None;
        let stored = StoredPositions::read(&mut tx, batch).await?.of(&batch.readings);
        if !batch.readings.is_empty() {
            path = Some(match (batch.fresh, stored.is_empty()) {
                (true, true) => ReadingsPath::Copy,
                (true, false) => ReadingsPath::CopyRedone,
                (false, _) => ReadingsPath::Insert,
            });
            (written.readings, written.flagged) = if path == Some(ReadingsPath::Copy) {
                copy_readings(&mut tx, batch).await?
            } else {
                let verdicts = verdicts_json(batch.readings.len(), &batch.predictions);
                insert_readings(&mut tx, source, &stored.unstored(&batch.readings, &verdicts)).await?
            };
        }
        if !batch.shadow_predictions.is_empty() {
            insert_shadow_predictions(&mut tx, source, &batch.readings, &batch.shadow_predictions).await?;
        }
        if !batch.aggregates.is_empty() {
            written.aggregates = upsert_aggregates(&mut tx, source, &batch.aggregates).await?;
        }
        if !batch.dead_letters.is_empty() {
            written.dead_letters = insert_dead_letters(&mut tx, source, &batch.dead_letters).await?;
        }
        match earlier.settled().await {
            Settled::Stored => {}
            // Dropping the transaction rolls it back.
            Settled::Retrying => return Ok(None),
            Settled::NotStored => return Err(StoreError::EarlierNotStored),
        }
        // Read now, so that the earlier batch's partials of the same windows are in.
        let windows =
            if batch.aggregates.is_empty() { Vec::new() } else { merged_windows(&mut *tx, &batch.aggregates).await? };
        let claimed = StoredPositions::claim(&mut tx, batch).await?;
        claimed.check_none_overtaken(stored.unskipped(&batch.readings))?;
        advance_positions(&mut tx, batch).await?;
        write_checkpoints(&mut tx, batch).await?;
        // Late, as the totals below: a model's row is shared with the transactions of the batch's
        // other partitions, written side by side, when it is new to them all; and known only now
        // to be new, the earlier batch's stored.
        let models = self.models_to_store(batch);
        if let Some(models) = &models {
            models.store(&mut tx).await?;
        }
        // Last: the totals are one row per source, which the transactions of a batch's other
        // partitions, written side by side, update too (each waits here for the one before).
        add_to_totals(&mut tx, source, &written).await?;
        tx.commit().await?;
        self.models_stored(models);
        let readings_paths = path.into_iter().collect();
        Ok(Some(Written { totals: written, refused: Vec::new(), windows, readings_paths }))
    }
}

/// The partitions' stored positions, read in a batch's transaction: the replay's duplicate guard.
/// A partition's position (`kafka_offsets`) moves in the transaction that stores its messages,
/// past the last of them, and never back, so a message below it was stored (or refused by the
/// database and dead-lettered). A transaction reads its partitions' positions first, after the
/// fence ([`read`](Self::read)), and stores only the readings past them; before it moves them it
/// locks them ([`claim`](Self::claim)) and rolls back if another transaction moved one past a
/// reading it stored meanwhile: an attempt beside its first attempt's commit (whose answer was
/// lost), or a message the consumer delivered again that the batch before, still in flight, held
/// too. The lock is held to the commit, so of two transactions storing one message, one sees the
/// other's position. Until migration 0017 a unique message index on `sensor_readings` was this
/// guard, at a third of a reading's `COPY`. Rows of source 0 (stored before migration 0002) are
/// never taken for stored, as the old index never covered them.
pub(super) struct StoredPositions(BTreeMap<i32, i64>);

impl StoredPositions {
    /// The stored positions of the partitions of `batch`'s readings.
    pub(super) async fn read(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<Self, sqlx::Error> {
        Self::select(tx, batch, false).await
    }

    /// The stored positions of the partitions of `batch`'s readings, each partition's row locked
    /// until the transaction ends (made first, at 0, if there is none, so that a transaction
    /// beside this one that is making it is waited for): read once the batch before has
    /// committed, just before the positions move.
    pub(super) async fn claim(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<Self, sqlx::Error> {
        Self::select(tx, batch, true).await
    }

    /// [`read`](Self::read), or with `lock` [`claim`](Self::claim).
    async fn select(tx: &mut Tx<'_>, batch: &BatchRows, lock: bool) -> Result<Self, sqlx::Error> {
        if batch.source <= 0 || batch.readings.is_empty() {
            return Ok(StoredPositions(BTreeMap::new()));
        }
        let partitions: Vec<i32> =
            batch.readings.iter().map(|r| r.partition).collect::<BTreeSet<_>>().into_iter().collect();
        if lock {
            sqlx::query(
                "INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) \
                 SELECT $1, p, 0 FROM UNNEST($2::int4[]) AS p ON CONFLICT DO NOTHING",
            )
            .bind(batch.source)
            .bind(&partitions)
            .execute(&mut **tx)
            .await?;
        }
        let positions: Vec<(i32, i64)> = sqlx::query_as(if lock {
            "SELECT kafka_partition, next_offset FROM kafka_offsets WHERE source_id = $1 \
             AND kafka_partition = ANY($2) FOR UPDATE"
        } else {
            "SELECT kafka_partition, next_offset FROM kafka_offsets WHERE source_id = $1 AND kafka_partition = ANY($2)"
        })
        .bind(batch.source)
        .bind(&partitions)
        .fetch_all(&mut **tx)
        .await?;
        Ok(StoredPositions(positions.into_iter().collect()))
    }

    /// Whether `reading`'s message is below its partition's position.
    fn holds(&self, reading: &StoredReading) -> bool {
        self.0.get(&reading.partition).is_some_and(|&next| reading.offset < next)
    }

    /// Refuses (to roll back and write the batch again) if one of the readings this transaction
    /// stored, `written`, is below its partition's position here: stored meanwhile by another
    /// transaction.
    pub(super) fn check_none_overtaken<'a>(
        &self,
        written: impl IntoIterator<Item = &'a StoredReading>,
    ) -> Result<(), StoreError> {
        match written.into_iter().find(|r| self.holds(r)) {
            Some(r) => Err(StoreError::StoredMeanwhile {
                partition: r.partition,
                position: self.0.get(&r.partition).copied().unwrap_or_default(),
            }),
            None => Ok(()),
        }
    }

    /// Which of `readings` need not be stored: those stored already, and a message's reading
    /// repeated in the batch after its first.
    pub(super) fn of(&self, readings: &[StoredReading]) -> Stored {
        let mut skip = Vec::new();
        let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
        let mut seen: Option<HashSet<(i32, i64)>> = None;
        for (i, r) in readings.iter().enumerate() {
            let stored = self.holds(r);
            // A partition's messages come in offset order: only one out of order can repeat one.
            let key = (r.partition, r.offset);
            let repeated = if newest.get(&r.partition).is_none_or(|&last| r.offset > last) {
                newest.insert(r.partition, r.offset);
                if let Some(seen) = seen.as_mut() {
                    seen.insert(key);
                }
                false
            } else {
                // Every message before it, gathered once the first reading out of order comes.
                let seen = seen.get_or_insert_with(|| readings[..i].iter().map(|r| (r.partition, r.offset)).collect());
                !seen.insert(key)
            };
            if stored || repeated {
                skip.push(i);
            }
        }
        Stored { skip }
    }
}

/// The readings of a batch that are not to be stored ([`StoredPositions::of`]).
pub(super) struct Stored {
    /// Their indices, ascending.
    skip: Vec<usize>,
}

impl Stored {
    /// Whether every reading is to be stored.
    pub(super) fn is_empty(&self) -> bool {
        self.skip.is_empty()
    }

    /// Whether reading `i` is not to be stored.
    pub(super) fn holds(&self, i: usize) -> bool {
        self.skip.binary_search(&i).is_ok()
    }

    /// The readings to store.
    pub(super) fn unskipped<'a>(&'a self, readings: &'a [StoredReading]) -> impl Iterator<Item = &'a StoredReading> {
        readings.iter().enumerate().filter(|(i, _)| !self.holds(*i)).map(|(_, r)| r)
    }

    /// The readings to store, each with its verdicts (`verdicts[i]` is `readings[i]`'s).
    pub(super) fn unstored<'a>(
        &self,
        readings: &'a [StoredReading],
        verdicts: &'a [String],
    ) -> Vec<(&'a StoredReading, &'a str)> {
        readings
            .iter()
            .zip(verdicts)
            .enumerate()
            .filter(|(i, _)| !self.holds(*i))
            .map(|(_, (r, v))| (r, v.as_str()))
            .collect()
    }
}

/// `sensor_readings`, each reading with its verdicts, by binary `COPY` (see [`super::copy`]): only
/// for readings none of which is stored. Sends the tuples the lanes encoded
/// ([`BatchRows::encode_for_copy`]) when they match the readings, else encodes them here. Returns
/// the rows added and how many of them are flagged.
async fn copy_readings(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<(u64, u64), sqlx::Error> {
    let encoded_here;
    let chunks: Vec<&[u8]> = if batch.copy_matches_readings() {
        std::iter::once(HEADER)
            .chain(batch.readings_copy.iter().map(|segment| segment.tuples.as_slice()))
            .chain(std::iter::once(TRAILER))
            .collect()
    } else {
        encoded_here = readings_copy_data(batch.source, &batch.readings, &batch.predictions);
        vec![encoded_here.as_slice()]
    };
    let mut copy = tx.copy_in_raw(COPY_READINGS).await?;
    let mut sent = Ok(());
    for chunk in chunks {
        sent = copy.send(chunk).await.map(|_| ());
        if sent.is_err() {
            break;
        }
    }
    if let Err(err) = sent {
        // Out of the `COPY` the protocol's way (the server answers the abort), so the connection is
        // left usable if it still is; the send's error is the reason.
        if let Err(abort) = copy.abort("the batch's readings could not be sent").await {
            debug!(error = %abort, "the COPY's abort failed too");
        }
        return Err(err);
    }
    let copied = copy.finish().await?;
    Ok((copied, batch.readings.iter().filter(|s| s.flagged).count() as u64))
}

/// `sensor_readings`, each reading with its verdicts (from [`verdicts_json`]), none of them stored
/// yet ([`Stored::unstored`]); returns the rows added and how many of them are flagged.
pub(super) async fn insert_readings(
    tx: &mut Tx<'_>,
    source: i16,
    rows: &[(&StoredReading, &str)],
) -> Result<(u64, u64), sqlx::Error> {
    let r: Vec<&StoredReading> = rows.iter().map(|(r, _)| *r).collect();
    let verdicts: Vec<&str> = rows.iter().map(|(_, v)| *v).collect();
    let (inserted, flagged): (i64, i64) = sqlx::query_as(
            "WITH inserted AS (INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, anomaly, \
             unit, flagged, kafka_partition, kafka_offset, verdicts, source_id) \
             SELECT s, t, l, v, ts, a, u, f, p, o, j::json, $12 FROM UNNEST($1::text[], $2::text[], $3::text[], \
             $4::float8[], $5::timestamptz[], $6::bool[], $7::text[], $8::bool[], $9::int4[], $10::int8[], $11::text[]) \
             AS batch (s, t, l, v, ts, a, u, f, p, o, j) \
             RETURNING flagged) \
             SELECT count(*), count(*) FILTER (WHERE flagged) FROM inserted",
        )
        .bind(r.iter().map(|s| s.reading.sensor_id.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.sensor_type.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.location.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.value).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.timestamp).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.anomaly).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.reading.unit.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.flagged).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.partition).collect::<Vec<_>>())
        .bind(r.iter().map(|s| s.offset).collect::<Vec<_>>())
        .bind(verdicts)
        .bind(source)
        .fetch_one(&mut **tx)
        .await?;
    Ok((inserted.max(0) as u64, flagged.max(0) as u64))
}

/// `shadow_predictions`: the shadows' verdicts, which flag nothing.
pub(super) async fn insert_shadow_predictions(
    tx: &mut Tx<'_>,
    source: i16,
    readings: &[StoredReading],
    p: &[ShadowPrediction],
) -> Result<(), sqlx::Error> {
    let of = |i: usize| &readings[i];
    sqlx::query(
        "INSERT INTO shadow_predictions (shadow, shadow_version, live_detector, sensor_id, sensor_type, value, \
             timestamp, verdict, is_anomaly, anomaly_score, kafka_partition, kafka_offset, source_id) \
             SELECT *, $13 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], \
             $7::timestamptz[], $8::text[], $9::bool[], $10::float8[], $11::int4[], $12::int8[]) \
             ON CONFLICT (source_id, kafka_partition, kafka_offset, shadow) WHERE source_id > 0 DO NOTHING",
    )
    .bind(p.iter().map(|p| p.shadow.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.shadow_version.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.live_detector.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).reading.sensor_id.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).reading.sensor_type.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).reading.value).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).reading.timestamp).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.verdict.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.verdict.is_anomaly()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.score).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).partition).collect::<Vec<_>>())
    .bind(p.iter().map(|p| of(p.reading).offset).collect::<Vec<_>>())
    .bind(source)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `sensor_aggregates`: closed windows, each a partition's partial; a partial's revision emitted
/// again (same partition, same revision: a replay) replaces its earlier emission, while the
/// partials of other partitions are rows of their own. Returns the rows added (not replaced).
pub(super) async fn upsert_aggregates(tx: &mut Tx<'_>, source: i16, w: &[StoredWindow]) -> Result<u64, sqlx::Error> {
    let a = || w.iter().map(|w| &w.window);
    // `xmax = 0` tells a new row from a replaced emission.
    let inserted: i64 = sqlx::query_scalar(
            "WITH upserted AS (INSERT INTO sensor_aggregates (stage, window_start, window_end, location, sensor_type, avg_value, min_value, \
             max_value, stddev_value, count_readings, anomaly_count, revision, late_count, kafka_partition, source_id) \
             SELECT *, $15 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], \
             $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::int4[], $11::int4[], $12::int4[], $13::int4[], $14::int4[]) \
             ON CONFLICT (source_id, stage, location, sensor_type, window_start, kafka_partition, revision) WHERE source_id > 0 \
             DO UPDATE SET window_end = EXCLUDED.window_end, avg_value = EXCLUDED.avg_value, \
             min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value, stddev_value = EXCLUDED.stddev_value, \
             count_readings = EXCLUDED.count_readings, anomaly_count = EXCLUDED.anomaly_count, \
             late_count = EXCLUDED.late_count, emitted_at = now(), emission = nextval('sensor_aggregates_emission') \
             RETURNING xmax = 0 AS inserted) SELECT count(*) FILTER (WHERE inserted) FROM upserted",
        )
        .bind(a().map(|a| a.stage.as_str()).collect::<Vec<_>>())
        .bind(a().map(|a| a.window_start).collect::<Vec<_>>())
        .bind(a().map(|a| a.window_end).collect::<Vec<_>>())
        .bind(a().map(|a| a.location.as_str()).collect::<Vec<_>>())
        .bind(a().map(|a| a.sensor_type.as_str()).collect::<Vec<_>>())
        .bind(a().map(|a| a.avg_value).collect::<Vec<_>>())
        .bind(a().map(|a| a.min_value).collect::<Vec<_>>())
        .bind(a().map(|a| a.max_value).collect::<Vec<_>>())
        .bind(a().map(|a| a.stddev_value).collect::<Vec<_>>())
        .bind(a().map(|a| a.count_readings).collect::<Vec<_>>())
        .bind(a().map(|a| a.anomaly_count).collect::<Vec<_>>())
        .bind(a().map(|a| a.revision).collect::<Vec<_>>())
        .bind(a().map(|a| a.late_count).collect::<Vec<_>>())
        .bind(w.iter().map(|w| w.partition).collect::<Vec<_>>())
        .bind(source)
        .fetch_one(&mut **tx)
        .await?;
    Ok(inserted.max(0) as u64)
}

/// The windows `partials` belong to, each merged over all its partials as the transaction sees
/// them (`sensor_aggregates_latest`: this batch's and those committed before it, from every
/// partition and host), in the order the batch first names them. This, not the partials, is what
/// the live view shows: a partial alone is a fraction of its window.
pub(super) async fn merged_windows<'e>(
    db: impl sqlx::PgExecutor<'e>,
    partials: &[StoredWindow],
) -> Result<Vec<AggregateRow>, sqlx::Error> {
    let mut keys: Vec<(&str, &str, &str, chrono::DateTime<Utc>)> = Vec::new();
    for w in partials.iter().map(|p| &p.window) {
        let key = (w.stage.as_str(), w.location.as_str(), w.sensor_type.as_str(), w.window_start);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    // The `= ANY` filters reach the table through the view (its grouping columns), so only these
    // windows' rows are read; the join then keeps exactly the keys asked for.
    let rows = sqlx::query(
        "SELECT l.stage, l.window_start, l.window_end, l.location, l.sensor_type, l.avg_value, l.min_value, l.max_value, \
         l.stddev_value, l.count_readings, l.anomaly_count, l.revision, l.late_count \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS k (stage, location, sensor_type, window_start, n) \
         JOIN sensor_aggregates_latest l ON l.stage = k.stage AND l.location = k.location \
         AND l.sensor_type = k.sensor_type AND l.window_start = k.window_start \
         WHERE l.window_start = ANY($4) AND l.location = ANY($2) ORDER BY k.n",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.3).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_aggregate).collect()
}

/// `dead_letters`; returns the rows added. A message already dead-lettered is not added again (a
/// replay): `dead_letters` is partitioned by arrival, so its message index cannot be unique and
/// the check is this statement's (one writer per source: it cannot race).
pub(super) async fn insert_dead_letters(tx: &mut Tx<'_>, source: i16, d: &[DeadLetter]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, message_key, payload, error, reason, source_id) \
             SELECT t, p, o, k, m, e, r, $8 FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::bytea[], \
             $6::text[], $7::text[]) AS batch (t, p, o, k, m, e, r) \
             WHERE $8 = 0 OR NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.source_id = $8 \
             AND d.kafka_partition = batch.p AND d.kafka_offset = batch.o)",
    )
    .bind(d.iter().map(|l| l.topic.as_str()).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.partition).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.offset).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.key.as_deref()).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.payload.as_deref()).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.error.as_str()).collect::<Vec<_>>())
    .bind(d.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>())
    .bind(source)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Adds the rows a batch added to the source's all-time counts (`stored_totals`, which
/// [`Store::totals`] sums), in the batch's transaction.
pub(super) async fn add_to_totals(tx: &mut Tx<'_>, source: i16, added: &Totals) -> Result<(), sqlx::Error> {
    if *added == Totals::default() {
        return Ok(());
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO stored_totals (source_id, readings, flagged, aggregates, dead_letters) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (source_id) DO UPDATE SET readings = stored_totals.readings + EXCLUDED.readings, \
         flagged = stored_totals.flagged + EXCLUDED.flagged, aggregates = stored_totals.aggregates + EXCLUDED.aggregates, \
         dead_letters = stored_totals.dead_letters + EXCLUDED.dead_letters",
    )
    .bind(source)
    .bind(count(added.readings))
    .bind(count(added.flagged))
    .bind(count(added.aggregates))
    .bind(count(added.dead_letters))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The batch's extent: each partition's stored position moves forward, and each lane's batch is
/// logged under its number (after forgetting the logged batches a new owner gave up forming).
pub(super) async fn advance_positions(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<(), sqlx::Error> {
    if !batch.positions.is_empty() {
        // A replay after a crash re-reads offsets already stored: never move a position back.
        sqlx::query(
            "INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) \
                 SELECT $1, * FROM UNNEST($2::int4[], $3::int8[]) \
                 ON CONFLICT (source_id, kafka_partition) DO UPDATE \
                 SET next_offset = GREATEST(kafka_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()",
        )
        .bind(batch.source)
        .bind(batch.positions.keys().copied().collect::<Vec<_>>())
        .bind(batch.positions.values().copied().collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    for lane in &batch.lanes {
        if let Some((after, until)) = lane.forget {
            sqlx::query(
                "DELETE FROM kafka_batches WHERE source_id = $1 AND kafka_partition = $2 AND batch_seq > $3 \
                 AND batch_seq <= $4",
            )
            .bind(batch.source)
            .bind(lane.partition)
            .bind(after)
            .bind(until)
            .execute(&mut **tx)
            .await?;
        }
    }
    let logged: Vec<&LaneBatch> = batch.lanes.iter().filter(|l| l.batch_seq > 0).collect();
    if !logged.is_empty() {
        // A batch formed again after a crash is logged already, with the same end.
        sqlx::query(
            "INSERT INTO kafka_batches (source_id, kafka_partition, batch_seq, next_offset) \
             SELECT $1, * FROM UNNEST($2::int4[], $3::int8[], $4::int8[]) \
             ON CONFLICT (source_id, kafka_partition, batch_seq) DO NOTHING",
        )
        .bind(batch.source)
        .bind(logged.iter().map(|l| l.partition).collect::<Vec<_>>())
        .bind(logged.iter().map(|l| l.batch_seq).collect::<Vec<_>>())
        .bind(logged.iter().map(|l| l.next_offset).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The checks and bookkeeping every batch transaction starts with: its lanes are still this host's
/// ([`super::ownership`]).
pub(super) async fn check_fence(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<(), StoreError> {
    match &batch.fence {
        Some(fence) => fence.check(tx).await,
        None => Ok(()),
    }
}

/// The batch's checkpoints, one per lane that took one.
///
/// A checkpoint is one message of megabytes (every stage's state of the lane), and a connection's
/// write buffer keeps the capacity of the largest message it ever sent: after one, the buffers go
/// back to their usual size, or each of the pool's connections would hold a checkpoint's worth for
/// good.
pub(super) async fn write_checkpoints(tx: &mut Tx<'_>, batch: &BatchRows) -> Result<(), sqlx::Error> {
    for checkpoint in &batch.checkpoints {
        write_checkpoint(tx, batch.source, checkpoint).await?;
    }
    if !batch.checkpoints.is_empty() {
        // Nothing of the statements above is left unsent: they were answered.
        tx.shrink_buffers();
    }
    Ok(())
}
