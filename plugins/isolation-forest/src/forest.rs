//! The Isolation Forest (Liu, Ting and Zhou, 2008) with scikit-learn's semantics.
//!
//! Each tree is grown on `min(max_samples, n)` rows drawn without replacement, to a depth limit of
//! `ceil(log2(max_samples))`. A node splits on a feature drawn uniformly among the features that are
//! not constant in the node, at a threshold drawn uniformly between the node's minimum and maximum
//! of that feature (rows `<=` the threshold go left). The path length of a row in a tree is the depth
//! of the leaf it reaches plus `c(leaf size)`, the average path length of an unsuccessful search in a
//! binary search tree of that many rows; the score is `2^(-E[h] / c(max_samples))`, in (0, 1],
//! larger for anomalies. Fitting is seeded and deterministic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Euler-Mascheroni constant, as scikit-learn writes it.
const EULER_GAMMA: f64 = 0.577_215_664_9;

/// The hyper-parameters of a forest.
#[derive(Debug, Clone, PartialEq)]
pub struct ForestParams {
    /// Number of trees. scikit-learn's default is 100.
    pub n_estimators: usize,
    /// Rows per tree (capped at the number of rows). scikit-learn's `auto` is 256.
    pub max_samples: usize,
    /// Seed of the random draws.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams { n_estimators: 100, max_samples: 256, seed: 0 }
    }
}

/// Why a forest could not be fitted.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// No row, or no feature, or rows of different lengths.
    BadShape(String),
    /// A value is NaN or infinite.
    NotFinite {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        feature: usize,
    },
    /// `n_estimators` or `max_samples` is zero.
    BadParams(String),
}

impl std::error::Error for FitError {}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::BadShape(m) | FitError::BadParams(m) => f.write_str(m),
            FitError::NotFinite { row, feature } => write!(f, "value at row {row}, feature {feature} is not finite"),
        }
    }
}

/// A node of a tree, in a flat arena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    Leaf { size: u32 },
    Split { feature: u32, threshold: f64, left: u32, right: u32 },
}

/// One isolation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

/// A fitted forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    trees: Vec<Tree>,
    n_features: usize,
    /// Rows each tree was grown on: the `max_samples` of the normalisation `c(max_samples)`.
    samples_per_tree: usize,
}

/// `c(n)`: average path length of an unsuccessful search in a binary search tree of `n` rows.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Leaf sizes whose `c(n)` [`leaf_path_length`] looks up: a leaf holds at most `max_samples`
/// rows, 256 by default.
const LEAF_TABLE: usize = 1024;

/// [`average_path_length`], looked up for leaves of up to [`LEAF_TABLE`] rows: scoring reaches
/// one leaf per tree, and a table read costs a fraction of the logarithm it replaces.
fn leaf_path_length(n: usize) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=LEAF_TABLE).map(average_path_length).collect());
    table.get(n).copied().unwrap_or_else(|| average_path_length(n))
}

impl ForestParams {
    /// Fits a forest on `rows` (each of the same, non-zero length). Through linfa, the same is
    /// `Fit::fit` on a `Dataset` (see [`crate::linfa`]).
    pub fn fit_rows(&self, rows: &[impl AsRef<[f64]>]) -> Result<IsolationForest, FitError> {
        if self.n_estimators == 0 || self.max_samples == 0 {
            return Err(FitError::BadParams("n_estimators and max_samples must be positive".into()));
        }
        let n_features = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
        if rows.is_empty() || n_features == 0 {
            return Err(FitError::BadShape("cannot fit on no rows or no features".into()));
        }
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != n_features {
                return Err(FitError::BadShape(format!("row {i} has {} features, row 0 has {n_features}", row.len())));
            }
            if let Some(feature) = row.iter().position(|v| !v.is_finite()) {
                return Err(FitError::NotFinite { row: i, feature });
            }
        }
        let samples_per_tree = self.max_samples.min(rows.len());
        let depth_limit = (samples_per_tree as f64).log2().ceil() as usize;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let trees = (0..self.n_estimators)
            .map(|_| {
                let mut sample = rand::seq::index::sample(&mut rng, rows.len(), samples_per_tree).into_vec();
                let mut tree = Tree { nodes: Vec::with_capacity(2 * samples_per_tree) };
                grow(&mut tree, rows, &mut sample, 0, depth_limit, &mut rng);
                tree
            })
            .collect();
        Ok(IsolationForest { trees, n_features, samples_per_tree })
    }
}

