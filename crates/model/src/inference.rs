//! The inference of every model kind, written once for the trainer (scoring a holdout) and the
//! predictor (serving requests).
//!
//! Two entry points share this arithmetic: [`ModelFile::predict_proba_into`], which walks the
//! model as it was loaded, and [`CompiledModel`], a serving form built once from a validated
//! model (trees flattened into one node array, each leaf's class resolved, depth-1 AdaBoost
//! trees reduced to one comparison). Both scale a row once instead of once per tree node and
//! then hand the scaled values to the same functions below, so they give bit-for-bit the same
//! probabilities: the same floating-point operations in the same order. A property test holds
//! both to the original per-node implementation, kept as a test oracle.

use crate::error::ModelError;
use crate::model_file::{GaussianNbModel, LogisticModel, Model, ModelFile, Scaler};
use crate::tree::{DecisionTree, argmax};

/// Rows up to this many features are scaled into a buffer on the stack; wider rows (rare for a
/// tabular model) cost one allocation.
const STACK_FEATURES: usize = 64;

/// Scales `row` once, each value through [`Scaler::scale_one`] (the function training used), and
/// hands the scaled row to `f`.
#[inline]
pub(crate) fn with_scaled_row<R>(scaler: &Scaler, row: &[f64], f: impl FnOnce(&[f64]) -> R) -> R {
    let mut stack = [0.0; STACK_FEATURES];
    let mut heap = Vec::new();
    let z: &mut [f64] = if row.len() <= STACK_FEATURES {
        &mut stack[..row.len()]
    } else {
        heap.resize(row.len(), 0.0);
        &mut heap
    };
    for (i, (zi, x)) in z.iter_mut().zip(row).enumerate() {
        *zi = scaler.scale_one(i, *x);
    }
    f(z)
}

/// Checks the lengths every entry point promises to check before touching a row.
#[inline]
pub(crate) fn check_lengths(
    n_features: usize,
    n_classes: usize,
    row: &[f64],
    out: &[f64],
) -> Result<(), ModelError> {
    if row.len() != n_features {
        return Err(ModelError::RowLength {
            expected: n_features,
            got: row.len(),
        });
    }
    if out.len() != n_classes {
        return Err(ModelError::OutputLength {
            expected: n_classes,
            got: out.len(),
        });
    }
    Ok(())
}

/// The vote of every non-predicted class per unit of estimator weight in SAMME: `-1/(K-1)`.
#[inline]
pub(crate) fn samme_other(n_classes: usize) -> f64 {
    -1.0 / (n_classes - 1) as f64
}

/// scikit-learn's SAMME `predict_proba` (>= 1.4): a tree adds its weight `w` to the class it
/// predicts and `-w/(K-1)` to every other class; the sums are divided by the total weight and
/// mapped to probabilities by a softmax (a two-class model by its decision `d` as
/// `softmax([-d/2, d/2])`).
///
/// `votes` yields, tree by tree, `(predicted class, w, -w/(K-1))`; `total` is the sum of the
/// weights added in tree order.
#[inline]
pub(crate) fn samme_proba(
    out: &mut [f64],
    total: f64,
    votes: impl Iterator<Item = (usize, f64, f64)>,
) {
    let k = out.len();
    if k == 2 {
        // Two register accumulators: the same additions in the same order as the general loop.
        let (mut a0, mut a1) = (0.0f64, 0.0f64);
        for (c, w, other) in votes {
            a0 += if c == 0 { w } else { other };
            a1 += if c == 1 { w } else { other };
        }
        out[0] = a0;
        out[1] = a1;
    } else {
        out.fill(0.0);
        for (c, w, other) in votes {
            for (j, o) in out.iter_mut().enumerate() {
                *o += if j == c { w } else { other };
            }
        }
    }
    if total != 0.0 {
        for o in out.iter_mut() {
            *o /= total;
        }
    }
    if k == 2 {
        let d = out[1] - out[0];
        out[0] = -d / 2.0;
        out[1] = d / 2.0;
    } else {
        let denom = (k - 1) as f64;
        for o in out.iter_mut() {
            *o /= denom;
        }
    }
    softmax_in_place(out);
}

