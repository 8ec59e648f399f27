//! The probe's file and failure subcommands, as the cluster tests use them inside pods. (Also
//! why `cargo test` builds `target/debug/champion-probe`: `make test`'s probe image is that
//! binary, from the same build as every test.)

use std::process::Command;

fn probe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_champion-probe"))
}

#[test]
fn fail_writes_its_message_to_the_termination_log_and_exits_with_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("termination-log");
    let status = probe()
        .args(["fail", "--message", "model.json is not JSON", "--code", "7"])
        .arg("--termination-log")
        .arg(&log)
        .status()
        .expect("the probe runs");
    assert_eq!(status.code(), Some(7));
    assert_eq!(
        std::fs::read_to_string(&log).expect("the termination log was written"),
        "model.json is not JSON"
    );
}

#[test]
fn write_file_then_cat_round_trips_the_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("note.txt");
    let path = path.to_str().expect("a UTF-8 temp path");
    let written = probe()
        .args(["write-file", path, "written in the pod"])
        .status()
        .expect("the probe runs");
    assert!(written.success());
    let out = probe()
        .args(["cat", path])
        .output()
        .expect("the probe runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "written in the pod"
    );
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let out = probe().arg("dance").output().expect("the probe runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'dance'"));
}
