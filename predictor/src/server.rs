//! The HTTP side: one hyper `service_fn` over a shared [`AppState`], an accept loop, and the
//! graceful drain on shutdown.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::drift::{DriftSettings, DriftTracker};
use crate::feedback::{Feedback, FeedbackSettings};
use crate::metrics::Metrics;
use crate::model::ServedModel;
use crate::parse::{self, InputError, Scratch};
use crate::render;
use crate::routes::{Route, Target, match_path};

pub static X_MODEL_VERSION: HeaderName = HeaderName::from_static("x-model-version");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The binary tensor data extension of the Open Inference Protocol: the length of the JSON
/// inference header at the start of a body whose rest is raw tensor bytes.
pub static INFERENCE_HEADER_CONTENT_LENGTH: HeaderName =
    HeaderName::from_static("inference-header-content-length");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// Test-only fault injection: `PREDICT_FAULT_STATUS=<500..599>` makes every prediction
/// request answer that status (the live-analysis end-to-end tests set it on a canary
/// Deployment to play a challenger whose answers fail). Unset, or any other value: no fault.
/// Read once.
fn injected_fault() -> Option<StatusCode> {
    static FAULT: std::sync::OnceLock<Option<StatusCode>> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| {
        std::env::var("PREDICT_FAULT_STATUS")
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|c| (500..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
    })
}

/// What one client may cost the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// From the request headers being read to the body being complete; a slower body gets
    /// 408 and its connection is closed, so a stalled upload holds its buffer no longer.
    pub request_timeout: Duration,
    /// How long a connection may take to send request headers, and how long an idle
    /// keep-alive connection stays open waiting for the next request.
    pub header_timeout: Duration,
    /// Open connections at most; beyond it new connections wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
    /// After the drain delay the listener stays open until no connection has arrived for this
    /// long (bounded by the grace deadline), so a late proxy still reaches a live server.
    pub drain_quiet: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            drain_quiet: Duration::from_secs(1),
        }
    }
}

/// Everything a request handler reads; built once, shared by every connection.
pub struct AppState {
    pub model: ServedModel,
    pub metrics: Metrics,
    pub limits: Limits,
    draining: AtomicBool,
    next_request_id: AtomicU64,
    /// SHADOW_URL: mirrors successful prediction requests to a challenger.
    shadow: Option<crate::shadow::Shadow>,
    /// Live per-feature histograms; `None` without a drift reference or with DRIFT_TRACKING=off.
    pub drift: Option<DriftTracker>,
    /// Predicted classes by request id, for `POST /feedback`.
    pub feedback: Feedback,
    /// The first part of the request ids this process makes (distinct per process).
    id_prefix: u32,
}

impl AppState {
    pub fn new(model: ServedModel, metrics: Metrics, limits: Limits) -> Self {
        Self::with_live(
            model,
            metrics,
            limits,
            DriftSettings::default(),
            FeedbackSettings::default(),
        )
    }

    /// As [`AppState::new`], with the drift and feedback settings of the environment.
    pub fn with_live(
        model: ServedModel,
        metrics: Metrics,
        limits: Limits,
        drift: DriftSettings,
        feedback: FeedbackSettings,
    ) -> Self {
        metrics.set_ready(true);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        AppState {
            drift: DriftTracker::new(model.drift_reference.as_ref(), drift),
            feedback: Feedback::new(&model.meta.class_labels, feedback),
            id_prefix: nanos ^ std::process::id().rotate_left(16),
            model,
            metrics,
            limits,
            draining: AtomicBool::new(false),
            next_request_id: AtomicU64::new(1),
            shadow: None,
        }
    }

    /// Mirrors a share of the successful prediction requests (see `crate::shadow`).
    pub fn with_shadow(mut self, shadow: Option<crate::shadow::Shadow>) -> Self {
        self.shadow = shadow;
        self
    }

