//! One team cannot stall another through the operator: pipelines whose store accepts
//! connections and never answers (more of them than the operator has reconcile slots, each
//! polling every second) do not delay another pipeline's run and promotion.
//!
//! The silent store is a TCP listener this test runs on the node address (where pods and the
//! operator reach the host); it accepts every connection and never sends a byte. The operator
//! runs with 2 reconcile slots, so before listings ran beside the reconcile, 6 such pipelines
//! held both slots for the whole 20 s store timeout, over and over.
//!
//! Needs `make images` and the cluster (`make cluster`).

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use champion_tests::cluster::layout;
use champion_tests::operator::{Stage, str_at, wine_file};
use champion_tests::{ClusterError, Result};
use serde_json::json;

/// How long the good pipeline may take from creation to a serving champion. Alone it takes
/// about 10-20 s here (Job start, training, rollout); the bound leaves room for a loaded
/// machine but not for reconciles that queue behind 20 s store timeouts.
const PROMOTE_WITHIN: Duration = Duration::from_secs(90);
const SILENT_PIPELINES: usize = 6;

/// A listener that accepts and holds every connection, never answering; stops (and drops the
/// connections) when dropped.
struct SilentStore {
    port: u16,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SilentStore {
    fn start() -> Result<SilentStore> {
        let listener = TcpListener::bind((layout::NODE_IP, 0))
            .map_err(|e| ClusterError::Invalid(format!("binding {}: {e}", layout::NODE_IP)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ClusterError::Invalid(format!("listener: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| ClusterError::Invalid(format!("listener address: {e}")))?
            .port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Ok(mut held) = accepted.lock() {
                                held.push(conn);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Nothing to accept: poll again shortly (the thread's only job).
                            std::thread::park_timeout(Duration::from_millis(20));
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        Ok(SilentStore {
            port,
            accepted,
            stop,
        })
    }

    fn connections(&self) -> usize {
        self.accepted.lock().map(|h| h.len()).unwrap_or(0)
    }
}

impl Drop for SilentStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut held) = self.accepted.lock() {
            held.clear();
        }
    }
}

#[tokio::test]
async fn stores_that_never_answer_do_not_delay_another_pipelines_promotion() -> Result<()> {
    let silent = SilentStore::start()?;
    let allowed = format!("storePolicy.allowedHosts[0]={}", layout::NODE_IP);
    let stage = Stage::deploy_with("e2e-stall", &["concurrency=2", &allowed]).await?;
    for i in 0..SILENT_PIPELINES {
        stage
            .create_pipeline(
                &format!("silent-{i}"),
                json!({"data": {
                    "uri": format!("http://{}:{}/data.csv", layout::NODE_IP, silent.port),
                    "pollInterval": "1s",
                    "target": "quality",
                }}),
            )
            .await?;
    }
    // The silent pipelines are being reconciled (their listings hang) before the good one
    // arrives.
    champion_tests::testing::wait_for(
        "every silent pipeline's listing reached the silent store",
        Duration::from_secs(30),
        || async { Ok((silent.connections() >= SILENT_PIPELINES).then_some(())) },
    )
    .await?;

    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let started = Instant::now();
    stage.create_pipeline("wine", json!({})).await?;
    let (status, _) = stage.wait_champion("wine", None, PROMOTE_WITHIN).await?;
    let took = started.elapsed();
    eprintln!(
        "wine promoted and serving {took:?} after creation, beside {SILENT_PIPELINES} pipelines whose store never answers (2 reconcile slots)"
    );
    assert_eq!(str_at(&status, "/lastOutcome"), Some("Promoted"));

    drop(silent);
    stage.passed();
    Ok(())
}