/// Grows the subtree over `sample` at `depth`; returns its root's index in the arena.
fn grow(
    tree: &mut Tree,
    rows: &[impl AsRef<[f64]>],
    sample: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut StdRng,
) -> u32 {
    let index = tree.nodes.len() as u32;
    tree.nodes.push(Node::Leaf { size: sample.len() as u32 });
    if depth >= limit || sample.len() <= 1 {
        return index;
    }
    let n_features = rows[sample[0]].as_ref().len();
    let mut candidates: Vec<(usize, f64, f64)> = Vec::with_capacity(n_features);
    for feature in 0..n_features {
        let (lo, hi) = sample.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
            let v = rows[i].as_ref()[feature];
            (lo.min(v), hi.max(v))
        });
        if hi > lo {
            candidates.push((feature, lo, hi));
        }
    }
    if candidates.is_empty() {
        return index;
    }
    let (feature, lo, hi) = candidates[rng.random_range(0..candidates.len())];
    let threshold = rng.random_range(lo..hi);
    // Partition in place: rows at or below the threshold first.
    let mut split = 0;
    for i in 0..sample.len() {
        if rows[sample[i]].as_ref()[feature] <= threshold {
            sample.swap(i, split);
            split += 1;
        }
    }
    let (left_rows, right_rows) = sample.split_at_mut(split);
    let left = grow(tree, rows, left_rows, depth + 1, limit, rng);
    let right = grow(tree, rows, right_rows, depth + 1, limit, rng);
    tree.nodes[index as usize] = Node::Split { feature: feature as u32, threshold, left, right };
    index
}

impl IsolationForest {
    /// Number of features the forest was fitted on.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The anomaly score of `row` (length [`Self::n_features`]), in (0, 1]; above 0.5 leans anomalous.
    pub fn score(&self, row: &[f64]) -> f64 {
        let total: f64 = self.trees.iter().map(|tree| path_length(tree, row)).sum();
        let mean = total / self.trees.len() as f64;
        let norm = average_path_length(self.samples_per_tree);
        if norm == 0.0 { 1.0 } else { 2f64.powf(-mean / norm) }
    }
}

fn path_length(tree: &Tree, row: &[f64]) -> f64 {
    let mut node = 0usize;
    let mut depth = 0usize;
    loop {
        match tree.nodes[node] {
            Node::Leaf { size } => return depth as f64 + leaf_path_length(size as usize),
            Node::Split { feature, threshold, left, right } => {
                node = if row[feature as usize] <= threshold { left as usize } else { right as usize };
                depth += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_table_is_the_formula() {
        for n in [0, 1, 2, 3, 100, 256, LEAF_TABLE, LEAF_TABLE + 1, 5000] {
            assert_eq!(leaf_path_length(n).to_bits(), average_path_length(n).to_bits(), "n = {n}");
        }
    }

    #[test]
    fn average_path_length_matches_the_formula() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // c(256) = 2 (ln 255 + 0.5772156649) - 2 * 255 / 256, by hand: 10.244770920...
        assert!((average_path_length(256) - 10.244_770_920).abs() < 1e-6);
    }

    #[test]
    fn isolated_point_scores_highest_and_scores_are_bounded() {
        let mut rows: Vec<[f64; 2]> = (0..200).map(|i| [f64::from(i % 10) * 0.1, f64::from(i / 10) * 0.1]).collect();
        rows.push([50.0, 50.0]);
        let forest = ForestParams { seed: 7, ..ForestParams::default() }.fit_rows(&rows).expect("fits");
        let scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).collect();
        let outlier = scores[200];
        assert!(scores[..200].iter().all(|s| *s < outlier), "outlier {outlier}");
        assert!(outlier > 0.7, "outlier {outlier}");
        assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0));
    }

    #[test]
    fn a_two_row_forest_has_the_hand_computed_score() {
        // Two distinct rows: every tree splits once (depth limit ceil(log2 2) = 1) into two leaves of
        // one row, so every path is 1 + c(1) = 1 and the score is 2^(-1 / c(2)) = 0.5.
        let forest = ForestParams::default().fit_rows(&[[0.0], [1.0]]).expect("fits");
        assert_eq!(forest.score(&[0.0]), 0.5);
        assert_eq!(forest.score(&[7.0]), 0.5);
    }

    #[test]
    fn constant_data_is_one_leaf_and_fitting_is_deterministic() {
        // All rows equal: no feature can split, every path is c(256) and the score is exactly 0.5.
        let rows = vec![[3.0, 3.0]; 300];
        let forest = ForestParams::default().fit_rows(&rows).expect("fits");
        assert!((forest.score(&[3.0, 3.0]) - 0.5).abs() < 1e-12);
        let data: Vec<[f64; 1]> = (0..500).map(|i| [f64::from(i).sin()]).collect();
        let a = ForestParams { seed: 3, ..ForestParams::default() }.fit_rows(&data).expect("fits");
        let b = ForestParams { seed: 3, ..ForestParams::default() }.fit_rows(&data).expect("fits");
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_is_refused() {
        let empty: [[f64; 1]; 0] = [];
        assert!(matches!(ForestParams::default().fit_rows(&empty), Err(FitError::BadShape(_))));
        assert_eq!(
            ForestParams::default().fit_rows(&[[1.0], [f64::NAN]]),
            Err(FitError::NotFinite { row: 1, feature: 0 })
        );
        assert!(matches!(ForestParams::default().fit_rows(&[vec![1.0], vec![1.0, 2.0]]), Err(FitError::BadShape(_))));
    }
}
