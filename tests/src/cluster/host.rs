//! What the cluster changes on the host, and how it is undone.
//!
//! `setup` records each change in the manifest before making it: the cluster's cgroups, the
//! well-known directories it had to create, the `champion0` bridge, the service-range route, its
//! own iptables chains (egress guard, LAN guard), the sysctls it or kubelet changes (with their
//! old values), and which `KUBE-*` chains and nft tables were there before. `clear` undoes exactly
//! what the manifest lists, from any state — a running cluster or the debris of one whose
//! processes were killed — so it is both `down` and the first step of `up`. It never deletes a
//! chain, table, netns, mount, directory or file it did not record (or that is not under the
//! cluster's own names), and `preflight` refuses to start when something the cluster would need
//! to share is already used by someone else, naming it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::layout::{self, Layout};
use super::manifest::{Entry, Manifest};
use super::sys::{self, output, run, run_with_stdin, try_run};
use crate::error::{ClusterError, Result};

/// The chain that drops pod traffic bound anywhere but the pod range, the service range and the
/// node: evaluated in `raw PREROUTING`, before kube-proxy's DNAT and any ACCEPT it installs.
pub const EGRESS_CHAIN: &str = "CHAMPION-EGRESS";
/// The chain that keeps everything the cluster serves local: a packet for the pod or service
/// range (the API server, kubelet and NodePorts listen on the node address 10.244.0.1) that
/// arrives on any interface but the bridge and loopback is dropped in `raw PREROUTING`, before
/// kube-proxy's DNAT and before routing — also when the host forwards (Docker sets ip_forward).
pub const GUARD_CHAIN: &str = "CHAMPION-GUARD";
const OWN_CHAIN_PREFIX: &str = "CHAMPION-";

/// The chains kubelet and kube-proxy (iptables mode) create: exact names and name prefixes. If
/// any already exists, another Kubernetes owns it and the two would rewrite each other's rules.
const KUBE_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-MARK-DROP",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
    "KUBE-KUBELET-CANARY",
    "KUBE-PROXY-CANARY",
    "KUBE-IPTABLES-HINT",
    "KUBE-LOAD-BALANCER",
];
const KUBE_CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-XLB-",
];
/// The nft tables iptables-nft creates on first use.
const IPTABLES_NFT_TABLES: &[&str] = &["filter", "nat", "raw", "mangle", "security"];

const IP_FORWARD: &str = "net/ipv4/ip_forward";
const ALL_FORWARDING: &str = "net/ipv4/conf/all/forwarding";
/// Set by `setup` (the bridge needs the service traffic between two of its pods to pass
/// iptables for the reply's un-DNAT); restored by `down`.
const BRIDGE_NF: &str = "net/bridge/bridge-nf-call-iptables";
/// kubelet sets these itself when it starts (`setupKernelTunables`, protectKernelDefaults off);
/// `setup` records their values first and `down` writes them back.
const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// What the cleanup self-test compares: the above plus global forwarding (never changed: only
/// the bridge forwards) and the conntrack timeouts kube-proxy would set if not told 0.
const SNAPSHOT_SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    BRIDGE_NF,
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_max",
];

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()
        .map(|v| v.trim().to_string())
}

fn set_sysctl(name: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(name);
    std::fs::write(&p, value).map_err(ClusterError::io("writing sysctl", p))
}

/// The mounted cgroup hierarchies: each v1 controller dir (and the v2 `unified` one) of a hybrid
/// host, or /sys/fs/cgroup itself on a pure v2 host. Symlinked aliases (`cpuacct` ->
/// `cpu,cpuacct`) appear once.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if !p.join("cgroup.procs").exists() {
            continue;
        }
        let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if seen.insert(canon) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The cluster's cgroup in every hierarchy (whether or not it exists).
