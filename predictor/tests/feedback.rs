//! Ground-truth feedback and live drift through the real binary over real sockets: predictions
//! answered with request ids, true labels sent back on the same keep-alive connection, the
//! confusion counters and online F1/accuracy they produce, the bounded memory, and PSI per
//! feature for rows from the training distribution and for shifted rows.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use champion_model::{DriftReference, Metrics, ModelFile};
use common::{MODEL_VERSION, ModelDir, Predictor, Response, csv_rows, series};
use serde_json::{Value, json};

/// One keep-alive HTTP/1.1 connection: every request goes to the same pod, as feedback must.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.stream
            .write_all(&req)
            .unwrap_or_else(|e| panic!("write: {e}"));
        // Read one response: headers, then content-length bytes.
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                let total = end + 4 + len;
                if self.buf.len() >= total {
                    let rest = self.buf.split_off(total);
                    let raw = std::mem::replace(&mut self.buf, rest);
                    let r = common::parse_response(&raw);
                    assert_ne!(
                        r.header("connection"),
                        Some("close"),
                        "the server closed the keep-alive connection"
                    );
                    return r;
                }
            }
            let n = self
                .stream
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("read: {e}"));
            assert!(n > 0, "connection closed mid-response");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.send("POST", path, &h, body.to_string().as_bytes())
    }
}

fn metrics(p: &Predictor) -> String {
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// A wine row as the `/predict` object of the model's features.
fn row_object(header: &[String], row: &[f64], features: &[String]) -> Value {
    let mut obj = serde_json::Map::new();
    for f in features {
        let i = header
            .iter()
            .position(|h| h == f)
            .unwrap_or_else(|| panic!("{f} not in {header:?}"));
        obj.insert(f.clone(), json!(row[i]));
    }
    Value::Object(obj)
}

/// The true class of the test model ("good" above quality 6, as `--positive-above 6` cuts it).
fn truth(header: &[String], row: &[f64]) -> &'static str {
    let q = header
        .iter()
        .position(|h| h == "quality")
        .unwrap_or_else(|| panic!("no quality column in {header:?}"));
    if row[q] > 6.0 { "good" } else { "bad" }
}

fn labels() -> Vec<String> {
    vec!["bad".to_string(), "good".to_string()]
}

