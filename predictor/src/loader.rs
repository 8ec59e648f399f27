//! MODEL_URI → a verified, servable model. Nothing is served from a model whose checksum does
//! not verify: every failure here ends the process with the reason.

use champion_model::{MODEL_FILE_NAME, ModelFile, REPORT_FILE_NAME, Report};
use champion_store::Store;

use crate::model::{ModelMeta, ModelScore, ServedModel, ServedModelError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open model store {uri}: {source}")]
    OpenStore {
        uri: String,
        #[source]
        source: champion_store::StoreError,
    },
    #[error(
        "refusing to serve {uri}{file}: its SHA-256 is {found}, not the {expected} its run reported (MODEL_SHA256); only the bytes that were evaluated are served"
    )]
    Digest {
        uri: String,
        file: &'static str,
        expected: String,
        found: String,
    },
    #[error("cannot read {uri}{file}: {source}")]
    Fetch {
        uri: String,
        file: &'static str,
        #[source]
        source: champion_store::StoreError,
    },
    #[error("refusing to serve {uri}{file}: {source}")]
    Verify {
        uri: String,
        file: &'static str,
        #[source]
        source: champion_model::ModelError,
    },
    #[error("cannot prepare {uri}{file} for serving: {source}")]
    Compile {
        uri: String,
        file: &'static str,
        #[source]
        source: champion_model::ModelError,
    },
    #[error("refusing to serve {uri}{file}: {source}")]
    Unservable {
        uri: String,
        file: &'static str,
        #[source]
        source: ServedModelError,
    },
}

/// The version directory and file name a MODEL_URI stands for. The contract is a directory;
/// a URI that names a `.json` file directly is accepted too, as people paste those.
pub fn split_model_uri(uri: &str) -> (String, Option<String>) {
    let trimmed = uri.trim();
    if let Some((dir, file)) = trimmed.rsplit_once('/')
        && file.ends_with(".json")
        && !dir.is_empty()
    {
        return (format!("{dir}/"), Some(file.to_string()));
    }
    if trimmed.ends_with('/') {
        (trimmed.to_string(), None)
    } else {
        (format!("{trimmed}/"), None)
    }
}

/// The default model name: the pipeline segment of the version directory (see
/// [`champion_model::VersionDir`]), so `/v2/models/wine/infer` works for pipeline `wine`
/// without extra configuration; "model" when the URI has no usable segment.
pub fn default_model_name(dir_uri: &str) -> String {
    match champion_model::VersionDir::parse(dir_uri) {
        Ok(dir)
            if dir
                .pipeline
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            dir.pipeline
        }
        _ => "model".to_string(),
    }
}

/// Loads, verifies and prepares the model; reads `report.json` beside it for the score when it
/// is there (a missing or unreadable report only costs the score metric). With
/// `expected_sha256`, model.json's bytes must have that digest.
pub async fn load(
    model_uri: &str,
    model_name: Option<&str>,
    expected_sha256: Option<&str>,
) -> Result<ServedModel, LoadError> {
    let (dir, file) = split_model_uri(model_uri);
    let model_file_name: &'static str = match file.as_deref() {
        None | Some(MODEL_FILE_NAME) => MODEL_FILE_NAME,
        Some(_) => "the named file",
    };
    let store = Store::from_uri(&dir).map_err(|source| LoadError::OpenStore {
        uri: dir.clone(),
        source,
    })?;
    let key = file.clone().unwrap_or_else(|| MODEL_FILE_NAME.to_string());
    let bytes = store.get(&key).await.map_err(|source| LoadError::Fetch {
        uri: dir.clone(),
        file: model_file_name,
        source,
    })?;
    if let Some(expected) = expected_sha256 {
        let found = champion_model::sha256_hex(&bytes);
        if found != expected {
            return Err(LoadError::Digest {
                uri: dir,
                file: model_file_name,
                expected: expected.to_string(),
                found,
            });
        }
    }
    let model = ModelFile::from_json_verified(&bytes).map_err(|source| LoadError::Verify {
        uri: dir.clone(),
        file: model_file_name,
        source,
    })?;
    let score = read_score(&store, &dir, &model.model_version).await;
    let name = model_name
        .map(str::to_string)
        .unwrap_or_else(|| default_model_name(&dir));
    let compiled = model.compile().map_err(|source| LoadError::Compile {
        uri: dir.clone(),
        file: model_file_name,
        source,
    })?;
    let ModelFile {
        model_version,
        algorithm,
        sha256,
        feature_names,
        class_labels,
        drift_reference,
        ..
    } = model;
    let meta = ModelMeta {
        name,
        version: model_version,
        algorithm,
        sha256,
        feature_names,
        class_labels,
        score,
    };
    ServedModel::new(meta, Box::new(compiled))
        .map(|served| served.with_drift_reference(drift_reference))
        .map_err(|source| LoadError::Unservable {
            uri: dir,
            file: model_file_name,
            source,
        })
}

