//! An aggregator whose every batch closes one window: the batch's first reading's location and
//! type, from its earliest reading to just after its latest, with the batch's statistics and the
//! number of the call as its revision (so no two calls emit one key). Its state is the number of
//! readings it has seen. After `after_calls` aggregate calls it misbehaves as `mode` says.

use std::sync::Arc;

use iotstream_plugin_sdk::aggregator::{Aggregator, WindowAggregate};
use iotstream_plugin_sdk::{ResolvedBatch, SensorIdentity};
use serde::Deserialize;

/// How the aggregator breaks the contract once it stops behaving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Never misbehaves.
    #[default]
    Behave,
    /// The window's location is [`LONG_LOCATION_CHARS`] characters: longer than the column.
    LongLocation,
    /// The window's location holds a NUL character, which PostgreSQL text cannot store.
    NulLocation,
    /// The window starts in the year 300 000, past what PostgreSQL's `timestamptz` holds.
    FarTime,
    /// The window twice: one key twice in one answer.
    Duplicate,
    /// Sleeps for [`SLEEP`] in `aggregate`, then answers as it would have.
    Sleep,
    /// Sleeps for [`SLEEP`] in `tick` (which always answers nothing).
    SleepInTick,
}

/// How long the sleeping modes sleep: far past any call deadline the host would set.
pub const SLEEP: std::time::Duration = std::time::Duration::from_secs(60);
/// Characters of the `long_location` mode's location: one past the host's limit of 100.
pub const LONG_LOCATION_CHARS: usize = 101;
/// The `far_time` mode's window start: about the year 300 000.
pub const FAR_START_MS: i64 = 9_400_000_000_000_000;

/// Configuration: `{"mode": "duplicate", "after_calls": 1}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowsConfig {
    /// What to do once misbehaving. Default `behave`.
    pub mode: Mode,
    /// Aggregate calls answered correctly before misbehaving. Default 0: from the first call.
    pub after_calls: u32,
}

/// The aggregator: its configuration, the calls this instance answered, the readings seen.
#[derive(Debug)]
pub struct MisbehavingWindows {
    config: WindowsConfig,
    calls: u32,
    seen: u64,
}

impl MisbehavingWindows {
    fn misbehaving(&self) -> bool {
        self.calls > self.config.after_calls
    }
}

/// The window a behaving call closes over `readings`; `None` for an empty batch.
pub fn windows(readings: ResolvedBatch<'_>, revision: u32) -> Option<WindowAggregate> {
    let readings: Vec<_> = readings.iter_flagged().collect();
    let (first, _, _, _) = readings.first()?;
    let values: Vec<f64> = readings.iter().map(|r| r.2).collect();
    let n = values.len() as f64;
    let avg = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - avg) * (v - avg)).sum::<f64>() / n;
    Some(WindowAggregate {
        window_start_ms: readings.iter().map(|r| r.1).min()?,
        window_end_ms: readings.iter().map(|r| r.1).max()? + 1,
        location: Arc::clone(&first.location),
        sensor_type: first.sensor_type,
        count: u32::try_from(readings.len()).unwrap_or(u32::MAX),
        avg,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        stddev: variance.sqrt(),
        anomaly_count: u32::try_from(readings.iter().filter(|r| r.3).count()).unwrap_or(u32::MAX),
        revision,
        late_count: 0,
    })
}

impl Aggregator for MisbehavingWindows {
    type Config = WindowsConfig;
    type State = u64;
    const STATE_VERSION: u32 = 1;

    fn create(config: WindowsConfig) -> Result<Self, String> {
        Ok(MisbehavingWindows { config, calls: 0, seen: 0 })
    }

    fn add(&mut self, _: &SensorIdentity, _: i64, _: f64, _: bool) {
        self.seen += 1;
    }

    fn close_ready(&mut self) -> Vec<WindowAggregate> {
        Vec::new()
    }

