//! The user kit runs against a locally started predictor: the Locust file and the wrk recipe
//! from the README. Each run is bounded (a few seconds, fixed users/connections) and every
//! process is killed on failure.
//!
//! A load generator that is not installed skips the test with a loud message, unless
//! CHAMPION_REQUIRE_LOCUST=1 / CHAMPION_REQUIRE_WRK=1 (as `make test` sets) makes that a failure.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{MODEL_VERSION, ModelDir, Predictor, series};

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// The first command of `candidates` that runs `--version` successfully.
fn find_tool(candidates: &[&[&str]]) -> Option<Vec<String>> {
    candidates.iter().find_map(|argv| {
        let ok = Command::new(argv[0])
            .args(&argv[1..])
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| argv.iter().map(|s| s.to_string()).collect())
    })
}

fn skip_or_fail(tool: &str, var: &str, install: &str) {
    assert!(
        !required(var),
        "{tool} is not installed and {var}=1 requires it; install with: {install}"
    );
    eprintln!(
        "\n\n!!!!!!!! SKIPPED: {tool} is not installed ({install}); set {var}=1 to make this a failure !!!!!!!!\n\n"
    );
}

/// Runs `cmd` to completion within `deadline`, killing it otherwise; returns (success, stdout, stderr).
fn run_bounded(mut cmd: Command, deadline: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read = |s: Option<std::process::ChildStdout>| {
        std::thread::spawn(move || {
            let mut buf = String::new();
            if let Some(mut s) = s {
                let _ = std::io::Read::read_to_string(&mut s, &mut buf);
            }
            buf
        })
    };
    let out = read(out);
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(mut s) = err {
            let _ = std::io::Read::read_to_string(&mut s, &mut buf);
        }
        buf
    });
    let status = common::wait_exit(&mut child, deadline, &format!("{cmd:?}"));
    (
        status.success(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

fn start() -> (ModelDir, Predictor) {
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let p = Predictor::start(&dir.uri(), &[("MODEL_NAME", "wine")]);
    (dir, p)
}

/// Locust's per-name (request count, failure count) from its `--csv` stats.
struct LocustStats {
    text: String,
    counts: std::collections::HashMap<String, (u64, u64)>,
}

impl LocustStats {
    fn count_of(&self, name: &str) -> (u64, u64) {
        *self
            .counts
            .get(name)
            .unwrap_or_else(|| panic!("no {name} row in\n{}", self.text))
    }
}

/// Runs the Locust file for 3 s with 4 users against `p` with `env`; `None` when Locust is not
/// installed (skipped loudly, or a failure under CHAMPION_REQUIRE_LOCUST=1).
fn run_locust(p: &Predictor, env: &[(&str, &std::ffi::OsStr)]) -> Option<LocustStats> {
    let Some(locust) = find_tool(&[&["locust"], &["python3", "-m", "locust"]]) else {
        skip_or_fail("locust", "CHAMPION_REQUIRE_LOCUST", "pip install locust");
        return None;
    };
    let tmp = tempfile::tempdir().unwrap();
    let csv_prefix = tmp.path().join("stats");
    let manifest = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let mut cmd = Command::new(&locust[0]);
    cmd.args(&locust[1..])
        .arg("-f")
        .arg(manifest.join("loadtest/locustfile.py"))
        .args([
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "5s",
            "--stop-timeout",
            "2",
        ])
        .args(["--only-summary", "--exit-code-on-error", "1"])
        .arg("--host")
        .arg(format!("http://{}", p.addr))
        .arg("--csv")
        .arg(&csv_prefix)
        .env("MODEL_NAME", "wine")
        .env("PREDICT_CSV", common::wine_data_dir().join("test_data.csv"))
        .current_dir(tmp.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (ok, out, err) = run_bounded(cmd, Duration::from_secs(90));
    assert!(ok, "locust failed:\n{out}\n{err}");
    let text = std::fs::read_to_string(tmp.path().join("stats_stats.csv"))
        .unwrap_or_else(|e| panic!("locust wrote no stats ({e}):\n{out}\n{err}"));
    let mut rows = csv_rows(&text);
    let header = rows.remove(0);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (name_c, count_c, fail_c) = (col("Name"), col("Request Count"), col("Failure Count"));
    let counts = rows
        .iter()
        .map(|r| {
            (
                r[name_c].clone(),
                (r[count_c].parse().unwrap(), r[fail_c].parse().unwrap()),
            )
        })
        .collect();
    Some(LocustStats { text, counts })
}

#[test]
fn locust_file_runs_clean_against_a_local_predictor() {
    let (_dir, p) = start();
    let Some(stats) = run_locust(&p, &[]) else {
        return;
    };
    let stats_text = &stats.text;
    let count_of = |name: &str| stats.count_of(name);
    let (total, failures) = count_of("Aggregated");
    assert!(total > 20, "only {total} requests in 5 s:\n{stats_text}");
    assert_eq!(failures, 0, "{stats_text}");
    for route in [
        "/predict",
        "/v1/models/[name]:predict",
        "/v2/models/[name]/infer",
    ] {
        assert!(count_of(route).0 > 0, "{route} never ran:\n{stats_text}");
    }
    // The traffic reached this predictor.
    let metrics = p.get("/metrics").text();
    assert!(metrics.contains(r#"predictor_requests_total{code="200",route="predict"}"#));
}

#[test]
fn locust_feedback_mode_replays_the_wine_test_set_with_its_labels() {
    // A model whose classes are the trainer's binarised labels ("0", "1" above quality 6).
    let mut model = common::model::wine_model(MODEL_VERSION, 50);
    model.class_labels = vec!["0".into(), "1".into()];
    model.positive_label = Some("1".into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wine").join(MODEL_VERSION);
    common::model::write_model_dir_with(&dir, MODEL_VERSION, None, model);
    let p = Predictor::start(&format!("file://{}/", dir.display()), &[]);
    let mode = std::ffi::OsStr::new("feedback");
    let above = std::ffi::OsStr::new("6");
    let Some(stats) = run_locust(&p, &[("LOAD_MODE", mode), ("POSITIVE_ABOVE", above)]) else {
        return;
    };
    let (_, failures) = stats.count_of("Aggregated");
    assert_eq!(failures, 0, "{}", stats.text);
    // Locust's CSV can miss the last second of requests; the predictor's own counters are
    // exact, Locust's are a lower bound.
    let (seen_feedbacks, _) = stats.count_of("/feedback");
    let text = p.get("/metrics").text();
    let count = |name: &str| series(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    let predictions = count(r#"predictor_requests_total{code="200",route="predict"}"#);
    let feedbacks = count(r#"predictor_requests_total{code="200",route="feedback"}"#);
    assert!(
        feedbacks >= seen_feedbacks as f64 && feedbacks > 10.0,
        "{feedbacks} feedbacks"
    );
    // One feedback per prediction (a user stopped at the end of the run between its two
    // requests may leave its last prediction without one), and nothing but the two routes.
    assert!(
        feedbacks <= predictions && predictions - feedbacks <= 4.0,
        "{predictions} predictions, {feedbacks} feedbacks"
    );
    assert!(!text.contains(r#"code="4"#), "no refused request:\n{text}");
    // Every feedback reached the pod that answered and matched its prediction.
    assert_eq!(
        count(r#"predictor_feedback_total{result="matched"}"#),
        feedbacks
    );
    for result in ["unknown_id", "invalid", "duplicate"] {
        let name = format!("predictor_feedback_total{{result=\"{result}\"}}");
        assert_eq!(series(&text, &name), Some(0.0), "{name}");
    }
    let labelled: f64 = ["0", "1"]
        .iter()
        .flat_map(|a| ["0", "1"].map(|q| (a.to_string(), q)))
        .map(|(a, q)| {
            let name =
                format!("predictor_feedback_confusion_total{{actual=\"{a}\",predicted=\"{q}\"}}");
            series(&text, &name).unwrap_or_else(|| panic!("{name} in\n{text}"))
        })
        .sum();
    assert!(labelled >= feedbacks, "{labelled} labelled rows");
    let f1 = series(&text, "predictor_online_f1_macro").expect("online F1");
    assert!(f1 > 0.0 && f1 <= 1.0, "{f1}");
}

#[test]
fn locust_shifted_mode_raises_the_drift_figures() {
    let (_dir, p) = start();
    let mode = std::ffi::OsStr::new("shifted");
    let Some(stats) = run_locust(&p, &[("LOAD_MODE", mode)]) else {
        return;
    };
    let (seen, failures) = stats.count_of("/predict (shifted)");
    assert_eq!(failures, 0, "{}", stats.text);
    let text = p.get("/metrics").text();
    // Locust's CSV can miss the last second of requests; the predictor's counters are exact.
    let answered = series(
        &text,
        r#"predictor_requests_total{code="200",route="predict"}"#,
    )
    .expect("predictions counted");
    assert!(
        answered >= seen as f64 && answered >= 100.0,
        "{answered} shifted rows"
    );
    assert_eq!(series(&text, "predictor_drift_rows_total"), Some(answered));
    let max = series(&text, "predictor_drift_max_psi").expect("max PSI");
    assert!(
        max > 0.25,
        "max PSI {max} for rows shifted by 3 std:\n{text}"
    );
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    // Locust quotes only the Name column when needed; names here have no commas.
    text.lines()
        .map(|l| {
            l.split(',')
                .map(|c| c.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// Parses the RESULT line our wrk scripts print.
fn wrk_result(out: &str) -> std::collections::HashMap<String, u64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in wrk output:\n{out}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(u64::MAX)))
        .collect()
}

#[test]
fn wrk_recipe_runs_clean_against_a_local_predictor() {
    // `wrk -v` exits non-zero even when installed; whether it can be spawned is the test.
    if Command::new("wrk").arg("-v").output().is_err() {
        skip_or_fail("wrk", "CHAMPION_REQUIRE_WRK", "apt-get install -y wrk");
        return;
    }
    let (_dir, p) = start();
    let bench = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("bench");
    for (script, path, rows) in [
        ("predict.lua", "/predict".to_string(), "1"),
        ("v2_batch.lua", "/v2/models/wine/infer".to_string(), "50"),
    ] {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", "-c4", "-d1s", "--timeout", "5s", "-s"])
            .arg(bench.join(script))
            .arg(format!("http://{}{path}", p.addr))
            .env("BATCH_ROWS", rows);
        let (ok, out, err) = run_bounded(cmd, Duration::from_secs(30));
        assert!(ok, "wrk failed:\n{out}\n{err}");
        let r = wrk_result(&out);
        assert!(r["requests"] > 10, "{script}: {out}");
        assert_eq!(r["non2xx"], 0, "{script}: {out}");
        assert_eq!(r["errors"], 0, "{script}: {out}");
    }
    let metrics = p.get("/metrics").text();
    assert!(metrics.contains(r#"predictor_requests_total{code="200",route="v2_infer"}"#));
}
