//! The real binary over real sockets: every status code the issue lists, the three protocols,
//! the version header, metrics, checksum refusal and SIGTERM behaviour.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{MODEL_VERSION, ModelDir, Predictor, Response};
use serde_json::{Value, json};

fn start() -> (ModelDir, Predictor) {
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8125));
    let p = Predictor::start(&dir.uri(), &[("SHUTDOWN_DRAIN_SECONDS", "0")]);
    (dir, p)
}

fn row_object(header: &[String], row: &[f64], model: &champion_model::ModelFile) -> Value {
    let mut obj = serde_json::Map::new();
    for f in &model.feature_names {
        let i = header
            .iter()
            .position(|h| h == f)
            .unwrap_or_else(|| panic!("feature {f} not in test_data.csv header {header:?}"));
        obj.insert(f.clone(), json!(row[i]));
    }
    Value::Object(obj)
}

fn ordered(header: &[String], row: &[f64], model: &champion_model::ModelFile) -> Vec<f64> {
    model
        .feature_names
        .iter()
        .map(|f| row[header.iter().position(|h| h == f).unwrap_or(usize::MAX)])
        .collect()
}

fn assert_version(r: &Response, what: &str) {
    assert_eq!(
        r.header("x-model-version"),
        Some(MODEL_VERSION),
        "{what}: x-model-version header"
    );
}

#[test]
fn predict_matches_the_model_on_the_wine_test_set() {
    let (dir, p) = start();
    let (header, rows) = common::wine_test_rows();
    let model = &dir.model;
    // Single objects, with the original CSV spellings ("fixed acidity") and no Content-Type.
    for row in rows.iter().take(25) {
        let obj = row_object(&header, row, model);
        let spaced: serde_json::Map<String, Value> = obj
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.replace('_', " ").to_uppercase(), v.clone()))
            .collect();
        let r = p.request(
            "POST",
            "/predict",
            &[],
            serde_json::to_vec(&spaced).unwrap().as_slice(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_version(&r, "/predict");
        let v = r.json();
        let x = ordered(&header, row, model);
        let want = model.predict_proba(&x).unwrap();
        let class = model.predict(&x).unwrap();
        assert_eq!(v["label"], model.class_labels[class]);
        assert_eq!(v["modelVersion"], MODEL_VERSION);
        for (label, prob) in model.class_labels.iter().zip(&want) {
            assert_eq!(v["probabilities"][label].as_f64(), Some(*prob), "{label}");
        }
    }
    // A list answers with a list, in order; /predict/ works too.
    let list: Vec<Value> = rows.iter().map(|r| row_object(&header, r, model)).collect();
    let r = p.post_json("/predict/", &serde_json::to_string(&list).unwrap());
    assert_eq!(r.status, 200);
    let v = r.json();
    let answers = v.as_array().expect("a list for a list");
    assert_eq!(answers.len(), rows.len());
    for (a, row) in answers.iter().zip(&rows) {
        let class = model.predict(&ordered(&header, row, model)).unwrap();
        assert_eq!(a["label"], model.class_labels[class]);
    }
    // Both classes occur, so the comparison above is not trivially one label.
    let goods = answers.iter().filter(|a| a["label"] == "good").count();
    assert!(
        goods > 0 && goods < answers.len(),
        "{goods} of {}",
        answers.len()
    );
}

