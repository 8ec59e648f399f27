//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use champion_model::MetricName;
use trainer_job::{Algorithm, ReadOptions, TrainConfig};

/// The wine-seed data in the workspace (`<workspace>/../shared/data/wine-seed`); tests read
/// it from there and never copy it into the repository.
pub fn wine_seed() -> PathBuf {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../shared/data/wine-seed");
    assert!(
        dir.join("data_1.csv").is_file(),
        "the wine-seed data is missing: expected {} (the workspace's ../shared/data/wine-seed)",
        dir.display()
    );
    dir
}

/// A directory holding copies of the named wine-seed slots, as a data URI would.
pub fn data_dir(root: &Path, name: &str, slots: &[&str]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for slot in slots {
        std::fs::copy(wine_seed().join(slot), dir.join(slot)).unwrap();
    }
    format!("file://{}/", dir.display())
}

pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The wine task as the original study poses it: "good" is quality above 5, and the row
/// number column `Id` would only leak the file order into the model.
pub fn wine_read_options() -> ReadOptions {
    ReadOptions {
        target: "quality".into(),
        positive_above: Some(5.0),
        drop: vec!["Id".into()],
        skip_bad_rows: false,
    }
}

/// The default AdaBoost run scored on the wine-seed test file, so that scores are comparable
/// with scikit-learn's on the same split.
pub fn wine_config(data_uri: String, model_uri: String) -> TrainConfig {
    TrainConfig {
        data_uri,
        model_uri,
        champion_uri: None,
        test_data_uri: Some(file_uri(&wine_seed().join("test_data.csv"))),
        read: wine_read_options(),
        metric: MetricName::F1Binary,
        holdout_fraction: 0.2,
        seed: 42,
        algorithm: Algorithm::AdaBoost,
        params: BTreeMap::new(),
    }
}
