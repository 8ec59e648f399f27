//! Shadow mirroring with real processes: a champion predictor mirroring to a second real
//! predictor serving another model, to a port nobody listens on, and to a server that accepts
//! connections and never answers; and SHADOW_URL refused at start.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ModelDir, Predictor, Response};
use serde_json::{Value, json};

/// A challenger model directory: the same wine features and labels, `trees` stumps.
struct Challenger {
    _tmp: tempfile::TempDir,
    uri: String,
    model: champion_model::ModelFile,
}

fn challenger_dir(version: &str, trees: usize) -> Challenger {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir = tmp.path().join("wine").join(version);
    let model = common::model::write_model_dir_with_trees(&dir, version, None, trees);
    Challenger {
        uri: format!("file://{}/", dir.display()),
        _tmp: tmp,
        model,
    }
}

/// The wine test rows in the model's feature order.
fn wine_rows(model: &champion_model::ModelFile) -> Vec<Vec<f64>> {
    let (header, rows) = common::wine_test_rows();
    rows.iter()
        .map(|row| {
            model
                .feature_names
                .iter()
                .map(|f| {
                    let i = header
                        .iter()
                        .position(|h| h == f)
                        .unwrap_or_else(|| panic!("feature {f} not in {header:?}"));
                    row[i]
                })
                .collect()
        })
        .collect()
}

fn row_object(model: &champion_model::ModelFile, row: &[f64]) -> Value {
    Value::Object(
        model
            .feature_names
            .iter()
            .zip(row)
            .map(|(f, v)| (f.clone(), json!(v)))
            .collect(),
    )
}

#[derive(Debug, Default, PartialEq, Clone, Copy)]
struct Counts {
    agree: u64,
    disagree: u64,
    error: u64,
    dropped: u64,
    /// predictor_shadow_duration_seconds_count
    timed: u64,
}

impl Counts {
    fn answered(&self) -> u64 {
        self.agree + self.disagree + self.error
    }
}

/// The count of one exact series in a /metrics text; a failed test when it is not there.
fn series(text: &str, name: &str) -> u64 {
    common::series(text, name)
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no series {name} in\n{text}"))
}

fn counts(p: &Predictor) -> Counts {
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let result = |r: &str| {
        series(
            &text,
            &format!("predictor_shadow_requests_total{{result=\"{r}\"}}"),
        )
    };
    Counts {
        agree: result("agree"),
        disagree: result("disagree"),
        error: result("error"),
        dropped: result("dropped"),
        timed: series(&text, "predictor_shadow_duration_seconds_count"),
    }
}

/// Polls the champion's metrics until `done` holds (deadline 30 s).
fn wait_counts(p: &Predictor, what: &str, done: impl Fn(&Counts) -> bool) -> Counts {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let c = counts(p);
        if done(&c) {
            return c;
        }
        assert!(Instant::now() < end, "{what}: still {c:?} after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(r: Response, what: &str) -> Response {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    r
}

#[test]
fn every_result_series_exists_at_zero_from_the_start() {
    let dir = ModelDir::new("v7", None);
    let plain = Predictor::start(&dir.uri(), &[]);
    assert_eq!(counts(&plain), Counts::default());
    let mirroring = Predictor::start(&dir.uri(), &[("SHADOW_URL", "http://127.0.0.1:9")]);
    assert_eq!(counts(&mirroring), Counts::default());
    assert!(
        mirroring
            .log_text()
            .contains("mirroring prediction requests to the shadow challenger"),
        "{}",
        mirroring.log_text()
    );
    // The mirroring client's thread runs at nice 19; the serving threads keep nice 0. The
    // thread may start after the log line, on a busy machine well after it.
    let pid = mirroring.child.id();
    let nice_of_threads = || {
        let mut nice = std::collections::BTreeMap::new();
        let tasks =
            std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| panic!("{e}"));
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // Fields after the ")" that ends the command name; nice is field 19 of stat.
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            if let Some(value) = after
                .split_whitespace()
                .nth(16)
                .and_then(|v| v.parse().ok())
            {
                nice.insert(comm.trim().to_string(), value);
            }
        }
        nice
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut nice: std::collections::BTreeMap<String, i64> = nice_of_threads();
    while !nice.contains_key("shadow") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        nice = nice_of_threads();
    }
    assert_eq!(nice.get("shadow"), Some(&19), "{nice:?}");
    assert!(
        nice.iter().any(|(name, n)| name != "shadow" && *n == 0),
        "{nice:?}"
    );
}

