//! A serving form of the AdaBoost model (the trainer's default): each feature is scaled once
//! per row instead of once per tree node, each leaf's class is resolved at load time instead of
//! an argmax per tree per row, and the total estimator weight is summed once. On the wine
//! model this is several times faster than walking `champion_model::ModelFile` directly.
//!
//! It must give bit-for-bit the probabilities `ModelFile::predict_proba_into` gives: the same
//! floating-point operations in the same order. A property test holds it to that against
//! random models and rows; any other model kind is served by `ModelFile` itself.

use champion_model::{AdaBoostModel, Model, ModelFile, Scaler};

use crate::model::Scorer;

/// One tree as flat arrays with the class of every leaf resolved (`feature < 0` marks a leaf).
struct Tree {
    feature: Vec<i32>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    leaf_class: Vec<u32>,
}

/// A tree of depth at most one (scikit-learn's default AdaBoost estimator) reduced to one
/// comparison: no loop, and a select the compiler turns into a conditional move instead of an
/// unpredictable branch.
#[derive(Clone, Copy)]
struct Stump {
    feature: u32,
    threshold: f64,
    class_le: u32,
    class_gt: u32,
}

enum Trees {
    Stumps(Vec<Stump>),
    Deep(Vec<Tree>),
}

pub struct CompiledAdaBoost {
    mean: Vec<f64>,
    scale: Vec<f64>,
    trees: Trees,
    /// Per tree: its weight w and `-1/(K-1) * w`, the vote for every class it does not predict.
    weights: Vec<(f64, f64)>,
    total_weight: f64,
    n_classes: usize,
}

