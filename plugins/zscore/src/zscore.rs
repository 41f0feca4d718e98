//! Rolling z-score detection per sensor.
//!
//! Each sensor keeps its last `history` values (and, with `history_ms` set, only those of the last
//! `history_ms` of event time: the sliding variant over event time, for sensors that report at
//! uneven rates). A new value is judged against the mean and the
//! population standard deviation of the values before it: `score = |x - mean| / std`, an anomaly when
//! the score exceeds `threshold`. Until a sensor has `min_history` values its readings are
//! warming up. The mean and variance are kept with Welford's update and its reverse for the value
//! that leaves the window (stable where a naive sum of squares cancels catastrophically), and are
//! recomputed exactly from the window every `history` updates so rounding cannot accumulate.
//!
//! # Flat histories
//!
//! A constant history (a sensor at rest, a counter at zero, a square wave between its edges) has a
//! standard deviation of 0, and the seed divided by it: any change scored infinity, the top score
//! for the most ordinary event. Here the standard deviation is floored at `std_floor` (default 1%)
//! of the **signal's scale**: the range of every value the sensor has sent (kept as its lowest and
//! highest value; not the mean's magnitude, which says nothing of how far a signal moves: pressure
//! sits at 1013 hPa and moves by tenths), and never below 1e-12. So on a flat
//! stretch a value must move more than `threshold x std_floor` of the signal's scale (3% by default)
//! to be an anomaly, and the score of a change is `|change| / floor`: finite, proportional to the
//! change. A signal that has never moved at all (range 0, mean 0) keeps the 1e-12 floor: its first
//! move is news. The preset `"seed"` restores the seed's floor (`std_floor` 1e-12) for comparison.

use std::collections::VecDeque;
use std::sync::Arc;

pub use iotstream_plugin_sdk::detector::{Detector, Judgement};
use iotstream_plugin_sdk::window::make_room;
use iotstream_plugin_sdk::{CatalogName, SensorIdentity, SensorMap, float};
use serde::{Deserialize, Serialize};

/// The smallest standard deviation a score divides by, whatever the signal's scale: above rounding
/// error of any f64 a sensor sends, so a score stays finite.
const MIN_STD: f64 = 1e-12;

/// A named set of defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The fixed detector: `std_floor` 0.01.
    #[default]
    Default,
    /// The seed's semantics: 3 sigma over the last 100 readings, the standard deviation floored at
    /// 1e-12 of the signal's range (any change of a flat signal scores about 1e12).
    Seed,
}

/// The configuration as written: a preset, and any key that overrides it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    preset: Preset,
    history: Option<usize>,
    threshold: Option<f64>,
    min_history: Option<usize>,
    history_ms: Option<i64>,
    std_floor: Option<f64>,
}

impl From<RawConfig> for ZScoreConfig {
    fn from(raw: RawConfig) -> Self {
        let base = match raw.preset {
            Preset::Default => ZScoreConfig::default(),
            Preset::Seed => ZScoreConfig::seed(),
        };
        ZScoreConfig {
            history: raw.history.unwrap_or(base.history),
            threshold: raw.threshold.unwrap_or(base.threshold),
            min_history: raw.min_history.unwrap_or(base.min_history),
            history_ms: raw.history_ms.or(base.history_ms),
            std_floor: raw.std_floor.unwrap_or(base.std_floor),
        }
    }
}

/// Configuration of the z-score stage (JSON: these keys and `preset`, `"default"` or `"seed"`, whose
/// values the other keys override).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawConfig")]
pub struct ZScoreConfig {
    /// Values kept per sensor. Default 100, as the seed.
    pub history: usize,
    /// |z| above which a reading is an anomaly. Default 3: the 3-sigma rule.
    pub threshold: f64,
    /// Values a sensor needs before its readings are judged. Default 30: below that the sample
    /// standard deviation is too unstable for a 3-sigma rule.
    pub min_history: usize,
    /// When set, values older than this much event time before the reading leave the history too
    /// (a sliding window over event time, capped at `history` values). Default: none, the seed's
    /// last-100-readings window.
    pub history_ms: Option<i64>,
    /// The standard deviation's floor, as a share of the signal's range (module docs). Default 0.01:
    /// below the noise of every sensor the simulator models (their noise is 5% or more of the range
    /// they cover), yet a flat signal needs a move of 3% of its range to alarm. A large excursion
    /// widens the range for good, so it raises the floor: the price of a memory of two numbers.
    pub std_floor: f64,
}

impl Default for ZScoreConfig {
    fn default() -> Self {
        ZScoreConfig { history: 100, threshold: 3.0, min_history: 30, history_ms: None, std_floor: 0.01 }
    }
}

impl ZScoreConfig {
    /// The seed's configuration (preset `"seed"`).
    pub fn seed() -> Self {
        ZScoreConfig { std_floor: MIN_STD, ..ZScoreConfig::default() }
    }