pub fn own_cgroups() -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(layout::CGROUP))
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `"<tool> <table> <chain>"` for every chain of iptables and ip6tables.
fn all_chains() -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["iptables", "ip6tables"] {
        let Ok(dump) = run(format!("{tool}-save"), &[] as &[&str]) else {
            continue;
        };
        for (table, body) in split_tables(&dump) {
            for l in &body {
                if let Some(c) = l
                    .strip_prefix(':')
                    .and_then(|l| l.split_whitespace().next())
                {
                    out.push(format!("{tool} {table} {c}"));
                }
            }
        }
    }
    out
}

fn is_kube_proxy_chain(chain: &str) -> bool {
    KUBE_CHAINS.contains(&chain) || KUBE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// Who may own something `up` refuses to share: the Kubernetes and container daemons that run
/// (by executable name — only to name them, never to touch them).
fn owner_hint() -> String {
    let procs = super::process::named_processes();
    if procs.is_empty() {
        "no kubelet, kube-proxy, k3s, containerd or dockerd runs now, so it is left from an earlier install".into()
    } else {
        let list: Vec<String> = procs
            .iter()
            .map(|(pid, exe)| format!("pid {pid} {}", exe.display()))
            .collect();
        format!("running now: {}", list.join(", "))
    }
}

fn parse_v4_cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()?),
        None => (s, 32),
    };
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, mask))
}

fn overlaps(a: &str, b: &str) -> bool {
    match (parse_v4_cidr(a), parse_v4_cidr(b)) {
        (Some((na, ma)), Some((nb, mb))) => {
            let m = ma & mb;
            na & m == nb & m
        }
        _ => false,
    }
}