/// Index of the largest value, the first on ties (numpy's argmax, as the model crate uses).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate().skip(1) {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable softmax, operation for operation as in champion-model.
fn softmax_in_place(v: &mut [f64]) {
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

impl CompiledAdaBoost {
    /// The compiled form of a verified model, or `None` for kinds served as they are.
    pub fn compile(model: &ModelFile) -> Option<Self> {
        let Model::AdaBoost(AdaBoostModel {
            trees,
            estimator_weights,
        }) = &model.model
        else {
            return None;
        };
        let k = model.n_classes();
        let other = -1.0 / (k - 1) as f64;
        let Scaler { mean, scale } = &model.scaler;
        let mut total_weight = 0.0;
        for (_, &w) in trees.iter().zip(estimator_weights) {
            total_weight += w;
        }
        let leaf_class =
            |t: &champion_model::DecisionTree, node: usize| argmax(t.node_value(node, k)) as u32;
        let all_stumps = trees.iter().all(|t| {
            t.feature[0] < 0
                || (t.feature[t.left[0] as usize] < 0 && t.feature[t.right[0] as usize] < 0)
        });
        let trees = if all_stumps {
            Trees::Stumps(
                trees
                    .iter()
                    .map(|t| {
                        if t.feature[0] < 0 {
                            let c = leaf_class(t, 0);
                            Stump {
                                feature: 0,
                                threshold: 0.0,
                                class_le: c,
                                class_gt: c,
                            }
                        } else {
                            Stump {
                                feature: t.feature[0] as u32,
                                threshold: t.threshold[0],
                                class_le: leaf_class(t, t.left[0] as usize),
                                class_gt: leaf_class(t, t.right[0] as usize),
                            }
                        }
                    })
                    .collect(),
            )
        } else {
            Trees::Deep(
                trees
                    .iter()
                    .map(|t| Tree {
                        feature: t.feature.clone(),
                        threshold: t.threshold.clone(),
                        left: t.left.clone(),
                        right: t.right.clone(),
                        leaf_class: (0..t.n_nodes()).map(|node| leaf_class(t, node)).collect(),
                    })
                    .collect(),
            )
        };
        Some(CompiledAdaBoost {
            mean: mean.clone(),
            scale: scale.clone(),
            trees,
            weights: estimator_weights.iter().map(|&w| (w, other * w)).collect(),
            total_weight,
            n_classes: k,
        })
    }

    /// Whether this form gives bit-for-bit the probabilities of `model` on a few hundred probe
    /// rows spread over the range the scaler saw. The loader serves the compiled form only
    /// when it does, so a change in champion-model's inference can cost speed, never answers.
    pub fn agrees_with(&self, model: &ModelFile) -> bool {
        let n = self.mean.len();
        let k = self.n_classes;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut row = vec![0.0; n];
        let (mut want, mut got) = (vec![0.0; k], vec![0.0; k]);
        for _ in 0..256 {
            for (f, x) in row.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let z = (seed % 8001) as f64 / 1000.0 - 4.0;
                *x = self.mean[f] + z * self.scale[f];
            }
            if model.predict_proba_into(&row, &mut want).is_err()
                || Scorer::predict_proba_into(self, &row, &mut got).is_err()
                || want
                    .iter()
                    .zip(&got)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return false;
            }
        }
        true
    }

    /// The class each tree votes for, in tree order.
    fn votes(&self, z: &[f64], mut vote: impl FnMut(usize, f64, f64)) {
        match &self.trees {
            Trees::Stumps(stumps) => {
                for (s, (w, ow)) in stumps.iter().zip(&self.weights) {
                    let c = if z[s.feature as usize] <= s.threshold {
                        s.class_le
                    } else {
                        s.class_gt
                    };
                    vote(c as usize, *w, *ow);
                }
            }
            Trees::Deep(trees) => {
                for (tree, (w, ow)) in trees.iter().zip(&self.weights) {
                    let mut i = 0usize;
                    loop {
                        let f = tree.feature[i];
                        if f < 0 {
                            break;
                        }
                        i = if z[f as usize] <= tree.threshold[i] {
                            tree.left[i] as usize
                        } else {
                            tree.right[i] as usize
                        };
                    }
                    vote(tree.leaf_class[i] as usize, *w, *ow);
                }
            }
        }
    }

    fn score(&self, z: &[f64], out: &mut [f64]) {
        let k = self.n_classes;
        // SAMME: a tree adds its weight w to the class it predicts and -w/(K-1) to every other.
        if k == 2 {
            // Two register accumulators; the same additions in the same order as the loop below.
            let (mut a0, mut a1) = (0.0f64, 0.0f64);
            self.votes(z, |c, w, ow| {
                a0 += if c == 0 { w } else { ow };
                a1 += if c == 1 { w } else { ow };
            });
            out[0] = a0;
            out[1] = a1;
        } else {
            out.fill(0.0);
            self.votes(z, |c, w, ow| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o += if j == c { w } else { ow };
                }
            });
        }
        let total = self.total_weight;
        if total != 0.0 {
            for v in out.iter_mut() {
                *v /= total;
            }
        }
        if k == 2 {
            let d = out[1] - out[0];
            out[0] = -d / 2.0;
            out[1] = d / 2.0;
        } else {
            let denom = (k - 1) as f64;
            for v in out.iter_mut() {
                *v /= denom;
            }
        }
        softmax_in_place(out);
    }
}

/// Rows up to this many features are scaled into a stack buffer.
const STACK_FEATURES: usize = 64;

