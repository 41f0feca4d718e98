//! One-minute windows per location and sensor type, in event time, closed by the host's clock: a
//! window is emitted at the first `tick` at or after its end. A reading of a minute already
//! emitted is left out (this plugin keeps no revisions: the shipped `tumbling-window` is the real
//! aggregator, this one exists to run contract 0.1.0).

use serde::{Deserialize, Serialize};

/// A window's length, ms.
pub const MINUTE_MS: i64 = 60_000;

/// What one window holds so far (Welford's running mean and squared deviations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Readings added.
    pub count: u32,
    /// Their mean.
    pub mean: f64,
    /// Their summed squared deviations from the mean.
    pub m2: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Those a detector flagged.
    pub flagged: u32,
}

/// A closed window: its group, its start, and what it held.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// Where the readings came from.
    pub location: String,
    /// The sensor type, as the index of the WIT enum's case.
    pub sensor_type: u8,
    /// Start of the minute, ms since the Unix epoch.
    pub start_ms: i64,
    /// Its statistics.
    pub window: Window,
}

impl Closed {
    /// The population standard deviation.
    pub fn stddev(&self) -> f64 {
        (self.window.m2 / f64::from(self.window.count)).sqrt()
    }
}

/// The open windows by (location, sensor type index, start), and the latest tick: the whole state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Minutes {
    open: Vec<((String, u8, i64), Window)>,
    /// The latest tick's time: every minute that ended by then has been emitted.
    emitted_until: Option<i64>,
}

impl Minutes {
    /// Adds one reading to its window; `false` (and nothing added) if its minute was emitted.
    pub fn add(&mut self, location: &str, sensor_type: u8, timestamp_ms: i64, value: f64, flagged: bool) -> bool {
        let start = timestamp_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if self.emitted_until.is_some_and(|until| start.saturating_add(MINUTE_MS) <= until) {
            return false;
        }
        let key = (location.to_owned(), sensor_type, start);
        let at = match self.open.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => at,
            Err(at) => {
                self.open.insert(at, (key, Window::default()));
                at
            }
        };
        let w = &mut self.open[at].1;
        if w.count == 0 {
            (w.min, w.max) = (value, value);
        }
        w.count += 1;
        let delta = value - w.mean;
        w.mean += delta / f64::from(w.count);
        w.m2 += delta * (value - w.mean);
        w.min = if value < w.min { value } else { w.min };
        w.max = if value > w.max { value } else { w.max };
        w.flagged += u32::from(flagged);
        true
    }

    /// Closes every window that ended at or before `now_ms`, in (location, type, start) order.
    pub fn close_until(&mut self, now_ms: i64) -> Vec<Closed> {
        self.emitted_until = Some(self.emitted_until.map_or(now_ms, |until| until.max(now_ms)));
        let (ended, open) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|((_, _, start), _)| start.saturating_add(MINUTE_MS) <= now_ms);
        self.open = open;
        let ended: Vec<((String, u8, i64), Window)> = ended;
        ended
            .into_iter()
            .map(|((location, sensor_type, start_ms), window)| Closed { location, sensor_type, start_ms, window })
            .collect()
    }

    /// The state as bytes (JSON).
    pub fn export(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a state written by [`export`](Self::export), or says why it cannot.
    pub fn import(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|err| format!("not a records-minutes state: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_close_at_the_tick_after_their_end_and_the_state_round_trips() {
        let mut m = Minutes::default();
        m.add("lab_1", 0, 1_000, 20.0, false);
        m.add("lab_1", 0, 59_999, 22.0, true);
        m.add("lab_1", 0, 60_000, 30.0, false);
        m.add("lab_1", 0, 30_000, 27.0, false);
        m.add("office_1", 4, -1, 400.0, false);
        assert_eq!(m.close_until(-1), []);
        let closed = m.close_until(60_000);
        let summary: Vec<_> = closed.iter().map(|c| (c.location.as_str(), c.sensor_type, c.start_ms)).collect();
        assert_eq!(summary, [("lab_1", 0, 0), ("office_1", 4, -60_000)]);
        // 20, 22, 27: mean 23, squared deviations 9 + 1 + 16.
        assert_eq!(closed[0].window, Window { count: 3, mean: 23.0, m2: 26.0, min: 20.0, max: 27.0, flagged: 1 });
        assert_eq!(closed[0].stddev(), (26.0_f64 / 3.0).sqrt());
        let restored = Minutes::import(&m.export()).expect("reads its own state");
        assert_eq!(restored, m);
        assert!(Minutes::import(b"[1").is_err());
        // Minute 0 was emitted: a reading of it is left out; minute 1 is still open.
        assert!(!m.add("lab_1", 0, 59_000, 99.0, false));
        assert!(m.add("lab_1", 0, 61_000, 32.0, false));
        let next = m.close_until(120_000);
        assert_eq!(
            next.iter().map(|c| (c.start_ms, c.window.count, c.window.mean)).collect::<Vec<_>>(),
            [(60_000, 2, 31.0)]
        );
    }
}