/// Random forest: the mean of the leaf class distributions (soft voting, as scikit-learn).
#[inline]
pub(crate) fn forest_mean<'a>(
    out: &mut [f64],
    n_trees: usize,
    leaf_values: impl Iterator<Item = &'a [f64]>,
) {
    out.fill(0.0);
    for values in leaf_values {
        for (o, v) in out.iter_mut().zip(values) {
            *o += v;
        }
    }
    let n = n_trees as f64;
    for o in out.iter_mut() {
        *o /= n;
    }
}

/// Multinomial logistic regression on a scaled row: `softmax(W z + b)`.
#[inline]
pub(crate) fn logistic_proba(m: &LogisticModel, z: &[f64], out: &mut [f64]) {
    for (c, o) in out.iter_mut().enumerate() {
        let coef = &m.coefficients[c];
        let mut s = m.intercepts[c];
        for (f, zf) in z.iter().enumerate() {
            s += coef[f] * zf;
        }
        *o = s;
    }
    softmax_in_place(out);
}

/// Gaussian naive Bayes on a scaled row: softmax of the joint log-likelihoods.
#[inline]
pub(crate) fn gaussian_nb_proba(m: &GaussianNbModel, z: &[f64], out: &mut [f64]) {
    for (c, o) in out.iter_mut().enumerate() {
        let mut jll = m.class_priors[c].ln();
        let (means, vars) = (&m.means[c], &m.variances[c]);
        for (f, zf) in z.iter().enumerate() {
            let d = zf - means[f];
            jll -= 0.5 * ((2.0 * std::f64::consts::PI * vars[f]).ln() + d * d / vars[f]);
        }
        *o = jll;
    }
    softmax_in_place(out);
}

/// Numerically stable softmax.
#[inline]
pub(crate) fn softmax_in_place(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Class probabilities of a scaled row for a model as loaded; [`ModelFile::predict_proba_into`]
/// calls it after checking lengths and scaling.
pub(crate) fn model_proba(model: &Model, k: usize, z: &[f64], out: &mut [f64]) {
    match model {
        Model::AdaBoost(m) => {
            let other = samme_other(k);
            let mut total = 0.0;
            for &w in &m.estimator_weights {
                total += w;
            }
            samme_proba(
                out,
                total,
                m.trees
                    .iter()
                    .zip(&m.estimator_weights)
                    .map(|(t, &w)| (argmax(t.node_value(t.leaf_scaled(z), k)), w, other * w)),
            );
        }
        Model::RandomForest(m) => forest_mean(
            out,
            m.trees.len(),
            m.trees.iter().map(|t| t.node_value(t.leaf_scaled(z), k)),
        ),
        Model::Logistic(m) => logistic_proba(m, z, out),
        Model::GaussianNb(m) => gaussian_nb_proba(m, z, out),
    }
}

/// A validated model prepared once for serving many rows: every tree of the ensemble in one
/// flat node array with its leaves' answers resolved, and AdaBoost of depth-1 trees (the
/// trainer's and scikit-learn's default) reduced to one comparison per tree. Gives bit-for-bit
/// what [`ModelFile::predict_proba_into`] gives, several times faster on tree ensembles.
///
/// Built by [`ModelFile::compile`]; immutable afterwards, so it can be shared across threads.
#[derive(Debug, Clone)]
pub struct CompiledModel {
    scaler: Scaler,
    n_classes: usize,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    AdaBoostStumps {
        stumps: Vec<Stump>,
        total_weight: f64,
    },
    AdaBoostTrees {
        forest: FlatForest,
        /// Per tree: its weight `w` and `-w/(K-1)`.
        weights: Vec<(f64, f64)>,
        total_weight: f64,
    },
    RandomForest {
        forest: FlatForest,
        /// `n_classes` numbers per leaf; a leaf's payload is its index here.
        leaf_values: Vec<f64>,
    },
    Logistic(LogisticModel),
    GaussianNb(GaussianNbModel),
}

/// A tree of depth at most one as one comparison; the select compiles to a conditional move
/// rather than an unpredictable branch. A single-leaf tree has `class_le == class_gt`.
#[derive(Debug, Clone, Copy)]
struct Stump {
    threshold: f64,
    weight: f64,
    other_weight: f64,
    feature: u32,
    class_le: u32,
    class_gt: u32,
}

/// Marks a leaf in [`Node::feature`].
const LEAF: u32 = u32::MAX;

/// One node of a flattened tree. A leaf (`feature == LEAF`) keeps its payload in `left`: the
/// class it votes for (AdaBoost) or the index of its class distribution (random forest).
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    feature: u32,
    left: u32,
    right: u32,
}

