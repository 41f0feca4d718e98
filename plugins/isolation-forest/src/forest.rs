//! The Isolation Forest (Liu, Ting and Zhou, 2008) with scikit-learn's semantics.
//!
//! Each tree is grown on `min(max_samples, n)` rows drawn without replacement, to a depth limit of
//! `ceil(log2(max_samples))`. A node splits on a feature drawn uniformly among the features that are
//! not constant in the node, at a threshold drawn uniformly between the node's minimum and maximum
//! of that feature (rows `<=` the threshold go left). The path length of a row in a tree is the depth
//! of the leaf it reaches plus `c(leaf size)`, the average path length of an unsuccessful search in a
//! binary search tree of that many rows; the score is `2^(-E[h] / c(max_samples))`, in (0, 1],
//! larger for anomalies. Fitting is seeded and deterministic: each tree has a random state of its
//! own, drawn from the forest's seed (as scikit-learn gives each estimator one), so a forest can be
//! grown a tree at a time, across calls and checkpoints ([`ForestGrowth`]), and come out the same.

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

/// A node of a tree being grown, in a flat arena (a tree is laid out for scoring, in a
/// [`Scorer`], as soon as it is grown).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf { size: u32 },
    Split { feature: u32, threshold: f64, left: u32, right: u32 },
}

/// One isolation tree, as it is grown.
#[derive(Debug, Clone, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
}

/// A fitted forest: its trees in the [`Scorer`]'s layout, which is also what is serialized (a
/// split is 16 bytes there, where a grown tree's node takes 24, and nothing else holds the trees:
/// a forest plugin's linear memory holds one copy of each model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredForest")]
pub struct IsolationForest {
    scorer: Scorer,
    n_features: usize,
    /// Rows each tree was grown on: the `max_samples` of the normalisation `c(max_samples)`.
    samples_per_tree: usize,
}

/// A forest as it is read back, checked before it scores (a walk that left the nodes would panic).
#[derive(Deserialize)]
struct StoredForest {
    scorer: Scorer,
    n_features: usize,
    samples_per_tree: usize,
}

impl TryFrom<StoredForest> for IsolationForest {
    type Error = String;

    fn try_from(stored: StoredForest) -> Result<Self, String> {
        stored.scorer.check(stored.n_features)?;
        if stored.scorer.roots.is_empty() {
            return Err("a stored forest has no tree".into());
        }
        Ok(IsolationForest {
            scorer: stored.scorer,
            n_features: stored.n_features,
            samples_per_tree: stored.samples_per_tree,
        })
    }
}

/// The trees laid out for scoring (the forest plugin as `.wasm` ran twice as fast with it,
/// docs/performance.md): every tree's nodes in one array, a split's children side by side (the
/// right one after the left), and a leaf that leads to itself. A row's walk then needs no branch:
/// every tree takes [`Scorer::depth`] steps, `node = left + !(row[feature] <= threshold)`, all the
/// trees a step at a time (independent loads the CPU overlaps, where a tree-by-tree walk waits on
/// each node and mispredicts half its turns). A leaf tests the row's padding feature, `-inf`, against
/// its path length (`depth + c(size)`, which it holds in `threshold`), so it always stays put.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Scorer {
    nodes: Vec<ScoreNode>,
    /// Each tree's root in `nodes`, in the trees' order.
    roots: Vec<u32>,
    /// The deepest leaf's depth: the steps that take every walk to its leaf.
    depth: usize,
}

/// A node of the [`Scorer`]'s layout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct ScoreNode {
    /// A split's threshold; a leaf's path length.
    threshold: f64,
    /// A split's feature; a leaf's is the row's padding (`n_features`).
    feature: u32,
    /// A split's left child (the right one follows it); a leaf itself.
    left: u32,
}

/// Rows of up to this many features (and forests of up to [`STACK_TREES`] trees) are scored
/// without allocating.
const STACK_FEATURES: usize = 15;
const STACK_TREES: usize = 128;

impl Scorer {
    /// A scorer with room for `trees` trees of `nodes` nodes in all.
    fn with_capacity(trees: usize, nodes: usize) -> Self {
        Scorer { nodes: Vec::with_capacity(nodes), roots: Vec::with_capacity(trees), depth: 0 }
    }

