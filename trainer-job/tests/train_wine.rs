//! Whole training runs on the original wine-seed data, through file:// URIs.

mod common;

use std::collections::BTreeMap;

use champion_model::{MetricName, Metrics, ModelFile, Report};
use common::{data_dir, file_uri, wine_config, wine_read_options, wine_seed};
use trainer_job::data::sort_labels;
use trainer_job::split::{in_holdout, name_order};
use trainer_job::{Algorithm, TableReader, train};

#[tokio::test]
async fn default_adaboost_on_the_original_split_reaches_scikit_learns_f1() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let models = root.path().join("models/wine/v1");
    let outcome = train(&wine_config(data, format!("{}/", file_uri(&models))))
        .await
        .unwrap();
    let report = &outcome.report;
    assert_eq!(report.rows.train, 762);
    assert_eq!(report.rows.holdout, 381);
    assert_eq!(report.rows.dropped_duplicates, 0);
    assert_eq!(report.model_version, "v1");
    assert_eq!(report.metric, MetricName::F1Binary);
    let f1 = report.challenger_metrics.f1_binary.unwrap();
    assert_eq!(report.challenger_score, f1);
    // scikit-learn's AdaBoostClassifier scores 0.784 (1.0.2) to 0.797 (1.9.1) here.
    assert!(f1 >= 0.78, "binary F1 {f1}");
    // The same stumps and weights as scikit-learn 1.9.1 give the same predictions: reference
    // values from trainer-job/bench/sklearn_wine.py (f1_binary, f1_macro).
    assert!((f1 - 0.7974683544303798).abs() < 1e-9, "binary F1 {f1}");
    assert!((report.challenger_metrics.f1_macro - 0.7320675105485233).abs() < 1e-9);
    assert_eq!(
        report
            .challenger_metrics
            .confusion_matrix
            .iter()
            .flatten()
            .sum::<u64>(),
        381
    );

    // Both files are there, and what is on disk is what the run reported.
    let on_disk = Report::from_json(&std::fs::read(models.join("report.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, report);
    let loaded =
        ModelFile::from_json_verified(&std::fs::read(models.join("model.json")).unwrap()).unwrap();
    assert_eq!(loaded, outcome.model);
    assert_eq!(loaded.feature_names.len(), 11);
    assert_eq!(loaded.feature_names[0], "fixed_acidity");
    assert_eq!(loaded.positive_label.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_saved_model_predicts_exactly_as_the_trained_one() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let test = {
        let mut r = TableReader::new(wine_read_options()).unwrap();
        r.read_object(
            "test_data.csv",
            &std::fs::read(wine_seed().join("test_data.csv")).unwrap(),
        )
        .unwrap();
        r.finish()
    };
    for algorithm in [
        Algorithm::AdaBoost,
        Algorithm::Logistic,
        Algorithm::RandomForest,
        Algorithm::GaussianNb,
    ] {
        let models = root.path().join(format!("models/wine/{algorithm}"));
        let mut c = wine_config(data.clone(), file_uri(&models));
        c.algorithm = algorithm;
        c.metric = MetricName::F1Macro;
        let outcome = train(&c).await.unwrap();
        let loaded =
            ModelFile::from_json_verified(&std::fs::read(models.join("model.json")).unwrap())
                .unwrap();
        let mut truth = Vec::new();
        let mut predicted = Vec::new();
        for i in 0..test.n_rows() {
            let a = outcome.model.predict_proba(test.row(i)).unwrap();
            let b = loaded.predict_proba(test.row(i)).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{algorithm} row {i}");
            predicted.push(loaded.predict(test.row(i)).unwrap());
            truth.push(
                loaded
                    .class_labels
                    .iter()
                    .position(|l| *l == test.labels[i])
                    .unwrap(),
            );
        }
        // The report's score is the loaded model's score.
        let m = Metrics::compute(
            &truth,
            &predicted,
            &loaded.class_labels,
            loaded.positive_index(),
        )
        .unwrap();
        assert_eq!(m.f1_macro, outcome.report.challenger_score, "{algorithm}");
        assert!(m.f1_macro > 0.65, "{algorithm} macro F1 {}", m.f1_macro);
    }
}

#[tokio::test]
async fn the_champion_is_scored_on_the_same_holdout() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let v1 = file_uri(&root.path().join("models/wine/v1"));
    let mut c1 = wine_config(data.clone(), v1.clone());
    c1.algorithm = Algorithm::Logistic;
    let first = train(&c1).await.unwrap().report;
    assert_eq!(first.champion_score, None);

    let mut c2 = wine_config(data, file_uri(&root.path().join("models/wine/v2")));
    c2.champion_uri = Some(v1);
    let second = train(&c2).await.unwrap().report;
    assert_eq!(second.champion_version.as_deref(), Some("v1"));
    // Same fixed holdout: the champion scores what it scored when it was trained.
    assert_eq!(second.champion_score, Some(first.challenger_score));
    assert_eq!(
        second.champion_metrics.as_ref(),
        Some(&first.challenger_metrics)
    );
    assert_ne!(second.challenger_score, first.challenger_score);
}

#[tokio::test]
async fn a_missing_champion_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv"]);
    let mut c = wine_config(data, file_uri(&root.path().join("models/wine/v2")));
    let champion = file_uri(&root.path().join("models/wine/v1"));
    c.champion_uri = Some(champion.clone());
    let err = train(&c).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("champion model {champion}: {champion}/model.json does not exist")
    );
    assert!(!root.path().join("models/wine/v2/report.json").exists());
}

