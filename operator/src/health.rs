//! The operator's own HTTP server: /healthz, /readyz and /metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::Registry;

use crate::metrics;

/// What the health server reports: the metrics registry and whether this replica is ready.
pub struct Health {
    pub registry: Registry,
    pub ready: AtomicBool,
}

/// The answer to a request for `path`: status, content type and body.
fn route(path: &str, health: &Health) -> (StatusCode, &'static str, Bytes) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/healthz" => (StatusCode::OK, TEXT, Bytes::from_static(b"ok\n")),
        "/readyz" if health.ready.load(Ordering::Acquire) => {
            (StatusCode::OK, TEXT, Bytes::from_static(b"ready\n"))
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Bytes::from_static(b"not ready\n"),
        ),
        "/metrics" => match metrics::render(&health.registry) {
            Ok(body) => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(body),
            ),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                Bytes::from_static(b"encoding metrics failed\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            Bytes::from_static(b"not found\n"),
        ),
    }
}

async fn serve_http(
    req: Request<Incoming>,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = route(req.uri().path(), &health);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Serves /healthz, /readyz and /metrics on `listener` until the process ends.
pub async fn run_http(listener: tokio::net::TcpListener, health: Arc<Health>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection failed");
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| serve_http(req, health.clone()));
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_endpoints_and_metrics() {
        let registry = Registry::new();
        let m = metrics::Metrics::register(&registry).expect("metrics register");
        m.reconciled();
        let health = Health {
            registry,
            ready: AtomicBool::new(false),
        };
        assert_eq!(route("/healthz", &health).0, StatusCode::OK);
        assert_eq!(route("/readyz", &health).0, StatusCode::SERVICE_UNAVAILABLE);
        health.ready.store(true, Ordering::Release);
        assert_eq!(route("/readyz", &health).0, StatusCode::OK);
        let (status, _, body) = route("/metrics", &health);
        assert_eq!(status, StatusCode::OK);
        assert!(
            String::from_utf8_lossy(&body).contains("champion_reconciles_total{result=\"ok\"} 1")
        );
        assert_eq!(route("/nope", &health).0, StatusCode::NOT_FOUND);
    }
}
