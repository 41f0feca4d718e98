//! Scoring a detector against labels, and timing the forest on labelled data.

use std::time::Instant;

use crate::forest::{FitError, ForestParams};

/// Rows of features and their labels from a labelled CSV (`f0,...,fN,label`, a header row, label 1
/// = anomaly). Cells that are not numbers are skipped.
pub fn parse_labelled_csv(text: &str) -> (Vec<Vec<f64>>, Vec<bool>) {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<f64> = line.split(',').filter_map(|f| f.trim().parse().ok()).collect();
        labels.push(fields.pop() == Some(1.0));
        rows.push(fields);
    }
    (rows, labels)
}

/// Fits a default forest (100 trees, 256 rows a tree) with each of `seeds` on all `rows` and scores
/// them all; returns the mean milliseconds of fit + score and the mean ROC AUC.
pub fn time_fit_and_score(
    rows: &[Vec<f64>],
    labels: &[bool],
    seeds: std::ops::Range<u64>,
) -> Result<(f64, f64), FitError> {
    let (mut millis, mut auc) = (0.0, 0.0);
    let runs = seeds.end.saturating_sub(seeds.start).max(1) as f64;
    for seed in seeds {
        let started = Instant::now();
        let forest = ForestParams { n_estimators: 100, max_samples: 256, seed }.fit_rows(rows)?;
        let scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).collect();
        millis += started.elapsed().as_secs_f64() * 1000.0;
        auc += roc_auc(&scores, labels).unwrap_or(f64::NAN);
    }
    Ok((millis / runs, auc / runs))
}

/// ROC AUC of `scores` (larger = more anomalous) against `labels` (true = anomaly): the probability
/// that a random anomaly scores above a random normal row, ties counting one half (the
/// Mann-Whitney U statistic over average ranks). `None` when either class is empty or the lengths
/// differ.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Average 1-based ranks over runs of equal scores.
    let mut rank_sum_positive = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_positive += order[i..=j].iter().filter(|k| labels[**k]).count() as f64 * average_rank;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum_positive - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_counts() {
        // Pairs (anomaly, normal): (0.9, 0.1) (0.9, 0.5) (0.4, 0.1) (0.4, 0.5): 3 of 4 ordered right.
        assert_eq!(roc_auc(&[0.9, 0.1, 0.4, 0.5], &[true, false, true, false]), Some(0.75));
        // A tie counts one half: (0.5 vs 0.5) = 0.5, (0.5 vs 0.2) = 1 -> 0.75.
        assert_eq!(roc_auc(&[0.5, 0.5, 0.2], &[true, false, false]), Some(0.75));
        assert_eq!(roc_auc(&[1.0, 2.0], &[false, true]), Some(1.0));
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(roc_auc(&[1.0], &[true, false]), None);
    }
}
