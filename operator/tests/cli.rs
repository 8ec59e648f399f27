//! The operator binary refuses a bad setting before it starts anything, and says what it
//! expected. (Also why `cargo test` builds `target/debug/operator`: `make test`'s image of the
//! operator is that binary, from the same build as every test.)

use std::process::{Command, Output};

/// Runs the operator with only `env` (and PATH) in its environment: no kubeconfig, no cluster.
fn operator(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_operator"));
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("the operator binary runs")
}

fn refused_with(out: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad setting is a usage error (exit 2); stderr: {stderr}"
    );
    for words in expected {
        assert!(
            stderr.contains(words),
            "the error names {words:?}; stderr: {stderr}"
        );
    }
}

#[test]
fn a_drift_read_interval_out_of_range_is_refused_with_the_range() {
    let out = operator(&[("DRIFT_READ_INTERVAL_SECONDS", "0")]);
    refused_with(
        &out,
        &["--drift-read-interval-seconds", "0 is not in 1..=3600"],
    );
}

#[test]
fn a_metrics_port_that_is_not_a_port_is_refused() {
    let out = operator(&[("METRICS_PORT", "80800")]);
    refused_with(&out, &["--metrics-port", "80800"]);
}
