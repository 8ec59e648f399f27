//! The files the components read: kubeconfigs, containerd's TOML, the CNI network, kubelet's and
//! kube-proxy's configuration, and the CoreDNS manifests. Pure string builders plus one function
//! that writes them all, so a reader sees every setting of the cluster in one place.

use super::layout::{self, Layout};
use super::sys::write_file;
use crate::error::Result;

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

/// A kubeconfig for `user` (its certificate is `pki/<user>.crt`) against `server`.
pub fn kubeconfig(layout: &Layout, server: &str, user: &str) -> String {
    let ca = path(layout.pki_file("ca.crt"));
    let crt = path(layout.pki_file(&format!("{user}.crt")));
    let key = path(layout.pki_file(&format!("{user}.key")));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: champion
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: champion
  context:
    cluster: champion
    user: {user}
    namespace: default
current-context: champion
"
    )
}

pub fn api_server_url() -> String {
    format!("https://{}:{}", layout::NODE_IP, layout::API_PORT)
}

/// containerd 2.x: its own root, state and socket under our dirs, and so are the shim sockets
/// (`socket_dir`, default /run/containerd/s), runc's state (`Root`, default
/// /run/containerd/runc), the pods' netns (`netns_mounts_under_state_dir`, default /run/netns)
/// and the CDI spec dirs (default /etc/cdi, /var/run/cdi); the CRI plugin pinned to the
/// imported pause image; `restrict_oom_score_adj` because root here lacks CAP_SYS_RESOURCE and
/// runc cannot lower a sandbox's oom_score_adj to -998 (every sandbox fails without it); netns
/// mounts under the state dir; NRI off (it would open /var/run/nri); every registry redirected
/// to a closed loopback port ([`REGISTRY_HOSTS_TOML`]).
pub fn containerd_toml(layout: &Layout) -> String {
    let root = path(layout.containerd_root());
    let state = path(layout.containerd_state());
    let sock = path(layout.containerd_socket());
    let cni_bin = path(layout.cni_bin_dir());
    let cni_conf = path(layout.cni_conf_dir());
    let pause = layout::PAUSE_IMAGE;
    let registry_dir = path(layout.config("registry"));
    let shim_sockets = path(layout.shim_socket_dir());
    let runc_root = path(layout.runc_root());
    let cdi = path(layout.state.join("cdi"));
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{shim_sockets}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{registry_dir}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = ["{cdi}"]
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{runc_root}"
        SystemdCgroup = false
"#
    )
}

/// containerd's host configuration for every registry (`_default`): an image that was not
/// imported fails to pull at once from a closed loopback port instead of sending a DNS query
/// and a connection off the machine.
pub const REGISTRY_HOSTS_TOML: &str = "server = \"http://127.0.0.1:1\"\n";

/// The pod network: the pre-created `champion0` bridge (with the node address) as the pods' router, host-local IPAM on the node's
/// /24 with its state in our dir, no masquerade (nothing is meant to leave the machine) and a
/// default route so pods reach Service IPs through the node, where kube-proxy DNATs them.
pub fn cni_conflist(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": layout::CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": layout::BRIDGE,
            // Not a gateway: the bridge plugin would then switch on forwarding for the whole
            // host (net.ipv4.ip_forward=1). The bridge already has the node address (`setup`)
            // and forwards on its own; pods get their default route from the IPAM result.
            "isGateway": false,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": layout.cni_ipam_dir(),
                "ranges": [[{"subnet": layout::POD_SUBNET, "gateway": layout::NODE_IP}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": layout::NODE_IP}]
            }
        }]
    })
    .to_string()
}