    /// Lays `tree` out after the trees already here (its leaves test feature `leaf_feature`, the
    /// row's padding).
    fn push_tree(&mut self, tree: &Tree, leaf_feature: u32) {
        let root = self.nodes.len() as u32;
        self.roots.push(root);
        self.nodes.push(ScoreNode { threshold: 0.0, feature: leaf_feature, left: root });
        // (index in `tree.nodes`, its place in `self.nodes`, its depth), breadth first.
        let mut queue = std::collections::VecDeque::from([(0usize, root, 0usize)]);
        while let Some((node, place, depth)) = queue.pop_front() {
            self.nodes[place as usize] = match tree.nodes[node] {
                Node::Leaf { size } => {
                    self.depth = self.depth.max(depth);
                    let path = depth as f64 + leaf_path_length(size as usize);
                    ScoreNode { threshold: path, feature: leaf_feature, left: place }
                }
                Node::Split { feature, threshold, left, right } => {
                    let children = self.nodes.len() as u32;
                    let placeholder = ScoreNode { threshold: 0.0, feature: leaf_feature, left: children };
                    self.nodes.extend([placeholder, placeholder]);
                    queue.push_back((left as usize, children, depth + 1));
                    queue.push_back((right as usize, children + 1, depth + 1));
                    ScoreNode { threshold, feature, left: children }
                }
            };
        }
    }

    /// The same layout in vectors of exactly its size (a growth's vector doubles as its trees grow;
    /// a model keeps only what its trees take).
    fn compact(&self) -> Scorer {
        Scorer { nodes: self.nodes.as_slice().to_vec(), roots: self.roots.as_slice().to_vec(), depth: self.depth }
    }

    /// Whether every walk of a row of `n_features` (padded with one more) stays within the nodes:
    /// each root and child is a node, each feature is one of the row's, and a leaf (the padding
    /// feature) leads to itself; and no walk takes more steps than there are nodes (a tree `depth`
    /// deep has more than `depth` nodes). What a scorer read back must pass before it walks.
    fn check(&self, n_features: usize) -> Result<(), String> {
        let len = self.nodes.len();
        if self.depth > len {
            return Err(format!("a walk of {} steps through {len} nodes", self.depth));
        }
        if let Some(root) = self.roots.iter().find(|&&root| root as usize >= len) {
            return Err(format!("a tree's root {root} is past the forest's {len} nodes"));
        }
        for (at, node) in self.nodes.iter().enumerate() {
            let fine = match (node.feature as usize).cmp(&n_features) {
                std::cmp::Ordering::Less => (node.left as usize) + 1 < len,
                std::cmp::Ordering::Equal => node.left as usize == at,
                std::cmp::Ordering::Greater => false,
            };
            if !fine {
                return Err(format!(
                    "node {at} of {len} (feature {}, left {}) leads outside the forest",
                    node.feature, node.left
                ));
            }
        }
        Ok(())
    }

    /// Walks every tree with `row` (its features, then `-inf`); leaves each tree's leaf in `at`.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(x <= t)`, not `x > t`: a NaN goes right, as the node-by-node walk sends it"
    )]
    fn walk(&self, row: &[f64], at: &mut [u32]) {
        at.copy_from_slice(&self.roots);
        let step = |node: &mut u32| {
            let n = self.nodes[*node as usize];
            *node = n.left + u32::from(!(row[n.feature as usize] <= n.threshold));
        };
        for _ in 0..self.depth {
            // Four trees a turn of the loop: a wasm build checks the host's deadline at every
            // turn (the same steps; four trees a turn ran the forest's `.wasm` 11% faster).
            let mut fours = at.chunks_exact_mut(4);
            for four in &mut fours {
                four.iter_mut().for_each(step);
            }
            fours.into_remainder().iter_mut().for_each(step);
        }
    }
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
    /// Fits a forest on `rows` (each of the same, non-zero length): a [`ForestGrowth`] grown to the
    /// end at once. Through linfa, the same is `Fit::fit` on a `Dataset` (see [`crate::linfa`]).
    pub fn fit_rows(&self, rows: &[impl AsRef<[f64]>]) -> Result<IsolationForest, FitError> {
        Ok(ForestGrowth::new(self, rows)?.finish())
    }
}

