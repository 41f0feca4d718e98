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

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The generator of a forest's draws: the trees' seeds from the forest's, and each tree's sample
/// and splits from its own. xoshiro256++ (the same numbers on every platform) costs a few shifts
/// and adds a number; `StdRng` (ChaCha12), which grew the trees before, computes a block of rounds
/// every eight numbers, vector instructions natively and scalar ones in a `.wasm`: its draws were
/// a seventh of the forest's `.wasm` instructions and under a thirtieth of its native ones
/// (docs/performance.md). A growth stored by a build that drew from ChaCha12 grows its remaining
/// trees from this generator: still independent random trees, from their stored seeds.
type ForestRng = rand_xoshiro::Xoshiro256PlusPlus;

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
#[cfg_attr(test, derive(Serialize, Clone))]
struct StoredForest {
    scorer: StoredScorer,
    n_features: usize,
    samples_per_tree: usize,
}

impl TryFrom<StoredForest> for IsolationForest {
    type Error = String;

    fn try_from(stored: StoredForest) -> Result<Self, String> {
        if stored.scorer.roots.is_empty() {
            return Err("a stored forest has no tree".into());
        }
        check_samples_per_tree(stored.samples_per_tree)?;
        let trees = stored.scorer.roots.len();
        Ok(IsolationForest {
            scorer: stored.scorer.into_chunks(stored.n_features, stored.samples_per_tree, trees)?,
            n_features: stored.n_features,
            samples_per_tree: stored.samples_per_tree,
        })
    }
}

/// The most rows a tree may be grown on (a tree of 2^20 rows has up to 2^21 nodes, a [`Scorer`]
/// chunk of 32 MiB): a configuration or stored forest beyond it is refused rather than failing to
/// allocate.
pub const MAX_SAMPLES_PER_TREE: usize = 1 << 20;

fn check_samples_per_tree(samples: usize) -> Result<(), String> {
    if samples > MAX_SAMPLES_PER_TREE {
        return Err(format!("{samples} rows a tree is more than the {MAX_SAMPLES_PER_TREE} a tree may be grown on"));
    }
    Ok(())
}

/// The trees laid out for scoring (the forest plugin as `.wasm` ran twice as fast with it,
/// docs/performance.md): a split's children side by side (the right one after the left), and a
/// leaf that leads to itself. A row's walk then needs no branch: every tree takes
/// [`Scorer::depth`] steps, `node = left + !(row[feature] <= threshold)`, all the trees a step at a
/// time (independent loads the CPU overlaps, where a tree-by-tree walk waits on each node and
/// mispredicts half its turns). A leaf tests the row's padding feature, `-inf`, against its path
/// length (`depth + c(size)`, which it holds in `threshold`), so it always stays put.
///
/// The nodes are kept in chunks of one size, [`chunk_nodes`] each, filled with whole trees in
/// their order. A forest's memory is then whole chunks that every model of the same parameters
/// shares the size of: a model freed at a retraining leaves room the next one's chunks fit
/// exactly. Each model in one block of its own size (they vary by a tenth) left gaps that a
/// plugin's memory grew around for the first 70-100 minutes of a stream (`iotstream
/// bench-memory`, docs/performance.md); a growth's chunks become its forest's, with no copy.
#[derive(Debug, Clone, PartialEq)]
struct Scorer {
    /// The trees' nodes, chunk by chunk: each chunk has room for `chunk_nodes`, and each tree's
    /// nodes are in one chunk, their indices (roots, children) counted from the chunk's start.
    chunks: Vec<Vec<ScoreNode>>,
    /// Each tree's root in its chunk, in the trees' order.
    roots: Vec<u32>,
    /// Where each chunk's trees end: chunk `c` holds trees `tree_ends[c - 1]..tree_ends[c]`.
    tree_ends: Vec<u32>,
    /// The room of every chunk, in nodes.
    chunk_nodes: usize,
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
/// Rows [`IsolationForest::score_rows`] walks through a chunk's trees side by side.
const ROWS_TOGETHER: usize = 4;

/// The nodes of a [`Scorer`]'s chunk, unless a tree can have more (32 KiB: room for four of the
/// largest trees of 256 rows, ten of the 204 nodes such trees take on uniform random rows). A
/// forest of 100 such trees takes 10 or 11 chunks, its last chunk and each chunk's end unused: a
/// tenth more than its nodes.
const CHUNK_NODES: usize = 2048;

/// The room of each chunk of a forest whose trees are grown on `samples_per_tree` rows: one of
/// its largest trees at least.
fn chunk_nodes(samples_per_tree: usize) -> usize {
    CHUNK_NODES.max(max_tree_nodes(samples_per_tree))
}

impl Scorer {
    /// A scorer with no tree yet, with room for the roots of `trees` trees grown on
    /// `samples_per_tree` rows and for the chunks they can take at most.
    fn new(trees: usize, samples_per_tree: usize) -> Self {
        let chunk_nodes = chunk_nodes(samples_per_tree);
        let most_chunks = trees.div_ceil(chunk_nodes / max_tree_nodes(samples_per_tree));
        Scorer {
            chunks: Vec::with_capacity(most_chunks),
            roots: Vec::with_capacity(trees),
            tree_ends: Vec::with_capacity(most_chunks),
            chunk_nodes,
            depth: 0,
        }
    }