/// kubelet: webhook authentication and authorization with anonymous access off, cgroupfs on the
/// cgroup v1 host (`failCgroupV1: false`), pods under the cluster's own cgroup (`cgroupRoot`)
/// and their logs in its state dir (`podLogsDir`; the links in /var/log/containers cannot be
/// moved, see `layout::WELL_KNOWN_DIRS`), cluster DNS, and image GC effectively off so the
/// imported images (which cannot be pulled again) are never collected.
pub fn kubelet_yaml(layout: &Layout) -> String {
    let ca = path(layout.pki_file("ca.crt"));
    let crt = path(layout.pki_file("kubelet.crt"));
    let key = path(layout.pki_file("kubelet.key"));
    let sock = path(layout.containerd_socket());
    let resolv = path(layout.config("resolv.conf"));
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: {port}
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {crt}
tlsPrivateKeyFile: {key}
containerRuntimeEndpoint: unix://{sock}
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
podLogsDir: {pod_logs}
failCgroupV1: false
failSwapOn: false
clusterDNS:
- {dns}
clusterDomain: {domain}
resolvConf: {resolv}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
nodeStatusReportFrequency: 10s
syncFrequency: 10s
",
        node_ip = layout::NODE_IP,
        cgroup = layout::CGROUP,
        pod_logs = path(layout.pod_logs()),
        port = layout::KUBELET_PORT,
        healthz = layout::KUBELET_HEALTHZ_PORT,
        dns = layout::DNS_SERVICE_IP,
        domain = layout::CLUSTER_DOMAIN,
    )
}

/// kube-proxy in iptables mode; NodePorts open on the node address only, never on eth0; the
/// host's conntrack sysctls left as they are (timeouts 0 = do not set).
pub fn kube_proxy_yaml(layout: &Layout) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {node}
bindAddress: {node_ip}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:10249
mode: iptables
clusterCIDR: {cluster_cidr}
nodePortAddresses:
- {node_ip}/32
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
",
        kubeconfig = path(layout.kubeconfig("kube-proxy")),
        node = layout::NODE_NAME,
        node_ip = layout::NODE_IP,
        healthz = layout::KUBE_PROXY_HEALTHZ_PORT,
        cluster_cidr = layout::CLUSTER_CIDR,
    )
}

/// The resolv.conf kubelet gives pods with `dnsPolicy: Default`: deliberately no nameserver, so
/// nothing in the cluster ever asks the host's (external) resolver.
pub const RESOLV_CONF: &str =
    "# champion local cluster: no upstream resolver; cluster names are answered by CoreDNS only\n";

/// CoreDNS answers `cluster.local` and reverse lookups from the kubernetes plugin and forwards
/// nothing: a name outside the cluster gets no answer instead of a packet off the machine.
pub fn coredns_manifests() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes {domain} in-addr.arpa ip6.arpa {{
            pods insecure
            ttl 30
        }}
        cache 30
        loop
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations:
      - key: node.kubernetes.io/not-ready
        operator: Exists
        effect: NoSchedule
      securityContext:
        runAsUser: 65532
        runAsGroup: 65532
        runAsNonRoot: true
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 1
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          periodSeconds: 10
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
          limits: {{memory: 128Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: {dns_ip}
  selector:
    k8s-app: kube-dns
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#,
        domain = layout::CLUSTER_DOMAIN,
        image = layout::COREDNS_IMAGE,
        dns_ip = layout::DNS_SERVICE_IP,
    )
}

/// Writes every kubeconfig and component configuration under the state dir.
pub fn write_all(layout: &Layout) -> Result<()> {
    let api = api_server_url();
    for user in [
        "admin",
        "controller-manager",
        "scheduler",
        "kubelet",
        "kube-proxy",
    ] {
        write_file(
            &layout.kubeconfig(user),
            kubeconfig(layout, &api, user),
            0o600,
        )?;
    }
    // The health checks reuse the kube client as a plain mTLS HTTP client against etcd.
    let etcd = format!("https://127.0.0.1:{}", layout::ETCD_CLIENT_PORT);
    write_file(
        &layout.kubeconfig("apiserver-etcd-client"),
        kubeconfig(layout, &etcd, "apiserver-etcd-client"),
        0o600,
    )?;
    write_file(
        &layout.config("containerd.toml"),
        containerd_toml(layout),
        0o644,
    )?;
    write_file(
        &layout.cni_conf_dir().join("10-champion.conflist"),
        cni_conflist(layout),
        0o644,
    )?;
    write_file(&layout.config("kubelet.yaml"), kubelet_yaml(layout), 0o644)?;
    write_file(
        &layout.config("kube-proxy.yaml"),
        kube_proxy_yaml(layout),
        0o644,
    )?;
    write_file(&layout.config("resolv.conf"), RESOLV_CONF, 0o644)?;
    write_file(
        &layout.config("registry").join("_default/hosts.toml"),
        REGISTRY_HOSTS_TOML,
        0o644,
    )?;
    write_file(&layout.config("coredns.yaml"), coredns_manifests(), 0o644)?;
    Ok(())
}
