//! Shadow mirroring: a share of the successful prediction requests is sent again, after the
//! caller has its answer computed, to a challenger (`SHADOW_URL`), and the challenger's
//! predicted classes are compared with the champion's row by row.
//!
//! The request path only decides whether to mirror (one relaxed atomic add), copies the
//! champion's classes, and `try_send`s into a bounded queue: a full queue counts the request
//! `dropped` and moves on, so mirroring never delays or fails the caller's answer. A fixed pool
//! of `SHADOW_CONCURRENCY` tasks empties the queue with hyper's pooled client, on a thread of
//! its own at the lowest CPU priority (nice 19), so the mirroring client never takes CPU the
//! serving threads want: a busy pod mirrors less (drops more) rather than answer later.
//!
//! Metrics (on the mirroring pod): `predictor_shadow_requests_total{result}` with result
//! `agree` (every row's class is the champion's), `disagree`, `error` (transport error,
//! timeout, non-2xx or an answer that cannot be read) and `dropped`;
//! `predictor_shadow_duration_seconds`, the challenger's answer time as this client saw it
//! (every answer, any status, and a timeout as the timeout; not a refused connection).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};

use crate::config::ShadowConfig;
use crate::model::ServedModel;
use crate::parse::{V2_LABEL_OUTPUT, V2_PROBA_OUTPUT};
use crate::routes::Route;
use crate::server::INFERENCE_HEADER_CONTENT_LENGTH;

/// The largest challenger answer read; a bigger one is an `error`.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The shadow series; registered by [`crate::metrics::Metrics`] on every pod, so that all four
/// results exist (at 0) from the start whether or not this pod mirrors.
#[derive(Clone)]
pub struct ShadowMetrics {
    pub agree: IntCounter,
    pub disagree: IntCounter,
    pub error: IntCounter,
    pub dropped: IntCounter,
    pub duration: Histogram,
}

impl ShadowMetrics {
    pub fn register(registry: &Registry, buckets: &[f64]) -> Result<Self, prometheus::Error> {
        let results = IntCounterVec::new(
            Opts::new(
                "predictor_shadow_requests_total",
                "Requests mirrored to the shadow challenger, by result: agree, disagree (a row's class differs), error (transport, timeout, non-2xx, unreadable answer), dropped (the bounded queue was full).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(results.clone()))?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "predictor_shadow_duration_seconds",
                "The shadow challenger's answer time as the mirroring client saw it.",
            )
            .buckets(buckets.to_vec()),
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(ShadowMetrics {
            agree: results.with_label_values(&["agree"]),
            disagree: results.with_label_values(&["disagree"]),
            error: results.with_label_values(&["error"]),
            dropped: results.with_label_values(&["dropped"]),
            duration,
        })
    }
}

/// Picks `basis_points` of every 10 000 requests, evenly spaced, with one relaxed atomic add.
struct Selector {
    basis_points: u64,
    seen: AtomicU64,
}

impl Selector {
    fn new(percent: f64) -> Self {
        Selector {
            basis_points: (percent.clamp(0.0, 100.0) * 100.0).round() as u64,
            seen: AtomicU64::new(0),
        }
    }

