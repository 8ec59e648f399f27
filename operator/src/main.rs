//! The champion operator: runs the ModelPipeline controller (when it holds the leader Lease)
//! and serves /metrics, /healthz and /readyz.

mod analysis;
mod apply;
mod approval;
mod build;
mod caches;
mod context;
mod controller;
mod decide;
mod drift;
mod effects;
mod error;
mod events;
#[cfg(test)]
mod fixtures;
mod freshness;
mod health;
mod lease;
mod listings;
mod live;
mod logging;
mod metrics;
mod names;
mod observe;
mod podmetrics;
mod policy;
mod promql;
mod record;
mod retry;
mod run_slots;
mod signals;
mod status;
mod transition;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use champion_api::{LABEL_MANAGED_BY, MANAGED_BY, ModelPipeline};
use clap::Parser;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus::Registry;
use tokio::sync::watch;

use crate::context::Context;
use crate::controller::{error_policy, forget_deleted, reconcile};
use crate::health::{Health, run_http};
use crate::run_slots::RunSlots;
use crate::signals::shutdown_signal;

/// Command line and environment of the operator.
#[derive(Parser, Debug)]
#[command(
    name = "operator",
    about = "champion: keeps ModelPipeline models fresh"
)]
struct Args {
    /// Address the metrics server binds (all interfaces in a pod; 127.0.0.1 when run locally).
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0")]
    metrics_address: std::net::IpAddr,
    /// Port of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    metrics_port: u16,
    /// Watch only these namespaces (comma-separated; default: all namespaces). Namespaced mode
    /// needs only Roles in these namespaces, no cluster-wide rights.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// One namespace to watch, the older spelling of --namespaces; both lists are joined.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Take part in leader election; without it this replica always reconciles.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the coordination.k8s.io Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "champion-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name; falls back to HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease lives without renewal: a standby takes over within this after the
    /// leader dies (at once when it shuts down cleanly).
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds between Lease reads/renewals.
    #[arg(long, env = "LEASE_RETRY_SECONDS", default_value_t = 2)]
    lease_retry_seconds: u64,
    /// Pipelines reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Trainer Jobs running at once across all pipelines (0: no limit). Due runs wait.
    #[arg(long, env = "MAX_CONCURRENT_RUNS", default_value_t = 8)]
    max_concurrent_runs: usize,
    /// Seconds between two reads of a champion's live drift figures from its predictor pods
    /// (1 to 3600); `spec.trigger.onDrift` reacts no faster than this.
    #[arg(long, env = "DRIFT_READ_INTERVAL_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    drift_read_interval_seconds: u64,
    /// Directories under which pipelines may mount hostPath volumes (comma-separated); empty:
    /// no hostPath volumes at all.
    #[arg(long, env = "ALLOWED_HOST_PATH_PREFIXES", value_delimiter = ',')]
    allowed_host_path_prefixes: Vec<String>,
    /// Prefixes that trainer and predictor images must start with (comma-separated); empty:
    /// any image.
    #[arg(long, env = "ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Hosts, addresses or CIDR ranges pipelines' data and model URIs and store endpoints may
    /// reach even inside a denied range (comma-separated), e.g. an in-cluster MinIO.
    #[arg(long, env = "STORE_ALLOWED_HOSTS", value_delimiter = ',')]
    store_allowed_hosts: Vec<String>,
    /// CIDR ranges refused to pipelines' URIs and endpoints besides the built-in ones (loopback,
    /// link-local, cloud metadata), comma-separated; the chart sets the cluster's service and
    /// pod ranges.
    #[arg(long, env = "STORE_DENIED_CIDRS", value_delimiter = ',')]
    store_denied_cidrs: Vec<String>,
    /// Let a store without credentials of its own use the operator pod's ambient identity
    /// (instance metadata, IRSA, workload identity). Off: such stores are read anonymously.
    #[arg(long, env = "AMBIENT_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    ambient_credentials: bool,
    /// Directories that pipelines' file:// stores must lie in: the operator's store volume
    /// mount paths (comma-separated). Empty: no file:// store.
    #[arg(long, env = "LOCAL_STORE_ROOTS", value_delimiter = ',')]
    local_store_roots: Vec<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    log_json: bool,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("building the Kubernetes client (in-cluster config or kubeconfig): {0}")]
    Client(#[source] kube::Error),
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error("binding the metrics port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("invalid store policy (--store-allowed-hosts / --store-denied-cidrs): {0}")]
    StorePolicy(String),
    #[error("leadership lost; exiting so that a fresh process rejoins the election")]
    LeadershipLost,
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The namespaces to watch, one entry per watch: `[None]` for all namespaces.
fn watched_namespaces(args: &Args) -> Vec<Option<String>> {
    let mut list = non_empty(&args.namespaces);
    list.extend(args.namespace.iter().map(|n| n.trim().to_string()));
    list.retain(|n| !n.is_empty());
    list.sort();
    list.dedup();
    if list.is_empty() {
        vec![None]
    } else {
        list.into_iter().map(Some).collect()
    }
}

/// The entries of a comma-separated list that are not blank.
fn non_empty(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// How long one Kubernetes request may take. A request that hangs (a partitioned API server)
/// fails instead, so a leader that cannot renew its Lease steps down within the lease duration
/// and no reconcile waits forever.
const KUBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Two clients from the in-cluster config (or a kubeconfig): one for watches, whose long
/// polls need kube's own read timeout, and one with [`KUBE_TIMEOUT`] on every request for
/// everything else (reconciles, Events, the Lease).
async fn clients() -> Result<(kube::Client, kube::Client), MainError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| MainError::Client(kube::Error::InferConfig(e)))?;
    let mut bounded = config.clone();
    bounded.connect_timeout = Some(KUBE_TIMEOUT);
    bounded.read_timeout = Some(KUBE_TIMEOUT);
    bounded.write_timeout = Some(KUBE_TIMEOUT);
    Ok((
        kube::Client::try_from(config).map_err(MainError::Client)?,
        kube::Client::try_from(bounded).map_err(MainError::Client)?,
    ))
}

/// How pipelines' stores are opened, from the flags.
fn tenant_stores(args: &Args) -> Result<champion_store::TenantStores, MainError> {
    let egress = champion_store::EgressPolicy::new(
        &non_empty(&args.store_allowed_hosts),
        &non_empty(&args.store_denied_cidrs),
    )
    .map_err(MainError::StorePolicy)?;
    Ok(champion_store::TenantStores {
        egress,
        ambient_credentials: args.ambient_credentials,
        local_roots: non_empty(&args.local_store_roots)
            .into_iter()
            .map(std::path::PathBuf::from)
            .collect(),
    })
}

async fn run(args: Args) -> Result<(), MainError> {
    let stores = tenant_stores(&args)?;
    let (watch_client, client) = clients().await?;
    let registry = Registry::new();
    let metrics = metrics::Metrics::register(&registry).map_err(MainError::Metrics)?;
    let health = Arc::new(Health {
        registry,
        ready: AtomicBool::new(false),
    });
    let addr = SocketAddr::new(args.metrics_address, args.metrics_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MainError::Bind {
            port: args.metrics_port,
            source,
        })?;
    tokio::spawn(run_http(listener, health.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "champion-operator".to_string());
    let (leader_tx, mut leader_rx) = watch::channel(!args.leader_elect);
    let fence = if args.leader_elect {
        lease::Fence::closed()
    } else {
        lease::Fence::open()
    };
    let mut election = None;
    if args.leader_elect {
        let cfg = lease::LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
            retry_period: Duration::from_secs(
                args.lease_retry_seconds
                    .clamp(1, args.lease_duration_seconds.max(2) / 2),
            ),
        };
        tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, %identity, "joining leader election");
        let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
        election = Some(tokio::spawn(lease::run(
            leases,
            cfg,
            leader_tx,
            fence.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    health.ready.store(true, Ordering::Release);

    tokio::select! {
        _ = leader_rx.wait_for(|l| *l) => {}
        _ = stopped(stop_rx.clone()) => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(%identity, "leading: starting the ModelPipeline controller");

    let namespaces = watched_namespaces(&args);
    tracing::info!(namespaces = ?namespaces, "watching");
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    // One watch per namespace (namespaced mode has no cluster-wide rights): the caches are
    // read as one, each namespace's changes drive that namespace's controller.
    let mut job_caches = Vec::new();
    let mut deployment_caches = Vec::new();
    let mut owned = Vec::new();
    for ns in &namespaces {
        let ns = ns.as_deref();
        let (jobs, job_writer) = reflector::store::<Job>();
        let (deployments, deployment_writer) = reflector::store::<Deployment>();
        let job_stream = reflector(
            job_writer,
            watcher(api::<Job>(&watch_client, ns), managed.clone()),
        )
        .default_backoff()
        .touched_objects();
        let deployment_stream = reflector(
            deployment_writer,
            watcher(api::<Deployment>(&watch_client, ns), managed.clone()),
        )
        .default_backoff()
        .touched_objects();
        job_caches.push(jobs);
        deployment_caches.push(deployments);
        owned.push((ns.map(str::to_string), job_stream, deployment_stream));
    }
    let jobs = caches::Caches::new(job_caches);
    let deployments = caches::Caches::new(deployment_caches);
    let caches_ready = Arc::new(AtomicBool::new(false));
    {
        let (jobs, deployments, flag) = (jobs.clone(), deployments.clone(), caches_ready.clone());
        tokio::spawn(async move {
            if jobs.wait_until_ready().await && deployments.wait_until_ready().await {
                flag.store(true, Ordering::Release);
            }
        });
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs,
        deployments,
        caches_ready,
        runs: RunSlots::new((args.max_concurrent_runs > 0).then_some(args.max_concurrent_runs)),
        events: events::Publisher::new(client.clone(), "champion-operator", identity.clone()),
        metrics,
        fresh: Default::default(),
        errors: Default::default(),
        fence,
        policy: policy::PodPolicy {
            host_path_prefixes: non_empty(&args.allowed_host_path_prefixes),
            image_prefixes: non_empty(&args.allowed_image_prefixes),
        },
        stores,
        listings: Default::default(),
        live: Default::default(),
        drift: crate::drift::DriftReads::every(Duration::from_secs(
            args.drift_read_interval_seconds,
        )),
    });

    let lost = Arc::new(AtomicBool::new(false));
    let stop_controller = {
        let (mut leader_rx, stop_rx, lost) = (leader_rx.clone(), stop_rx.clone(), lost.clone());
        async move {
            tokio::select! {
                _ = leader_rx.wait_for(|l| !*l) => lost.store(true, Ordering::Release),
                _ = stopped(stop_rx) => {}
            }
        }
    }
    .shared();
    let mut runs = Vec::new();
    let mut pipeline_caches = Vec::new();
    for (ns, job_stream, deployment_stream) in owned {
        let ns = ns.as_deref();
        let controller = Controller::new(
            api::<ModelPipeline>(&watch_client, ns),
            watcher::Config::default(),
        );
        pipeline_caches.push(controller.store());
        runs.push(
            controller
                .owns_stream(job_stream)
                .owns_stream(deployment_stream)
                .owns(api::<Service>(&watch_client, ns), managed.clone())
                .with_config(ControllerConfig::default().concurrency(args.concurrency))
                .graceful_shutdown_on(stop_controller.clone())
                .run(reconcile, error_policy, ctx.clone())
                .boxed(),
        );
    }
    {
        // One sweep over every namespace's pipelines: a sweep per namespace would forget the
        // other namespaces' pipelines.
        let (pipelines, ctx) = (caches::Caches::new(pipeline_caches), ctx.clone());
        tokio::spawn(async move {
            if !pipelines.wait_until_ready().await {
                return;
            }
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                forget_deleted(&ctx, &pipelines.state());
            }
        });
    }
    futures::stream::select_all(runs)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
    if lost.load(Ordering::Acquire) {
        return Err(MainError::LeadershipLost);
    }
    // Let the election release the Lease, so a standby takes over at once.
    if let Some(election) = election {
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    logging::init(args.log_json);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_documented_defaults() {
        let args = Args::try_parse_from(["operator"]).expect("no flags needed");
        assert_eq!(args.metrics_port, 8080);
        assert!(args.leader_elect);
        assert_eq!(args.lease_name, "champion-operator");
        assert_eq!(args.namespace, None);
        assert_eq!(watched_namespaces(&args), vec![None], "all namespaces");
        assert!(
            !args.ambient_credentials,
            "ambient identity is off by default"
        );
        let stores = tenant_stores(&args).expect("default policy");
        assert!(stores.local_roots.is_empty());
        let args = Args::try_parse_from([
            "operator",
            "--store-denied-cidrs",
            "10.96.0.0/12,10.244.0.0/16",
            "--store-allowed-hosts",
            "10.244.0.1,minio.storage.svc",
            "--local-store-roots",
            "/stores,/data",
        ])
        .expect("flags parse");
        assert_eq!(
            tenant_stores(&args).map(|s| s.local_roots.len()).ok(),
            Some(2)
        );
        let args = Args::try_parse_from(["operator", "--store-denied-cidrs", "10.0.0.0/40"])
            .expect("flags parse");
        assert!(
            tenant_stores(&args).is_err(),
            "a bad range stops the operator"
        );
        let args =
            Args::try_parse_from(["operator", "--leader-elect", "false", "--namespace", "ml"])
                .expect("flags parse");
        assert!(!args.leader_elect);
        assert_eq!(args.namespace.as_deref(), Some("ml"));
        assert_eq!(watched_namespaces(&args), vec![Some("ml".to_string())]);
        let args = Args::try_parse_from([
            "operator",
            "--namespaces",
            "team-b, team-a,,team-b",
            "--namespace",
            "ml",
        ])
        .expect("flags parse");
        assert_eq!(
            watched_namespaces(&args),
            ["ml", "team-a", "team-b"]
                .map(|n| Some(n.to_string()))
                .to_vec()
        );
    }
}
