//! Starting the components detached from the caller and stopping them by pid.
//!
//! Each component runs in its own session (setsid), with stdin from /dev/null and its output in
//! `logs/<name>.log`, so it outlives `champion-cluster up` and a Ctrl-C in the terminal that ran
//! it. Before it execs, it joins the cluster's own cgroup (`<hierarchy>/champion-cluster/daemons`),
//! so everything it starts (containerd's shims) is found there too. Its pid, start time and boot
//! id go to the manifest; `down` signals a recorded process only while all three still match,
//! and otherwise only what runs in the cluster's cgroups. Nothing is ever picked by name.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::{self, Layout};
use super::manifest::{self, Entry, Manifest};
use super::sys::create_dir;
use crate::error::{ClusterError, Result};

/// The command line of one component.
pub fn args(layout: &Layout, component: &str) -> Vec<String> {
    let pki = |f: &str| layout.pki_file(f).display().to_string();
    let kc = |u: &str| layout.kubeconfig(u).display().to_string();
    let cfg = |f: &str| layout.config(f).display().to_string();
    let node_ip = layout::NODE_IP;
    let v: Vec<String> = match component {
        "etcd" => vec![
            "--name=champion".into(),
            format!("--data-dir={}", layout.etcd_data().display()),
            format!(
                "--listen-client-urls=https://127.0.0.1:{}",
                layout::ETCD_CLIENT_PORT
            ),
            format!(
                "--advertise-client-urls=https://127.0.0.1:{}",
                layout::ETCD_CLIENT_PORT
            ),
            format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                layout::ETCD_PEER_PORT
            ),
            format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                layout::ETCD_PEER_PORT
            ),
            format!(
                "--initial-cluster=champion=http://127.0.0.1:{}",
                layout::ETCD_PEER_PORT
            ),
            "--listen-metrics-urls=http://127.0.0.1:2381".into(),
            format!("--cert-file={}", pki("etcd-server.crt")),
            format!("--key-file={}", pki("etcd-server.key")),
            format!("--trusted-ca-file={}", pki("ca.crt")),
            "--client-cert-auth=true".into(),
            // A test cluster: durability across power loss is not worth an fsync per write.
            "--unsafe-no-fsync=true".into(),
            "--snapshot-count=10000".into(),
            "--log-level=warn".into(),
        ],
        "containerd" => vec![format!("--config={}", cfg("containerd.toml"))],
        "kube-apiserver" => vec![
            format!("--advertise-address={node_ip}"),
            format!("--bind-address={node_ip}"),
            format!("--secure-port={}", layout::API_PORT),
            format!(
                "--etcd-servers=https://127.0.0.1:{}",
                layout::ETCD_CLIENT_PORT
            ),
            format!("--etcd-cafile={}", pki("ca.crt")),
            format!("--etcd-certfile={}", pki("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", pki("apiserver-etcd-client.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!(
                "--kubelet-client-certificate={}",
                pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                pki("apiserver-kubelet-client.key")
            ),
            format!("--kubelet-certificate-authority={}", pki("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            format!("--service-cluster-ip-range={}", layout::SERVICE_CIDR),
            format!(
                "--service-account-issuer=https://kubernetes.default.svc.{}",
                layout::CLUSTER_DOMAIN
            ),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            // No test or chart needs a privileged container; one would own the host.
            "--allow-privileged=false".into(),
            "--profiling=false".into(),
            "--event-ttl=1h".into(),
            format!(
                "--requestheader-client-ca-file={}",
                pki("front-proxy-ca.crt")
            ),
            format!(
                "--requestheader-allowed-names={}",
                super::pki::FRONT_PROXY_CLIENT
            ),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!("--proxy-client-cert-file={}", pki("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", pki("front-proxy-client.key")),
        ],
        "kube-controller-manager" => vec![
            format!("--kubeconfig={}", kc("controller-manager")),
            format!("--authentication-kubeconfig={}", kc("controller-manager")),
            format!("--authorization-kubeconfig={}", kc("controller-manager")),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", layout::CONTROLLER_MANAGER_PORT),
            format!("--tls-cert-file={}", pki("controller-manager.crt")),
            format!("--tls-private-key-file={}", pki("controller-manager.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            format!("--cluster-signing-cert-file={}", pki("ca.crt")),
            format!("--cluster-signing-key-file={}", pki("ca.key")),
            format!("--root-ca-file={}", pki("ca.crt")),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            "--use-service-account-credentials=true".into(),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            "--allocate-node-cidrs=true".into(),
            format!("--cluster-cidr={}", layout::CLUSTER_CIDR),
            "--node-cidr-mask-size=24".into(),
            format!("--service-cluster-ip-range={}", layout::SERVICE_CIDR),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ],
        "kube-scheduler" => vec![
            format!("--kubeconfig={}", kc("scheduler")),
            format!("--authentication-kubeconfig={}", kc("scheduler")),
            format!("--authorization-kubeconfig={}", kc("scheduler")),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", layout::SCHEDULER_PORT),
            format!("--tls-cert-file={}", pki("scheduler.crt")),
            format!("--tls-private-key-file={}", pki("scheduler.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ],
        "kubelet" => vec![
            format!("--config={}", cfg("kubelet.yaml")),
            format!("--kubeconfig={}", kc("kubelet")),
            format!("--root-dir={}", layout.kubelet_root().display()),
            // Its default is the literal /var/lib/kubelet/pki, not relative to --root-dir.
            format!("--cert-dir={}", layout.kubelet_root().join("pki").display()),
            format!("--hostname-override={}", layout::NODE_NAME),
            format!("--node-ip={node_ip}"),
        ],
        "kube-proxy" => vec![format!("--config={}", cfg("kube-proxy.yaml"))],
        _ => vec![],
    };
    v
}

/// A component started by this process; kept so that start-up can notice an early exit.
pub struct Started {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Started {
    /// Fails when the component has already exited, naming its log.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ClusterError::ComponentExited {
                component: self.name,
                status: status.to_string(),
                log: self.log.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// The cgroup directories, one per hierarchy, that daemons join (`<CGROUP>/daemons`). cpuset is
/// left out: a new cpuset cgroup has no CPUs until configured, and nothing needs it there.
pub fn daemon_cgroups() -> Vec<PathBuf> {
    super::host::cgroup_hierarchies()
        .into_iter()
        .filter(|h| !h.ends_with("cpuset"))
        .map(|h| h.join(layout::CGROUP).join("daemons"))
        .collect()
}

/// Starts `name` detached (own session, own cgroup, logs to its file) and records it.
pub fn spawn(layout: &Layout, manifest: &Manifest, name: &'static str) -> Result<Started> {
    let bin = layout.bin(name);
    if !bin.is_file() {
        return Err(ClusterError::MissingBinary { path: bin });
    }
    create_dir(&layout.logs())?;
    let log_path = layout.log(name);
    let log = File::create(&log_path).map_err(ClusterError::io("creating log", &log_path))?;
    let log2 = log
        .try_clone()
        .map_err(ClusterError::io("duplicating log handle", &log_path))?;
    let path_env = format!(
        "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        layout.cache.join("bin").display(),
        layout.cni_bin_dir().display()
    );
    // Prepared before fork: the child may only make async-signal-safe calls.
    let procs: Vec<std::ffi::CString> = daemon_cgroups()
        .iter()
        .filter(|d| d.is_dir())
        .filter_map(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok()
        })
        .collect();
    let mut cmd = Command::new(&bin);
    cmd.args(args(layout, name))
        .env("PATH", path_env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    // SAFETY: setsid, open, write and close are async-signal-safe and touch no memory of the
    // parent but the CStrings prepared above; setsid makes the child a session (and
    // process-group) leader so terminal signals and the caller's exit do not reach it; writing
    // "0" to cgroup.procs moves the calling process into the cluster's cgroup.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
        command: bin.display().to_string(),
        source,
    })?;
    let pid = child.id() as i32;
    let start_time = manifest::start_time(pid).unwrap_or_default();
    manifest.record(&Entry::Process {
        name: name.to_string(),
        pid,
        start_time,
        boot_id: manifest::boot_id(),
    })?;
    Ok(Started {
        name,
        child,
        log: log_path,
    })
}

/// The executable a live process runs, or None when it is gone (or a zombie).
pub fn exe_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The pid the manifest records for `name`, if that very process (pid, start time, boot) still
/// runs.
pub fn recorded_pid(layout: &Layout, name: &str) -> Option<i32> {
    manifest::Manifest::entries(layout)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Entry::Process {
                name: n,
                pid,
                start_time,
                boot_id,
            } if n == name => Some((pid, start_time, boot_id)),
            _ => None,
        })
        .filter(|(pid, start, boot)| manifest::is_alive(*pid, *start, boot))
        .map(|(pid, _, _)| pid)
}

/// Live processes whose executable has the name of a Kubernetes or container daemon, from any
/// directory, whoever started them. Only to *describe* the host (snapshots, naming the owner of
/// something `up` refuses to touch) — never to choose a process to signal.
pub fn named_processes() -> Vec<(i32, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id() as i32;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(exe) = exe_of(pid) else { continue };
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if layout::CLUSTER_EXECUTABLES.contains(&name) {
            found.push((pid, exe));
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    // A zombie has no exe link; it is as good as gone.
    exe_of(pid).is_some()
}

/// When this process started the component (`up` then `down` in one run, as the cleanup
/// self-test does), collect its exit status so no zombie outlives the teardown. For anyone
/// else's child waitpid fails at once with ECHILD and changes nothing.
fn reap(pid: i32) {
    for _ in 0..100 {
        // SAFETY: waitpid with WNOHANG and a null status pointer only reaps an exited child.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        if r != 0 {
            return; // reaped, or not our child
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM to each pid, waits up to `grace` for all to exit, then SIGKILLs the rest and
/// waits for them to disappear. Callers pass only pids just matched against the manifest
/// ([`recorded_pid`]) or read from the cluster's own cgroups.
pub fn terminate(pids: &[i32], grace: Duration) {
    for &pid in pids {
        // SAFETY: kill(2) with a pid we checked belongs to the cluster.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids {
        reap(pid);
    }
}

/// Kills every process listed in the `cgroup.procs` files under `root` (recursively); `root` is
/// always one of the cluster's own cgroups.
pub fn kill_cgroup_tree(root: &Path) -> usize {
    let mut pids = Vec::new();
    collect_cgroup_pids(root, &mut pids);
    for &pid in &pids {
        // SAFETY: the pid is inside the cluster's own cgroup (a daemon, shim or container).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

pub fn collect_cgroup_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_cgroup_pids(&e.path(), out);
            }
        }
    }
}
