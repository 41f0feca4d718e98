//! The forest as a linfa algorithm: [`ForestParams`] implements linfa's `Fit` on a `Dataset` of
//! `f64` records (targets are ignored: the forest is unsupervised), and the fitted
//! [`IsolationForest`] predicts one anomaly score per record through linfa's `Predict`.
//!
//! ```
//! use isolation_forest::forest::ForestParams;
//! use linfa::prelude::*;
//! use ndarray::array;
//!
//! let records = array![[0.0, 0.1], [0.1, 0.0], [0.0, 0.0], [0.1, 0.1], [9.0, 9.0]];
//! let dataset = Dataset::from(records.clone());
//! let forest = ForestParams { seed: 1, ..ForestParams::default() }.fit(&dataset).expect("fits");
//! let scores = forest.predict(&records);
//! assert!(scores[4] > scores[0]);
//! ```

use linfa::dataset::{DatasetBase, Records};
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, ArrayBase, Data, Ix2};

use crate::forest::{FitError, ForestParams, IsolationForest};

/// Why fitting through linfa failed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationForestError {
    /// linfa refused the dataset.
    #[error(transparent)]
    Linfa(#[from] linfa::Error),
    /// The forest refused the records.
    #[error("cannot fit an isolation forest: {0}")]
    Fit(#[from] FitError),
}

impl<D: Data<Elem = f64>, T> Fit<ArrayBase<D, Ix2>, T, IsolationForestError> for ForestParams {
    type Object = IsolationForest;

    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<IsolationForest, IsolationForestError> {
        let records = dataset.records();
        if records.nsamples() == 0 {
            return Err(FitError::BadShape("cannot fit on no rows".into()).into());
        }
        let rows: Vec<Vec<f64>> = records.outer_iter().map(|row| row.to_vec()).collect();
        Ok(self.fit_rows(&rows)?)
    }
}

impl<D: Data<Elem = f64>> PredictInplace<ArrayBase<D, Ix2>, Array1<f64>> for IsolationForest {
    /// Writes each record's anomaly score (in (0, 1], larger is more anomalous).
    fn predict_inplace<'a>(&'a self, records: &'a ArrayBase<D, Ix2>, scores: &mut Array1<f64>) {
        let mut row = Vec::with_capacity(records.ncols());
        for (record, score) in records.outer_iter().zip(scores.iter_mut()) {
            row.clear();
            row.extend(record.iter().copied());
            *score = self.score(&row);
        }
    }

    fn default_target(&self, records: &ArrayBase<D, Ix2>) -> Array1<f64> {
        Array1::zeros(records.nrows())
    }
}
