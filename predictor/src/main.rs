//! `predictor`: serve one verified model until SIGTERM, then drain and exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use predictor::config::Config;
use predictor::metrics::{Metrics, MetricsError};
use predictor::server::{self, AppState, Drained, Limits};
use tokio::net::TcpListener;

/// Why the process stopped without serving.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] predictor::config::ConfigError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Load(Box<predictor::loader::LoadError>),
    #[error("{0}")]
    Metrics(#[from] MetricsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the shadow mirroring thread: {0}")]
    Shadow(#[source] std::io::Error),
    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .init();
}

/// Kubernetes shows the termination message in `kubectl describe pod`; best effort.
fn write_termination_log(reason: &str) {
    let path = std::env::var("TERMINATION_LOG").unwrap_or_else(|_| "/dev/termination-log".into());
    if std::path::Path::new(&path).exists() {
        let _ = std::fs::write(&path, reason);
    }
}

/// Raises the soft open-file limit to the hard limit (as Go's runtime does): every connection
/// is a descriptor, and the common soft default of 1024 would cap MAX_CONNECTIONS well below
/// its default. Returns the limit in force afterwards.
fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // rlim_t is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Some(lim.rlim_cur as u64)
}

fn main() -> ExitCode {
    init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let reason = e.to_string();
            tracing::error!(error = %reason, "predictor stopped");
            eprintln!("predictor: {reason}");
            write_termination_log(&reason);
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), StartError> {
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), StartError> {
    let loading = Instant::now();
    let model = predictor::loader::load(
        &config.model_uri,
        config.model_name.as_deref(),
        config.model_sha256.as_deref(),
    )
    .await
    .map_err(|e| StartError::Load(Box::new(e)))?;
    tracing::info!(
        model_uri = %config.model_uri,
        model_name = %model.meta.name,
        model_version = %model.meta.version,
        algorithm = %model.meta.algorithm,
        inference = model.inference(),
        sha256 = %model.meta.sha256,
        features = model.n_features(),
        classes = model.n_classes(),
        score = model.meta.score.as_ref().map(|s| s.value),
        "model verified"
    );
    let metrics = Metrics::new(&model)?;
    metrics.set_model_load_seconds(loading.elapsed().as_secs_f64());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
        drain_quiet: config.drain_quiet,
    };
    let open_files = raise_open_file_limit();
    if let Some(n) = open_files
        && (n as usize) < config.max_connections.saturating_add(64)
    {
        tracing::warn!(
            open_file_limit = n,
            max_connections = config.max_connections,
            "the open-file limit is below MAX_CONNECTIONS plus headroom; connections beyond it fail to be accepted"
        );
    }
    let shadow = config.shadow.as_ref().map(|c| {
        tracing::info!(
            shadow = %c.authority,
            percent = c.percent,
            queue = c.queue,
            concurrency = c.concurrency,
            timeout_seconds = c.timeout.as_secs_f64(),
            "mirroring prediction requests to the shadow challenger"
        );
        predictor::shadow::Shadow::start(c, &model, metrics.shadow.clone())
            .map_err(StartError::Shadow)
    });
    let shadow = shadow.transpose()?;
    let drift_tracked = config.drift.enabled && model.drift_reference.is_some();
    let state = Arc::new(
        AppState::with_live(model, metrics, limits, config.drift, config.feedback)
            .with_shadow(shadow),
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StartError::Signal)?;
    tracing::info!(
        addr = %addr,
        worker_threads = config.worker_threads,
        max_connections = config.max_connections,
        request_timeout_seconds = config.request_timeout.as_secs_f64(),
        header_timeout_seconds = config.header_timeout.as_secs_f64(),
        open_file_limit = open_files,
        drift_tracking = drift_tracked,
        feedback_capacity = config.feedback.capacity,
        "listening"
    );

    let drain_state = state.clone();
    let (drain_delay, drain_quiet, grace) = (config.drain_delay, config.drain_quiet, config.grace);
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let received = Instant::now();
        drain_state.begin_draining();
        tracing::info!(
            drain_seconds = drain_delay.as_secs_f64(),
            quiet_seconds = drain_quiet.as_secs_f64(),
            grace_seconds = grace.as_secs_f64(),
            "shutdown signal: readiness failed, draining"
        );
        tokio::time::sleep(drain_delay).await;
        received + grace
    };
    match server::serve(listener, state, shutdown).await {
        Drained::Clean => tracing::info!("drained; exiting"),
        Drained::GraceExpired => {
            tracing::warn!("grace period over with requests still open; exiting anyway")
        }
    }
    Ok(())
}
