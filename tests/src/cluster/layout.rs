//! Where the local cluster lives on the host, and the addresses it uses.
//!
//! - `/var/lib/champion-cluster` ([`STATE_DIR`]): PKI, kubeconfigs, component configs, etcd data,
//!   containerd's root, kubelet's root, CNI IPAM state, component logs (`logs/`), and
//!   `host-before.json` (what the host looked like before `up`, so `down` can restore it).
//! - `/run/champion-cluster` ([`RUN_DIR`]): pid files and containerd's sockets and state.
//! - The admin kubeconfig is always [`ADMIN_KUBECONFIG`]; `champion-cluster up` prints it.
//!
//! The node's address is the gateway of the `cni0` bridge: kubelet refuses a loopback node IP,
//! and an address that lives only on a host-local bridge means the API server is reachable from
//! the host and from pods but never from outside the machine.

use std::path::PathBuf;

pub const STATE_DIR: &str = "/var/lib/champion-cluster";
pub const RUN_DIR: &str = "/run/champion-cluster";
/// Serialises `up` and `down` between processes (several test binaries may call `shared()` at
/// once). Outside [`RUN_DIR`] because `down` deletes that directory while holding the lock.
pub const LOCK_FILE: &str = "/run/champion-cluster.lock";
pub const ADMIN_KUBECONFIG: &str = "/var/lib/champion-cluster/admin.kubeconfig";

pub const NODE_NAME: &str = "champion-node";
pub const BRIDGE: &str = "cni0";
pub const NODE_IP: &str = "10.244.0.1";
/// The pod range of the one node (the bridge's subnet).
pub const POD_SUBNET: &str = "10.244.0.0/24";
/// The cluster-wide pod range the controller-manager allocates node CIDRs from; the node gets
/// its first /24, which is [`POD_SUBNET`].
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
pub const KUBELET_PORT: u16 = 10250;
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
pub const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;

/// The pause image containerd pins as the sandbox image (imported from the cache, never pulled).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
pub const COREDNS_IMAGE: &str = "docker.io/champion/coredns:v1.15.0";

/// Directories outside our own two that kubelet, containerd and CNI write to whatever they are
/// told; `down` removes the ones that did not exist before `up`.
pub const FOREIGN_DIRS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
];

/// Mount points under these prefixes belong to the cluster and are unmounted by `down`.
pub const MOUNT_PREFIXES: &[&str] = &[
    STATE_DIR,
    RUN_DIR,
    "/var/lib/kubelet",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
];

/// The long-running processes of the cluster, in start order.
pub const COMPONENTS: &[&str] = &[
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// Executables whose processes belong to the cluster even when no pid file names them (a shim
/// outlives containerd; a killed session leaves daemons whose pid files were lost).
pub const CLUSTER_EXECUTABLES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
];

/// Paths of the component binaries and of the repository's image archives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub cache: PathBuf,
    pub state: PathBuf,
    pub run: PathBuf,
    pub images_dir: PathBuf,
}

impl Layout {
    /// `CHAMPION_CACHE` (default `~/.cache/champion`) holds the binaries built by
    /// build-components.sh; `CHAMPION_IMAGES_DIR` (default `<repo>/build/images`) the archives of
    /// `make images`.
    pub fn from_env() -> Layout {
        let cache = std::env::var_os("CHAMPION_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"));
                home.join(".cache/champion")
            });
        let images_dir = std::env::var_os("CHAMPION_IMAGES_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let manifest = std::path::PathBuf::from(
                    std::env::var_os("CARGO_MANIFEST_DIR")
                        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
                );
                manifest.parent().unwrap_or(&manifest).join("build/images")
            });
        Layout {
            cache,
            state: PathBuf::from(STATE_DIR),
            run: PathBuf::from(RUN_DIR),
            images_dir,
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.cache.join("bin").join(name)
    }
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.cache.join("cni/bin")
    }
    pub fn cache_images_dir(&self) -> PathBuf {
        self.cache.join("images")
    }
    pub fn pki(&self) -> PathBuf {
        self.state.join("pki")
    }
    pub fn pki_file(&self, name: &str) -> PathBuf {
        self.pki().join(name)
    }
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.state.join(format!("{user}.kubeconfig"))
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        PathBuf::from(ADMIN_KUBECONFIG)
    }
    pub fn config(&self, name: &str) -> PathBuf {
        self.state.join("config").join(name)
    }
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }
    pub fn pids(&self) -> PathBuf {
        self.run.join("pids")
    }
    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.pids().join(format!("{component}.pid"))
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.state.join("containerd")
    }
    pub fn containerd_state(&self) -> PathBuf {
        self.run.join("containerd")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_state().join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.state.join("cni/net.d")
    }
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.state.join("cni/ipam")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.state.join("kubelet")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.state.join("etcd")
    }
    pub fn host_before(&self) -> PathBuf {
        self.state.join("host-before.json")
    }
    /// Where tests put hostPath volumes, so that `down` removes them with the state dir.
    pub fn host_path_root(&self) -> PathBuf {
        self.state.join("hostpath")
    }
}
