//! The online Isolation Forest detector: the seed's features, one forest per sensor type, retrained
//! on recent history as event time passes.
//!
//! For each reading, from its sensor's last `history` values (the reading included): the value, the
//! hour of day as sine and cosine, the change from the sensor's previous value, and the rolling mean,
//! population standard deviation and range. Until a sensor has `min_history` values these rolling
//! features mean little: its readings are warming up and do not train. After that each row joins
//! its sensor type's training buffer (the last `train_rows` rows). A type's forest is (re)trained when it has `min_train` rows and no model
//! yet, when its buffer has doubled since the last training (a young model matures quickly), or
//! when `retrain_interval_ms` of event time passed since the last training. Until a type has a
//! model its readings are warming up. A reading is an anomaly when its score exceeds the threshold:
//! the `1 - contamination` quantile of the scores of the rows the model was trained on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

pub use iotstream_plugin_sdk::detector::{Detector, Judgement, ModelInfo};
use iotstream_plugin_sdk::{SensorIdentity, SensorType};
use serde::{Deserialize, Serialize};

use linfa::prelude::{Dataset, Fit, Predict};
use ndarray::Array2;

use crate::forest::{ForestParams, IsolationForest};

/// Number of features per reading.
pub const N_FEATURES: usize = 7;

/// One reading's features.
pub type Features = [f64; N_FEATURES];

/// Configuration of the isolation-forest stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Share of training rows above the threshold. Default 0.01: scikit-learn's `auto` (score > 0.5)
    /// flags far too much on sensor data.
    pub contamination: f64,
    /// Seed of the forests (each training adds its generation number).
    pub seed: u64,
    /// What one model covers: `sensor_type` (default: one model per type, trained on all its
    /// sensors) or `sensor` (one model per sensor).
    pub model_scope: ModelScope,
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

/// The key of one model's training rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScopeKey {
    /// All sensors of a type.
    Type(SensorType),
    /// One sensor, by id.
    Sensor(Arc<str>),
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
            contamination: 0.01,
            seed: 0,
            model_scope: ModelScope::SensorType,
        }
    }
}

impl DetectorConfig {
    /// Checks the values, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.trees == 0 || self.max_samples < 2 || self.history < 2 {
            return Err("trees must be positive, max_samples and history at least 2".into());
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
        if !(self.contamination > 0.0 && self.contamination < 0.5) {
            return Err(format!("contamination must be in (0, 0.5), got {}", self.contamination));
        }
        Ok(())
    }
}

/// A trained model and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    forest: IsolationForest,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// Event time of the newest reading it was trained with.
    pub trained_at_ms: i64,
    /// Rows it was trained on.
    pub training_rows: usize,
    /// 1 for a type's first model, then counting up.
    pub generation: u32,
}

/// A sensor's recent values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SensorHistory {
    values: VecDeque<f64>,
}

/// One model's training rows and the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ModelState {
    training: VecDeque<Features>,
    model: Option<Model>,
}

/// The complete state: histories by sensor id, training rows and models by scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    sensors: HashMap<Arc<str>, SensorHistory>,
    models: BTreeMap<ScopeKey, ModelState>,
}

/// The online detector.
#[derive(Debug, Clone)]
pub struct OnlineForest {
    config: DetectorConfig,
    state: DetectorState,
}

impl OnlineForest {
    /// A detector with no history and no model.
    pub fn new(config: DetectorConfig) -> Self {
        OnlineForest { config, state: DetectorState::default() }
    }

    /// The current model that judges `sensor`'s readings.
    pub fn model_for(&self, sensor: &Arc<str>, sensor_type: SensorType) -> Option<&Model> {
        self.state.models.get(&self.scope(sensor, sensor_type)).and_then(|t| t.model.as_ref())
    }

    fn scope(&self, sensor: &Arc<str>, sensor_type: SensorType) -> ScopeKey {
        match self.config.model_scope {
            ModelScope::SensorType => ScopeKey::Type(sensor_type),
            ModelScope::Sensor => ScopeKey::Sensor(sensor.clone()),
        }
    }

