//! Multinomial logistic regression (linfa-logistic, L-BFGS with an L2 penalty).

use std::collections::BTreeMap;

use champion_model::LogisticModel;
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_logistic::MultiLogisticRegression;

use super::{Params, TrainingSet};
use crate::error::TrainError;

pub struct LogisticParams {
    /// L2 penalty strength.
    pub alpha: f64,
    pub max_iterations: u64,
    pub gradient_tolerance: f64,
}

impl LogisticParams {
    pub fn from_params(p: &Params) -> Result<Self, TrainError> {
        p.check_keys()?;
        Ok(LogisticParams {
            alpha: p.get("alpha", 1.0, "a number >= 0", |v: f64| {
                v.is_finite() && v >= 0.0
            })?,
            max_iterations: p.get(
                "max_iterations",
                100,
                "an integer from 1 to 100000",
                |v: u64| (1..=100_000).contains(&v),
            )?,
            gradient_tolerance: p.get(
                "gradient_tolerance",
                1e-4,
                "a positive number",
                |v: f64| v.is_finite() && v > 0.0,
            )?,
        })
    }

    pub fn effective(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("alpha".to_string(), self.alpha.to_string()),
            (
                "max_iterations".to_string(),
                self.max_iterations.to_string(),
            ),
            (
                "gradient_tolerance".to_string(),
                self.gradient_tolerance.to_string(),
            ),
        ])
    }
}

pub fn fit(p: &LogisticParams, data: &TrainingSet) -> Result<LogisticModel, String> {
    let dataset = DatasetBase::new(data.z.view(), data.y.view());
    let fitted = MultiLogisticRegression::default()
        .alpha(p.alpha)
        .max_iterations(p.max_iterations)
        .gradient_tolerance(p.gradient_tolerance)
        .fit(&dataset)
        .map_err(|e| format!("linfa-logistic: {e}"))?;
    let nf = data.z.ncols();
    let k = data.n_classes;
    // linfa orders its columns by the classes it saw; a class the training rows lack keeps a
    // zero row and a very negative intercept, so it is (practically) never predicted.
    let mut coefficients = vec![vec![0.0; nf]; k];
    let mut intercepts = vec![-1e3; k];
    for (j, &class) in fitted.classes().iter().enumerate() {
        if class >= k {
            return Err(format!("linfa-logistic returned unknown class {class}"));
        }
        for (f, c) in coefficients[class].iter_mut().enumerate() {
            *c = fitted.params()[(f, j)];
        }
        intercepts[class] = fitted.intercept()[j];
    }
    if coefficients
        .iter()
        .flatten()
        .chain(&intercepts)
        .any(|v| !v.is_finite())
    {
        return Err("the optimiser diverged (non-finite coefficients)".into());
    }
    Ok(LogisticModel {
        coefficients,
        intercepts,
    })
}
