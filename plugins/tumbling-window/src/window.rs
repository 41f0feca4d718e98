//! Event-time tumbling windows per (location, sensor type), with revisions for late readings.
//!
//! A reading belongs to the window `[start, start + window)` that contains its own timestamp. The
//! **watermark** is the highest event time seen so far minus the allowed lateness; a window is
//! emitted once, when the watermark reaches its end, as revision 0. A window that received nothing
//! for `idle_timeout_ms` of processing time (measured by the host's ticks) is closed too, so a key
//! that goes quiet does not hold its last window forever.
//!
//! A reading whose window has already closed is **late**. Late data is never silently dropped:
//! the host stores every reading raw, and a late reading whose window closed less than
//! `revision_horizon_ms` of event time ago updates that window, which is emitted again, as the next
//! revision, at the end of the batch (its `late_count` says how many late readings it took in). Only
//! a reading later than the horizon is left out of the aggregates; it is counted
//! ([`TumblingWindows::late_beyond_horizon`]) and, like every reading, stored raw.
//!
//! Lateness is judged reading by reading against the watermark as it stood before that reading, so
//! the windows that come out do not depend on how the stream was cut into batches.

use std::collections::BTreeMap;
use std::sync::Arc;

use iotstream_plugin_sdk::aggregator::WindowAggregate;
use iotstream_plugin_sdk::{CatalogMap, CatalogName, SensorType, float};
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
    /// How long (event time, past the watermark) a closed window still takes late readings as
    /// revisions. Default 3 600 000 (1 hour): a sensor that reconnects after an hour's outage still
    /// lands in its windows; 25 groups keep 60 closed windows each.
    pub revision_horizon_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_ms: 60_000,
            allowed_lateness_ms: 10_000,
            idle_timeout_ms: 300_000,
            revision_horizon_ms: 3_600_000,
        }
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
        if self.revision_horizon_ms < 0 {
            return Err(format!("revision_horizon_ms must not be negative, got {}", self.revision_horizon_ms));
        }
        Ok(())
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Added to its open window.
    Added,
    /// Its window had closed: added to it, to be emitted again as a revision.
    Revised,
    /// Its window closed longer than the revision horizon ago: counted, not aggregated.
    BeyondHorizon,
}

/// Running statistics of one window (Welford's algorithm: stable for values far from zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Accumulator {
    count: u32,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    anomalies: u32,
    /// Readings that arrived after the watermark had passed the window's end.
    late: u32,
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
            late: 0,
            touched_ms,
        }
    }

    fn add(&mut self, value: f64, flagged: bool) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / f64::from(self.count);
        self.m2 += delta * (value - self.mean);
        self.min = float::min(self.min, value);
        self.max = float::max(self.max, value);
        self.anomalies += u32::from(flagged);
    }
}

/// A window that has closed, kept for revisions until the horizon passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Closed {
    stats: Accumulator,
    /// How many times it was emitted (the next emission's revision).
    emitted: u32,
    /// Changed since its last emission.
    dirty: bool,
}

/// The windows of one (location, sensor type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    /// Open windows by start time.
    open: BTreeMap<i64, Accumulator>,
    /// Closed windows within the revision horizon, by start time.
    closed: BTreeMap<i64, Closed>,
    /// Every window ending at or before this was closed by idleness; readings for them are late.
    closed_until_ms: Option<i64>,
}

/// The complete state of the stage; this is what `export-state` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    groups: CatalogMap<(CatalogName, SensorType), Group>,
    max_event_ms: Option<i64>,
    clock_ms: Option<i64>,
    late_beyond_horizon: u64,
}

/// The tumbling-window operator.
#[derive(Debug, Clone)]
pub struct TumblingWindows {
    config: WindowConfig,
    state: WindowState,
    /// Whether a closed window may have been revised since the last emission (a late reading
    /// within the horizon, or a state just restored). Only then are all the groups' closed windows
    /// searched for revised ones: otherwise the only windows to emit are those closing now, and a
    /// call's emission costs what it emits, not the hour of closed windows every group keeps.
    revised: bool,
}