    fn select(&self) -> bool {
        match self.basis_points {
            0 => false,
            10_000 => true,
            bp => {
                let n = self.seen.fetch_add(1, Ordering::Relaxed) % 10_000;
                (n + 1) * bp / 10_000 != n * bp / 10_000
            }
        }
    }
}

/// One mirrored request: what to send again and what the champion answered.
struct Mirror {
    route: Route,
    path: PathAndQuery,
    content_type: Option<HeaderValue>,
    inference_header_len: Option<HeaderValue>,
    body: Bytes,
    classes: Vec<u32>,
}

/// The request side of mirroring; [`Shadow::offer`] is all the request path calls.
pub struct Shadow {
    tx: mpsc::Sender<Mirror>,
    selector: Selector,
    dropped: IntCounter,
}

/// What the workers share.
struct Worker {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: Authority,
    timeout: Duration,
    class_labels: Vec<String>,
    metrics: ShadowMetrics,
}

impl Shadow {
    /// Starts the mirroring thread: its own single-threaded runtime running `concurrency`
    /// worker tasks, at the lowest CPU priority (nice 19), so that when the pod's CPU is busy
    /// the serving threads always win it: the shadow then falls behind and its queue drops,
    /// instead of the caller's answer waiting.
    pub fn start(
        config: &ShadowConfig,
        model: &ServedModel,
        metrics: ShadowMetrics,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let dropped = metrics.dropped.clone();
        let settings = (
            config.authority.clone(),
            config.timeout,
            config.concurrency.max(1),
            model.meta.class_labels.clone(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("shadow".to_string())
            .spawn(move || {
                lower_this_threads_priority();
                let (authority, timeout, concurrency, class_labels) = settings;
                runtime.block_on(async move {
                    let mut connector = HttpConnector::new();
                    connector.set_nodelay(true);
                    connector.set_connect_timeout(Some(timeout));
                    let client = Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .pool_idle_timeout(Duration::from_secs(30))
                        .pool_max_idle_per_host(concurrency)
                        .build(connector);
                    let worker = Arc::new(Worker {
                        client,
                        authority,
                        timeout,
                        class_labels,
                        metrics,
                    });
                    let rx = Arc::new(Mutex::new(rx));
                    let tasks: Vec<_> = (0..concurrency)
                        .map(|_| tokio::spawn(run_worker(rx.clone(), worker.clone())))
                        .collect();
                    // The workers end when every sender is gone (the process is stopping).
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })?;
        Ok(Shadow {
            tx,
            selector: Selector::new(config.percent),
            dropped,
        })
    }

    /// Called after the champion answered `route` successfully: mirrors the request when it is
    /// selected and the queue has room (else counts it `dropped`). `classes` yields the
    /// champion's class per row; it is called only for a selected request. Never waits.
    pub fn offer(
        &self,
        route: Route,
        req: &http::request::Parts,
        body: &Bytes,
        classes: impl FnOnce() -> Vec<u32>,
    ) {
        if !self.selector.select() {
            return;
        }
        let path = req
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mirror = Mirror {
            route,
            path,
            content_type: req.headers.get(CONTENT_TYPE).cloned(),
            inference_header_len: req.headers.get(&INFERENCE_HEADER_CONTENT_LENGTH).cloned(),
            body: body.clone(),
            classes: classes(),
        };
        if self.tx.try_send(mirror).is_err() {
            self.dropped.inc();
        }
    }
}

/// nice 19 for the calling thread only (Linux: a thread id is a valid `PRIO_PROCESS` target);
/// best effort.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only changes this thread's niceness.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower the shadow thread's priority"
            );
        }
    }
}

async fn run_worker(rx: Arc<Mutex<mpsc::Receiver<Mirror>>>, worker: Arc<Worker>) {
    loop {
        // The lock is held only by idle workers waiting for the next item.
        let next = rx.lock().await.recv().await;
        let Some(mirror) = next else { return };
        let m = &worker.metrics;
        match worker.mirror(&mirror).await {
            Ok(true) => m.agree.inc(),
            Ok(false) => m.disagree.inc(),
            Err(e) => {
                tracing::debug!(error = %e, route = mirror.route.label(), "shadow request failed");
                m.error.inc();
            }
        }
    }
}

impl Worker {
    /// Sends the request to the challenger; whether every row's class agrees.
    async fn mirror(&self, mirror: &Mirror) -> Result<bool, String> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(challenger_path(&mirror.path)?)
            .build()
            .map_err(|e| format!("building the shadow URI: {e}"))?;
        let mut builder = Request::builder().method(Method::POST).uri(uri);
        if let Some(ct) = &mirror.content_type {
            builder = builder.header(CONTENT_TYPE, ct.clone());
        }
        if let Some(len) = &mirror.inference_header_len {
            builder = builder.header(&INFERENCE_HEADER_CONTENT_LENGTH, len.clone());
        }
        let request = builder
            .body(Full::new(mirror.body.clone()))
            .map_err(|e| format!("building the shadow request: {e}"))?;
        let start = Instant::now();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Transport(format!("{e:?}")))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Answer(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Failure>((parts, body))
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        let (parts, body) = match outcome {
            Err(_) => {
                self.metrics.duration.observe(self.timeout.as_secs_f64());
                return Err(format!("no answer within {} s", self.timeout.as_secs_f64()));
            }
            Ok(Err(Failure::Transport(e))) => return Err(e),
            Ok(Err(Failure::Answer(e))) => {
                self.metrics.duration.observe(start.elapsed().as_secs_f64());
                return Err(e);
            }
            Ok(Ok(answer)) => answer,
        };
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        if !parts.status.is_success() {
            return Err(format!("the challenger answered {}", parts.status));
        }
        let header_len = match parts.headers.get(&INFERENCE_HEADER_CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .ok_or("an Inference-Header-Content-Length that is not a byte count")?,
            ),
        };
        let labels = answer_labels(mirror.route, &body, header_len, &self.class_labels)?;
        agrees(&mirror.classes, &self.class_labels, &labels)
    }
}