/// Rows of the same width, one after the other in one vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FlatRows {
    values: Vec<f64>,
    width: usize,
}

impl FlatRows {
    fn new(rows: &[impl AsRef<[f64]>], width: usize) -> Self {
        FlatRows { values: rows.iter().flat_map(|r| r.as_ref().iter().copied()).collect(), width }
    }

    fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

/// A forest being grown one tree at a time, so that the cost of a fit can be spread over many
/// calls (the online detector grows a new model a few trees per reading while the model before it
/// judges: a fit no longer stalls the batch it falls in). Growing it to the end gives exactly the
/// forest [`ForestParams::fit_rows`] fits: every tree has a random state of its own, drawn from the
/// forest's seed (as scikit-learn gives each estimator one), so a tree does not depend on when it
/// is grown. The growth is serializable: a checkpoint taken halfway resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredGrowth")]
pub struct ForestGrowth {
    rows: FlatRows,
    samples_per_tree: usize,
    /// Each tree's seed, drawn in order from the forest's.
    tree_seeds: Vec<u64>,
    /// The trees grown so far, laid out for scoring, in a vector that grows with them. Room for the
    /// most nodes its trees could have (818 KB for 100 trees of 256 rows) is 2.5 times what such
    /// trees take (204 nodes a tree on uniform random rows, of 511 at most), and every instance kept
    /// it: 5.2 MiB more over a host's twelve lanes, for the same slow climb of their memories
    /// (`iotstream bench-memory`, docs/performance.md).
    grown: Scorer,
}

/// A growth as it is read back, checked before it grows or scores.
#[derive(Deserialize)]
struct StoredGrowth {
    rows: FlatRows,
    samples_per_tree: usize,
    tree_seeds: Vec<u64>,
    grown: Scorer,
}

impl TryFrom<StoredGrowth> for ForestGrowth {
    type Error = String;

