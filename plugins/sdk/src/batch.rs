//! A batch as the contract passes it: columns. The WIT `readings` record is a few lists of numbers
//! (sensor keys, timestamps, values, the indices of flagged readings), because a list of numbers
//! crosses the component boundary as one block of memory where a list of records is copied field
//! by field. [`Batch`] holds those columns on the plugin's side, checked once ([`Batch::check`]);
//! [`ResolvedBatch`] is a checked batch as a stage reads it, each reading with its sensor's
//! identity; [`DetectionColumns`] is a detector's answer in the same shape, written a judgement at
//! a time.

use crate::detector::{Judgement, ModelInfo};
use crate::{Catalog, PluginError, SensorIdentity};

/// A batch of readings as columns: reading `i` is element `i` of `sensors`, `timestamps_ms` and
/// `values`; `flagged` lists the indices, ascending, of the readings a detector flagged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Each reading's sensor key.
    pub sensors: Vec<u32>,
    /// Each reading's event time, ms since the Unix epoch.
    pub timestamps_ms: Vec<i64>,
    /// Each reading's value.
    pub values: Vec<f64>,
    /// Indices, ascending, of the flagged readings (aggregators receive them; detectors none).
    pub flagged: Vec<u32>,
}

impl Batch {
    /// Readings in the batch.
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Whether the batch holds no reading.
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// Says what breaks the contract's shape, if anything: columns of different lengths, or a
    /// flagged index out of order or past the end.
    pub fn check(&self) -> Result<(), PluginError> {
        let n = self.sensors.len();
        if self.timestamps_ms.len() != n || self.values.len() != n {
            return Err(PluginError::InvalidInput(format!(
                "the batch's columns differ in length: {n} sensors, {} timestamps, {} values",
                self.timestamps_ms.len(),
                self.values.len()
            )));
        }
        if let Some(bad) =
            self.flagged.iter().enumerate().find(|&(i, &at)| {
                usize::try_from(at).map_or(true, |at| at >= n) || (i > 0 && self.flagged[i - 1] >= at)
            })
        {
            return Err(PluginError::InvalidInput(format!(
                "flagged index {} (the {}th) is out of order or past the end of the batch of {n}",
                bad.1,
                bad.0 + 1
            )));
        }
        Ok(())
    }

    /// Each reading's flag, in order (for an algorithm that takes one per reading).
    pub fn flags(&self) -> impl Iterator<Item = bool> + '_ {
        let mut flagged = self.flagged.iter().peekable();
        (0..self.len()).map(move |i| flagged.next_if(|&&at| at as usize == i).is_some())
    }
}

/// A batch whose every sensor key is declared: each reading with its sensor's identity, read in one
/// pass as a detector judges it (no row kept a reading).
#[derive(Clone, Copy)]
pub struct ResolvedBatch<'a> {
    catalog: &'a Catalog,
    batch: &'a Batch,
}

impl<'a> ResolvedBatch<'a> {
    /// `batch` with its keys resolved in `catalog`; refused if its columns differ in length, a
    /// flagged index is out of place, or a key was never declared.
    pub fn new(catalog: &'a Catalog, batch: &'a Batch) -> Result<Self, PluginError> {
        batch.check()?;
        catalog.check_all(batch.sensors.iter().copied())?;
        Ok(ResolvedBatch { catalog, batch })
    }

    /// Readings in the batch.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the batch holds no reading.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Each reading, in order: its sensor, event time (ms since the Unix epoch) and value.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&'a SensorIdentity, i64, f64)> + 'a {
        let catalog = self.catalog;
        let batch = self.batch;
        // Every key was checked in `new`, so `map_while` never stops early.
        batch.sensors.iter().zip(&batch.timestamps_ms).zip(&batch.values).map_while(
            move |((&key, &timestamp_ms), &value)| Some((catalog.identity(key)?.as_ref(), timestamp_ms, value)),
        )
    }

    /// [`iter`](Self::iter) with each reading's flag: whether a detector flagged it earlier in the
    /// batch (what an aggregator counts).
    #[inline]
    pub fn iter_flagged(&self) -> impl Iterator<Item = (&'a SensorIdentity, i64, f64, bool)> + 'a {
        self.iter()
            .zip(self.batch.flags())
            .map(|((sensor, timestamp_ms, value), flagged)| (sensor, timestamp_ms, value, flagged))
    }
}

