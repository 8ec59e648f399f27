//! Foreign state for the cleanup self-test: what another container engine or Kubernetes leaves on
//! a workstation, planted before `up` so the test can prove `up` + `down` leave it untouched —
//! processes named `containerd` and `kubelet`, files in /etc/cni/net.d and /var/lib/kubelet, a
//! `KUBE-FOREIGN` iptables chain with a jump to it, a foreign nft table, a netns named `other`
//! and a flipped `net.ipv4.ip_forward`. Also a LAN neighbour (a netns routed via the host) that
//! must not reach what the cluster serves, and Docker when a daemon answers here.
//!
//! Everything planted is removed again by [`Planted::remove`], also when the test fails.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::layout::{self, Layout};
use super::manifest;
use super::sys::{output, run, try_run};
use crate::error::{ClusterError, Result};

const FOREIGN_CHAIN: &str = "KUBE-FOREIGN";
const FOREIGN_RULE: &[&str] = &[
    "INPUT",
    "-m",
    "comment",
    "--comment",
    "champion-selftest-foreign",
    "-j",
    FOREIGN_CHAIN,
];
const FOREIGN_NFT: (&str, &str) = ("inet", "foreign_selftest");
const FOREIGN_NETNS: &str = "other";
const DOCKER_CONTAINER: &str = "champion-selftest-docker";
const FILES: &[(&str, &str)] = &[
    (
        "/etc/cni/net.d/keep.conf",
        "{\"cniVersion\":\"1.0.0\",\"name\":\"keep\",\"type\":\"bridge\"}\n",
    ),
    ("/var/lib/kubelet/keep", "kept by someone else\n"),
];

/// What was planted, and how to tell it is unchanged.
pub struct Planted {
    children: Vec<(String, Child, u64)>,
    tmp: PathBuf,
    created_dirs: Vec<PathBuf>,
    created_files: Vec<PathBuf>,
    chain_before: String,
    nft_before: String,
    netns_planted: bool,
    ip_forward_before: String,
    ip_forward_planted: String,
    docker: Option<String>,
    pub docker_note: String,
}