    /// The `/metrics` body: the registry's series, then drift and feedback.
    pub fn render_metrics(&self) -> Vec<u8> {
        let mut out = self.metrics.render();
        if let Some(drift) = &self.drift {
            drift.render_into(&mut out);
        }
        self.feedback.render_into(&mut out);
        out
    }

    /// Ready means: a verified model is loaded (an `AppState` only exists with one) and the
    /// process is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }

    /// Fails readiness at once so the endpoints controller stops sending new traffic, while
    /// requests already on their way are still served.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.set_ready(false);
    }
}

/// A refused request: status, message, and whether the message is about the input columns
/// (then the body lists the expected features).
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
    about_features: bool,
    allow: Option<&'static str>,
    /// Close the connection after the response (the rest of the body is not read).
    close: bool,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            about_features: false,
            allow: None,
            close: false,
        }
    }
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure {
            about_features: e.status == StatusCode::UNPROCESSABLE_ENTITY,
            status: e.status,
            message: e.message,
            allow: None,
            close: false,
        }
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    content_type: HeaderValue,
    /// Binary tensor data extension: the JSON inference header's length.
    inference_header_len: Option<usize>,
}

impl Reply {
    fn json(status: StatusCode, body: Vec<u8>) -> Self {
        Reply {
            status,
            body,
            content_type: JSON,
            inference_header_len: None,
        }
    }
}

/// Per-worker-thread buffers: parsing, scoring and rendering run without an await in between,
/// so a thread-local is never shared by two requests.
#[derive(Default)]
struct Work {
    scratch: Scratch,
    classes: Vec<u32>,
    per_class: Vec<u64>,
}

thread_local! {
    static WORK: RefCell<Work> = RefCell::new(Work::default());
}

fn with_work<R>(f: impl FnOnce(&mut Work) -> R) -> R {
    WORK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut w) => f(&mut w),
        // Unreachable (no re-entrancy), but a fresh buffer is always correct.
        Err(_) => f(&mut Work::default()),
    })
}

/// Serves one request. Never fails: every outcome, including a body that cannot be read, is
/// an HTTP response.
pub async fn handle<B>(
    state: Arc<AppState>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let _in_flight = state.metrics.request_started();
    let (parts, body) = req.into_parts();
    let target = match_path(parts.uri.path());
    let route = target.route;
    let seq = state.next_request_id.fetch_add(1, Ordering::Relaxed);
    // The caller's id when it is a valid one (feedback.rs), else one this process makes.
    let request_id = match parts.headers.get(&X_REQUEST_ID) {
        Some(id) if crate::feedback::valid_request_id(id.as_bytes()) => id.clone(),
        _ => HeaderValue::from_str(&format!("{:08x}-{seq:x}", state.id_prefix))
            .unwrap_or(HeaderValue::from_static("0")),
    };
    let rid = request_id.to_str().unwrap_or_default();
    let span = tracing::debug_span!(
        "request",
        request_id = rid,
        route = route.label(),
        method = %parts.method,
    );
    let mut body = Some(body);
    let outcome = dispatch(&state, target, &parts, &mut body, start, rid)
        .instrument(span)
        .await;
    // A body the route did not read (a refusal before reading it, or a GET with a body) is
    // read and discarded, within the same limits, so that the keep-alive connection survives
    // a refused request; only a body that cannot be drained closes the connection.
    let drained = match body {
        Some(unread) => drain_body(&state, &parts.headers, unread, start).await,
        None => true,
    };
    let model = &state.model;
    let (reply, allow, close) = match outcome {
        Ok(reply) => (reply, None, !drained),
        Err(f) => {
            if f.status.is_server_error() {
                tracing::error!(request_id = %rid, route = route.label(), status = f.status.as_u16(), error = %f.message, "request failed");
            } else {
                tracing::debug!(request_id = %rid, route = route.label(), status = f.status.as_u16(), error = %f.message, "request refused");
            }
            let mut message = f.message;
            if f.about_features {
                message.push_str("; ");
                message.push_str(&model.expected_features_text);
            }
            let body = render::error(Some(model), &message, route.is_v2(), f.about_features);
            (Reply::json(f.status, body), f.allow, f.close || !drained)
        }
    };
    let status = reply.status;
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, reply.content_type);
    headers.insert(X_MODEL_VERSION.clone(), model.version_header.clone());
    headers.insert(X_REQUEST_ID.clone(), request_id);
    if let Some(allow) = allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(len) = reply.inference_header_len {
        headers.insert(
            INFERENCE_HEADER_CONTENT_LENGTH.clone(),
            HeaderValue::from(len),
        );
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    state
        .metrics
        .observe_request(route, status.as_u16(), start.elapsed().as_secs_f64());
    Ok(resp)
}

