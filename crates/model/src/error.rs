/// Everything that can go wrong reading, writing or using a model or report file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model.json is not valid JSON of the expected shape: {0}")]
    ParseModel(#[source] serde_json::Error),
    #[error("model.json has formatVersion {found}, this build reads formatVersion {expected}")]
    ModelFormatVersion { found: u64, expected: u32 },
    #[error("model.json has no sha256 field; it was not written by a champion trainer")]
    MissingChecksum,
    #[error(
        "model.json checksum mismatch: the file says sha256 {stored}, its content hashes to {computed} (file corrupted or edited)"
    )]
    ChecksumMismatch { stored: String, computed: String },
    #[error("model.json is inconsistent: {0}")]
    InvalidModel(String),
    #[error("could not serialise {what} to JSON: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("expected a row of {expected} feature values, got {got}")]
    RowLength { expected: usize, got: usize },
    #[error("expected an output buffer of {expected} class probabilities, got {got}")]
    OutputLength { expected: usize, got: usize },
    #[error("report.json is not valid JSON of the expected shape: {0}")]
    ParseReport(#[source] serde_json::Error),
    #[error("report.json has formatVersion {found}, this build reads formatVersion {expected}")]
    ReportFormatVersion { found: u32, expected: u32 },
    #[error(
        "report.json field modelSha256 is {0:?}, expected the hex SHA-256 of model.json (64 lowercase hex digits)"
    )]
    ReportDigest(String),
    #[error("report.json field {field} is {value}, expected a finite number in [0, 1]")]
    ReportScore { field: String, value: f64 },
    #[error("unknown metric {0:?}; expected one of f1Macro, f1Weighted, f1Binary, accuracy")]
    UnknownMetric(String),
    #[error("unknown algorithm {0:?}; expected adaboost, logistic, random-forest or gaussian-nb")]
    UnknownAlgorithm(String),
    #[error(
        "{0:?} is not a model version directory URI; expected <modelStore>/<namespace>/<pipeline>/<version>/, like s3://models/team-a/wine/v1/"
    )]
    VersionDir(String),
}
