//! Decision trees fitted by linfa-trees (which honours sample weights), exported to the node
//! arrays of `champion_model::DecisionTree`.

use champion_model::{DecisionTree, Scaler};
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_trees::{DecisionTree as LinfaTree, SplitQuality, TreeNode};
use ndarray::{ArrayView1, ArrayView2};

/// Fits a gini tree on weighted rows. `max_depth` None grows until the leaves are pure.
///
/// linfa's defaults are tuned for unweighted counts: `min_weight_leaf = 1` would forbid every
/// split once AdaBoost's weights sum to 1, so leaves may be any weight here (scikit-learn's
/// `min_weight_fraction_leaf = 0`), and the impurity decrease only has to be positive.
pub fn fit_tree(
    z: ArrayView2<f64>,
    y: ArrayView1<usize>,
    weights: &[f32],
    max_depth: Option<usize>,
    n_classes: usize,
) -> Result<DecisionTree, String> {
    let dataset = DatasetBase::new(z, y).with_weights(ndarray::Array1::from(weights.to_vec()));
    let fitted: LinfaTree<f64, usize> = LinfaTree::params()
        .split_quality(SplitQuality::Gini)
        .max_depth(max_depth)
        .min_weight_split(2.0)
        .min_weight_leaf(0.0)
        .min_impurity_decrease(f64::EPSILON)
        .fit(&dataset)
        .map_err(|e| format!("linfa-trees: {e}"))?;
    let mut tree = DecisionTree {
        feature: Vec::new(),
        threshold: Vec::new(),
        left: Vec::new(),
        right: Vec::new(),
        value: Vec::new(),
    };
    export(fitted.root_node(), &mut tree);
    fill_values(&mut tree, z, y, weights, n_classes);
    Ok(tree)
}

/// Appends `node` and its subtree in pre-order, so children always follow their parent.
fn export(node: &TreeNode<f64, usize>, tree: &mut DecisionTree) -> u32 {
    let id = tree.feature.len();
    let children = node.children();
    let (left, right) = match (children[0], children[1]) {
        (Some(l), Some(r)) if !node.is_leaf() => (Some(l), Some(r)),
        _ => (None, None),
    };
    let (feature, threshold, _) = node.split();
    tree.feature
        .push(if left.is_some() { feature as i32 } else { -1 });
    tree.threshold
        .push(if left.is_some() { threshold } else { 0.0 });
    tree.left.push(0);
    tree.right.push(0);
    if let (Some(l), Some(r)) = (left, right) {
        let l = export(l, tree);
        let r = export(r, tree);
        tree.left[id] = l;
        tree.right[id] = r;
    }
    id as u32
}

/// Sets every node's class distribution to the training weight that reaches it, normalised;
/// a node no weight reaches predicts uniformly.
fn fill_values(
    tree: &mut DecisionTree,
    z: ArrayView2<f64>,
    y: ArrayView1<usize>,
    weights: &[f32],
    k: usize,
) {
    let n_nodes = tree.feature.len();
    let mut value = vec![0.0; n_nodes * k];
    for (i, row) in z.rows().into_iter().enumerate() {
        let w = f64::from(weights[i]);
        let mut node = 0;
        loop {
            value[node * k + y[i]] += w;
            let f = tree.feature[node];
            if f < 0 {
                break;
            }
            node = if row[f as usize] <= tree.threshold[node] {
                tree.left[node] as usize
            } else {
                tree.right[node] as usize
            };
        }
    }
    for chunk in value.chunks_exact_mut(k) {
        let total: f64 = chunk.iter().sum();
        if total > 0.0 {
            chunk.iter_mut().for_each(|v| *v /= total);
        } else {
            chunk.iter_mut().for_each(|v| *v = 1.0 / k as f64);
        }
    }
    tree.value = value;
}

/// An identity scaler: the trainer's trees see already scaled rows.
pub fn identity_scaler(n_features: usize) -> Scaler {
    Scaler {
        mean: vec![0.0; n_features],
        scale: vec![1.0; n_features],
    }
}