impl TumblingWindows {
    /// A stage with no window.
    pub fn new(config: WindowConfig) -> Self {
        TumblingWindows { config, state: WindowState::default(), revised: false }
    }

    /// The watermark: highest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> Option<i64> {
        self.state.max_event_ms.map(|max| max.saturating_sub(self.config.allowed_lateness_ms))
    }

    /// Late readings left out of the aggregates because their window was beyond the horizon.
    pub fn late_beyond_horizon(&self) -> u64 {
        self.state.late_beyond_horizon
    }

    /// The state, for export.
    pub fn state(&self) -> &WindowState {
        &self.state
    }

    /// Replaces the state (after an import).
    pub fn restore(&mut self, state: WindowState) {
        self.state = state;
        self.revised = true;
    }

    /// Adds one reading to its window: open, or closed within the horizon (a revision).
    pub fn add(
        &mut self,
        location: &Arc<str>,
        sensor_type: SensorType,
        timestamp_ms: i64,
        value: f64,
        flagged: bool,
    ) -> Admission {
        let start = timestamp_ms.div_euclid(self.config.window_ms) * self.config.window_ms;
        let end = start.saturating_add(self.config.window_ms);
        let watermark = self.watermark();
        let horizon = self.config.revision_horizon_ms;
        self.state.max_event_ms = Some(self.state.max_event_ms.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
        let clock = self.state.clock_ms;
        let group = self.state.groups.entry((CatalogName::from(location), sensor_type)).or_default();
        let closed = watermark.is_some_and(|w| end <= w) || group.closed_until_ms.is_some_and(|c| end <= c);
        if !closed {
            let window = group.open.entry(start).or_insert_with(|| Accumulator::new(clock));
            window.add(value, flagged);
            window.touched_ms = clock.or(window.touched_ms);
            return Admission::Added;
        }
        if watermark.is_some_and(|w| end.saturating_add(horizon) <= w) {
            self.state.late_beyond_horizon += 1;
            return Admission::BeyondHorizon;
        }
        let stats = match group.open.get_mut(&start) {
            // Late, but its window has not been emitted yet (it closes at the end of this batch).
            Some(open) => open,
            None => {
                // A window that closed empty is created closed: its first emission is revision 0.
                let window = group.closed.entry(start).or_insert_with(|| Closed {
                    stats: Accumulator::new(clock),
                    emitted: 0,
                    dirty: false,
                });
                window.dirty = true;
                self.revised = true;
                &mut window.stats
            }
        };
        stats.add(value, flagged);
        stats.late += 1;
        Admission::Revised
    }

    /// Emits every window whose end the watermark has reached, and every revised window, in
    /// (start, location, type, revision) order; forgets closed windows past the revision horizon.
    pub fn close_ready(&mut self) -> Vec<WindowAggregate> {
        let Some(watermark) = self.watermark() else { return Vec::new() };
        let window_ms = self.config.window_ms;
        self.close_where(|start, _| start.saturating_add(window_ms) <= watermark)
    }

    /// Advances processing time to `now_ms` and emits the windows idle for the idle timeout.
    pub fn tick(&mut self, now_ms: i64) -> Vec<WindowAggregate> {
        self.state.clock_ms = Some(self.state.clock_ms.map_or(now_ms, |c| c.max(now_ms)));
        let idle = self.config.idle_timeout_ms;
        for window in self.state.groups.values_mut().flat_map(|g| g.open.values_mut()) {
            window.touched_ms.get_or_insert(now_ms);
        }
        self.close_where(|_, window| window.touched_ms.is_some_and(|t| now_ms.saturating_sub(t) >= idle))
    }

    /// Closes (emits, and keeps for revisions) every open window `ready` selects, plus, per group,
    /// every older open window, so that no open window lies below a group's `closed_until_ms`;
    /// emits the revised windows; drops closed windows past the horizon.
    fn close_where(&mut self, ready: impl Fn(i64, &Accumulator) -> bool) -> Vec<WindowAggregate> {
        let window_ms = self.config.window_ms;
        let forget_before = self.watermark().map(|w| w.saturating_sub(self.config.revision_horizon_ms));
        let revised = std::mem::take(&mut self.revised);
        let mut emitted = Vec::new();
        for ((location, sensor_type), group) in &mut self.state.groups {
            let last_ready = group.open.iter().filter(|(start, w)| ready(**start, w)).map(|(start, _)| *start).max();
            // Where a window to emit may be: anywhere after a revision, else among those closing now.
            let mut emit_from = if revised { Some(i64::MIN) } else { None };
            if let Some(last_ready) = last_ready {
                let still_open = group.open.split_off(&(last_ready + 1));
                let closing = std::mem::replace(&mut group.open, still_open);
                let end = last_ready.saturating_add(window_ms);
                group.closed_until_ms = Some(group.closed_until_ms.map_or(end, |c| c.max(end)));
                if let Some(&first) = closing.keys().next() {
                    emit_from = Some(emit_from.map_or(first, |from| from.min(first)));
                }
                for (start, stats) in closing {
                    group.closed.insert(start, Closed { stats, emitted: 0, dirty: true });
                }
            }
            if let Some(from) = emit_from {
                for (start, window) in group.closed.range_mut(from..).filter(|(_, w)| w.dirty) {
                    emitted.push(aggregate(*start, window_ms, location.as_shared(), *sensor_type, window));
                    window.emitted += 1;
                    window.dirty = false;
                }
            }
            // Closed windows are kept by start, so those past the horizon are the first ones.
            while let Some(oldest) = group.closed.first_entry() {
                match forget_before {
                    Some(before) if oldest.key().saturating_add(window_ms) <= before => oldest.remove(),
                    _ => break,
                };
            }
        }
        self.state
            .groups
            .retain(|_, group| !group.open.is_empty() || !group.closed.is_empty() || group.closed_until_ms.is_some());
        emitted.sort_by(|a, b| {
            (a.window_start_ms, &a.location, a.sensor_type, a.revision).cmp(&(
                b.window_start_ms,
                &b.location,
                b.sensor_type,
                b.revision,
            ))
        });
        emitted
    }
}

