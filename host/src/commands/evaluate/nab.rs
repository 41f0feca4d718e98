//! NAB's scoring method, implemented from its description (Lavin and Ahmad, "Evaluating Real-time
//! Anomaly Detection Algorithms: the Numenta Anomaly Benchmark", 2015, and NAB's README), so that a
//! detector's score here is comparable with NAB's published board.
//!
//! * Each series has **label windows** (row ranges). A detection inside a window earns
//!   `tp_weight x sigma(y)`, with `y = -(right - i + 1) / width` its position (-1 at the window's
//!   first row, towards 0 at its last) and the scaled sigmoid `sigma(y) = 2 / (1 + e^(5y)) - 1`:
//!   only the window's best (earliest) detection counts. A window with none costs `fn_weight`.
//! * A detection outside every window costs `fp_weight`, scaled by the sigmoid of its distance
//!   after the preceding window, `|right - i| / (width - 1)` (a detection just after a window costs
//!   almost nothing, one far after it costs the full weight; before the first window, the full weight).
//! * The first 15% of each series (at most 750 rows) is a **probation period**: its detections
//!   count for nothing.
//! * A detector's scores are swept for **one threshold per corpus and profile** (every distinct
//!   score), and the best raw total is **normalised** between the null detector (no detection: every
//!   window missed, 0) and the perfect one (every window detected on its first row, 100).

use std::collections::HashMap;

/// One profile's costs (NAB's `profiles.json`, `CostMatrix`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct Costs {
    /// Reward weight of a detected window.
    #[serde(rename = "tpWeight")]
    pub tp: f64,
    /// Cost weight of a detection outside every window.
    #[serde(rename = "fpWeight")]
    pub fp: f64,
    /// Cost weight of a missed window.
    #[serde(rename = "fnWeight")]
    pub fn_: f64,
}

/// One labelled series, scored by a detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The detector's score per row (larger is more anomalous; warming up is the lowest score).
    pub scores: Vec<f64>,
    /// Whether the detector itself flagged each row (its own threshold).
    pub flags: Vec<bool>,
    /// The label windows, first and last row (inclusive), in order.
    pub windows: Vec<(usize, usize)>,
}

/// A corpus's (or a category's) score under one profile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NabScore {
    /// 0 = the null detector, 100 = the perfect one.
    pub normalised: f64,
    /// The raw total at the threshold.
    pub raw: f64,
    /// The threshold: a row is a detection when its score is at least this.
    pub threshold: f64,
}

/// Rows of the probation period of a series of `rows` rows: 15%, at most 750 (NAB's
/// `probationPercent` 0.15 of at most 5000 rows).
pub fn probation(rows: usize) -> usize {
    (rows * 15 / 100).min(750)
}

/// NAB's scaled sigmoid: 1 far before 0, 0 at 0, -1 far after; exactly -1 past 3.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * y).exp()) - 1.0 }
}

/// What a detection at one row would be worth.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Worth {
    /// A detection inside window `window` (index into the corpus's windows), with its reward.
    Hit { window: usize, reward: f64 },
    /// A false positive, with its (negative) cost.
    Miss(f64),
}

/// The worth of a detection at each row after probation, with the row's score.
fn worths(series: &Scored, costs: Costs, first_window: usize) -> Vec<(f64, Worth)> {
    let mut out = Vec::with_capacity(series.scores.len());
    let mut previous: Option<(usize, usize)> = None;
    let mut windows = series.windows.iter().enumerate().peekable();
    for (row, &score) in series.scores.iter().enumerate() {
        while windows.peek().is_some_and(|(_, w)| w.1 < row) {
            previous = windows.next().map(|(_, w)| *w);
        }
        let current = windows.peek().filter(|(_, w)| w.0 <= row).map(|(index, w)| (*index, **w));
        let worth = match (current, previous) {
            (Some((index, (left, right))), _) => {
                let y = -((right - row + 1) as f64) / ((right - left + 1) as f64);
                Worth::Hit { window: first_window + index, reward: costs.tp * scaled_sigmoid(y) }
            }
            (None, None) => Worth::Miss(-costs.fp),
            (None, Some((left, right))) => {
                let y = (row - right) as f64 / (right - left).max(1) as f64;
                Worth::Miss(costs.fp * scaled_sigmoid(y))
            }
        };
        if row >= probation(series.scores.len()) {
            out.push((score, worth));
        }
    }
    out
}

/// The null and perfect totals of `series`.
fn bounds(series: &[&Scored], costs: Costs) -> (f64, f64) {
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    (-costs.fn_ * windows as f64, costs.tp * scaled_sigmoid(-1.0) * windows as f64)
}