/// The path to send the challenger: the caller's, except that a v2 path naming the champion's
/// version (`/v2/models/{name}/versions/{v}/infer`) loses the version, since the challenger
/// serves another one.
fn challenger_path(path: &PathAndQuery) -> Result<PathAndQuery, String> {
    let p = path.path();
    let Some(rest) = p.strip_prefix("/v2/models/") else {
        return Ok(path.clone());
    };
    let mut parts = rest.split('/');
    let (Some(name), Some("versions"), Some(_), Some("infer"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Ok(path.clone());
    };
    let unversioned = match path.query() {
        Some(q) => format!("/v2/models/{name}/infer?{q}"),
        None => format!("/v2/models/{name}/infer"),
    };
    unversioned
        .parse()
        .map_err(|e| format!("rewriting the path {p:?} for the challenger: {e}"))
}

enum Failure {
    /// No answer (refused, reset): no duration is observed.
    Transport(String),
    /// An answer whose body could not be read.
    Answer(String),
}

/// Whether the challenger's label of every row is the champion's.
fn agrees(
    champion: &[u32],
    class_labels: &[String],
    challenger: &[Cow<str>],
) -> Result<bool, String> {
    if champion.len() != challenger.len() {
        return Err(format!(
            "the challenger answered {} rows, the champion {}",
            challenger.len(),
            champion.len()
        ));
    }
    Ok(champion.iter().zip(challenger).all(|(k, theirs)| {
        class_labels
            .get(*k as usize)
            .is_some_and(|ours| ours == theirs)
    }))
}

#[derive(Deserialize)]
struct Labelled<'a> {
    #[serde(borrow)]
    label: Cow<'a, str>,
}

#[derive(Deserialize)]
struct V1Answer<'a> {
    #[serde(borrow)]
    predictions: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct V2Answer<'a> {
    #[serde(borrow)]
    outputs: Vec<V2Output<'a>>,
}

#[derive(Deserialize)]
struct V2Output<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    shape: Vec<u64>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    parameters: Option<V2OutputParameters>,
}

#[derive(Deserialize)]
struct V2OutputParameters {
    #[serde(default)]
    binary_data_size: Option<usize>,
}

/// The predicted label of each row in a challenger's answer to `route`, read the way the
/// predictor writes it (render.rs): `/predict` an object or a list of objects with `label`,
/// v1 `predictions`, v2 the `label` output (JSON or binary BYTES) or, when only the
/// `probabilities` output was asked, the most probable of `class_labels` per row.
fn answer_labels<'a>(
    route: Route,
    body: &'a [u8],
    header_len: Option<usize>,
    class_labels: &'a [String],
) -> Result<Vec<Cow<'a, str>>, String> {
    let json_err = |e: serde_json::Error| format!("the challenger's answer is not readable: {e}");
    match route {
        Route::Predict => {
            let list = body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'[');
            if list {
                let rows: Vec<Labelled> = serde_json::from_slice(body).map_err(json_err)?;
                Ok(rows.into_iter().map(|r| r.label).collect())
            } else {
                let row: Labelled = serde_json::from_slice(body).map_err(json_err)?;
                Ok(vec![row.label])
            }
        }
        Route::V1Predict => {
            let answer: V1Answer = serde_json::from_slice(body).map_err(json_err)?;
            Ok(answer.predictions)
        }
        Route::V2Infer => v2_labels(body, header_len, class_labels),
        other => Err(format!("route {} is not mirrored", other.label())),
    }
}