#[test]
fn kserve_v1_and_v2_protocols() {
    let (dir, p) = start();
    let (header, rows) = common::wine_test_rows();
    let model = &dir.model;
    let x: Vec<Vec<f64>> = rows
        .iter()
        .take(10)
        .map(|r| ordered(&header, r, model))
        .collect();
    let expected: Vec<&str> = x
        .iter()
        .map(|r| model.class_labels[model.predict(r).unwrap()].as_str())
        .collect();

    let r = p.post_json(
        "/v1/models/wine:predict",
        &json!({ "instances": x }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_version(&r, "v1 predict");
    assert_eq!(r.json()["predictions"], json!(expected));
    let objects: Vec<Value> = rows
        .iter()
        .take(10)
        .map(|r| row_object(&header, r, model))
        .collect();
    let r = p.post_json(
        "/v1/models/wine:predict",
        &json!({ "instances": objects }).to_string(),
    );
    assert_eq!(r.json()["predictions"], json!(expected));
    let r = p.get("/v1/models/wine");
    assert_eq!((r.status, r.json()["ready"].clone()), (200, json!(true)));

    let flat: Vec<f64> = x.iter().flatten().copied().collect();
    let body = json!({
        "id": "req-1",
        "inputs": [{"name": "input-0", "shape": [10, 11], "datatype": "FP64", "data": flat}]
    });
    let r = p.post_json("/v2/models/wine/infer", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_version(&r, "v2 infer");
    let v = r.json();
    assert_eq!(v["model_name"], "wine");
    assert_eq!(v["model_version"], MODEL_VERSION);
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["outputs"][0]["name"], "label");
    assert_eq!(v["outputs"][0]["data"], json!(expected));
    assert_eq!(v["outputs"][1]["name"], "probabilities");
    assert_eq!(v["outputs"][1]["shape"], json!([10, 2]));
    let p0 = model.predict_proba(&x[0]).unwrap();
    assert_eq!(v["outputs"][1]["data"][1].as_f64(), Some(p0[1]));
    // FP32 with nested data is accepted too.
    let body = json!({"inputs": [{"name": "x", "shape": [10, 11], "datatype": "FP32", "data": x}]});
    let r = p.post_json("/v2/models/wine/versions/v7/infer", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["data"], json!(expected));

    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/wine/ready",
        "/healthz",
        "/readyz",
    ] {
        let r = p.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_version(&r, path);
    }
    let meta = p.get("/v2/models/wine").json();
    assert_eq!(meta["versions"], json!([MODEL_VERSION]));
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 11]));
    assert_eq!(
        meta["parameters"]["feature_names"],
        json!(model.feature_names)
    );
}

#[test]
fn every_error_status_with_a_json_reason() {
    let (_dir, p) = start();
    let (header, rows) = common::wine_test_rows();
    let good = row_object(&header, &rows[0], &_dir.model);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("alcohol");
    let mut unknown = good.clone();
    unknown
        .as_object_mut()
        .unwrap()
        .insert("colour".into(), json!(1));
    let big = vec![b' '; 1024 * 1024 + 1];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/predict", vec![], b"{\"alcohol\": ".to_vec(), 400, "malformed JSON"),
        ("POST", "/predict", vec![], missing.to_string().into_bytes(), 422, "missing feature(s) alcohol"),
        ("POST", "/predict", vec![], unknown.to_string().into_bytes(), 422, "unknown feature 'colour'"),
        ("POST", "/predict", vec![], br#"{"alcohol": 1e999}"#.to_vec(), 422, "non-finite"),
        ("POST", "/v1/models/wine:predict", vec![], br#"{"instances": [[1, 2, 3]]}"#.to_vec(), 422, "expected 11"),
        (
            "POST",
            "/v2/models/wine/infer",
            vec![],
            br#"{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}"#.to_vec(),
            422,
            "expected shape [N, 11]",
        ),
        ("POST", "/predict", vec![("content-type", "text/csv")], good.to_string().into_bytes(), 415, "unsupported media type"),
        ("POST", "/predict", vec![], big, 413, "larger than the limit of 1048576 bytes"),
        ("GET", "/nothing/here", vec![], vec![], 404, "no route"),
        ("GET", "/v2/models/other/ready", vec![], vec![], 404, "not served here"),
        ("GET", "/predict", vec![], vec![], 405, "use POST"),
        ("DELETE", "/v2/models/wine", vec![], vec![], 405, "use GET"),
    ];
    for (method, path, headers, body, status, needle) in cases {
        let r = p.request(method, path, &headers, &body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_version(&r, path);
        let v = r.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error field: {v}"));
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
        if status == 422 {
            assert!(
                msg.contains("expected features: fixed_acidity, volatile_acidity"),
                "{msg}"
            );
        }
    }
    // A chunked body over the limit (no Content-Length to refuse up front) is a 413 too.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(b"POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..17 {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    assert_eq!(common::read_response(&mut s).status, 413);
    // The process is still healthy after all of it.
    assert_eq!(p.get("/healthz").status, 200);
}

#[test]
fn garbage_on_the_wire_never_crashes_or_5xx() {
    let (_dir, p) = start();
    // Deterministic pseudo-random bodies and raw request bytes.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"{}[]\":,0123456789.eE+-truefalsnul \n\\instancesdatashapeFP64alcohol";
    for i in 0..200 {
        let len = (next() % 300) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if i % 3 == 0 {
                    r as u8
                } else {
                    alphabet[(r as usize) % alphabet.len()]
                }
            })
            .collect();
        let path = [
            "/predict",
            "/v1/models/wine:predict",
            "/v2/models/wine/infer",
        ][i % 3];
        let r = p.request("POST", path, &[], &body);
        assert!(
            r.status < 500,
            "{path} {:?} -> {}",
            String::from_utf8_lossy(&body),
            r.status
        );
    }
    // Broken HTTP framing: the connection is dropped or answered 4xx, never a crash.
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /predict HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /predict HTTP/1.1\r\ncontent-length: 5\r\n\r\n{",
        b"\x00\x01\x02\x03",
    ] {
        if let Ok(mut s) = TcpStream::connect(p.addr) {
            let _ = s.write_all(raw);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut buf = Vec::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = std::io::Read::read_to_end(&mut s, &mut buf);
            if buf.starts_with(b"HTTP/1.1 ") {
                let r = common::parse_response(&buf);
                assert!(
                    r.status < 500,
                    "{:?} -> {}",
                    String::from_utf8_lossy(raw),
                    r.status
                );
            }
        }
    }
    assert_eq!(p.get("/healthz").status, 200);
}