/// The trees of an ensemble in one node array; child indices are absolute.
#[derive(Debug, Clone)]
struct FlatForest {
    nodes: Vec<Node>,
    roots: Vec<u32>,
}

impl FlatForest {
    /// Flattens validated trees; `payload(tree, node)` gives what a leaf stores.
    fn build(
        trees: &[DecisionTree],
        mut payload: impl FnMut(&DecisionTree, usize) -> Result<u32, String>,
    ) -> Result<FlatForest, String> {
        let total: usize = trees.iter().map(DecisionTree::n_nodes).sum();
        let index = |i: usize| {
            u32::try_from(i)
                .ok()
                .filter(|&i| i != LEAF)
                .ok_or_else(|| format!("the ensemble has {total} nodes, more than a u32 indexes"))
        };
        let mut nodes = Vec::with_capacity(total);
        let mut roots = Vec::with_capacity(trees.len());
        for t in trees {
            let base = nodes.len();
            roots.push(index(base)?);
            for i in 0..t.n_nodes() {
                let node = if t.feature[i] < 0 {
                    Node {
                        threshold: 0.0,
                        feature: LEAF,
                        left: payload(t, i)?,
                        right: 0,
                    }
                } else {
                    Node {
                        threshold: t.threshold[i],
                        feature: t.feature[i] as u32,
                        left: index(base + t.left[i] as usize)?,
                        right: index(base + t.right[i] as usize)?,
                    }
                };
                nodes.push(node);
            }
        }
        Ok(FlatForest { nodes, roots })
    }

    /// The payload of the leaf a scaled row reaches from `root`, by the same comparisons as
    /// [`DecisionTree::leaf_scaled`].
    #[inline]
    fn leaf_payload(&self, root: u32, z: &[f64]) -> u32 {
        let mut i = root as usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return n.left;
            }
            i = if z[n.feature as usize] <= n.threshold {
                n.left
            } else {
                n.right
            } as usize;
        }
    }
}

impl ModelFile {
    /// The serving form of this model (see [`CompiledModel`]). Validates first, so that a model
    /// that did not come through [`ModelFile::from_json_verified`] cannot make it index out of
    /// bounds either.
    pub fn compile(&self) -> Result<CompiledModel, ModelError> {
        self.validate().map_err(ModelError::InvalidModel)?;
        let k = self.n_classes();
        let leaf_class = |t: &DecisionTree, node: usize| argmax(t.node_value(node, k)) as u32;
        let form = match &self.model {
            Model::AdaBoost(m) => {
                let other = samme_other(k);
                let mut total_weight = 0.0;
                for &w in &m.estimator_weights {
                    total_weight += w;
                }
                let is_stump = |t: &DecisionTree| {
                    t.feature[0] < 0
                        || (t.feature[t.left[0] as usize] < 0 && t.feature[t.right[0] as usize] < 0)
                };
                if m.trees.iter().all(is_stump) {
                    let stumps = m
                        .trees
                        .iter()
                        .zip(&m.estimator_weights)
                        .map(|(t, &w)| {
                            let (feature, threshold, class_le, class_gt) = if t.feature[0] < 0 {
                                // A single leaf: any feature and threshold, both sides agree.
                                (0, 0.0, leaf_class(t, 0), leaf_class(t, 0))
                            } else {
                                (
                                    t.feature[0] as u32,
                                    t.threshold[0],
                                    leaf_class(t, t.left[0] as usize),
                                    leaf_class(t, t.right[0] as usize),
                                )
                            };
                            Stump {
                                threshold,
                                weight: w,
                                other_weight: other * w,
                                feature,
                                class_le,
                                class_gt,
                            }
                        })
                        .collect();
                    Form::AdaBoostStumps {
                        stumps,
                        total_weight,
                    }
                } else {
                    let forest = FlatForest::build(&m.trees, |t, node| Ok(leaf_class(t, node)))
                        .map_err(ModelError::InvalidModel)?;
                    Form::AdaBoostTrees {
                        forest,
                        weights: m
                            .estimator_weights
                            .iter()
                            .map(|&w| (w, other * w))
                            .collect(),
                        total_weight,
                    }
                }
            }
            Model::RandomForest(m) => {
                let mut leaf_values = Vec::new();
                let forest = FlatForest::build(&m.trees, |t, node| {
                    let index = u32::try_from(leaf_values.len() / k)
                        .map_err(|_| "the forest has more leaves than a u32 indexes".to_string())?;
                    leaf_values.extend_from_slice(t.node_value(node, k));
                    Ok(index)
                })
                .map_err(ModelError::InvalidModel)?;
                Form::RandomForest {
                    forest,
                    leaf_values,
                }
            }
            Model::Logistic(m) => Form::Logistic(m.clone()),
            Model::GaussianNb(m) => Form::GaussianNb(m.clone()),
        };
        Ok(CompiledModel {
            scaler: self.scaler.clone(),
            n_classes: k,
            form,
        })
    }
}

