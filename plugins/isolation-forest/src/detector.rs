//! The online Isolation Forest detector: one forest per sensor type (or per sensor), retrained on
//! recent history as event time passes, within a bound on fits per reading.
//!
//! For each reading, from its sensor's last `history` values (the reading included): the value, the
//! change from the sensor's previous value, the rolling median, the median absolute deviation and
//! the value's distance from the median (the `robust` features, the default; see [`FeatureSet`]
//! for the seed's, which add the hour of day). The features are 7 slots; a set with fewer holds 0
//! in the rest, and a constant feature is never split on. Until a sensor has `min_history` values these rolling features
//! mean little: its readings are warming up and do not train. After that each row joins its
//! scope's training buffer (the last `train_rows` rows). A scope's forest is (re)trained when it
//! has `min_train` rows and no model yet, when its buffer has doubled since the last training (a
//! young model matures quickly), or when `retrain_interval_ms` of event time passed since the last
//! training **and** the scope added `min_rows_between_fits` rows since: fitting is bounded by the
//! data, so a backfill that spans weeks of event time in one batch fits a few times, not once per
//! reading. A due retraining is not run inside the reading that made it due: the new model's trees
//! are grown a few at each of the scope's next `fit_spread_rows` readings ([`ForestGrowth`]), while
//! the model before it judges, so a fit costs each batch a share, not one batch all of it (a
//! scope's first model, small and with no model to judge meanwhile, is fitted at once). Until a scope
//! has a model its readings are warming up. Retrainings take turns: while `concurrent_fits` grow,
//! another that falls due waits for its scope's first reading after one finishes, or until twice
//! the interval since its model was trained (types at one rate fall due together, and five growths
//! at once kept the instance's memory at that moment's size; a slow type's growth holds no other
//! for longer).
//! A reading is an anomaly when its
//! score exceeds the threshold: the `1 - contamination` quantile of the scores of the newest
//! `validation_share` of the buffer, held out of the fit (the alarm budget, measured on rows the
//! model has not seen), and above the same quantile of the scope's last `budget_window` scores
//! ([`crate::budget`]: the budget holds while the stream drifts from what the model saw).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use iotstream_plugin_sdk::batch::{DetectionColumns, ResolvedBatch};
pub use iotstream_plugin_sdk::detector::{Detector, Judgement, ModelInfo};
use iotstream_plugin_sdk::window::make_room;
use iotstream_plugin_sdk::{CatalogName, SensorIdentity, SensorMap, SensorType, float};
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
pub use crate::config::{DetectorConfig, FeatureSet, ModelScope, Preset};
use crate::forest::{ForestGrowth, ForestParams, IsolationForest};

/// Number of features per reading.
pub const N_FEATURES: usize = 7;

/// One reading's features.
pub type Features = [f64; N_FEATURES];

/// The key of one model's training rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScopeKey {
    /// All sensors of a type.
    Type(SensorType),
    /// One sensor, by id.
    Sensor(Arc<str>),
}

/// A trained model and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    forest: IsolationForest,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// Event time of the newest reading it was trained with.
    pub trained_at_ms: i64,
    /// Rows it was trained on (fitted; the validation rows are not among them).
    pub training_rows: usize,
    /// Rows in the buffer when it was trained (fitted and held out).
    pub buffer_rows: usize,
    /// 1 for a type's first model, then counting up.
    pub generation: u32,
}

/// A sensor's recent values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SensorHistory {
    values: VecDeque<f64>,
    /// `values` in `f64::total_cmp` order, for the robust features' median and MAD, kept in step
    /// a value in and a value out at a time (a selection over the window twice a reading cost more
    /// than the forest's fit as `.wasm`). Not part of the state: made again from `values` whenever
    /// the two disagree (after an import, or for a feature set that does not keep it).
    #[serde(skip)]
    sorted: Vec<f64>,
}

