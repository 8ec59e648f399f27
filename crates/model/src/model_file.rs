use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{canonical_json, sha256_hex};
use crate::drift::DriftReference;
use crate::error::ModelError;
use crate::inference;
use crate::names::normalize_feature_name;
use crate::tree::DecisionTree;

/// Version of the `model.json` layout. Bump it on any change a reader of the previous version
/// would misread; readers refuse other versions instead of guessing.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// The content of `model.json`: everything needed to turn a row of raw feature values into
/// class probabilities, plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFile {
    pub format_version: u32,
    /// The model version: the last path segment of the version directory it was written to.
    pub model_version: String,
    /// RFC 3339 time the model was written.
    pub created_at: String,
    /// Normalised feature names, in the order `predict*` expects the row.
    pub feature_names: Vec<String>,
    /// Class labels; class index `i` of every prediction means `class_labels[i]`.
    pub class_labels: Vec<String>,
    /// The label binary metrics are about, when the target was binarised.
    pub positive_label: Option<String>,
    pub scaler: Scaler,
    pub model: Model,
    /// The algorithm name the trainer was asked for (e.g. "adaboost").
    pub algorithm: String,
    /// The effective hyper-parameters, defaults included.
    pub params: BTreeMap<String, String>,
    /// Fingerprint of the data listing the model was trained on.
    pub training_fingerprint: String,
    /// Per-feature reference bins of the training rows, for live drift (PSI). Optional: a
    /// model written before it existed has none (and its checksum does not cover the field,
    /// since an absent field is not serialised either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_reference: Option<DriftReference>,
    /// Hex sha256 of the canonical JSON of every other field.
    #[serde(default)]
    pub sha256: String,
}

/// Standard scaling fit on the training rows: `z = (x - mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scaler {
    pub mean: Vec<f64>,
    /// Standard deviation of each feature, or 1 where it was 0 (as scikit-learn does), so a
    /// constant feature never divides by zero.
    pub scale: Vec<f64>,
}

impl Scaler {
    /// Scaled value of feature `f`. Training and inference both go through this one function,
    /// so a saved model reproduces the trainer's arithmetic bit for bit.
    #[inline]
    pub fn scale_one(&self, f: usize, x: f64) -> f64 {
        (x - self.mean[f]) / self.scale[f]
    }
}

/// The fitted classifier; all of them work on scaled features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Model {
    AdaBoost(AdaBoostModel),
    Logistic(LogisticModel),
    RandomForest(RandomForestModel),
    GaussianNb(GaussianNbModel),
}

/// AdaBoost SAMME: every tree votes for its class with its estimator weight; probabilities
/// follow scikit-learn's `AdaBoostClassifier.predict_proba` for the SAMME algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdaBoostModel {
    pub trees: Vec<DecisionTree>,
    pub estimator_weights: Vec<f64>,
}

/// Multinomial logistic regression: `p = softmax(W z + b)`. A binary model is stored as two
/// rows with the first all zero, which is the same as a sigmoid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogisticModel {
    /// One row of coefficients per class.
    pub coefficients: Vec<Vec<f64>>,
    pub intercepts: Vec<f64>,
}

/// Random forest: the mean of the trees' leaf class distributions (soft voting, as
/// scikit-learn does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RandomForestModel {
    pub trees: Vec<DecisionTree>,
}

/// Gaussian naive Bayes: per class a prior and per-feature mean and variance (variances
/// already smoothed, so they are all positive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaussianNbModel {
    pub class_priors: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub variances: Vec<Vec<f64>>,
}

impl Model {
    /// Short name of the model kind, as in the JSON tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Model::AdaBoost(_) => "adaBoost",
            Model::Logistic(_) => "logistic",
            Model::RandomForest(_) => "randomForest",
            Model::GaussianNb(_) => "gaussianNb",
        }
    }
}

impl ModelFile {
    /// Parses `model.json`, refusing another format version, a missing or wrong checksum, and
    /// any inconsistency that could make inference index out of bounds.
    pub fn from_json_verified(bytes: &[u8]) -> Result<ModelFile, ModelError> {
        let mut value: Value = serde_json::from_slice(bytes).map_err(ModelError::ParseModel)?;
        let found = value
            .get("formatVersion")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if found != u64::from(MODEL_FORMAT_VERSION) {
            return Err(ModelError::ModelFormatVersion {
                found,
                expected: MODEL_FORMAT_VERSION,
            });
        }
        let stored = match value.as_object_mut().and_then(|m| m.remove("sha256")) {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return Err(ModelError::MissingChecksum),
        };
        let computed = sha256_hex(&canonical_json(&value));
        if !stored.eq_ignore_ascii_case(&computed) {
            return Err(ModelError::ChecksumMismatch { stored, computed });
        }
        let mut model: ModelFile = serde_json::from_value(value).map_err(ModelError::ParseModel)?;
        model.sha256 = computed;
        model.validate().map_err(ModelError::InvalidModel)?;
        Ok(model)
    }

