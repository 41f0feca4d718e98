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
//! A constant history (std = 0) is handled without dividing by zero: the standard deviation is
//! floored at 1e-12 of the mean's magnitude (at least 1e-12), far below any real sensor's noise but
//! above rounding error, so a value equal to the constant scores 0 and any change from it scores
//! very high (and finite).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use iotstream_plugin_sdk::SensorIdentity;
pub use iotstream_plugin_sdk::detector::{Detector, Judgement};
use serde::{Deserialize, Serialize};

/// Configuration of the z-score stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
}

impl Default for ZScoreConfig {
    fn default() -> Self {
        ZScoreConfig { history: 100, threshold: 3.0, min_history: 30, history_ms: None }
    }
}

impl ZScoreConfig {
    /// Checks the values, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.history < 2 {
            return Err(format!("history must be at least 2, got {}", self.history));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!("threshold must be a positive number, got {}", self.threshold));
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    values: VecDeque<f64>,
    /// Event times of `values` (kept for the sliding variant).
    times: VecDeque<i64>,
    mean: f64,
    m2: f64,
    updates_since_exact: usize,
}

impl History {
    fn std(&self) -> f64 {
        let n = self.values.len() as f64;
        (self.m2.max(0.0) / n).sqrt()
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
pub type ZScoreState = HashMap<Arc<str>, History>;

/// The z-score detector.
#[derive(Debug, Clone)]
pub struct ZScore {
    config: ZScoreConfig,
    sensors: ZScoreState,
}

impl ZScore {
    /// A detector with no history.
    pub fn new(config: ZScoreConfig) -> Self {
        ZScore { config, sensors: HashMap::new() }
    }

    /// Judges `value` from `sensor` against its history, then adds it to the history.
    pub fn observe(&mut self, sensor: &Arc<str>, value: f64) -> Judgement {
        self.observe_at(sensor, 0, value)
    }

    /// [`ZScore::observe`] at event time `timestamp_ms` (which matters only with `history_ms`).
    pub fn observe_at(&mut self, sensor: &Arc<str>, timestamp_ms: i64, value: f64) -> Judgement {
        let history = match self.sensors.get_mut(sensor) {
            Some(history) => history,
            None => self.sensors.entry(sensor.clone()).or_default(),
        };
        if let Some(window) = self.config.history_ms {
            history.forget_before(timestamp_ms.saturating_sub(window));
        }
        let judgement = if history.values.len() < self.config.min_history {
            Judgement::WarmingUp
        } else {
            let floor = (history.mean.abs() * 1e-12).max(1e-12);
            let score = (value - history.mean).abs() / history.std().max(floor);
            Judgement::Scored { score, anomaly: score > self.config.threshold }
        };
        history.push(timestamp_ms, value, self.config.history);
        judgement
    }
}

impl Detector for ZScore {
    type Config = ZScoreConfig;
    type State = ZScoreState;
    const STATE_VERSION: u32 = 1;

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
mod tests {
    use super::*;

    fn detector(history: usize, min_history: usize) -> ZScore {
        ZScore::new(ZScoreConfig { history, threshold: 3.0, min_history, history_ms: None })
    }

    #[test]
    fn scores_against_the_values_before_and_warms_up_first() {
        let mut z = detector(4, 4);
        let s: Arc<str> = "t1".into();
        for v in [10.0, 12.0, 10.0, 12.0] {
            assert_eq!(z.observe(&s, v), Judgement::WarmingUp);
        }
        // History 10, 12, 10, 12: mean 11, population std 1; |14 - 11| / 1 = 3, not above 3.
        assert_eq!(z.observe(&s, 14.0), Judgement::Scored { score: 3.0, anomaly: false });
        // History is now 12, 10, 12, 14: mean 12, variance (0+4+0+4)/4 = 2.
        let Judgement::Scored { score, anomaly } = z.observe(&s, 17.0) else { panic!("expected a score") };
        assert!((score - 5.0 / 2.0_f64.sqrt()).abs() < 1e-12);
        assert!(anomaly);
    }

    #[test]
    fn sensors_are_independent() {
        let mut z = detector(3, 2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        z.observe(&a, 1.0);
        z.observe(&a, 3.0);
        assert_eq!(z.observe(&b, 100.0), Judgement::WarmingUp);
        // a: mean 2, std 1.
        assert_eq!(z.observe(&a, 5.0), Judgement::Scored { score: 3.0, anomaly: false });
    }

    #[test]
    fn sliding_event_time_window_forgets_old_values() {
        let config = ZScoreConfig { history: 100, threshold: 3.0, min_history: 2, history_ms: Some(10_000) };
        let mut z = ZScore::new(config);
        let s: Arc<str> = "t".into();
        // 100 and 300 at 0 s and 1 s; then 10 and 12 at 20 s and 21 s: the first two are out of
        // the 10 s window by then, so 14 at 22 s is judged against 10, 12 only (mean 11, std 1).
        for (ts, v) in [(0, 100.0), (1_000, 300.0), (20_000, 10.0), (21_000, 12.0)] {
            z.observe_at(&s, ts, v);
        }
        assert_eq!(z.observe_at(&s, 22_000, 14.0), Judgement::Scored { score: 3.0, anomaly: false });
        // After a gap longer than the window, the history is empty again: warming up.
        assert_eq!(z.observe_at(&s, 60_000, 14.0), Judgement::WarmingUp);
        let err = ZScore::create(ZScoreConfig { history_ms: Some(0), ..ZScoreConfig::default() }).err();
        assert_eq!(err.as_deref(), Some("history_ms must be positive, got Some(0)"));
    }

    #[test]
    fn constant_signal_gives_finite_scores() {
        let mut z = detector(10, 5);
        let s: Arc<str> = "stuck".into();
        for _ in 0..10 {
            z.observe(&s, 21.5);
        }
        assert_eq!(z.observe(&s, 21.5), Judgement::Scored { score: 0.0, anomaly: false });
        let Judgement::Scored { score, anomaly } = z.observe(&s, 21.6) else { panic!("expected a score") };
        assert!(score.is_finite() && anomaly, "score {score}");
    }

    #[test]
    fn rolling_statistics_stay_exact_far_from_zero() {
        // Values near 1e9 with unit spread: a naive sum of squares loses every digit here.
        let mut z = detector(100, 30);
        let s: Arc<str> = "p".into();
        let values: Vec<f64> = (0..1000).map(|i| 1e9 + f64::from(i % 7)).collect();
        for v in &values {
            z.observe(&s, *v);
        }
        let window = &values[values.len() - 100..];
        let mean = window.iter().sum::<f64>() / 100.0;
        let std = (window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 100.0).sqrt();
        let Judgement::Scored { score, .. } = z.observe(&s, 1e9 + 10.0) else { panic!("expected a score") };
        let expected = (1e9 + 10.0 - mean).abs() / std;
        assert!((score - expected).abs() < 1e-6 * expected, "{score} vs {expected}");
    }
}
