//! Open Inference Protocol v2 as real clients send it: the Triton Python client
//! (`tritonclient[http]`) against the real binary, with its binary tensor extension (binary
//! inputs of several datatypes, binary and JSON outputs), plus the framing errors that client
//! never produces, sent as raw bytes.
//!
//! Without tritonclient the client half is skipped loudly, unless CHAMPION_REQUIRE_TRITONCLIENT=1
//! (as `make test` sets) makes that a failure; `make test-deps` installs it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{MODEL_VERSION, ModelDir, Predictor};
use serde_json::{Value, json};

fn start() -> (ModelDir, Predictor) {
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let p = Predictor::start(
        &dir.uri(),
        &[("MODEL_NAME", "wine"), ("SHUTDOWN_DRAIN_SECONDS", "0")],
    );
    (dir, p)
}

/// Deterministic rows spread around a real wine row, in feature order.
fn rows(n: usize) -> Vec<Vec<f64>> {
    let base = [
        7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4,
    ];
    (0..n)
        .map(|r| {
            base.iter()
                .enumerate()
                .map(|(f, b)| {
                    let v = b * (0.7 + ((r * 7 + f * 13) % 61) as f64 / 100.0);
                    // Short decimals, as a client would hold them.
                    (v * 1e4).round() / 1e4
                })
                .collect()
        })
        .collect()
}

fn tritonclient_available() -> bool {
    Command::new("python3")
        .args(["-c", "import tritonclient.http, numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn labels_for(model: &champion_model::ModelFile, rows: &[Vec<f64>]) -> Vec<String> {
    rows.iter()
        .map(|r| model.class_labels[model.predict(r).unwrap_or_else(|e| panic!("{e}"))].clone())
        .collect()
}

fn proba_for(model: &champion_model::ModelFile, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| model.predict_proba(r).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn as_matrix(v: &Value, what: &str) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {v}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("{what}: row not a list: {row}"))
                .iter()
                .map(|x| x.as_f64().unwrap_or_else(|| panic!("{what}: {x}")))
                .collect()
        })
        .collect()
}

#[test]
fn the_triton_python_client_with_binary_tensors() {
    if !tritonclient_available() {
        assert!(
            std::env::var("CHAMPION_REQUIRE_TRITONCLIENT").as_deref() != Ok("1"),
            "tritonclient is not installed and CHAMPION_REQUIRE_TRITONCLIENT=1 requires it; \
             install with: make test-deps (python3 -m pip install 'tritonclient[http]')"
        );
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: tritonclient is not installed (python3 -m pip install 'tritonclient[http]'); set CHAMPION_REQUIRE_TRITONCLIENT=1 to make this a failure !!!!!!!!\n\n"
        );
        return;
    }
    let (dir, p) = start();
    let model = &dir.model;
    let x = rows(40);
    let rows_file = dir.tmp.path().join("rows.json");
    std::fs::write(&rows_file, json!({ "rows": x }).to_string()).unwrap_or_else(|e| panic!("{e}"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/triton_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(p.addr.to_string())
        .arg(&rows_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {script}: {e}"));
    let status = common::wait_exit(&mut child, Duration::from_secs(60), "triton_client.py");
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut err);
    }
    assert!(
        status.success(),
        "triton_client.py failed: {status}\nstdout: {out}\nstderr: {err}\npredictor log:\n{}",
        p.log_text()
    );
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("report not JSON ({e}): {out}"));

    assert_eq!(report["live"], true);
    assert_eq!(report["ready"], true);
    assert_eq!(report["extensions"], json!(["binary_tensor_data"]));
    assert_eq!(report["rows"], 40);

    let labels = labels_for(model, &x);
    let proba = proba_for(model, &x);
    // 1. Client defaults: binary FP64 in, binary outputs back, bit-exact.
    let r = &report["fp64_binary"];
    assert_eq!(r["id"], "bin-1");
    assert_eq!(r["label"], json!(labels), "binary FP64 labels");
    assert_eq!(r["label_shape"], json!([40]));
    assert_eq!(r["probabilities_shape"], json!([40, 2]));
    assert_eq!(as_matrix(&r["probabilities"], "fp64_binary"), proba);

    // 2. FP32 binary in, JSON out: the model scores the f32 values.
    let x32: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().map(|v| f64::from(*v as f32)).collect())
        .collect();
    let r = &report["fp32_binary_json_out"];
    assert_eq!(r["label"], json!(labels_for(model, &x32)));
    let got = as_matrix(&r["probabilities"], "fp32_binary_json_out");
    for (g, w) in got
        .iter()
        .flatten()
        .zip(proba_for(model, &x32).iter().flatten())
    {
        assert!((g - w).abs() < 1e-12, "FP32 probabilities {g} vs {w}");
    }

    // 3. JSON in, only binary probabilities out.
    let r = &report["fp64_json_in_binary_proba"];
    assert!(r.get("label").is_none(), "label was not requested: {r}");
    assert_eq!(as_matrix(&r["probabilities"], "json_in"), proba);

    // 4. Integer and BOOL tensors.
    let floor: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().map(|v| v.floor()).collect())
        .collect();
    assert_eq!(
        report["int64_binary"]["label"],
        json!(labels_for(model, &floor))
    );
    assert_eq!(
        report["int16_binary"]["label"],
        json!(labels_for(model, &floor))
    );
    let clipped: Vec<Vec<f64>> = floor
        .iter()
        .map(|r| r.iter().map(|v| v.clamp(0.0, 255.0)).collect())
        .collect();
    assert_eq!(
        report["uint8_binary"]["label"],
        json!(labels_for(model, &clipped))
    );
    let bools: Vec<Vec<f64>> = floor
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| (*v as i64 % 2 == 1) as u8 as f64)
                .collect()
        })
        .collect();
    assert_eq!(
        report["bool_binary"]["label"],
        json!(labels_for(model, &bools))
    );

    // 5. Errors reach the client as its exception, with our reason.
    let e = &report["errors"]["wrong_shape"];
    assert_eq!(e["status"], "422", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expected shape [N, 11]"),
        "{e}"
    );
    let e = &report["errors"]["fp16"];
    assert_eq!(e["status"], "422", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unsupported datatype 'FP16'"),
        "{e}"
    );
}