    /// Validates the model, fills `sha256` and returns the JSON to store.
    pub fn to_json_bytes(&mut self) -> Result<Vec<u8>, ModelError> {
        self.validate().map_err(ModelError::InvalidModel)?;
        self.sha256 = self.compute_sha256()?;
        serde_json::to_vec_pretty(self).map_err(|source| ModelError::Serialize {
            what: "model.json",
            source,
        })
    }

    /// The checksum of every field but `sha256`, as `to_json_bytes` stores it.
    pub fn compute_sha256(&self) -> Result<String, ModelError> {
        let mut value = serde_json::to_value(self).map_err(|source| ModelError::Serialize {
            what: "model.json",
            source,
        })?;
        if let Some(map) = value.as_object_mut() {
            map.remove("sha256");
        }
        Ok(sha256_hex(&canonical_json(&value)))
    }

    /// Number of features a row must have.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Number of classes, the length of every probability vector.
    pub fn n_classes(&self) -> usize {
        self.class_labels.len()
    }

    /// Index of `positive_label` in `class_labels`, if there is one.
    pub fn positive_index(&self) -> Option<usize> {
        let positive = self.positive_label.as_ref()?;
        self.class_labels.iter().position(|l| l == positive)
    }

    /// Writes the class probabilities of one row of raw (unscaled) values, in `feature_names`
    /// order, into `out` (one slot per class label). Allocates nothing for rows of up to 64
    /// features. Scales the row once and runs the arithmetic shared with [`CompiledModel`]
    /// (`inference.rs`), bit for bit the same answer; for many rows [`ModelFile::compile`]
    /// once and use that, several times faster on tree ensembles (the trainer's holdout scoring
    /// and the predictor both do).
    ///
    /// [`CompiledModel`]: crate::CompiledModel
    pub fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        let k = self.n_classes();
        inference::check_lengths(self.n_features(), k, row, out)?;
        inference::with_scaled_row(&self.scaler, row, |z| {
            inference::model_proba(&self.model, k, z, out)
        });
        Ok(())
    }

    /// Class probabilities of one raw row (allocates the result).
    pub fn predict_proba(&self, row: &[f64]) -> Result<Vec<f64>, ModelError> {
        let mut out = vec![0.0; self.n_classes()];
        self.predict_proba_into(row, &mut out)?;
        Ok(out)
    }

    /// Index of the most likely class of one raw row (the first on ties).
    pub fn predict(&self, row: &[f64]) -> Result<usize, ModelError> {
        inference::predict_with(self.n_classes(), |out| self.predict_proba_into(row, out))
    }

    /// Checks every invariant inference relies on; the message says which one failed.
    pub fn validate(&self) -> Result<(), String> {
        let nf = self.n_features();
        let k = self.n_classes();
        if nf == 0 {
            return Err("featureNames is empty".into());
        }
        let mut seen = HashSet::new();
        for name in &self.feature_names {
            if *name != normalize_feature_name(name) {
                return Err(format!("feature name {name:?} is not normalised"));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("feature name {name:?} appears twice"));
            }
        }
        if k < 2 {
            return Err(format!(
                "classLabels has {k} labels, a classifier needs at least 2"
            ));
        }
        let labels: HashSet<&str> = self.class_labels.iter().map(String::as_str).collect();
        if labels.len() != k {
            return Err("classLabels has a duplicate label".into());
        }
        if let Some(p) = &self.positive_label
            && !labels.contains(p.as_str())
        {
            return Err(format!("positiveLabel {p:?} is not one of classLabels"));
        }
        if self.scaler.mean.len() != nf || self.scaler.scale.len() != nf {
            return Err(format!(
                "scaler has {} means and {} scales for {nf} features",
                self.scaler.mean.len(),
                self.scaler.scale.len()
            ));
        }
        if self.scaler.mean.iter().any(|m| !m.is_finite())
            || self
                .scaler
                .scale
                .iter()
                .any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err("scaler has a non-finite mean or a scale that is not positive".into());
        }
        let check_trees = |trees: &[DecisionTree]| -> Result<(), String> {
            if trees.is_empty() {
                return Err(format!("{} model has no trees", self.model.kind()));
            }
            for (i, t) in trees.iter().enumerate() {
                t.validate(nf, k).map_err(|e| format!("tree {i}: {e}"))?;
            }
            Ok(())
        };
        let check_matrix = |name: &str, m: &[Vec<f64>], positive: bool| -> Result<(), String> {
            if m.len() != k || m.iter().any(|r| r.len() != nf) {
                return Err(format!("{name} must be {k} rows of {nf} numbers"));
            }
            if m.iter()
                .flatten()
                .any(|v| !v.is_finite() || (positive && *v <= 0.0))
            {
                return Err(format!("{name} has a non-finite or invalid number"));
            }
            Ok(())
        };
        match &self.model {
            Model::AdaBoost(m) => {
                check_trees(&m.trees)?;
                if m.estimator_weights.len() != m.trees.len() {
                    return Err(format!(
                        "{} trees but {} estimator weights",
                        m.trees.len(),
                        m.estimator_weights.len()
                    ));
                }
                if m.estimator_weights.iter().any(|w| !w.is_finite()) {
                    return Err("an estimator weight is not finite".into());
                }
            }
            Model::RandomForest(m) => check_trees(&m.trees)?,
            Model::Logistic(m) => {
                check_matrix("coefficients", &m.coefficients, false)?;
                if m.intercepts.len() != k || m.intercepts.iter().any(|v| !v.is_finite()) {
                    return Err(format!("intercepts must be {k} finite numbers"));
                }
            }
            Model::GaussianNb(m) => {
                check_matrix("means", &m.means, false)?;
                check_matrix("variances", &m.variances, true)?;
                if m.class_priors.len() != k
                    || m.class_priors.iter().any(|p| !p.is_finite() || *p <= 0.0)
                {
                    return Err(format!("classPriors must be {k} positive numbers"));
                }
            }
        }
        if let Some(reference) = &self.drift_reference {
            reference.validate(&self.feature_names)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-feature binary AdaBoost of two stumps, small enough to check by hand.
    fn stump_model() -> ModelFile {
        let stump = |feature: i32, threshold: f64, left_class: usize| DecisionTree {
            feature: vec![feature, -1, -1],
            threshold: vec![threshold, 0.0, 0.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            value: if left_class == 0 {
                vec![0.5, 0.5, 0.9, 0.1, 0.2, 0.8]
            } else {
                vec![0.5, 0.5, 0.1, 0.9, 0.8, 0.2]
            },
        };
        ModelFile {
            format_version: MODEL_FORMAT_VERSION,
            model_version: "v1".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            feature_names: vec!["alcohol".into(), "ph".into()],
            class_labels: vec!["0".into(), "1".into()],
            positive_label: Some("1".into()),
            scaler: Scaler {
                mean: vec![10.0, 3.0],
                scale: vec![2.0, 0.5],
            },
            model: Model::AdaBoost(AdaBoostModel {
                trees: vec![stump(0, 0.0, 0), stump(1, 0.0, 1)],
                estimator_weights: vec![1.5, 0.5],
            }),
            algorithm: "adaboost".into(),
            params: BTreeMap::from([("n_estimators".to_string(), "2".to_string())]),
            training_fingerprint: "abc".into(),
            drift_reference: None,
            sha256: String::new(),
        }
    }

    #[test]
    fn adaboost_votes_by_hand() {
        let m = stump_model();
        // alcohol 12 -> z=1 > 0 -> class 1 (weight 1.5); ph 2.5 -> z=-1 <= 0 -> class 1 (0.5).
        // Decision d = 1 - (-1) = 2 (all weight on class 1), proba = softmax([-1, 1]).
        let p = m.predict_proba(&[12.0, 2.5]).unwrap();
        let e = (2.0f64).exp();
        assert!((p[1] - e / (1.0 + e)).abs() < 1e-15, "{p:?}");
        // alcohol 9 -> class 0 (1.5); ph 2.5 -> class 1 (0.5): d = (0.5 - 1.5) * 2 / 2 = -1.
        let p = m.predict_proba(&[9.0, 2.5]).unwrap();
        let e = (1.0f64).exp();
        assert!((p[0] - e / (1.0 + e)).abs() < 1e-15, "{p:?}");
        assert_eq!(m.predict(&[9.0, 2.5]).unwrap(), 0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn a_saved_model_loads_back_identical_and_verified() {
        let mut m = stump_model();
        let bytes = m.to_json_bytes().unwrap();
        assert_eq!(m.sha256.len(), 64);
        let back = ModelFile::from_json_verified(&bytes).unwrap();
        assert_eq!(back, m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"kind\": \"adaBoost\""), "{text}");
        assert!(text.contains("\"featureNames\""), "{text}");
    }

    #[test]
    fn a_tampered_model_fails_its_checksum() {
        let mut m = stump_model();
        let text = String::from_utf8(m.to_json_bytes().unwrap()).unwrap();
        let tampered = text.replacen("1.5", "2.5", 1);
        assert_ne!(tampered, text);
        let err = ModelFile::from_json_verified(tampered.as_bytes()).unwrap_err();
        assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn another_format_version_or_no_checksum_is_refused() {
        let mut m = stump_model();
        let mut v: Value = serde_json::from_slice(&m.to_json_bytes().unwrap()).unwrap();
        v["formatVersion"] = 99.into();
        let err = ModelFile::from_json_verified(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("formatVersion 99"), "{err}");
        v["formatVersion"] = MODEL_FORMAT_VERSION.into();
        v.as_object_mut().unwrap().remove("sha256");
        let err = ModelFile::from_json_verified(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, ModelError::MissingChecksum), "{err}");
        let err = ModelFile::from_json_verified(b"{not json").unwrap_err();
        assert!(matches!(err, ModelError::ParseModel(_)), "{err}");
    }

    #[test]
    fn an_inconsistent_model_is_refused_even_with_a_valid_checksum() {
        let mut m = stump_model();
        if let Model::AdaBoost(a) = &mut m.model {
            a.trees[0].left[0] = 0; // a cycle: the root is its own child
        }
        let err = m.to_json_bytes().unwrap_err();
        assert!(
            err.to_string().contains("children must come after"),
            "{err}"
        );
        let mut m = stump_model();
        m.scaler.scale[1] = 0.0;
        assert!(m.validate().is_err());
        let mut m = stump_model();
        m.feature_names[1] = "Fixed Acidity".into();
        assert!(m.validate().unwrap_err().contains("not normalised"));
    }

    #[test]
    fn a_model_without_drift_reference_has_no_such_field_and_loads() {
        let mut m = stump_model();
        let bytes = m.to_json_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("driftReference"), "{text}");
        // The checksum of an older file (no field at all) is what it always was.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let mut without = v.clone();
        without.as_object_mut().unwrap().remove("sha256");
        assert_eq!(m.sha256, sha256_hex(&canonical_json(&without)));
        assert_eq!(
            ModelFile::from_json_verified(&bytes)
                .unwrap()
                .drift_reference,
            None
        );
    }

    #[test]
    fn a_drift_reference_round_trips_is_checksummed_and_validated() {
        let mut m = stump_model();
        let rows: Vec<f64> = (0..50).flat_map(|i| [8.0 + i as f64 * 0.1, 3.0]).collect();
        m.drift_reference = Some(DriftReference::from_rows(&m.feature_names, &rows).unwrap());
        let bytes = m.to_json_bytes().unwrap();
        let back = ModelFile::from_json_verified(&bytes).unwrap();
        assert_eq!(back, m);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"driftReference\""), "{text}");
        // Editing a share changes the checksum.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["driftReference"]["features"][0]["shares"][0] = 0.5.into();
        let err = ModelFile::from_json_verified(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");
        // An invalid reference with a valid checksum is refused, naming the problem.
        let mut bad = m.clone();
        if let Some(r) = &mut bad.drift_reference {
            r.features[1].edges = vec![3.0, 2.0];
            r.features[1].shares = vec![0.5, 0.25, 0.25];
        }
        let err = bad.to_json_bytes().unwrap_err().to_string();
        assert!(err.contains("driftReference feature 1 (\"ph\")"), "{err}");
        assert!(err.contains("strictly increasing"), "{err}");
        let mut bad = m.clone();
        if let Some(r) = &mut bad.drift_reference {
            r.features.pop();
        }
        let err = bad.to_json_bytes().unwrap_err().to_string();
        assert!(err.contains("1 features, the model has 2"), "{err}");
    }

    #[test]
    fn wrong_row_or_output_length_is_an_error_not_a_panic() {
        let m = stump_model();
        let err = m.predict(&[1.0]).unwrap_err();
        assert_eq!(err.to_string(), "expected a row of 2 feature values, got 1");
        let mut out = [0.0; 3];
        assert!(matches!(
            m.predict_proba_into(&[1.0, 2.0], &mut out).unwrap_err(),
            ModelError::OutputLength {
                expected: 2,
                got: 3
            }
        ));
    }
}
