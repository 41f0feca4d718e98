//! The online forest's configuration: its keys, their defaults and why, the presets, and the
//! checks. The seed's detector stays available as the preset `"seed"`.

use crate::forest::MAX_SAMPLES_PER_TREE;
use serde::Deserialize;

/// Which features describe a reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSet {
    /// The value, its change, the rolling median, the median absolute deviation, and the value's
    /// distance from the median. The default: no time of day (a model trained over part of a day
    /// cannot judge an hour it has not seen: with the hour as a feature every reading at a new time
    /// of day looked anomalous until the next retraining, 25% of `plugin check`'s readings), and
    /// robust to the anomalies themselves (one spike inflates a rolling range or standard deviation
    /// for the next 100 readings, which then look anomalous too). Measured on the simulator's
    /// stream: F1 0.36 against 0.32 for `stationary` and 0.15 for `seed` (docs/detectors.md).
    #[default]
    Robust,
    /// The seed's features without the hour: the value, its change, and the rolling mean,
    /// standard deviation and range.
    Stationary,
    /// The seed's seven: `stationary` and the hour of day as sine and cosine.
    Seed,
}

/// A named set of defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The fixed detector.
    #[default]
    Default,
    /// The seed's detector: its seven features, retrained every 5 minutes of event time, the
    /// threshold the `1 - contamination` quantile of the training rows' own scores.
    Seed,
}

/// What one model covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelScope {
    /// One model per sensor type: more training data, models ready sooner.
    #[default]
    SensorType,
    /// One model per sensor: fits each sensor's own normal, needs `min_train` rows of each.
    Sensor,
}

/// Configuration of the isolation-forest stage (JSON: these keys and `preset`, `"default"` or
/// `"seed"`, whose values the other keys override).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawConfig")]
pub struct DetectorConfig {
    /// Trees per forest. Default 100, scikit-learn's.
    pub trees: usize,
    /// Rows per tree. Default 256, scikit-learn's `auto`.
    pub max_samples: usize,
    /// Values per sensor for the rolling features. Default 100, as the seed.
    pub history: usize,
    /// Values a sensor needs before its readings train or are judged. Default 10: with fewer, a
    /// rolling standard deviation or range is mostly noise, and a fresh sensor would look anomalous.
    pub min_history: usize,
    /// Newest rows per sensor type kept for training. Default 2048: eight trees' worth of sub-samples.
    pub train_rows: usize,
    /// Rows a type needs before its first model. Default 256: one full sub-sample.
    pub min_train: usize,
    /// Event time between retrainings, in ms. Default 300 000: the seed's 5 minutes.
    pub retrain_interval_ms: i64,
    /// Rows a model's scope must add before the interval may retrain it again. Default 1024, half
    /// of `train_rows`: each new model has seen at least half new rows, and fitting is bounded by
    /// the data, not by event time: a backfill of two weeks in one batch of 4096 readings fits at
    /// most 4 times, where the interval alone fitted at every reading (and ran past the 5 s
    /// deadline). In live operation (40 rows a second per type at the demo's pace, 12 000 per 5
    /// minutes) the interval decides. Counted in rows, not calls, so verdicts do not depend on how
    /// the stream is cut into batches (replays after a crash equal the uncrashed run).
    pub min_rows_between_fits: usize,
    /// Rows of a scope over which a due retraining is spread: the new model's trees are grown a few
    /// at each of the scope's readings, and it judges once the last is grown; until then the model
    /// before it judges (a scope's first model, small and with nothing to judge meanwhile, is
    /// fitted within the reading that makes it due). Default 256: a fit (about 10 ms
    /// natively on 2048 rows here, more as `.wasm`) run inside one call held that batch, and every
    /// batch behind it, for as long,
    /// and on a stream whose sensor types run at one rate every scope falls due in the same batch
    /// (docs/performance.md). 256 rows are half a second of a type at 10,000 readings/s, a few
    /// seconds at the demo's pace. Counted in rows, as `min_rows_between_fits`: a replay grows the
    /// same models at the same readings. 1 fits within the reading that made the fit due.
    pub fit_spread_rows: usize,
    /// Retrainings that may grow at once in one instance; the others fall due and wait, each
    /// starting at its scope's first reading after a growth finishes, or once twice
    /// `retrain_interval_ms` has passed since its model was trained (a type whose readings come
    /// slowly grows its forest over as many of them: the others do not wait for it past that). A
    /// scope's first model, fitted within one reading, never waits. 0: no limit. Default 1 with
    /// per-type models: on a stream whose types run at one rate all five fall due together every
    /// interval, and five growths at once hold five copies of the training rows and five
    /// half-grown forests beside the models.
    /// A wasm memory never gives pages back, so each instance kept the size of that worst moment
    /// and climbed towards it (the hour's soak, docs/performance.md); one at a time, the types
    /// fall due a growth apart from then on. Default 0 with per-sensor models: thousands of scopes,
    /// each growing over its own sensor's readings, cannot take turns.
    pub concurrent_fits: usize,
    /// Share of rows flagged: the alarm budget. Default 0.01.
    pub contamination: f64,
    /// Newest share of the training buffer held out of the fit to set the threshold: the
    /// `1 - contamination` quantile of those rows' scores, so the budget holds on rows the model
    /// has not seen (a forest scores its own training rows lower than new ones, so a threshold from
    /// them flags more than the budget). Default 0.25; 0 sets it from the training rows (the seed).
    pub validation_share: f64,
    /// Scores per scope whose `1 - contamination` quantile a reading must also exceed
    /// ([`crate::budget`]). Default 256: at the 1% budget the quantile is the 3rd highest of the
    /// last 256 scores, a few seconds of a type's readings at the demo's pace, so it follows drift
    /// quickly. Measured on the simulator's stream (flagged share, F1): 2048 (1.31%, 0.36), 512
    /// (1.09%, 0.38), 256 (0.99%, 0.41); on `plugin check`'s stream (1000 readings a type, so a
    /// window of 2048 never fills) 9.7%, 5.6%, 5.0%. 0 switches it off (the seed).
    pub budget_window: usize,
    /// Which features describe a reading.
    pub features: FeatureSet,
    /// Seed of the forests (each training adds its generation number).
    pub seed: u64,
    /// What one model covers.
    pub model_scope: ModelScope,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            trees: 100,
            max_samples: 256,
            history: 100,
            min_history: 10,
            train_rows: 2048,
            min_train: 256,
            retrain_interval_ms: 300_000,
            min_rows_between_fits: 1024,
            fit_spread_rows: 256,
            concurrent_fits: 1,
            contamination: 0.01,
            validation_share: 0.25,
            budget_window: 256,
            features: FeatureSet::Robust,
            seed: 0,
            model_scope: ModelScope::SensorType,
        }
    }
}