async fn read_score(store: &Store, dir: &str, version: &str) -> Option<ModelScore> {
    match store.exists(REPORT_FILE_NAME).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(uri = dir, error = %e, "cannot check for report.json; serving without a score");
            return None;
        }
    }
    let bytes = match store.get(REPORT_FILE_NAME).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(uri = dir, error = %e, "cannot read report.json; serving without a score");
            return None;
        }
    };
    match Report::from_json(&bytes) {
        Ok(r) if r.model_version == version => Some(ModelScore {
            metric: r.metric.as_str().to_string(),
            value: r.challenger_score,
        }),
        Ok(r) => {
            tracing::warn!(uri = dir, report_version = %r.model_version, model_version = version, "report.json belongs to another model version; serving without a score");
            None
        }
        Err(e) => {
            tracing::warn!(uri = dir, error = %e, "report.json is invalid; serving without a score");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uri_forms() {
        assert_eq!(
            split_model_uri("s3://b/models/wine/v3"),
            ("s3://b/models/wine/v3/".into(), None)
        );
        assert_eq!(
            split_model_uri("file:///m/wine/v3/"),
            ("file:///m/wine/v3/".into(), None)
        );
        assert_eq!(
            split_model_uri("file:///m/wine/v3/model.json"),
            ("file:///m/wine/v3/".into(), Some("model.json".into()))
        );
    }

    #[test]
    fn default_name_is_the_pipeline_segment() {
        assert_eq!(default_model_name("s3://bucket/models/wine/v3/"), "wine");
        assert_eq!(
            default_model_name("file:///tmp/x/wine-red/20260101/"),
            "wine-red"
        );
        assert_eq!(
            default_model_name("s3://bucket/v3/"),
            "model",
            "not <store>/<namespace>/<pipeline>/<version>/"
        );
        assert_eq!(default_model_name("file:///v3/"), "model");
        assert_eq!(default_model_name("file:///a b/v3/"), "model");
    }

    fn logistic(version: &str) -> ModelFile {
        ModelFile {
            format_version: champion_model::MODEL_FORMAT_VERSION,
            model_version: version.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            feature_names: vec!["a".into(), "b".into()],
            class_labels: vec!["no".into(), "yes".into(), "maybe".into()],
            positive_label: None,
            scaler: champion_model::Scaler {
                mean: vec![1.0, -1.0],
                scale: vec![2.0, 0.5],
            },
            model: champion_model::Model::Logistic(champion_model::LogisticModel {
                coefficients: vec![vec![0.0, 0.0], vec![1.0, -2.0], vec![0.5, 0.5]],
                intercepts: vec![0.0, 0.1, -0.1],
            }),
            algorithm: "logistic".into(),
            params: Default::default(),
            training_fingerprint: String::new(),
            drift_reference: None,
            sha256: String::new(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
            .block_on(f)
    }

    #[test]
    fn loads_a_logistic_model_and_serves_champion_model_inference() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipe").join("v2");
        std::fs::create_dir_all(&dir).unwrap();
        let mut model = logistic("v2");
        std::fs::write(dir.join(MODEL_FILE_NAME), model.to_json_bytes().unwrap()).unwrap();
        let uri = format!("file://{}/", dir.display());
        let digest = champion_model::sha256_hex(&std::fs::read(dir.join(MODEL_FILE_NAME)).unwrap());
        let served = block_on(load(&uri, None, Some(&digest))).unwrap();
        assert_eq!(served.meta.name, "pipe");
        assert_eq!(served.meta.version, "v2");
        assert_eq!(served.meta.score, None);
        assert_eq!(served.inference(), "logistic");
        for row in [[0.0, 0.0], [3.0, -2.0], [-1.5, 7.25]] {
            let mut got = [0.0; 3];
            let class = served.classify(&row, &mut got).unwrap();
            let want = model.predict_proba(&row).unwrap();
            assert_eq!(got.to_vec(), want);
            assert_eq!(class, model.predict(&row).unwrap());
        }
    }

    #[test]
    fn refuses_a_tampered_model_and_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut model = logistic("v1");
        let bytes = model.to_json_bytes().unwrap();
        // Valid JSON and a valid model, one number changed: only the checksum can tell.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["model"]["intercepts"][0] = serde_json::json!(0.5);
        let tampered = serde_json::to_vec(&v).unwrap();
        std::fs::write(tmp.path().join(MODEL_FILE_NAME), tampered).unwrap();
        let uri = format!("file://{}/", tmp.path().display());
        let err = block_on(load(&uri, Some("m"), None))
            .err()
            .expect("must refuse");
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Verify { .. }), "{msg}");
        assert!(msg.contains("model.json"), "{msg}");
    }

    #[test]
    fn refuses_a_valid_model_whose_bytes_are_not_the_evaluated_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let mut evaluated = logistic("v1");
        let evaluated_digest = champion_model::sha256_hex(&evaluated.to_json_bytes().unwrap());
        // Another model that verifies on its own (its internal checksum is right).
        let mut other = logistic("v1");
        other.created_at = "2030-01-01T00:00:00Z".into();
        std::fs::write(
            tmp.path().join(MODEL_FILE_NAME),
            other.to_json_bytes().unwrap(),
        )
        .unwrap();
        let uri = format!("file://{}/", tmp.path().display());
        assert!(
            block_on(load(&uri, None, None)).is_ok(),
            "it is a valid model"
        );
        let err = block_on(load(&uri, None, Some(&evaluated_digest)))
            .err()
            .expect("must refuse");
        assert!(matches!(err, LoadError::Digest { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&evaluated_digest), "{msg}");
        assert!(msg.starts_with("refusing to serve "), "{msg}");
    }
}
