//! MODEL_URI → a verified, servable model. Nothing is served from a model whose checksum does
//! not verify: every failure here ends the process with the reason.

use champion_model::{MODEL_FILE_NAME, ModelFile, REPORT_FILE_NAME, Report};
use champion_store::Store;

use crate::model::{ModelScore, ServedModel, ServedModelError, ServedModelParts};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open model store {uri}: {source}")]
    OpenStore {
        uri: String,
        #[source]
        source: champion_store::StoreError,
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

/// The default model name: the pipeline segment of `<modelStore>/<pipeline>/<version>/`, so
/// `/v2/models/wine/infer` works for pipeline `wine` without extra configuration; "model" when
/// the URI has no usable segment.
pub fn default_model_name(dir_uri: &str) -> String {
    let path = dir_uri
        .split_once("://")
        .map_or(dir_uri, |(_, rest)| rest)
        .trim_end_matches('/');
    let mut segments = path.rsplit('/');
    let _version = segments.next();
    match segments.next() {
        Some(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            s.to_string()
        }
        _ => "model".to_string(),
    }
}

/// Loads, verifies and prepares the model; reads `report.json` beside it for the score when it
/// is there (a missing or unreadable report only costs the score metric).
pub async fn load(model_uri: &str, model_name: Option<&str>) -> Result<ServedModel, LoadError> {
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
    let model = ModelFile::from_json_verified(&bytes).map_err(|source| LoadError::Verify {
        uri: dir.clone(),
        file: model_file_name,
        source,
    })?;
    let score = read_score(&store, &dir, &model.model_version).await;
    let name = model_name
        .map(str::to_string)
        .unwrap_or_else(|| default_model_name(&dir));
    ServedModel::new(ServedModelParts {
        name,
        version: model.model_version.clone(),
        algorithm: model.algorithm.clone(),
        sha256: model.sha256.clone(),
        feature_names: model.feature_names.clone(),
        class_labels: model.class_labels.clone(),
        score,
        scorer: Box::new(model),
    })
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
        assert_eq!(default_model_name("file:///tmp/x/wine-red/20260101/"), "wine-red");
        assert_eq!(default_model_name("s3://bucket/v3/"), "bucket");
        assert_eq!(default_model_name("file:///v3/"), "model");
        assert_eq!(default_model_name("file:///a b/v3/"), "model");
    }
}
