//! A one-node Kubernetes cluster on this host, made of real components built from the package
//! registries (see tests/cluster/scripts/build-components.sh): etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd + runc + the CNI bridge, kubelet,
//! kube-proxy (iptables) and CoreDNS as a Deployment.
//!
//! There is one cluster per machine. `champion-cluster up` and [`shared`] start it (or reuse a
//! healthy one); `champion-cluster down` removes every trace of it. State lives in
//! [`layout::STATE_DIR`] and [`layout::RUN_DIR`]; the admin kubeconfig is always
//! [`layout::ADMIN_KUBECONFIG`].

pub mod config;
pub mod foreign;
pub mod health;
pub mod host;
pub mod layout;
pub mod manifest;
pub mod pki;
pub mod process;
pub mod sys;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;

pub use layout::Layout;
use process::Started;

use crate::error::{ClusterError, Result};

/// How long a cold start may take before `up` gives up (the budget is 30 s; the margin is for a
/// machine that other engineers are compiling on).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A `flock` on a file, released when dropped (the descriptor closes).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock is held: `exclusive`, or shared with other shared holders.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<FileLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(ClusterError::io("opening lock file", path))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on a file descriptor we own; blocks until the other holder releases.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(ClusterError::io("locking", path)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(FileLock { _file: file })
    }
}

/// An exclusive lock on [`layout::LOCK_FILE`], held while the cluster is started or torn down.
struct HostLock {
    _lock: FileLock,
}

impl HostLock {
    fn acquire() -> Result<HostLock> {
        Ok(HostLock {
            _lock: FileLock::acquire(Path::new(layout::LOCK_FILE), true)?,
        })
    }
}

/// A connection to the running cluster, as the tests use it.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub layout: Layout,
}

impl Cluster {
    /// The lock that lets suites in several test processes share the cluster: every test holds
    /// it shared while it runs (a [`crate::operator::Stage`] does so for its life); a test that
    /// disturbs the whole cluster, such as restarting the API server, holds it exclusive.
    pub async fn tests_lock(&self, exclusive: bool) -> Result<FileLock> {
        let path = self.layout.run.join("tests.lock");
        tokio::task::spawn_blocking(move || FileLock::acquire(&path, exclusive))
            .await
            .map_err(|e| ClusterError::Invalid(format!("waiting for the tests lock: {e}")))?
    }

    /// Connects with the admin kubeconfig, without checking health.
    pub async fn connect(layout: &Layout) -> Result<Cluster> {
        let kubeconfig = layout.admin_kubeconfig();
        let client = health::client_from(&kubeconfig, None).await?;
        Ok(Cluster {
            client,
            kubeconfig,
            layout: layout.clone(),
        })
    }

    /// Whether containerd on the node holds `image` (e.g. `champion/probe:dev`), so a test can
    /// say "import the image" instead of timing out on ErrImageNeverPull.
    pub fn has_image(&self, image: &str) -> Result<bool> {
        let full = if image.split('/').next().is_some_and(|h| h.contains('.')) {
            image.to_string()
        } else {
            format!("docker.io/{image}")
        };
        let out = sys::run(
            self.layout.bin("ctr"),
            &[
                "--address".to_string(),
                self.layout.containerd_socket().display().to_string(),
                "--namespace".into(),
                "k8s.io".into(),
                "images".into(),
                "list".into(),
                "--quiet".into(),
            ],
        )?;
        Ok(out.lines().any(|l| l.trim() == full))
    }

    /// Runs kubectl with the admin kubeconfig; returns stdout, fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full: Vec<String> = vec![format!("--kubeconfig={}", self.kubeconfig.display())];
        full.extend(args.iter().map(|s| s.to_string()));
        sys::run(self.layout.bin("kubectl"), &full)
    }
}

