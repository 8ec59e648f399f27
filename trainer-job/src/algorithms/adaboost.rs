//! AdaBoost SAMME (Zhu et al., 2009) as scikit-learn implements it: weighted trees, estimator
//! weight `lr * (ln((1 - err) / err) + ln(K - 1))`, misclassified rows up-weighted, early stop
//! on a perfect tree, and a tree no better than chance discarded.
//!
//! The trees are weighted CART trees: by default this crate's presorted learner (`cart`, which
//! explains why: linfa-trees is ~6x slower here), or linfa-trees' weighted trees with
//! `--param tree=linfa`. linfa-ensemble's AdaBoost resamples rows instead of weighting them and
//! cannot be serialised, so it is not used.

use std::collections::BTreeMap;

use champion_model::AdaBoostModel;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cart::{self, Presorted, TreeSpec, argmax};
use super::trees::{fit_tree, identity_scaler};
use super::{Params, TrainingSet};
use crate::error::TrainError;

pub struct AdaBoostParams {
    pub n_estimators: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub tree: TreeLearner,
}

/// Which weighted tree learner the boosting rounds use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeLearner {
    /// This crate's presorted CART (`cart`), the default.
    Native,
    /// linfa-trees' `DecisionTree` with sample weights.
    Linfa,
}

impl std::str::FromStr for TreeLearner {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "native" => Ok(TreeLearner::Native),
            "linfa" => Ok(TreeLearner::Linfa),
            _ => Err(()),
        }
    }
}

impl TreeLearner {
    fn as_str(self) -> &'static str {
        match self {
            TreeLearner::Native => "native",
            TreeLearner::Linfa => "linfa",
        }
    }
}

impl AdaBoostParams {
    pub fn from_params(p: &Params) -> Result<Self, TrainError> {
        p.check_keys()?;
        Ok(AdaBoostParams {
            n_estimators: p.get(
                "n_estimators",
                50,
                "an integer from 1 to 10000",
                |v: usize| (1..=10_000).contains(&v),
            )?,
            learning_rate: p.get("learning_rate", 1.0, "a positive number", |v: f64| {
                v.is_finite() && v > 0.0
            })?,
            max_depth: p.get("max_depth", 1, "an integer from 1 to 64", |v: usize| {
                (1..=64).contains(&v)
            })?,
            tree: p.get_parsed("tree", TreeLearner::Native, "native or linfa")?,
        })
    }

    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("n_estimators".to_string(), self.n_estimators.to_string()),
            ("learning_rate".to_string(), self.learning_rate.to_string()),
            ("max_depth".to_string(), self.max_depth.to_string()),
            ("tree".to_string(), self.tree.as_str().to_string()),
        ])
    }
}

pub fn fit(p: &AdaBoostParams, data: &TrainingSet, seed: u64) -> Result<AdaBoostModel, String> {
    let n = data.y.len();
    let k = data.n_classes;
    let identity = identity_scaler(data.z.ncols());
    let mut sample_weight = vec![1.0 / n as f64; n];
    let mut weights32 = vec![0f32; n];
    let mut incorrect = vec![false; n];
    let presorted = (p.tree == TreeLearner::Native).then(|| Presorted::new(data.z.view()));
    let spec = TreeSpec {
        max_depth: Some(p.max_depth),
        max_features: None,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let y = data
        .y
        .as_slice()
        .ok_or("class indices are not contiguous")?;
    let mut model = AdaBoostModel {
        trees: Vec::with_capacity(p.n_estimators),
        estimator_weights: Vec::with_capacity(p.n_estimators),
    };
    for iboost in 0..p.n_estimators {
        // The leaf each training row falls into, when the learner reports it.
        let (tree, leaves) = match &presorted {
            Some(presorted) => {
                let (tree, leaves) = cart::fit_tree(
                    data.z.view(),
                    y,
                    &sample_weight,
                    k,
                    presorted,
                    &spec,
                    &mut rng,
                );
                (tree, Some(leaves))
            }
            None => {
                // linfa weighs in f32; weights of mean 1 keep them far from f32's subnormals.
                for (w32, w) in weights32.iter_mut().zip(&sample_weight) {
                    *w32 = (w * n as f64) as f32;
                }
                let tree = fit_tree(
                    data.z.view(),
                    data.y.view(),
                    &weights32,
                    Some(p.max_depth),
                    k,
                )?;
                (tree, None)
            }
        };
        let mut error = 0.0;
        let mut total = 0.0;
        for (i, row) in data.z.rows().into_iter().enumerate() {
            let predicted = match leaves.as_ref().map(|l| l[i]) {
                Some(leaf) if leaf != u32::MAX => argmax(tree.node_value(leaf as usize, k)),
                _ => {
                    let row = row.as_slice().ok_or("scaled rows are not contiguous")?;
                    tree.predict_class(row, &identity, k)
                }
            };
            incorrect[i] = predicted != y[i];
            if incorrect[i] {
                error += sample_weight[i];
            }
            total += sample_weight[i];
        }
        let error = error / total;
        if error <= 0.0 {
            model.trees.push(tree);
            model.estimator_weights.push(1.0);
            break;
        }
        if error >= 1.0 - 1.0 / k as f64 {
            if model.trees.is_empty() {
                return Err(format!(
                    "the first tree is no better than chance (weighted error {error:.3} with {k} classes)"
                ));
            }
            break;
        }
        let alpha = p.learning_rate * (((1.0 - error) / error).ln() + ((k - 1) as f64).ln());
        model.trees.push(tree);
        model.estimator_weights.push(alpha);
        if iboost + 1 == p.n_estimators {
            break;
        }
        for (w, bad) in sample_weight.iter_mut().zip(&incorrect) {
            if *bad && *w > 0.0 {
                *w = (w.ln() + alpha).exp();
            }
        }
        let sum: f64 = sample_weight.iter().sum();
        if !sum.is_finite() || sum <= 0.0 {
            break;
        }
        sample_weight.iter_mut().for_each(|w| *w /= sum);
    }
    Ok(model)
}
