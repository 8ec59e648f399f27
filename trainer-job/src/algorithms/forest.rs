//! Random forest: bootstrap-weighted linfa-trees trees, soft voting.
//!
//! Each tree sees a bootstrap sample expressed as weights (how often each row was drawn),
//! which is what scikit-learn does too. linfa-trees cannot sample features per split, so the
//! trees differ through their bootstrap samples only (bagging).

use std::collections::BTreeMap;

use champion_model::RandomForestModel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::trees::fit_tree;
use super::{Params, TrainingSet};
use crate::error::TrainError;

pub struct ForestParams {
    pub n_estimators: usize,
    /// 0 grows every tree until its leaves are pure.
    pub max_depth: usize,
}

impl ForestParams {
    pub fn from_params(p: &Params) -> Result<Self, TrainError> {
        p.only(&["n_estimators", "max_depth"])?;
        Ok(ForestParams {
            n_estimators: p.get("n_estimators", 100, "an integer from 1 to 10000", |v: usize| {
                (1..=10_000).contains(&v)
            })?,
            max_depth: p.get("max_depth", 0, "an integer from 0 (unlimited) to 64", |v: usize| {
                v <= 64
            })?,
        })
    }

    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("n_estimators".to_string(), self.n_estimators.to_string()),
            ("max_depth".to_string(), self.max_depth.to_string()),
        ])
    }
}

pub fn fit(p: &ForestParams, data: &TrainingSet, seed: u64) -> Result<RandomForestModel, String> {
    let n = data.y.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let max_depth = (p.max_depth > 0).then_some(p.max_depth);
    let mut trees = Vec::with_capacity(p.n_estimators);
    let mut counts = vec![0f32; n];
    for _ in 0..p.n_estimators {
        counts.iter_mut().for_each(|c| *c = 0.0);
        for _ in 0..n {
            counts[rng.gen_range(0..n)] += 1.0;
        }
        trees.push(fit_tree(
            data.z.view(),
            data.y.view(),
            &counts,
            max_depth,
            data.n_classes,
        )?);
    }
    Ok(RandomForestModel { trees })
}