#[test]
fn predictions_answered_on_one_connection_take_feedback_and_score_online() {
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let p = Predictor::start(&dir.uri(), &[]);
    let (header, rows) = common::wine_test_rows();
    let features = &dir.model.feature_names;
    let mut conn = Conn::open(p.addr);
    let (mut y_true, mut y_pred) = (Vec::new(), Vec::new());
    let index = |l: &str| labels().iter().position(|x| x == l).expect("a model label");

    // Single rows: half with the caller's request id, half with a pod-made one.
    for (i, row) in rows.iter().take(40).enumerate() {
        let mine = format!("client-{i}:a.b_c");
        let headers: Vec<(&str, &str)> = if i % 2 == 0 {
            vec![("x-request-id", mine.as_str())]
        } else {
            vec![]
        };
        let r = conn.post("/predict", &headers, &row_object(&header, row, features));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-model-version"), Some(MODEL_VERSION));
        let rid = r.header("x-request-id").expect("x-request-id").to_string();
        if i % 2 == 0 {
            assert_eq!(rid, mine, "the caller's valid id is kept");
        } else {
            assert!(
                !rid.is_empty() && rid.len() <= 64,
                "a pod-made id is a valid id: {rid}"
            );
        }
        let predicted = r.json()["label"].as_str().expect("label").to_string();
        let actual = truth(&header, row);
        let fb = conn.post(
            "/feedback",
            &[],
            &json!({"requestId": rid, "label": actual}),
        );
        assert_eq!(fb.status, 200, "{}", fb.text());
        let v = fb.json();
        assert_eq!(v["labels"], 1);
        assert_eq!(v["correct"], u64::from(predicted == actual));
        assert_eq!(v["modelVersion"], MODEL_VERSION);
        y_true.push(index(actual));
        y_pred.push(index(&predicted));
    }

    // A batch: one label per row, in order; the v1 and v2 routes remember their rows too.
    let batch: Vec<&Vec<f64>> = rows.iter().skip(40).take(5).collect();
    let list: Vec<Value> = batch
        .iter()
        .map(|r| row_object(&header, r, features))
        .collect();
    let r = conn.post("/predict", &[("x-request-id", "batch-1")], &json!(list));
    assert_eq!(r.status, 200, "{}", r.text());
    let predicted: Vec<String> = r
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| o["label"].as_str().expect("label").to_string())
        .collect();
    let actual: Vec<&str> = batch.iter().map(|r| truth(&header, r)).collect();
    let fb = conn.post(
        "/feedback",
        &[],
        &json!({"requestId": "batch-1", "labels": actual}),
    );
    assert_eq!(fb.status, 200, "{}", fb.text());
    y_true.extend(actual.iter().map(|a| index(a)));
    y_pred.extend(predicted.iter().map(|p| index(p)));
    let instances: Vec<Vec<f64>> = batch
        .iter()
        .map(|r| {
            features
                .iter()
                .map(|f| r[header.iter().position(|h| h == f).unwrap_or(0)])
                .collect()
        })
        .collect();
    let r = conn.post(
        "/v1/models/wine:predict",
        &[("x-request-id", "v1-1")],
        &json!({ "instances": instances }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v1_pred: Vec<String> = r.json()["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    let fb = conn.post(
        "/feedback",
        &[],
        &json!({"requestId": "v1-1", "labels": actual}),
    );
    assert_eq!(fb.status, 200, "{}", fb.text());
    y_true.extend(actual.iter().map(|a| index(a)));
    y_pred.extend(v1_pred.iter().map(|p| index(p)));

    // Feedback is taken once per request id.
    let again = conn.post(
        "/feedback",
        &[],
        &json!({"requestId": "client-0:a.b_c", "label": "good"}),
    );
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(
        again.text().contains("already received"),
        "{}",
        again.text()
    );

    // The counters are what the pairs above give, and the online figures are the offline
    // metric functions on the same pairs.
    let text = metrics(&p);
    let want = Metrics::compute(&y_true, &y_pred, &labels(), None).expect("metrics");
    for (t, lt) in labels().iter().enumerate() {
        for (q, lq) in labels().iter().enumerate() {
            let name =
                format!("predictor_feedback_confusion_total{{actual=\"{lt}\",predicted=\"{lq}\"}}");
            assert_eq!(
                series(&text, &name),
                Some(want.confusion_matrix[t][q] as f64),
                "{name} in\n{text}"
            );
        }
    }
    let n = y_true.len() as f64;
    assert_eq!(series(&text, "predictor_online_labels"), Some(n));
    let f1 = series(&text, "predictor_online_f1_macro").expect("online F1");
    let acc = series(&text, "predictor_online_accuracy").expect("online accuracy");
    assert!(
        (f1 - want.f1_macro).abs() < 1e-12,
        "{f1} vs {}",
        want.f1_macro
    );
    let correct = y_true.iter().zip(&y_pred).filter(|(a, b)| a == b).count() as f64;
    assert!(
        (acc - correct / n).abs() < 1e-12,
        "{acc} vs {}",
        correct / n
    );
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"matched\"}"),
        Some(42.0)
    );
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"duplicate\"}"),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "predictor_requests_total{code=\"200\",route=\"feedback\"}"
        ),
        Some(42.0)
    );
    assert_eq!(
        series(
            &text,
            "predictor_requests_total{code=\"409\",route=\"feedback\"}"
        ),
        Some(1.0)
    );
    common::promtool::check(&text);
}

