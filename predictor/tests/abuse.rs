//! The predictor under abuse, over real loopback sockets against the real binary:
//! - 1,000 connections that trickle their bodies do not lift the p99 of normal `/predict`
//!   requests above 100 ms, and the request timeout closes every one of them (408);
//! - the connection cap holds further connections back until one closes, and idle keep-alive
//!   connections are closed after the header timeout;
//! - at least 100,000 generated requests over the three protocols (v2 with binary framing
//!   included) on keep-alive connections: no 5xx, no panic, no dropped connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::model::WINE_FEATURES;
use common::{MODEL_VERSION, ModelDir, Predictor};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROW: &str = r#"{"fixed_acidity":7.4,"volatile_acidity":0.7,"citric_acid":0,"residual_sugar":1.9,"chlorides":0.076,"free_sulfur_dioxide":11,"total_sulfur_dioxide":34,"density":0.9978,"ph":3.51,"sulphates":0.56,"alcohol":9.4}"#;

/// Raises this process's soft open-file limit to the hard limit and returns it: the trickle
/// test holds 1,000 sockets at once.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // rlim_t is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let limit = lim.rlim_cur as u64;
    limit
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One keep-alive HTTP/1.1 client connection (blocking).
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    close: bool,
    has_version: bool,
    body: Vec<u8>,
}

impl KeepAlive {
    fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = stream.set_nodelay(true);
        KeepAlive {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(
        &mut self,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("write: {e}"))?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        let mut has_version = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().map_err(|_| format!("length {v}"))?,
                "connection" => close = v.eq_ignore_ascii_case("close"),
                "x-model-version" => has_version = v == MODEL_VERSION,
                _ => {}
            }
        }
        let total = head_end + 4 + len;
        while self.buf.len() < total {
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read body: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection mid-body".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end + 4..total].to_vec();
        self.buf.drain(..total);
        Ok(Reply {
            status,
            close,
            has_version,
            body,
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What a trickling connection saw: the status of the response it got (if any), and when
/// the server closed it (also as time since its headers were sent).
struct Trickled {
    status: Option<u16>,
    closed_after: Duration,
    closed_at: Instant,
}

async fn trickle(addr: SocketAddr, sent: Arc<AtomicUsize>) -> Result<Trickled, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{",
    )
    .await
    .map_err(|e| format!("write headers: {e}"))?;
    let start = Instant::now();
    sent.fetch_add(1, Ordering::SeqCst);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(700));
    tick.tick().await;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            // One more byte of body now and then, never finishing it; stop once the server
            // has answered.
            _ = tick.tick(), if got.is_empty() => {
                let _ = s.write_all(b" ").await;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("still open after 60 s".into());
        }
    }
    let status = String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok());
    Ok(Trickled {
        status,
        closed_after: start.elapsed(),
        closed_at: Instant::now(),
    })
}

/// Sends `/predict` on one keep-alive connection until `until`; returns each latency.
async fn normal_client(addr: SocketAddr, until: Instant) -> Result<Vec<Duration>, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let req = format!(
        "POST /predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ROW}",
        ROW.len()
    );
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 8192];
    while Instant::now() < until {
        let t = Instant::now();
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("normal connection closed".into());
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("no content-length")?;
                if got.len() >= h + 4 + len {
                    if !head.starts_with("http/1.1 200") {
                        return Err(format!("normal request failed: {head}"));
                    }
                    break;
                }
            }
        }
        lat.push(t.elapsed());
    }
    Ok(lat)
}