    fn try_from(stored: StoredGrowth) -> Result<Self, String> {
        let StoredGrowth { rows, samples_per_tree, tree_seeds, grown } = stored;
        if rows.width == 0
            || rows.values.len() % rows.width != 0
            || samples_per_tree == 0
            || samples_per_tree > rows.len()
        {
            return Err(format!(
                "a stored growth of {} values in rows of {} cannot draw {samples_per_tree} rows a tree",
                rows.values.len(),
                rows.width
            ));
        }
        if grown.roots.len() > tree_seeds.len() {
            return Err(format!("a stored growth has {} trees of {}", grown.roots.len(), tree_seeds.len()));
        }
        grown.check(rows.width)?;
        let mut growth = ForestGrowth { rows, samples_per_tree, tree_seeds, grown };
        // Room for every tree's root, as `new` reserved it.
        growth.grown.roots.reserve_exact(growth.trees() - growth.grown());
        Ok(growth)
    }
}

/// The most nodes a tree grown on `rows` rows can have: a split leaves at least one row each
/// side, and the depth limit is `ceil(log2(rows))`, so `2 rows - 1` (and 1 for a single row).
fn max_tree_nodes(rows: usize) -> usize {
    (2 * rows).saturating_sub(1).max(1)
}

impl ForestGrowth {
    /// A growth with no tree yet, over `rows` (each of the same, non-zero length).
    pub fn new(params: &ForestParams, rows: &[impl AsRef<[f64]>]) -> Result<Self, FitError> {
        if params.n_estimators == 0 || params.max_samples == 0 {
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
        let mut forest_rng = StdRng::seed_from_u64(params.seed);
        let samples_per_tree = params.max_samples.min(rows.len());
        Ok(ForestGrowth {
            rows: FlatRows::new(rows, n_features),
            samples_per_tree,
            tree_seeds: (0..params.n_estimators).map(|_| forest_rng.random()).collect(),
            grown: Scorer::with_capacity(params.n_estimators, 0),
        })
    }

    /// Trees grown so far.
    pub fn grown(&self) -> usize {
        self.grown.roots.len()
    }

    /// Trees the forest will have.
    pub fn trees(&self) -> usize {
        self.tree_seeds.len()
    }

    /// Grows the next tree; false once every tree is grown.
    pub fn grow_next(&mut self) -> bool {
        let Some(&seed) = self.tree_seeds.get(self.grown()) else {
            return false;
        };
        let tree = self.grow_tree(seed);
        self.grown.push_tree(&tree, self.rows.width as u32);
        true
    }

    /// Grows the tree of random state `seed`.
    fn grow_tree(&self, seed: u64) -> Tree {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut sample = rand::seq::index::sample(&mut rng, self.rows.len(), self.samples_per_tree).into_vec();
        let mut tree = Tree { nodes: Vec::with_capacity(max_tree_nodes(self.samples_per_tree)) };
        let depth_limit = (self.samples_per_tree as f64).log2().ceil() as usize;
        let width = self.rows.width;
        let mut candidates: Vec<usize> = (0..width).collect();
        let mut node =
            Grow { tree: &mut tree, rows: &self.rows, candidates: &mut candidates, limit: depth_limit, rng: &mut rng };
        node.grow(&mut sample, 0..width, 0);
        tree
    }

    /// The forest, its trees grown to the end first.
    pub fn finish(mut self) -> IsolationForest {
        while self.grow_next() {}
        IsolationForest {
            scorer: self.grown.compact(),
            n_features: self.rows.width,
            samples_per_tree: self.samples_per_tree,
        }
    }
}

/// One tree's growth: what every node of it shares.
struct Grow<'a> {
    tree: &'a mut Tree,
    rows: &'a FlatRows,
    /// A stack of each node's candidate features, from the root to the node being grown: a node's
    /// are pushed above its parent's and popped when its subtree is grown, so no node allocates.
    candidates: &'a mut Vec<usize>,
    limit: usize,
    rng: &'a mut StdRng,
}

impl Grow<'_> {
    /// Grows the subtree over `sample` at `depth`; returns its root's index in the arena.
    ///
    /// The split's feature is drawn as scikit-learn's splitter draws it: uniformly among the
    /// node's candidates (its parent's, less those found constant there; every feature at the
    /// root), its range computed, and, if it is constant in the node, dropped and another drawn.
    /// So the feature is uniform among those not constant in the node, and a node computes one
    /// range, not one per feature; a feature constant in a node is constant in its children, which
    /// do not draw it again (the robust feature set's two hour slots are always 0).
    fn grow(&mut self, sample: &mut [usize], parent: std::ops::Range<usize>, depth: usize) -> u32 {
        let index = self.tree.nodes.len() as u32;
        self.tree.nodes.push(Node::Leaf { size: sample.len() as u32 });
        if depth >= self.limit || sample.len() <= 1 {
            return index;
        }
        // This node's candidates, copied above the parent's: those left to draw come first.
        let start = self.candidates.len();
        self.candidates.extend_from_within(parent);
        let mut left_to_draw = self.candidates.len() - start;
        let split = loop {
            if left_to_draw == 0 {
                break None;
            }
            let drawn = start + self.rng.random_range(0..left_to_draw);
            let feature = self.candidates[drawn];
            let (lo, hi) = sample.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                // Comparisons, not `min`/`max`: as `.wasm` those are calls to libm (the rows are
                // finite, so the result is the same).
                let v = self.rows.row(i)[feature];
                (if v < lo { v } else { lo }, if v > hi { v } else { hi })
            });
            if hi > lo {
                break Some((feature, lo, hi));
            }
            // Constant here, so in the children too: moved out of the candidates they inherit.
            left_to_draw -= 1;
            self.candidates.swap(drawn, start + left_to_draw);
        };
        // The children's candidates: this node's, less those found constant in it.
        self.candidates.truncate(start + left_to_draw);
        let Some((feature, lo, hi)) = split else {
            return index;
        };
        let threshold = self.rng.random_range(lo..hi);
        // Partition in place: rows at or below the threshold first.
        let mut below = 0;
        for i in 0..sample.len() {
            if self.rows.row(sample[i])[feature] <= threshold {
                sample.swap(i, below);
                below += 1;
            }
        }
        let inherited = start..self.candidates.len();
        let (left_rows, right_rows) = sample.split_at_mut(below);
        let left = self.grow(left_rows, inherited.clone(), depth + 1);
        let right = self.grow(right_rows, inherited, depth + 1);
        self.candidates.truncate(start);
        self.tree.nodes[index as usize] = Node::Split { feature: feature as u32, threshold, left, right };
        index
    }
}

