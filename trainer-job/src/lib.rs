//! The champion trainer: reads every CSV object under a data URI, splits a holdout, fits a
//! scaler and a classifier, scores it and the current champion on the same holdout, and writes
//! `model.json` and `report.json` (the contract: docs/trainer-contract.md).

pub mod algorithms;
pub mod data;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod run;
pub mod split;

pub use algorithms::Algorithm;
pub use data::{ReadOptions, Table, TableReader};
pub use error::TrainError;
pub use run::{TrainConfig, TrainOutcome, model_version, train};