/// Refuses to start when something the cluster would have to share already belongs to someone
/// else. Runs after our own debris was cleared, so whatever it finds is not ours.
pub fn preflight() -> Result<()> {
    let refuse = |what: String| {
        Err(ClusterError::Invalid(format!(
            "refusing to start the champion cluster: {what}"
        )))
    };
    if link_exists(layout::BRIDGE) {
        return refuse(format!(
            "a network link named {} exists and this cluster's manifest does not list it",
            layout::BRIDGE
        ));
    }
    let routes = output("ip", &["-o", "-4", "route", "show", "table", "all"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for r in routes.lines() {
        let mut words = r.split_whitespace();
        let mut dst = words.next().unwrap_or_default();
        if [
            "local",
            "broadcast",
            "unicast",
            "multicast",
            "blackhole",
            "unreachable",
            "prohibit",
            "throw",
        ]
        .contains(&dst)
        {
            dst = words.next().unwrap_or_default();
        }
        if dst == "default" {
            continue;
        }
        for ours in [layout::CLUSTER_CIDR, layout::SERVICE_CIDR] {
            if overlaps(dst, ours) {
                return refuse(format!(
                    "the route `{r}` overlaps the cluster's range {ours} (another Kubernetes, Docker network or VPN uses it)"
                ));
            }
        }
    }
    let foreign_kube: Vec<String> = all_chains()
        .into_iter()
        .filter(|c| c.rsplit(' ').next().is_some_and(is_kube_proxy_chain))
        .collect();
    if !foreign_kube.is_empty() {
        return refuse(format!(
            "another Kubernetes owns the iptables chains {} (kube-proxy and kubelet would share them); {}",
            foreign_kube.join(", "),
            owner_hint()
        ));
    }
    for t in nft_tables() {
        if t.ends_with(" kube-proxy") {
            return refuse(format!(
                "another kube-proxy (nftables mode) owns the nft table `{t}`, which this kube-proxy deletes when it starts; {}",
                owner_hint()
            ));
        }
    }
    if Path::new(layout::DEVICE_PLUGIN_DIR).exists() {
        return refuse(format!(
            "{} exists: another kubelet uses it, and every kubelet serves its device-plugin socket there and deletes the other sockets in it when it starts (the path cannot be changed); {}",
            layout::DEVICE_PLUGIN_DIR,
            owner_hint()
        ));
    }
    for port in layout::LOOPBACK_PORTS {
        if std::net::TcpListener::bind(("127.0.0.1", *port)).is_err() {
            return refuse(format!(
                "127.0.0.1:{port} is in use (the cluster's etcd, controller-manager, scheduler, kubelet and kube-proxy listen on {:?}); {}",
                layout::LOOPBACK_PORTS,
                owner_hint()
            ));
        }
    }
    for cg in own_cgroups() {
        if cg.exists() {
            return refuse(format!(
                "{} is still there after clearing the last cluster (a process in it could not be stopped)",
                cg.display()
            ));
        }
    }
    Ok(())
}

/// Makes every host change the cluster needs before any component starts, each recorded in the
/// manifest first. No pod packet can ever take the default route: the bridge, the service
/// route and the guards exist before containerd does.
pub fn setup(manifest: &Manifest) -> Result<()> {
    // What exists before: recorded so `down` tells ours from theirs.
    let kube_existing: Vec<String> = all_chains()
        .into_iter()
        .filter(|c| c.rsplit(' ').next().is_some_and(|n| n.starts_with("KUBE-")))
        .collect();
    manifest.record(&Entry::KubeChains {
        existing: kube_existing,
    })?;
    manifest.record(&Entry::NftTables {
        existing: nft_tables(),
    })?;

    // The cgroups: `<CGROUP>` is kubelet's cgroupRoot (pods), `<CGROUP>/daemons` holds the
    // components and whatever they start.
    for h in cgroup_hierarchies() {
        let cg = h.join(layout::CGROUP);
        manifest.record(&Entry::Cgroup { path: cg.clone() })?;
        sys::create_dir(&cg)?;
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read_to_string(h.join(f)).unwrap_or_default();
                std::fs::write(cg.join(f), v.trim())
                    .map_err(ClusterError::io("writing", cg.join(f)))?;
            }
        } else {
            sys::create_dir(&cg.join("daemons"))?;
        }
    }

    // The well-known directories kubelet and libcni write whatever they are told.
    for d in layout::WELL_KNOWN_DIRS {
        let p = Path::new(d);
        if !p.exists() {
            manifest.record(&Entry::Dir {
                path: p.to_path_buf(),
            })?;
            sys::create_dir(p)?;
        }
    }

    let bridge = layout::BRIDGE;
    manifest.record(&Entry::Link {
        name: bridge.to_string(),
    })?;
    run(
        "ip",
        &[
            "link",
            "add",
            bridge,
            "address",
            layout::BRIDGE_MAC,
            "type",
            "bridge",
        ],
    )?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}/24", layout::NODE_IP),
            "dev",
            bridge,
        ],
    )?;
    run("ip", &["link", "set", bridge, "up"])?;
    // Forwarding on the bridge only (a Service hop from a pod back onto the bridge is routed):
    // the host's global ip_forward is left as it was. The setting goes away with the bridge.
    set_sysctl(&format!("net/ipv4/conf/{bridge}/forwarding"), "1")?;
    manifest.record(&Entry::Route {
        dst: layout::SERVICE_CIDR.into(),
        dev: bridge.into(),
    })?;
    run(
        "ip",
        &["route", "replace", layout::SERVICE_CIDR, "dev", bridge],
    )?;

    for (tool, chain) in [
        ("iptables", EGRESS_CHAIN),
        ("iptables", GUARD_CHAIN),
        ("ip6tables", EGRESS_CHAIN),
    ] {
        manifest.record(&Entry::Chain {
            tool: tool.into(),
            table: "raw".into(),
            chain: chain.into(),
            from: "PREROUTING".into(),
        })?;
    }
    let guard = format!(
        "*raw\n:{e} - [0:0]\n-A {e} -d {pods} -j RETURN\n-A {e} -d {svc} -j RETURN\n-A {e} -j DROP\n\
         :{g} - [0:0]\n-A {g} -i {bridge} -j RETURN\n-A {g} -i lo -j RETURN\n-A {g} -d {pods} -j DROP\n-A {g} -d {svc} -j DROP\n\
         -I PREROUTING 1 -i {bridge} -j {e}\n-I PREROUTING 1 -j {g}\nCOMMIT\n",
        e = EGRESS_CHAIN,
        g = GUARD_CHAIN,
        pods = layout::CLUSTER_CIDR,
        svc = layout::SERVICE_CIDR,
    );
    run_with_stdin("iptables-restore", &["--noflush"], &guard)?;
    // Pods get no IPv6 address; drop anything IPv6 they might still emit towards the host.
    let guard6 = format!(
        "*raw\n:{c} - [0:0]\n-A {c} -j DROP\n-I PREROUTING 1 -i {bridge} -j {c}\nCOMMIT\n",
        c = EGRESS_CHAIN
    );
    if let Err(e) = run_with_stdin("ip6tables-restore", &["--noflush"], &guard6) {
        eprintln!("warning: no IPv6 egress guard ({e}); pods have no IPv6 address");
    }

    // Global forwarding is not changed by the cluster (only the bridge forwards, see above, and
    // the CNI bridge is not a "gateway", which would switch it on); recorded all the same, so
    // that `down` puts it back should anything started by the cluster change it.
    for name in [IP_FORWARD, ALL_FORWARDING, BRIDGE_NF]
        .iter()
        .chain(KUBELET_SYSCTLS)
    {
        if let Some(old) = read_sysctl(name) {
            manifest.record(&Entry::Sysctl {
                path: name.to_string(),
                old,
            })?;
        }
    }
    // Service traffic between two pods on the bridge must pass iptables for the reply's
    // un-DNAT; without this a pod reaching another through a Service gets answers it drops.
    set_sysctl(BRIDGE_NF, "1")?;
    Ok(())
}

