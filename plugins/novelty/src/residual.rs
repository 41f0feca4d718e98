//! The building blocks of the novelty detector, each O(1) per reading: a residual against an
//! exponentially weighted forecast, normalised by its own record ([`Residual`]); the evidence of a
//! stuck sensor ([`Flat`]); and the number of readings in one season ([`Period`]).

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
    /// The novelty of `x` (0 until the record exists), then `x` joins the forecast. `floor` is the
    /// smallest standard deviation to divide by; `judged` says whether the reading is past the
    /// detector's warm-up (before it, the record follows every residual uncapped).
    pub fn observe(&mut self, x: f64, floor: f64, judged: bool, params: ResidualParams) -> f64 {
        if self.seen == 0 {
            self.mean = x;
        }
        let residual = (x - self.mean).abs() / self.variance.sqrt().max(floor);
        let novelty = residual / self.record.max(MIN_RECORD);
        if self.seen >= RECORD_AFTER {
            let limit = if judged { params.cap * self.record.max(MIN_RECORD) } else { residual };
            self.record = (self.record * (1.0 - params.decay)).max(residual.min(limit));
        }
        let delta = x - self.mean;
        self.mean += params.alpha * delta;
        self.variance = (1.0 - params.alpha) * (self.variance + params.alpha * delta * delta);
        self.seen += 1;
        if judged { novelty } else { 0.0 }
    }
}

/// The evidence that a sensor is stuck: how improbable its current run of identical values is,
/// given how often it repeated a value before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flat {
    previous: Option<f64>,
    run: u32,
    repeats: u64,
    readings: u64,
}

impl Flat {
    /// `-ln P(run)` of the run `x` ends (0 if `x` differs from the previous value), then counts `x`.
    /// With `p` the sensor's share of repeated values (Laplace's rule: (repeats + 1) / (n + 2)), a
    /// run of `k` repeats has probability `p^k`.
    pub fn observe(&mut self, x: f64) -> f64 {
        let repeated = self.previous == Some(x);
        self.run = if repeated { self.run.saturating_add(1) } else { 0 };
        let p = (self.repeats as f64 + 1.0) / (self.readings as f64 + 2.0);
        let evidence = f64::from(self.run) * -p.ln();
        self.repeats += u64::from(repeated);
        self.readings += u64::from(self.previous.is_some());
        self.previous = Some(x);
        evidence
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
    fn a_run_of_repeats_is_as_improbable_as_the_sensor_rarely_repeats() {
        let mut f = Flat::default();
        // 98 distinct values: 97 intervals, no repeat; p = 1 / 99.
        for i in 0..98 {
            assert_eq!(f.observe(f64::from(i)), 0.0);
        }
        let p: f64 = 1.0 / 99.0;
        assert!((f.observe(97.0) - -p.ln()).abs() < 1e-12);
        // Second repeat: p = 2 / 100, run 2.
        let p2: f64 = 2.0 / 100.0;
        assert!((f.observe(97.0) - 2.0 * -p2.ln()).abs() < 1e-12);
        assert_eq!(f.observe(1.0), 0.0);
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
