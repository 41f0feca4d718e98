//! The models behind stored verdicts (`detector_models`, migration 0015).
//!
//! A reading's verdicts were most of its row when each carried its detector's name and version
//! and its model's generation, training time and rows, though all of that is the same for every
//! reading one model judges. Now each detector version, and each model it trained, is one row of
//! `detector_models`, and a verdict names it by id (`[model, verdict, score]`, see
//! [`crate::store::rows`]). The id is a hash of what the model is ([`DetectorModel::id`], the same
//! function as the migration's `iotstream_detector_model_id`), so a lane encodes its verdicts
//! without asking the database, and every host, a replay and the migration give one model one id.
//!
//! A batch's transaction stores the models its verdicts name that this store has not stored yet
//! (or not for as new a day): [`KnownModels`] remembers them once committed. A model's `last_day`
//! is the newest day of a reading it judged, so retention drops it with the last partition that
//! names it ([`Store::prune_detector_models`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::store::partitions::PartitionedTable;
use crate::store::rows::{BatchRows, ModelLineage, Prediction, without_nul};
use crate::store::writer::Tx;
use crate::store::{Store, StoreError};

/// A detector version, or a model it trained: what a stored verdict names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DetectorModel<'a> {
    /// The detector plugin's name, as its verdicts carry it.
    pub detector: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The model, for a detector that trains models.
    pub lineage: Option<ModelLineage>,
}

impl<'a> DetectorModel<'a> {
    /// The model behind `prediction`.
    pub fn of(prediction: &'a Prediction) -> Self {
        DetectorModel {
            detector: &prediction.detector,
            version: &prediction.detector_version,
            lineage: prediction.model,
        }
    }

