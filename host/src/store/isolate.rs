//! What a batch write does when the database refuses the batch permanently: a poison row must cost
//! only itself, never the stream (docs/guarantees.md, "Poison rows").
//!
//! The database refuses some data however often it is sent (SQLSTATE classes 22 "data exception",
//! 23 "integrity constraint violation", 54 "program limit exceeded"): retrying such a batch would
//! stall ingestion forever. [`Store::write`] then writes the batch again in one transaction with
//! every part behind its own savepoint: the readings with their verdicts (and, if refused, each
//! reading apart), each other plugin output (shadow verdicts, windows), the dead letters. What is still refused is rolled back to its savepoint, left
//! out and reported as [`Refused`]; a refused reading becomes a dead letter
//! ([`DeadLetterReason::StorageRefused`]) so the message is kept. Positions, the batch log and the
//! checkpoint commit with the rest, so the stream goes on.

use std::collections::BTreeMap;

use iotstream_api::{AggregateRow, DeadLetterReason};
use sqlx::Acquire;

use crate::reading::encode;
use crate::store::rows::{DEAD_LETTER_PAYLOAD_LIMIT, DeadLetter, StoredReading, StoredWindow, verdicts_json};
use crate::store::writer::{
    Stored, StoredPositions, Tx, add_to_totals, advance_positions, check_fence, insert_dead_letters, insert_readings,
    insert_shadow_predictions, merged_windows, upsert_aggregates, write_checkpoints,
};
use crate::store::{BatchRows, Store, StoreError, Totals};

/// What one write stored, and what the database refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    /// The rows it added.
    pub totals: Totals,
    /// What was left out because the database refused it (empty on the fast path).
    pub refused: Vec<Refused>,
    /// The windows the batch's stored partials belong to, each once, merged over all its partials
    /// as stored after the write (see `sensor_aggregates_latest`).
    pub windows: Vec<AggregateRow>,
    /// How each of its transactions that had readings stored them.
    pub readings_paths: Vec<ReadingsPath>,
}

/// How a transaction stored its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadingsPath {
    /// One binary `COPY`: a fresh batch ([`super::BatchRows::fresh`]).
    Copy,
    /// `INSERT`: a batch that may hold stored messages (a replay), its messages not stored yet.
    Insert,
    /// A batch taken for fresh that held a stored or repeated message after all (a retry after a
    /// commit whose answer was lost, a message delivered again): its messages not stored yet
    /// inserted, as [`ReadingsPath::Insert`].
    CopyRedone,
}

impl ReadingsPath {
    /// Every path, for metrics that show each from the start.
    pub const ALL: [ReadingsPath; 3] = [ReadingsPath::Copy, ReadingsPath::Insert, ReadingsPath::CopyRedone];

    /// The path's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingsPath::Copy => "copy",
            ReadingsPath::Insert => "insert",
            ReadingsPath::CopyRedone => "copy_redone",
        }
    }
}

impl Written {
    /// Adds what another transaction of the same batch wrote.
    pub fn absorb(&mut self, other: Written) {
        self.totals.readings += other.totals.readings;
        self.totals.flagged += other.totals.flagged;
        self.totals.aggregates += other.totals.aggregates;
        self.totals.dead_letters += other.totals.dead_letters;
        self.refused.extend(other.refused);
        self.windows.extend(other.windows);
        self.readings_paths.extend(other.readings_paths);
    }
}

/// Rows the database refused permanently and the batch was committed without.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Whose rows they were.
    pub origin: RefusedOrigin,
    /// How many rows were left out.
    pub rows: usize,
    /// The database's reason (SQLSTATE and message) for the first of them.
    pub error: String,
}

/// Whose rows the database refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedOrigin {
    /// A plugin's output (verdicts, shadow verdicts or windows) for the batch: the plugin's alone.
    Plugin(String),
    /// Readings: each is kept as a dead letter instead.
    Readings,
    /// Dead letters themselves (counted and logged; there is nowhere else to keep them).
    DeadLetters,
}