/// Histories are equal by their values: `sorted` follows from them.
impl PartialEq for SensorHistory {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl SensorHistory {
    /// Brings `sorted` in step with `values`, which just took `value` in and `evicted` out (made
    /// again from `values` when it was not in step before).
    fn sort_in(&mut self, evicted: Option<f64>, value: f64) {
        let position = |sorted: &[f64], x: f64| sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        let was_in_step = self.sorted.len() + 1 == self.values.len() + usize::from(evicted.is_some());
        let out = evicted.map(|old| (old, position(&self.sorted, old)));
        if was_in_step && out.is_none_or(|(old, at)| self.sorted.get(at).is_some_and(|v| v.total_cmp(&old).is_eq())) {
            if let Some((_, at)) = out {
                self.sorted.remove(at);
            }
            let at = position(&self.sorted, value);
            self.sorted.insert(at, value);
        } else {
            self.sorted.clear();
            self.sorted.extend(self.values.iter().copied());
            self.sorted.sort_by(f64::total_cmp);
        }
    }
}

/// The median of the `sorted` values (the upper one of an even count) and their median absolute
/// deviation from it (the same rule): what selecting them from the window gives, bit for bit. The
/// deviations of the values below the median, walked down, and of those from it up, are each in
/// order already, so the MAD is their merge's element at the middle rank: found by halving how
/// many of it come from below (a few steps, where merging up to the middle took half the window's).
fn median_and_mad(sorted: &[f64]) -> (f64, f64) {
    let mid = sorted.len() / 2;
    let Some(&median) = sorted.get(mid) else { return (0.0, 0.0) };
    // The `i`-th deviation below the median (`i < mid`), and the `j`-th from it up (`j < len - mid`).
    let below = |i: usize| (sorted[mid - 1 - i] - median).abs();
    let above = |j: usize| (sorted[mid + j] - median).abs();
    // The merge's first `mid + 1` deviations take `i` from below and `mid + 1 - i` from above: `i`
    // is the fewest for which the next one below is not less than the last one taken from above.
    let (mut lo, mut hi) = ((mid + 1).saturating_sub(sorted.len() - mid), mid);
    while lo < hi {
        let i = lo + (hi - lo) / 2;
        if below(i).total_cmp(&above(mid - i)).is_ge() {
            hi = i;
        } else {
            lo = i + 1;
        }
    }
    // The larger of the last taken from each side (`lo <= mid`, so one from above at least).
    let last_above = above(mid - lo);
    let mad = match lo.checked_sub(1).map(below) {
        Some(last_below) if last_below.total_cmp(&last_above).is_gt() => last_below,
        _ => last_above,
    };
    (median, mad)
}

/// A model being grown, a few trees at each of its scope's readings, and what it will say of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Growing {
    /// The forest, over the buffer's older rows.
    growth: ForestGrowth,
    /// The rows whose scores set its threshold when it is grown: the held-out rows (or the fitted
    /// ones, with none held out).
    calibration: Vec<Features>,
    /// The scope's readings since the fit fell due, that one included.
    rows: usize,
    trained_at_ms: i64,
    training_rows: usize,
    buffer_rows: usize,
    generation: u32,
}

/// One model's training rows and the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ModelState {
    training: VecDeque<Features>,
    /// Rows added since the last training.
    rows_since_fit: usize,
    model: Option<Model>,
    /// The next model, while its trees are grown.
    growing: Option<Growing>,
    /// The alarm budget over the scope's recent scores.
    budget: Budget,
}

