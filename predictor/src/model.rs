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

    /// Which form serves, for the start-up log.
    fn form(&self) -> &'static str {
        "custom"
    }
}

/// champion-model's serving form: the inference the trainer scored the model with, prepared
/// once at load.
impl Scorer for champion_model::CompiledModel {
    fn predict_proba_into(&self, row: &[f64], out: &mut [f64]) -> Result<(), String> {
        champion_model::CompiledModel::predict_proba_into(self, row, out).map_err(|e| e.to_string())
    }

    fn form(&self) -> &'static str {
        champion_model::CompiledModel::form(self)
    }
}

/// The quality the trainer measured for this model, read from `report.json` when present.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScore {
    pub metric: String,
    pub value: f64,
}

/// What the server knows about a model besides its inference: what `/v2/models/{name}`, the
/// response headers and the metrics report.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub name: String,
    pub version: String,
    pub algorithm: String,
    pub sha256: String,
    pub feature_names: Vec<String>,
    pub class_labels: Vec<String>,
    pub score: Option<ModelScore>,
}

/// A verified model ready to serve.
pub struct ServedModel {
    pub meta: ModelMeta,
    scorer: Box<dyn Scorer>,
    /// The training bins of each feature for live drift (model.json's `driftReference`).
    pub drift_reference: Option<champion_model::DriftReference>,
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

fn json_string(s: &str) -> String {
    // Serialising a &str to JSON cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

impl ServedModel {
    pub fn new(meta: ModelMeta, scorer: Box<dyn Scorer>) -> Result<Self, ServedModelError> {
        let version = || meta.version.clone();
        if meta.feature_names.is_empty() {
            return Err(ServedModelError::NoFeatures { version: version() });
        }
        if meta.class_labels.len() < 2 {
            return Err(ServedModelError::TooFewClasses { version: version() });
        }
        let version_header = HeaderValue::from_str(&meta.version)
            .map_err(|_| ServedModelError::VersionNotHeaderSafe { version: version() })?;
        let label_json: Vec<String> = meta.class_labels.iter().map(|l| json_string(l)).collect();
        Ok(ServedModel {
            proba_key_json: label_json.iter().map(|l| format!("{l}:")).collect(),
            label_json,
            version_json: json_string(&meta.version),
            name_json: json_string(&meta.name),
            version_header,
            expected_features_text: format!("expected features: {}", meta.feature_names.join(", ")),
            expected_features_json: serde_json::to_string(&meta.feature_names)
                .unwrap_or_else(|_| String::from("[]")),
            meta,
            scorer,
            drift_reference: None,
        })
    }

    /// The model with its drift reference (validated against its features at load).
    pub fn with_drift_reference(
        mut self,
        reference: Option<champion_model::DriftReference>,
    ) -> Self {
        self.drift_reference = reference;
        self
    }

    /// The serving form of the inference (e.g. "adaBoostStumps"), for the start-up log.
    pub fn inference(&self) -> &'static str {
        self.scorer.form()
    }

    pub fn n_features(&self) -> usize {
        self.meta.feature_names.len()
    }

    pub fn n_classes(&self) -> usize {
        self.meta.class_labels.len()
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
        if let Some(i) = self.meta.feature_names.iter().position(|f| f == raw) {
            return Some(i);
        }
        self.meta
            .feature_names
            .iter()
            .position(|f| champion_model::normalized_eq(raw, f))
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
        let meta = ModelMeta {
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
        };
        ServedModel::new(meta, Box::new(SumScorer)).expect("test model is valid")
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

    fn meta(class_labels: &[&str]) -> ModelMeta {
        ModelMeta {
            name: "m".into(),
            version: "v1".into(),
            algorithm: "a".into(),
            sha256: "00".into(),
            feature_names: vec!["x".into()],
            class_labels: class_labels.iter().map(|l| l.to_string()).collect(),
            score: None,
        }
    }

    #[test]
    fn rejects_models_it_cannot_serve() {
        let mut m = meta(&["a", "b"]);
        m.feature_names.clear();
        assert!(matches!(
            ServedModel::new(m, Box::new(SumScorer)),
            Err(ServedModelError::NoFeatures { .. })
        ));
        let m = meta(&["a"]);
        assert!(matches!(
            ServedModel::new(m, Box::new(SumScorer)),
            Err(ServedModelError::TooFewClasses { .. })
        ));
        let mut m = meta(&["a", "b"]);
        m.version = "v1\n".into();
        assert!(matches!(
            ServedModel::new(m, Box::new(SumScorer)),
            Err(ServedModelError::VersionNotHeaderSafe { .. })
        ));
    }

    #[test]
    fn labels_and_identity_are_pre_escaped() {
        let mut m = meta(&["a\"b", "c"]);
        m.name = "n\"x".into();
        let m = ServedModel::new(m, Box::new(SumScorer)).expect("valid");
        assert_eq!(m.label_json[0], r#""a\"b""#);
        assert_eq!(m.proba_key_json[1], r#""c":"#);
        assert_eq!(m.name_json, r#""n\"x""#);
        assert_eq!(m.version_json, r#""v1""#);
        assert_eq!(m.expected_features_json, r#"["x"]"#);
        assert_eq!(m.expected_features_text, "expected features: x");
    }
}
