use champion_model::ModelError;
use champion_store::StoreError;

/// Why a training run failed; one variant per step. The message is what the user sees on
/// stderr and in the termination log, so it names the object and line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no CSV objects under {uri} (expected files ending in .csv with a header row)")]
    NoData { uri: String },
    #[error("{object}: {reason}")]
    Header { object: String, reason: String },
    #[error("{object} line {line}: {reason}")]
    Row {
        object: String,
        line: u64,
        reason: String,
    },
    #[error("{0}")]
    Split(String),
    #[error("fitting {algorithm} failed: {reason}")]
    Fit { algorithm: String, reason: String },
    #[error("champion model {uri}: {reason}")]
    Champion { uri: String, reason: String },
    #[error(
        "the version directory {uri} already holds {file}; a version is written once (ask the operator for a new run, or choose another --model-uri)"
    )]
    VersionExists { uri: String, file: String },
    #[error("evaluation failed: {0}")]
    Evaluate(String),
    #[error("writing {path} failed: {reason}")]
    WriteFile { path: String, reason: String },
    #[error("building the model file failed: {0}")]
    Model(#[from] ModelError),
}