/// The complete state: histories by sensor id, training rows and models by scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    sensors: SensorMap<SensorHistory>,
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

    /// Updates the features and training rows with one reading, starts a fit if one is due, grows
    /// the fit under way by this reading's share of its trees, and scores the reading.
    pub fn observe(&mut self, sensor: &Arc<str>, sensor_type: SensorType, timestamp_ms: i64, value: f64) -> Judgement {
        let Advanced::ToScore { scope, features, grown } = self.advance(sensor, sensor_type, timestamp_ms, value)
        else {
            return Judgement::WarmingUp;
        };
        let config = &self.config;
        let Some(state) = self.state.models.get_mut(&scope) else { return Judgement::WarmingUp };
        if let Some(grown) = grown {
            state.model = Some(finish_fit(config, *grown));
        }
        match &state.model {
            None => Judgement::WarmingUp,
            Some(model) => {
                let score = model.forest.score(&features);
                let budget = state.budget.observe(score, config.budget_window, config.contamination);
                Judgement::Scored { score, anomaly: score > model.threshold && score > budget }
            }
        }
    }

    /// [`observe`](Self::observe) of every reading of a batch, in order, with the same judgements
    /// and models to the bit, but the scores of a scope's readings computed together
    /// ([`IsolationForest::score_rows`]): the features, training rows and fits advance reading by
    /// reading (none of them depends on a score); a scope's readings wait for their scores until
    /// its model is about to change or the batch ends, and then go through its alarm budget in
    /// their order.
    fn observe_batch(&mut self, readings: ResolvedBatch<'_>, out: &mut DetectionColumns) {
        let mut judged: Vec<(Judgement, Option<ModelInfo>)> = Vec::with_capacity(readings.len());
        let mut waiting: BTreeMap<ScopeKey, Vec<(usize, Features)>> = BTreeMap::new();
        for (index, (sensor, timestamp_ms, value)) in readings.iter().enumerate() {
            let (sensor_id, sensor_type) = (&sensor.sensor_id, sensor.sensor_type);
            if let Advanced::ToScore { scope, features, grown } =
                self.advance(sensor_id, sensor_type, timestamp_ms, value)
            {
                if let Some(grown) = grown {
                    // The readings before this one are judged by the model they were waiting for.
                    if let Some(rows) = waiting.remove(&scope) {
                        self.score_waiting(&scope, &rows, &mut judged);
                    }
                    if let Some(state) = self.state.models.get_mut(&scope) {
                        state.model = Some(finish_fit(&self.config, *grown));
                    }
                }
                if self.state.models.get(&scope).is_some_and(|state| state.model.is_some()) {
                    waiting.entry(scope).or_default().push((index, features));
                }
            }
            judged.push((Judgement::WarmingUp, self.model(sensor)));
        }
        for (scope, rows) in waiting {
            self.score_waiting(&scope, &rows, &mut judged);
        }
        for (judgement, model) in judged {
            out.push(judgement, model);
        }
    }

    /// Scores `rows` (each a reading's index in `judged` and its features), in order, with
    /// `scope`'s model, and judges each through the scope's alarm budget.
    fn score_waiting(
        &mut self,
        scope: &ScopeKey,
        rows: &[(usize, Features)],
        judged: &mut [(Judgement, Option<ModelInfo>)],
    ) {
        let config = &self.config;
        let Some(state) = self.state.models.get_mut(scope) else { return };
        let Some(model) = &state.model else { return };
        let features: Vec<Features> = rows.iter().map(|(_, features)| *features).collect();
        for (&(index, _), score) in rows.iter().zip(model.forest.score_rows(&features)) {
            let budget = state.budget.observe(score, config.budget_window, config.contamination);
            if let Some((judgement, _)) = judged.get_mut(index) {
                *judgement = Judgement::Scored { score, anomaly: score > model.threshold && score > budget };
            }
        }
    }

    /// A reading through everything but its score: its sensor's features, its scope's training
    /// rows, a fit started when due and the growth under way by the reading's share of its trees.
    /// A growth this reading finished is handed back, not yet its scope's model: the readings
    /// before this one, scored later by [`observe_batch`](Self::observe_batch), are judged by the
    /// model before it.
    fn advance(&mut self, sensor: &Arc<str>, sensor_type: SensorType, timestamp_ms: i64, value: f64) -> Advanced {
        let history = self.state.sensors.entry(CatalogName::from(sensor)).or_default();
        let features = features(history, self.config.history, self.config.features, timestamp_ms, value);
        if history.values.len() < self.config.min_history {
            return Advanced::WarmingUp;
        }
        let scope = self.scope(sensor, sensor_type);
        let config = &self.config;
        let state = self.state.models.entry(scope.clone()).or_default();
        if state.training.len() == config.train_rows {
            state.training.pop_front();
        }
        state.training.push_back(features);
        state.rows_since_fit += 1;
        let due = state.growing.is_none()
            && match &state.model {
                None => state.training.len() >= config.min_train,
                // A young model, trained on a short stretch of the stream, is retrained each time its
                // buffer has doubled (until full), so it does not judge the stream by its first seconds:
                // at most log2(train_rows / min_train) fits.
                Some(model) => {
                    (model.buffer_rows < config.train_rows && state.training.len() >= 2 * model.buffer_rows)
                        || (timestamp_ms.saturating_sub(model.trained_at_ms) >= config.retrain_interval_ms
                            && state.rows_since_fit >= config.min_rows_between_fits)
                }
            };
        // A retraining waits while `concurrent_fits` others grow, until twice the interval since
        // its model was trained: a type whose readings come slowly holds its growth for as long,
        // and the others do not wait for it past that (a first model is made at once).
        let may_wait = state.model.as_ref().is_some_and(|model| {
            timestamp_ms.saturating_sub(model.trained_at_ms) < config.retrain_interval_ms.saturating_mul(2)
        });
        // Counting the others' growths needs the scope's state looked up again: only when due.
        let (state, waits) = if due && may_wait && config.concurrent_fits > 0 {
            let growing = self.state.models.values().filter(|s| s.growing.is_some()).count();
            let Some(state) = self.state.models.get_mut(&scope) else { return Advanced::WarmingUp };
            (state, growing >= config.concurrent_fits)
        } else {
            (state, false)
        };
        if due && !waits {
            let generation = state.model.as_ref().map_or(1, |m| m.generation + 1);
            state.growing = start_fit(config, &state.training, timestamp_ms, generation);
            state.rows_since_fit = 0;
        }
        // A scope's first model is fitted at once: it is small (`min_train` rows) and nothing judges
        // meanwhile, so spreading it would only lengthen the warm-up (on `plugin check`'s stream,
        // 1,000 readings a type, 13% flagged instead of 5%: the alarm budget fills later too).
        let first = state.model.is_none();
        let mut grown = None;
        if let Some(growing) = &mut state.growing {
            growing.rows += 1;
            // Trees due after this many of the scope's rows: all of them at row `fit_spread_rows`.
            let trees = growing.growth.trees();
            let spread = if first { 1 } else { config.fit_spread_rows };
            let due_trees = (growing.rows * trees).div_ceil(spread).min(trees);
            while growing.growth.grown() < due_trees && growing.growth.grow_next() {}
            if growing.growth.grown() == trees {
                grown = state.growing.take().map(Box::new);
            }
        }
        Advanced::ToScore { scope, features, grown }
    }
}

