//! Test harness: the real `predictor` binary on a free 127.0.0.1 port, and a minimal blocking
//! HTTP/1.1 client that can send exactly the bytes a test wants (no Content-Type, oversize or
//! malformed bodies) over a fresh connection.

#![allow(dead_code)]

pub mod model;
pub mod promtool;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MODEL_VERSION: &str = "v7";

/// The wine data of the tests (linfa-datasets' red-wine set as `champion_datasets::wine(2)`
/// cuts it: data_1.csv, data_2.csv, test_data.csv), written once into the target directory.
pub fn wine_data_dir() -> PathBuf {
    let base = PathBuf::from(
        std::env::var_os("CARGO_TARGET_TMPDIR")
            .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into()),
    );
    champion_datasets::wine_dir_in(&base, 2)
        .unwrap_or_else(|e| panic!("writing the wine data: {e}"))
}

/// A model version directory `<tmp>/wine/<version>/` with model.json and report.json.
pub struct ModelDir {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub model: champion_model::ModelFile,
}

impl ModelDir {
    pub fn new(version: &str, score: Option<f64>) -> ModelDir {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let dir = tmp.path().join("wine").join(version);
        let model = model::write_model_dir(&dir, version, score);
        ModelDir { tmp, dir, model }
    }

    pub fn uri(&self) -> String {
        format!("file://{}/", self.dir.display())
    }
}

/// A running predictor; killed on drop so a failing test leaves nothing behind.
pub struct Predictor {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Predictor {
    /// Starts the binary with MODEL_URI=`uri` plus `env`; waits (deadline 30 s) for its
    /// "listening" log line and returns the bound address.
    pub fn start(uri: &str, env: &[(&str, &str)]) -> Predictor {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_predictor"));
        cmd.env("MODEL_URI", uri)
            .env("PORT", "0")
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("RUST_LOG", "info")
            .env_remove("MODEL_NAME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn predictor: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                log2.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!(
                    "predictor did not start listening within 30 s; stderr: {:?}",
                    out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                );
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line {line}: {e}"));
        let addr = v["fields"]["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {line}"));
        Predictor { child, addr, log }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Predictor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary expecting it to fail at start; returns (exit status, stderr), deadline 30 s.
/// Polls `child` until it exits; past `deadline` it is killed and the test fails naming `what`.
pub fn wait_exit(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn run_expecting_exit(uri: &str) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_predictor"))
        .env("MODEL_URI", uri)
        .env("PORT", "0")
        .env("BIND_ADDRESS", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn predictor: {e}"));
    let status = wait_exit(
        &mut child,
        Duration::from_secs(30),
        "predictor with a bad model",
    );
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status, err)
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection with `Connection: close`; reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    // The server may answer (413) and close before reading a large body; that is fine.
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

/// Reads one response from a stream whose server closes after it (Connection: close).
pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Response {
        status,
        headers,
        body,
    }
}

/// Rows of the shared wine test set as (normalised header, values).
pub fn wine_test_rows() -> (Vec<String>, Vec<Vec<f64>>) {
    csv_rows(&wine_data_dir().join("test_data.csv"))
}

/// Rows of a wine CSV as (normalised header, values).
pub fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(champion_model::normalize_feature_name)
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .unwrap_or_else(|e| panic!("{v}: {e}"))
                })
                .collect()
        })
        .collect();
    (header, rows)
}

/// The value of one exact series (name with labels, e.g. `a_total{code="200"}`) in a /metrics
/// text; `None` when it is not there, a failed test when its value is not a number.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name} {v}: {e}"))
        })
}