impl CompiledModel {
    /// Number of features a row must have.
    pub fn n_features(&self) -> usize {
        self.scaler.mean.len()
    }

    /// Number of classes, the length of every probability vector.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Which serving form was chosen, for start-up logs: `adaBoostStumps`, `adaBoostTrees`,
    /// `randomForest`, `logistic` or `gaussianNb`.
    pub fn form(&self) -> &'static str {
        match self.form {
            Form::AdaBoostStumps { .. } => "adaBoostStumps",
            Form::AdaBoostTrees { .. } => "adaBoostTrees",
            Form::RandomForest { .. } => "randomForest",
            Form::Logistic(_) => "logistic",
            Form::GaussianNb(_) => "gaussianNb",
        }
    }

    /// Writes the class probabilities of one row of raw (unscaled) values, in the model's
    /// feature order, into `out`; the same contract and the same bits as
    /// [`ModelFile::predict_proba_into`]. Allocates nothing for rows of up to 64 features.
    pub fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        check_lengths(self.n_features(), self.n_classes, row, out)?;
        let k = self.n_classes;
        with_scaled_row(&self.scaler, row, |z| match &self.form {
            Form::AdaBoostStumps {
                stumps,
                total_weight,
            } => samme_proba(
                out,
                *total_weight,
                stumps.iter().map(|s| {
                    let c = if z[s.feature as usize] <= s.threshold {
                        s.class_le
                    } else {
                        s.class_gt
                    };
                    (c as usize, s.weight, s.other_weight)
                }),
            ),
            Form::AdaBoostTrees {
                forest,
                weights,
                total_weight,
            } => samme_proba(
                out,
                *total_weight,
                forest
                    .roots
                    .iter()
                    .zip(weights)
                    .map(|(&root, &(w, other))| (forest.leaf_payload(root, z) as usize, w, other)),
            ),
            Form::RandomForest {
                forest,
                leaf_values,
            } => forest_mean(
                out,
                forest.roots.len(),
                forest.roots.iter().map(|&root| {
                    let leaf = forest.leaf_payload(root, z) as usize;
                    &leaf_values[leaf * k..(leaf + 1) * k]
                }),
            ),
            Form::Logistic(m) => logistic_proba(m, z, out),
            Form::GaussianNb(m) => gaussian_nb_proba(m, z, out),
        });
        Ok(())
    }

    /// Index of the most likely class of one raw row (the first on ties).
    pub fn predict(&self, row: &[f64]) -> Result<usize, ModelError> {
        predict_with(self.n_classes, |out| self.predict_proba_into(row, out))
    }
}

