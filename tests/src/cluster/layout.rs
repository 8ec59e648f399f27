//! Where the local cluster lives on the host, and the addresses it uses.
//!
//! - `/var/lib/champion-cluster` ([`STATE_DIR`]): PKI, kubeconfigs, component configs, etcd data,
//!   containerd's root, kubelet's root, CNI config and IPAM state, pod logs, component logs
//!   (`logs/`), and `manifest.jsonl` (everything `up` created, written before creating it, so
//!   `down` removes exactly that — also after the processes of a session were killed).
//! - `/run/champion-cluster` ([`RUN_DIR`]): pid files, containerd's socket and state, the shim
//!   sockets, runc's state and the pods' network namespaces.
//! - The cgroup `champion-cluster` in every hierarchy ([`CGROUP`]).
//! - The admin kubeconfig is always [`ADMIN_KUBECONFIG`]; `champion-cluster up` prints it.
//!
//! The node's address is the gateway of the `champion0` bridge: kubelet refuses a loopback node IP,
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
/// Our own bridge name (`cni0` is flannel's and k3s's, `docker0` Docker's, `podman0`/`cni-podman0`
/// podman's).
pub const BRIDGE: &str = "champion0";
/// The bridge's own MAC address (locally administered). Set explicitly, so the bridge keeps it:
/// a bridge without one takes the lowest MAC of its ports and changes it whenever a pod's veth
/// with a lower one comes or goes, and until the pods learn the new address again their answers
/// to the node (the Service hop from the host included) are lost.
pub const BRIDGE_MAC: &str = "02:63:68:61:6d:70";
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

/// The cluster's own cgroup, created in every v1 hierarchy (and in the v2 one when mounted):
/// the daemons run in `<CGROUP>/daemons` (so shims and strays are found by cgroup, never by
/// name) and kubelet's `cgroupRoot` puts every pod under `<CGROUP>/kubepods`.
pub const CGROUP: &str = "champion-cluster";

/// The few well-known paths a component writes whatever it is told. Each is said plainly here
/// and in the README:
/// - kubelet always serves device plugins at `/var/lib/kubelet/device-plugins/kubelet.sock`
///   (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1.KubeletSocket`, no flag) and deletes the
///   other sockets in that directory when it starts, so `up` refuses when that directory already
///   exists (another kubelet — k3s, kubeadm, minikube — owns it);
/// - kubelet links every container log into `/var/log/containers` (no flag; `podLogsDir` moves
///   only the log files, which live in our state dir). In a directory that existed before, only
///   the links pointing into our pod log dir are removed;
/// - libcni caches each attachment result in `/var/lib/cni/results` (`libcni.CacheDir`, which
///   containerd does not expose). In a directory that existed before, only files named after our
///   network ([`CNI_NETWORK`]) are removed.
///
/// `up` records in the manifest the ones it had to create, before creating them; `down` removes
/// exactly those.
pub const WELL_KNOWN_DIRS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
    "/var/lib/cni",
    "/var/lib/cni/results",
];
/// kubelet's device-plugin directory (see [`WELL_KNOWN_DIRS`]).
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
pub const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
pub const CNI_RESULTS: &str = "/var/lib/cni/results";
/// The CNI network name; libcni's cache files are `<name>-<container id>-<ifname>`.
pub const CNI_NETWORK: &str = "champion-cluster";

/// Paths Docker, containerd, podman, CNI and k3s use by default. The cluster never writes there;
/// the cleanup self-test lists them (and their contents) before and after to prove it.
pub const OTHERS_PATHS: &[&str] = &[
    "/run/containerd",
    "/var/lib/containerd",
    "/etc/containerd",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/cdi",
    "/var/run/cdi",
    "/run/docker",
    "/var/lib/docker",
    "/run/k3s",
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

/// Executable names of the cluster's daemons. Used only to *describe* a host (the cleanup
/// self-test's snapshot, the owner named when `up` refuses) — never to pick a process to signal.
pub const CLUSTER_EXECUTABLES: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "k3s",
    "dockerd",
];

/// Loopback ports the control plane listens on; `up` refuses when another program holds one.
pub const LOOPBACK_PORTS: &[u16] = &[
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    2381,
    CONTROLLER_MANAGER_PORT,
    SCHEDULER_PORT,
    KUBELET_HEALTHZ_PORT,
    10249,
    KUBE_PROXY_HEALTHZ_PORT,
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
    /// containerd's shim sockets (`[plugins."io.containerd.shim.v1.manager"] socket_dir`;
    /// default `/run/containerd/s`). Short: a socket path must fit in 108 bytes.
    pub fn shim_socket_dir(&self) -> PathBuf {
        self.run.join("s")
    }
    /// runc's state (`Root` of the runc options; default `/run/containerd/runc`).
    pub fn runc_root(&self) -> PathBuf {
        self.run.join("runc")
    }
    /// kubelet's `podLogsDir` (default `/var/log/pods`).
    pub fn pod_logs(&self) -> PathBuf {
        self.state.join("pod-logs")
    }
    /// The manifest of everything `up` created (see `manifest.rs`).
    pub fn manifest(&self) -> PathBuf {
        self.state.join("manifest.jsonl")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.state.join("kubelet")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.state.join("etcd")
    }
    /// Where tests put hostPath volumes, so that `down` removes them with the state dir.
    pub fn host_path_root(&self) -> PathBuf {
        self.state.join("hostpath")
    }
}
