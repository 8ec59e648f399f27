//! The model as served: a verified classifier plus everything a response needs, rendered once
//! at load time so that answering a request is mostly copying bytes.

use http::HeaderValue;

/// The inference the server needs from a model. A trait (rather than `ModelFile` directly) so
/// the request handling can be tested against a tiny deterministic classifier.
pub trait Scorer: Send + Sync + 'static {
    /// Class probabilities for one row of raw feature values in the model's feature order.
    /// `out.len()` is the number of classes. Must not allocate: it runs once per row.
    /// The server always passes rows and buffers of the right length, so an error here is a
    /// bug, reported as a 500 rather than a panic.
    fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), String>;

    /// Which implementation serves, for the start-up log.
    fn kind(&self) -> &'static str {
        "reference"
    }
}

impl Scorer for champion_model::ModelFile {
    fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), String> {
        champion_model::ModelFile::predict_proba_into(self, row, out).map_err(|e| e.to_string())
    }
}

/// The quality the trainer measured for this model, read from `report.json` when present.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScore {
    pub metric: String,
    pub value: f64,
}

/// A verified model ready to serve.
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub algorithm: String,
    pub sha256: String,
    pub feature_names: Vec<String>,
    pub class_labels: Vec<String>,
    pub score: Option<ModelScore>,
    scorer: Box<dyn Scorer>,
    /// `"label"` per class, JSON-escaped once.
    pub label_json: Vec<String>,
    /// `"label":` per class, the keys of the probability object.
    pub proba_key_json: Vec<String>,
    pub version_json: String,
    pub name_json: String,
    pub version_header: HeaderValue,
    /// `expected features: a, b, c` — appended to every input error.
    pub expected_features_text: String,
    /// `["a","b","c"]`.
    pub expected_features_json: String,
}

/// Why a model cannot be served even though its file verified.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ServedModelError {
    #[error("model {version} has no features")]
    NoFeatures { version: String },
    #[error("model {version} has fewer than two class labels")]
    TooFewClasses { version: String },
    #[error("model version {version:?} cannot be sent in an HTTP header")]
    VersionNotHeaderSafe { version: String },
}

pub struct ServedModelParts {
    pub name: String,
    pub version: String,
    pub algorithm: String,
    pub sha256: String,
    pub feature_names: Vec<String>,
    pub class_labels: Vec<String>,
    pub score: Option<ModelScore>,
    pub scorer: Box<dyn Scorer>,
}

