//! A weighted CART classification tree (gini), grown level by level over presorted features.
//!
//! Why not only linfa-trees: linfa re-sorts every feature on every fit and keeps per-class
//! weights in hash maps, so the 50 boosting rounds of the default AdaBoost take ~40 ms on the
//! 762 wine rows; the budget is a tenth of scikit-learn's 0.13 s. Here the features are sorted
//! once per ensemble and every level of a tree is one linear scan per feature, which fits the
//! same 50 stumps in ~7 ms (bench: `make bench-trainer`). The splits follow scikit-learn's
//! `DecisionTreeClassifier`: gini impurity, thresholds at midpoints between consecutive
//! distinct values (closer than 1e-7 counts as equal), `x <= threshold` goes left, a node is
//! split while it is impure, has two or more samples and is above `max_depth`.
//! linfa-trees remains available for AdaBoost with `--param tree=linfa`.

use champion_model::DecisionTree;
use ndarray::ArrayView2;
use rand::Rng;
use rand::seq::index::sample;

/// Values closer than this are one value (scikit-learn's FEATURE_THRESHOLD).
const FEATURE_THRESHOLD: f64 = 1e-7;

/// (row, value) pairs sorted by each feature's value, computed once per ensemble; the values
/// ride along so a scan reads memory in order.
pub struct Presorted {
    by_feature: Vec<Vec<(u32, f64)>>,
}

impl Presorted {
    pub fn new(z: ArrayView2<f64>) -> Presorted {
        let by_feature = z
            .columns()
            .into_iter()
            .map(|col| {
                let mut pairs: Vec<(u32, f64)> = col
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as u32, *v))
                    .collect();
                pairs.sort_by(|a, b| a.1.total_cmp(&b.1));
                pairs
            })
            .collect();
        Presorted { by_feature }
    }
}

/// How a tree grows.
pub struct TreeSpec {
    /// None: until leaves are pure.
    pub max_depth: Option<usize>,
    /// Features tried per node; None: all (AdaBoost), Some(m): a random m (random forest).
    pub max_features: Option<usize>,
}

struct Node {
    depth: usize,
    class_weight: Vec<f64>,
    weight: f64,
    samples: usize,
    /// Best split found so far: (score to maximise, feature, threshold).
    best: Option<(f64, usize, f64)>,
    /// Features this node may split on (None: all).
    features: Option<Vec<bool>>,
}

impl Node {
    fn impure(&self) -> bool {
        self.class_weight.iter().filter(|w| **w > 0.0).count() > 1
    }
}