/// Whether the database will refuse `err`'s statement however often it is sent.
pub fn is_permanent(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| matches!(code.get(..2), Some("22" | "23" | "54"))),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// The database's reason, one line.
fn reason(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => format!("{} ({})", db.message(), db.code().unwrap_or_default()),
        other => other.to_string(),
    }
}

/// Runs `work` behind a savepoint: `Ok(Ok(_))` when it succeeded, `Ok(Err(_))` when the database
/// refused it permanently (rolled back to the savepoint), `Err(_)` for a transient failure.
async fn in_savepoint<T>(
    tx: &mut Tx<'_>,
    work: impl AsyncFnOnce(&mut Tx<'_>) -> Result<T, sqlx::Error>,
) -> Result<Result<T, sqlx::Error>, sqlx::Error> {
    let mut savepoint = tx.begin().await?;
    match work(&mut savepoint).await {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(Ok(value))
        }
        Err(err) if is_permanent(&err) => {
            savepoint.rollback().await?;
            Ok(Err(err))
        }
        Err(err) => Err(err),
    }
}

impl Store {
    /// The slow path of [`Store::write`]: every part behind its own savepoint.
    pub(super) async fn write_isolating(&self, batch: &BatchRows) -> Result<Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        check_fence(&mut tx, batch).await?;
        let mut written = Written::default();
        let source = batch.source;
        let (kept, stored) = readings_apart(&mut tx, batch, &mut written).await?;
        if !batch.readings.is_empty() {
            written.readings_paths.push(ReadingsPath::Insert);
        }
        let stored_windows;
        (written.totals.aggregates, stored_windows) =
            plugin_outputs_apart(&mut tx, batch, &kept, &mut written.refused).await?;
        if !stored_windows.is_empty() {
            // Reading what was just stored is refused only for want of a connection; were it
            // refused for good, the batch is still stored: the live view only misses its windows.
            written.windows = in_savepoint(&mut tx, async |tx| merged_windows(&mut **tx, &stored_windows).await)
                .await?
                .unwrap_or_default();
        }
        let mut letters = batch.dead_letters.clone();
        letters.extend(kept.iter().zip(&batch.readings).filter(|(keep, _)| !**keep).map(|(_, r)| {
            let refusal = written.refused.iter().find(|r| r.origin == RefusedOrigin::Readings);
            refused_reading(batch, r, refusal.map_or("", |r| r.error.as_str()))
        }));
        if !letters.is_empty() {
            match in_savepoint(&mut tx, async |tx| insert_dead_letters(tx, source, &letters).await).await? {
                Ok(added) => written.totals.dead_letters = added,
                Err(err) => written.refused.push(Refused {
                    origin: RefusedOrigin::DeadLetters,
                    rows: letters.len(),
                    error: reason(&err),
                }),
            }
        }
        let mut models = self.models_to_store(batch);
        if let Some(to_store) = &models
            && let Err(err) = in_savepoint(&mut tx, async |tx| to_store.store(tx).await).await?
        {
            // Cannot happen for want of a valid field (names, versions and times are stored as
            // any plugin may give them); were it to, the verdicts stay, unreadable by name.
            written.refused.push(Refused {
                origin: RefusedOrigin::Plugin(to_store.detectors()),
                rows: to_store.len(),
                error: reason(&err),
            });
            models = None;
        }
        let inserted = batch.readings.iter().enumerate().filter(|&(i, _)| kept[i] && !stored.holds(i)).map(|(_, r)| r);
        StoredPositions::claim(&mut tx, batch).await?.check_none_overtaken(inserted)?;
        advance_positions(&mut tx, batch).await?;
        write_checkpoints(&mut tx, batch).await?;
        add_to_totals(&mut tx, source, &written.totals).await?;
        tx.commit().await?;
        self.models_stored(models);
        Ok(written)
    }
}

