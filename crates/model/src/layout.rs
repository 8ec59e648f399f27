//! Where a model version lives: `<modelStore>/<namespace>/<pipeline>/<version>/`. The operator
//! builds this URI, the trainer writes model.json and report.json under it, and the predictor
//! reads them from it; all three use [`VersionDir`], so the layout is written down once. The
//! namespace is part of it, so two teams' pipelines of the same name on one bucket never write
//! into each other's directories.

use crate::error::ModelError;

/// A model version directory in a model store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir {
    /// The model store URI, without a trailing '/'.
    pub store: String,
    /// The pipeline's namespace: its directory under the store.
    pub namespace: String,
    /// The pipeline's directory under the namespace's.
    pub pipeline: String,
    /// The model version: the directory's last segment.
    pub version: String,
}

impl VersionDir {
    /// The version directory of `version` of `namespace`/`pipeline` in the model store `store`.
    pub fn new(store: &str, namespace: &str, pipeline: &str, version: &str) -> Self {
        Self {
            store: store.trim_end_matches('/').to_string(),
            namespace: namespace.to_string(),
            pipeline: pipeline.to_string(),
            version: version.to_string(),
        }
    }

    /// The directory as a URI, with a trailing '/'.
    pub fn uri(&self) -> String {
        format!(
            "{}/{}/{}/{}/",
            self.store, self.namespace, self.pipeline, self.version
        )
    }

    /// Parses a version directory URI (`scheme://…/<namespace>/<pipeline>/<version>/`, the
    /// trailing '/' optional; a query or fragment is ignored).
    pub fn parse(uri: &str) -> Result<Self, ModelError> {
        let invalid = || ModelError::VersionDir(uri.to_string());
        let path = uri.split(['?', '#']).next().unwrap_or("");
        let (scheme, rest) = path.split_once("://").ok_or_else(invalid)?;
        if scheme.is_empty() {
            return Err(invalid());
        }
        let rest = rest.trim_end_matches('/');
        let mut segments = rest.rsplitn(4, '/');
        let version = segments
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(invalid)?;
        let pipeline = segments
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(invalid)?;
        let namespace = segments
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(invalid)?;
        let store = segments.next().unwrap_or("");
        Ok(Self {
            store: format!("{scheme}://{store}"),
            namespace: namespace.to_string(),
            pipeline: pipeline.to_string(),
            version: version.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_uri_parses_back() {
        for store in [
            "file:///models",
            "file:///models/",
            "s3://bucket/wine/models",
        ] {
            let dir = VersionDir::new(store, "team-a", "wine", "0123456789ab");
            assert!(
                dir.uri().ends_with("/team-a/wine/0123456789ab/"),
                "{}",
                dir.uri()
            );
            assert_eq!(VersionDir::parse(&dir.uri()).ok(), Some(dir.clone()));
        }
        let d = VersionDir::parse("s3://b/models/team-a/wine/v1?region=x").expect("parses");
        assert_eq!(
            (
                d.namespace.as_str(),
                d.pipeline.as_str(),
                d.version.as_str()
            ),
            ("team-a", "wine", "v1")
        );
        assert_eq!(d.store, "s3://b/models");
        assert_ne!(
            VersionDir::new("s3://b/m", "team-a", "wine", "v1").uri(),
            VersionDir::new("s3://b/m", "team-b", "wine", "v1").uri(),
            "two namespaces' pipelines of one name never share a directory"
        );
    }

    #[test]
    fn uris_without_pipeline_and_version_are_refused() {
        for bad in [
            "",
            "models/wine/v1",
            "s3://",
            "s3://bucket",
            "file:///v1",
            "file:///wine/v1",
            "://a/b/c",
        ] {
            assert!(
                VersionDir::parse(bad)
                    .is_err_and(|e| e.to_string().contains("<namespace>/<pipeline>/<version>")),
                "{bad:?}"
            );
        }
    }
}