/// Fits one tree on rows `z` (already scaled) with classes `y` and non-negative `weights`;
/// rows of weight 0 do not take part (how bootstrap samples are expressed). Returns the tree
/// and the leaf each row of positive weight ended in (`u32::MAX` for the others), which saves
/// AdaBoost from walking the tree again.
pub fn fit_tree<R: Rng>(
    z: ArrayView2<f64>,
    y: &[usize],
    weights: &[f64],
    k: usize,
    presorted: &Presorted,
    spec: &TreeSpec,
    rng: &mut R,
) -> (DecisionTree, Vec<u32>) {
    let (n, nf) = (z.nrows(), z.ncols());
    let mut root = Node {
        depth: 0,
        class_weight: vec![0.0; k],
        weight: 0.0,
        samples: 0,
        best: None,
        features: None,
    };
    for i in 0..n {
        if weights[i] > 0.0 {
            root.class_weight[y[i]] += weights[i];
            root.weight += weights[i];
            root.samples += 1;
        }
    }
    let mut nodes = vec![root];
    let mut tree = DecisionTree {
        feature: vec![-1],
        threshold: vec![0.0],
        left: vec![0],
        right: vec![0],
        value: Vec::new(),
    };
    // The node each row is in (u32::MAX: a row of weight 0, which is routed at the end).
    let mut node_of: Vec<u32> = weights
        .iter()
        .map(|w| if *w > 0.0 { 0 } else { u32::MAX })
        .collect();
    let mut active: Vec<usize> = vec![0];
    let mut slot_of: Vec<u32> = Vec::new();
    while !active.is_empty() {
        active.retain(|&id| {
            let node = &nodes[id];
            node.samples >= 2 && node.impure() && spec.max_depth.is_none_or(|d| node.depth < d)
        });
        if active.is_empty() {
            break;
        }
        if let Some(m) = spec.max_features.filter(|m| *m < nf) {
            for &id in &active {
                let mut mask = vec![false; nf];
                for f in sample(rng, nf, m).iter() {
                    mask[f] = true;
                }
                nodes[id].features = Some(mask);
            }
        }
        // Flat per-slot accumulators (slot = position in `active`) keep the scan, which is
        // most of the fit, free of allocation and indirection.
        let na = active.len();
        slot_of.clear();
        slot_of.resize(nodes.len(), u32::MAX);
        for (slot, &id) in active.iter().enumerate() {
            slot_of[id] = slot as u32;
        }
        let mut best: Vec<Option<(f64, usize, f64)>> = vec![None; na];
        let mut left = vec![0.0; na * k];
        let mut left_weight = vec![0.0; na];
        let mut left_sumsq = vec![0.0; na];
        let mut last = vec![0.0; na];
        let mut started = vec![false; na];
        let mut allowed = vec![true; na];
        for f in 0..nf {
            left.fill(0.0);
            left_weight.fill(0.0);
            left_sumsq.fill(0.0);
            started.fill(false);
            for (slot, &id) in active.iter().enumerate() {
                allowed[slot] = nodes[id].features.as_ref().is_none_or(|m| m[f]);
            }
            for &(i, v) in &presorted.by_feature[f] {
                let i = i as usize;
                let id = node_of[i];
                if id == u32::MAX {
                    continue;
                }
                let slot = slot_of[id as usize];
                if slot == u32::MAX {
                    continue;
                }
                let slot = slot as usize;
                if !allowed[slot] {
                    continue;
                }
                let acc = &mut left[slot * k..(slot + 1) * k];
                if started[slot] && v > last[slot] + FEATURE_THRESHOLD {
                    let node = &nodes[active[slot]];
                    let lw = left_weight[slot];
                    let right_weight = node.weight - lw;
                    if lw > 0.0 && right_weight > 0.0 {
                        let right_sumsq: f64 = node
                            .class_weight
                            .iter()
                            .zip(acc.iter())
                            .map(|(t, l)| (t - l) * (t - l))
                            .sum();
                        // Minimising the children's weighted gini is maximising this.
                        let score = left_sumsq[slot] / lw + right_sumsq / right_weight;
                        if best[slot].is_none_or(|(b, _, _)| score > b + 1e-12) {
                            let mut threshold = last[slot] / 2.0 + v / 2.0;
                            if threshold == v || !threshold.is_finite() {
                                threshold = last[slot];
                            }
                            best[slot] = Some((score, f, threshold));
                        }
                    }
                }
                let w = weights[i];
                let c = y[i];
                left_sumsq[slot] += 2.0 * acc[c] * w + w * w;
                acc[c] += w;
                left_weight[slot] += w;
                last[slot] = v;
                started[slot] = true;
            }
        }
        for (slot, &id) in active.iter().enumerate() {
            nodes[id].best = best[slot];
        }
        // Split every active node that found a split; its children form the next level.
        let mut next = Vec::new();
        let mut children_of: Vec<Option<(usize, usize)>> = vec![None; nodes.len()];
        for &id in &active {
            let Some((_, f, threshold)) = nodes[id].best else {
                continue;
            };
            let depth = nodes[id].depth + 1;
            let mut ids = [0usize; 2];
            for slot in &mut ids {
                *slot = nodes.len();
                nodes.push(Node {
                    depth,
                    class_weight: vec![0.0; k],
                    weight: 0.0,
                    samples: 0,
                    best: None,
                    features: None,
                });
                tree.feature.push(-1);
                tree.threshold.push(0.0);
                tree.left.push(0);
                tree.right.push(0);
            }
            tree.feature[id] = f as i32;
            tree.threshold[id] = threshold;
            tree.left[id] = ids[0] as u32;
            tree.right[id] = ids[1] as u32;
            children_of[id] = Some((ids[0], ids[1]));
            next.extend(ids);
        }
        for i in 0..n {
            let id = node_of[i];
            if id == u32::MAX {
                continue;
            }
            if let Some((l, r)) = children_of.get(id as usize).copied().flatten() {
                let f = tree.feature[id as usize] as usize;
                let child = if z[(i, f)] <= tree.threshold[id as usize] {
                    l
                } else {
                    r
                };
                node_of[i] = child as u32;
                let node = &mut nodes[child];
                node.class_weight[y[i]] += weights[i];
                node.weight += weights[i];
                node.samples += 1;
            }
        }
        active = next;
    }
    tree.value = Vec::with_capacity(nodes.len() * k);
    for node in &nodes {
        if node.weight > 0.0 {
            tree.value
                .extend(node.class_weight.iter().map(|w| w / node.weight));
        } else {
            tree.value.extend(std::iter::repeat_n(1.0 / k as f64, k));
        }
    }
    (tree, node_of)
}