/// Rows of `(sensor key, timestamp ms, value)`, none flagged: a detector's batch, for tests.
impl FromIterator<(u32, i64, f64)> for Batch {
    fn from_iter<I: IntoIterator<Item = (u32, i64, f64)>>(rows: I) -> Self {
        rows.into_iter().map(|(sensor, at, value)| (sensor, at, value, false)).collect()
    }
}

/// Rows of `(sensor key, timestamp ms, value, flagged)`: an aggregator's batch, for tests.
impl FromIterator<(u32, i64, f64, bool)> for Batch {
    fn from_iter<I: IntoIterator<Item = (u32, i64, f64, bool)>>(rows: I) -> Self {
        let mut batch = Batch::default();
        for (i, (sensor, timestamp_ms, value, flagged)) in rows.into_iter().enumerate() {
            batch.sensors.push(sensor);
            batch.timestamps_ms.push(timestamp_ms);
            batch.values.push(value);
            if flagged {
                batch.flagged.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        batch
    }
}

/// A detector's answer as the WIT `detections` record holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionColumns {
    /// One score per reading; 0 for a reading warming up.
    pub scores: Vec<f64>,
    /// Indices, ascending, of the anomalies.
    pub anomalies: Vec<u32>,
    /// Indices, ascending, of the readings not judged yet.
    pub warming_up: Vec<u32>,
    /// `(first index, model)`: the model that judged from `first` until the next run. A new run
    /// starts only where the model changes; readings warming up have none.
    pub models: Vec<(u32, Option<ModelInfo>)>,
}

impl DetectionColumns {
    /// Empty columns with room for `readings` scores.
    pub fn with_capacity(readings: usize) -> Self {
        DetectionColumns { scores: Vec::with_capacity(readings), ..Default::default() }
    }