impl IsolationForest {
    /// Number of features the forest was fitted on.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The anomaly score of `row` (length [`Self::n_features`]), in (0, 1]; above 0.5 leans anomalous.
    ///
    /// # Panics
    /// If `row` is shorter than [`Self::n_features`].
    pub fn score(&self, row: &[f64]) -> f64 {
        let row = &row[..self.n_features];
        let trees = self.scorer.roots.len();
        let (mut padded_stack, mut padded_heap) = ([f64::NEG_INFINITY; STACK_FEATURES + 1], Vec::new());
        let padded: &mut [f64] = if row.len() <= STACK_FEATURES {
            &mut padded_stack[..=row.len()]
        } else {
            padded_heap.resize(row.len() + 1, f64::NEG_INFINITY);
            &mut padded_heap
        };
        padded[..row.len()].copy_from_slice(row);
        let (mut leaves_stack, mut leaves_heap) = ([0u32; STACK_TREES], Vec::new());
        let leaves: &mut [u32] = if trees <= STACK_TREES {
            &mut leaves_stack[..trees]
        } else {
            leaves_heap.resize(trees, 0);
            &mut leaves_heap
        };
        self.scorer.walk(padded, leaves);
        // Summed in the trees' order, as the path lengths always were: the same bits.
        let total: f64 = leaves.iter().map(|&leaf| self.scorer.nodes[leaf as usize].threshold).sum();
        let mean = total / trees as f64;
        let norm = average_path_length(self.samples_per_tree);
        if norm == 0.0 { 1.0 } else { 2f64.powf(-mean / norm) }
    }
}