#[test]
fn bad_feedback_is_refused_with_a_clear_message() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let p = Predictor::start(&dir.uri(), &[("MAX_BODY_BYTES", "4096")]);
    let (header, rows) = common::wine_test_rows();
    let mut conn = Conn::open(p.addr);
    let r = conn.post(
        "/predict",
        &[("x-request-id", "one")],
        &row_object(&header, &rows[0], &dir.model.feature_names),
    );
    assert_eq!(r.status, 200);
    // An invalid caller id is replaced, not echoed.
    let r = conn.post(
        "/predict",
        &[("x-request-id", "has space")],
        &row_object(&header, &rows[0], &dir.model.feature_names),
    );
    let made = r.header("x-request-id").expect("an id").to_string();
    assert_ne!(made, "has space");
    assert!(
        made.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    );

    for (body, status, needle) in [
        (
            json!({"requestId": "nope", "label": "good"}),
            404,
            "no prediction with request id \"nope\"",
        ),
        (
            json!({"requestId": "one"}),
            400,
            "no \"labels\" or \"label\"",
        ),
        (
            json!({"requestId": "one", "label": "great"}),
            400,
            "unknown label \"great\"",
        ),
        (
            json!({"requestId": "one", "labels": ["good", "bad"]}),
            400,
            "predicted 1 row(s), got 2 label(s)",
        ),
        (
            json!({"requestId": "one", "label": "good", "extra": 1}),
            400,
            "unknown field `extra`",
        ),
        (json!(["one", "good"]), 400, "invalid feedback body"),
        (
            json!({"requestId": "x y", "label": "good"}),
            400,
            "is not a request id",
        ),
    ] {
        let r = conn.post("/feedback", &[], &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = conn.send("POST", "/feedback", &[], b"{not json");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("expected {"), "{}", r.text());
    let r = conn.send(
        "POST",
        "/feedback",
        &[("content-type", "text/plain")],
        br#"{"requestId":"one","label":"good"}"#,
    );
    assert_eq!(r.status, 415, "{}", r.text());
    let r = conn.send("GET", "/feedback", &[], b"");
    assert_eq!(r.status, 405);
    let text = metrics(&p);
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"unknown_id\"}"),
        Some(1.0)
    );
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"invalid\"}"),
        Some(8.0),
        "{text}"
    );
    // The refusals did not use up the prediction's one feedback.
    let r = conn.post(
        "/feedback",
        &[],
        &json!({"requestId": "one", "label": "good"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A body over MAX_BODY_BYTES is refused like a prediction's.
    let big = format!(r#"{{"requestId":"one","labels":["{}"]}}"#, "g".repeat(5000));
    let r = common::request(p.addr, "POST", "/feedback", &[], big.as_bytes());
    assert_eq!(r.status, 413);
}

#[test]
fn memory_is_bounded_the_oldest_predictions_are_forgotten() {
    let dir = ModelDir::new(MODEL_VERSION, None);
    let p = Predictor::start(&dir.uri(), &[("FEEDBACK_CAPACITY", "10")]);
    let (header, rows) = common::wine_test_rows();
    let mut conn = Conn::open(p.addr);
    for (i, row) in rows.iter().take(20).enumerate() {
        let id = format!("r{i}");
        let r = conn.post(
            "/predict",
            &[("x-request-id", id.as_str())],
            &row_object(&header, row, &dir.model.feature_names),
        );
        assert_eq!(r.status, 200);
    }
    for i in 0..20 {
        let r = conn.post(
            "/feedback",
            &[],
            &json!({"requestId": format!("r{i}"), "label": "good"}),
        );
        let want = if i < 10 { 404 } else { 200 };
        assert_eq!(r.status, want, "r{i}: {}", r.text());
    }
    let text = metrics(&p);
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"unknown_id\"}"),
        Some(10.0)
    );
    assert_eq!(
        series(&text, "predictor_feedback_total{result=\"matched\"}"),
        Some(10.0)
    );
}

/// Every row of the wine set in the model's feature order.
fn wine_matrix(features: &[String]) -> Vec<Vec<f64>> {
    let data = common::wine_data_dir();
    let mut out = Vec::new();
    for file in ["data_1.csv", "data_2.csv", "test_data.csv"] {
        let (header, rows) = csv_rows(&data.join(file));
        let cols: Vec<usize> = features
            .iter()
            .map(|f| {
                header
                    .iter()
                    .position(|h| h == f)
                    .unwrap_or_else(|| panic!("{f}"))
            })
            .collect();
        out.extend(
            rows.iter()
                .map(|r| cols.iter().map(|&c| r[c]).collect::<Vec<f64>>()),
        );
    }
    out
}

/// Sends rows as `/predict` lists of 100 over one connection.
fn send_rows(p: &Predictor, features: &[String], rows: &[Vec<f64>]) {
    let mut conn = Conn::open(p.addr);
    for chunk in rows.chunks(100) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|r| {
                Value::Object(
                    features
                        .iter()
                        .zip(r)
                        .map(|(f, v)| (f.clone(), json!(v)))
                        .collect(),
                )
            })
            .collect();
        let r = conn.post("/predict", &[], &json!(list));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

fn psi_by_feature(text: &str, features: &[String]) -> HashMap<String, f64> {
    features
        .iter()
        .filter_map(|f| {
            series(text, &format!("predictor_feature_psi{{feature=\"{f}\"}}"))
                .map(|v| (f.clone(), v))
        })
        .collect()
}

#[test]
fn drift_is_small_for_the_training_distribution_and_large_for_shifted_rows() {
    // The reference is computed as the trainer computes it, from every other wine row; the
    // live rows are the other half: the same distribution, other rows.
    let mut model: ModelFile = common::model::wine_model(MODEL_VERSION, 50);
    let all = wine_matrix(&model.feature_names);
    let (even, odd): (Vec<_>, Vec<_>) = all.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let even: Vec<f64> = even.into_iter().flat_map(|(_, r)| r.clone()).collect();
    let odd: Vec<Vec<f64>> = odd.into_iter().map(|(_, r)| r.clone()).collect();
    let reference = DriftReference::from_rows(&model.feature_names, &even).expect("reference");
    model.drift_reference = Some(reference);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("wine").join(MODEL_VERSION);
    let model = common::model::write_model_dir_with(&dir, MODEL_VERSION, None, model);
    let uri = format!("file://{}/", dir.display());
    let features = model.feature_names.clone();

    let p = Predictor::start(&uri, &[]);
    // Below DRIFT_MIN_ROWS (100) no PSI is exported yet.
    send_rows(&p, &features, &odd[..50]);
    let text = metrics(&p);
    assert_eq!(series(&text, "predictor_drift_rows_total"), Some(50.0));
    assert!(!text.contains("predictor_feature_psi"), "{text}");
    send_rows(&p, &features, &odd[50..]);
    let text = metrics(&p);
    assert_eq!(
        series(&text, "predictor_drift_rows_total"),
        Some(odd.len() as f64)
    );
    let psi = psi_by_feature(&text, &features);
    assert_eq!(psi.len(), features.len(), "{text}");
    for (f, v) in &psi {
        assert!(
            *v < 0.1,
            "{f}: PSI {v} for rows of the training distribution"
        );
    }
    let max = series(&text, "predictor_drift_max_psi").expect("max PSI");
    assert!(max < 0.1 && psi.values().all(|v| *v <= max), "{max}");
    drop(p);

    // Every feature shifted by 3 standard deviations: PSI far above 0.25 everywhere.
    let p = Predictor::start(&uri, &[]);
    let shifted: Vec<Vec<f64>> = odd
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(f, v)| v + 3.0 * model.scaler.scale[f])
                .collect()
        })
        .collect();
    send_rows(&p, &features, &shifted);
    let text = metrics(&p);
    let psi = psi_by_feature(&text, &features);
    assert_eq!(psi.len(), features.len(), "{text}");
    for (f, v) in &psi {
        assert!(*v > 0.25, "{f}: PSI {v} for shifted rows");
    }
    assert!(series(&text, "predictor_drift_max_psi").is_some_and(|m| m > 0.25));
    common::promtool::check(&text);
    drop(p);

    // DRIFT_TRACKING=off: no drift series at all.
    let p = Predictor::start(&uri, &[("DRIFT_TRACKING", "off")]);
    send_rows(&p, &features, &shifted[..200]);
    let text = metrics(&p);
    assert!(!text.contains("predictor_drift"), "{text}");
    assert!(!text.contains("predictor_feature_psi"), "{text}");
}

#[test]
fn a_model_without_a_drift_reference_has_no_drift_series() {
    let mut model = common::model::wine_model(MODEL_VERSION, 50);
    model.drift_reference = None;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("wine").join(MODEL_VERSION);
    let model = common::model::write_model_dir_with(&dir, MODEL_VERSION, None, model);
    let p = Predictor::start(&format!("file://{}/", dir.display()), &[]);
    let rows = wine_matrix(&model.feature_names);
    send_rows(&p, &model.feature_names, &rows[..300]);
    let text = metrics(&p);
    assert!(!text.contains("predictor_drift"), "{text}");
    assert!(!text.contains("predictor_feature_psi"), "{text}");
    assert!(
        text.contains("predictor_rows_predicted_total{route=\"predict\"} 300"),
        "{text}"
    );
}