/// A binary-framed v2 request: JSON header, then the tensor bytes.
fn framed(header: &str, tensor: &[u8]) -> Vec<u8> {
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(tensor);
    body
}

/// (Inference-Header-Content-Length, Content-Type, body, expected status, expected message part)
type FramingCase = (String, Option<&'static str>, Vec<u8>, u16, &'static str);

#[test]
fn binary_framing_errors_are_clear_4xx() {
    let (dir, p) = start();
    let x = rows(3);
    let bytes: Vec<u8> = x.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let header = format!(
        r#"{{"inputs":[{{"name":"input-0","shape":[3,11],"datatype":"FP64","parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
        bytes.len()
    );
    let len = header.len().to_string();
    let post = |hlen: &str, ct: Option<&str>, body: &[u8]| {
        let mut headers = vec![("inference-header-content-length", hlen)];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        p.request("POST", "/v2/models/wine/infer", &headers, body)
    };

    // The well-formed request, with the Content-Type Triton and KServe clients may send.
    let r = post(
        &len,
        Some("application/octet-stream"),
        &framed(&header, &bytes),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let json_len: usize = r
        .header("inference-header-content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Inference-Header-Content-Length in {:?}", r.headers));
    let head: Value = serde_json::from_slice(&r.body[..json_len])
        .unwrap_or_else(|e| panic!("JSON header ({e}): {}", r.text()));
    let label_size = head["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap_or_else(|| panic!("{head}")) as usize;
    let proba_size = head["outputs"][1]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap_or_else(|| panic!("{head}")) as usize;
    assert_eq!(r.body.len(), json_len + label_size + proba_size);
    assert_eq!(proba_size, 3 * 2 * 8);
    let proba: Vec<f64> = r.body[json_len + label_size..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let want: Vec<f64> = proba_for(&dir.model, &x).into_iter().flatten().collect();
    assert_eq!(proba, want);

    let cases: Vec<FramingCase> = vec![
        (
            (header.len() + bytes.len() + 1).to_string(),
            None,
            framed(&header, &bytes),
            400,
            "Inference-Header-Content-Length is",
        ),
        (
            "twelve".into(),
            None,
            framed(&header, &bytes),
            400,
            "expected the byte length",
        ),
        (
            "-1".into(),
            None,
            framed(&header, &bytes),
            400,
            "expected the byte length",
        ),
        (
            len.clone(),
            None,
            framed(&header, &bytes[..bytes.len() - 8]),
            400,
            "only 256 bytes of binary data follow",
        ),
        (
            len.clone(),
            None,
            framed(&header, &[bytes.as_slice(), &[0u8; 5]].concat()),
            400,
            "269 bytes follow the JSON inference header but the inputs declare 264",
        ),
        (
            (header.len() - 1).to_string(),
            None,
            framed(&header, &bytes),
            400,
            "malformed JSON",
        ),
        (
            len.clone(),
            Some("text/plain"),
            framed(&header, &bytes),
            415,
            "application/octet-stream",
        ),
    ];
    for (hlen, ct, body, status, needle) in cases {
        let r = post(&hlen, ct, &body);
        assert_eq!(r.status, status, "{needle}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    // Without the framing header a binary_data_size input is refused, and octet-stream is
    // not accepted as JSON.
    let r = p.request(
        "POST",
        "/v2/models/wine/infer",
        &[],
        framed(&header, &bytes).as_slice(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = p.request(
        "POST",
        "/v2/models/wine/infer",
        &[("content-type", "application/octet-stream")],
        header.as_bytes(),
    );
    assert_eq!(r.status, 415, "{}", r.text());
}