async fn dispatch<B>(
    state: &AppState,
    target: Target<'_>,
    req: &http::request::Parts,
    body: &mut Option<B>,
    start: Instant,
    request_id: &str,
) -> Result<Reply, Failure>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let route = target.route;
    let model = &state.model;
    let Some(method) = route.method() else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "no route for {} {}; try POST /predict, POST /v1/models/{name}:predict or POST /v2/models/{name}/infer",
                req.method,
                req.uri.path(),
                name = model.meta.name
            ),
        ));
    };
    if req.method != method {
        let mut f = Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} {} is not allowed; use {method}",
                req.method,
                req.uri.path()
            ),
        );
        f.allow = Some(if method == Method::POST {
            "POST"
        } else {
            "GET"
        });
        return Err(f);
    }
    if let Some(name) = target.model_name
        && name != model.meta.name
    {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "model '{name}' is not served here; this predictor serves '{}'",
                model.meta.name
            ),
        ));
    }
    if let Some(version) = target.model_version
        && version != model.meta.version
    {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "model '{}' has no version '{version}' here; this predictor serves version '{}'",
                model.meta.name, model.meta.version
            ),
        ));
    }
    let ready = state.is_ready();
    let ready_status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(match route {
        Route::Healthz | Route::V2Live => {
            Reply::json(StatusCode::OK, render::flag(model, "live", true))
        }
        Route::Readyz | Route::V2Ready => {
            Reply::json(ready_status, render::flag(model, "ready", ready))
        }
        Route::V2Server => Reply::json(StatusCode::OK, render::v2_server_metadata()),
        Route::V2Model => Reply::json(StatusCode::OK, render::v2_model_metadata(model)),
        Route::V1Model | Route::V2ModelReady => {
            Reply::json(ready_status, render::model_ready(model, ready))
        }
        Route::Metrics => Reply {
            status: StatusCode::OK,
            body: state.render_metrics(),
            content_type: PROMETHEUS_TEXT,
            inference_header_len: None,
        },
        Route::Predict | Route::V1Predict | Route::V2Infer => {
            let header_len = if route == Route::V2Infer {
                inference_header_len(&req.headers)?
            } else {
                None
            };
            if let Some(status) = injected_fault() {
                return Err(Failure::new(
                    status,
                    "injected fault (PREDICT_FAULT_STATUS, for tests only)",
                ));
            }
            let deadline = start + state.limits.request_timeout;
            check_media_type(&req.headers, header_len.is_some())?;
            let Some(body) = body.take() else {
                return Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request body already consumed",
                ));
            };
            let body = read_body(state, &req.headers, body, deadline).await?;
            let (answer, inference_header_len) =
                predict(state, route, &body, header_len, request_id)?;
            if let Some(shadow) = &state.shadow {
                // No await since `predict`: this thread's buffers still hold its classes.
                shadow.offer(route, req, &body, || with_work(|w| w.classes.clone()));
            }
            let body = answer;
            Reply {
                inference_header_len,
                content_type: if inference_header_len.is_some() {
                    OCTET_STREAM
                } else {
                    JSON
                },
                ..Reply::json(StatusCode::OK, body)
            }
        }
        Route::Feedback => {
            let deadline = start + state.limits.request_timeout;
            let read = match (check_media_type(&req.headers, false), body.take()) {
                (Ok(()), Some(body)) => read_body(state, &req.headers, body, deadline).await,
                (Err(f), _) => Err(f),
                (Ok(()), None) => Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request body already consumed",
                )),
            };
            let body = read.inspect_err(|_| state.feedback.count_invalid())?;
            match state.feedback.receive(model, &body) {
                Ok(answer) => Reply::json(StatusCode::OK, answer),
                Err(refusal) => return Err(Failure::new(refusal.status, refusal.message)),
            }
        }
        Route::Unknown => {
            return Err(Failure::new(StatusCode::NOT_FOUND, "no such route"));
        }
    })
}