    fn aggregate_batch(&mut self, readings: ResolvedBatch<'_>) -> Result<Vec<WindowAggregate>, String> {
        self.calls += 1;
        self.seen += readings.len() as u64;
        let Some(mut window) = windows(readings, self.calls) else { return Ok(Vec::new()) };
        if !self.misbehaving() {
            return Ok(vec![window]);
        }
        match self.config.mode {
            Mode::Behave | Mode::SleepInTick => {}
            Mode::LongLocation => window.location = "x".repeat(LONG_LOCATION_CHARS).into(),
            Mode::NulLocation => window.location = "lab\0".into(),
            Mode::FarTime => {
                window.window_end_ms = FAR_START_MS + (window.window_end_ms - window.window_start_ms);
                window.window_start_ms = FAR_START_MS;
            }
            Mode::Duplicate => return Ok(vec![window.clone(), window]),
            Mode::Sleep => std::thread::sleep(SLEEP),
        }
        Ok(vec![window])
    }

    fn tick(&mut self, _now_ms: i64) -> Vec<WindowAggregate> {
        if self.config.mode == Mode::SleepInTick && self.misbehaving() {
            std::thread::sleep(SLEEP);
        }
        Vec::new()
    }

    fn state(&self) -> &u64 {
        &self.seen
    }

    fn restore(&mut self, state: u64) {
        self.seen = state;
    }
}

#[cfg(test)]
mod tests {
    use iotstream_plugin_sdk::{Batch, Catalog, SensorType};

    use super::*;

    fn aggregator(mode: Mode, after_calls: u32) -> MisbehavingWindows {
        MisbehavingWindows::create(WindowsConfig { mode, after_calls }).expect("created")
    }

    /// One call of `a` over `rows` of `(timestamp ms, value, flagged)`, all of one sensor.
    fn aggregated(a: &mut MisbehavingWindows, rows: &[(i64, f64, bool)]) -> Vec<WindowAggregate> {
        let mut catalog = Catalog::default();
        catalog.declare(
            0,
            SensorIdentity { sensor_id: "s1".into(), sensor_type: SensorType::Co2, location: "lab_1".into() },
        );
        let batch: Batch = rows.iter().map(|&(at, value, flagged)| (0, at, value, flagged)).collect();
        let readings = ResolvedBatch::new(&catalog, &batch).expect("declared");
        a.aggregate_batch(readings).expect("answers")
    }

    #[test]
    fn a_behaving_call_closes_one_window_over_the_batch() {
        let mut a = aggregator(Mode::Duplicate, 1);
        let out = aggregated(&mut a, &[(1_000, 2.0, false), (3_000, 4.0, true)]);
        // Mean 3, population variance ((2-3)² + (4-3)²) / 2 = 1.
        let w = &out[..];
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].window_start_ms, w[0].window_end_ms, w[0].count, w[0].revision), (1_000, 3_001, 2, 1));
        assert_eq!((w[0].avg, w[0].min, w[0].max, w[0].stddev, w[0].anomaly_count), (3.0, 2.0, 4.0, 1.0, 1));
        assert_eq!(&*w[0].location, "lab_1");
        assert_eq!(a.state(), &2);
        let twice = aggregated(&mut a, &[(5_000, 1.0, false)]);
        assert_eq!((twice.len(), twice[0] == twice[1], twice[0].revision), (2, true, 2));
    }

    #[test]
    fn the_bad_modes_answer_what_the_host_must_refuse() {
        let batch = [(1_000, 2.0, false)];
        let long = aggregated(&mut aggregator(Mode::LongLocation, 0), &batch);
        assert_eq!(long[0].location.chars().count(), LONG_LOCATION_CHARS);
        let nul = aggregated(&mut aggregator(Mode::NulLocation, 0), &batch);
        assert!(nul[0].location.contains('\0'));
        let far = aggregated(&mut aggregator(Mode::FarTime, 0), &batch);
        assert_eq!((far[0].window_start_ms, far[0].window_end_ms), (FAR_START_MS, FAR_START_MS + 1));
    }
}