/// A row's path length in one tree, walked node by node: what the [`Scorer`] must agree with.
#[cfg(test)]
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

    /// The trees `params` grows on `rows`, node by node (a forest keeps only their scoring layout).
    fn grown_trees(params: &ForestParams, rows: &[impl AsRef<[f64]>]) -> Vec<Tree> {
        let growth = ForestGrowth::new(params, rows).expect("starts");
        growth.tree_seeds.iter().map(|&seed| growth.grow_tree(seed)).collect()
    }

    /// `n` rows of three features of different ranges, drawn from `rng`.
    fn random_rows(rng: &mut StdRng, n: usize) -> Vec<[f64; 3]> {
        (0..n).map(|_| [rng.random_range(-5.0..5.0), rng.random_range(0.0..1.0), rng.random_range(-1.0..1.0)]).collect()
    }

    /// The scorer's walk ends, for every tree, at the leaf the node-by-node walk reaches, with its
    /// path length to the bit: on the rows the forest was fitted on, on rows far outside them,
    /// and on rows with infinities and NaN (which go right at every split, as `x <= t` is false).
    #[test]
    fn the_scorer_walks_to_the_same_leaves_as_the_trees() {
        let mut rng = StdRng::seed_from_u64(11);
        let rows = random_rows(&mut rng, 300);
        for params in [
            ForestParams { seed: 3, ..ForestParams::default() },
            ForestParams { n_estimators: 200, max_samples: 40, seed: 9 },
        ] {
            let forest = params.fit_rows(&rows).expect("fits");
            let trees = grown_trees(&params, &rows);
            let mut probes: Vec<[f64; 3]> = rows.clone();
            probes
                .extend((0..200).map(|_| {
                    [rng.random_range(-50.0..50.0), rng.random_range(-9.0..9.0), rng.random_range(-3.0..3.0)]
                }));
            probes.extend([[f64::NAN, 0.5, 0.0], [f64::INFINITY, f64::NEG_INFINITY, 0.0], [0.0, f64::NAN, f64::NAN]]);
            let mut leaves = vec![0u32; trees.len()];
            for probe in &probes {
                let mut padded = probe.to_vec();
                padded.push(f64::NEG_INFINITY);
                forest.scorer.walk(&padded, &mut leaves);
                for (tree, leaf) in trees.iter().zip(&leaves) {
                    let expected = path_length(tree, probe);
                    assert_eq!(
                        forest.scorer.nodes[*leaf as usize].threshold.to_bits(),
                        expected.to_bits(),
                        "{probe:?}"
                    );
                }
                let by_trees = trees.iter().map(|tree| path_length(tree, probe)).sum::<f64>() / trees.len() as f64;
                let expected = 2f64.powf(-by_trees / average_path_length(forest.samples_per_tree));
                assert_eq!(forest.score(probe).to_bits(), expected.to_bits(), "{probe:?}");
            }
        }
    }

    /// Rows of more features than the score pads on the stack are padded on the heap and score,
    /// to the bit, what the trees say, as rows of few do.
    #[test]
    fn wide_and_narrow_rows_score_as_their_trees_say() {
        let mut rng = StdRng::seed_from_u64(23);
        for width in [1, STACK_FEATURES, STACK_FEATURES + 1, 40] {
            let rows: Vec<Vec<f64>> =
                (0..200).map(|_| (0..width).map(|_| rng.random_range(-3.0..3.0)).collect()).collect();
            let params = ForestParams { n_estimators: 20, max_samples: 64, seed: 2 };
            let (forest, trees) = (params.fit_rows(&rows).expect("fits"), grown_trees(&params, &rows));
            for probe in rows.iter().take(40).chain([vec![9.0; width], vec![f64::NAN; width]].iter()) {
                let by_trees = trees.iter().map(|tree| path_length(tree, probe)).sum::<f64>() / trees.len() as f64;
                let expected = 2f64.powf(-by_trees / average_path_length(forest.samples_per_tree));
                assert_eq!(forest.score(probe).to_bits(), expected.to_bits(), "width {width}, {probe:?}");
            }
        }
    }

    /// A forest read back from its serialized form (postcard, as plugin state is stored) scores as
    /// the one written.
    #[test]
    fn a_forest_read_back_scores_alike() {
        let rows: Vec<[f64; 2]> = (0..120).map(|i| [f64::from(i % 11), f64::from(i % 7) * 0.5]).collect();
        let forest = ForestParams { seed: 5, ..ForestParams::default() }.fit_rows(&rows).expect("fits");
        let read: IsolationForest =
            postcard::from_bytes(&postcard::to_stdvec(&forest).expect("writes")).expect("reads");
        assert_eq!(read, forest);
        for row in &rows {
            assert_eq!(read.score(row).to_bits(), forest.score(row).to_bits());
        }
    }

    /// A forest grown a tree at a time, written out and read back halfway (as a checkpoint would),
    /// is the forest `fit_rows` fits.
    #[test]
    fn a_forest_grown_a_tree_at_a_time_is_the_one_fitted_at_once() {
        let rows = random_rows(&mut StdRng::seed_from_u64(5), 400);
        let params = ForestParams { n_estimators: 30, max_samples: 64, seed: 17 };
        let at_once = params.fit_rows(&rows).expect("fits");
        let mut growth = ForestGrowth::new(&params, &rows).expect("starts");
        assert_eq!((growth.grown(), growth.trees()), (0, 30));
        for _ in 0..12 {
            assert!(growth.grow_next());
        }
        let mut growth: ForestGrowth =
            postcard::from_bytes(&postcard::to_stdvec(&growth).expect("writes")).expect("reads");
        assert_eq!(growth.grown(), 12);
        while growth.grow_next() {}
        assert!(!growth.grow_next());
        assert_eq!(growth.grown(), 30);
        assert_eq!(growth.finish(), at_once);
        // Another seed, another forest.
        assert_ne!(ForestParams { seed: 18, ..params.clone() }.fit_rows(&rows).expect("fits"), at_once);
    }

    /// A growth takes room for the trees it has grown, not for the largest trees it could grow
    /// (50 trees of at most 2 x 128 - 1 nodes each here); the forest it gives keeps exactly what
    /// its trees take.
    #[test]
    fn a_growth_takes_room_as_its_trees_grow_and_its_forest_keeps_no_more_than_its_trees() {
        let rows = random_rows(&mut StdRng::seed_from_u64(8), 500);
        let params = ForestParams { n_estimators: 50, max_samples: 128, seed: 4 };
        let mut growth = ForestGrowth::new(&params, &rows).expect("starts");
        assert_eq!((growth.grown.nodes.capacity(), growth.grown.roots.capacity()), (0, 50));
        while growth.grow_next() {}
        let in_trees: usize = grown_trees(&params, &rows).iter().map(|tree| tree.nodes.len()).sum();
        assert_eq!(growth.grown.nodes.len(), in_trees);
        // A vector that doubles holds less than twice its nodes, and far less than the largest trees.
        assert!(growth.grown.nodes.capacity() < 2 * in_trees && 2 * in_trees < 50 * 255, "{in_trees} nodes");
        let forest = growth.finish();
        assert_eq!((forest.scorer.nodes.len(), forest.scorer.nodes.capacity()), (in_trees, in_trees));
        assert_eq!((forest.scorer.roots.len(), forest.scorer.roots.capacity()), (50, 50));
    }

    /// A stored forest or growth whose walk would leave its nodes, or whose rows cannot be drawn
    /// from, is refused when read back, not found out by a panic when it scores.
    #[test]
    fn a_stored_forest_that_leads_outside_its_nodes_is_refused() {
        let rows = random_rows(&mut StdRng::seed_from_u64(2), 100);
        let params = ForestParams { n_estimators: 5, max_samples: 32, seed: 1 };
        let forest = params.fit_rows(&rows).expect("fits");
        let read = |forest: &IsolationForest| {
            postcard::from_bytes::<IsolationForest>(&postcard::to_stdvec(forest).expect("writes")).map(|_| ())
        };
        assert_eq!(read(&forest), Ok(()));
        let split = forest.scorer.nodes.iter().position(|n| n.feature < 3).expect("a split");
        let leaf = forest.scorer.nodes.iter().position(|n| n.feature == 3).expect("a leaf");
        let last = forest.scorer.nodes.len() as u32 - 1;
        for corrupt in [
            |f: &mut IsolationForest, _: usize, _: usize, last: u32| f.scorer.roots[0] = last + 1,
            |f: &mut IsolationForest, split: usize, _: usize, last: u32| f.scorer.nodes[split].left = last,
            |f: &mut IsolationForest, split: usize, _: usize, _: u32| f.scorer.nodes[split].feature = 4,
            |f: &mut IsolationForest, _: usize, leaf: usize, _: u32| f.scorer.nodes[leaf].left += 1,
            |f: &mut IsolationForest, _: usize, _: usize, _: u32| f.scorer.roots.clear(),
            |f: &mut IsolationForest, _: usize, _: usize, last: u32| f.scorer.depth = last as usize + 2,
        ] {
            let mut bad = forest.clone();
            corrupt(&mut bad, split, leaf, last);
            assert!(read(&bad).is_err(), "{:?}", bad.scorer.roots);
        }
        let mut growth = ForestGrowth::new(&params, &rows).expect("starts");
        growth.grow_next();
        let read = |growth: &ForestGrowth| {
            postcard::from_bytes::<ForestGrowth>(&postcard::to_stdvec(growth).expect("writes")).map(|_| ())
        };
        assert_eq!(read(&growth), Ok(()));
        // Read back, a growth has room for its trees' roots again, and grows to the forest fitted
        // at once.
        let mut back: ForestGrowth =
            postcard::from_bytes(&postcard::to_stdvec(&growth).expect("writes")).expect("reads");
        assert_eq!(back.grown.roots.capacity(), 5);
        while back.grow_next() {}
        assert_eq!(back.finish(), forest);
        let mut bad = growth.clone();
        bad.samples_per_tree = 101;
        assert!(read(&bad).is_err());
        let mut bad = growth.clone();
        bad.grown.nodes[0].feature = 9;
        assert!(read(&bad).is_err());
        let mut bad = growth;
        bad.tree_seeds.clear();
        assert!(read(&bad).is_err());
    }

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