    /// Nodes in all the trees.
    fn node_count(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// The chunk with room for `nodes` more: the last one, or a new one after it.
    fn chunk_with_room(&mut self, nodes: usize) -> usize {
        if self.chunks.last().is_none_or(|chunk| chunk.len() + nodes > self.chunk_nodes) {
            self.chunks.push(Vec::with_capacity(self.chunk_nodes));
            self.tree_ends.push(self.roots.len() as u32);
        }
        self.chunks.len() - 1
    }

    /// Counts a tree just laid out in the last chunk, at `root`.
    fn close_tree(&mut self, root: u32) {
        self.roots.push(root);
        if let Some(end) = self.tree_ends.last_mut() {
            *end = self.roots.len() as u32;
        }
    }

    /// Lays `tree` out after the trees already here (its leaves test feature `leaf_feature`, the
    /// row's padding).
    fn push_tree(&mut self, tree: &Tree, leaf_feature: u32) {
        let chunk = self.chunk_with_room(tree.nodes.len());
        let nodes = &mut self.chunks[chunk];
        let root = nodes.len() as u32;
        nodes.push(ScoreNode { threshold: 0.0, feature: leaf_feature, left: root });
        // (index in `tree.nodes`, its place in `nodes`, its depth), breadth first.
        let mut queue = std::collections::VecDeque::from([(0usize, root, 0usize)]);
        while let Some((node, place, depth)) = queue.pop_front() {
            nodes[place as usize] = match tree.nodes[node] {
                Node::Leaf { size } => {
                    self.depth = self.depth.max(depth);
                    let path = depth as f64 + leaf_path_length(size as usize);
                    ScoreNode { threshold: path, feature: leaf_feature, left: place }
                }
                Node::Split { feature, threshold, left, right } => {
                    let children = nodes.len() as u32;
                    // The children's places, written when the queue reaches them.
                    let unwritten = ScoreNode { threshold: 0.0, feature: leaf_feature, left: children };
                    nodes.extend([unwritten, unwritten]);
                    queue.push_back((left as usize, children, depth + 1));
                    queue.push_back((right as usize, children + 1, depth + 1));
                    ScoreNode { threshold, feature, left: children }
                }
            };
        }
        self.close_tree(root);
    }

    /// Each chunk's nodes with the trees it holds, as a range of tree indices.
    fn chunks_with_trees(&self) -> impl Iterator<Item = (&[ScoreNode], std::ops::Range<usize>)> {
        let starts = std::iter::once(0).chain(self.tree_ends.iter().map(|&end| end as usize));
        self.chunks
            .iter()
            .zip(starts.zip(&self.tree_ends))
            .map(|(chunk, (start, &end))| (chunk.as_slice(), start..end as usize))
    }

    /// Walks every tree with `row` (its features, then `-inf`); leaves each tree's leaf, in its
    /// chunk, in `at`.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(x <= t)`, not `x > t`: a NaN goes right, as the node-by-node walk sends it"
    )]
    fn walk(&self, row: &[f64], at: &mut [u32]) {
        at.copy_from_slice(&self.roots);
        for (nodes, trees) in self.chunks_with_trees() {
            let step = |node: &mut u32| {
                let n = nodes[*node as usize];
                *node = n.left + u32::from(!(row[n.feature as usize] <= n.threshold));
            };
            let at = &mut at[trees];
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

    /// Adds each padded row's path lengths (rows of `width` values: the features, then `-inf`)
    /// to its total in `totals`, in the trees' order, walking a chunk's trees with every row before
    /// the next chunk's: a chunk's nodes stay in the core's nearest cache while all the rows pass
    /// through them, where one row walked through the whole forest reaches every chunk once. Each
    /// total gets the same additions in the same order as [`total_path_length`](Self::total_path_length)
    /// of the row's [`walk`](Self::walk): the same bits.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(x <= t)`, not `x > t`: a NaN goes right, as the node-by-node walk sends it"
    )]
    fn add_path_lengths(&self, padded: &[f64], width: usize, totals: &mut [f64], at: &mut [u32]) {
        for (nodes, trees) in self.chunks_with_trees() {
            let roots = &self.roots[trees.clone()];
            let n = roots.len();
            // Rows in groups of ROWS_TOGETHER: their walks are independent, so a core overlaps
            // their loads.
            for (rows, totals) in padded.chunks(width * ROWS_TOGETHER).zip(totals.chunks_mut(ROWS_TOGETHER)) {
                let group = totals.len();
                let at = &mut at[..n * group];
                for k in 0..group {
                    at[k * n..(k + 1) * n].copy_from_slice(roots);
                }
                for _ in 0..self.depth {
                    for (k, at) in at.chunks_exact_mut(n).enumerate() {
                        let row = &rows[k * width..(k + 1) * width];
                        let step = |node: &mut u32| {
                            let s = nodes[*node as usize];
                            *node = s.left + u32::from(!(row[s.feature as usize] <= s.threshold));
                        };
                        // Four trees a turn, as in `walk`.
                        let mut fours = at.chunks_exact_mut(4);
                        for four in &mut fours {
                            four.iter_mut().for_each(step);
                        }
                        fours.into_remainder().iter_mut().for_each(step);
                    }
                }
                for (at, total) in at.chunks_exact(n).zip(totals.iter_mut()) {
                    for &leaf in at {
                        *total += nodes[leaf as usize].threshold;
                    }
                }
            }
        }
    }

