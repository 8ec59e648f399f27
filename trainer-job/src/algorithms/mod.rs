//! The classifiers the trainer can fit, their hyper-parameters, and the scaler they share.

mod adaboost;
mod cart;
mod forest;
mod logistic;
mod naive_bayes;
pub mod params;
mod trees;

use std::collections::BTreeMap;

use champion_model::{Model, Scaler};
use ndarray::{Array1, Array2};

use crate::error::TrainError;
pub use params::Params;

pub use champion_model::Algorithm;

/// Scaled training rows and their class indices.
pub struct TrainingSet {
    /// Standard-scaled features, one row per sample.
    pub z: Array2<f64>,
    /// Class index of each row, in `0..n_classes`.
    pub y: Array1<usize>,
    pub n_classes: usize,
}

/// Fits the scaler on the training rows only: population mean and standard deviation, with a
/// zero deviation replaced by 1 (scikit-learn's StandardScaler).
pub fn fit_scaler(rows: &[f64], n_features: usize) -> Scaler {
    let n = (rows.len() / n_features.max(1)) as f64;
    let mut mean = vec![0.0; n_features];
    for row in rows.chunks_exact(n_features) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    for m in &mut mean {
        *m /= n;
    }
    let mut var = vec![0.0; n_features];
    for row in rows.chunks_exact(n_features) {
        for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
            *v += (x - m) * (x - m);
        }
    }
    let scale = var
        .into_iter()
        .map(|v| {
            let s = (v / n).sqrt();
            if s < 10.0 * f64::EPSILON { 1.0 } else { s }
        })
        .collect();
    Scaler { mean, scale }
}

/// Applies the scaler through [`Scaler::scale_one`], the function inference uses, so the
/// trained model sees exactly the numbers a saved model will compute.
pub fn scale_rows(scaler: &Scaler, rows: &[f64], n_features: usize) -> Array2<f64> {
    let n = rows.len() / n_features.max(1);
    Array2::from_shape_fn((n, n_features), |(i, f)| {
        scaler.scale_one(f, rows[i * n_features + f])
    })
}

/// Fits `algorithm` and returns the model with its effective hyper-parameters (defaults
/// included), which model.json and report.json record.
pub fn fit(
    algorithm: Algorithm,
    params: &BTreeMap<String, String>,
    data: &TrainingSet,
    seed: u64,
) -> Result<(Model, BTreeMap<String, String>), TrainError> {
    let fit_err = |reason: String| TrainError::Fit {
        algorithm: algorithm.to_string(),
        reason,
    };
    match algorithm {
        Algorithm::AdaBoost => {
            let p = adaboost::AdaBoostParams::from_params(&Params::new(algorithm, params)?)?;
            let model = adaboost::fit(&p, data, seed).map_err(fit_err)?;
            Ok((Model::AdaBoost(model), p.effective()))
        }
        Algorithm::Logistic => {
            let p = logistic::LogisticParams::from_params(&Params::new(algorithm, params)?)?;
            let model = logistic::fit(&p, data).map_err(fit_err)?;
            Ok((Model::Logistic(model), p.effective()))
        }
        Algorithm::RandomForest => {
            let p = forest::ForestParams::from_params(&Params::new(algorithm, params)?)?;
            let model = forest::fit(&p, data, seed).map_err(fit_err)?;
            Ok((Model::RandomForest(model), p.effective()))
        }
        Algorithm::GaussianNb => {
            let p = naive_bayes::NbParams::from_params(&Params::new(algorithm, params)?)?;
            let model = naive_bayes::fit(&p, data).map_err(fit_err)?;
            Ok((Model::GaussianNb(model), p.effective()))
        }
    }
}

/// Validates `params` for `algorithm` without fitting anything.
pub fn check_params(
    algorithm: Algorithm,
    params: &BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let p = Params::new(algorithm, params)?;
    match algorithm {
        Algorithm::AdaBoost => adaboost::AdaBoostParams::from_params(&p).map(|_| ()),
        Algorithm::Logistic => logistic::LogisticParams::from_params(&p).map(|_| ()),
        Algorithm::RandomForest => forest::ForestParams::from_params(&p).map(|_| ()),
        Algorithm::GaussianNb => naive_bayes::NbParams::from_params(&p).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `param_keys` is exactly what each algorithm's parameter parser accepts: every listed key
    /// passes with a valid value, and an unknown key's error lists the same keys.
    #[test]
    fn param_keys_are_the_keys_each_algorithm_accepts() {
        let valid = |key: &str| match key {
            "tree" => "linfa",
            _ => "2",
        };
        for algorithm in Algorithm::ALL {
            let keys = algorithm.param_keys();
            let all: BTreeMap<String, String> = keys
                .iter()
                .map(|k| (k.to_string(), valid(k).to_string()))
                .collect();
            check_params(algorithm, &all).unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            let unknown = BTreeMap::from([("bogus".to_string(), "1".to_string())]);
            let err = check_params(algorithm, &unknown)
                .expect_err("unknown key")
                .to_string();
            assert_eq!(
                err,
                format!(
                    "invalid configuration: unknown parameter \"bogus\" for {algorithm}; known: {}",
                    keys.join(", ")
                )
            );
        }
    }

    #[test]
    fn the_chart_examples_camel_case_key_reaches_adaboost_as_n_estimators() {
        let params = params::parse_param_items(&["nEstimators=50".to_string()]).expect("parses");
        check_params(Algorithm::AdaBoost, &params).expect("accepted");
        assert_eq!(params.get("n_estimators").map(String::as_str), Some("50"));
    }
}