    /// Checks the values, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.history < 2 {
            return Err(format!("history must be at least 2, got {}", self.history));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold must be a positive number, got {}", self.threshold));
        }
        if !(self.std_floor.is_finite() && self.std_floor > 0.0 && self.std_floor < 1.0) {
            return Err(format!("std_floor must be in (0, 1), got {}", self.std_floor));
        }
        if self.history_ms.is_some_and(|ms| ms <= 0) {
            return Err(format!("history_ms must be positive, got {:?}", self.history_ms));
        }
        if self.min_history < 2 || self.min_history > self.history {
            return Err(format!(
                "min_history must be between 2 and history ({}), got {}",
                self.history, self.min_history
            ));
        }
        Ok(())
    }
}

/// The rolling window of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    values: VecDeque<f64>,
    /// Event times of `values` (kept for the sliding variant).
    times: VecDeque<i64>,
    mean: f64,
    m2: f64,
    updates_since_exact: usize,
    /// The lowest and highest value the sensor ever sent: its range, the signal's scale.
    low: f64,
    high: f64,
}

impl Default for History {
    fn default() -> Self {
        History {
            values: VecDeque::new(),
            times: VecDeque::new(),
            mean: 0.0,
            m2: 0.0,
            updates_since_exact: 0,
            // No value yet: an empty range (high < low), widened by the first value.
            low: f64::INFINITY,
            high: f64::NEG_INFINITY,
        }
    }
}

impl History {
    /// The standard deviation a score divides by: the window's, floored at `std_floor` of the
    /// signal's scale (module docs).
    fn floored_std(&self, std_floor: f64) -> f64 {
        let range = if self.high >= self.low { self.high - self.low } else { 0.0 };
        float::max(float::max(self.std(), std_floor * range), MIN_STD)
    }

    fn std(&self) -> f64 {
        let n = self.values.len() as f64;
        (float::max(self.m2, 0.0) / n).sqrt()
    }

    /// Removes the oldest value (Welford's update, reversed).
    fn pop_oldest(&mut self) {
        self.times.pop_front();
        let Some(old) = self.values.pop_front() else { return };
        if self.values.is_empty() {
            self.mean = 0.0;
            self.m2 = 0.0;
        } else {
            let n = self.values.len() as f64;
            let delta = old - self.mean;
            self.mean -= delta / n;
            self.m2 -= delta * (old - self.mean);
        }
    }

    /// Drops values at or before `cutoff_ms` of event time.
    fn forget_before(&mut self, cutoff_ms: i64) {
        while self.times.front().is_some_and(|t| *t <= cutoff_ms) {
            self.pop_oldest();
        }
    }

    fn push(&mut self, timestamp_ms: i64, value: f64, capacity: usize) {
        if self.values.len() >= capacity {
            self.pop_oldest();
        }
        self.low = float::min(self.low, value);
        self.high = float::max(self.high, value);
        make_room(&mut self.values, capacity);
        make_room(&mut self.times, capacity);
        self.values.push_back(value);
        self.times.push_back(timestamp_ms);
        let n = self.values.len() as f64;
        let delta = value - self.mean;
        self.mean += delta / n;
        self.m2 += delta * (value - self.mean);
        self.updates_since_exact += 1;
        if self.updates_since_exact >= capacity {
            self.recompute();
        }
    }

    /// Two-pass mean and sum of squared deviations over the window.
    fn recompute(&mut self) {
        let n = self.values.len() as f64;
        self.mean = self.values.iter().sum::<f64>() / n;
        self.m2 = self.values.iter().map(|v| (v - self.mean).powi(2)).sum();
        self.updates_since_exact = 0;
    }
}

/// The complete state: every sensor's history, by sensor id.
pub type ZScoreState = SensorMap<History>;

/// The z-score detector.
#[derive(Debug, Clone)]
pub struct ZScore {
    config: ZScoreConfig,
    sensors: ZScoreState,
}

impl ZScore {
    /// A detector with no history.
    pub fn new(config: ZScoreConfig) -> Self {
        ZScore { config, sensors: SensorMap::default() }
    }

    /// Judges `value` from `sensor` against its history, then adds it to the history.
    pub fn observe(&mut self, sensor: &Arc<str>, value: f64) -> Judgement {
        self.observe_at(sensor, 0, value)
    }

    /// [`ZScore::observe`] at event time `timestamp_ms` (which matters only with `history_ms`).
    pub fn observe_at(&mut self, sensor: &Arc<str>, timestamp_ms: i64, value: f64) -> Judgement {
        let history = self.sensors.entry(CatalogName::from(sensor)).or_default();
        if let Some(window) = self.config.history_ms {
            history.forget_before(timestamp_ms.saturating_sub(window));
        }
        let judgement = if history.values.len() < self.config.min_history {
            Judgement::WarmingUp
        } else {
            let score = (value - history.mean).abs() / history.floored_std(self.config.std_floor);
            Judgement::Scored { score, anomaly: score > self.config.threshold }
        };
        history.push(timestamp_ms, value, self.config.history);
        judgement
    }
}

impl Detector for ZScore {
    type Config = ZScoreConfig;
    type State = ZScoreState;
    const STATE_VERSION: u32 = 2;

    fn create(config: ZScoreConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(ZScore::new(config))
    }

    fn judge(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64) -> Judgement {
        self.observe_at(&sensor.sensor_id, timestamp_ms, value)
    }

    fn state(&self) -> &ZScoreState {
        &self.sensors
    }

    fn restore(&mut self, state: ZScoreState) {
        self.sensors = state;
    }
}

#[cfg(test)]
mod tests;
