//! The `trainer-job` binary as the operator runs it: flags or environment, exit code,
//! stderr and the termination log.

mod common;

use std::path::Path;
use std::process::Command;

use champion_model::{ModelFile, Report};
use common::{data_dir, file_uri, wine_dir};

fn trainer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer-job"));
    // Only what a test sets: no configuration leaks in from the developer's shell.
    for var in [
        "DATA_URI",
        "MODEL_URI",
        "CHAMPION_URI",
        "TEST_DATA_URI",
        "TARGET",
        "POSITIVE_ABOVE",
        "DROP",
        "METRIC",
        "HOLDOUT_FRACTION",
        "SEED",
        "ALGORITHM",
        "PARAMS",
        "SKIP_BAD_ROWS",
        "TERMINATION_LOG",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs `cmd` and insists it exits 0, showing its stderr otherwise.
fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checked report.json a finished run left in `version_dir`.
fn report_in(version_dir: &Path) -> Report {
    Report::from_json(&std::fs::read(version_dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn configured_from_the_environment_it_writes_both_files_and_a_summary() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv", "data_2.csv"]);
    let version_dir = root.path().join("models/wine/v7");
    let log = root.path().join("termination-log");
    run_ok(
        trainer()
            .arg("train")
            .env("DATA_URI", &data)
            .env("MODEL_URI", file_uri(&version_dir))
            .env("TEST_DATA_URI", file_uri(&wine_dir().join("test_data.csv")))
            .env("TARGET", "Quality")
            .env("POSITIVE_ABOVE", "5")
            .env("DROP", "Id")
            .env("METRIC", "f1Binary")
            .env("PARAMS", "n_estimators=50,learning_rate=1")
            .env("SKIP_BAD_ROWS", "1")
            .env("TERMINATION_LOG", &log),
    );
    let report = report_in(&version_dir);
    ModelFile::from_json_verified(&std::fs::read(version_dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(report.model_version, "v7");
    assert_eq!(
        report.params.get("n_estimators").map(String::as_str),
        Some("50")
    );
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert_eq!(summary["version"], "v7");
    assert_eq!(summary["metric"], "f1Binary");
    assert_eq!(summary["challengerScore"], report.challenger_score);
    assert!(summary["championScore"].is_null());
}

#[test]
fn bad_data_fails_with_one_line_naming_the_object_and_line_on_stderr_and_in_the_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("slot.csv"), "a,b,quality\n1,2,5\n3,oops,6\n").unwrap();
    let log = root.path().join("termination-log");
    let out = trainer()
        .args(["train", "--target", "quality", "--data-uri"])
        .arg(format!("{}/", file_uri(&dir)))
        .arg("--model-uri")
        .arg(file_uri(&root.path().join("models/p/v1")))
        .arg("--termination-log")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "{}/slot.csv line 3: column \"b\" is \"oops\", expected a number",
        file_uri(&dir)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), expected);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().last(), Some(expected.as_str()), "{stderr}");
    assert!(!root.path().join("models/p/v1/model.json").exists());
}

#[test]
fn log_lines_are_flat_json_when_not_on_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), "data", &["data_1.csv"]);
    let out = trainer()
        .env("RUST_LOG", "info")
        .args([
            "train",
            "--target",
            "quality",
            "--positive-above",
            "5",
            "--drop",
            "Id",
        ])
        .arg("--data-uri")
        .arg(&data)
        .arg("--model-uri")
        .arg(file_uri(&root.path().join("models/p/v1")))
        .arg("--termination-log")
        .arg(root.path().join("termination-log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} is not JSON")))
        .collect();
    let fitted = lines
        .iter()
        .find(|l| l["message"] == "fitted")
        .unwrap_or_else(|| panic!("a `fitted` line in {stderr}"));
    assert_eq!(fitted["level"], "INFO", "{fitted}");
    assert!(fitted["timestamp"].is_string(), "{fitted}");
    assert!(
        fitted["rows"].is_u64(),
        "event fields at the top level: {fitted}"
    );
    assert!(fitted.get("fields").is_none(), "{fitted}");

    // LOG_FORMAT=text asks for text even when piped.
    let out = trainer()
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "text")
        .args([
            "train",
            "--target",
            "quality",
            "--positive-above",
            "5",
            "--drop",
            "Id",
        ])
        .arg("--data-uri")
        .arg(&data)
        .arg("--model-uri")
        .arg(file_uri(&root.path().join("models/p/v2")))
        .arg("--termination-log")
        .arg(root.path().join("termination-log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.trim_start().starts_with('{'), "{stderr}");
}

#[test]
fn a_missing_flag_is_reported_in_the_termination_log() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("termination-log");
    let out = trainer()
        .args(["train", "--data-uri", "file:///tmp/x/"])
        .env("TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        message,
        "error: the following required arguments were not provided: --model-uri <MODEL_URI> --target <TARGET>"
    );
}

