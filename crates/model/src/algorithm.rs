//! The classifiers a trainer can fit: one enum for the CRD (`spec.trainer.algorithm`), the
//! trainer's `--algorithm` and report.json's `algorithm`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Classifier fitted by the trainer (trainer `--algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Algorithm {
    /// AdaBoost over decision stumps (SAMME). Params: n_estimators (1-10000, default 50),
    /// learning_rate (> 0, 1.0), max_depth (1-64, 1), tree (native or linfa).
    #[default]
    #[serde(rename = "adaboost")]
    AdaBoost,
    /// Multinomial logistic regression. Params: alpha (L2 penalty >= 0, default 1.0),
    /// max_iterations (1-100000, 100), gradient_tolerance (> 0, 1e-4).
    #[serde(rename = "logistic")]
    Logistic,
    /// Random forest of decision trees. Params: n_estimators (1-10000, default 100),
    /// max_depth (0 unlimited to 64, 0), max_features (0 means the square root of the
    /// feature count).
    #[serde(rename = "random-forest")]
    RandomForest,
    /// Gaussian naive Bayes. Params: var_smoothing (> 0, default 1e-9).
    #[serde(rename = "gaussian-nb")]
    GaussianNb,
}

impl Algorithm {
    /// Every algorithm, in the order documentation lists them.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::AdaBoost,
        Algorithm::Logistic,
        Algorithm::RandomForest,
        Algorithm::GaussianNb,
    ];

    /// The hyper-parameter keys (`--param key=value`, `spec.trainer.params`) this algorithm
    /// accepts; any other key is refused before training starts.
    pub fn param_keys(self) -> &'static [&'static str] {
        match self {
            Algorithm::AdaBoost => &["n_estimators", "learning_rate", "max_depth", "tree"],
            Algorithm::Logistic => &["alpha", "max_iterations", "gradient_tolerance"],
            Algorithm::RandomForest => &["n_estimators", "max_depth", "max_features"],
            Algorithm::GaussianNb => &["var_smoothing"],
        }
    }

    /// The name used in flags, the CRD and report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::AdaBoost => "adaboost",
            Algorithm::Logistic => "logistic",
            Algorithm::RandomForest => "random-forest",
            Algorithm::GaussianNb => "gaussian-nb",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ModelError;

    /// The canonical names, plus the spellings people type for them ("AdaBoost",
    /// "random_forest", "naive-bayes").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "adaboost" | "ada-boost" => Ok(Algorithm::AdaBoost),
            "logistic" | "logistic-regression" => Ok(Algorithm::Logistic),
            "random-forest" | "randomforest" => Ok(Algorithm::RandomForest),
            "gaussian-nb" | "gaussiannb" | "naive-bayes" => Ok(Algorithm::GaussianNb),
            _ => Err(ModelError::UnknownAlgorithm(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_parse_back_and_serialise_alike() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().ok(), Some(a));
            assert_eq!(
                serde_json::to_value(a).ok(),
                Some(serde_json::Value::String(a.as_str().to_string()))
            );
        }
        assert_eq!(
            "AdaBoost".parse::<Algorithm>().ok(),
            Some(Algorithm::AdaBoost)
        );
        assert!(
            "svm"
                .parse::<Algorithm>()
                .is_err_and(|e| e.to_string().contains("expected adaboost"))
        );
    }
}
