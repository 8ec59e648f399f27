//! Every kind of bad input, with the exact message a user sees.

mod common;

use std::collections::BTreeMap;

use champion_model::MetricName;
use common::wine_read_options as options;
use trainer_job::{Algorithm, ReadOptions, TableReader, TrainConfig, TrainError, train};

fn read(csv: &str) -> Result<trainer_job::Table, TrainError> {
    read_with(options(), csv)
}

fn read_with(options: ReadOptions, csv: &str) -> Result<trainer_job::Table, TrainError> {
    let mut reader = TableReader::new(options)?;
    reader.read_object("file:///data/slot.csv", csv.as_bytes())?;
    Ok(reader.finish())
}

fn message(result: Result<trainer_job::Table, TrainError>) -> String {
    match result {
        Ok(t) => panic!("expected an error, read {} rows", t.n_rows()),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = "fixed acidity,Alcohol,quality,Id\n7.4,9.4,5,0\n7.8,9.8,6,1\n";

#[test]
fn a_good_object_reads_with_normalised_names_and_binarised_labels() {
    let t = read(GOOD).unwrap();
    assert_eq!(t.feature_names, vec!["fixed_acidity", "alcohol"]);
    assert_eq!(t.labels, vec!["0", "1"]);
    assert_eq!(t.row(1), &[7.8, 9.8]);
}

#[test]
fn ragged_row() {
    let msg = message(read("a,b,quality,Id\n1,2,5,0\n1,2,5\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 3: has 3 fields, the header has 4"
    );
}

#[test]
fn string_in_a_numeric_column() {
    let msg = message(read("a,b,quality,Id\n1,2,5,0\n1,abc,5,1\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 3: column \"b\" is \"abc\", expected a number"
    );
}

#[test]
fn missing_value() {
    let msg = message(read("a,b,quality,Id\n1,,5,0\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 2: column \"b\" is empty (missing value)"
    );
}

#[test]
fn nan_and_infinity() {
    let msg = message(read("a,b,quality,Id\n1,NaN,5,0\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 2: column \"b\" is \"NaN\", expected a finite number"
    );
    let msg = message(read("a,b,quality,Id\n1,2,5,0\n-inf,2,5,1\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 3: column \"a\" is \"-inf\", expected a finite number"
    );
}

#[test]
fn non_numeric_target_with_a_threshold() {
    let msg = message(read("a,b,quality,Id\n1,2,good,0\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 2: target column \"quality\" is \"good\", expected a number"
    );
}

#[test]
fn missing_target_column() {
    let msg = message(read("a,b,grade,Id\n1,2,5,0\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv: no target column \"quality\"; the header has a, b, grade, id"
    );
}

#[test]
fn unknown_drop_column() {
    let mut o = options();
    o.drop = vec!["row number".into()];
    let msg = message(read_with(o, GOOD));
    assert_eq!(
        msg,
        "file:///data/slot.csv: column \"row_number\" to drop is not in the header (fixed_acidity, alcohol, quality, id)"
    );
}

#[test]
fn empty_object() {
    let msg = message(read(""));
    assert_eq!(
        msg,
        "file:///data/slot.csv: the object is empty (expected a header row and data rows)"
    );
}

#[test]
fn header_only() {
    let msg = message(read("a,b,quality,Id\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv: has a header row but no data rows"
    );
}

#[test]
fn utf8_bom_and_crlf_line_ends_are_read_like_plain_files() {
    let plain = read(GOOD).unwrap();
    let bom_crlf = format!("\u{feff}{}", GOOD.replace('\n', "\r\n"));
    let t = read(&bom_crlf).unwrap();
    assert_eq!(t.feature_names, plain.feature_names);
    assert_eq!(t.values, plain.values);
    assert_eq!(t.labels, plain.labels);
    // A bad row still reports its line with CRLF line ends.
    let msg = message(read("a,b,quality,Id\r\n1,2,5,0\r\n1,x,5,1\r\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv line 3: column \"b\" is \"x\", expected a number"
    );
}

#[test]
fn duplicate_columns_after_normalising() {
    let msg = message(read("Fixed Acidity,fixed_acidity,quality,Id\n1,2,5,0\n"));
    assert_eq!(
        msg,
        "file:///data/slot.csv: column \"fixed_acidity\" appears twice in the header (after normalising case, spaces and underscores)"
    );
}

#[test]
fn bad_rows_are_skipped_and_counted_when_asked() {
    let mut o = options();
    o.skip_bad_rows = true;
    let t = read_with(o, "a,b,quality,Id\n1,2,5,0\n1,x,5,1\n1,2\n3,4,7,3\n").unwrap();
    assert_eq!(t.n_rows(), 2);
    assert_eq!(t.skipped, 2);
}

#[test]
fn exact_duplicates_are_dropped_across_objects_but_equal_measurements_with_another_id_are_kept() {
    let mut reader = TableReader::new(options()).unwrap();
    reader
        .read_object("file:///a.csv", b"a,b,quality,Id\n1,2,5,0\n3,4,6,1\n")
        .unwrap();
    // Same record again (columns reordered, spelled differently), and a new Id with equal values.
    reader
        .read_object("file:///b.csv", b"ID,QUALITY,B,A\n0,5,2,1\n9,6,4,3\n")
        .unwrap();
    let t = reader.finish();
    assert_eq!(t.n_rows(), 3);
    assert_eq!(t.dropped_duplicates, 1);
}

#[test]
fn objects_with_different_columns_are_refused() {
    let mut reader = TableReader::new(options()).unwrap();
    reader
        .read_object("file:///a.csv", b"a,b,quality,Id\n1,2,5,0\n")
        .unwrap();
    let err = reader
        .read_object("file:///b.csv", b"a,c,quality,Id\n1,2,5,0\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "file:///b.csv: has no column \"b\", which file:///a.csv has"
    );
}

fn config(data_uri: String, model_uri: String) -> TrainConfig {
    TrainConfig {
        data_uri,
        model_uri,
        champion_uri: None,
        test_data_uri: None,
        read: options(),
        metric: MetricName::F1Macro,
        holdout_fraction: 0.3,
        seed: 42,
        algorithm: Algorithm::AdaBoost,
        params: BTreeMap::new(),
    }
}

#[tokio::test]
async fn a_data_uri_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("file://{}/nope/", dir.path().display());
    let models = format!("file://{}/models/p/v1/", dir.path().display());
    let err = train(&config(data.clone(), models)).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{data} does not exist"));
}

#[tokio::test]
async fn a_data_uri_without_csv_objects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/readme.txt"), "hi").unwrap();
    let data = format!("file://{}/data/", dir.path().display());
    let models = format!("file://{}/models/p/v1/", dir.path().display());
    let err = train(&config(data.clone(), models)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no CSV objects under {data} (expected files ending in .csv with a header row)")
    );
}

#[tokio::test]
async fn one_class_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let mut csv = String::from("a,b,quality,Id\n");
    for i in 0..40 {
        csv.push_str(&format!("{i},{},7,{i}\n", i * 2));
    }
    std::fs::write(dir.path().join("data/slot.csv"), csv).unwrap();
    let data = format!("file://{}/data/", dir.path().display());
    let models = format!("file://{}/models/p/v1/", dir.path().display());
    let err = train(&config(data, models.clone())).await.unwrap_err();
    assert!(
        err.to_string().starts_with("the training rows (")
            && err
                .to_string()
                .contains("have only one class (1); a classifier needs at least two"),
        "{err}"
    );
    assert!(!dir.path().join("models/p/v1/report.json").exists());
}

#[tokio::test]
async fn unknown_parameters_fail_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(
        format!("file://{}/nope/", dir.path().display()),
        format!("file://{}/models/p/v1/", dir.path().display()),
    );
    c.params.insert("n_trees".into(), "5".into());
    let err = train(&c).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: unknown parameter \"n_trees\" for adaboost; known: n_estimators, learning_rate, max_depth, tree"
    );
}