fn v2_labels<'a>(
    body: &'a [u8],
    header_len: Option<usize>,
    class_labels: &'a [String],
) -> Result<Vec<Cow<'a, str>>, String> {
    let (header, binary) = match header_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(format!(
                "Inference-Header-Content-Length {n} is beyond the answer's {} bytes",
                body.len()
            ));
        }
        None => (body, &[][..]),
    };
    let answer: V2Answer = serde_json::from_slice(header)
        .map_err(|e| format!("the challenger's v2 answer is not readable: {e}"))?;
    // Binary outputs follow the JSON header in the order of the outputs.
    let mut offset = 0usize;
    let mut probabilities = None;
    for output in &answer.outputs {
        let bin = match output.parameters.as_ref().and_then(|p| p.binary_data_size) {
            Some(size) => {
                let end = offset
                    .checked_add(size)
                    .filter(|end| *end <= binary.len())
                    .ok_or("binary output sizes beyond the answer")?;
                let slice = &binary[offset..end];
                offset = end;
                Some(slice)
            }
            None => None,
        };
        if output.name == V2_LABEL_OUTPUT {
            return match (bin, output.data) {
                (Some(bytes), _) => binary_labels(bytes),
                (None, Some(data)) => serde_json::from_str::<Vec<Cow<'a, str>>>(data.get())
                    .map_err(|e| format!("the label output is not a list of labels: {e}")),
                (None, None) => Err("the label output has no data".to_string()),
            };
        }
        if output.name == V2_PROBA_OUTPUT {
            probabilities = Some((bin, output.data, output.shape.clone()));
        }
    }
    let Some((bin, data, shape)) = probabilities else {
        return Err("the v2 answer has neither a label nor a probabilities output".to_string());
    };
    let values: Vec<f64> = match (bin, data) {
        (Some(bytes), _) if bytes.len().is_multiple_of(8) => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        (Some(_), _) => return Err("binary probabilities are not whole FP64 values".to_string()),
        (None, Some(data)) => serde_json::from_str(data.get())
            .map_err(|e| format!("the probabilities output is not a list of numbers: {e}"))?,
        (None, None) => return Err("the probabilities output has no data".to_string()),
    };
    let c = class_labels.len();
    if shape.get(1).copied() != Some(c as u64) || c == 0 || !values.len().is_multiple_of(c) {
        return Err(format!(
            "the probabilities output has shape {shape:?}; expected [rows, {c}] for this model's classes"
        ));
    }
    Ok(values
        .chunks_exact(c)
        .map(|row| {
            // The first of equal maxima, as the model's own argmax.
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, p)| if *p > row[best] { i } else { best });
            Cow::Borrowed(class_labels[best].as_str())
        })
        .collect())
}