#[test]
fn metrics_count_requests_rows_classes_and_name_the_model() {
    let (_dir, p) = start();
    let (header, rows) = common::wine_test_rows();
    let list: Vec<Value> = rows
        .iter()
        .take(5)
        .map(|r| row_object(&header, r, &_dir.model))
        .collect();
    assert_eq!(
        p.post_json("/predict", &serde_json::to_string(&list).unwrap())
            .status,
        200
    );
    assert_eq!(p.post_json("/predict", "{}").status, 422);
    assert_eq!(p.get("/nope").status, 404);
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = r.text();
    for needle in [
        r#"predictor_requests_total{code="200",route="predict"} 1"#,
        r#"predictor_requests_total{code="422",route="predict"} 1"#,
        r#"predictor_requests_total{code="404",route="unknown"} 1"#,
        r#"predictor_rows_predicted_total{route="predict"} 5"#,
        r#"predictor_request_duration_seconds_bucket{route="predict",le="+Inf"} 2"#,
        r#"predictor_model_info{algorithm="adaboost",metric="f1Macro",model_name="wine",model_version="v7"} 1"#,
        r#"predictor_model_score{metric="f1Macro",model_version="v7"} 0.8125"#,
        "predictor_ready 1",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    let by_class: u64 = text
        .lines()
        .filter(|l| l.starts_with("predictor_predictions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(by_class, 5);
    // No per-request log line at info level.
    let log = p.log_text();
    // The 50-stump AdaBoost model is served by champion-model's stump form.
    assert!(log.contains(r#""inference":"adaBoostStumps""#), "{log}");
    assert!(!log.contains("/predict"), "request logged at info:\n{log}");
}

#[test]
fn debug_logs_carry_the_request_id_as_json() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let p = Predictor::start(&dir.uri(), &[("RUST_LOG", "debug")]);
    let r = p.request("POST", "/predict", &[("x-request-id", "rid-42")], b"{}");
    assert_eq!(r.status, 422);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = p.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("rid-42")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the request id:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "DEBUG", "{line}");
    assert_eq!(v["fields"]["request_id"], "rid-42", "{line}");
    assert_eq!(v["fields"]["status"], 422, "{line}");
}

#[test]
fn model_name_from_env_and_missing_report_is_fine() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let p = Predictor::start(&dir.uri(), &[("MODEL_NAME", "red-wine")]);
    assert_eq!(p.get("/v2/models/red-wine/ready").status, 200);
    assert_eq!(p.get("/v2/models/wine/ready").status, 404);
    let text = p.get("/metrics").text();
    assert!(text.contains(r#"model_name="red-wine""#), "{text}");
    assert!(!text.contains("predictor_model_score"), "{text}");
}

#[test]
fn a_model_that_fails_verification_is_never_served() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let path = dir.dir.join("model.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // Change one model number but keep valid JSON: only the checksum can catch it.
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["scaler"]["mean"][0] = json!(99.0);
    let tampered = serde_json::to_string_pretty(&v).unwrap();
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let (status, stderr) = common::run_expecting_exit(&dir.uri());
    assert!(!status.success(), "must exit non-zero");
    assert!(stderr.contains("checksum mismatch"), "reason: {stderr}");
    assert!(stderr.contains("model.json"), "names the file: {stderr}");

    let (status, stderr) =
        common::run_expecting_exit(&format!("file://{}/nowhere/", dir.tmp.path().display()));
    assert!(!status.success());
    assert!(stderr.contains("model.json"), "reason: {stderr}");
}

/// A predictor with a 0.5 s drain delay, 0.5 s of quiet and `grace` seconds of grace, and a
/// `/predict` body for it.
fn draining_predictor(grace: &str) -> (ModelDir, Predictor, String) {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let p = Predictor::start(
        &dir.uri(),
        &[
            ("SHUTDOWN_DRAIN_SECONDS", "0.5"),
            ("SHUTDOWN_QUIET_SECONDS", "0.5"),
            ("SHUTDOWN_GRACE_SECONDS", grace),
        ],
    );
    let (header, rows) = common::wine_test_rows();
    let body = row_object(&header, &rows[0], &dir.model).to_string();
    (dir, p, body)
}

/// A proxy late with the endpoint removal keeps opening connections after the drain delay:
/// they are all served, and the listener closes once they stop, not at the grace deadline.
#[test]
fn connections_still_arriving_after_the_drain_delay_are_served_until_they_stop() {
    let (_dir, mut p, body) = draining_predictor("20");
    let signalled = Instant::now();
    p.sigterm();
    let mut served = 0;
    while signalled.elapsed() < Duration::from_secs(2) {
        // A refused connection panics here, naming it.
        let r = p.post_json("/predict", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        served += 1;
        std::thread::sleep(Duration::from_millis(50)); // the late proxy's pace
    }
    let last = Instant::now();
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the connections stop");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        last.elapsed() < Duration::from_secs(3),
        "the listener closes after 0.5 s of quiet, not at the 20 s grace deadline: {:?}",
        last.elapsed()
    );
    assert!(served > 20, "{served} requests served after SIGTERM");
    assert!(
        p.log_text().contains("arrived after the drain delay"),
        "{}",
        p.log_text()
    );
}

/// Connections that never stop cannot hold the pod past its grace period: the listener closes
/// `SHUTDOWN_QUIET_SECONDS` before the grace deadline and the process exits by it.
#[test]
fn connections_that_never_stop_do_not_delay_the_exit_past_the_grace_period() {
    let (_dir, mut p, body) = draining_predictor("2");
    let signalled = Instant::now();
    p.sigterm();
    let mut refused_at = None;
    while signalled.elapsed() < Duration::from_secs(5) {
        match TcpStream::connect(p.addr) {
            Ok(mut stream) => {
                let head = format!(
                    "POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                assert_eq!(common::read_response(&mut stream).status, 200);
            }
            Err(_) => {
                refused_at = Some(signalled.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50)); // a steady client's pace
    }
    let refused_at = refused_at.expect("the listener closes within the grace period");
    assert!(
        refused_at >= Duration::from_millis(1200) && refused_at < Duration::from_millis(2500),
        "closed at {refused_at:?}: expected about 1.5 s (grace 2 s minus quiet 0.5 s)"
    );
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exits by the grace deadline");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(4));
}

#[test]
fn sigterm_fails_readiness_completes_in_flight_and_exits_zero() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let mut p = Predictor::start(
        &dir.uri(),
        &[
            ("SHUTDOWN_DRAIN_SECONDS", "2"),
            ("SHUTDOWN_GRACE_SECONDS", "10"),
        ],
    );
    let (header, rows) = common::wine_test_rows();
    let body = row_object(&header, &rows[0], &dir.model).to_string();
    // An in-flight request: headers and half the body sent before SIGTERM.
    let mut inflight = TcpStream::connect(p.addr).unwrap();
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    inflight
        .write_all(
            format!("POST /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n", body.len())
                .as_bytes(),
        )
        .unwrap();
    inflight.write_all(first).unwrap();
    assert_eq!(p.get("/readyz").status, 200);
    // Connections are accepted in order and the listener stays open during the drain delay,
    // so by the time /readyz answers 503 below the half-sent request is in the server's hands.

    let signalled = Instant::now();
    p.sigterm();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut saw_unready = false;
    while Instant::now() < deadline {
        let r = p.get("/readyz");
        if r.status == 503 {
            assert_eq!(r.json()["ready"], json!(false));
            assert_eq!(p.get("/v2/health/ready").status, 503);
            saw_unready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_unready, "readiness did not fail after SIGTERM");

    inflight.write_all(second).unwrap();
    let r = common::read_response(&mut inflight);
    assert_eq!(
        r.status,
        200,
        "in-flight request must complete: {}",
        r.text()
    );
    assert!(r.json()["label"].is_string());

    let status = p
        .wait_exit(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(11));
    assert!(p.log_text().contains("drained"), "{}", p.log_text());
}