/// Every protocol is mirrored and compared row by row with a real challenger; the expected
/// agreement comes from both models scored here.
#[test]
fn a_challenger_with_another_model_is_counted_agree_or_disagree_row_by_row() {
    let champion_dir = ModelDir::new("v7", Some(0.8));
    let challenger = challenger_dir("v8", 3);
    let shadow = Predictor::start(&challenger.uri, &[]);
    let champion = Predictor::start(
        &champion_dir.uri(),
        &[("SHADOW_URL", &format!("http://{}", shadow.addr))],
    );
    let model = &champion_dir.model;
    let rows = wine_rows(model);
    let same = |row: &Vec<f64>| {
        let ours = model.predict(row).unwrap_or_else(|e| panic!("{e}"));
        let theirs = challenger
            .model
            .predict(row)
            .unwrap_or_else(|e| panic!("{e}"));
        model.class_labels[ours] == challenger.model.class_labels[theirs]
    };
    let (mut agree, mut disagree) = (0, 0);
    let mut expect = |rows: &[Vec<f64>]| {
        if rows.iter().all(same) {
            agree += 1;
        } else {
            disagree += 1;
        }
    };
    // Refused requests are not mirrored (sent first, so a mirror of them would be counted).
    assert_eq!(
        champion.post_json("/predict", "{\"alcohol\": 1}").status,
        422
    );
    assert_eq!(champion.post_json("/predict", "{").status, 400);
    // Single rows on /predict.
    for row in rows.iter().take(40) {
        ok(
            champion.post_json("/predict", &row_object(model, row).to_string()),
            "/predict",
        );
        expect(std::slice::from_ref(row));
    }
    // Batches of 5 in every protocol: agree only when all 5 rows agree.
    for batch in rows[40..].chunks(5).take(6) {
        let objects: Vec<Value> = batch.iter().map(|r| row_object(model, r)).collect();
        ok(
            champion.post_json("/predict", &Value::Array(objects).to_string()),
            "/predict list",
        );
        expect(batch);
        ok(
            champion.post_json(
                "/v1/models/wine:predict",
                &json!({ "instances": batch }).to_string(),
            ),
            "v1",
        );
        expect(batch);
        let flat: Vec<f64> = batch.iter().flatten().copied().collect();
        let tensor = json!({"inputs": [{"name": "input-0", "shape": [batch.len(), 11], "datatype": "FP64", "data": flat}]});
        ok(
            champion.post_json("/v2/models/wine/infer", &tensor.to_string()),
            "v2",
        );
        expect(batch);
        // The champion's own version in the path: the challenger gets it without.
        ok(
            champion.post_json("/v2/models/wine/versions/v7/infer", &tensor.to_string()),
            "v2 versioned",
        );
        expect(batch);
        // Binary tensor data in and out; only the probabilities asked for.
        let raw: Vec<u8> = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({
            "inputs": [{"name": "input-0", "shape": [batch.len(), 11], "datatype": "FP64",
                        "parameters": {"binary_data_size": raw.len()}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}],
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&raw);
        let r = ok(
            champion.request(
                "POST",
                "/v2/models/wine/infer",
                &[
                    ("content-type", "application/octet-stream"),
                    ("inference-header-content-length", &header.len().to_string()),
                ],
                &body,
            ),
            "v2 binary",
        );
        assert!(r.header("inference-header-content-length").is_some());
        expect(batch);
    }
    let sent = agree + disagree;
    assert!(
        agree > 0 && disagree > 0,
        "the two models must agree on some requests and not on others: {agree} / {disagree}"
    );
    let c = wait_counts(&champion, "all mirrored requests answered", |c| {
        c.answered() >= sent
    });
    assert_eq!(
        c,
        Counts {
            agree,
            disagree,
            error: 0,
            dropped: 0,
            timed: sent,
        }
    );
    // The challenger saw exactly the mirrored requests, each answered 200.
    let text = shadow.get("/metrics").text();
    let served: u64 = ["predict", "v1_predict", "v2_infer"]
        .iter()
        .map(|r| {
            let name = format!("predictor_requests_total{{code=\"200\",route=\"{r}\"}}");
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(served, sent, "{text}");
    assert!(!text.contains("code=\"4"), "{text}");
}

/// A challenger nobody listens on: every mirrored request is an error, no caller notices, and
/// SHADOW_PERCENT=50 mirrors every other request.
#[test]
fn a_challenger_that_is_down_counts_errors_and_callers_get_200() {
    let dir = ModelDir::new("v7", None);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
    }; // closed again: connections are refused
    let champion = Predictor::start(
        &dir.uri(),
        &[
            ("SHADOW_URL", &format!("http://127.0.0.1:{port}/")),
            ("SHADOW_PERCENT", "50"),
        ],
    );
    let rows = wine_rows(&dir.model);
    for row in rows.iter().take(40) {
        ok(
            champion.post_json("/predict", &row_object(&dir.model, row).to_string()),
            "/predict with the shadow down",
        );
    }
    let c = wait_counts(&champion, "20 errors", |c| c.answered() >= 20);
    // A refused connection is no answer: no duration is observed.
    assert_eq!(
        c,
        Counts {
            error: 20,
            ..Counts::default()
        }
    );
    let text = champion.get("/metrics").text();
    assert!(
        text.contains("predictor_requests_total{code=\"200\",route=\"predict\"} 40"),
        "{text}"
    );
}

/// A challenger that accepts connections and never answers, with 2 workers and a queue of 4:
/// 2 requests in flight, 4 waiting, every other one dropped, and every caller answered at
/// once (the shadow timeout is 60 s; a caller waiting on it would take that long).
#[test]
fn a_stalled_challenger_fills_the_queue_and_callers_do_not_wait() {
    let dir = ModelDir::new("v7", None);
    // Never accepted: the kernel completes the handshakes and keeps the requests in the buffers.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = stalled.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let champion = Predictor::start(
        &dir.uri(),
        &[
            ("SHADOW_URL", &format!("http://{addr}")),
            ("SHADOW_QUEUE", "4"),
            ("SHADOW_CONCURRENCY", "2"),
            ("SHADOW_TIMEOUT_SECONDS", "60"),
        ],
    );
    let rows = wine_rows(&dir.model);
    let n = 60u64;
    let bound = Duration::from_secs(2);
    let mut slowest = Duration::ZERO;
    for row in rows.iter().cycle().take(n as usize) {
        let t = Instant::now();
        ok(
            champion.post_json("/predict", &row_object(&dir.model, row).to_string()),
            "/predict with a stalled shadow",
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < bound,
        "the slowest caller request took {slowest:?}; the shadow must not delay callers"
    );
    // At most 2 in flight plus 4 queued are kept; a worker that took its first item late
    // lets a few more be dropped.
    let c = wait_counts(&champion, "dropped counted", |c| c.dropped >= n - 6);
    assert!(c.dropped <= n - 4, "{c:?}");
    assert_eq!(c.answered(), 0, "nothing answered yet: {c:?}");
    drop(stalled);
}

#[test]
fn a_bad_shadow_url_stops_the_start_with_what_was_expected() {
    let dir = ModelDir::new("v7", None);
    for (k, v) in [
        ("SHADOW_URL", "https://challenger:8080"),
        ("SHADOW_URL", "http://user:pw@challenger:8080"),
        ("SHADOW_URL", "http://challenger:8080/v2"),
        ("SHADOW_PERCENT", "150"),
        ("SHADOW_QUEUE", "0"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_predictor"));
        cmd.env("MODEL_URI", dir.uri())
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("SHADOW_URL", "http://127.0.0.1:9")
            .env(k, v)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
        let status = common::wait_exit(&mut child, Duration::from_secs(30), "predictor");
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut err);
        }
        assert!(!status.success(), "{k}={v} must stop the start");
        assert!(
            err.contains(&format!("configuration: {k}=")) && err.contains("expected"),
            "{k}={v}: {err}"
        );
    }
}