/// Inserts the readings not stored yet ([`StoredPositions`]), all at once or, if refused, each
/// apart; returns which of the batch's readings are stored now (those stored before included),
/// and which were stored before.
async fn readings_apart(
    tx: &mut Tx<'_>,
    batch: &BatchRows,
    written: &mut Written,
) -> Result<(Vec<bool>, Stored), StoreError> {
    let source = batch.source;
    let stored = StoredPositions::read(tx, batch).await?.of(&batch.readings);
    if batch.readings.is_empty() {
        return Ok((Vec::new(), stored));
    }
    let verdicts = verdicts_json(batch.readings.len(), &batch.predictions);
    let rows = stored.unstored(&batch.readings, &verdicts);
    if let Ok(counts) = in_savepoint(tx, async |tx| insert_readings(tx, source, &rows).await).await? {
        (written.totals.readings, written.totals.flagged) = counts;
        return Ok((vec![true; batch.readings.len()], stored));
    }
    let mut kept = Vec::with_capacity(batch.readings.len());
    let mut first_error = None;
    for (i, row) in batch.readings.iter().zip(&verdicts).enumerate() {
        if stored.holds(i) {
            kept.push(true);
            continue;
        }
        let row = [(row.0, row.1.as_str())];
        match in_savepoint(tx, async |tx| insert_readings(tx, source, &row).await).await? {
            Ok((added, flagged)) => {
                written.totals.readings += added;
                written.totals.flagged += flagged;
                kept.push(true);
            }
            Err(err) => {
                first_error.get_or_insert_with(|| reason(&err));
                kept.push(false);
            }
        }
    }
    let rows = kept.iter().filter(|k| !**k).count();
    if let Some(error) = first_error {
        written.refused.push(Refused { origin: RefusedOrigin::Readings, rows, error });
    }
    Ok((kept, stored))
}

/// Inserts each plugin's output apart (only for the readings that were stored); a refused one is
/// left out and reported. Returns the window rows added and the partials stored. (Detectors'
/// verdicts are not among them: they are written with their readings, in a form the database
/// always takes, see [`verdicts_json`].)
async fn plugin_outputs_apart(
    tx: &mut Tx<'_>,
    batch: &BatchRows,
    kept: &[bool],
    refused: &mut Vec<Refused>,
) -> Result<(u64, Vec<StoredWindow>), StoreError> {
    let (source, readings) = (batch.source, batch.readings.as_slice());
    let mut shadows: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for p in batch.shadow_predictions.iter().filter(|p| kept[p.reading]) {
        shadows.entry(p.shadow.as_str()).or_default().push(p.clone());
    }
    for (plugin, rows) in shadows {
        let outcome = in_savepoint(tx, async |tx| insert_shadow_predictions(tx, source, readings, &rows).await).await?;
        note(refused, plugin, rows.len(), outcome.err());
    }
    let mut windows: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for w in &batch.aggregates {
        windows.entry(w.window.stage.as_str()).or_default().push(w.clone());
    }
    let (mut added, mut stored) = (0, Vec::new());
    for (plugin, rows) in windows {
        match in_savepoint(tx, async |tx| upsert_aggregates(tx, source, &rows).await).await? {
            Ok(new) => {
                added += new;
                stored.extend(rows);
            }
            Err(err) => note(refused, plugin, rows.len(), Some(err)),
        }
    }
    Ok((added, stored))
}

/// Records `plugin`'s `rows` as refused when `err` is set.
fn note(refused: &mut Vec<Refused>, plugin: &str, rows: usize, err: Option<sqlx::Error>) {
    if let Some(err) = err {
        refused.push(Refused { origin: RefusedOrigin::Plugin(plugin.to_owned()), rows, error: reason(&err) });
    }
}

/// A reading the database refused, as a dead letter: its message re-encoded in the seed's format
/// (the decoded fields, not the original bytes), keyed by its sensor id as producers key them.
fn refused_reading(batch: &BatchRows, stored: &StoredReading, error: &str) -> DeadLetter {
    let mut payload = encode(&stored.reading);
    payload.truncate(DEAD_LETTER_PAYLOAD_LIMIT);
    DeadLetter {
        topic: batch.topic.clone(),
        partition: stored.partition,
        offset: stored.offset,
        key: Some(stored.reading.sensor_id.as_bytes().to_vec()),
        payload: Some(payload),
        error: format!("the database refused the reading: {error}"),
        reason: DeadLetterReason::StorageRefused,
    }
}