    /// Updates the features and training rows with one reading, retrains if due, and scores it.
    pub fn observe(&mut self, sensor: &Arc<str>, sensor_type: SensorType, timestamp_ms: i64, value: f64) -> Judgement {
        let history = match self.state.sensors.get_mut(sensor) {
            Some(history) => history,
            None => self.state.sensors.entry(sensor.clone()).or_default(),
        };
        let features = features(history, self.config.history, timestamp_ms, value);
        if history.values.len() < self.config.min_history {
            return Judgement::WarmingUp;
        }
        let scope = self.scope(sensor, sensor_type);
        let config = &self.config;
        let state = self.state.models.entry(scope).or_default();
        if state.training.len() == config.train_rows {
            state.training.pop_front();
        }
        state.training.push_back(features);
        let due = match &state.model {
            None => state.training.len() >= config.min_train,
            // A young model, trained on a short stretch of the stream, is retrained each time its
            // buffer has doubled (until full), so it does not judge the stream by its first seconds.
            Some(model) => {
                timestamp_ms.saturating_sub(model.trained_at_ms) >= config.retrain_interval_ms
                    || (model.training_rows < config.train_rows && state.training.len() >= 2 * model.training_rows)
            }
        };
        if due {
            let generation = state.model.as_ref().map_or(1, |m| m.generation + 1);
            state.model = train(config, &state.training, timestamp_ms, generation);
        }
        match &state.model {
            None => Judgement::WarmingUp,
            Some(model) => {
                let score = model.forest.score(&features);
                Judgement::Scored { score, anomaly: score > model.threshold }
            }
        }
    }
}

impl Detector for OnlineForest {
    type Config = DetectorConfig;
    type State = DetectorState;
    const STATE_VERSION: u32 = 1;

    fn create(config: DetectorConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(OnlineForest::new(config))
    }

    fn judge(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64) -> Judgement {
        self.observe(&sensor.sensor_id, sensor.sensor_type, timestamp_ms, value)
    }

    fn model(&self, sensor: &SensorIdentity) -> Option<ModelInfo> {
        self.model_for(&sensor.sensor_id, sensor.sensor_type).map(|m| ModelInfo {
            generation: m.generation,
            trained_at_ms: m.trained_at_ms,
            training_rows: u32::try_from(m.training_rows).unwrap_or(u32::MAX),
        })
    }

    fn state(&self) -> &DetectorState {
        &self.state
    }

    fn restore(&mut self, state: DetectorState) {
        self.state = state;
    }
}