    /// The detector's name as stored: a NUL (which PostgreSQL's text refuses; the host refuses
    /// such plugins at load) becomes U+FFFD.
    pub fn stored_detector(&self) -> Cow<'a, str> {
        without_nul(self.detector)
    }

    /// The version as stored (see [`DetectorModel::stored_detector`]).
    pub fn stored_version(&self) -> Cow<'a, str> {
        without_nul(self.version)
    }

    /// When the model was trained, as stored: a time PostgreSQL's `timestamptz` cannot hold (a
    /// plugin may report any) is stored as none, rather than refused with the batch.
    pub fn stored_trained_at(&self) -> Option<DateTime<Utc>> {
        self.lineage.and_then(|l| l.trained_at).filter(|t| (-4712..=294_275).contains(&t.year()))
    }

    /// The model's id: the first 8 bytes of the SHA-256 of its stored fields, each followed by a
    /// NUL but the last (the training time as microseconds since 1970, an absent field as
    /// nothing), as a signed big-endian integer. Migration 0015's `iotstream_detector_model_id`
    /// computes the same.
    pub fn id(&self) -> i64 {
        let lineage = self.lineage.as_ref();
        let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut hash = Sha256::new();
        hash.update(self.stored_detector().as_bytes());
        hash.update([0]);
        hash.update(self.stored_version().as_bytes());
        hash.update([0]);
        hash.update(number(lineage.map(|l| i64::from(l.generation))));
        hash.update([0]);
        hash.update(number(self.stored_trained_at().map(|t| t.timestamp_micros())));
        hash.update([0]);
        hash.update(number(lineage.map(|l| i64::from(l.training_rows))));
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// The models a batch's verdicts name: each verdict's model id, and each model once.
#[derive(Debug, Default)]
pub struct BatchModels<'a> {
    /// `ids[i]` is the id of `predictions[i]`'s model.
    pub ids: Vec<i64>,
    /// Each model named, once per id, in the order first named.
    pub models: Vec<(i64, DetectorModel<'a>)>,
}

/// How many models [`BatchModels::of`] finds by comparing: a batch names a few (a detector version
/// each, and each trained model in use); past them (a plugin that reports a new model for every
/// reading), a hash map, so a batch costs in proportion to its verdicts whatever a plugin says.
const MODELS_COMPARED: usize = 16;

impl<'a> BatchModels<'a> {
    /// The models of `predictions`, each verdict's found among those already seen before any
    /// SHA-256 is computed.
    pub fn of(predictions: &'a [Prediction]) -> Self {
        let mut few: Vec<(DetectorModel<'a>, i64)> = Vec::new();
        let mut many: HashMap<DetectorModel<'a>, i64> = HashMap::new();
        let mut listed: HashSet<i64> = HashSet::new();
        let mut batch = BatchModels { ids: Vec::with_capacity(predictions.len()), models: Vec::new() };
        for prediction in predictions {
            let model = DetectorModel::of(prediction);
            let known = few
                .iter()
                .find(|(m, _)| m.lineage == model.lineage && m.version == model.version && m.detector == model.detector)
                .map(|&(_, id)| id)
                .or_else(|| many.get(&model).copied());
            let id = match known {
                Some(id) => id,
                None => {
                    let id = model.id();
                    // Two names that differ only where a NUL was are one stored model.
                    if listed.insert(id) {
                        batch.models.push((id, model.clone()));
                    }
                    if few.len() < MODELS_COMPARED {
                        few.push((model, id));
                    } else {
                        many.insert(model, id);
                    }
                    id
                }
            };
            batch.ids.push(id);
        }
        batch
    }
}

/// The most models [`KnownModels`] remembers: past it, it keeps only those stored for the newest
/// day (or none), and a model it forgot is stored again, a no-op, when a batch next names it. A
/// lane's forest trains a model for each sensor type every few minutes, so without a bound a host
/// running for months would remember every model it ever stored.
const KNOWN_MODELS_MAX: usize = 65_536;

/// The models this store has stored, each with the newest day it stored it for (shared by the
/// store's clones): a batch's transaction stores only the others.
#[derive(Debug, Clone, Default)]
pub struct KnownModels(Arc<Mutex<HashMap<i64, NaiveDate>>>);

impl KnownModels {
    /// Of `models`, those to store for readings of `day`: not stored yet, or for an older day; in
    /// the order of their ids, as every transaction then takes their rows' locks, so two batches
    /// storing the same models cannot deadlock.
    fn to_store<'a>(&self, models: Vec<(i64, DetectorModel<'a>)>, day: NaiveDate) -> Vec<(i64, DetectorModel<'a>)> {
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted: Vec<_> =
            models.into_iter().filter(|(id, _)| known.get(id).is_none_or(|&last| last < day)).collect();
        wanted.sort_by_key(|(id, _)| *id);
        wanted
    }

    /// Records that `ids` are stored for `day` (once their transaction committed).
    fn stored(&self, ids: impl IntoIterator<Item = i64>, day: NaiveDate) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            let last = known.entry(id).or_insert(day);
            *last = (*last).max(day);
        }
        if known.len() > KNOWN_MODELS_MAX {
            let newest = known.values().copied().max().unwrap_or(day);
            known.retain(|_, last| *last >= newest);
            if known.len() > KNOWN_MODELS_MAX {
                known.clear();
            }
        }
    }

    /// Forgets every model (retention deleted some).
    fn forget_all(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// The models a batch's transaction stores: those its verdicts name that this store has not
/// stored for the batch's newest day.
#[derive(Debug)]
pub(super) struct ModelsToStore<'a> {
    /// The models, by id.
    models: Vec<(i64, DetectorModel<'a>)>,
    /// The newest day (UTC) of the batch's readings: each model's `last_day` at least.
    day: NaiveDate,
}

impl ModelsToStore<'_> {
    /// Stores the models in the batch's transaction: one already stored keeps its row, its
    /// `last_day` moved to this batch's day if that is newer.
    pub(super) async fn store(&self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        let models = &self.models;
        sqlx::query(
            "INSERT INTO detector_models (id, detector, detector_version, model_generation, model_trained_at, \
             model_training_rows, last_day) \
             SELECT *, $7 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[], $6::int4[]) \
             ON CONFLICT (id) DO UPDATE SET last_day = EXCLUDED.last_day \
             WHERE detector_models.last_day < EXCLUDED.last_day",
        )
        .bind(models.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(models.iter().map(|(_, m)| m.stored_detector()).collect::<Vec<_>>())
        .bind(models.iter().map(|(_, m)| m.stored_version()).collect::<Vec<_>>())
        .bind(models.iter().map(|(_, m)| m.lineage.map(|l| l.generation)).collect::<Vec<_>>())
        .bind(models.iter().map(|(_, m)| m.stored_trained_at()).collect::<Vec<_>>())
        .bind(models.iter().map(|(_, m)| m.lineage.map(|l| l.training_rows)).collect::<Vec<_>>())
        .bind(self.day)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The detectors whose models these are, for a message.
    pub(super) fn detectors(&self) -> String {
        let mut names: Vec<&str> = self.models.iter().map(|(_, m)| m.detector).collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    /// How many models.
    pub(super) fn len(&self) -> usize {
        self.models.len()
    }
}

impl Store {
    /// The models `batch`'s verdicts name that this store has not stored for its newest day, if
    /// any: for its transaction to store ([`ModelsToStore::store`]), then [`Store::models_stored`]
    /// once it committed.
    pub(super) fn models_to_store<'a>(&self, batch: &'a BatchRows) -> Option<ModelsToStore<'a>> {
        if batch.predictions.is_empty() {
            return None;
        }
        let day = batch.readings.iter().map(|r| r.reading.timestamp.date_naive()).max()?;
        let models = self.known_models.to_store(BatchModels::of(&batch.predictions).models, day);
        (!models.is_empty()).then_some(ModelsToStore { models, day })
    }

    /// Records that `stored`'s transaction committed.
    pub(super) fn models_stored(&self, stored: Option<ModelsToStore<'_>>) {
        if let Some(stored) = stored {
            self.known_models.stored(stored.models.iter().map(|(id, _)| *id), stored.day);
        }
    }

    /// Deletes the models no stored reading can name any more: those whose newest day is before
    /// the oldest day partition of `sensor_readings` (after retention dropped the older ones).
    /// Returns how many.
    pub(super) async fn prune_detector_models(&self) -> Result<u64, StoreError> {
        let days = self.partition_days(PartitionedTable::Readings).await?;
        let Some(oldest) = days.first() else { return Ok(0) };
        let deleted = sqlx::query("DELETE FROM detector_models WHERE last_day < $1")
            .bind(oldest)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted > 0 {
            self.known_models.forget_all();
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use iotstream_api::Verdict;

    use super::*;

    fn prediction(detector: &str, version: &str, model: Option<ModelLineage>) -> Prediction {
        Prediction {
            detector: detector.into(),
            reading: 0,
            verdict: Verdict::Normal,
            score: 0.0,
            detector_version: version.into(),
            model,
        }
    }

    /// Each verdict gets its model's id; each model is listed once, in the order first named, and
    /// two names that store alike (a NUL replaced) are one model.
    #[test]
    fn a_batch_lists_each_model_once_and_gives_each_verdict_its_id() {
        let trained_at = Utc.timestamp_millis_opt(1_700_000_000_123).single();
        let forest = |generation| Some(ModelLineage { generation, trained_at, training_rows: 256 });
        let predictions = [
            prediction("zscore", "0.3.0", None),
            prediction("forest", "0.5.0", forest(2)),
            prediction("zscore", "0.3.0", None),
            prediction("forest", "0.5.0", forest(3)),
            prediction("forest", "0.5.0", forest(2)),
            prediction("a\0b", "1", None),
            prediction("a\u{FFFD}b", "1", None),
        ];
        let batch = BatchModels::of(&predictions);
        let ids: Vec<i64> = predictions.iter().map(|p| DetectorModel::of(p).id()).collect();
        assert_eq!(batch.ids, ids);
        assert_eq!(ids[0], ids[2]);
        assert_eq!(ids[1], ids[4]);
        assert_eq!(ids[5], ids[6]);
        assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
        let listed: Vec<i64> = batch.models.iter().map(|(id, _)| *id).collect();
        assert_eq!(listed, [ids[0], ids[1], ids[3], ids[5]]);
    }

    /// A plugin that reports a new model with every verdict: every verdict still gets its own
    /// model's id, each model listed once, in order.
    #[test]
    fn a_model_for_every_verdict_is_listed_once_each() {
        let lineage = |generation| Some(ModelLineage { generation, trained_at: None, training_rows: 1 });
        let predictions: Vec<Prediction> = (0..3_000).map(|i| prediction("forest", "1", lineage(i % 1_000))).collect();
        let batch = BatchModels::of(&predictions);
        let ids: Vec<i64> = predictions.iter().map(|p| DetectorModel::of(p).id()).collect();
        assert_eq!(batch.ids, ids);
        let listed: Vec<i64> = batch.models.iter().map(|(id, _)| *id).collect();
        assert_eq!(listed, ids[..1_000]);
    }

    /// A refusal names each detector once, however many of its models it held and in whatever
    /// order their ids put them.
    #[test]
    fn the_models_to_store_name_each_detector_once() {
        let lineage = |generation| Some(ModelLineage { generation, trained_at: None, training_rows: 1 });
        let model = |detector, generation: Option<i32>| DetectorModel {
            detector,
            version: "1",
            lineage: generation.and_then(lineage),
        };
        // As ids may order them: a detector's models need not be side by side.
        let models: Vec<(i64, DetectorModel<'_>)> =
            [model("forest", Some(1)), model("zscore", None), model("forest", Some(2)), model("forest", Some(3))]
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i as i64, m))
                .collect();
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("date");
        let to_store = ModelsToStore { models, day };
        assert_eq!((to_store.len(), to_store.detectors().as_str()), (4, "forest, zscore"));
    }

    /// A model is stored again only for a newer day than the one it was stored for, and the
    /// models to store come in the order of their ids.
    #[test]
    fn known_models_are_stored_again_only_for_a_newer_day() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("date");
        let predictions = [prediction("zscore", "1", None), prediction("novelty", "1", None)];
        let models = || BatchModels::of(&predictions).models;
        let mut ids: Vec<i64> = models().iter().map(|(id, _)| *id).collect();
        ids.sort();
        let known = KnownModels::default();
        let ids_of = |models: Vec<(i64, DetectorModel<'_>)>| models.iter().map(|(id, _)| *id).collect::<Vec<_>>();
        assert_eq!(ids_of(known.to_store(models(), day)), ids);
        known.stored([ids[0]], day);
        assert_eq!(ids_of(known.to_store(models(), day)), [ids[1]]);
        assert_eq!(ids_of(known.to_store(models(), day.pred_opt().expect("day"))), [ids[1]]);
        assert_eq!(ids_of(known.to_store(models(), day.succ_opt().expect("day"))), ids);
    }

    /// Past its bound, the memory of stored models keeps only the newest day's, so it never grows
    /// with the models a long run trains.
    #[test]
    fn known_models_stay_bounded() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("date");
        let known = KnownModels::default();
        let bound = KNOWN_MODELS_MAX as i64;
        known.stored(0..bound - 10, day);
        known.stored(bound..bound + 20, day.succ_opt().expect("day"));
        let remembered = known.0.lock().map(|k| k.len()).unwrap_or_default();
        assert_eq!(remembered, 20, "only the newest day's");
        known.stored(0..bound + 1, day.succ_opt().expect("day"));
        assert_eq!(known.0.lock().map(|k| k.len()).unwrap_or_default(), 0, "all of the newest day: forgotten");
    }

    /// A training time PostgreSQL cannot hold is stored, and hashed, as none.
    #[test]
    fn a_training_time_out_of_postgres_range_is_stored_as_none() {
        let far = Utc.with_ymd_and_hms(-100_000, 1, 1, 0, 0, 0).single();
        assert!(far.is_some());
        let lineage = |trained_at| Some(ModelLineage { generation: 1, trained_at, training_rows: 10 });
        let model = |trained_at| DetectorModel { detector: "f", version: "1", lineage: lineage(trained_at) };
        assert_eq!(model(far).stored_trained_at(), None);
        assert_eq!(model(far).id(), model(None).id());
        let now = Utc.timestamp_millis_opt(1_700_000_000_123).single();
        assert_eq!(model(now).stored_trained_at(), now);
        assert_ne!(model(now).id(), model(None).id());
    }
}