/// Every mount point under the cluster's own two directories, deepest first. kubelet (volumes),
/// containerd (rootfs, shm, netns) and CNI mount only there, since their roots are there.
fn cluster_mounts() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(layout::STATE_DIR) || p.starts_with(layout::RUN_DIR))
        .map(PathBuf::from)
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn unmount_all() -> usize {
    let mut count = 0;
    // A mount can be stacked several times on one point; repeat until nothing is left.
    for _ in 0..5 {
        let mounts = cluster_mounts();
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 on a NUL-terminated path we own; MNT_DETACH never blocks.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                count += 1;
            }
        }
    }
    count
}

fn split_tables(dump: &str) -> Vec<(String, Vec<String>)> {
    let mut tables = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix('*') {
            current = Some((name.to_string(), Vec::new()));
        } else if line == "COMMIT" {
            if let Some(t) = current.take() {
                tables.push(t);
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line.to_string());
        }
    }
    tables
}

/// The iptables-restore script that removes the chains `ours` accepts from one table (first the
/// rules of other chains that jump to them), or None if it has none.
fn cleanup_script(table: &str, body: &[String], ours: &dyn Fn(&str) -> bool) -> Option<String> {
    let chains: Vec<&str> = body
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| ours(c))
        .collect();
    let mut deletes = Vec::new();
    for line in body {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let chain = rule.split_whitespace().next().unwrap_or_default();
        if ours(chain) {
            continue;
        }
        let mut words = rule.split_whitespace();
        let jumps_to_ours = std::iter::from_fn(|| words.next())
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| (w[0] == "-j" || w[0] == "-g") && ours(w[1]));
        if jumps_to_ours {
            deletes.push(format!("-D {rule}"));
        }
    }
    if chains.is_empty() && deletes.is_empty() {
        return None;
    }
    let mut script = format!("*{table}\n");
    for d in deletes {
        script.push_str(&d);
        script.push('\n');
    }
    for c in &chains {
        script.push_str(&format!("-F {c}\n"));
    }
    for c in &chains {
        script.push_str(&format!("-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// `nft list tables` as "family name" lines; empty when nft is unavailable.
fn nft_tables() -> Vec<String> {
    output("nft", &["list", "tables"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("table "))
                .map(|t| t.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes the nft tables iptables-nft created for the cluster: only iptables' own table names
/// (families ip and ip6), only those absent before `up`, and only when they hold no rule.
fn clear_nft_tables(before: &[String]) {
    for table in nft_tables() {
        let mut words = table.split_whitespace();
        let (Some(family), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if (family != "ip" && family != "ip6")
            || !IPTABLES_NFT_TABLES.contains(&name)
            || before.contains(&table)
        {
            continue;
        }
        let empty = output("nft", &["list", "table", family, name])
            .map(|o| {
                !String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    let l = l.trim();
                    !l.is_empty()
                        && !l.starts_with("table")
                        && !l.starts_with("chain")
                        && !l.starts_with("type")
                        && l != "}"
                })
            })
            .unwrap_or(false);
        if empty {
            try_run("nft", &["delete", "table", family, name]);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // A cgroup directory is removed with rmdir even though it "contains" control files.
    let _ = std::fs::remove_dir(dir);
}

/// Kills everything in the cluster's own cgroups (daemons, shims, containers — they outlive a
/// killed containerd) and waits until they are empty.
pub fn kill_cgroup_processes() -> usize {
    let mut total = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: usize = own_cgroups()
            .iter()
            .map(|c| super::process::kill_cgroup_tree(c))
            .sum();
        total = total.max(n);
        if n == 0 || std::time::Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Undoes what the manifest lists, given that the cluster's processes are already stopped.
pub fn clear(layout: &Layout) -> Vec<String> {
    let mut notes = Vec::new();
    let entries = Manifest::entries(layout);
    if entries.is_empty() && layout.state.exists() {
        notes.push(format!(
            "{} has no manifest: only the cluster's own directories and cgroups are removed",
            layout.state.display()
        ));
        if layout.state.join("host-before.json").exists() {
            notes.push(
                "it was left by an older champion-cluster (bridge cni0, no manifest): what that one \
                 put elsewhere is not guessed at here; remove it with that version's `down`"
                    .into(),
            );
        }
    }
    let n = kill_cgroup_processes();
    if n > 0 {
        notes.push(format!(
            "killed {n} processes left in the cluster's cgroups"
        ));
    }
    let n = unmount_all();
    if n > 0 {
        notes.push(format!("unmounted {n} mounts"));
    }
    for e in &entries {
        if let Entry::Link { name } = e
            && link_exists(name)
        {
            if let Ok(out) = output("ip", &["-o", "link", "show", "master", name]) {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    // "7: vethabc@if2: <...>" -> vethabc
                    if let Some(veth) = line
                        .split(':')
                        .nth(1)
                        .map(|s| s.trim().split('@').next().unwrap_or_default().to_string())
                    {
                        try_run("ip", &["link", "del", veth.as_str()]);
                    }
                }
            }
            try_run("ip", &["link", "del", name.as_str()]);
            notes.push(format!("deleted bridge {name}"));
        }
    }
    for e in &entries {
        if let Entry::Route { dst, dev } = e {
            try_run("ip", &["route", "del", dst.as_str(), "dev", dev.as_str()]);
        }
    }
    let own_chains: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Chain { chain, .. } => Some(chain.clone()),
            _ => None,
        })
        .collect();
    let kube_before: Option<BTreeSet<String>> = entries.iter().find_map(|e| match e {
        Entry::KubeChains { existing } => Some(existing.iter().cloned().collect()),
        _ => None,
    });
    clear_iptables(&own_chains, kube_before.as_ref());
    if let Some(before) = entries.iter().find_map(|e| match e {
        Entry::NftTables { existing } => Some(existing.clone()),
        _ => None,
    }) {
        clear_nft_tables(&before);
    }
    let mut cgroups: Vec<&PathBuf> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Cgroup { path } => Some(path),
            _ => None,
        })
        .collect();
    let by_name = own_cgroups();
    cgroups.extend(by_name.iter());
    for cg in cgroups {
        if cg.exists() {
            remove_cgroup_tree(cg);
            if cg.exists() {
                notes.push(format!("could not remove cgroup {}", cg.display()));
            }
        }
    }
    // Oldest value last, so a sysctl recorded twice ends at what the host had first.
    for e in entries.iter().rev() {
        if let Entry::Sysctl { path, old } = e
            && let Err(err) = set_sysctl(path, old)
        {
            notes.push(format!("could not restore {path}: {err}"));
        }
    }
    remove_own_files_in_shared_dirs(layout);
    for e in entries.iter().rev() {
        if let Entry::Dir { path } = e {
            remove_dir(path, &mut notes);
        }
    }
    remove_dir(&layout.run, &mut notes);
    remove_dir(&layout.state, &mut notes);
    notes
}

/// In the well-known directories that existed before `up`: kubelet's links to our pod logs and
/// libcni's cache files of our network. Nothing else there is touched.
fn remove_own_files_in_shared_dirs(layout: &Layout) {
    let pod_logs = layout.pod_logs();
    if let Ok(entries) = std::fs::read_dir(layout::CONTAINER_LOG_LINKS) {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&pod_logs)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let prefix = format!("{}-", layout::CNI_NETWORK);
    if let Ok(entries) = std::fs::read_dir(layout::CNI_RESULTS) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn remove_dir(dir: &Path, notes: &mut Vec<String>) {
    if dir.exists() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => notes.push(format!("removed {}", dir.display())),
            Err(e) => notes.push(format!("could not remove {}: {e}", dir.display())),
        }
    }
}

/// Removes from iptables and ip6tables the chains the cluster made: its own (`CHAMPION-*`) and
/// — when the manifest says which `KUBE-*` chains were there before — the `KUBE-*` chains that
/// were not. First the rules in other chains that jump to them, then their contents, then the
/// chains; one iptables-restore per table, so a half-cleaned table is never left behind.
fn clear_iptables(own: &BTreeSet<String>, kube_before: Option<&BTreeSet<String>>) {
    for (tool, restore) in [
        ("iptables", "iptables-restore"),
        ("ip6tables", "ip6tables-restore"),
    ] {
        let Ok(dump) = run(format!("{tool}-save"), &[] as &[&str]) else {
            continue;
        };
        for (table, body) in split_tables(&dump) {
            let ours = |c: &str| {
                (c.starts_with(OWN_CHAIN_PREFIX) && own.contains(c))
                    || (c.starts_with("KUBE-")
                        && kube_before.is_some_and(|b| !b.contains(&format!("{tool} {table} {c}"))))
            };
            if let Some(script) = cleanup_script(&table, &body, &ours)
                && let Err(e) = run_with_stdin(restore, &["--noflush"], &script)
            {
                eprintln!("warning: clearing {table} with {restore}: {e}");
            }
        }
    }
}

/// A comparable picture of everything the cluster may touch on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    pub sections: Vec<(String, BTreeSet<String>)>,
}

impl HostSnapshot {
    pub fn take(layout: &Layout) -> HostSnapshot {
        let lines = |s: String| {
            s.lines()
                .map(str::to_string)
                .filter(|l| !l.trim().is_empty())
                .collect::<BTreeSet<_>>()
        };
        let cmd = |p: &str, a: &[&str]| {
            sys::output(p, a)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                // mount point, then fstype and source after the " - " separator
                let tail = l.split(" - ").nth(1).unwrap_or_default();
                format!(
                    "{} {}",
                    f.get(4).unwrap_or(&""),
                    tail.split(' ').take(2).collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        let links = cmd("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .collect();
        let strip_counters = |s: String| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match l.find(" [") {
                    Some(i) if l.starts_with(':') => l[..i].to_string(),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut cgroups = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in entries.flatten() {
                if let Ok(children) = std::fs::read_dir(h.path()) {
                    for c in children.flatten() {
                        if c.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            cgroups.insert(c.path().display().to_string());
                        }
                    }
                }
            }
        }
        // Others' well-known paths with their contents (two levels), and our own names.
        let mut dirs = BTreeSet::new();
        for d in layout::OTHERS_PATHS {
            list_tree(Path::new(d), 2, &mut dirs);
        }
        for d in [
            layout.state.clone(),
            layout.run.clone(),
            PathBuf::from(layout::LOCK_FILE),
        ] {
            if d.exists() {
                dirs.insert(d.display().to_string());
            }
        }
        let processes = super::process::named_processes()
            .into_iter()
            .map(|(pid, exe)| {
                format!(
                    "{pid} {} started {}",
                    exe.display(),
                    super::manifest::start_time(pid).unwrap_or_default()
                )
            })
            .collect();
        let sysctls = SNAPSHOT_SYSCTLS
            .iter()
            .map(|s| format!("{s}={}", read_sysctl(s).unwrap_or_default()))
            .collect();
        HostSnapshot {
            sections: vec![
                ("mounts".into(), mounts),
                ("links".into(), links),
                (
                    "routes".into(),
                    lines(cmd("ip", &["route", "show", "table", "all"])),
                ),
                (
                    "routes6".into(),
                    lines(cmd("ip", &["-6", "route", "show", "table", "all"])),
                ),
                (
                    "iptables".into(),
                    lines(strip_counters(cmd("iptables-save", &[]))),
                ),
                (
                    "ip6tables".into(),
                    lines(strip_counters(cmd("ip6tables-save", &[]))),
                ),
                ("netns".into(), lines(cmd("ip", &["netns", "list"]))),
                ("nft tables".into(), nft_tables().into_iter().collect()),
                ("cgroups".into(), cgroups),
                ("directories".into(), dirs),
                ("processes".into(), processes),
                ("sysctls".into(), sysctls),
            ],
        }
    }

    /// The lines of one section (empty when there is no such section).
    pub fn section(&self, name: &str) -> BTreeSet<String> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// A readable list of what differs, empty when the snapshots are equal.
    pub fn diff(&self, after: &HostSnapshot) -> String {
        let mut out = String::new();
        for ((name, a), (_, b)) in self.sections.iter().zip(&after.sections) {
            for gone in a.difference(b) {
                out.push_str(&format!("  {name}: missing after: {gone}\n"));
            }
            for extra in b.difference(a) {
                out.push_str(&format!("  {name}: left behind: {extra}\n"));
            }
        }
        out
    }
}

/// `dir` and its entries down to `depth` levels, as "path" or "path -> link target" lines.
fn list_tree(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    match std::fs::read_link(dir) {
        Ok(t) => {
            out.insert(format!("{} -> {}", dir.display(), t.display()));
        }
        Err(_) => {
            out.insert(dir.display().to_string());
        }
    }
    if depth == 0 || !meta.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            list_tree(&e.path(), depth - 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_script_removes_jumps_then_flushes_and_deletes_our_chains() {
        let body: Vec<String> = [
            ":PREROUTING ACCEPT [0:0]",
            ":KUBE-SERVICES - [0:0]",
            ":DOCKER-ISH - [0:0]",
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A PREROUTING -j DOCKER-ISH",
            "-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let script = cleanup_script("nat", &body, &|c| c.starts_with("KUBE-")).unwrap_or_default();
        assert_eq!(
            script,
            "*nat\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-F KUBE-SERVICES\n-X KUBE-SERVICES\nCOMMIT\n"
        );
    }

    #[test]
    fn cleanup_script_is_none_for_a_table_without_our_chains() {
        let body = vec![
            ":INPUT ACCEPT [0:0]".to_string(),
            "-A INPUT -j ACCEPT".to_string(),
        ];
        assert_eq!(
            cleanup_script("filter", &body, &|c| c.starts_with("KUBE-")),
            None
        );
    }

    #[test]
    fn split_tables_reads_each_table_body() {
        let dump = "# generated\n*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE-X\nCOMMIT\n";
        let tables = split_tables(dump);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[1].0, "nat");
        assert_eq!(
            tables[1].1,
            vec![
                ":OUTPUT ACCEPT [0:0]".to_string(),
                "-A OUTPUT -j KUBE-X".to_string()
            ]
        );
    }
}
