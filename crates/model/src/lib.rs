//! The contract between the three binaries of champion: the `model.json` and `report.json`
//! formats with their format versions and checksums, feature-name normalisation, the metrics
//! every report carries, and the inference of every model kind in plain Rust.
//!
//! The crate deliberately depends on serde, sha2 and thiserror only, so that the predictor can
//! serve a model without linking any training or cloud code.

mod algorithm;
mod canonical;
pub mod drift;
mod error;
mod inference;
mod layout;
pub mod metrics;
mod model_file;
mod names;
mod report;
pub mod trainer_cli;
mod tree;

pub use algorithm::Algorithm;
pub use canonical::{canonical_json, sha256_hex};
pub use drift::{DriftReference, FeatureBins};
pub use error::ModelError;
pub use inference::CompiledModel;
pub use layout::VersionDir;
pub use metrics::{ClassMetrics, MetricName, Metrics};
pub use model_file::{
    AdaBoostModel, GaussianNbModel, LogisticModel, MODEL_FORMAT_VERSION, Model, ModelFile,
    RandomForestModel, Scaler,
};
pub use names::{normalize_feature_name, normalized_chars, normalized_eq};
pub use report::{Durations, REPORT_FORMAT_VERSION, Report, RowCounts, is_sha256_hex};
pub use tree::DecisionTree;

/// File name of the model inside a model version directory.
pub const MODEL_FILE_NAME: &str = "model.json";
/// File name of the report inside a model version directory; written last, so its presence
/// means the training run is complete.
pub const REPORT_FILE_NAME: &str = "report.json";