/// The running cluster, started first if there is none (or only the debris of a dead one).
/// Safe to call from many tests and test binaries at once: the first starts, the others wait.
pub async fn shared() -> Result<Cluster> {
    let layout = Layout::from_env();
    if is_healthy(&layout).await {
        return Cluster::connect(&layout).await;
    }
    up(&layout, &mut |line| eprintln!("{line}")).await?;
    Cluster::connect(&layout).await
}

/// Every recorded component alive, the API server ready and the node Ready.
pub async fn is_healthy(layout: &Layout) -> bool {
    if !layout.admin_kubeconfig().is_file() {
        return false;
    }
    if layout::COMPONENTS
        .iter()
        .any(|c| process::recorded_pid(layout, c).is_none())
    {
        return false;
    }
    let Ok(client) = health::client_from(&layout.admin_kubeconfig(), None).await else {
        return false;
    };
    health::https_ok(&client, "/readyz").await && node_ready(&client).await
}

async fn node_ready(client: &kube::Client) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(node) = nodes.get(layout::NODE_NAME).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn deployment_available(client: &kube::Client, ns: &str, name: &str) -> bool {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Ok(d) = api.get(name).await else {
        return false;
    };
    d.status.and_then(|s| s.conditions).is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    })
}

/// What `up` did, for its one-line summary.
pub struct UpReport {
    pub reused: bool,
    pub elapsed: Duration,
    pub images: usize,
}

/// Starts the cluster, or reuses a healthy one. A cold start clears any leftovers first.
pub async fn up(layout: &Layout, say: &mut dyn FnMut(String)) -> Result<UpReport> {
    let lock = tokio::task::spawn_blocking(HostLock::acquire)
        .await
        .map_err(|e| ClusterError::Invalid(format!("lock task failed: {e}")))??;
    let start = Instant::now();
    if is_healthy(layout).await {
        // The archives may have been rebuilt since the cluster started (`make cluster` after
        // `make images`); importing again is cheap and makes the running cluster current.
        let import_layout = layout.clone();
        let images = tokio::task::spawn_blocking(move || import_images(&import_layout, false))
            .await
            .map_err(|e| ClusterError::Invalid(format!("image import task failed: {e}")))?;
        drop(lock);
        return Ok(UpReport {
            reused: true,
            elapsed: start.elapsed(),
            images: images?,
        });
    }
    for c in [
        "etcd",
        "kube-apiserver",
        "kubelet",
        "containerd",
        "ctr",
        "kubectl",
        "crictl",
    ] {
        if !layout.bin(c).is_file() {
            return Err(ClusterError::MissingBinary {
                path: layout.bin(c),
            });
        }
    }
    for note in teardown(layout) {
        say(format!("cleared leftovers: {note}"));
    }
    host::preflight()?;
    let result = start_components(layout, say, start).await;
    drop(lock);
    result
}