    /// Adds the next reading's judgement, with the model behind it: straight into the columns, so
    /// a batch's answer is written in one pass with no judgement kept a reading.
    #[inline]
    pub fn push(&mut self, judgement: Judgement, model: Option<ModelInfo>) {
        let at = u32::try_from(self.scores.len()).unwrap_or(u32::MAX);
        let model = match judgement {
            Judgement::WarmingUp => {
                self.scores.push(0.0);
                self.warming_up.push(at);
                None
            }
            Judgement::Scored { score, anomaly } => {
                self.scores.push(score);
                if anomaly {
                    self.anomalies.push(at);
                }
                model
            }
        };
        let current = self.models.last().and_then(|&(_, m)| m);
        if current != model {
            self.models.push((at, model));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn model(generation: u32) -> Option<ModelInfo> {
        Some(ModelInfo { generation, trained_at_ms: 1_000 * i64::from(generation), training_rows: 64 })
    }

    /// The columns of `judgements` pushed in order.
    fn columns_of(judgements: &[(Judgement, Option<ModelInfo>)]) -> DetectionColumns {
        let mut columns = DetectionColumns::default();
        for &(judgement, model) in judgements {
            columns.push(judgement, model);
        }
        columns
    }

    #[test]
    fn judgements_become_columns_with_a_run_per_model_change() {
        let scored = |score, anomaly| Judgement::Scored { score, anomaly };
        let judgements = [
            (scored(0.5, false), None),
            (Judgement::WarmingUp, model(1)),
            (scored(0.9, true), model(1)),
            (scored(0.4, false), model(1)),
            (Judgement::WarmingUp, None),
            (scored(0.8, true), model(2)),
            (scored(0.3, false), model(1)),
        ];
        assert_eq!(
            columns_of(&judgements),
            DetectionColumns {
                scores: vec![0.5, 0.0, 0.9, 0.4, 0.0, 0.8, 0.3],
                anomalies: vec![2, 5],
                warming_up: vec![1, 4],
                // Reading 0 and the warming-up ones have no model: the first run starts at 2; the
                // gap at 4 is a run of none.
                models: vec![(2, model(1)), (4, None), (5, model(2)), (6, model(1))],
            }
        );
        assert_eq!(columns_of(&[]), DetectionColumns::default());
    }

    #[test]
    fn a_resolved_batch_reads_each_reading_with_the_catalogs_identity_and_its_flag() {
        let mut catalog = Catalog::default();
        for (key, id) in [(0, "a"), (4, "b")] {
            catalog.declare(
                key,
                SensorIdentity { sensor_id: id.into(), sensor_type: crate::SensorType::Co2, location: "lab_1".into() },
            );
        }
        let batch: Batch = [(4, 10, 1.5, false), (0, 20, 2.5, true), (4, 30, 3.5, true)].into_iter().collect();
        let readings = ResolvedBatch::new(&catalog, &batch).expect("every key declared");
        assert_eq!(readings.len(), 3);
        let read: Vec<(&str, i64, f64, bool)> =
            readings.iter_flagged().map(|(s, at, v, flagged)| (&*s.sensor_id, at, v, flagged)).collect();
        assert_eq!(read, [("b", 10, 1.5, false), ("a", 20, 2.5, true), ("b", 30, 3.5, true)]);
        // The catalog's own identity, not a copy: a stage's state finds it by pointer.
        let first = readings.iter().next().map(|(s, _, _)| s as *const SensorIdentity);
        assert_eq!(first, catalog.identity(4).map(Arc::as_ptr));
        // An undeclared key (a gap in the catalog at 2, or 5, past its end) refuses the batch whole,
        // naming the first; so does a batch of the wrong shape.
        for key in [2, 5] {
            let bad: Batch = [(0, 1, 1.0, false), (key, 2, 1.0, false)].into_iter().collect();
            assert_eq!(
                ResolvedBatch::new(&catalog, &bad).err(),
                Some(PluginError::InvalidInput(format!("sensor key {key} was never declared")))
            );
        }
        let uneven = Batch { values: vec![], ..batch };
        assert!(
            matches!(ResolvedBatch::new(&catalog, &uneven), Err(PluginError::InvalidInput(m)) if m.contains("differ in length"))
        );
    }

    #[test]
    fn a_batch_from_rows_keeps_its_flags_and_checks_its_shape() {
        let batch: Batch = [(3, 10, 1.5, false), (4, 20, 2.5, true), (3, 30, 3.5, true)].into_iter().collect();
        assert_eq!(
            batch,
            Batch {
                sensors: vec![3, 4, 3],
                timestamps_ms: vec![10, 20, 30],
                values: vec![1.5, 2.5, 3.5],
                flagged: vec![1, 2]
            }
        );
        assert_eq!(batch.flags().collect::<Vec<_>>(), [false, true, true]);
        assert_eq!(batch.check(), Ok(()));
        let short = Batch { values: vec![1.5], ..batch.clone() };
        assert_eq!(
            short.check(),
            Err(PluginError::InvalidInput(
                "the batch's columns differ in length: 3 sensors, 3 timestamps, 1 values".into()
            ))
        );
        for flagged in [vec![2, 1], vec![1, 1], vec![3]] {
            let bad = Batch { flagged: flagged.clone(), ..batch.clone() };
            assert!(
                matches!(bad.check(), Err(PluginError::InvalidInput(m)) if m.contains("out of order or past the end")),
                "{flagged:?}"
            );
        }
    }
}