/// Pushes `value` into the sensor's history and computes the reading's features.
fn features(history: &mut SensorHistory, capacity: usize, timestamp_ms: i64, value: f64) -> Features {
    let change = history.values.back().map_or(0.0, |prev| value - prev);
    if history.values.len() == capacity {
        history.values.pop_front();
    }
    history.values.push_back(value);
    let n = history.values.len() as f64;
    let mean = history.values.iter().sum::<f64>() / n;
    let std = (history.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (lo, hi) =
        history.values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let hour = timestamp_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
    let angle = std::f64::consts::TAU * hour / 24.0;
    [value, angle.sin(), angle.cos(), change, mean, std, hi - lo]
}

/// Fits a forest on the training rows and sets its threshold; `None` if the rows cannot be fitted
/// (they are finite by construction, so only an empty buffer would).
fn train(config: &DetectorConfig, rows: &VecDeque<Features>, trained_at_ms: i64, generation: u32) -> Option<Model> {
    let records = Array2::from_shape_vec((rows.len(), N_FEATURES), rows.iter().flatten().copied().collect()).ok()?;
    let params = ForestParams {
        n_estimators: config.trees,
        max_samples: config.max_samples,
        seed: config.seed.wrapping_add(u64::from(generation)),
    };
    // Fitted and scored through linfa, as any user of the forest would.
    let forest = params.fit(&Dataset::from(records.clone())).ok()?;
    let mut scores = forest.predict(&records).to_vec();
    scores.sort_by(f64::total_cmp);
    let rank = (((1.0 - config.contamination) * scores.len() as f64).ceil() as usize).clamp(1, scores.len()) - 1;
    Some(Model { forest, threshold: scores[rank], trained_at_ms, training_rows: records.nrows(), generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config() -> DetectorConfig {
        DetectorConfig {
            trees: 50,
            min_history: 1,
            min_train: 64,
            train_rows: 256,
            retrain_interval_ms: 60_000,
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn per_sensor_scope_keeps_one_model_per_sensor() {
        let mut d = OnlineForest::new(DetectorConfig { model_scope: ModelScope::Sensor, ..small_config() });
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for i in 0..64 {
            d.observe(&a, SensorType::Co2, i * 1000, 400.0 + (i % 3) as f64);
        }
        for i in 0..63 {
            d.observe(&b, SensorType::Co2, i * 1000, 800.0 + (i % 5) as f64);
        }
        // a has 64 rows of its own and a model; b, of the same type, has 63 and none yet.
        assert_eq!(d.model_for(&a, SensorType::Co2).map(|m| (m.generation, m.training_rows)), Some((1, 64)));
        assert!(d.model_for(&b, SensorType::Co2).is_none());
        // b's 64th row trains its own model, which scores that reading.
        assert!(matches!(d.observe(&b, SensorType::Co2, 99_000, 801.0), Judgement::Scored { .. }));
        assert_eq!(d.model_for(&b, SensorType::Co2).map(|m| m.training_rows), Some(64));
        let by_type = OnlineForest::new(small_config());
        assert!(by_type.model_for(&a, SensorType::Co2).is_none());
    }

    #[test]
    fn a_new_sensor_warms_up_and_does_not_train_until_it_has_min_history() {
        let mut d = OnlineForest::new(DetectorConfig { min_history: 5, ..small_config() });
        let s: Arc<str> = "t1".into();
        // Readings 1-4 of the sensor neither train nor get judged; reading 5 + 63 more fill min_train.
        for i in 0..67 {
            assert_eq!(d.observe(&s, SensorType::Co2, i * 1000, 400.0 + (i % 3) as f64), Judgement::WarmingUp);
        }
        assert!(matches!(d.observe(&s, SensorType::Co2, 67_000, 401.0), Judgement::Scored { .. }));
        assert_eq!(d.model_for(&s, SensorType::Co2).map(|m| m.training_rows), Some(64));
    }

    #[test]
    fn features_match_hand_computed_values() {
        let mut h = SensorHistory::default();
        features(&mut h, 3, 0, 10.0);
        features(&mut h, 3, 0, 20.0);
        features(&mut h, 3, 0, 30.0);
        // 06:00 UTC: angle pi/2. History 20, 30, 60 (10 fell out): mean 110/3, range 40.
        let f = features(&mut h, 3, 6 * 3_600_000, 60.0);
        let mean = 110.0 / 3.0;
        let std = (((20.0 - mean) * (20.0 - mean) + (30.0 - mean) * (30.0 - mean) + (60.0 - mean) * (60.0 - mean))
            / 3.0_f64)
            .sqrt();
        assert_eq!(f[0], 60.0);
        assert!((f[1] - 1.0).abs() < 1e-12 && f[2].abs() < 1e-12);
        assert_eq!(f[3], 30.0);
        assert!((f[4] - mean).abs() < 1e-12 && (f[5] - std).abs() < 1e-12);
        assert_eq!(f[6], 40.0);
    }

    #[test]
    fn warms_up_then_trains_then_retrains_on_event_time() {
        let mut d = OnlineForest::new(small_config());
        let s: Arc<str> = "t1".into();
        for i in 0..63 {
            assert_eq!(
                d.observe(&s, SensorType::Temperature, i * 1000, 20.0 + (i % 5) as f64 * 0.1),
                Judgement::WarmingUp
            );
        }
        assert!(matches!(d.observe(&s, SensorType::Temperature, 63_000, 20.2), Judgement::Scored { .. }));
        let first = d.model_for(&s, SensorType::Temperature).cloned().expect("trained");
        assert_eq!((first.generation, first.training_rows, first.trained_at_ms), (1, 64, 63_000));
        assert!(d.model_for(&s, SensorType::Humidity).is_none());
        // 59 s of event time later: not yet due; 60 s later: retrained on the newer rows.
        d.observe(&s, SensorType::Temperature, 122_999, 20.1);
        assert_eq!(d.model_for(&s, SensorType::Temperature).map(|m| m.generation), Some(1));
        d.observe(&s, SensorType::Temperature, 123_000, 20.1);
        let second = d.model_for(&s, SensorType::Temperature).expect("retrained");
        assert_eq!((second.generation, second.training_rows, second.trained_at_ms), (2, 66, 123_000));
    }

    #[test]
    fn threshold_flags_the_contamination_share_of_training_rows_and_a_spike() {
        // One training, at the 256th reading, on exactly the 256 rows in the buffer.
        let config =
            DetectorConfig { contamination: 0.05, min_train: 256, retrain_interval_ms: i64::MAX, ..small_config() };
        let mut d = OnlineForest::new(config);
        let s: Arc<str> = "h1".into();
        for i in 0..256 {
            d.observe(&s, SensorType::Humidity, i * 1000, 45.0 + ((i * 37) % 11) as f64 * 0.2);
        }
        let model = d.model_for(&s, SensorType::Humidity).expect("trained").clone();
        // The threshold is the 95% quantile of the training scores: at most 5% of them lie above it.
        let rows: Vec<Features> =
            d.state.models[&ScopeKey::Type(SensorType::Humidity)].training.iter().copied().collect();
        let above = rows.iter().filter(|r| model.forest.score(*r) > model.threshold).count();
        assert_eq!(model.training_rows, 256);
        assert!(above <= 12, "{above} of 256 above the threshold, at most 5% may be");
        let Judgement::Scored { anomaly, score } = d.observe(&s, SensorType::Humidity, 256_000, 95.0) else {
            panic!("expected a score")
        };
        assert!(anomaly, "spike scored {score}, threshold {}", model.threshold);
    }
}