#[test]
fn trickling_bodies_neither_slow_normal_requests_nor_stay_open() {
    const STALLED: usize = 1000;
    const TIMEOUT_S: u64 = 8;
    let limit = raise_fd_limit();
    assert!(
        limit >= STALLED as u64 + 200,
        "this test needs an open-file limit of at least {} (ulimit -n), have {limit}",
        STALLED + 200
    );
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let p = Predictor::start(
        &dir.uri(),
        &[
            ("REQUEST_TIMEOUT_SECONDS", &TIMEOUT_S.to_string()),
            ("SHUTDOWN_DRAIN_SECONDS", "0"),
        ],
    );
    let addr = p.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let rss_before = rss_kib(p.child.id(), "VmRSS:");
    let (trickled, latencies, window, rss_stalled, metrics_stalled) = rt.block_on(async {
        let sent = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..STALLED)
            .map(|_| tokio::spawn(trickle(addr, sent.clone())))
            .collect();
        // Every stalled connection has sent its headers (deadline 20 s).
        let all_sent = loop {
            if sent.load(Ordering::SeqCst) == STALLED {
                break Instant::now();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "only {} of {STALLED} connections sent their headers within 20 s",
                sent.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Normal traffic while all of them are stalled: 2 keep-alive clients for 2.5 s,
        // ending early enough that no stalled connection can have timed out yet (none
        // was accepted before `started`), leaving 1.5 s for the /metrics read below.
        let until = (all_sent + Duration::from_millis(2500))
            .min(started + Duration::from_millis(TIMEOUT_S * 1000 - 1500));
        assert!(
            until > all_sent + Duration::from_millis(1000),
            "sending 1000 headers took {:?}; less than 1 s of load would overlap the stall",
            all_sent - started
        );
        let clients: Vec<_> = (0..2)
            .map(|_| tokio::spawn(normal_client(addr, until)))
            .collect();
        let mut latencies = Vec::new();
        for c in clients {
            match c.await {
                Ok(Ok(l)) => latencies.extend(l),
                Ok(Err(e)) => panic!("normal client: {e}"),
                Err(e) => panic!("normal client task: {e}"),
            }
        }
        let rss_stalled = rss_kib(p.child.id(), "VmRSS:");
        let metrics = tokio::task::spawn_blocking(move || {
            common::request(addr, "GET", "/metrics", &[], b"").text()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let window_end = Instant::now();
        let mut trickled = Vec::new();
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(60), t).await {
                Ok(Ok(Ok(r))) => trickled.push(r),
                Ok(Ok(Err(e))) => panic!("trickling connection: {e}"),
                Ok(Err(e)) => panic!("trickle task: {e}"),
                Err(_) => panic!("a trickling connection was still open 60 s later"),
            }
        }
        (trickled, latencies, window_end, rss_stalled, metrics)
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let p50 = percentile(&sorted, 0.50);
    let p99 = percentile(&sorted, 0.99);
    let max = sorted.last().copied().unwrap_or_default();
    let with_408 = trickled.iter().filter(|t| t.status == Some(408)).count();
    let earliest = trickled
        .iter()
        .map(|t| t.closed_after)
        .min()
        .unwrap_or_default();
    let latest = trickled
        .iter()
        .map(|t| t.closed_after)
        .max()
        .unwrap_or_default();
    eprintln!(
        "trickle: {STALLED} stalled connections; normal /predict: {} requests, p50 {p50:?}, p99 {p99:?}, max {max:?} \
         ; stalled connections closed after {earliest:?}..{latest:?}, \
         {with_408} of them with a 408; predictor RSS {rss_before} KiB before, {rss_stalled} KiB while stalled",
        latencies.len()
    );
    assert!(
        latencies.len() >= 100,
        "only {} normal requests while the connections were stalled",
        latencies.len()
    );
    let first_close = trickled.iter().map(|t| t.closed_at).min();
    assert!(
        first_close.is_some_and(|c| c > window),
        "a stalled connection closed before the measurement window ended; the load did not overlap it"
    );
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?} > 100 ms");
    assert_eq!(trickled.len(), STALLED);
    // Closed by the request timeout: not before it, and not long after it.
    assert!(
        earliest >= Duration::from_millis(TIMEOUT_S * 1000 - 300),
        "a stalled connection was closed after {earliest:?}, before the {TIMEOUT_S} s timeout"
    );
    assert!(
        latest <= Duration::from_secs(TIMEOUT_S + 10),
        "a stalled connection stayed open {latest:?}"
    );
    assert!(
        with_408 * 100 >= STALLED * 99,
        "only {with_408} of {STALLED} stalled connections got their 408 before the close"
    );
    let gauge = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let open_while_stalled = gauge(&metrics_stalled, "predictor_open_connections ");
    assert!(
        open_while_stalled > STALLED as u64,
        "predictor_open_connections was {open_while_stalled} while {STALLED} were stalled"
    );
    let after = p.get("/metrics").text();
    assert_eq!(
        gauge(
            &after,
            r#"predictor_requests_total{code="408",route="predict"} "#
        ),
        STALLED as u64
    );
    // The predictor serves normally afterwards.
    assert_eq!(p.post_json("/predict", ROW).status, 200);
}

#[test]
fn the_connection_cap_holds_back_new_connections_and_idle_ones_time_out() {
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let p = Predictor::start(
        &dir.uri(),
        &[
            ("MAX_CONNECTIONS", "3"),
            ("HEADER_TIMEOUT_SECONDS", "2"),
            ("SHUTDOWN_DRAIN_SECONDS", "0"),
        ],
    );
    let json = [("content-type", "application/json".to_string())];
    let mut open: Vec<KeepAlive> = (0..3).map(|_| KeepAlive::connect(p.addr)).collect();
    for c in &mut open {
        let r = c
            .send("/predict", &json, ROW.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200);
    }
    // A fourth connection is not served while three are open.
    let mut fourth = KeepAlive::connect(p.addr);
    fourth
        .stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap_or_else(|e| panic!("{e}"));
    let early = fourth.send("/predict", &json, ROW.as_bytes());
    assert!(
        early.is_err(),
        "the fourth connection was served past MAX_CONNECTIONS=3"
    );
    // Closing one lets it through.
    drop(open.pop());
    fourth
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = fourth
        .read_reply()
        .unwrap_or_else(|e| panic!("after a slot freed: {e}"));
    assert_eq!(r.status, 200);
    // Idle keep-alive connections are closed after HEADER_TIMEOUT_SECONDS (2 s), which frees
    // their slots: poll for the close with a deadline.
    let idle = &mut open[0];
    idle.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut b = [0u8; 1];
    let n = idle.stream.read(&mut b);
    let waited = t.elapsed();
    assert!(
        matches!(n, Ok(0) | Err(_)) && waited < Duration::from_secs(6),
        "idle connection: {n:?} after {waited:?}"
    );
}

// ---- generated requests -----------------------------------------------------------------

const DATATYPES: [&str; 14] = [
    "FP64", "FP32", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "BOOL", "FP16", "BYTES", "fp64",
];

fn dtype_size(dt: &str) -> usize {
    match dt {
        "INT8" | "UINT8" | "BOOL" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        _ => 8,
    }
}

fn arb_number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (-1e4f64..1e4).prop_map(|v| format!("{v}")),
        2 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:e}")),
        1 => prop_oneof![
            Just("1e400".to_string()),
            Just("-0".to_string()),
            Just("NaN".to_string()),
            Just("\"1\"".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("1.".to_string()),
            Just("01".to_string()),
            Just("18446744073709551616".to_string()),
        ],
    ]
}

