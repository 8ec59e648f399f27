//! Starting the components detached from the caller and stopping them by pid.
//!
//! Each component runs in its own session (setsid), with stdin from /dev/null and its output in
//! `logs/<name>.log`, so it outlives `champion-cluster up` and a Ctrl-C in the terminal that ran
//! it. Its pid goes to `pids/<name>.pid`; `down` signals that pid only after checking that
//! /proc/<pid>/exe is still the binary it started (a pid may have been reused since).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::{self, Layout};
use super::sys::{create_dir, write_file};
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
            "--allow-privileged=true".into(),
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

/// Starts `name` detached (own session, logs to its file) and records its pid.
pub fn spawn(layout: &Layout, name: &'static str) -> Result<Started> {
    let bin = layout.bin(name);
    if !bin.is_file() {
        return Err(ClusterError::MissingBinary { path: bin });
    }
    create_dir(&layout.logs())?;
    create_dir(&layout.pids())?;
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
    let mut cmd = Command::new(&bin);
    cmd.args(args(layout, name))
        .env("PATH", path_env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it only makes the
    // child a session (and process-group) leader so terminal signals and the caller's exit do
    // not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
        command: bin.display().to_string(),
        source,
    })?;
    write_file(&layout.pid_file(name), child.id().to_string(), 0o644)?;
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

/// The pid recorded for `name`, if it still runs the component's binary.
pub fn recorded_pid(layout: &Layout, name: &str) -> Option<i32> {
    let text = std::fs::read_to_string(layout.pid_file(name)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let exe = exe_of(pid)?;
    (exe == layout.bin(name)).then_some(pid)
}

/// Live processes whose executable is one of the cluster's daemons (by file name, from any
/// cache dir), whatever started them.
pub fn cluster_processes() -> Vec<(i32, PathBuf)> {
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
/// waits for them to disappear.
pub fn terminate(pids: &[i32], grace: Duration) {
    for &pid in pids {
        // SAFETY: kill(2) with a pid we checked belongs to a cluster binary.
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

/// Kills every process listed in the `cgroup.procs` files under `root` (recursively).
pub fn kill_cgroup_tree(root: &Path) -> usize {
    let mut pids = Vec::new();
    collect_cgroup_pids(root, &mut pids);
    for &pid in &pids {
        // SAFETY: the pid is inside the cluster's kubepods cgroup, i.e. a container process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

fn collect_cgroup_pids(dir: &Path, out: &mut Vec<i32>) {
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