/// Reads and discards an unread request body within the body limit and the request timeout;
/// false when that is not possible (the connection must then close).
async fn drain_body<B>(state: &AppState, headers: &http::HeaderMap, body: B, start: Instant) -> bool
where
    B: hyper::body::Body<Data = Bytes>,
{
    if body.is_end_stream() {
        return true; // GET and other bodiless requests: nothing to read
    }
    let limit = state.limits.max_body_bytes as u64;
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(0) => return true,
            Some(n) if n <= limit => {}
            _ => return false,
        }
    }
    let deadline = start + state.limits.request_timeout;
    let drain = async {
        let mut body = std::pin::pin!(body);
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > limit {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout_at(deadline.into(), drain)
        .await
        .unwrap_or(false)
}

/// `Inference-Header-Content-Length`, when the client sent it: a byte count.
fn inference_header_len(headers: &http::HeaderMap) -> Result<Option<usize>, Failure> {
    let Some(value) = headers.get(&INFERENCE_HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    match value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        Some(len) => Ok(Some(len)),
        None => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Inference-Header-Content-Length is {:?}; expected the byte length of the JSON inference header",
                String::from_utf8_lossy(value.as_bytes())
            ),
        )),
    }
}

/// JSON, or nothing at all (older clients send no Content-Type); with the binary tensor
/// extension also application/octet-stream.
fn acceptable_media_type(value: &HeaderValue, binary: bool) -> bool {
    let Ok(s) = value.to_str() else { return false };
    let essence = s.split(';').next().unwrap_or_default().trim();
    if binary && essence.eq_ignore_ascii_case("application/octet-stream") {
        return true;
    }
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence.is_char_boundary(essence.len() - 5)
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json")
            && essence.contains('/'))
}

