//! The building blocks of the novelty detector, each O(1) per reading: a residual against an
//! exponentially weighted forecast, normalised by its own record ([`Residual`]); the evidence of a
//! stuck sensor ([`Flat`]); and the number of readings in one season ([`Period`]).

use iotstream_plugin_sdk::float;
use serde::{Deserialize, Serialize};

/// One residual stream: an exponentially weighted mean and variance of the input (the forecast and
/// its spread) and the record of the normalised residual `|x - mean| / std`, which decays slowly.
///
/// A reading's novelty is its residual divided by that record: above 1 it is further from the
/// forecast than anything seen lately. A reading that breaks the record raises it, but to at most
/// `cap` times the old record, so one outlier cannot blind the detector to the next, and a
/// stretch of anomalous readings raises it step by step, which ends an alarm of a level shift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    mean: f64,
    variance: f64,
    record: f64,
    seen: u64,
}

/// Readings a residual needs before its record means anything: the first residuals of an
/// exponentially weighted variance are computed from almost nothing.
const RECORD_AFTER: u64 = 10;

/// The smallest record a novelty divides by, in standard deviations: a stream so predictable that
/// it never strayed one standard deviation (or its floor) from its forecast makes any larger
/// residual novel, in proportion, rather than infinitely so.
const MIN_RECORD: f64 = 1.0;

/// How one [`Residual`] behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualParams {
    /// Weight of a new reading in the mean and variance.
    pub alpha: f64,
    /// Share of the record forgotten per reading.
    pub decay: f64,
    /// Most a single reading can multiply the record by.
    pub cap: f64,
}

impl Residual {
    /// The forecast: the exponentially weighted mean.
    pub fn forecast(&self) -> f64 {
        self.mean
    }

    /// The novelty of `x` (0 until the record exists), then `x` joins the forecast. `floor` is the
    /// smallest standard deviation to divide by; `judged` says whether the reading is past the
    /// detector's warm-up (before it, the record follows every residual uncapped).
    pub fn observe(&mut self, x: f64, floor: f64, judged: bool, params: ResidualParams) -> f64 {
        if self.seen == 0 {
            self.mean = x;
        }
        let residual = (x - self.mean).abs() / float::max(self.variance.sqrt(), floor);
        let novelty = residual / float::max(self.record, MIN_RECORD);
        if self.seen >= RECORD_AFTER {
            let limit = if judged { params.cap * float::max(self.record, MIN_RECORD) } else { residual };
            self.record = float::max(self.record * (1.0 - params.decay), float::min(residual, limit));
        }
        let delta = x - self.mean;
        self.mean += params.alpha * delta;
        self.variance = (1.0 - params.alpha) * (self.variance + params.alpha * delta * delta);
        self.seen += 1;
        if judged { novelty } else { 0.0 }
    }
}

/// The evidence that a sensor is stuck: how improbable its current run of identical values is,
/// given how often it repeated a value before, against the bar of the runs it had before.
///
/// A run alarms once, on the reading whose evidence passes the bar (the larger of the
/// configured minimum and the record of earlier runs); its later readings add nothing, so a stuck
/// sensor is one alarm, not one per reading. An ended run raises the record to at most `cap`
/// times the bar, as residuals do: a sensor whose flat stretches are its normal stops alarming
/// for them, and one stuck episode does not hide the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flat {
    previous: Option<f64>,
    run: u32,
    evidence: f64,
    alarmed: bool,
    record: f64,
    repeats: u64,
    readings: u64,
}

impl Flat {
    /// The evidence of the run `x` continues over the bar (0 if `x` ends a run, or its run has
    /// alarmed already), then counts `x`. With `p` the sensor's share of repeated values (Laplace's
    /// rule: (repeats + 1) / (n + 2)), each repeat adds `-ln p` (a run of `k` has probability
    /// `p^k`). `min_bar` is the smallest bar in nats; `params` the record's decay and cap.
    pub fn observe(&mut self, x: f64, min_bar: f64, params: ResidualParams) -> f64 {
        let repeated = self.previous == Some(x);
        let bar = float::max(self.record, min_bar);
        if repeated {
            let p = (self.repeats as f64 + 1.0) / (self.readings as f64 + 2.0);
            self.run = self.run.saturating_add(1);
            self.evidence += -p.ln();
        } else {
            if self.run > 0 {
                self.record = float::max(self.record, float::min(self.evidence, params.cap * bar));
            }
            (self.run, self.evidence, self.alarmed) = (0, 0.0, false);
        }
        let ratio = if self.alarmed { 0.0 } else { self.evidence / bar };
        self.alarmed |= ratio > 1.0;
        self.record *= 1.0 - params.decay;
        self.repeats += u64::from(repeated);
        self.readings += u64::from(self.previous.is_some());
        self.previous = Some(x);
        ratio
    }
}