    /// The path lengths of the leaves `at` (as [`walk`](Self::walk) leaves them), summed in the
    /// trees' order.
    fn total_path_length(&self, at: &[u32]) -> f64 {
        let mut total = 0.0;
        for (nodes, trees) in self.chunks_with_trees() {
            for &leaf in &at[trees] {
                total += nodes[leaf as usize].threshold;
            }
        }
        total
    }
}

/// Written as a [`StoredScorer`]: every tree's nodes in one array, a root's or child's index
/// counted from the array's start (the layout every state was written in before the chunks).
impl Serialize for Scorer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};
        /// The chunks' nodes one after the other, their indices moved by their chunk's start.
        struct Nodes<'a>(&'a Scorer);
        impl Serialize for Nodes<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.node_count()))?;
                let mut start = 0;
                for chunk in &self.0.chunks {
                    for node in chunk {
                        seq.serialize_element(&ScoreNode { left: node.left + start, ..*node })?;
                    }
                    start += chunk.len() as u32;
                }
                seq.end()
            }
        }
        /// The roots, moved by their chunk's start.
        struct Roots<'a>(&'a Scorer);
        impl Serialize for Roots<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.roots.len()))?;
                let mut start = 0;
                for (chunk, trees) in self.0.chunks_with_trees() {
                    for &root in &self.0.roots[trees] {
                        seq.serialize_element(&(root + start))?;
                    }
                    start += chunk.len() as u32;
                }
                seq.end()
            }
        }
        let mut scorer = serializer.serialize_struct("Scorer", 3)?;
        scorer.serialize_field("nodes", &Nodes(self))?;
        scorer.serialize_field("roots", &Roots(self))?;
        scorer.serialize_field("depth", &self.depth)?;
        scorer.end()
    }
}