fn json_string(s: &str) -> String {
    // Serialising a &str to JSON cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

impl ServedModel {
    pub fn new(parts: ServedModelParts) -> Result<Self, ServedModelError> {
        let ServedModelParts {
            name,
            version,
            algorithm,
            sha256,
            feature_names,
            class_labels,
            score,
            scorer,
        } = parts;
        if feature_names.is_empty() {
            return Err(ServedModelError::NoFeatures { version });
        }
        if class_labels.len() < 2 {
            return Err(ServedModelError::TooFewClasses { version });
        }
        let version_header = HeaderValue::from_str(&version).map_err(|_| {
            ServedModelError::VersionNotHeaderSafe {
                version: version.clone(),
            }
        })?;
        let label_json: Vec<String> = class_labels.iter().map(|l| json_string(l)).collect();
        let proba_key_json = label_json.iter().map(|l| format!("{l}:")).collect();
        let expected_features_text = format!("expected features: {}", feature_names.join(", "));
        let expected_features_json =
            serde_json::to_string(&feature_names).unwrap_or_else(|_| String::from("[]"));
        Ok(ServedModel {
            version_json: json_string(&version),
            name_json: json_string(&name),
            name,
            version,
            algorithm,
            sha256,
            feature_names,
            class_labels,
            score,
            scorer,
            label_json,
            proba_key_json,
            version_header,
            expected_features_text,
            expected_features_json,
        })
    }

    /// "compiled-adaboost" or "reference": whether the fast path is in use.
    pub fn inference(&self) -> &'static str {
        self.scorer.kind()
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    pub fn n_classes(&self) -> usize {
        self.class_labels.len()
    }

    /// Probabilities into `out` and the index of the most probable class (first on ties).
    pub fn classify(&self, row: &[f64], out: &mut [f64]) -> Result<usize, String> {
        self.scorer.predict_proba_into(row, out)?;
        let mut best = 0;
        for (i, p) in out.iter().enumerate() {
            if *p > out[best] {
                best = i;
            }
        }
        Ok(best)
    }

    /// The column of a feature named by a client: exact match first (what well-behaved clients
    /// send, no work), then the trainer's normalisation ("Fixed Acidity" == "fixed_acidity")
    /// compared lazily so the hot path never allocates.
    pub fn feature_index(&self, raw: &str) -> Option<usize> {
        if let Some(i) = self.feature_names.iter().position(|f| f == raw) {
            return Some(i);
        }
        self.feature_names
            .iter()
            .position(|f| crate::features::normalized_eq(raw, f))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A deterministic two-class scorer: P(class 1) = sigmoid(sum of the row).
    pub struct SumScorer;

    impl Scorer for SumScorer {
        fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), String> {
            let s: f64 = row.iter().sum();
            let p = 1.0 / (1.0 + (-s).exp());
            out[0] = 1.0 - p;
            out[1] = p;
            Ok(())
        }
    }

    pub fn sum_model() -> ServedModel {
        ServedModel::new(ServedModelParts {
            name: "wine".into(),
            version: "v1".into(),
            algorithm: "test".into(),
            sha256: "00".into(),
            feature_names: vec!["alcohol".into(), "fixed_acidity".into(), "ph".into()],
            class_labels: vec!["bad".into(), "good".into()],
            score: Some(ModelScore {
                metric: "f1Macro".into(),
                value: 0.75,
            }),
            scorer: Box::new(SumScorer),
        })
        .expect("test model is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn classify_returns_the_most_probable_class() {
        let m = sum_model();
        let mut out = [0.0; 2];
        assert_eq!(m.classify(&[1.0, 2.0, 3.0], &mut out), Ok(1));
        assert!(out[1] > 0.99);
        assert_eq!(m.classify(&[-1.0, -2.0, -3.0], &mut out), Ok(0));
    }

    #[test]
    fn feature_index_accepts_exact_and_normalised_names() {
        let m = sum_model();
        assert_eq!(m.feature_index("fixed_acidity"), Some(1));
        assert_eq!(m.feature_index("Fixed Acidity"), Some(1));
        assert_eq!(m.feature_index("  fixed--acidity "), Some(1));
        assert_eq!(m.feature_index("pH"), Some(2));
        assert_eq!(m.feature_index("acidity"), None);
    }

    #[test]
    fn rejects_models_it_cannot_serve() {
        let base = || ServedModelParts {
            name: "m".into(),
            version: "v1".into(),
            algorithm: "a".into(),
            sha256: "00".into(),
            feature_names: vec!["x".into()],
            class_labels: vec!["a".into(), "b".into()],
            score: None,
            scorer: Box::new(SumScorer),
        };
        let mut p = base();
        p.feature_names.clear();
        assert!(matches!(
            ServedModel::new(p),
            Err(ServedModelError::NoFeatures { .. })
        ));
        let mut p = base();
        p.class_labels.truncate(1);
        assert!(matches!(
            ServedModel::new(p),
            Err(ServedModelError::TooFewClasses { .. })
        ));
        let mut p = base();
        p.version = "v1\n".into();
        assert!(matches!(
            ServedModel::new(p),
            Err(ServedModelError::VersionNotHeaderSafe { .. })
        ));
    }

    #[test]
    fn labels_are_pre_escaped() {
        let mut p = ServedModelParts {
            name: "m".into(),
            version: "v1".into(),
            algorithm: "a".into(),
            sha256: "00".into(),
            feature_names: vec!["x".into()],
            class_labels: vec!["a\"b".into(), "c".into()],
            score: None,
            scorer: Box::new(SumScorer),
        };
        p.name = "n".into();
        let m = ServedModel::new(p).expect("valid");
        assert_eq!(m.label_json[0], r#""a\"b""#);
        assert_eq!(m.proba_key_json[1], r#""c":"#);
    }
}