/// The argmax of the probabilities `proba` writes; up to 64 classes stay on the stack.
pub(crate) fn predict_with(
    k: usize,
    proba: impl FnOnce(&mut [f64]) -> Result<(), ModelError>,
) -> Result<usize, ModelError> {
    if k <= 64 {
        let mut buf = [0.0; 64];
        proba(&mut buf[..k])?;
        Ok(argmax(&buf[..k]))
    } else {
        let mut buf = vec![0.0; k];
        proba(&mut buf)?;
        Ok(argmax(&buf))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model_file::{AdaBoostModel, MODEL_FORMAT_VERSION, RandomForestModel};

    /// The inference as it was before scaling moved out of the tree walk (scaling per node,
    /// an argmax per tree per row), kept verbatim as the oracle the faster paths must match
    /// bit for bit.
    fn oracle_proba(model: &ModelFile, row: &[f64], out: &mut [f64]) {
        fn softmax(v: &mut [f64]) {
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for x in v.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in v.iter_mut() {
                *x /= sum;
            }
        }
        let k = model.n_classes();
        let scaler = &model.scaler;
        match &model.model {
            Model::AdaBoost(m) => {
                out.fill(0.0);
                let other = -1.0 / (k - 1) as f64;
                let mut total = 0.0;
                for (tree, &w) in m.trees.iter().zip(&m.estimator_weights) {
                    let predicted = tree.predict_class(row, scaler, k);
                    for (c, o) in out.iter_mut().enumerate() {
                        *o += if c == predicted { w } else { other * w };
                    }
                    total += w;
                }
                if total != 0.0 {
                    for o in out.iter_mut() {
                        *o /= total;
                    }
                }
                if k == 2 {
                    let d = out[1] - out[0];
                    out[0] = -d / 2.0;
                    out[1] = d / 2.0;
                } else {
                    let denom = (k - 1) as f64;
                    for o in out.iter_mut() {
                        *o /= denom;
                    }
                }
                softmax(out);
            }
            Model::Logistic(m) => {
                for (c, o) in out.iter_mut().enumerate() {
                    let coef = &m.coefficients[c];
                    let mut z = m.intercepts[c];
                    for (f, x) in row.iter().enumerate() {
                        z += coef[f] * scaler.scale_one(f, *x);
                    }
                    *o = z;
                }
                softmax(out);
            }
            Model::RandomForest(m) => {
                out.fill(0.0);
                for tree in &m.trees {
                    let leaf = tree.leaf(row, scaler);
                    for (o, v) in out.iter_mut().zip(tree.node_value(leaf, k)) {
                        *o += v;
                    }
                }
                let n = m.trees.len() as f64;
                for o in out.iter_mut() {
                    *o /= n;
                }
            }
            Model::GaussianNb(m) => {
                for (c, o) in out.iter_mut().enumerate() {
                    let mut jll = m.class_priors[c].ln();
                    let (means, vars) = (&m.means[c], &m.variances[c]);
                    for (f, x) in row.iter().enumerate() {
                        let d = scaler.scale_one(f, *x) - means[f];
                        jll -=
                            0.5 * ((2.0 * std::f64::consts::PI * vars[f]).ln() + d * d / vars[f]);
                    }
                    *o = jll;
                }
                softmax(out);
            }
        }
    }

    /// A random valid tree of depth `0..=max_depth` in heap layout (node i's children are
    /// 2i+1 and 2i+2), pruned at random so that leaves sit at different depths.
    fn arb_tree(nf: usize, k: usize, max_depth: usize) -> impl Strategy<Value = DecisionTree> {
        (0usize..=max_depth).prop_flat_map(move |depth| {
            let n_internal = (1usize << depth) - 1;
            let n = 2 * n_internal + 1;
            (
                proptest::collection::vec(0..nf as i32, n_internal),
                proptest::collection::vec(arb_value(2.0), n_internal),
                proptest::collection::vec(0.0f64..1.0, n * k),
                proptest::collection::vec(any::<bool>(), n_internal),
            )
                .prop_map(move |(feat, thr, value, keep)| {
                    let mut feature = vec![-1; n];
                    let mut threshold = vec![0.0; n];
                    let mut left = vec![0; n];
                    let mut right = vec![0; n];
                    for i in 0..n_internal {
                        // A node is internal when its parent is and the draw keeps it (the
                        // root always is); the unreachable rest stays as leaves.
                        let parent_internal = i == 0 || feature[(i - 1) / 2] >= 0;
                        if parent_internal && (i == 0 || keep[i]) {
                            feature[i] = feat[i];
                            threshold[i] = thr[i];
                            left[i] = (2 * i + 1) as u32;
                            right[i] = (2 * i + 2) as u32;
                        }
                    }
                    DecisionTree {
                        feature,
                        threshold,
                        left,
                        right,
                        value,
                    }
                })
        })
    }

    fn model_file(nf: usize, k: usize, scaler: Scaler, model: Model) -> ModelFile {
        ModelFile {
            format_version: MODEL_FORMAT_VERSION,
            model_version: "t".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            feature_names: (0..nf).map(|i| format!("f{i}")).collect(),
            class_labels: (0..k).map(|i| format!("c{i}")).collect(),
            positive_label: None,
            scaler,
            model,
            algorithm: "test".into(),
            params: BTreeMap::new(),
            training_fingerprint: String::new(),
            drift_reference: None,
            sha256: String::new(),
        }
    }

    /// A number in `[-limit, limit]`: half of the time on a grid of quarters, so that scaled
    /// values land exactly on thresholds and the `<=` of every split is exercised on ties.
    fn arb_value(limit: f64) -> impl Strategy<Value = f64> {
        let quarters = (4.0 * limit) as i32;
        prop_oneof![
            (-quarters..=quarters).prop_map(|q| f64::from(q) / 4.0),
            -limit..limit,
        ]
    }

    /// Means and scales; half of the time integers and powers of two, with which scaling a
    /// grid value is exact.
    fn arb_scaler(nf: usize) -> impl Strategy<Value = Scaler> {
        let exact = (
            proptest::collection::vec((-3i32..=3).prop_map(f64::from), nf),
            proptest::collection::vec(prop_oneof![Just(0.5), Just(1.0), Just(2.0)], nf),
        );
        let any = (
            proptest::collection::vec(-5.0f64..5.0, nf),
            proptest::collection::vec(0.1f64..4.0, nf),
        );
        prop_oneof![exact, any].prop_map(|(mean, scale)| Scaler { mean, scale })
    }

    fn arb_matrix(k: usize, nf: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<Vec<f64>>> {
        proptest::collection::vec(proptest::collection::vec(lo..hi, nf), k)
    }

    /// Every model kind, with AdaBoost both as stumps (depth ≤ 1, the compiled stump form) and
    /// as deeper trees (the flattened form).
    fn arb_model() -> impl Strategy<Value = ModelFile> {
        (1usize..8, 2usize..6).prop_flat_map(|(nf, k)| {
            let ada = |max_depth: usize| {
                proptest::collection::vec((arb_tree(nf, k, max_depth), 0.01f64..3.0), 1..30)
                    .prop_map(|trees| {
                        let (trees, estimator_weights) = trees.into_iter().unzip();
                        Model::AdaBoost(AdaBoostModel {
                            trees,
                            estimator_weights,
                        })
                    })
            };
            let forest = proptest::collection::vec(arb_tree(nf, k, 4), 1..20)
                .prop_map(|trees| Model::RandomForest(RandomForestModel { trees }));
            let logistic = (
                arb_matrix(k, nf, -3.0, 3.0),
                proptest::collection::vec(-2.0f64..2.0, k),
            )
                .prop_map(|(coefficients, intercepts)| {
                    Model::Logistic(LogisticModel {
                        coefficients,
                        intercepts,
                    })
                });
            let nb = (
                proptest::collection::vec(0.01f64..1.0, k),
                arb_matrix(k, nf, -2.0, 2.0),
                arb_matrix(k, nf, 0.05, 3.0),
            )
                .prop_map(|(class_priors, means, variances)| {
                    Model::GaussianNb(GaussianNbModel {
                        class_priors,
                        means,
                        variances,
                    })
                });
            (
                arb_scaler(nf),
                prop_oneof![ada(1), ada(4), forest, logistic, nb],
            )
                .prop_map(move |(scaler, model)| model_file(nf, k, scaler, model))
        })
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn every_path_is_bit_identical_to_the_original_arithmetic(
            model in arb_model(),
            rows in proptest::collection::vec(proptest::collection::vec(arb_value(8.0), 8), 1..20),
        ) {
            prop_assert!(model.validate().is_ok(), "{:?}", model.validate());
            let compiled = model.compile().unwrap();
            prop_assert_eq!(compiled.n_features(), model.n_features());
            let (nf, k) = (model.n_features(), model.n_classes());
            for row in rows {
                let row = &row[..nf];
                let mut want = vec![0.0; k];
                oracle_proba(&model, row, &mut want);
                let mut got = vec![0.0; k];
                model.predict_proba_into(row, &mut got).unwrap();
                prop_assert_eq!(bits(&got), bits(&want), "ModelFile, row {:?}", row);
                let mut got = vec![0.0; k];
                compiled.predict_proba_into(row, &mut got).unwrap();
                prop_assert_eq!(bits(&got), bits(&want), "CompiledModel {}, row {:?}", compiled.form(), row);
                prop_assert_eq!(compiled.predict(row).unwrap(), argmax(&want));
                prop_assert_eq!(model.predict(row).unwrap(), argmax(&want));
            }
        }
    }

    fn wide_model(nf: usize) -> ModelFile {
        let stump = |f: usize, thr: f64| DecisionTree {
            feature: vec![f as i32, -1, -1],
            threshold: vec![thr, 0.0, 0.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            value: vec![0.5, 0.5, 0.7, 0.3, 0.1, 0.9],
        };
        let trees: Vec<_> = (0..nf)
            .map(|f| stump(f, (f % 5) as f64 * 0.3 - 0.6))
            .collect();
        let estimator_weights = (0..nf).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let scaler = Scaler {
            mean: (0..nf).map(|i| i as f64 * 0.1).collect(),
            scale: (0..nf).map(|i| 1.0 + i as f64 * 0.01).collect(),
        };
        model_file(
            nf,
            2,
            scaler,
            Model::AdaBoost(AdaBoostModel {
                trees,
                estimator_weights,
            }),
        )
    }

    #[test]
    fn rows_wider_than_the_stack_buffer_give_the_same_bits() {
        for nf in [STACK_FEATURES, STACK_FEATURES + 1, 3 * STACK_FEATURES] {
            let model = wide_model(nf);
            let compiled = model.compile().unwrap();
            assert_eq!(compiled.form(), "adaBoostStumps");
            for r in 0..20 {
                let row: Vec<f64> = (0..nf)
                    .map(|f| ((f * 7 + r * 13) % 17) as f64 * 0.1 - 0.8)
                    .collect();
                let (mut want, mut a, mut b) = ([0.0; 2], [0.0; 2], [0.0; 2]);
                oracle_proba(&model, &row, &mut want);
                model.predict_proba_into(&row, &mut a).unwrap();
                compiled.predict_proba_into(&row, &mut b).unwrap();
                assert_eq!(bits(&a), bits(&want), "{nf} features, row {r}");
                assert_eq!(bits(&b), bits(&want), "{nf} features, row {r}");
            }
        }
    }

    #[test]
    fn the_serving_form_follows_the_model_kind() {
        let stumps = wide_model(3);
        assert_eq!(stumps.compile().unwrap().form(), "adaBoostStumps");
        let mut deep = wide_model(3);
        if let Model::AdaBoost(m) = &mut deep.model {
            // Turn the first stump's left leaf into a split: depth 2.
            m.trees[0] = DecisionTree {
                feature: vec![0, 1, -1, -1, -1],
                threshold: vec![0.0, 0.5, 0.0, 0.0, 0.0],
                left: vec![1, 3, 0, 0, 0],
                right: vec![2, 4, 0, 0, 0],
                value: vec![0.5; 10],
            };
        }
        assert_eq!(deep.compile().unwrap().form(), "adaBoostTrees");
    }

    #[test]
    fn compiling_an_inconsistent_model_is_an_error_not_a_panic() {
        let mut m = wide_model(2);
        if let Model::AdaBoost(a) = &mut m.model {
            a.trees[1].left[0] = 7; // a child that does not exist
        }
        let err = m.compile().unwrap_err();
        assert!(matches!(err, ModelError::InvalidModel(_)), "{err}");
        assert!(err.to_string().contains("tree 1"), "{err}");
    }

    #[test]
    fn wrong_lengths_are_errors_on_the_compiled_form_too() {
        let compiled = wide_model(3).compile().unwrap();
        let err = compiled.predict(&[1.0]).unwrap_err();
        assert_eq!(err.to_string(), "expected a row of 3 feature values, got 1");
        let mut out = [0.0; 3];
        assert!(matches!(
            compiled
                .predict_proba_into(&[0.0; 3], &mut out)
                .unwrap_err(),
            ModelError::OutputLength {
                expected: 2,
                got: 3
            }
        ));
    }
}