fn check_media_type(headers: &http::HeaderMap, binary: bool) -> Result<(), Failure> {
    if let Some(ct) = headers.get(CONTENT_TYPE)
        && !acceptable_media_type(ct, binary)
    {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported media type {:?}; send application/json (or no Content-Type{})",
                String::from_utf8_lossy(ct.as_bytes()),
                if binary {
                    ", or application/octet-stream with binary tensor data"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

async fn read_body<B>(
    state: &AppState,
    headers: &http::HeaderMap,
    body: B,
    deadline: Instant,
) -> Result<Bytes, Failure>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = state.limits.max_body_bytes;
    let too_large = || Failure {
        // The rest of the body is not read.
        close: true,
        ..Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    // Refuse early from the declared length; the Limited body below catches chunked bodies.
    if let Some(len) = headers.get(CONTENT_LENGTH)
        && let Some(len) = len.to_str().ok().and_then(|s| s.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let timeout = state.limits.request_timeout;
    let collected =
        tokio::time::timeout_at(deadline.into(), collect_body(Limited::new(body, limit)))
            .await
            .map_err(|_| Failure {
                close: true,
                ..Failure::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s; the connection is closed",
                        timeout.as_secs_f64()
                    ),
                )
            })?;
    match collected {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// The whole body as one `Bytes`. A body that arrives in one frame (a small request, the
/// common case) is handed over as it is, without the frame list `BodyExt::collect` allocates
/// per request; more frames are copied into one buffer.
async fn collect_body<B: hyper::body::Body<Data = Bytes>>(body: B) -> Result<Bytes, B::Error> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers carry nothing a prediction reads
        };
        if let Some(buf) = &mut joined {
            buf.extend_from_slice(&data);
        } else if let Some(previous) = first.take() {
            let mut buf = bytes::BytesMut::with_capacity(previous.len() + data.len());
            buf.extend_from_slice(&previous);
            buf.extend_from_slice(&data);
            joined = Some(buf);
        } else {
            first = Some(data);
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

fn predict(
    state: &AppState,
    route: Route,
    body: &[u8],
    header_len: Option<usize>,
    request_id: &str,
) -> Result<(Vec<u8>, Option<usize>), Failure> {
    let model = &state.model;
    with_work(|w| {
        let Work {
            scratch,
            classes,
            per_class,
        } = w;
        per_class.clear();
        per_class.resize(model.n_classes(), 0);
        let result = (|| {
            let infer = |scratch: &mut Scratch, classes: &mut Vec<u32>, per_class: &mut [u64]| {
                render::infer(
                    model,
                    &scratch.values,
                    &mut scratch.proba,
                    classes,
                    per_class,
                )
                .map_err(|e| {
                    Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("inference failed: {e}"),
                    )
                })
            };
            Ok(match route {
                Route::Predict => {
                    let shape = parse::parse_predict(body, model, scratch)?;
                    infer(scratch, classes, per_class)?;
                    (render::predict(model, shape, classes, &scratch.proba), None)
                }
                Route::V1Predict => {
                    parse::parse_v1(body, model, scratch)?;
                    infer(scratch, classes, per_class)?;
                    (render::v1_predict(model, classes), None)
                }
                _ => {
                    let req = parse::parse_v2(body, header_len, model, scratch)?;
                    infer(scratch, classes, per_class)?;
                    render::v2_infer(
                        model,
                        req.id.as_deref(),
                        req.outputs,
                        classes,
                        &scratch.proba,
                    )
                }
            })
        })();
        if result.is_ok() {
            state.metrics.observe_rows(route, per_class);
            if let Some(drift) = &state.drift {
                drift.observe(&scratch.values);
            }
            state.feedback.remember(request_id, classes);
        }
        scratch.release_oversized();
        result
    })
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with connections still open; they are dropped.
    GraceExpired,
}

/// Accepts connections until `shutdown` resolves (to the instant the drain must end by), then
/// stops accepting, lets in-flight requests finish and closes idle keep-alive connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = Instant>,
) -> Drained {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Bounds how long a slow client can hold a connection before sending its headers, and
        // how long an idle keep-alive connection is kept.
        .header_read_timeout(state.limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    // One permit per open connection: at the cap, accepting pauses and new connections wait
    // in the kernel's listen backlog until one closes.
    let permits = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    let next = || {
        let permits = permits.clone();
        let listener = &listener;
        async move {
            // The semaphore is never closed, so acquiring only waits.
            let permit = permits.acquire_owned().await.ok();
            (permit, listener.accept().await)
        }
    };
    let start = |permit: Option<OwnedSemaphorePermit>,
                 accepted: std::io::Result<(TcpStream, _)>| {
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => return Err(e),
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let open = state.metrics.open_connections.clone();
        open.inc();
        let svc = service_fn(move |req| handle(state.clone(), req));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
        Ok(())
    };
    // EMFILE and friends: back off a little instead of spinning.
    let accept_failed = |e: std::io::Error| async move {
        tracing::warn!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::pin!(shutdown);
    let deadline = loop {
        tokio::select! {
            deadline = &mut shutdown => break deadline,
            (permit, accepted) = next() => {
                if let Err(e) = start(permit, accepted) {
                    accept_failed(e).await;
                }
            }
        }
    };
    // Drain until quiet: a proxy still behind on the endpoint removal keeps sending new
    // connections; close the listener only once none has come for `drain_quiet`, and early
    // enough to leave the requests in flight that much time before the grace deadline.
    let quiet = state.limits.drain_quiet;
    let stop_accepting = deadline.checked_sub(quiet).unwrap_or(deadline);
    let mut late = 0u64;
    while !quiet.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(quiet) => break,
            () = tokio::time::sleep_until(stop_accepting.into()) => break,
            (permit, accepted) = next() => match start(permit, accepted) {
                Ok(()) => late += 1,
                Err(e) => accept_failed(e).await,
            }
        }
    }
    if late > 0 {
        tracing::info!(
            connections = late,
            "served connections that arrived after the drain delay"
        );
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Drained::Clean,
        () = tokio::time::sleep_until(deadline.into()) => Drained::GraceExpired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;
    use proptest::prelude::*;

    fn state() -> Arc<AppState> {
        let m = sum_model();
        let metrics = Metrics::new(&m).unwrap();
        Arc::new(AppState::new(
            m,
            metrics,
            Limits {
                max_body_bytes: 1024,
                ..Limits::default()
            },
        ))
    }

    fn call(
        state: &Arc<AppState>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, serde_json::Value, http::HeaderMap) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            b = b.header(CONTENT_TYPE, ct);
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let resp = rt.block_on(handle(state.clone(), req)).unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        let v = if path == "/metrics" && status == 200 {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{path}: body not JSON ({e}): {bytes:?}"))
        };
        (status, v, headers)
    }

    const ROW: &str = r#"{"alcohol": 1, "fixed_acidity": 2, "ph": 3}"#;

    /// A body that arrives in the given frames, as a chunked upload does.
    struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn collect(frames: Vec<hyper::body::Frame<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(collect_body(Frames(frames.into())))
            .unwrap_or_else(|e| match e {})
    }

    #[test]
    fn a_body_in_several_frames_is_joined_in_order() {
        use hyper::body::Frame;
        let data = |s: &'static str| Frame::data(Bytes::from_static(s.as_bytes()));
        assert_eq!(collect(vec![]), Bytes::new());
        assert_eq!(collect(vec![data(ROW)]), ROW);
        let trailers = Frame::trailers(http::HeaderMap::new());
        assert_eq!(
            collect(vec![data("{\"alco"), data("hol\": 1"), trailers, data("}")]),
            "{\"alcohol\": 1}"
        );
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_refused() {
        let s = state(); // limit 1024 bytes
        let frames = (0..3)
            .map(|_| hyper::body::Frame::data(Bytes::from(vec![b' '; 500])))
            .collect();
        let req = Request::builder()
            .method("POST")
            .uri("/predict")
            .body(Frames(frames))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let resp = rt.block_on(handle(s, req)).unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body whose first bytes came and whose rest never does: a stalled upload.
    struct Stalled(bool);

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            if self.0 {
                std::task::Poll::Pending
            } else {
                self.0 = true;
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    fn stalled_request(path: &str, content_type: &str) -> (StatusCode, http::HeaderMap, String) {
        let m = sum_model();
        let metrics = Metrics::new(&m).unwrap();
        let s = Arc::new(AppState::new(
            m,
            metrics,
            Limits {
                request_timeout: Duration::from_millis(100),
                ..Limits::default()
            },
        ));
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header(CONTENT_TYPE, content_type)
            .body(Stalled(false))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let t = Instant::now();
        let resp = rt.block_on(handle(s, req)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(5));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn a_stalled_body_gets_408_and_closes_the_connection() {
        let (status, headers, body) = stalled_request("/predict", "application/json");
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(headers.get(CONNECTION).unwrap(), "close");
        assert!(body.contains("did not arrive within 0.1 s"), "{body}");
        // A request refused before its body (415) that then stalls cannot be drained either:
        // the refusal still comes, and the connection closes.
        let (status, headers, _) = stalled_request("/predict", "text/plain");
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(headers.get(CONNECTION).unwrap(), "close");
    }

    #[test]
    fn a_refused_body_is_drained_and_the_connection_kept() {
        let s = state();
        let (status, _, h) = call(&s, "POST", "/predict", Some("text/plain"), b"{\"a\": 1}");
        assert_eq!(status, 415);
        assert!(h.get(CONNECTION).is_none(), "{h:?}");
        let (status, _, h) = call(&s, "POST", "/v2/models/other/infer", None, b"{}");
        assert_eq!(status, 404);
        assert!(h.get(CONNECTION).is_none(), "{h:?}");
    }

    #[test]
    fn v2_binary_framing_through_the_handler() {
        let s = state();
        let header = r#"{"inputs":[{"name":"input-0","shape":[1,3],"datatype":"FP64","parameters":{"binary_data_size":24}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = header.as_bytes().to_vec();
        for v in [1.0f64, 2.0, 3.0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let req = Request::builder()
            .method("POST")
            .uri("/v2/models/wine/infer")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(&INFERENCE_HEADER_CONTENT_LENGTH, header.len())
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let resp = rt.block_on(handle(s.clone(), req)).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get(CONTENT_TYPE).unwrap(),
            "application/octet-stream"
        );
        let len: usize = resp.headers()[&INFERENCE_HEADER_CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes[..len]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&bytes[len..len + 8], b"\x04\0\0\0good");
        let (_, m, _) = call(&s, "GET", "/v2", None, b"");
        assert_eq!(m["extensions"], serde_json::json!(["binary_tensor_data"]));
    }

    #[test]
    fn every_response_names_the_model_version() {
        let s = state();
        for (m, p) in [
            ("GET", "/healthz"),
            ("GET", "/nope"),
            ("DELETE", "/predict"),
            ("GET", "/metrics"),
        ] {
            let (_, _, h) = call(&s, m, p, None, b"");
            assert_eq!(h.get("x-model-version").unwrap(), "v1", "{m} {p}");
        }
    }

    #[test]
    fn statuses_for_each_kind_of_bad_request() {
        let s = state();
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);
        let cases: &[Case] = &[
            (
                "POST",
                "/predict",
                Some("application/json"),
                ROW.as_bytes(),
                200,
            ),
            ("POST", "/predict/", None, ROW.as_bytes(), 200),
            (
                "POST",
                "/predict",
                Some("application/json; charset=utf-8"),
                ROW.as_bytes(),
                200,
            ),
            ("POST", "/predict", Some("text/plain"), ROW.as_bytes(), 415),
            ("POST", "/predict", None, b"{", 400),
            ("POST", "/predict", None, br#"{"alcohol": 1}"#, 422),
            ("POST", "/predict", None, &[b' '; 2000], 413),
            ("GET", "/predict", None, b"", 405),
            ("POST", "/healthz", None, b"", 405),
            ("GET", "/v2/models/other", None, b"", 404),
            ("GET", "/v2/models/wine/versions/v9", None, b"", 404),
            ("GET", "/v2/models/wine/versions/v1", None, b"", 200),
            ("GET", "/nope", None, b"", 404),
            (
                "POST",
                "/v1/models/wine:predict",
                None,
                br#"{"instances": [[1,2,3]]}"#,
                200,
            ),
            ("GET", "/v1/models/wine", None, b"", 200),
            ("GET", "/v2/health/live", None, b"", 200),
            ("GET", "/v2/health/ready", None, b"", 200),
            ("GET", "/v2/models/wine/ready", None, b"", 200),
            ("GET", "/v2", None, b"", 200),
            ("GET", "/readyz", None, b"", 200),
        ];
        for (m, p, ct, body, want) in cases {
            let (got, v, h) = call(&s, m, p, *ct, body);
            assert_eq!(got, *want, "{m} {p}: {v}");
            if got >= 400 {
                assert!(v["error"].is_string(), "{m} {p}: {v}");
            }
            if got == 405 {
                assert!(h.get(ALLOW).is_some());
            }
        }
    }

    #[test]
    fn unprocessable_names_the_expected_features() {
        let s = state();
        let (st, v, _) = call(&s, "POST", "/predict", None, br#"{"alcohol": 1, "x": 2}"#);
        assert_eq!(st, 422);
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("unknown feature 'x'"), "{msg}");
        assert!(
            msg.contains("expected features: alcohol, fixed_acidity, ph"),
            "{msg}"
        );
        assert_eq!(v["expectedFeatures"][2], "ph");
        let (st, v, _) = call(
            &s,
            "POST",
            "/v2/models/wine/infer",
            None,
            br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1,2]}]}"#,
        );
        assert_eq!(st, 422);
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(1),
            "v2 errors are {{\"error\"}} only: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains("expected features"));
    }

    #[test]
    fn predictions_match_the_model_and_are_counted() {
        let s = state();
        let (st, v, _) = call(&s, "POST", "/predict", None, ROW.as_bytes());
        assert_eq!(st, 200);
        assert_eq!(v["label"], "good");
        assert_eq!(v["modelVersion"], "v1");
        let p = 1.0 / (1.0 + (-6.0f64).exp());
        assert!((v["probabilities"]["good"].as_f64().unwrap() - p).abs() < 1e-12);
        let (st, v, _) = call(
            &s,
            "POST",
            "/v2/models/wine/infer",
            Some("application/json"),
            br#"{"id":"r1","inputs":[{"name":"input-0","shape":[2,3],"datatype":"FP32","data":[1,2,3,-1,-2,-3]}]}"#,
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["id"], "r1");
        assert_eq!(v["outputs"][0]["data"], serde_json::json!(["good", "bad"]));
        let (_, m, _) = call(&s, "GET", "/metrics", None, b"");
        let text = m.as_str().unwrap();
        assert!(
            text.contains(r#"predictor_rows_predicted_total{route="v2_infer"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"predictor_predictions_total{class="good"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"predictor_requests_total{code="200",route="predict"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("predictor_requests_in_flight 1\n"),
            "the scrape counts itself, and only itself: {text}"
        );
    }

    #[test]
    fn draining_fails_readiness_but_keeps_serving() {
        let s = state();
        s.begin_draining();
        assert_eq!(call(&s, "GET", "/readyz", None, b"").0, 503);
        assert_eq!(call(&s, "GET", "/v2/health/ready", None, b"").0, 503);
        assert_eq!(call(&s, "GET", "/healthz", None, b"").0, 200);
        assert_eq!(call(&s, "POST", "/predict", None, ROW.as_bytes()).0, 200);
    }

    fn arb_path() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/predict".to_string()),
            Just("/v1/models/wine:predict".to_string()),
            Just("/v2/models/wine/infer".to_string()),
            "/[a-z0-9:/_.-]{0,30}",
        ]
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            // Structured near-misses reach deeper into the parsers than random bytes.
            "[\\[\\]{}\",:0-9a-z_. eE+-]{0,200}".prop_map(String::into_bytes),
            (any::<f64>(), any::<f64>(), "[a-z_]{1,8}").prop_map(|(a, b, k)| {
                format!(r#"{{"instances":[[{a},{b},1],{{"alcohol":{a},"{k}":{b},"ph":1}}], "inputs":[{{"shape":[1,3],"datatype":"FP64","data":[{a},{b},3]}}]}}"#)
                    .into_bytes()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]
        #[test]
        fn no_input_crashes_or_yields_a_server_error(
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
            path in arb_path(),
            ct in proptest::option::of(prop_oneof![Just("application/json"), Just("text/plain"), Just("application/x+json")]),
            body in arb_body(),
        ) {
            let s = state();
            let (status, v, h) = call(&s, method, &path, ct, &body);
            prop_assert!(status < 500, "{} {} -> {}: {}", method, path, status, v);
            prop_assert!(h.get("x-model-version").is_some());
        }
    }
}
