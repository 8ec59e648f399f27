//! `make bench-trainer`: fit time and quality of every algorithm on the repository's wine split
//! (`champion_datasets::wine(2)`: train = data_1 ∪ data_2, 1,066 rows; test = test_data, 533
//! rows; "good" = quality > 5),
//! next to scikit-learn's AdaBoost measured on this machine when python3 has scikit-learn.
//! Prints a markdown table; asserts nothing (the quality bar is a test in tests/train_wine.rs).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use champion_model::{MetricName, ModelFile};
use ndarray::Array1;
use trainer_job::algorithms::{self, Algorithm, TrainingSet, fit_scaler, scale_rows};
use trainer_job::{Table, TableReader, TrainConfig, train};

#[path = "../tests/common/mod.rs"]
mod common;

use common::wine_read_options as options;

const RUNS: usize = 31;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn seed_dir() -> Result<PathBuf> {
    Ok(common::wine_dir())
}

fn read(files: &[&str]) -> Result<Table> {
    let mut reader = TableReader::new(options())?;
    for f in files {
        let bytes = std::fs::read(seed_dir()?.join(f))?;
        reader.read_object(f, &bytes)?;
    }
    Ok(reader.finish())
}

/// Median and minimum seconds of `RUNS` fits (scaler + classifier) on the training rows.
fn time_fit(
    table: &Table,
    algorithm: Algorithm,
    params: &BTreeMap<String, String>,
) -> Result<(f64, f64)> {
    let nf = table.n_features();
    let y: Array1<usize> = table.labels.iter().map(|l| usize::from(l == "1")).collect();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let scaler = fit_scaler(&table.values, nf);
        let data = TrainingSet {
            z: scale_rows(&scaler, &table.values, nf),
            y: y.clone(),
            n_classes: 2,
        };
        let model = algorithms::fit(algorithm, params, &data, 42)?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(model);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[RUNS / 2], times[0]))
}

/// Rows per second of `proba` over every row of `rows`, best of 5 passes of at least 0.2 s.
fn rows_per_second(rows: &Table, mut proba: impl FnMut(&[f64]) -> Result<()>) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..5 {
        let (t, mut n) = (Instant::now(), 0usize);
        while t.elapsed().as_secs_f64() < 0.2 {
            for i in 0..rows.n_rows() {
                proba(std::hint::black_box(rows.row(i)))?;
            }
            n += rows.n_rows();
        }
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// One row of the inference table: the model as loaded against its compiled serving form.
fn inference_line(name: &str, model: &ModelFile, rows: &Table) -> Result<String> {
    let compiled = model.compile()?;
    let mut out = vec![0.0; model.n_classes()];
    let reference = rows_per_second(rows, |row| {
        model.predict_proba_into(row, &mut out)?;
        std::hint::black_box(&out);
        Ok(())
    })?;
    let served = rows_per_second(rows, |row| {
        compiled.predict_proba_into(row, &mut out)?;
        std::hint::black_box(&out);
        Ok(())
    })?;
    Ok(format!(
        "| champion {name} | {reference:.0} | {served:.0} | {} |",
        compiled.form()
    ))
}

fn sklearn(seed: &Path) -> Option<serde_json::Value> {
    let script = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("bench/sklearn_wine.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(seed)
        .arg("21")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "scikit-learn not measured: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn main() -> Result<()> {
    let seed = seed_dir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let train_rows = read(&["data_1.csv", "data_2.csv"])?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir(&data)?;
    for f in ["data_1.csv", "data_2.csv"] {
        std::fs::copy(seed.join(f), data.join(f))?;
    }
    let cases: Vec<(&str, Algorithm, BTreeMap<String, String>)> = vec![
        (
            "adaboost (default: 50 stumps, native trees)",
            Algorithm::AdaBoost,
            BTreeMap::new(),
        ),
        (
            "adaboost, tree=linfa",
            Algorithm::AdaBoost,
            BTreeMap::from([("tree".into(), "linfa".into())]),
        ),
        ("logistic", Algorithm::Logistic, BTreeMap::new()),
        (
            "random-forest (100 trees)",
            Algorithm::RandomForest,
            BTreeMap::new(),
        ),
        ("gaussian-nb", Algorithm::GaussianNb, BTreeMap::new()),
    ];
    println!(
        "Wine (linfa-datasets' red-wine set, champion_datasets::wine): train {} rows (data_1 ∪ data_2), test {} rows (test_data); fit = scaler + classifier, {RUNS} runs\n",
        train_rows.n_rows(),
        read(&["test_data.csv"])?.n_rows()
    );
    println!(
        "| model | train rows | fit median (ms) | fit min (ms) | F1 binary (good) | F1 macro |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut ada_median = 0.0;
    let test_rows = read(&["test_data.csv"])?;
    let mut inference_lines = Vec::new();
    for (i, (name, algorithm, params)) in cases.iter().enumerate() {
        let (median, min) = time_fit(&train_rows, *algorithm, params)?;
        if i == 0 {
            ada_median = median;
        }
        let config = TrainConfig {
            data_uri: format!("file://{}/", data.display()),
            model_uri: format!("file://{}/models/bench/v{i}/", work.path().display()),
            champion_uri: None,
            test_data_uri: Some(format!("file://{}", seed.join("test_data.csv").display())),
            read: options(),
            metric: MetricName::F1Binary,
            holdout_fraction: 0.2,
            seed: 42,
            algorithm: *algorithm,
            params: params.clone(),
        };
        let outcome = runtime.block_on(train(&config))?;
        inference_lines.push(inference_line(name, &outcome.model, &test_rows)?);
        let report = outcome.report;
        println!(
            "| champion {name} | {} | {:.2} | {:.2} | {:.4} | {:.4} |",
            report.rows.train,
            median * 1e3,
            min * 1e3,
            report.challenger_metrics.f1_binary.unwrap_or(f64::NAN),
            report.challenger_metrics.f1_macro
        );
    }
    match sklearn(&seed) {
        Some(sk) => {
            let fit = sk["fit_median_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| scikit-learn {} AdaBoostClassifier(random_state=42) | {} | {:.2} | | {:.4} | {:.4} |",
                sk["sklearn"].as_str().unwrap_or("?"),
                sk["rows"],
                fit * 1e3,
                sk["f1_binary"].as_f64().unwrap_or(f64::NAN),
                sk["f1_macro"].as_f64().unwrap_or(f64::NAN),
            );
            println!(
                "\nAdaBoost fit speed-up over scikit-learn on this machine: {:.0}x",
                fit / ada_median
            );
        }
        None => {
            println!("\n(scikit-learn not available: `pip install scikit-learn` to add its row)")
        }
    }
    println!(
        "\nInference, one row at a time over the {} test rows (best of 5 passes of >= 0.2 s each)\n",
        test_rows.n_rows()
    );
    println!(
        "| model | ModelFile::predict_proba_into rows/s | CompiledModel rows/s (trainer scoring and predictor serving) | form |"
    );
    println!("|---|---:|---:|---|");
    for line in &inference_lines {
        println!("{line}");
    }
    Ok(())
}