/// Sweeps every distinct score of `series` for the best threshold: NAB's score of the corpus.
pub fn score_corpus(series: &[&Scored], costs: Costs) -> NabScore {
    let (null, perfect) = bounds(series, costs);
    let mut rows = Vec::new();
    let mut first_window = 0;
    for s in series {
        rows.extend(worths(s, costs, first_window));
        first_window += s.windows.len();
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut best, mut threshold) = (null, f64::INFINITY);
    let mut hits: HashMap<usize, f64> = HashMap::new();
    let (mut reward, mut fp_cost) = (0.0, 0.0);
    let mut i = 0;
    while i < rows.len() {
        let level = rows[i].0;
        while i < rows.len() && rows[i].0 == level {
            match rows[i].1 {
                Worth::Miss(cost) => fp_cost += cost,
                Worth::Hit { window, reward: r } => match hits.get_mut(&window) {
                    None => {
                        hits.insert(window, r);
                        reward += r;
                    }
                    Some(best) if r > *best => {
                        reward += r - *best;
                        *best = r;
                    }
                    Some(_) => {}
                },
            }
            i += 1;
        }
        let total = reward + fp_cost + null + costs.fn_ * hits.len() as f64;
        if total > best {
            (best, threshold) = (total, level);
        }
    }
    NabScore { normalised: normalise(best, null, perfect), raw: best, threshold }
}

/// The score of `series` at a given threshold (a category at its corpus's threshold).
pub fn score_at(series: &[&Scored], costs: Costs, threshold: f64) -> NabScore {
    let (null, perfect) = bounds(series, costs);
    let mut raw = null;
    let mut first_window = 0;
    for s in series {
        let mut hits: HashMap<usize, f64> = HashMap::new();
        for (score, worth) in worths(s, costs, first_window) {
            match worth {
                _ if score < threshold => {}
                Worth::Miss(cost) => raw += cost,
                Worth::Hit { window, reward } => {
                    let best = hits.entry(window).or_insert(f64::NEG_INFINITY);
                    *best = best.max(reward);
                }
            }
        }
        raw += hits.values().map(|r| r + costs.fn_).sum::<f64>();
        first_window += s.windows.len();
    }
    NabScore { normalised: normalise(raw, null, perfect), raw, threshold }
}

fn normalise(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect > null { 100.0 * (raw - null) / (perfect - null) } else { 0.0 }
}

/// Event-level counts of the detector's own flags against the windows (after probation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Events {
    /// Label windows.
    pub windows: usize,
    /// Windows with at least one flagged row.
    pub detected: usize,
    /// Alarms: runs of consecutive flagged rows.
    pub alarms: usize,
    /// Alarms that overlap a window.
    pub true_alarms: usize,
}

impl Events {
    /// Counts `flags` against `windows` (inclusive row ranges), ignoring the first `skip` rows.
    pub fn count(flags: &[bool], windows: &[(usize, usize)], skip: usize) -> Events {
        let flagged = |row: usize| row >= skip && flags.get(row).copied().unwrap_or(false);
        let detected = windows.iter().filter(|(l, r)| (*l..=*r).any(flagged)).count();
        let mut events = Events { windows: windows.len(), detected, ..Events::default() };
        for (start, end) in runs(flags, skip) {
            events.alarms += 1;
            events.true_alarms += usize::from(windows.iter().any(|(l, r)| start <= *r && *l <= end));
        }
        events
    }

    /// Adds another series' counts.
    pub fn add(&mut self, other: Events) {
        self.windows += other.windows;
        self.detected += other.detected;
        self.alarms += other.alarms;
        self.true_alarms += other.true_alarms;
    }

    /// True alarms over alarms (1 with no alarm: nothing false was said).
    pub fn precision(&self) -> f64 {
        if self.alarms == 0 { 1.0 } else { self.true_alarms as f64 / self.alarms as f64 }
    }

    /// Detected windows over windows (1 with no window).
    pub fn recall(&self) -> f64 {
        if self.windows == 0 { 1.0 } else { self.detected as f64 / self.windows as f64 }
    }
}

/// The runs of consecutive `true` in `flags` from row `skip` on, as inclusive ranges.
pub fn runs(flags: &[bool], skip: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (row, &flag) in flags.iter().enumerate().skip(skip) {
        match (flag, start) {
            (true, None) => start = Some(row),
            (false, Some(s)) => {
                out.push((s, row - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, flags.len() - 1));
    }
    out
}

#[cfg(test)]
mod tests;