async fn start_components(
    layout: &Layout,
    say: &mut dyn FnMut(String),
    start: Instant,
) -> Result<UpReport> {
    // Both directories carry the cluster's own names; the manifest inside the state dir records
    // everything else, each entry before the thing it names is created.
    sys::create_dir(&layout.state)?;
    sys::create_dir(&layout.run)?;
    let manifest = manifest::Manifest::open(layout);
    host::setup(&manifest)?;
    pki::generate(layout)?;
    config::write_all(layout)?;

    let mut started: Vec<Started> = Vec::new();
    started.push(process::spawn(layout, &manifest, "etcd")?);
    started.push(process::spawn(layout, &manifest, "containerd")?);
    started.push(process::spawn(layout, &manifest, "kube-apiserver")?);

    let sock = layout.containerd_socket();
    health::wait_until("containerd socket", START_TIMEOUT, &mut started, || {
        let ok = sock.exists();
        async move { ok }
    })
    .await?;
    // Importing takes well under a second per archive; it overlaps the API server's start.
    let import_layout = layout.clone();
    let imports = tokio::task::spawn_blocking(move || import_images(&import_layout, true));

    let admin = health::client_from(&layout.admin_kubeconfig(), None).await?;
    health::wait_until(
        "kube-apiserver /readyz",
        START_TIMEOUT,
        &mut started,
        || health::https_ok(&admin, "/readyz"),
    )
    .await?;
    say(format!(
        "kube-apiserver ready after {:.1} s",
        start.elapsed().as_secs_f64()
    ));

    for c in [
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ] {
        started.push(process::spawn(layout, &manifest, c)?);
    }
    let images = imports
        .await
        .map_err(|e| ClusterError::Invalid(format!("image import task failed: {e}")))??;
    say(format!("imported {images} image archives"));
    sys::run(
        layout.bin("kubectl"),
        &[
            format!("--kubeconfig={}", layout.admin_kubeconfig().display()),
            "apply".into(),
            "--server-side".into(),
            "--field-manager=champion-cluster".into(),
            "-f".into(),
            layout.config("coredns.yaml").display().to_string(),
        ],
    )?;

    let cm = health::client_from(
        &layout.kubeconfig("controller-manager"),
        Some(&format!(
            "https://127.0.0.1:{}",
            layout::CONTROLLER_MANAGER_PORT
        )),
    )
    .await?;
    let sched = health::client_from(
        &layout.kubeconfig("scheduler"),
        Some(&format!("https://127.0.0.1:{}", layout::SCHEDULER_PORT)),
    )
    .await?;
    let etcd = health::client_from(&layout.kubeconfig("apiserver-etcd-client"), None).await?;
    health::wait_until("etcd /health", START_TIMEOUT, &mut started, || {
        health::https_ok(&etcd, "/health")
    })
    .await?;
    health::wait_until(
        "kube-controller-manager /healthz",
        START_TIMEOUT,
        &mut started,
        || health::https_ok(&cm, "/healthz"),
    )
    .await?;
    health::wait_until(
        "kube-scheduler /healthz",
        START_TIMEOUT,
        &mut started,
        || health::https_ok(&sched, "/healthz"),
    )
    .await?;
    health::wait_until("kubelet /healthz", START_TIMEOUT, &mut started, || async {
        health::http_ok(layout::KUBELET_HEALTHZ_PORT, "/healthz")
    })
    .await?;
    health::wait_until("node Ready", START_TIMEOUT, &mut started, || {
        node_ready(&admin)
    })
    .await?;
    say(format!(
        "node {} Ready after {:.1} s",
        layout::NODE_NAME,
        start.elapsed().as_secs_f64()
    ));
    health::wait_until(
        "kube-proxy /healthz",
        START_TIMEOUT,
        &mut started,
        || async { health::http_ok(layout::KUBE_PROXY_HEALTHZ_PORT, "/healthz") },
    )
    .await?;
    health::wait_until(
        "CoreDNS Deployment Available",
        START_TIMEOUT,
        &mut started,
        || deployment_available(&admin, "kube-system", "coredns"),
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    health::wait_until(
        "ServiceAccount default/default",
        START_TIMEOUT,
        &mut started,
        || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.ok().flatten().is_some() }
        },
    )
    .await?;
    Ok(UpReport {
        reused: false,
        elapsed: start.elapsed(),
        images,
    })
}

/// The archives `up` and `load-images` import: the cache's pause and CoreDNS images (only with
/// `with_cache`) and every `*.tar` of the repository's build/images.
pub fn image_archives(layout: &Layout, with_cache: bool) -> Result<Vec<PathBuf>> {
    let mut archives = Vec::new();
    if with_cache {
        for name in ["pause.tar", "coredns.tar"] {
            let p = layout.cache_images_dir().join(name);
            if !p.is_file() {
                return Err(ClusterError::MissingImage {
                    path: p,
                    hint: "build it with `make components` (tests/cluster/scripts/build-components.sh)",
                });
            }
            archives.push(p);
        }
    }
    if let Ok(entries) = std::fs::read_dir(&layout.images_dir) {
        let mut repo: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        repo.sort();
        archives.extend(repo);
    }
    Ok(archives)
}