/// Intervals the period is estimated from: enough for a median that ignores a few gaps.
const INTERVALS: usize = 15;

/// The number of readings in one season (`season_ms` of event time), estimated from the median of
/// the first intervals between readings; `None` until then, or when it is not between 2 and
/// `max_period`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Period {
    last_ms: Option<i64>,
    intervals: Vec<i64>,
    /// The estimate, once made.
    pub readings: Option<usize>,
    decided: bool,
}

impl Period {
    /// Counts a reading at `timestamp_ms`.
    pub fn observe(&mut self, timestamp_ms: i64, season_ms: i64, max_period: usize) {
        if self.decided {
            return;
        }
        if let Some(last) = self.last_ms {
            let step = timestamp_ms.saturating_sub(last);
            if step > 0 {
                self.intervals.push(step);
            }
        }
        self.last_ms = Some(timestamp_ms);
        if self.intervals.len() >= INTERVALS {
            self.intervals.sort_unstable();
            let median = self.intervals[INTERVALS / 2];
            let readings = (season_ms as f64 / median as f64).round();
            self.readings = (readings >= 2.0 && readings <= max_period as f64).then_some(readings as usize);
            self.decided = true;
            self.intervals = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: ResidualParams = ResidualParams { alpha: 0.5, decay: 0.0, cap: 2.0 };

    #[test]
    fn residual_novelty_is_the_residual_over_its_record_and_a_break_raises_it_at_most_cap_times() {
        let mut r = Residual::default();
        // Alternating 0, 2: with alpha 0.5 the mean and variance follow a fixed cycle; the record
        // settles at the largest normalised residual of the cycle.
        for i in 0..40 {
            r.observe(if i % 2 == 0 { 0.0 } else { 2.0 }, 1e-9, false, PARAMS);
        }
        let (mean, std, record) = (r.mean, r.variance.sqrt(), r.record);
        let novelty = r.observe(10.0, 1e-9, true, PARAMS);
        assert!((novelty - (10.0 - mean) / std / record).abs() < 1e-12, "{novelty}");
        assert!(novelty > 2.0, "a far value is novel: {novelty}");
        // The record grew by the cap, not to the outlier's residual.
        assert!((r.record - 2.0 * record).abs() < 1e-12);
    }

    #[test]
    fn a_run_alarms_once_when_rarer_than_the_bar_and_raises_the_bar_for_the_next() {
        let mut f = Flat::default();
        let params = ResidualParams { alpha: 0.5, decay: 0.0, cap: 2.0 };
        // 98 distinct values: 97 intervals, no repeat.
        for i in 0..98 {
            assert_eq!(f.observe(f64::from(i), 8.0, params), 0.0);
        }
        // Repeat 1: p = 1/99; repeat 2: p = 2/100. Bar 8 nats: ln 99 = 4.60, + ln 50 = 8.51 > 8.
        let first = 99_f64.ln() / 8.0;
        assert!((f.observe(97.0, 8.0, params) - first).abs() < 1e-12);
        let second = (99_f64.ln() + 50_f64.ln()) / 8.0;
        assert!((f.observe(97.0, 8.0, params) - second).abs() < 1e-12 && second > 1.0);
        // The run has alarmed: its later readings add nothing.
        assert_eq!(f.observe(97.0, 8.0, params), 0.0);
        // The run ends; its evidence (ln 99 + ln 50 + ln(101/3) = 12.02, under twice the bar)
        // becomes the record, and the next run is judged against it.
        assert_eq!(f.observe(1.0, 8.0, params), 0.0);
        let record = 99_f64.ln() + 50_f64.ln() + (101.0_f64 / 3.0).ln();
        assert!((f.record - record).abs() < 1e-12);
        let p = 4.0 / 103.0_f64; // 3 repeats in 101 intervals
        assert!((f.observe(1.0, 8.0, params) - -p.ln() / record).abs() < 1e-12);
        // A run far longer than twice the bar raises the record to twice the bar only.
        for _ in 0..40 {
            f.observe(1.0, 8.0, params);
        }
        f.observe(2.0, 8.0, params);
        assert!((f.record - 2.0 * record).abs() < 1e-12);
    }

    #[test]
    fn the_period_is_the_season_over_the_median_interval() {
        let mut p = Period::default();
        // 5-minute readings, one gap of an hour: a day is 288 readings.
        let mut t = 0;
        for i in 0..16 {
            t += if i == 7 { 3_600_000 } else { 300_000 };
            p.observe(t, 86_400_000, 2048);
        }
        assert_eq!(p.readings, Some(288));
        let mut fast = Period::default();
        for i in 0..16 {
            fast.observe(i * 250, 86_400_000, 2048);
        }
        assert_eq!(fast.readings, None, "345600 readings a day is past max_period");
    }
}
