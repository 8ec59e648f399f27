//! Gaussian naive Bayes in closed form, as scikit-learn's GaussianNB computes it: class
//! priors from frequencies, per-class means and population variances, plus `var_smoothing`
//! times the largest feature variance. Computed here because linfa-bayes keeps its fitted
//! means and variances private, and model.json must carry them.

use std::collections::BTreeMap;

use champion_model::GaussianNbModel;

use super::{Params, TrainingSet};
use crate::error::TrainError;

pub struct NbParams {
    pub var_smoothing: f64,
}

impl NbParams {
    pub fn from_params(p: &Params) -> Result<Self, TrainError> {
        p.check_keys()?;
        Ok(NbParams {
            var_smoothing: p.get("var_smoothing", 1e-9, "a positive number", |v: f64| {
                v.is_finite() && v > 0.0
            })?,
        })
    }

    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("var_smoothing".to_string(), self.var_smoothing.to_string())])
    }
}

pub fn fit(p: &NbParams, data: &TrainingSet) -> Result<GaussianNbModel, String> {
    let (n, nf, k) = (data.z.nrows(), data.z.ncols(), data.n_classes);
    let mut counts = vec![0usize; k];
    let mut means = vec![vec![0.0; nf]; k];
    let mut variances = vec![vec![0.0; nf]; k];
    for (row, &c) in data.z.rows().into_iter().zip(&data.y) {
        counts[c] += 1;
        for (m, x) in means[c].iter_mut().zip(row) {
            *m += x;
        }
    }
    for c in 0..k {
        if counts[c] == 0 {
            return Err(format!("class index {c} has no training rows"));
        }
        means[c].iter_mut().for_each(|m| *m /= counts[c] as f64);
    }
    for (row, &c) in data.z.rows().into_iter().zip(&data.y) {
        for ((v, x), m) in variances[c].iter_mut().zip(row).zip(&means[c]) {
            *v += (x - m) * (x - m);
        }
    }
    let max_var = data
        .z
        .columns()
        .into_iter()
        .map(|col| {
            let mean = col.sum() / n as f64;
            col.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64
        })
        .fold(0.0, f64::max);
    let epsilon = p.var_smoothing * max_var.max(f64::MIN_POSITIVE);
    for c in 0..k {
        variances[c]
            .iter_mut()
            .for_each(|v| *v = *v / counts[c] as f64 + epsilon);
    }
    Ok(GaussianNbModel {
        class_priors: counts.iter().map(|&c| c as f64 / n as f64).collect(),
        means,
        variances,
    })
}