/// Imports image archives into containerd's `k8s.io` namespace (where the CRI plugin looks).
pub fn import_images(layout: &Layout, with_cache: bool) -> Result<usize> {
    let archives = image_archives(layout, with_cache)?;
    for a in &archives {
        sys::run(
            layout.bin("ctr"),
            &[
                "--address".to_string(),
                layout.containerd_socket().display().to_string(),
                "--namespace".into(),
                "k8s.io".into(),
                "images".into(),
                "import".into(),
                "--platform".into(),
                "linux/amd64".into(),
                a.display().to_string(),
            ],
        )?;
    }
    Ok(archives.len())
}

/// Stops every process the manifest records (matched by pid, start time and boot) and undoes
/// what it lists on the host. Idempotent.
pub fn teardown(layout: &Layout) -> Vec<String> {
    let mut notes = Vec::new();
    let t = Instant::now();
    // kubelet first, so that it does not restart the pods being removed.
    if let Some(pid) = process::recorded_pid(layout, "kubelet") {
        process::terminate(&[pid], Duration::from_secs(5));
        notes.push(format!(
            "stopped kubelet ({:.1} s)",
            t.elapsed().as_secs_f64()
        ));
    }
    if process::recorded_pid(layout, "containerd").is_some() {
        let endpoint = format!("unix://{}", layout.containerd_socket().display());
        let ok = sys::try_run(
            layout.bin("crictl"),
            &[
                "--runtime-endpoint",
                &endpoint,
                "--timeout",
                "20s",
                "rmp",
                "--force",
                "--all",
            ],
        );
        if ok {
            notes.push(format!("removed pods ({:.1} s)", t.elapsed().as_secs_f64()));
        } else {
            notes.push("crictl rmp failed; pods are killed through their cgroups".into());
        }
    }
    // Clients of the API server before it, so it has nothing left to drain; the API server
    // itself waits up to a minute for in-flight requests on SIGTERM, which a throw-away test
    // cluster does not need, so it gets one second before SIGKILL.
    let stages: [(&[&str], u64); 3] = [
        (
            &["kube-proxy", "kube-scheduler", "kube-controller-manager"],
            3,
        ),
        (&["kube-apiserver"], 1),
        (&["etcd", "containerd"], 3),
    ];
    let mut stopped = 0;
    for (names, grace) in stages {
        let pids: Vec<i32> = names
            .iter()
            .filter_map(|c| process::recorded_pid(layout, c))
            .collect();
        stopped += pids.len();
        process::terminate(&pids, Duration::from_secs(grace));
    }
    if stopped > 0 {
        notes.push(format!(
            "stopped {stopped} components ({:.1} s)",
            t.elapsed().as_secs_f64()
        ));
    }
    // Shims, strays and containers: whatever still runs in the cluster's own cgroups (done by
    // `host::clear`, which also covers the debris of a killed session). Never by name.
    notes.extend(host::clear(layout));
    notes
}

/// `down`: tear down under the lock, then remove the lock file too.
pub fn down(layout: &Layout) -> Result<(Duration, Vec<String>)> {
    let start = Instant::now();
    let lock = HostLock::acquire()?;
    let notes = teardown(layout);
    let _ = std::fs::remove_file(layout::LOCK_FILE);
    drop(lock);
    Ok((start.elapsed(), notes))
}

/// One line per component: pid and whether it runs, then the API server and node state.
pub async fn status(layout: &Layout) -> Vec<String> {
    let mut lines = Vec::new();
    for c in layout::COMPONENTS {
        match process::recorded_pid(layout, c) {
            Some(pid) => lines.push(format!("{c:<24} running (pid {pid})")),
            None => lines.push(format!("{c:<24} not running")),
        }
    }
    let healthy = is_healthy(layout).await;
    lines.push(format!(
        "cluster: {}",
        if healthy { "healthy" } else { "not healthy" }
    ));
    lines.push(format!(
        "kubeconfig: {}",
        layout.admin_kubeconfig().display()
    ));
    lines
}
