use serde::{Deserialize, Serialize};

use crate::model_file::Scaler;

/// A binary decision tree stored as flat node arrays (the layout scikit-learn uses), so that
/// inference is a loop over indices with no pointer chasing and no allocation.
///
/// Node `i` is a leaf when `feature[i] < 0`; otherwise a row goes to `left[i]` when its scaled
/// value of feature `feature[i]` is `<= threshold[i]` and to `right[i]` otherwise. Children
/// always have larger indices than their parent, which [`DecisionTree::validate`] checks, so
/// every walk ends. `value` holds, for every node, the class distribution of the training
/// weight that reached it (`n_classes` numbers per node, summing to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionTree {
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    pub value: Vec<f64>,
}

impl DecisionTree {
    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.feature.len()
    }

    /// Checks the invariants inference relies on, so that a loaded tree can never index out of
    /// bounds or loop.
    pub fn validate(&self, n_features: usize, n_classes: usize) -> Result<(), String> {
        let n = self.feature.len();
        if n == 0 {
            return Err("a tree has no nodes".into());
        }
        if self.threshold.len() != n || self.left.len() != n || self.right.len() != n {
            return Err(format!(
                "a tree has {n} features but {} thresholds, {} left and {} right children",
                self.threshold.len(),
                self.left.len(),
                self.right.len()
            ));
        }
        if self.value.len() != n * n_classes {
            return Err(format!(
                "a tree with {n} nodes and {n_classes} classes needs {} values, has {}",
                n * n_classes,
                self.value.len()
            ));
        }
        if self.value.iter().any(|v| !v.is_finite()) {
            return Err("a tree has a non-finite node value".into());
        }
        for i in 0..n {
            let f = self.feature[i];
            if f < 0 {
                continue;
            }
            if f as usize >= n_features {
                return Err(format!(
                    "node {i} splits on feature {f}, the model has {n_features}"
                ));
            }
            if !self.threshold[i].is_finite() {
                return Err(format!("node {i} has a non-finite threshold"));
            }
            for child in [self.left[i] as usize, self.right[i] as usize] {
                if child <= i || child >= n {
                    return Err(format!(
                        "node {i} has child {child}; children must come after their parent and exist"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Index of the leaf a raw (unscaled) row falls into.
    #[inline]
    pub fn leaf(&self, row: &[f64], scaler: &Scaler) -> usize {
        let mut i = 0;
        loop {
            let f = self.feature[i];
            if f < 0 {
                return i;
            }
            let f = f as usize;
            let z = scaler.scale_one(f, row[f]);
            i = if z <= self.threshold[i] {
                self.left[i] as usize
            } else {
                self.right[i] as usize
            };
        }
    }

    /// Index of the leaf a row already scaled (every feature through [`Scaler::scale_one`])
    /// falls into: the same comparisons as [`DecisionTree::leaf`] with the scaling done once per
    /// row instead of once per node.
    #[inline]
    pub fn leaf_scaled(&self, z: &[f64]) -> usize {
        let mut i = 0;
        loop {
            let f = self.feature[i];
            if f < 0 {
                return i;
            }
            i = if z[f as usize] <= self.threshold[i] {
                self.left[i] as usize
            } else {
                self.right[i] as usize
            };
        }
    }

    /// The class distribution stored at node `node`.
    #[inline]
    pub fn node_value(&self, node: usize, n_classes: usize) -> &[f64] {
        &self.value[node * n_classes..(node + 1) * n_classes]
    }

    /// Most likely class at the leaf a row falls into (the first one on ties, like numpy's
    /// argmax, so that the ensemble votes as scikit-learn's do).
    #[inline]
    pub fn predict_class(&self, row: &[f64], scaler: &Scaler, n_classes: usize) -> usize {
        argmax(self.node_value(self.leaf(row, scaler), n_classes))
    }
}

/// Index of the largest value, the first one on ties; 0 for an empty slice.
#[inline]
pub(crate) fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate().skip(1) {
        if *v > values[best] {
            best = i;
        }
    }
    best
}
