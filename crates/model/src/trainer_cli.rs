//! The trainer's command line, as the operator writes it and the trainer reads it: any image
//! that accepts these flags (or the environment variables of the same names) can train.

/// The subcommand that trains.
pub const TRAIN: &str = "train";

/// Long flag names (without the leading `--`) of `trainer-job train`.
pub mod flag {
    /// Prefix (or single object) holding the CSV data.
    pub const DATA_URI: &str = "data-uri";
    /// The version directory to write model.json and report.json to.
    pub const MODEL_URI: &str = "model-uri";
    /// The current champion's version directory, scored on the same holdout.
    pub const CHAMPION_URI: &str = "champion-uri";
    /// Fixed holdout data.
    pub const TEST_DATA_URI: &str = "test-data-uri";
    /// Target column.
    pub const TARGET: &str = "target";
    /// Binarise the target above this value.
    pub const POSITIVE_ABOVE: &str = "positive-above";
    /// A column to ignore (repeatable).
    pub const DROP: &str = "drop";
    /// Metric the scores are in.
    pub const METRIC: &str = "metric";
    /// Share of rows held out.
    pub const HOLDOUT_FRACTION: &str = "holdout-fraction";
    /// Seed of the random number generator.
    pub const SEED: &str = "seed";
    /// Classifier to fit.
    pub const ALGORITHM: &str = "algorithm";
    /// A hyper-parameter `key=value` (repeatable).
    pub const PARAM: &str = "param";
    /// Where the one-line outcome goes for Kubernetes.
    pub const TERMINATION_LOG: &str = "termination-log";
}

/// `--<name>`.
pub fn long(name: &str) -> String {
    format!("--{name}")
}
