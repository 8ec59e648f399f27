//! A small real model for tests and the benchmark, built through champion-model's own types so
//! it goes through the same checksum and inference code as a trained one. Shaped like the
//! trainer's default for the wine data: AdaBoost of 50 decision stumps over the 11 features.
//!
//! Shared by the integration tests (`mod common`) and `examples/bench_model.rs` (`#[path]`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use champion_model::{
    AdaBoostModel, DecisionTree, DriftReference, Durations, FeatureBins, MODEL_FORMAT_VERSION,
    MetricName, Metrics, Model, ModelFile, REPORT_FORMAT_VERSION, Report, RowCounts, Scaler,
};

pub const WINE_FEATURES: [&str; 11] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "free_sulfur_dioxide",
    "total_sulfur_dioxide",
    "density",
    "ph",
    "sulphates",
    "alcohol",
];

/// Approximate mean and standard deviation of each feature of the wine set.
const WINE_MEAN: [f64; 11] = [
    8.31, 0.531, 0.268, 2.53, 0.0869, 15.6, 45.9, 0.99673, 3.31, 0.658, 10.44,
];
const WINE_SCALE: [f64; 11] = [
    1.75, 0.180, 0.197, 1.36, 0.0473, 10.2, 32.8, 0.00192, 0.157, 0.170, 1.08,
];

/// AdaBoost of `trees` stumps; deterministic. Stumps on alcohol, sulphates and volatile acidity
/// carry most weight so that predictions track the real signal of the data.
pub fn wine_model(version: &str, trees: usize) -> ModelFile {
    let mut stumps = Vec::with_capacity(trees);
    let mut weights = Vec::with_capacity(trees);
    // (feature, good when above threshold?)
    let signals = [
        (10, true),
        (9, true),
        (1, false),
        (6, false),
        (2, true),
        (7, false),
    ];
    for i in 0..trees {
        let (feature, good_above) = signals[i % signals.len()];
        let threshold = -0.6 + 0.2 * ((i / signals.len()) % 7) as f64;
        let (left, right) = if good_above {
            ([0.8, 0.2], [0.2, 0.8])
        } else {
            ([0.2, 0.8], [0.8, 0.2])
        };
        stumps.push(DecisionTree {
            feature: vec![feature, -1, -1],
            threshold: vec![threshold, 0.0, 0.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            value: [[0.5, 0.5], left, right].concat(),
        });
        weights.push(1.0 / (1.0 + i as f64 / 10.0));
    }
    let mut params = BTreeMap::new();
    params.insert("nEstimators".to_string(), trees.to_string());
    ModelFile {
        format_version: MODEL_FORMAT_VERSION,
        model_version: version.to_string(),
        created_at: "2026-01-01T00:00:00Z".to_string(),
        feature_names: WINE_FEATURES.iter().map(|s| s.to_string()).collect(),
        class_labels: vec!["bad".to_string(), "good".to_string()],
        positive_label: Some("good".to_string()),
        scaler: Scaler {
            mean: WINE_MEAN.to_vec(),
            scale: WINE_SCALE.to_vec(),
        },
        model: Model::AdaBoost(AdaBoostModel {
            trees: stumps,
            estimator_weights: weights,
        }),
        algorithm: "adaboost".to_string(),
        params,
        training_fingerprint: "0".repeat(64),
        drift_reference: Some(normal_drift_reference()),
        sha256: String::new(),
    }
}

/// Deciles of a normal distribution with each feature's mean and scale: a stand-in for the
/// reference bins the trainer computes from the training rows (10 bins of 0.1 each).
pub fn normal_drift_reference() -> DriftReference {
    const Z: [f64; 9] = [
        -1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816,
    ];
    DriftReference {
        rows: 1000,
        features: WINE_FEATURES
            .iter()
            .enumerate()
            .map(|(f, name)| FeatureBins {
                name: name.to_string(),
                edges: Z.iter().map(|z| WINE_MEAN[f] + z * WINE_SCALE[f]).collect(),
                shares: vec![0.1; 10],
            })
            .collect(),
    }
}

/// A report for `version` with `score` as its f1Macro.
pub fn report(version: &str, score: f64) -> Report {
    let labels = vec!["bad".to_string(), "good".to_string()];
    let metrics = Metrics::compute(&[0, 1, 1, 0], &[0, 1, 0, 0], &labels, Some(1))
        .unwrap_or_else(|e| panic!("metrics of a fixed confusion matrix: {e}"));
    Report {
        format_version: REPORT_FORMAT_VERSION,
        model_version: version.to_string(),
        metric: MetricName::F1Macro,
        challenger_score: score,
        champion_score: None,
        champion_version: None,
        challenger_metrics: metrics,
        champion_metrics: None,
        rows: RowCounts::default(),
        class_labels: labels,
        positive_label: Some("good".to_string()),
        data_fingerprint: "0".repeat(64),
        model_sha256: champion_model::sha256_hex(version.as_bytes()),
        algorithm: "adaboost".to_string(),
        params: BTreeMap::new(),
        durations: Durations::default(),
        created_at: "2026-01-01T00:00:00Z".to_string(),
    }
}

/// Writes `<dir>/model.json` (and `report.json` when a score is given); returns the model.
pub fn write_model_dir(dir: &Path, version: &str, score: Option<f64>) -> ModelFile {
    write_model_dir_with(dir, version, score, wine_model(version, 50))
}

/// As [`write_model_dir`], for a given model.
pub fn write_model_dir_with(
    dir: &Path,
    version: &str,
    score: Option<f64>,
    mut model: ModelFile,
) -> ModelFile {
    let bytes = model
        .to_json_bytes()
        .unwrap_or_else(|e| panic!("serialising the synthetic model: {e}"));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let digest = champion_model::sha256_hex(&bytes);
    std::fs::write(dir.join("model.json"), bytes)
        .unwrap_or_else(|e| panic!("writing model.json in {}: {e}", dir.display()));
    if let Some(score) = score {
        let mut report = report(version, score);
        report.model_sha256 = digest;
        let bytes = report
            .to_json_bytes()
            .unwrap_or_else(|e| panic!("serialising the report: {e}"));
        std::fs::write(dir.join("report.json"), bytes)
            .unwrap_or_else(|e| panic!("writing report.json in {}: {e}", dir.display()));
    }
    model
}
