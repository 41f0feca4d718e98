//! The alarm budget, enforced on the scores a model actually gives: the `1 - contamination`
//! quantile of a scope's last `budget_window` scores. A reading is an anomaly only above both this
//! and the model's own threshold (set on held-out rows when it was trained).
//!
//! Why both: the held-out rows are the newest of a short buffer (2048 rows, seconds of a busy
//! stream), while a model judges until its next retraining (minutes). When the stream drifts from
//! what the model saw, its scores rise across the board, and a threshold fixed at training time
//! flags far more than the budget; the quantile of recent scores moves with them, so the flagged
//! share stays near `contamination` whatever the drift, and a burst of anomalies still stands out
//! against the scores before it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Scores between two computations of the quantile: a selection over the window costs about as
/// much as scoring a few readings, so recomputing every 64 keeps it under 2% of the forest's cost.
const EVERY: usize = 64;

/// A scope's recent scores and the quantile of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    recent: VecDeque<f64>,
    since: usize,
    threshold: f64,
}

impl Default for Budget {
    fn default() -> Self {
        // No quantile before the window is full: nothing is held back by it.
        Budget { recent: VecDeque::new(), since: 0, threshold: f64::NEG_INFINITY }
    }
}

impl Budget {
    /// The budget's threshold for `score` (computed from the scores before it), then counts it.
    pub fn observe(&mut self, score: f64, window: usize, contamination: f64) -> f64 {
        let threshold = self.threshold;
        if window == 0 {
            return threshold;
        }
        if self.recent.len() == window {
            self.recent.pop_front();
        }
        self.recent.push_back(score);
        self.since += 1;
        if self.recent.len() == window && self.since >= EVERY {
            let mut sorted: Vec<f64> = self.recent.iter().copied().collect();
            let rank = (((1.0 - contamination) * window as f64).ceil() as usize).clamp(1, window) - 1;
            self.threshold = *sorted.select_nth_unstable_by(rank, f64::total_cmp).1;
            self.since = 0;
        }
        threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_quantile_of_the_last_window_recomputed_every_64_scores() {
        let mut b = Budget::default();
        // Window 100, contamination 0.05: the 95th smallest of the last 100 scores.
        for i in 0..100 {
            assert_eq!(b.observe(f64::from(i), 100, 0.05), f64::NEG_INFINITY);
        }
        // Scores 0..99: the 95th smallest is 94, in force from the next score on.
        assert_eq!(b.observe(1000.0, 100, 0.05), 94.0);
        // Recomputed after 64 scores (1000 and 63 x 1000.5): the last 100 are 64..=99, 1000 and
        // 63 x 1000.5; the 95th smallest is 1000.5.
        for _ in 0..63 {
            assert_eq!(b.observe(1000.5, 100, 0.05), 94.0);
        }
        assert_eq!(b.observe(0.0, 100, 0.05), 1000.5);
        let mut off = Budget::default();
        assert!((0..500).all(|i| off.observe(f64::from(i), 0, 0.05) == f64::NEG_INFINITY));
    }
}