#[tokio::test]
async fn without_test_data_the_holdout_is_by_content_and_new_data_moves_no_old_row() {
    let root = tempfile::tempdir().unwrap();
    let options = wine_read_options();
    let read = |files: &[&str]| {
        let mut r = TableReader::new(options.clone()).unwrap();
        for f in files {
            r.read_object(f, &std::fs::read(wine_seed().join(f)).unwrap())
                .unwrap();
        }
        r.finish()
    };
    let small = read(&["data_1.csv"]);
    // The grown set reads the new slot first, so every old row sits at another index.
    let grown = read(&["data_2.csv", "data_1.csv"]);
    let side = |t: &trainer_job::Table| {
        let order = name_order(t);
        (0..t.n_rows())
            .map(|i| (t.content_key(i), in_holdout(t, i, &order, 42, 0.2)))
            .collect::<BTreeMap<_, _>>()
    };
    let (before, after) = (side(&small), side(&grown));
    // 762 records, 682 distinct contents (wines measured alike under different Ids).
    assert_eq!(after.len(), 682);
    for (row, holdout) in &before {
        assert_eq!(after.get(row), Some(holdout));
    }
    let order = name_order(&grown);
    let holdout = (0..grown.n_rows())
        .filter(|&i| in_holdout(&grown, i, &order, 42, 0.2))
        .count();
    assert!(
        (120..=185).contains(&holdout),
        "holdout of 762 rows at 0.2: {holdout}"
    );

    // And a whole run on content split works and reports it.
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let mut c = wine_config(data, file_uri(&root.path().join("models/wine/v1")));
    c.test_data_uri = None;
    let report = train(&c).await.unwrap().report;
    assert_eq!(report.rows.holdout as usize, holdout);
    assert_eq!(report.rows.train as usize, 762 - holdout);
}

#[tokio::test]
async fn a_multiclass_target_uses_its_values_as_labels_and_boosts_like_scikit_learn() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let mut c = wine_config(data, file_uri(&root.path().join("models/wine/v1")));
    c.read.positive_above = None;
    c.metric = MetricName::F1Weighted;
    c.params.insert("max_depth".into(), "3".into());
    let outcome = train(&c).await.unwrap();
    let mut expected: Vec<String> = ["3", "4", "5", "6", "7", "8"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sort_labels(&mut expected);
    assert_eq!(outcome.report.class_labels, expected);
    assert_eq!(outcome.report.challenger_metrics.f1_binary, None);
    assert_eq!(
        outcome.report.challenger_score,
        outcome.report.challenger_metrics.f1_weighted
    );
    // Reference: trainer-job/bench/sklearn_wine.py, f1_weighted_quality_depth3 (scikit-learn
    // 1.9.1, AdaBoostClassifier(DecisionTreeClassifier(max_depth=3)) on the same split).
    let score = outcome.report.challenger_score;
    assert!(
        (score - 0.48626691523257254).abs() < 1e-9,
        "weighted F1 {score}"
    );
    assert_eq!(
        outcome.model.params.get("max_depth").map(String::as_str),
        Some("3")
    );
}
