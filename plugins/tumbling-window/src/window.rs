//! Event-time tumbling windows per (location, sensor type).
//!
//! A reading belongs to the window `[start, start + window)` that contains its own timestamp. The
//! **watermark** is the highest event time seen so far minus the allowed lateness; a window is
//! emitted once, when the watermark reaches its end. A reading whose window already ended by the
//! watermark (or was closed for idleness) is **late**: it is counted, not aggregated (the host still
//! stores it raw). A window that received nothing for `idle_timeout_ms` of processing time (measured
//! by the host's ticks) is closed too, so a key that goes quiet does not hold its last window forever.
//!
//! Lateness is judged reading by reading against the watermark as it stood before that reading, so
//! the windows that come out do not depend on how the stream was cut into batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use iotstream_plugin_sdk::SensorType;
use serde::{Deserialize, Serialize};

/// Configuration of the tumbling-window stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length in milliseconds. Default 60 000: the seed's 1-minute windows.
    pub window_ms: i64,
    /// How far behind the newest event time a reading may be and still count. Default 10 000: covers
    /// the clock skew and Kafka partition interleaving of a healthy fleet without holding windows long.
    pub allowed_lateness_ms: i64,
    /// Processing time after which a window that received nothing is closed. Default 300 000
    /// (5 minutes): long enough that a live stream always closes windows by watermark first.
    pub idle_timeout_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { window_ms: 60_000, allowed_lateness_ms: 10_000, idle_timeout_ms: 300_000 }
    }
}

impl WindowConfig {
    /// Checks the values, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_ms <= 0 {
            return Err(format!("window_ms must be positive, got {}", self.window_ms));
        }
        if self.allowed_lateness_ms < 0 {
            return Err(format!("allowed_lateness_ms must not be negative, got {}", self.allowed_lateness_ms));
        }
        if self.idle_timeout_ms <= 0 {
            return Err(format!("idle_timeout_ms must be positive, got {}", self.idle_timeout_ms));
        }
        Ok(())
    }
}

/// One emitted window.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Inclusive start, ms since the epoch.
    pub window_start_ms: i64,
    /// Exclusive end, ms since the epoch.
    pub window_end_ms: i64,
    /// Location of the readings.
    pub location: Arc<str>,
    /// Sensor type of the readings.
    pub sensor_type: SensorType,
    /// Number of readings.
    pub count: u32,
    /// Mean value.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Readings a detector flagged.
    pub anomaly_count: u32,
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Added to its open window.
    Added,
    /// Its window had already closed: counted as late, not aggregated.
    Late,
}

/// Running statistics of one open window (Welford's algorithm: stable for values far from zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Accumulator {
    count: u32,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    anomalies: u32,
    /// Processing time of the last reading added, when a tick had told the time by then.
    touched_ms: Option<i64>,
}

impl Accumulator {
    fn new(touched_ms: Option<i64>) -> Self {
        Accumulator {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            anomalies: 0,
            touched_ms,
        }
    }

    fn add(&mut self, value: f64, flagged: bool) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / f64::from(self.count);
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.anomalies += u32::from(flagged);
    }
}

/// The open windows of one (location, sensor type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    /// Open windows by start time.
    open: BTreeMap<i64, Accumulator>,
    /// Every window ending at or before this was emitted (by idleness); readings for them are late.
    closed_until_ms: Option<i64>,
}

/// The complete state of the stage; this is what `export-state` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    groups: BTreeMap<(Arc<str>, SensorType), Group>,
    max_event_ms: Option<i64>,
    clock_ms: Option<i64>,
    late_readings: u64,
}

/// The tumbling-window operator.
#[derive(Debug, Clone)]
pub struct TumblingWindows {
    config: WindowConfig,
    state: WindowState,
}

impl TumblingWindows {
    /// A stage with no open window.
    pub fn new(config: WindowConfig) -> Self {
        TumblingWindows { config, state: WindowState::default() }
    }

