//! `promtool check metrics` on a /metrics body, shared by the integration tests (as
//! `common::promtool`) and the unit tests of `src/metrics.rs` (which include this file by path,
//! being unable to reach `tests/common`). Only std: it compiles in both places.

use std::io::Write;

/// Runs `promtool check metrics` on `exposition` and fails the test with promtool's complaint.
/// Skipped loudly when promtool is not on PATH, unless CHAMPION_REQUIRE_PROMTOOL=1 (as
/// `make test` sets) makes that a failure.
pub fn check(exposition: &str) {
    let promtool = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    let Some(promtool) = promtool else {
        assert!(
            std::env::var("CHAMPION_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "promtool is not installed and CHAMPION_REQUIRE_PROMTOOL=1 requires it (make test-deps)"
        );
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: promtool is not installed (apt-get install prometheus, or make test-deps); set CHAMPION_REQUIRE_PROMTOOL=1 to make this a failure !!!!!!!!\n\n"
        );
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .unwrap_or_else(|e| panic!("writing to promtool: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\non\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
