//! One training run, start to finish: read → split → scale + fit → score challenger and
//! champion on the same holdout → write model.json, then report.json.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use bytes::Bytes;
use champion_model::{
    DriftReference, Durations, MODEL_FILE_NAME, MODEL_FORMAT_VERSION, MetricName, Metrics,
    ModelFile, REPORT_FILE_NAME, REPORT_FORMAT_VERSION, Report, RowCounts,
};
use champion_store::{Store, fingerprint};
use ndarray::Array1;

use crate::algorithms::{self, Algorithm, TrainingSet, fit_scaler, scale_rows};
use crate::data::{POSITIVE_LABEL, ReadOptions, Table, TableReader, sort_labels};
use crate::error::TrainError;
use crate::evaluate::predict_labels;
use crate::split::{in_holdout, name_order};

/// Everything one run needs; the CLI fills it from flags and environment.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub data_uri: String,
    /// The version directory to write to; its last path segment is the model version.
    pub model_uri: String,
    /// The current champion's version directory, scored on the same holdout.
    pub champion_uri: Option<String>,
    /// Fixed holdout data; when set, its rows are the holdout and never train.
    pub test_data_uri: Option<String>,
    pub read: ReadOptions,
    pub metric: MetricName,
    pub holdout_fraction: f64,
    pub seed: u64,
    pub algorithm: Algorithm,
    pub params: BTreeMap<String, String>,
}

/// What a successful run wrote.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub model: ModelFile,
    pub report: Report,
}

/// The model version of a version directory URI: its last path segment.
pub fn model_version(model_uri: &str) -> Result<String, TrainError> {
    champion_model::VersionDir::parse(model_uri)
        .map(|dir| dir.version)
        .map_err(|e| TrainError::Config(format!("--model-uri: {e}")))
}

/// Reads every CSV object of a listing into one table.
async fn read_all(store: &Store, mut reader: TableReader) -> Result<Table, TrainError> {
    let listing = store.list().await?;
    read_listing(store, &listing, &mut reader).await?;
    Ok(reader.finish())
}

async fn read_listing(
    store: &Store,
    listing: &[champion_store::ObjectInfo],
    reader: &mut TableReader,
) -> Result<(), TrainError> {
    let csvs: Vec<&champion_store::ObjectInfo> = listing
        .iter()
        .filter(|o| o.key.is_empty() || o.key.to_ascii_lowercase().ends_with(".csv"))
        .collect();
    if csvs.is_empty() {
        return Err(TrainError::NoData {
            uri: store.uri().to_string(),
        });
    }
    for object in csvs {
        let bytes = store.get(&object.key).await?;
        reader.read_object(&store.uri_of(&object.key), &bytes)?;
    }
    Ok(())
}