#[test]
fn the_wine_dataset_command_writes_slots_that_train() {
    let root = tempfile::tempdir().unwrap();
    let slots = root.path().join("wine");
    run_ok(
        trainer()
            .args(["dataset", "wine", "--slots", "3", "--out"])
            .arg(&slots),
    );
    let mut names: Vec<String> = std::fs::read_dir(&slots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["data_1.csv", "data_2.csv", "data_3.csv", "test_data.csv"]
    );
    let lines = |name: &str| {
        std::fs::read_to_string(slots.join(name))
            .unwrap()
            .lines()
            .count()
            - 1
    };
    // linfa-datasets' red wine set has 1,599 rows: the last third is test data, the first
    // two thirds are cut into the three slots in order.
    assert_eq!(lines("test_data.csv"), 533);
    assert_eq!(
        [
            lines("data_1.csv"),
            lines("data_2.csv"),
            lines("data_3.csv")
        ],
        [356, 356, 354]
    );
    let header = std::fs::read_to_string(slots.join("data_1.csv")).unwrap();
    assert!(
        header.starts_with(
            "fixed_acidity,volatile_acidity,citric_acid,residual_sugar,chlorides,\
             free_sulfur_dioxide,total_sulfur_dioxide,density,pH,sulphates,alcohol,quality,Id\n"
        ),
        "{header}"
    );

    // The slots (the test file moved aside) are a data set the trainer accepts.
    let test = root.path().join("test_data.csv");
    std::fs::rename(slots.join("test_data.csv"), &test).unwrap();
    run_ok(
        trainer()
            .args([
                "train",
                "--target",
                "quality",
                "--positive-above",
                "5",
                "--drop",
                "Id",
                "--data-uri",
            ])
            .arg(format!("{}/", file_uri(&slots)))
            .arg("--test-data-uri")
            .arg(file_uri(&test))
            .arg("--model-uri")
            .arg(file_uri(&root.path().join("models/wine/v1")))
            .arg("--termination-log")
            .arg(root.path().join("log")),
    );
    let report = report_in(&root.path().join("models/wine/v1"));
    assert_eq!(report.rows.holdout, 533);
    assert!(report.challenger_score > 0.6, "{}", report.challenger_score);
}

/// The operator writes the trainer's command line from `champion_model::trainer_cli`; every
/// flag named there must be one this binary accepts.
#[test]
fn every_contract_flag_is_accepted() {
    use champion_model::trainer_cli::{self, flag, long};
    let out = trainer()
        .args([trainer_cli::TRAIN, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        flag::DATA_URI,
        flag::MODEL_URI,
        flag::CHAMPION_URI,
        flag::TEST_DATA_URI,
        flag::TARGET,
        flag::POSITIVE_ABOVE,
        flag::DROP,
        flag::METRIC,
        flag::HOLDOUT_FRACTION,
        flag::SEED,
        flag::ALGORITHM,
        flag::PARAM,
        flag::TERMINATION_LOG,
    ] {
        let needle = format!("{} <", long(name));
        assert!(help.contains(&needle), "{needle:?} missing from:\n{help}");
    }
}