/// A reading after [`OnlineForest::advance`].
enum Advanced {
    /// Its sensor's history is too short for its features to mean much.
    WarmingUp,
    /// To be scored by its scope's model (none yet: warming up), after `grown`, a growth it
    /// finished, becomes that model.
    ToScore { scope: ScopeKey, features: Features, grown: Option<Box<Growing>> },
}

impl Detector for OnlineForest {
    type Config = DetectorConfig;
    type State = DetectorState;
    // 4: forests stored in their scoring layout (they were stored as their grown trees).
    const STATE_VERSION: u32 = 4;

    fn create(config: DetectorConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(OnlineForest::new(config))
    }

    fn judge(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64) -> Judgement {
        self.observe(&sensor.sensor_id, sensor.sensor_type, timestamp_ms, value)
    }

    fn judge_batch(&mut self, readings: ResolvedBatch<'_>, out: &mut DetectionColumns) -> Result<(), String> {
        self.observe_batch(readings, out);
        Ok(())
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
fn features(history: &mut SensorHistory, capacity: usize, set: FeatureSet, timestamp_ms: i64, value: f64) -> Features {
    let change = history.values.back().map_or(0.0, |prev| value - prev);
    let evicted = if history.values.len() == capacity { history.values.pop_front() } else { None };
    make_room(&mut history.values, capacity);
    history.values.push_back(value);
    if set == FeatureSet::Robust {
        history.sort_in(evicted, value);
        let (median, mad) = median_and_mad(&history.sorted);
        return [value, 0.0, 0.0, change, median, mad, value - median];
    }
    let n = history.values.len() as f64;
    let mean = history.values.iter().sum::<f64>() / n;
    let std = (history.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    // The SDK's `min`/`max`, not `f64`'s: as `.wasm` those are calls (see `float`).
    let (lo, hi) = history
        .values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (float::min(lo, v), float::max(hi, v)));
    // The hour slots of the other sets hold 0: a constant feature is never split on.
    let (sin, cos) = match set {
        FeatureSet::Stationary | FeatureSet::Robust => (0.0, 0.0),
        FeatureSet::Seed => {
            let hour = timestamp_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
            (std::f64::consts::TAU * hour / 24.0).sin_cos()
        }
    };
    [value, sin, cos, change, mean, std, hi - lo]
}

/// Starts a forest on the buffer's older rows, to be calibrated on the newest `validation_share`
/// (or, with none held out, on the fitted rows); `None` if the rows cannot be fitted (they are
/// finite by construction, so only an empty buffer would).
fn start_fit(
    config: &DetectorConfig,
    rows: &VecDeque<Features>,
    trained_at_ms: i64,
    generation: u32,
) -> Option<Growing> {
    let held_out = (rows.len() as f64 * config.validation_share) as usize;
    let fitted = rows.len() - held_out;
    let (fit, held): (Vec<Features>, Vec<Features>) =
        (rows.iter().take(fitted).copied().collect(), rows.iter().skip(fitted).copied().collect());
    let params = ForestParams {
        n_estimators: config.trees,
        max_samples: config.max_samples,
        seed: config.seed.wrapping_add(u64::from(generation)),
    };
    let growth = ForestGrowth::new(&params, &fit).ok()?;
    let calibration = if held_out > 0 { held } else { fit };
    Some(Growing {
        growth,
        calibration,
        rows: 0,
        trained_at_ms,
        training_rows: fitted,
        buffer_rows: rows.len(),
        generation,
    })
}

/// The grown forest as the scope's model, its threshold the `1 - contamination` quantile of the
/// calibration rows' scores (scored once it is grown, by its scorer: half the cost of walking
/// them through each tree as it grows).
fn finish_fit(config: &DetectorConfig, grown: Growing) -> Model {
    let forest = grown.growth.finish();
    let mut scores = forest.score_rows(&grown.calibration);
    scores.sort_by(f64::total_cmp);
    let rank = (((1.0 - config.contamination) * scores.len() as f64).ceil() as usize).clamp(1, scores.len()) - 1;
    Model {
        forest,
        threshold: scores[rank],
        trained_at_ms: grown.trained_at_ms,
        training_rows: grown.training_rows,
        buffer_rows: grown.buffer_rows,
        generation: grown.generation,
    }
}

#[cfg(test)]
mod tests;