fn aggregate(
    start: i64,
    window_ms: i64,
    location: &Arc<str>,
    sensor_type: SensorType,
    window: &Closed,
) -> WindowAggregate {
    let w = &window.stats;
    WindowAggregate {
        window_start_ms: start,
        window_end_ms: start.saturating_add(window_ms),
        location: location.clone(),
        sensor_type,
        count: w.count,
        avg: w.mean,
        min: w.min,
        max: w.max,
        stddev: (float::max(w.m2, 0.0) / f64::from(w.count)).sqrt(),
        anomaly_count: w.anomalies,
        revision: window.emitted,
        late_count: w.late,
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
        let keys: Vec<_> =
            out.iter().map(|a| (a.window_start_ms, a.location.to_string(), a.sensor_type, a.count)).collect();
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
    fn late_readings_revise_their_window_and_beyond_the_horizon_are_counted() {
        let config = WindowConfig { revision_horizon_ms: 5 * MIN, ..WindowConfig::default() };
        let mut w = TumblingWindows::new(config);
        w.add(&office(), SensorType::Pressure, 1_000, 1000.0, false);
        w.add(&office(), SensorType::Pressure, MIN + 10_000, 1001.0, false);
        let first = w.close_ready();
        assert_eq!((first.len(), first[0].revision, first[0].late_count, first[0].count), (1, 0, 0, 1));
        // Late for minute 0: it takes the reading and comes out again as revision 1.
        assert_eq!(w.add(&office(), SensorType::Pressure, 59_999, 1004.0, true), Admission::Revised);
        // Within the allowed lateness for minute 1: an ordinary reading.
        assert_eq!(w.add(&office(), SensorType::Pressure, MIN + 1, 1003.0, false), Admission::Added);
        let revised = w.close_ready();
        assert_eq!(revised.len(), 1);
        let r = &revised[0];
        assert_eq!((r.window_start_ms, r.revision, r.late_count, r.count, r.anomaly_count), (0, 1, 1, 2, 1));
        assert_eq!((r.avg, r.min, r.max), (1002.0, 1000.0, 1004.0));
        assert!(w.close_ready().is_empty(), "a revision is emitted once");
        // A late reading for a minute that closed empty creates it, as revision 0 with one late reading.
        w.add(&office(), SensorType::Pressure, 3 * MIN + 10_000, 1001.0, false);
        assert_eq!(w.close_ready().len(), 1, "minute 1 closes");
        assert_eq!(w.add(&office(), SensorType::Pressure, 2 * MIN + 5, 999.0, false), Admission::Revised);
        let created = w.close_ready();
        assert_eq!((created[0].window_start_ms, created[0].revision, created[0].late_count), (2 * MIN, 0, 1));
        // Beyond the horizon (window end 1:00 + 5 min <= watermark 8:00): counted, not aggregated.
        w.add(&office(), SensorType::Pressure, 8 * MIN + 10_000, 1001.0, false);
        w.close_ready();
        assert_eq!(w.add(&office(), SensorType::Pressure, 30_000, 1.0, false), Admission::BeyondHorizon);
        assert_eq!(w.late_beyond_horizon(), 1);
        assert!(w.close_ready().iter().all(|a| a.window_start_ms != 0));
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
        assert_eq!(w.add(&office(), SensorType::Humidity, 1, 51.0, false), Admission::Revised);
        let revised = w.tick(1_030_001);
        assert_eq!((revised.len(), revised[0].revision, revised[0].count), (1, 1, 2));
    }

    #[test]
    fn a_window_split_across_a_restart_comes_out_identical() {
        use iotstream_plugin_sdk::{decode_state, encode_state};
        let stream: Vec<(i64, f64, bool)> = (0..400)
            .map(|i| ((i * 6133) % 240_000 + (i / 100) * 60_000, f64::from(i as i32 % 23) * 0.5, i % 11 == 0))
            .collect();
        let config = WindowConfig { idle_timeout_ms: 30_000, ..WindowConfig::default() };
        let run = |restart_at: Option<usize>| {
            let mut w = TumblingWindows::new(config.clone());
            let mut out = Vec::new();
            for (i, (ts, v, flagged)) in stream.iter().enumerate() {
                if restart_at == Some(i) {
                    // Export, serialise to bytes, and continue in a brand-new instance.
                    let bytes = encode_state(1, w.state());
                    w = TumblingWindows::new(config.clone());
                    w.restore(decode_state(1, &bytes).expect("state decodes"));
                }
                if i % 50 == 0 {
                    out.extend(w.tick(1_000_000 + i as i64 * 100));
                }
                w.add(&office(), SensorType::Temperature, *ts, *v, *flagged);
                out.extend(w.close_ready());
            }
            (out, w.state().clone())
        };
        let uninterrupted = run(None);
        assert!(uninterrupted.0.len() > 5, "the stream closes windows");
        for restart_at in [1, 137, 250, 399] {
            assert_eq!(run(Some(restart_at)), uninterrupted, "restart before reading {restart_at}");
        }
    }

    #[test]
    fn batch_boundaries_do_not_change_the_final_windows() {
        // Out-of-order stream: many readings are late and revise their windows. How the stream is
        // cut into batches changes how many revisions are emitted, never the final content.
        let stream: Vec<(i64, f64)> = (0..500).map(|i| ((i * 7919) % 300_000, f64::from(i as i32 % 17))).collect();
        let run = |cut: usize| {
            let mut w = TumblingWindows::new(WindowConfig::default());
            let mut last = std::collections::BTreeMap::new();
            for chunk in stream.chunks(cut) {
                for (ts, v) in chunk {
                    w.add(&office(), SensorType::Co2, *ts, *v, false);
                }
                for a in w.close_ready() {
                    last.insert(a.window_start_ms, WindowAggregate { revision: 0, ..a });
                }
            }
            (last, w.late_beyond_horizon())
        };
        let whole = run(500);
        assert_eq!(run(1), whole);
        assert_eq!(run(7), whole);
        // Every reading of a closed window is in its final revision.
        let counted: u32 = whole.0.values().map(|a| a.count).sum();
        let still_open = stream.iter().filter(|(ts, _)| *ts >= 240_000).count() as u32;
        assert_eq!(counted + still_open, 500);
    }
}
