//! Random forest as scikit-learn builds it: every tree sees a bootstrap sample (expressed as
//! weights: how often each row was drawn) and tries a random `max_features` subset of the
//! features at every node; the forest averages the trees' leaf class distributions.
//! The trees are this crate's presorted CART (see `cart` for why), because linfa-trees can
//! neither sample features per node nor fit 100 trees within the time budget.

use std::collections::BTreeMap;

use champion_model::RandomForestModel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cart::{Presorted, TreeSpec, fit_tree};
use super::{Params, TrainingSet};
use crate::error::TrainError;

pub struct ForestParams {
    pub n_estimators: usize,
    /// 0 grows every tree until its leaves are pure.
    pub max_depth: usize,
    /// Features tried per node; 0 means sqrt(number of features), scikit-learn's default.
    pub max_features: usize,
}

impl ForestParams {
    pub fn from_params(p: &Params) -> Result<Self, TrainError> {
        p.check_keys()?;
        Ok(ForestParams {
            n_estimators: p.get(
                "n_estimators",
                100,
                "an integer from 1 to 10000",
                |v: usize| (1..=10_000).contains(&v),
            )?,
            max_depth: p.get(
                "max_depth",
                0,
                "an integer from 0 (unlimited) to 64",
                |v: usize| v <= 64,
            )?,
            max_features: p.get(
                "max_features",
                0,
                "an integer >= 0 (0: sqrt of the feature count)",
                |_: usize| true,
            )?,
        })
    }

    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("n_estimators".to_string(), self.n_estimators.to_string()),
            ("max_depth".to_string(), self.max_depth.to_string()),
            ("max_features".to_string(), self.max_features.to_string()),
        ])
    }
}

pub fn fit(p: &ForestParams, data: &TrainingSet, seed: u64) -> Result<RandomForestModel, String> {
    let (n, nf) = (data.z.nrows(), data.z.ncols());
    let mut rng = StdRng::seed_from_u64(seed);
    let max_features = if p.max_features == 0 {
        ((nf as f64).sqrt().floor() as usize).max(1)
    } else {
        p.max_features.min(nf)
    };
    let spec = TreeSpec {
        max_depth: (p.max_depth > 0).then_some(p.max_depth),
        max_features: Some(max_features),
    };
    let presorted = Presorted::new(data.z.view());
    let y = data
        .y
        .as_slice()
        .ok_or("class indices are not contiguous")?;
    let mut trees = Vec::with_capacity(p.n_estimators);
    let mut counts = vec![0f64; n];
    for _ in 0..p.n_estimators {
        counts.iter_mut().for_each(|c| *c = 0.0);
        for _ in 0..n {
            counts[rng.gen_range(0..n)] += 1.0;
        }
        trees.push(
            fit_tree(
                data.z.view(),
                y,
                &counts,
                data.n_classes,
                &presorted,
                &spec,
                &mut rng,
            )
            .0,
        );
    }
    Ok(RandomForestModel { trees })
}