impl Scorer for CompiledAdaBoost {
    fn kind(&self) -> &'static str {
        "compiled-adaboost"
    }

    fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), String> {
        let n = self.mean.len();
        if row.len() != n || out.len() != self.n_classes {
            return Err(format!(
                "row of {} values and {} outputs for a model of {n} features and {} classes",
                row.len(),
                out.len(),
                self.n_classes
            ));
        }
        let mut stack = [0.0; STACK_FEATURES];
        let mut heap = Vec::new();
        let z: &mut [f64] = if n <= STACK_FEATURES {
            &mut stack[..n]
        } else {
            heap.resize(n, 0.0);
            &mut heap
        };
        for (f, (zf, x)) in z.iter_mut().zip(row).enumerate() {
            // The same expression as `Scaler::scale_one`, so the splits see identical values.
            *zf = (x - self.mean[f]) / self.scale[f];
        }
        self.score(z, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use champion_model::{DecisionTree, MODEL_FORMAT_VERSION};
    use proptest::prelude::*;

    /// A random valid tree: node i's children are drawn after i.
    fn arb_tree(
        n_features: usize,
        k: usize,
        max_depth: usize,
    ) -> impl Strategy<Value = DecisionTree> {
        (0usize..=max_depth).prop_flat_map(move |depth| {
            let n_internal = (1usize << depth) - 1;
            let n = 2 * n_internal + 1;
            (
                proptest::collection::vec(0..n_features as i32, n_internal),
                proptest::collection::vec(-2.0f64..2.0, n_internal),
                proptest::collection::vec(0.0f64..1.0, n * k),
            )
                .prop_map(move |(feat, thr, value)| {
                    // Heap layout: node i has children 2i+1 and 2i+2; the rest are leaves.
                    let mut feature = vec![-1; n];
                    let mut threshold = vec![0.0; n];
                    let mut left = vec![0; n];
                    let mut right = vec![0; n];
                    for i in 0..n_internal {
                        feature[i] = feat[i];
                        threshold[i] = thr[i];
                        left[i] = (2 * i + 1) as u32;
                        right[i] = (2 * i + 2) as u32;
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

    fn arb_model(max_depth: usize) -> impl Strategy<Value = ModelFile> {
        (1usize..6, 2usize..5).prop_flat_map(move |(nf, k)| {
            (
                proptest::collection::vec((arb_tree(nf, k, max_depth), 0.01f64..3.0), 1..30),
                proptest::collection::vec(-5.0f64..5.0, nf),
                proptest::collection::vec(0.1f64..4.0, nf),
            )
                .prop_map(move |(trees, mean, scale)| {
                    let (trees, weights): (Vec<_>, Vec<_>) = trees.into_iter().unzip();
                    ModelFile {
                        format_version: MODEL_FORMAT_VERSION,
                        model_version: "t".into(),
                        created_at: "2026-01-01T00:00:00Z".into(),
                        feature_names: (0..nf).map(|i| format!("f{i}")).collect(),
                        class_labels: (0..k).map(|i| format!("c{i}")).collect(),
                        positive_label: None,
                        scaler: Scaler { mean, scale },
                        model: Model::AdaBoost(AdaBoostModel {
                            trees,
                            estimator_weights: weights,
                        }),
                        algorithm: "adaboost".into(),
                        params: Default::default(),
                        training_fingerprint: String::new(),
                        sha256: String::new(),
                    }
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn bit_identical_to_the_model_crate(
            model in prop_oneof![arb_model(1), arb_model(4)],
            rows in proptest::collection::vec(proptest::collection::vec(-10.0f64..10.0, 5), 1..20),
        ) {
            prop_assert!(model.validate().is_ok(), "{:?}", model.validate());
            let compiled = CompiledAdaBoost::compile(&model).expect("adaboost compiles");
            prop_assert!(compiled.agrees_with(&model));
            let nf = model.n_features();
            let k = model.n_classes();
            for row in rows {
                let row = &row[..nf];
                let mut want = vec![0.0; k];
                model.predict_proba_into(row, &mut want).unwrap();
                let mut got = vec![0.0; k];
                Scorer::predict_proba_into(&compiled, row, &mut got).unwrap();
                let want_bits: Vec<u64> = want.iter().map(|v| v.to_bits()).collect();
                let got_bits: Vec<u64> = got.iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(got_bits, want_bits, "row {:?}", row);
            }
        }
    }

    #[test]
    fn other_kinds_are_not_compiled() {
        let model = ModelFile {
            format_version: MODEL_FORMAT_VERSION,
            model_version: "t".into(),
            created_at: String::new(),
            feature_names: vec!["a".into()],
            class_labels: vec!["x".into(), "y".into()],
            positive_label: None,
            scaler: Scaler {
                mean: vec![0.0],
                scale: vec![1.0],
            },
            model: Model::Logistic(champion_model::LogisticModel {
                coefficients: vec![vec![0.0], vec![1.0]],
                intercepts: vec![0.0, 0.0],
            }),
            algorithm: "logistic".into(),
            params: Default::default(),
            training_fingerprint: String::new(),
            sha256: String::new(),
        };
        assert!(CompiledAdaBoost::compile(&model).is_none());
    }
}
