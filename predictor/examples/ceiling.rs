//! The throughput ceiling for `make bench-predictor`: a bare hyper 1 server on the same runtime
//! shape as the predictor that answers every request with a fixed JSON body of the size of a
//! single-row prediction. Predictor ÷ ceiling says how much the model, parsing and metrics cost.
//!
//! Usage: `[WORKER_THREADS=N] ceiling [ADDR]` (default 127.0.0.1:0); prints `listening on ADDR`
//! once bound.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, header::CONTENT_TYPE};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] =
    br#"{"label":"good","probabilities":{"bad":0.4226497308103742,"good":0.5773502691896258},"modelVersion":"v1"}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    // The same thread count as the predictor under test (`WORKER_THREADS`, default the cores).
    let workers = std::env::var("WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&addr).await?;
            println!("listening on {}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                        resp.headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
}