fn text(program: &str, args: &[&str]) -> String {
    output(program, args)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Planted {
    /// Plants everything; on an error, removes what was planted so far.
    pub fn plant(layout: &Layout) -> Result<Planted> {
        let mut p = Planted {
            children: Vec::new(),
            tmp: std::env::temp_dir().join(format!("champion-foreign-{}", std::process::id())),
            created_dirs: Vec::new(),
            created_files: Vec::new(),
            chain_before: String::new(),
            nft_before: String::new(),
            netns_planted: false,
            ip_forward_before: ip_forward(),
            ip_forward_planted: String::new(),
            docker: None,
            docker_note: String::new(),
        };
        match p.plant_all(layout) {
            Ok(()) => Ok(p),
            Err(e) => {
                p.remove();
                Err(e)
            }
        }
    }

    fn plant_all(&mut self, layout: &Layout) -> Result<()> {
        // Processes named like the cluster's daemons, started from a temp dir: copies of sleep.
        std::fs::create_dir_all(&self.tmp)
            .map_err(ClusterError::io("creating", self.tmp.clone()))?;
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| ClusterError::Invalid("no sleep binary to copy".into()))?;
        for name in ["containerd", "kubelet"] {
            let bin = self.tmp.join(name);
            std::fs::copy(sleep, &bin).map_err(ClusterError::io("copying sleep to", &bin))?;
            let mut cmd = Command::new(&bin);
            cmd.arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
                command: bin.display().to_string(),
                source,
            })?;
            let start = manifest::start_time(child.id() as i32).unwrap_or_default();
            self.children.push((name.to_string(), child, start));
        }
        for (file, content) in FILES {
            let path = Path::new(file);
            let mut missing = Vec::new();
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d.exists() {
                    break;
                }
                missing.push(d.to_path_buf());
                dir = d.parent();
            }
            // Outermost first, so removal (reversed) goes innermost first.
            self.created_dirs.extend(missing.into_iter().rev());
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(ClusterError::io("creating", parent))?;
            }
            if path.exists() {
                return Err(ClusterError::Invalid(format!(
                    "{file} already exists; the self-test plants its own and will not overwrite it"
                )));
            }
            self.created_files.push(path.to_path_buf());
            std::fs::write(path, content).map_err(ClusterError::io("writing", path))?;
        }
        run("iptables", &["-N", FOREIGN_CHAIN])?;
        run("iptables", &["-A", FOREIGN_CHAIN, "-j", "RETURN"])?;
        let mut add = vec!["-A"];
        add.extend_from_slice(FOREIGN_RULE);
        run("iptables", &add)?;
        self.chain_before = text("iptables", &["-S", FOREIGN_CHAIN]);
        let (family, table) = FOREIGN_NFT;
        run("nft", &["add", "table", family, table])?;
        run("nft", &["add", "chain", family, table, "keep"])?;
        self.nft_before = text("nft", &["list", "table", family, table]);
        if !text("ip", &["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(FOREIGN_NETNS))
        {
            run("ip", &["netns", "add", FOREIGN_NETNS])?;
            self.netns_planted = true;
        }
        let flipped = if self.ip_forward_before == "1" {
            "0"
        } else {
            "1"
        };
        std::fs::write("/proc/sys/net/ipv4/ip_forward", flipped)
            .map_err(ClusterError::io("writing", "/proc/sys/net/ipv4/ip_forward"))?;
        self.ip_forward_planted = flipped.to_string();
        self.start_docker(layout);
        Ok(())
    }

    /// A container of Docker's own, when a Docker daemon answers here (it needs no registry: the
    /// pause image is loaded from the cache's archive). Where none answers, says why.
    fn start_docker(&mut self, layout: &Layout) {
        let info = output("docker", &["info", "--format", "{{.ServerVersion}}"]);
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                self.docker_note = format!(
                    "Docker check skipped: `docker info` fails here ({}); it runs where a Docker daemon answers",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
            Err(e) => {
                self.docker_note = format!(
                    "Docker check skipped: no docker client ({e}); it runs where a Docker daemon answers"
                );
                return;
            }
        }
        // A container of this name can only be the self-test's own, left by a run cut short.
        try_run("docker", &["rm", "-f", DOCKER_CONTAINER]);
        let archive = layout.cache_images_dir().join("pause.tar");
        let loaded = try_run("docker", &["load", "-i", &archive.display().to_string()]);
        let started = loaded
            && try_run(
                "docker",
                &[
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--name",
                    DOCKER_CONTAINER,
                    layout::PAUSE_IMAGE,
                ],
            );
        if started {
            self.docker = Some(DOCKER_CONTAINER.to_string());
            self.docker_note = "Docker daemon answers: a Docker container runs throughout".into();
        } else {
            try_run("docker", &["rm", "-f", DOCKER_CONTAINER]);
            self.docker_note = "Docker daemon answers but the pause image could not be loaded or run; Docker container check skipped (socket still checked)".into();
            self.docker = Some(String::new());
        }
    }

    /// Whether Docker (when present) still answers and its container still runs.
    pub fn docker_ok(&self) -> std::result::Result<(), String> {
        let Some(name) = &self.docker else {
            return Ok(());
        };
        if !try_run("docker", &["info", "--format", "{{.ServerVersion}}"]) {
            return Err("the Docker daemon stopped answering".into());
        }
        if !name.is_empty() {
            let state = text("docker", &["inspect", "-f", "{{.State.Running}}", name]);
            if state.trim() != "true" {
                return Err(format!("Docker container {name} is no longer running"));
            }
        }
        Ok(())
    }

    /// Every planted thing still there and unchanged; the list of what is not.
    pub fn check(&mut self) -> Vec<String> {
        let mut bad = Vec::new();
        for (name, child, start) in &mut self.children {
            let pid = child.id() as i32;
            let alive = matches!(child.try_wait(), Ok(None));
            if !alive || manifest::start_time(pid) != Some(*start) {
                bad.push(format!(
                    "the foreign process named {name} (pid {pid}) was stopped"
                ));
            }
        }
        for (file, content) in FILES {
            match std::fs::read_to_string(file) {
                Ok(c) if c == *content => {}
                Ok(_) => bad.push(format!("{file} changed")),
                Err(e) => bad.push(format!("{file} is gone: {e}")),
            }
        }
        let chain = text("iptables", &["-S", FOREIGN_CHAIN]);
        if chain != self.chain_before {
            bad.push(format!(
                "iptables chain {FOREIGN_CHAIN} changed: before {:?}, after {chain:?}",
                self.chain_before
            ));
        }
        let mut check = vec!["-C"];
        check.extend_from_slice(FOREIGN_RULE);
        if !try_run("iptables", &check) {
            bad.push(format!("the INPUT rule jumping to {FOREIGN_CHAIN} is gone"));
        }
        let (family, table) = FOREIGN_NFT;
        let nft = text("nft", &["list", "table", family, table]);
        if nft != self.nft_before {
            bad.push(format!("nft table {family} {table} changed or is gone"));
        }
        if !text("ip", &["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(FOREIGN_NETNS))
        {
            bad.push(format!("netns {FOREIGN_NETNS} is gone"));
        }
        if ip_forward() != self.ip_forward_planted {
            bad.push(format!(
                "net.ipv4.ip_forward is {}, was set to {} before up",
                ip_forward(),
                self.ip_forward_planted
            ));
        }
        if let Err(e) = self.docker_ok() {
            bad.push(e);
        }
        bad
    }

    /// Removes everything planted (idempotent; never fails).
    pub fn remove(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let _ = std::fs::remove_dir_all(&self.tmp);
        for f in self.created_files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
        for d in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
        let mut del = vec!["-D"];
        del.extend_from_slice(FOREIGN_RULE);
        while try_run("iptables", &del) {}
        try_run("iptables", &["-F", FOREIGN_CHAIN]);
        try_run("iptables", &["-X", FOREIGN_CHAIN]);
        let (family, table) = FOREIGN_NFT;
        try_run("nft", &["delete", "table", family, table]);
        if self.netns_planted {
            try_run("ip", &["netns", "del", FOREIGN_NETNS]);
            self.netns_planted = false;
        }
        if !self.ip_forward_before.is_empty() {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.ip_forward_before);
        }
        if let Some(name) = self.docker.take()
            && !name.is_empty()
        {
            try_run("docker", &["rm", "-f", &name]);
        }
    }
}

const LAN_NETNS: &str = "champion-lan";
const LAN_HOST_IF: &str = "champlan0";
const LAN_NS_IF: &str = "champlan1";
/// TEST-NET-2 (RFC 5737): never routed anywhere; both ends live on this machine. (Not TEST-NET-1:
/// these VMs number their own eth0 from 192.0.2.0/24.)
const LAN_HOST_IP: &str = "198.51.100.1";
const LAN_NS_IP: &str = "198.51.100.2";

/// A LAN neighbour: a netns joined to the host by a veth pair, routing the cluster's pod and
/// service ranges via the host, as a machine on the same LAN could. Removed on drop.
pub struct LanNeighbour;

impl LanNeighbour {
    pub fn create() -> Result<LanNeighbour> {
        let n = LanNeighbour;
        n.remove();
        let taken = output("ip", &["-o", "-4", "addr", "show"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(" 198.51.100."))
            .unwrap_or(true);
        if taken {
            return Err(ClusterError::Invalid(
                "198.51.100.0/24 is already used on this host; the LAN-neighbour check needs it free".into(),
            ));
        }
        run("ip", &["netns", "add", LAN_NETNS])?;
        run(
            "ip",
            &[
                "link",
                "add",
                LAN_HOST_IF,
                "type",
                "veth",
                "peer",
                "name",
                LAN_NS_IF,
                "netns",
                LAN_NETNS,
            ],
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{LAN_HOST_IP}/30"),
                "dev",
                LAN_HOST_IF,
            ],
        )?;
        run("ip", &["link", "set", LAN_HOST_IF, "up"])?;
        let ns = |args: &[&str]| {
            let mut a = vec!["netns", "exec", LAN_NETNS, "ip"];
            a.extend_from_slice(args);
            run("ip", &a)
        };
        ns(&["addr", "add", &format!("{LAN_NS_IP}/30"), "dev", LAN_NS_IF])?;
        ns(&["link", "set", LAN_NS_IF, "up"])?;
        ns(&["link", "set", "lo", "up"])?;
        for range in [layout::CLUSTER_CIDR, layout::SERVICE_CIDR] {
            ns(&["route", "add", range, "via", LAN_HOST_IP])?;
        }
        Ok(n)
    }

    /// Whether a TCP connection from the neighbour to `addr:port` completes within 2 s.
    pub fn can_connect(&self, addr: &str, port: u16) -> bool {
        let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
        output(
            "ip",
            &[
                "netns", "exec", LAN_NETNS, "timeout", "2", "bash", "-c", &script,
            ],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    /// The neighbour's view of what the cluster serves: (what, reachable). The first line is the
    /// control — a listener on the host's LAN-side address must be reachable, or the route is
    /// broken and the rest proves nothing.
    pub fn probe(&self) -> Result<Vec<(String, bool)>> {
        let listener = std::net::TcpListener::bind((LAN_HOST_IP, 0)).map_err(ClusterError::io(
            "binding a control listener on",
            LAN_HOST_IP,
        ))?;
        let port = listener
            .local_addr()
            .map_err(ClusterError::io("reading the address of", LAN_HOST_IP))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(ClusterError::io("configuring", LAN_HOST_IP))?;
        let mut out = vec![(
            format!("control: host listener {LAN_HOST_IP}:{port}"),
            self.can_connect(LAN_HOST_IP, port),
        )];
        // Drain the accepted control connection, if any.
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf);
        }
        for (what, addr, port) in [
            ("API server", layout::NODE_IP, layout::API_PORT),
            ("kubelet", layout::NODE_IP, layout::KUBELET_PORT),
            (
                "etcd (node address)",
                layout::NODE_IP,
                layout::ETCD_CLIENT_PORT,
            ),
            (
                "etcd (host LAN address)",
                LAN_HOST_IP,
                layout::ETCD_CLIENT_PORT,
            ),
            (
                "API server (host LAN address)",
                LAN_HOST_IP,
                layout::API_PORT,
            ),
            ("kubernetes Service", layout::KUBERNETES_SERVICE_IP, 443),
        ] {
            out.push((
                format!("{what} {addr}:{port}"),
                self.can_connect(addr, port),
            ));
        }
        Ok(out)
    }

    fn remove(&self) {
        try_run("ip", &["link", "del", LAN_HOST_IF]);
        try_run("ip", &["netns", "del", LAN_NETNS]);
    }
}

impl Drop for LanNeighbour {
    fn drop(&mut self) {
        self.remove();
    }
}