/// The configuration as written: a preset, and any key that overrides it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    preset: Preset,
    trees: Option<usize>,
    max_samples: Option<usize>,
    history: Option<usize>,
    min_history: Option<usize>,
    train_rows: Option<usize>,
    min_train: Option<usize>,
    retrain_interval_ms: Option<i64>,
    min_rows_between_fits: Option<usize>,
    fit_spread_rows: Option<usize>,
    concurrent_fits: Option<usize>,
    contamination: Option<f64>,
    validation_share: Option<f64>,
    budget_window: Option<usize>,
    features: Option<FeatureSet>,
    seed: Option<u64>,
    model_scope: Option<ModelScope>,
}

impl From<RawConfig> for DetectorConfig {
    fn from(raw: RawConfig) -> Self {
        let base = match raw.preset {
            Preset::Default => DetectorConfig::default(),
            Preset::Seed => DetectorConfig::seed(),
        };
        let model_scope = raw.model_scope.unwrap_or(base.model_scope);
        let concurrent_fits = match model_scope {
            ModelScope::SensorType => base.concurrent_fits,
            ModelScope::Sensor => 0,
        };
        DetectorConfig {
            trees: raw.trees.unwrap_or(base.trees),
            max_samples: raw.max_samples.unwrap_or(base.max_samples),
            history: raw.history.unwrap_or(base.history),
            min_history: raw.min_history.unwrap_or(base.min_history),
            train_rows: raw.train_rows.unwrap_or(base.train_rows),
            min_train: raw.min_train.unwrap_or(base.min_train),
            retrain_interval_ms: raw.retrain_interval_ms.unwrap_or(base.retrain_interval_ms),
            min_rows_between_fits: raw.min_rows_between_fits.unwrap_or(base.min_rows_between_fits),
            fit_spread_rows: raw.fit_spread_rows.unwrap_or(base.fit_spread_rows),
            concurrent_fits: raw.concurrent_fits.unwrap_or(concurrent_fits),
            contamination: raw.contamination.unwrap_or(base.contamination),
            validation_share: raw.validation_share.unwrap_or(base.validation_share),
            budget_window: raw.budget_window.unwrap_or(base.budget_window),
            features: raw.features.unwrap_or(base.features),
            seed: raw.seed.unwrap_or(base.seed),
            model_scope,
        }
    }
}

impl DetectorConfig {
    /// The seed's detector (preset `"seed"`): its features, its threshold from the training rows.
    /// Fitting stays bounded by `min_rows_between_fits`, which in live operation never binds.
    pub fn seed() -> Self {
        DetectorConfig {
            features: FeatureSet::Seed,
            validation_share: 0.0,
            budget_window: 0,
            ..DetectorConfig::default()
        }
    }

    /// Checks the values, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.trees == 0 || self.max_samples < 2 || self.history < 2 {
            return Err("trees must be positive, max_samples and history at least 2".into());
        }
        if self.max_samples > MAX_SAMPLES_PER_TREE {
            return Err(format!("max_samples must be at most {MAX_SAMPLES_PER_TREE}, got {}", self.max_samples));
        }
        if self.min_history == 0 || self.min_history > self.history {
            return Err(format!(
                "min_history must be between 1 and history ({}), got {}",
                self.history, self.min_history
            ));
        }
        if self.min_train < 2 || self.min_train > self.train_rows {
            return Err(format!(
                "min_train must be between 2 and train_rows ({}), got {}",
                self.train_rows, self.min_train
            ));
        }
        if self.retrain_interval_ms <= 0 {
            return Err(format!("retrain_interval_ms must be positive, got {}", self.retrain_interval_ms));
        }
        if self.min_rows_between_fits == 0 {
            return Err("min_rows_between_fits must be positive".into());
        }
        if self.fit_spread_rows == 0 {
            return Err("fit_spread_rows must be positive (1 fits within one reading)".into());
        }
        if !(self.contamination > 0.0 && self.contamination < 0.5) {
            return Err(format!("contamination must be in (0, 0.5), got {}", self.contamination));
        }
        if !(0.0..=0.5).contains(&self.validation_share) {
            return Err(format!("validation_share must be in [0, 0.5], got {}", self.validation_share));
        }
        Ok(())
    }
}