fn subset(table: &Table, rows: &[usize]) -> Table {
    let mut out = Table {
        feature_names: table.feature_names.clone(),
        ..Table::default()
    };
    for &i in rows {
        out.values.extend_from_slice(table.row(i));
        out.targets.push(table.targets[i].clone());
        out.labels.push(table.labels[i].clone());
    }
    out
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs one training run and writes model.json, then report.json, under `model_uri`.
pub async fn train(config: &TrainConfig) -> Result<TrainOutcome, TrainError> {
    let started = Instant::now();
    let version = model_version(&config.model_uri)?;
    if config.test_data_uri.is_none()
        && !(config.holdout_fraction > 0.0 && config.holdout_fraction < 1.0)
    {
        return Err(TrainError::Config(format!(
            "--holdout-fraction must be between 0 and 1 (exclusive), got {}",
            config.holdout_fraction
        )));
    }
    if config.metric == MetricName::F1Binary && config.read.positive_above.is_none() {
        return Err(TrainError::Config(
            "--metric f1Binary needs a binarised target (--positive-above)".into(),
        ));
    }
    // Parse the parameters before reading any data, so a typo fails fast.
    algorithms::check_params(config.algorithm, &config.params)?;
    let out_store = Store::from_uri(&config.model_uri)?;
    // A version directory is written once: refuse before any work when it is taken (the
    // create-only puts below also refuse a writer that raced us to it).
    for file in [MODEL_FILE_NAME, REPORT_FILE_NAME] {
        if out_store.exists(file).await? {
            return Err(TrainError::VersionExists {
                uri: out_store.uri().to_string(),
                file: file.to_string(),
            });
        }
    }

    // Read.
    let data_store = Store::from_uri(&config.data_uri)?;
    let listing = data_store.list().await?;
    let data_fingerprint = fingerprint(&listing);
    let mut reader = TableReader::new(config.read.clone())?;
    read_listing(&data_store, &listing, &mut reader).await?;
    let data = reader.finish();
    tracing::info!(uri = %data_store, rows = data.n_rows(), duplicates = data.dropped_duplicates, skipped = data.skipped, "read data");

    // Split.
    let mut dropped_duplicates = data.dropped_duplicates;
    let mut skipped = data.skipped;
    let (train_set, holdout) = match &config.test_data_uri {
        Some(uri) => {
            let store = Store::from_uri(uri)?;
            let reader = TableReader::new(config.read.clone())?
                .with_features(&data.feature_names, data_store.uri());
            let test = read_all(&store, reader).await?;
            skipped += test.skipped;
            let test_keys: HashSet<Vec<u8>> =
                (0..test.n_rows()).map(|i| test.content_key(i)).collect();
            let rows: Vec<usize> = (0..data.n_rows())
                .filter(|&i| !test_keys.contains(&data.content_key(i)))
                .collect();
            // Data rows equal to a test row never train; they count as duplicates.
            dropped_duplicates += (data.n_rows() - rows.len()) as u64;
            (subset(&data, &rows), test)
        }
        None => {
            let order = name_order(&data);
            let (mut train_rows, mut holdout_rows) = (Vec::new(), Vec::new());
            for i in 0..data.n_rows() {
                if in_holdout(&data, i, &order, config.seed, config.holdout_fraction) {
                    holdout_rows.push(i);
                } else {
                    train_rows.push(i);
                }
            }
            (subset(&data, &train_rows), subset(&data, &holdout_rows))
        }
    };
    if holdout.n_rows() == 0 {
        return Err(TrainError::Split(format!(
            "the holdout is empty ({} rows, holdout fraction {}); add data or raise --holdout-fraction",
            data.n_rows(),
            config.holdout_fraction
        )));
    }
    let mut model_labels: Vec<String> = train_set
        .labels
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sort_labels(&mut model_labels);
    if model_labels.len() < 2 {
        return Err(TrainError::Split(format!(
            "the training rows ({}) have only one class ({}); a classifier needs at least two (check --target and --positive-above)",
            train_set.n_rows(),
            model_labels.first().map(String::as_str).unwrap_or("none")
        )));
    }
    let load_seconds = started.elapsed().as_secs_f64();

    // Fit.
    let fit_started = Instant::now();
    let nf = train_set.n_features();
    let scaler = fit_scaler(&train_set.values, nf);
    let y: Array1<usize> = train_set
        .labels
        .iter()
        .map(|l| model_labels.iter().position(|m| m == l).unwrap_or(0))
        .collect();
    let training = TrainingSet {
        z: scale_rows(&scaler, &train_set.values, nf),
        y,
        n_classes: model_labels.len(),
    };
    let (model, params) =
        algorithms::fit(config.algorithm, &config.params, &training, config.seed)?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    tracing::info!(algorithm = %config.algorithm, rows = train_set.n_rows(), fit_seconds, "fitted");

    let positive_label = config
        .read
        .positive_above
        .map(|_| POSITIVE_LABEL.to_string());
    // Drift reference bins from the raw training rows: the predictor bins the values it
    // receives, before its scaler, through the same function.
    let drift_reference = DriftReference::from_rows(&train_set.feature_names, &train_set.values)
        .map_err(TrainError::Split)?;
    let mut model_file = ModelFile {
        format_version: MODEL_FORMAT_VERSION,
        model_version: version.clone(),
        created_at: now_rfc3339(),
        feature_names: train_set.feature_names.clone(),
        class_labels: model_labels.clone(),
        positive_label: positive_label.clone(),
        scaler,
        model,
        algorithm: config.algorithm.to_string(),
        params: params.clone(),
        training_fingerprint: data_fingerprint.clone(),
        drift_reference: Some(drift_reference),
        sha256: String::new(),
    };
    let model_bytes = model_file.to_json_bytes()?;
    // Score the model as it will be served: loaded back from its own bytes.
    let served = ModelFile::from_json_verified(&model_bytes)?;

    // Evaluate.
    let eval_started = Instant::now();
    let mut labels: Vec<String> = model_labels
        .iter()
        .chain(&holdout.labels)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sort_labels(&mut labels);
    let challenger_pred =
        predict_labels(&served, &holdout, &mut labels).map_err(TrainError::Evaluate)?;
    let champion = match &config.champion_uri {
        None => None,
        Some(uri) => {
            let champion = load_champion(uri).await?;
            let pred = predict_labels(&champion, &holdout, &mut labels).map_err(|reason| {
                TrainError::Champion {
                    uri: uri.clone(),
                    reason,
                }
            })?;
            Some((champion.model_version.clone(), pred))
        }
    };
    let truth: Vec<usize> = holdout
        .labels
        .iter()
        .map(|l| labels.iter().position(|x| x == l).unwrap_or(0))
        .collect();
    let positive = positive_label
        .as_ref()
        .and_then(|p| labels.iter().position(|l| l == p));
    let challenger_metrics = Metrics::compute(&truth, &challenger_pred, &labels, positive)
        .map_err(TrainError::Evaluate)?;
    let champion_metrics = match &champion {
        None => None,
        Some((_, pred)) => {
            Some(Metrics::compute(&truth, pred, &labels, positive).map_err(TrainError::Evaluate)?)
        }
    };
    let score = |m: &Metrics| {
        m.score(config.metric).ok_or_else(|| {
            TrainError::Evaluate(format!(
                "metric {} is not defined for this target",
                config.metric
            ))
        })
    };
    let challenger_score = score(&challenger_metrics)?;
    let champion_score = champion_metrics.as_ref().map(score).transpose()?;
    let evaluate_seconds = eval_started.elapsed().as_secs_f64();

    // Write: model first, report last (its presence means the run is complete); both
    // create-only.
    let model_sha256 = champion_model::sha256_hex(&model_bytes);
    create_only(&out_store, MODEL_FILE_NAME, model_bytes).await?;
    let mut report = Report {
        format_version: REPORT_FORMAT_VERSION,
        model_version: version,
        metric: config.metric,
        challenger_score,
        champion_score,
        champion_version: champion.map(|(v, _)| v),
        challenger_metrics,
        champion_metrics,
        rows: RowCounts {
            train: train_set.n_rows() as u64,
            holdout: holdout.n_rows() as u64,
            dropped_duplicates,
            skipped,
        },
        class_labels: labels,
        positive_label,
        data_fingerprint,
        model_sha256,
        algorithm: config.algorithm.to_string(),
        params,
        durations: Durations {
            load_seconds,
            fit_seconds,
            evaluate_seconds,
            total_seconds: 0.0,
        },
        created_at: now_rfc3339(),
    };
    report.durations.total_seconds = started.elapsed().as_secs_f64();
    create_only(&out_store, REPORT_FILE_NAME, report.to_json_bytes()?).await?;
    tracing::info!(uri = %out_store, metric = %config.metric, challenger_score, ?champion_score, "wrote model and report");
    Ok(TrainOutcome {
        model: served,
        report,
    })
}

/// Writes `file` into the version directory, failing clearly when it already exists.
async fn create_only(store: &Store, file: &str, bytes: Vec<u8>) -> Result<(), TrainError> {
    store
        .put_new(file, Bytes::from(bytes))
        .await
        .map_err(|e| match e {
            champion_store::StoreError::AlreadyExists { .. } => TrainError::VersionExists {
                uri: store.uri().to_string(),
                file: file.to_string(),
            },
            e => TrainError::Store(e),
        })
}

async fn load_champion(uri: &str) -> Result<ModelFile, TrainError> {
    let err = |reason: String| TrainError::Champion {
        uri: uri.to_string(),
        reason,
    };
    let store = Store::from_uri(uri).map_err(|e| err(e.to_string()))?;
    let bytes = store
        .get(MODEL_FILE_NAME)
        .await
        .map_err(|e| err(e.to_string()))?;
    ModelFile::from_json_verified(&bytes).map_err(|e| err(e.to_string()))
}