    /// The watermark: highest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> Option<i64> {
        self.state.max_event_ms.map(|max| max.saturating_sub(self.config.allowed_lateness_ms))
    }

    /// Readings counted late so far.
    pub fn late_readings(&self) -> u64 {
        self.state.late_readings
    }

    /// The state, for export.
    pub fn state(&self) -> &WindowState {
        &self.state
    }

    /// Replaces the state (after an import).
    pub fn restore(&mut self, state: WindowState) {
        self.state = state;
    }

    /// Adds one reading to its window, or counts it late.
    pub fn add(&mut self, location: &Arc<str>, sensor_type: SensorType, timestamp_ms: i64, value: f64, flagged: bool) -> Admission {
        let start = timestamp_ms.div_euclid(self.config.window_ms) * self.config.window_ms;
        let end = start.saturating_add(self.config.window_ms);
        let watermark = self.watermark();
        let group = self.state.groups.entry((location.clone(), sensor_type)).or_default();
        let closed = watermark.is_some_and(|w| end <= w) || group.closed_until_ms.is_some_and(|c| end <= c);
        self.state.max_event_ms = Some(self.state.max_event_ms.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
        if closed {
            self.state.late_readings += 1;
            return Admission::Late;
        }
        let clock = self.state.clock_ms;
        let window = group.open.entry(start).or_insert_with(|| Accumulator::new(clock));
        window.add(value, flagged);
        window.touched_ms = clock.or(window.touched_ms);
        Admission::Added
    }

    /// Emits every window whose end the watermark has reached, in (start, location, type) order.
    pub fn close_ready(&mut self) -> Vec<Aggregate> {
        let Some(watermark) = self.watermark() else { return Vec::new() };
        let window_ms = self.config.window_ms;
        self.close_where(|start, _| start.saturating_add(window_ms) <= watermark)
    }

    /// Advances processing time to `now_ms` and emits the windows idle for the idle timeout.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Aggregate> {
        self.state.clock_ms = Some(self.state.clock_ms.map_or(now_ms, |c| c.max(now_ms)));
        let idle = self.config.idle_timeout_ms;
        for window in self.state.groups.values_mut().flat_map(|g| g.open.values_mut()) {
            window.touched_ms.get_or_insert(now_ms);
        }
        self.close_where(|_, window| window.touched_ms.is_some_and(|t| now_ms.saturating_sub(t) >= idle))
    }

    /// Emits (and removes) every open window `ready` selects, plus, per group, every older window, so
    /// that no open window ever lies below a group's `closed_until_ms`.
    fn close_where(&mut self, ready: impl Fn(i64, &Accumulator) -> bool) -> Vec<Aggregate> {
        let window_ms = self.config.window_ms;
        let mut emitted = Vec::new();
        for ((location, sensor_type), group) in &mut self.state.groups {
            let Some(last_ready) = group.open.iter().filter(|(start, w)| ready(**start, w)).map(|(start, _)| *start).max()
            else {
                continue;
            };
            let still_open = group.open.split_off(&(last_ready + 1));
            let closing = std::mem::replace(&mut group.open, still_open);
            let end = last_ready.saturating_add(window_ms);
            group.closed_until_ms = Some(group.closed_until_ms.map_or(end, |c| c.max(end)));
            emitted.extend(closing.into_iter().map(|(start, w)| Aggregate {
                window_start_ms: start,
                window_end_ms: start.saturating_add(window_ms),
                location: location.clone(),
                sensor_type: *sensor_type,
                count: w.count,
                avg: w.mean,
                min: w.min,
                max: w.max,
                stddev: (w.m2.max(0.0) / f64::from(w.count)).sqrt(),
                anomaly_count: w.anomalies,
            }));
        }
        self.state.groups.retain(|_, group| !group.open.is_empty() || group.closed_until_ms.is_some());
        emitted.sort_by(|a, b| {
            (a.window_start_ms, &a.location, a.sensor_type).cmp(&(b.window_start_ms, &b.location, b.sensor_type))
        });
        emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn office() -> Arc<str> {
        "office_1".into()
    }

    #[test]
    fn one_window_matches_hand_computed_statistics() {
        let mut w = TumblingWindows::new(WindowConfig::default());
        // 20, 22, 24, 26 in minute 0: mean 23, population variance (9+1+1+9)/4 = 5.
        for (i, v) in [20.0, 22.0, 24.0, 26.0].into_iter().enumerate() {
            assert_eq!(w.add(&office(), SensorType::Temperature, i as i64 * 1000, v, i == 3), Admission::Added);
        }
        assert!(w.close_ready().is_empty(), "watermark 3s - 10s has not reached the window end");
        // A reading at 1:10 moves the watermark to exactly 1:00, the end of minute 0.
        w.add(&office(), SensorType::Temperature, MIN + 10_000, 30.0, false);
        let out = w.close_ready();
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!((a.window_start_ms, a.window_end_ms, a.count, a.anomaly_count), (0, MIN, 4, 1));
        assert_eq!((a.avg, a.min, a.max), (23.0, 20.0, 26.0));
        assert!((a.stddev - 5.0_f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn groups_are_separate_and_output_is_ordered() {
        let mut w = TumblingWindows::new(WindowConfig { allowed_lateness_ms: 0, ..WindowConfig::default() });
        let lab: Arc<str> = "lab_1".into();
        w.add(&office(), SensorType::Co2, 5, 400.0, false);
        w.add(&lab, SensorType::Co2, 6, 500.0, false);
        w.add(&lab, SensorType::Humidity, 7, 40.0, false);
        w.add(&lab, SensorType::Humidity, MIN + 1, 41.0, false);
        w.add(&office(), SensorType::Co2, 2 * MIN, 410.0, false);
        let out = w.close_ready();
        let keys: Vec<_> = out.iter().map(|a| (a.window_start_ms, a.location.to_string(), a.sensor_type, a.count)).collect();
        assert_eq!(
            keys,
            vec![
                (0, "lab_1".into(), SensorType::Humidity, 1),
                (0, "lab_1".into(), SensorType::Co2, 1),
                (0, "office_1".into(), SensorType::Co2, 1),
                (MIN, "lab_1".into(), SensorType::Humidity, 1),
            ]
        );
    }

    #[test]
    fn late_readings_are_counted_not_aggregated() {
        let mut w = TumblingWindows::new(WindowConfig::default());
        w.add(&office(), SensorType::Pressure, 1_000, 1000.0, false);
        w.add(&office(), SensorType::Pressure, MIN + 10_000, 1001.0, false);
        assert_eq!(w.close_ready().len(), 1);
        assert_eq!(w.add(&office(), SensorType::Pressure, 59_999, 5.0, false), Admission::Late);
        // Within the allowed lateness for minute 1: still counted.
        assert_eq!(w.add(&office(), SensorType::Pressure, MIN + 1, 1003.0, false), Admission::Added);
        assert_eq!(w.late_readings(), 1);
    }

    #[test]
    fn idle_windows_close_on_tick_and_later_readings_for_them_are_late() {
        let config = WindowConfig { idle_timeout_ms: 30_000, ..WindowConfig::default() };
        let mut w = TumblingWindows::new(config);
        assert!(w.tick(1_000_000).is_empty());
        w.add(&office(), SensorType::Humidity, 0, 50.0, false);
        assert!(w.tick(1_029_999).is_empty());
        let out = w.tick(1_030_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 1);
        assert_eq!(w.add(&office(), SensorType::Humidity, 1, 51.0, false), Admission::Late);
    }

    #[test]
    fn batch_boundaries_do_not_change_results() {
        let stream: Vec<(i64, f64)> = (0..500).map(|i| ((i * 7919) % 300_000, f64::from(i as i32 % 17))).collect();
        let run = |cut: usize| {
            let mut w = TumblingWindows::new(WindowConfig::default());
            let mut out = Vec::new();
            for chunk in stream.chunks(cut) {
                for (ts, v) in chunk {
                    w.add(&office(), SensorType::Co2, *ts, *v, false);
                }
                out.extend(w.close_ready());
            }
            (out, w.late_readings())
        };
        assert_eq!(run(1), run(500));
        assert_eq!(run(7), run(500));
    }
}