/// Index of the largest value, the first on ties (numpy's argmax, which scikit-learn's trees
/// use and `champion_model::DecisionTree::predict_class` mirrors).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate().skip(1) {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use champion_model::Scaler;
    use ndarray::{Array1, Array2};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn identity(nf: usize) -> Scaler {
        Scaler {
            mean: vec![0.0; nf],
            scale: vec![1.0; nf],
        }
    }

    #[test]
    fn a_stump_finds_the_separating_midpoint_on_the_informative_feature() {
        // Feature 1 separates the classes at 2.5; feature 0 is noise.
        let z = Array2::from_shape_vec(
            (6, 2),
            vec![5.0, 1.0, 1.0, 2.0, 4.0, 2.0, 2.0, 3.0, 6.0, 3.0, 3.0, 4.0],
        )
        .unwrap();
        let y = Array1::from(vec![0, 0, 0, 1, 1, 1]);
        let spec = TreeSpec {
            max_depth: Some(1),
            max_features: None,
        };
        let mut rng = StdRng::seed_from_u64(0);
        let (t, _) = fit_tree(
            z.view(),
            y.as_slice().unwrap(),
            &[1.0; 6],
            2,
            &Presorted::new(z.view()),
            &spec,
            &mut rng,
        );
        assert_eq!(t.feature, vec![1, -1, -1]);
        assert_eq!(t.threshold[0], 2.5);
        assert_eq!(t.node_value(1, 2), &[1.0, 0.0]);
        assert_eq!(t.node_value(2, 2), &[0.0, 1.0]);
        t.validate(2, 2).unwrap();
    }

    #[test]
    fn weights_move_the_split() {
        // Unweighted, x <= 2.5 is best; a heavy class-0 row at x=4 moves it to x <= 4.5.
        let z = Array2::from_shape_vec((5, 1), vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let y = Array1::from(vec![0, 0, 1, 0, 1]);
        let spec = TreeSpec {
            max_depth: Some(1),
            max_features: None,
        };
        let mut rng = StdRng::seed_from_u64(0);
        let pre = Presorted::new(z.view());
        let y = y.as_slice().unwrap();
        let (even, _) = fit_tree(z.view(), y, &[1.0; 5], 2, &pre, &spec, &mut rng);
        assert_eq!(even.threshold[0], 2.5);
        let (heavy, _) = fit_tree(
            z.view(),
            y,
            &[1.0, 1.0, 1.0, 10.0, 1.0],
            2,
            &pre,
            &spec,
            &mut rng,
        );
        assert_eq!(heavy.threshold[0], 4.5);
    }

    #[test]
    fn an_unbounded_tree_fits_its_training_rows_exactly() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 200;
        let z = Array2::from_shape_fn((n, 3), |_| rng.gen_range(-1.0..1.0));
        let y: Array1<usize> = z
            .rows()
            .into_iter()
            .map(|r| usize::from(r[0] * r[1] > 0.0) + usize::from(r[2] > 0.5))
            .collect();
        let spec = TreeSpec {
            max_depth: None,
            max_features: None,
        };
        let (t, _) = fit_tree(
            z.view(),
            y.as_slice().unwrap(),
            &vec![1.0; n],
            3,
            &Presorted::new(z.view()),
            &spec,
            &mut rng,
        );
        t.validate(3, 3).unwrap();
        for (i, row) in z.rows().into_iter().enumerate() {
            assert_eq!(
                t.predict_class(row.as_slice().unwrap(), &identity(3), 3),
                y[i]
            );
        }
    }
}