/// BYTES tensor data: a 4-byte little-endian length, then that many UTF-8 bytes, per element.
fn binary_labels(mut bytes: &[u8]) -> Result<Vec<Cow<'_, str>>, String> {
    let mut labels = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("a binary label is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err("a binary label is cut short".to_string());
        }
        let (label, rest) = rest.split_at(len);
        labels.push(Cow::Borrowed(
            std::str::from_utf8(label).map_err(|_| "a binary label is not UTF-8")?,
        ));
        bytes = rest;
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;
    use crate::parse::V2Outputs;
    use crate::render;

    fn labels() -> Vec<String> {
        vec!["bad".to_string(), "good".to_string()]
    }

    #[test]
    fn the_selector_picks_the_asked_share_evenly() {
        for (percent, per_10000) in [
            (0.0, 0),
            (100.0, 10_000),
            (12.5, 1250),
            (50.0, 5000),
            (0.01, 1),
        ] {
            let s = Selector::new(percent);
            let picked = (0..10_000).filter(|_| s.select()).count();
            assert_eq!(picked, per_10000, "{percent} %");
        }
        // Evenly spaced: 50 % picks every other request.
        let s = Selector::new(50.0);
        let picks: Vec<bool> = (0..6).map(|_| s.select()).collect();
        assert_eq!(picks, [false, true, false, true, false, true]);
    }

    #[test]
    fn reads_every_answer_the_predictor_writes() {
        let m = sum_model();
        let l = labels();
        let proba = [0.9, 0.1, 0.25, 0.75];
        let one = render::predict(&m, crate::parse::PredictShape::Single, &[1], &proba[2..]);
        assert_eq!(
            answer_labels(Route::Predict, &one, None, &l).unwrap(),
            ["good"]
        );
        let list = render::predict(&m, crate::parse::PredictShape::List, &[0, 1], &proba);
        assert_eq!(
            answer_labels(Route::Predict, &list, None, &l).unwrap(),
            ["bad", "good"]
        );
        let v1 = render::v1_predict(&m, &[1, 0]);
        assert_eq!(
            answer_labels(Route::V1Predict, &v1, None, &l).unwrap(),
            ["good", "bad"]
        );
        let (v2, len) = render::v2_infer(&m, Some("x"), V2Outputs::ALL_JSON, &[0, 1], &proba);
        assert_eq!(
            answer_labels(Route::V2Infer, &v2, len, &l).unwrap(),
            ["bad", "good"]
        );
        // Every binary combination, and probabilities alone (the argmax is the label).
        for (label, label_binary, probabilities, probabilities_binary) in [
            (true, true, true, true),
            (true, false, true, true),
            (true, true, true, false),
            (false, false, true, true),
            (false, false, true, false),
            (true, true, false, false),
        ] {
            let outputs = V2Outputs {
                label,
                label_binary,
                probabilities,
                probabilities_binary,
            };
            let (body, len) = render::v2_infer(&m, None, outputs, &[0, 1], &proba);
            assert_eq!(
                answer_labels(Route::V2Infer, &body, len, &l).unwrap(),
                ["bad", "good"],
                "{label} {label_binary} {probabilities} {probabilities_binary}"
            );
        }
    }

    #[test]
    fn unreadable_answers_are_errors_naming_the_problem() {
        let l = labels();
        for (route, body, len, needle) in [
            (Route::Predict, &b"{\"error\":\"x\"}"[..], None, "not readable"),
            (Route::Predict, b"<html>", None, "not readable"),
            (Route::V1Predict, b"{\"predictions\":[1]}", None, "not readable"),
            (Route::V2Infer, b"{\"outputs\":[]}", None, "neither a label"),
            (Route::V2Infer, b"{\"outputs\":[]}", Some(99), "beyond"),
            (
                Route::V2Infer,
                b"{\"outputs\":[{\"name\":\"probabilities\",\"shape\":[1,3],\"data\":[0.1,0.2,0.7]}]}",
                None,
                "expected [rows, 2]",
            ),
        ] {
            let e = answer_labels(route, body, len, &l).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        // A binary size beyond the bytes that follow the header.
        let header = br#"{"outputs":[{"name":"label","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(b"\x02\0\0\0go");
        let e = answer_labels(Route::V2Infer, &body, Some(header.len()), &l).unwrap_err();
        assert!(e.contains("beyond the answer"), "{e}");
        let cut = b"\x05\0\0\0go";
        assert!(binary_labels(cut).unwrap_err().contains("cut short"));
    }

    #[test]
    fn a_versioned_v2_path_reaches_the_challenger_without_the_version() {
        let path = |s: &'static str| challenger_path(&PathAndQuery::from_static(s)).unwrap();
        assert_eq!(
            path("/v2/models/wine/versions/v7/infer"),
            "/v2/models/wine/infer"
        );
        assert_eq!(
            path("/v2/models/wine/versions/v7/infer?x=1"),
            "/v2/models/wine/infer?x=1"
        );
        for same in [
            "/v2/models/wine/infer",
            "/predict",
            "/predict?a=b",
            "/v1/models/wine:predict",
        ] {
            assert_eq!(path(same), same);
        }
    }

    #[test]
    fn agreement_is_row_by_row_and_row_counts_must_match() {
        let l = labels();
        let theirs = |v: &[&'static str]| v.iter().map(|s| Cow::Borrowed(*s)).collect::<Vec<_>>();
        assert_eq!(agrees(&[0, 1], &l, &theirs(&["bad", "good"])), Ok(true));
        assert_eq!(agrees(&[0, 1], &l, &theirs(&["bad", "bad"])), Ok(false));
        assert_eq!(agrees(&[], &l, &theirs(&[])), Ok(true));
        assert!(
            agrees(&[0, 1], &l, &theirs(&["bad"]))
                .unwrap_err()
                .contains("1 rows")
        );
    }
}