/// A [`Scorer`] as it is stored: every tree's nodes in one array, each tree's from its root up to
/// the next tree's, a root's or child's index counted from the array's start.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize, Clone))]
struct StoredScorer {
    nodes: Vec<ScoreNode>,
    roots: Vec<u32>,
    depth: usize,
}

impl StoredScorer {
    /// The scorer in chunks, for trees grown on `samples_per_tree` rows (at most
    /// [`MAX_SAMPLES_PER_TREE`]) with room for the roots of `trees`, once every walk of a row of
    /// `n_features` (padded with one more) is found to stay within its tree: the trees follow each
    /// other from the first node, each has no more nodes than a tree of `samples_per_tree` rows
    /// can, each child is one of its tree's nodes, each feature one of the row's, and a leaf (the
    /// padding feature) leads to itself; and no walk takes more steps than there are nodes (a tree
    /// `depth` deep has more than `depth` nodes). What a scorer read back must pass before it walks.
    fn into_chunks(self, n_features: usize, samples_per_tree: usize, trees: usize) -> Result<Scorer, String> {
        let len = self.nodes.len();
        if self.depth > len {
            return Err(format!("a walk of {} steps through {len} nodes", self.depth));
        }
        let most_nodes = max_tree_nodes(samples_per_tree);
        let mut scorer = Scorer::new(trees.max(self.roots.len()), samples_per_tree);
        scorer.depth = self.depth;
        let mut start = 0usize;
        for (tree, &root) in self.roots.iter().enumerate() {
            let end = self.roots.get(tree + 1).map_or(len, |&next| next as usize);
            if root as usize != start || end <= start || end > len {
                return Err(format!(
                    "tree {tree}'s root {root} is not where the tree before it ends ({start}), \
                     or leads past the forest's {len} nodes"
                ));
            }
            if end - start > most_nodes {
                return Err(format!(
                    "tree {tree} has {} nodes, more than a tree of {samples_per_tree} rows can ({most_nodes})",
                    end - start
                ));
            }
            let chunk = scorer.chunk_with_room(end - start);
            let nodes = &mut scorer.chunks[chunk];
            let base = nodes.len() as u32;
            for (at, node) in self.nodes[start..end].iter().enumerate().map(|(i, node)| (start + i, node)) {
                let fine = match (node.feature as usize).cmp(&n_features) {
                    std::cmp::Ordering::Less => (start..end - 1).contains(&(node.left as usize)),
                    std::cmp::Ordering::Equal => node.left as usize == at,
                    std::cmp::Ordering::Greater => false,
                };
                if !fine {
                    return Err(format!(
                        "node {at} of tree {tree} (feature {}, left {}) leads outside the tree's nodes {start}..{end}",
                        node.feature, node.left
                    ));
                }
                nodes.push(ScoreNode { left: node.left - root + base, ..*node });
            }
            scorer.close_tree(base);
            start = end;
        }
        if start != len {
            return Err(format!("nodes {start}..{len} belong to no tree"));
        }
        Ok(scorer)
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

    /// Row `i`'s value of `feature` (less than the width): one bounds check, where slicing the row
    /// first checks its range too (a tree's growth reads a value a row and node).
    fn value(&self, i: usize, feature: usize) -> f64 {
        debug_assert!(feature < self.width, "feature {feature} of rows of {}", self.width);
        self.values[i * self.width + feature]
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
    /// The trees grown so far, laid out for scoring in the chunks that become the forest's: a chunk
    /// at a time as the trees need them, not room for the most nodes they could have (818 KB for
    /// 100 trees of 256 rows, 2.5 times what such trees take, 204 nodes a tree on uniform random
    /// rows of 511 at most, which every instance used to keep).
    grown: Scorer,
}

/// A growth as it is read back, checked before it grows or scores.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize, Clone))]
struct StoredGrowth {
    rows: FlatRows,
    samples_per_tree: usize,
    tree_seeds: Vec<u64>,
    grown: StoredScorer,
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
        check_samples_per_tree(samples_per_tree)?;
        // Room for every tree's root, as `new` reserved it.
        let grown = grown.into_chunks(rows.width, samples_per_tree, tree_seeds.len())?;
        Ok(ForestGrowth { rows, samples_per_tree, tree_seeds, grown })
    }
}

/// The most nodes a tree grown on `rows` rows can have: a split leaves at least one row each
/// side, and the depth limit is `ceil(log2(rows))`, so `2 rows - 1` (and 1 for a single row).
fn max_tree_nodes(rows: usize) -> usize {
    rows.saturating_mul(2).saturating_sub(1).max(1)
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
        let mut forest_rng = ForestRng::seed_from_u64(params.seed);
        let samples_per_tree = params.max_samples.min(rows.len());
        check_samples_per_tree(samples_per_tree).map_err(FitError::BadParams)?;
        Ok(ForestGrowth {
            rows: FlatRows::new(rows, n_features),
            samples_per_tree,
            tree_seeds: (0..params.n_estimators).map(|_| forest_rng.random()).collect(),
            grown: Scorer::new(params.n_estimators, samples_per_tree),
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
        let mut rng = ForestRng::seed_from_u64(seed);
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
        IsolationForest { scorer: self.grown, n_features: self.rows.width, samples_per_tree: self.samples_per_tree }
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
    rng: &'a mut ForestRng,
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
            // Comparisons, not `min`/`max`: as `.wasm` those are calls to libm (the rows are
            // finite, so the result is the same).
            let widen = |(lo, hi): (f64, f64), &i: &usize| {
                let v = self.rows.value(i, feature);
                (if v < lo { v } else { lo }, if v > hi { v } else { hi })
            };
            // Four rows a turn of the loop (a wasm build checks the host's deadline at every turn).
            let mut fours = sample.chunks_exact(4);
            let range =
                (&mut fours).fold((f64::INFINITY, f64::NEG_INFINITY), |range, four| four.iter().fold(range, widen));
            let (lo, hi) = fours.remainder().iter().fold(range, widen);
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
            if self.rows.value(sample[i], feature) <= threshold {
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
        self.score_of_total(self.scorer.total_path_length(leaves))
    }

    /// The score of a row whose path lengths total `total`.
    fn score_of_total(&self, total: f64) -> f64 {
        let mean = total / self.scorer.roots.len() as f64;
        let norm = average_path_length(self.samples_per_tree);
        if norm == 0.0 { 1.0 } else { 2f64.powf(-mean / norm) }
    }

    /// The scores of `rows` (each of length [`Self::n_features`] at least), in their order: each
    /// the same bits as [`score`](Self::score) of the row, at less cost a row when there are
    /// several (the forest's nodes are walked a chunk at a time with every row).
    ///
    /// # Panics
    /// If a row is shorter than [`Self::n_features`].
    pub fn score_rows<R: AsRef<[f64]>>(&self, rows: &[R]) -> Vec<f64> {
        if rows.len() < ROWS_TOGETHER {
            // Too few to walk side by side: one by one costs less than padding them together
            // (a model per sensor sees a reading or two a call).
            return rows.iter().map(|row| self.score(row.as_ref())).collect();
        }
        let width = self.n_features + 1;
        let mut padded = vec![f64::NEG_INFINITY; rows.len() * width];
        for (row, to) in rows.iter().zip(padded.chunks_exact_mut(width)) {
            to[..self.n_features].copy_from_slice(&row.as_ref()[..self.n_features]);
        }
        let mut totals = vec![0.0; rows.len()];
        let most_trees = self.scorer.chunks_with_trees().map(|(_, trees)| trees.len()).max().unwrap_or(0);
        let mut at = vec![0u32; most_trees * ROWS_TOGETHER];
        self.scorer.add_path_lengths(&padded, width, &mut totals, &mut at);
        totals.into_iter().map(|total| self.score_of_total(total)).collect()
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
    use rand::rngs::StdRng;

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
                // Each tree's leaf, in its chunk.
                let paths: Vec<f64> = forest
                    .scorer
                    .chunks_with_trees()
                    .flat_map(|(nodes, trees)| leaves[trees].iter().map(|&leaf| nodes[leaf as usize].threshold))
                    .collect();
                assert_eq!(paths.len(), trees.len());
                for (tree, path) in trees.iter().zip(&paths) {
                    let expected = path_length(tree, probe);
                    assert_eq!(path.to_bits(), expected.to_bits(), "{probe:?}");
                }
                let by_trees = trees.iter().map(|tree| path_length(tree, probe)).sum::<f64>() / trees.len() as f64;
                let expected = 2f64.powf(-by_trees / average_path_length(forest.samples_per_tree));
                assert_eq!(forest.score(probe).to_bits(), expected.to_bits(), "{probe:?}");
            }
            // Scored together, chunk by chunk, every row gets the same bits from its trees.
            let together = forest.score_rows(&probes);
            assert_eq!(together.len(), probes.len());
            for (probe, score) in probes.iter().zip(&together) {
                let by_trees = trees.iter().map(|tree| path_length(tree, probe)).sum::<f64>() / trees.len() as f64;
                let expected = 2f64.powf(-by_trees / average_path_length(forest.samples_per_tree));
                assert_eq!(score.to_bits(), expected.to_bits(), "{probe:?} scored with the others");
            }
            assert!(forest.scorer.chunks.len() > 1, "the rows cross chunks");
            // Fewer rows than are walked side by side, and a group left over.
            for n in [1, ROWS_TOGETHER - 1, ROWS_TOGETHER + 1] {
                assert_eq!(forest.score_rows(&probes[..n]), together[..n], "{n} rows");
            }
            assert_eq!(forest.score_rows::<[f64; 3]>(&[]), Vec::<f64>::new());
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
            let scored_one_by_one: Vec<u64> = rows.iter().map(|row| forest.score(row).to_bits()).collect();
            let scored_together: Vec<u64> = forest.score_rows(&rows).into_iter().map(f64::to_bits).collect();
            assert_eq!(scored_together, scored_one_by_one, "width {width}");
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

    /// A growth takes room a chunk at a time as its trees need it, not for the largest trees it
    /// could grow (100 trees of at most 2 x 256 - 1 nodes here): chunks of exactly
    /// [`CHUNK_NODES`], each filled with the trees that come in order while they fit (packed here
    /// from the grown trees' sizes), and the forest it gives keeps those very chunks.
    #[test]
    fn a_growth_takes_chunks_of_one_size_as_its_trees_grow_and_its_forest_keeps_them() {
        let rows = random_rows(&mut StdRng::seed_from_u64(8), 800);
        let params = ForestParams { n_estimators: 100, max_samples: 256, seed: 4 };
        let mut growth = ForestGrowth::new(&params, &rows).expect("starts");
        assert_eq!((growth.grown.chunks.len(), growth.grown.roots.capacity()), (0, 100));
        let sizes: Vec<usize> = grown_trees(&params, &rows).iter().map(|tree| tree.nodes.len()).collect();
        // The chunks' trees, by hand: a tree that does not fit in the chunk so far starts the next.
        let mut packed: Vec<Vec<usize>> = Vec::new();
        for &size in &sizes {
            match packed.last_mut() {
                Some(chunk) if chunk.iter().sum::<usize>() + size <= 2048 => chunk.push(size),
                _ => packed.push(vec![size]),
            }
        }
        while growth.grow_next() {}
        let chunks: Vec<(usize, usize)> = growth.grown.chunks.iter().map(|c| (c.len(), c.capacity())).collect();
        let expected: Vec<(usize, usize)> = packed.iter().map(|trees| (trees.iter().sum(), 2048)).collect();
        assert_eq!(chunks, expected);
        let in_trees: usize = sizes.iter().sum();
        // About 204 nodes a tree, of 511 at most: 10 or 11 chunks, not the 25 of the largest trees.
        assert!((10..=11).contains(&chunks.len()) && (19_000..22_000).contains(&in_trees), "{in_trees} nodes");
        let mut end = 0;
        let ends: Vec<u32> = packed
            .iter()
            .map(|trees| {
                end += trees.len() as u32;
                end
            })
            .collect();
        assert_eq!(growth.grown.tree_ends, ends);
        let growth_chunks: Vec<*const ScoreNode> = growth.grown.chunks.iter().map(|c| c.as_ptr()).collect();
        let forest = growth.finish();
        let forest_chunks: Vec<*const ScoreNode> = forest.scorer.chunks.iter().map(|c| c.as_ptr()).collect();
        assert_eq!(forest_chunks, growth_chunks, "the forest keeps the growth's chunks, not a copy");
        assert_eq!((forest.scorer.roots.len(), forest.scorer.roots.capacity()), (100, 100));
    }

    /// What a forest writes is every tree's nodes in one array, children and roots counted from
    /// its start (the layout states were written in before the chunks, so they read as before): a
    /// walk of that array, node by node from each root, ends at the trees' own path lengths.
    #[test]
    fn a_forest_writes_its_chunks_as_one_array_of_nodes() {
        let rows = random_rows(&mut StdRng::seed_from_u64(12), 600);
        let params = ForestParams { seed: 6, ..ForestParams::default() };
        let forest = params.fit_rows(&rows).expect("fits");
        assert!(forest.scorer.chunks.len() > 5);
        let trees = grown_trees(&params, &rows);
        let stored: StoredForest = postcard::from_bytes(&postcard::to_stdvec(&forest).expect("writes")).expect("reads");
        let (nodes, roots) = (&stored.scorer.nodes, &stored.scorer.roots);
        assert_eq!(nodes.len(), trees.iter().map(|tree| tree.nodes.len()).sum::<usize>());
        assert_eq!((stored.n_features, stored.samples_per_tree, stored.scorer.depth), (3, 256, forest.scorer.depth));
        for probe in rows.iter().take(50).chain(&[[40.0, -3.0, 0.5], [f64::NAN, 0.2, 0.1]]) {
            for (tree, &root) in trees.iter().zip(roots) {
                let mut node = root as usize;
                while (nodes[node].feature as usize) < 3 {
                    let n = nodes[node];
                    // A NaN goes right, as in the scorer's walk.
                    let left = probe[n.feature as usize] <= n.threshold;
                    node = n.left as usize + usize::from(!left);
                }
                assert_eq!(nodes[node].threshold.to_bits(), path_length(tree, probe).to_bits(), "{probe:?}");
            }
        }
    }

    /// A change made to what was stored, before it is read back.
    type Corruption<T> = Box<dyn Fn(&mut T)>;

    /// A stored forest or growth whose walk would leave its tree, or whose rows cannot be drawn
    /// from, is refused when read back, not found out by a panic when it scores.
    #[test]
    fn a_stored_forest_that_leads_outside_its_trees_is_refused() {
        let rows = random_rows(&mut StdRng::seed_from_u64(2), 100);
        let params = ForestParams { n_estimators: 5, max_samples: 32, seed: 1 };
        let forest = params.fit_rows(&rows).expect("fits");
        let stored: StoredForest = postcard::from_bytes(&postcard::to_stdvec(&forest).expect("writes")).expect("reads");
        let read = |stored: &StoredForest| {
            postcard::from_bytes::<IsolationForest>(&postcard::to_stdvec(stored).expect("writes")).map(|_| ())
        };
        assert_eq!(read(&stored), Ok(()));
        let nodes = &stored.scorer.nodes;
        let split = nodes.iter().position(|n| n.feature < 3).expect("a split");
        let leaf = nodes.iter().position(|n| n.feature == 3).expect("a leaf");
        let last = nodes.len() as u32 - 1;
        // The first split of the second tree, and where that tree starts.
        let second = stored.scorer.roots[1];
        let corruptions: Vec<Corruption<StoredForest>> = vec![
            Box::new(move |f| f.scorer.roots[0] = last + 1),
            Box::new(move |f| f.scorer.nodes[split].left = last),
            // Into the next tree's nodes: inside the forest, outside its own tree.
            Box::new(move |f| f.scorer.nodes[split].left = second),
            Box::new(move |f| f.scorer.roots[1] += 1),
            Box::new(move |f| f.scorer.roots.swap(1, 2)),
            Box::new(move |f| f.scorer.nodes[split].feature = 4),
            Box::new(move |f| f.scorer.nodes[leaf].left += 1),
            Box::new(|f| f.scorer.roots.clear()),
            Box::new(move |f| f.scorer.depth = last as usize + 2),
            // Trees larger than trees of 4 rows can be (7 nodes).
            Box::new(|f| f.samples_per_tree = 4),
            Box::new(|f| f.samples_per_tree = MAX_SAMPLES_PER_TREE + 1),
        ];
        for (i, corrupt) in corruptions.iter().enumerate() {
            let mut bad = stored.clone();
            corrupt(&mut bad);
            assert!(read(&bad).is_err(), "corruption {i}: {:?}", bad.scorer.roots);
        }
        let mut growth = ForestGrowth::new(&params, &rows).expect("starts");
        growth.grow_next();
        growth.grow_next();
        let stored: StoredGrowth = postcard::from_bytes(&postcard::to_stdvec(&growth).expect("writes")).expect("reads");
        let read = |stored: &StoredGrowth| {
            postcard::from_bytes::<ForestGrowth>(&postcard::to_stdvec(stored).expect("writes")).map(|_| ())
        };
        assert_eq!(read(&stored), Ok(()));
        // Read back, a growth has room for its trees' roots again, and grows to the forest fitted
        // at once.
        let mut back: ForestGrowth =
            postcard::from_bytes(&postcard::to_stdvec(&growth).expect("writes")).expect("reads");
        assert_eq!((back.grown(), back.grown.roots.capacity()), (2, 5));
        while back.grow_next() {}
        assert_eq!(back.finish(), forest);
        let corruptions: Vec<Corruption<StoredGrowth>> = vec![
            Box::new(|g| g.samples_per_tree = 101),
            Box::new(|g| g.grown.nodes[0].feature = 9),
            Box::new(|g| g.grown.roots[1] = 0),
            Box::new(|g| g.tree_seeds.clear()),
        ];
        for (i, corrupt) in corruptions.iter().enumerate() {
            let mut bad = stored.clone();
            corrupt(&mut bad);
            assert!(read(&bad).is_err(), "growth corruption {i}");
        }
    }

    /// Configured beyond [`MAX_SAMPLES_PER_TREE`] rows a tree, a growth is refused, not a chunk
    /// too large to allocate.
    #[test]
    fn a_growth_of_more_rows_a_tree_than_the_most_is_refused() {
        let rows = vec![[1.0]; MAX_SAMPLES_PER_TREE + 1];
        let params = ForestParams { n_estimators: 1, max_samples: usize::MAX, seed: 0 };
        assert!(matches!(ForestGrowth::new(&params, &rows), Err(FitError::BadParams(_))));
        assert!(ForestGrowth::new(&params, &rows[1..]).is_ok());
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