fn arb_feature() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(WINE_FEATURES.to_vec()).prop_map(str::to_string),
        1 => "[A-Za-z _]{0,12}",
    ]
}

fn arb_object_row() -> impl Strategy<Value = String> {
    proptest::collection::vec((arb_feature(), arb_number()), 0..14).prop_map(|kv| {
        let fields: Vec<String> = kv
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

fn arb_array_row() -> impl Strategy<Value = String> {
    proptest::collection::vec(arb_number(), 0..14).prop_map(|v| format!("[{}]", v.join(",")))
}

fn arb_predict_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_object_row(),
        proptest::collection::vec(arb_object_row(), 0..5)
            .prop_map(|rows| format!("[{}]", rows.join(","))),
    ]
    .prop_map(String::into_bytes)
}

fn arb_v1_body() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(prop_oneof![arb_array_row(), arb_object_row()], 0..5),
        prop_oneof![Just("instances"), Just("inputs"), Just("instance")],
    )
        .prop_map(|(rows, key)| format!(r#"{{"{key}":[{}]}}"#, rows.join(",")).into_bytes())
}

fn arb_shape() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..6).prop_map(|n| format!("[{n},11]")),
        1 => proptest::collection::vec(prop_oneof![0i64..20, Just(-1), Just(i64::MAX)], 0..4)
            .prop_map(|v| format!("{v:?}")),
    ]
}

fn arb_outputs() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(r#","outputs":[]"#.to_string()),
        Just(r#","outputs":[{"name":"label"}]"#.to_string()),
        Just(r#","outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]"#.to_string()),
        Just(r#","outputs":[{"name":"label","parameters":{"binary_data":true}},{"name":"probabilities"}]"#.to_string()),
        Just(r#","outputs":[{"name":"nope"}]"#.to_string()),
        Just(r#","parameters":{"binary_data_output":true}"#.to_string()),
        Just(r#","parameters":{"binary_data_output":1}"#.to_string()),
    ]
}

/// A v2 request as JSON, as headers + body.
fn arb_v2_json() -> impl Strategy<Value = (Option<String>, Vec<u8>)> {
    (
        arb_shape(),
        proptest::sample::select(DATATYPES.to_vec()),
        prop_oneof![
            arb_array_row(),
            proptest::collection::vec(arb_array_row(), 0..5)
                .prop_map(|r| format!("[{}]", r.join(","))),
            Just("[true,false]".to_string()),
        ],
        arb_outputs(),
    )
        .prop_map(|(shape, dt, data, outputs)| {
            (
                None,
                format!(
                    r#"{{"id":"f","inputs":[{{"name":"input-0","shape":{shape},"datatype":"{dt}","data":{data}}}]{outputs}}}"#
                )
                .into_bytes(),
            )
        })
}

/// A v2 request in binary framing: sizes, lengths and bytes usually right, sometimes not.
fn arb_v2_binary() -> impl Strategy<Value = (Option<String>, Vec<u8>)> {
    (
        0u64..6,
        proptest::sample::select(DATATYPES.to_vec()),
        prop_oneof![4 => Just(0i64), 1 => -9i64..9],
        prop_oneof![4 => Just(0i64), 1 => -9i64..9],
        prop_oneof![
            6 => Just(None),
            1 => Just(Some("x".to_string())),
            1 => Just(Some("".to_string())),
            1 => (0u64..100_000).prop_map(|n| Some(n.to_string())),
            1 => Just(Some("18446744073709551616".to_string())),
        ],
        arb_outputs(),
        any::<u64>(),
    )
        .prop_map(|(rows, dt, size_off, bytes_off, header_override, outputs, seed)| {
            let right = (rows as usize) * 11 * dtype_size(dt);
            let declared = (right as i64 + size_off).max(0);
            let header = format!(
                r#"{{"inputs":[{{"name":"input-0","shape":[{rows},11],"datatype":"{dt}","parameters":{{"binary_data_size":{declared}}}}}]{outputs}}}"#
            );
            let n = (right as i64 + bytes_off).max(0) as usize;
            // Deterministic bytes from the seed; BOOL mostly 0/1, the rest anything
            // (including NaN and infinite floats).
            let mut x = seed | 1;
            let mut bin = Vec::with_capacity(n);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bin.push(if dt == "BOOL" && x % 8 != 0 { (x & 1) as u8 } else { x as u8 });
            }
            let len = header_override.unwrap_or_else(|| header.len().to_string());
            let mut body = header.into_bytes();
            body.extend_from_slice(&bin);
            (Some(len), body)
        })
}

fn arb_noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[\\[\\]{}\",:0-9a-z_. eE+-]{0,300}".prop_map(String::into_bytes),
    ]
}

/// (path, content type, Inference-Header-Content-Length, body)
type Generated = (&'static str, Option<&'static str>, Option<String>, Vec<u8>);

fn arb_request() -> impl Strategy<Value = Generated> {
    let content_type = prop_oneof![
        4 => Just(Some("application/json")),
        2 => Just(None),
        1 => Just(Some("application/octet-stream")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/json; charset=utf-8")),
    ];
    let shaped = prop_oneof![
        3 => arb_predict_body().prop_map(|b| ("/predict", None, b)),
        3 => arb_v1_body().prop_map(|b| ("/v1/models/wine:predict", None, b)),
        3 => arb_v2_json().prop_map(|(h, b)| ("/v2/models/wine/infer", h, b)),
        4 => arb_v2_binary().prop_map(|(h, b)| ("/v2/models/wine/infer", h, b)),
        2 => (
            proptest::sample::select(vec![
                "/predict",
                "/v1/models/wine:predict",
                "/v2/models/wine/infer",
                "/v2/models/wine/versions/v7/infer",
            ]),
            arb_noise()
        )
            .prop_map(|(p, b)| (p, None, b)),
    ];
    // Sometimes cut the body short or flip a byte: near-misses reach deeper than noise.
    let mutation = prop_oneof![
        6 => Just(None),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(Some),
    ];
    (shaped, content_type, mutation, any::<bool>()).prop_map(
        |((path, header_len, mut body), ct, mutation, truncate)| {
            if let Some((at, byte)) = mutation
                && !body.is_empty()
            {
                let i = at.index(body.len());
                if truncate {
                    body.truncate(i);
                } else {
                    body[i] = byte;
                }
            }
            (path, ct, header_len, body)
        },
    )
}

#[test]
fn generated_requests_on_keep_alive_connections_never_5xx_or_drop() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25_000;
    let dir = ModelDir::new(MODEL_VERSION, Some(0.8));
    let mut p = Predictor::start(&dir.uri(), &[("SHUTDOWN_DRAIN_SECONDS", "0")]);
    let addr = p.addr;
    let started = Instant::now();
    let results: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || -> Result<[usize; 6], String> {
                let mut runner = TestRunner::new_with_rng(
                    Config::default(),
                    TestRng::from_seed(RngAlgorithm::ChaCha, &[t as u8 + 1; 32]),
                );
                let strategy = arb_request();
                let mut conn = KeepAlive::connect(addr);
                // counts of 2xx, 400, 413/415, 404/405, 422, other 4xx
                let mut counts = [0usize; 6];
                for i in 0..PER_THREAD {
                    let (path, ct, header_len, body) = strategy
                        .new_tree(&mut runner)
                        .map_err(|e| format!("generate: {e}"))?
                        .current();
                    let mut headers = Vec::new();
                    if let Some(ct) = ct {
                        headers.push(("content-type", ct.to_string()));
                    }
                    if let Some(h) = &header_len {
                        headers.push(("inference-header-content-length", h.clone()));
                    }
                    let what = || {
                        format!(
                            "request {i} on thread {t}: POST {path} {headers:?} body {:?}",
                            String::from_utf8_lossy(&body[..body.len().min(400)])
                        )
                    };
                    let r = conn
                        .send(path, &headers, &body)
                        .map_err(|e| format!("{e}: {}", what()))?;
                    if r.status >= 500 {
                        return Err(format!(
                            "{} -> {}: {}",
                            what(),
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ));
                    }
                    if r.close {
                        return Err(format!(
                            "{} -> the server closed the connection ({})",
                            what(),
                            r.status
                        ));
                    }
                    if !r.has_version {
                        return Err(format!("{} -> no x-model-version", what()));
                    }
                    let slot = match r.status {
                        200..=299 => 0,
                        400 => 1,
                        413 | 415 => 2,
                        404 | 405 => 3,
                        422 => 4,
                        _ => 5,
                    };
                    counts[slot] += 1;
                }
                Ok(counts)
            })
        })
        .collect();
    let mut total = [0usize; 6];
    for r in results {
        match r.join() {
            Ok(Ok(c)) => total.iter_mut().zip(c).for_each(|(t, c)| *t += c),
            Ok(Err(e)) => panic!("{e}\npredictor log tail:\n{}", p.log_text()),
            Err(_) => panic!("a client thread panicked"),
        }
    }
    let n: usize = total.iter().sum();
    eprintln!(
        "generated requests: {n} in {:?} on {THREADS} keep-alive connections; 2xx {}, 400 {}, 413/415 {}, 404/405 {}, 422 {}, other 4xx {}; 0 5xx, 0 dropped connections",
        started.elapsed(),
        total[0],
        total[1],
        total[2],
        total[3],
        total[4],
        total[5]
    );
    assert_eq!(n, THREADS * PER_THREAD);
    assert!(n >= 100_000);
    // The generator reaches every kind of outcome, so the count is not 100,000 copies of
    // one refusal.
    for (i, what) in ["2xx", "400", "413/415", "", "422"].iter().enumerate() {
        if !what.is_empty() {
            assert!(
                total[i] >= 1000,
                "only {} {what} responses: {total:?}",
                total[i]
            );
        }
    }
    // Still alive and answering after all of it.
    assert_eq!(p.post_json("/predict", ROW).status, 200);
    assert!(
        p.child.try_wait().ok().flatten().is_none(),
        "the predictor exited"
    );
}
