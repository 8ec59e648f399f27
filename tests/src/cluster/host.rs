//! What the cluster changes on the host, and how it is undone: the bridge, the service-range
//! route, the egress guard, two sysctls, mounts, network namespaces, iptables chains, cgroups
//! and directories. `clear` is idempotent and works from any state — a clean host, a running
//! cluster, or the debris of a cluster whose processes were killed — so it is both `down` and
//! the first step of `up`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::{self, Layout};
use super::sys::{self, output, run, run_with_stdin, try_run, write_file};
use crate::error::{ClusterError, Result};

/// The chain that drops pod traffic bound anywhere but the pod range, the service range and the
/// node: evaluated in `raw PREROUTING`, before kube-proxy's DNAT and any ACCEPT it installs.
pub const EGRESS_CHAIN: &str = "CHAMPION-EGRESS";
const CHAIN_PREFIXES: &[&str] = &["KUBE-", "CNI-", "CHAMPION-"];
const SYSCTLS: &[&str] = &["net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"];

/// What `up` found before changing anything, so `down` restores exactly that.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HostBefore {
    /// sysctl path (under /proc/sys) -> value before the cluster started.
    pub sysctls: Vec<(String, String)>,
    /// The entries of [`layout::FOREIGN_DIRS`] that already existed (left in place by `down`).
    pub existing_dirs: Vec<String>,
    /// nftables tables (`ip filter`, `ip6 nat`, ...) that already existed. iptables-nft creates
    /// a table the first time a rule goes into it and never removes it; `down` does.
    #[serde(default)]
    pub nft_tables: Vec<String>,
}

impl HostBefore {
    pub fn capture() -> HostBefore {
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|s| {
                std::fs::read_to_string(Path::new("/proc/sys").join(s))
                    .ok()
                    .map(|v| (s.to_string(), v.trim().to_string()))
            })
            .collect();
        let existing_dirs = layout::FOREIGN_DIRS
            .iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| d.to_string())
            .collect();
        HostBefore {
            sysctls,
            existing_dirs,
            nft_tables: nft_tables(),
        }
    }

    pub fn save(&self, layout: &Layout) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|source| ClusterError::Serialize {
            what: "host-before.json",
            source,
        })?;
        write_file(&layout.host_before(), json, 0o644)
    }

    fn load(layout: &Layout) -> Option<HostBefore> {
        let bytes = std::fs::read(layout.host_before()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn set_sysctl(name: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(name);
    std::fs::write(&p, value).map_err(ClusterError::io("writing sysctl", p))
}

/// Creates the bridge with the node address, routes the service range onto it, installs the
/// egress guard and enables forwarding — all before any component, so no pod packet can ever
/// take the default route.
pub fn setup_network() -> Result<()> {
    let bridge = layout::BRIDGE;
    run("ip", &["link", "add", bridge, "type", "bridge"])?;
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
    run(
        "ip",
        &["route", "replace", layout::SERVICE_CIDR, "dev", bridge],
    )?;
    let guard = format!(
        "*raw\n:{c} - [0:0]\n-A {c} -d {pods} -j RETURN\n-A {c} -d {svc} -j RETURN\n-A {c} -j DROP\n-I PREROUTING 1 -i {bridge} -j {c}\nCOMMIT\n",
        c = EGRESS_CHAIN,
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
    set_sysctl("net/ipv4/ip_forward", "1")?;
    // Service traffic between two pods on the bridge must pass iptables for the reply's
    // un-DNAT; without this a pod reaching another through a Service gets answers it drops.
    set_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
    Ok(())
}

/// Every mount point under the cluster's prefixes, deepest first.
fn cluster_mounts() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| layout::MOUNT_PREFIXES.iter().any(|pre| p.starts_with(pre)))
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

/// Removes the cluster's chains from every table of iptables and ip6tables: first the rules in
/// other chains that jump to them, then their contents, then the chains. One iptables-restore
/// per table, so a half-cleaned table is never left behind.
fn clear_iptables() {
    for (save, restore) in [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ] {
        let Ok(dump) = run(save, &[] as &[&str]) else {
            continue;
        };
        for (table, body) in split_tables(&dump) {
            if let Some(script) = cleanup_script(&table, &body)
                && let Err(e) = run_with_stdin(restore, &["--noflush"], &script)
            {
                eprintln!("warning: clearing {table} with {restore}: {e}");
            }
        }
    }
}

fn ours(chain: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
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

/// The iptables-restore script that removes our chains from one table, or None if it has none.
fn cleanup_script(table: &str, body: &[String]) -> Option<String> {
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

/// Deletes the iptables-nft tables of families ip/ip6 that the cluster created: those absent
/// before `up`, or — when that record is lost — those left without a single rule.
fn clear_nft_tables(before: Option<&HostBefore>) {
    for table in nft_tables() {
        let mut words = table.split_whitespace();
        let (Some(family), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if family != "ip" && family != "ip6" {
            continue;
        }
        let ours = match before {
            Some(b) => !b.nft_tables.contains(&table),
            None => output("nft", &["list", "table", family, name])
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
                .unwrap_or(false),
        };
        if ours {
            try_run("nft", &["delete", "table", family, name]);
        }
    }
}

/// The kubepods cgroup of every v1 hierarchy (and the v2 one, when mounted).
fn kubepods_cgroups() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("kubepods"))
        .filter(|p| p.is_dir())
        .collect()
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

/// Kills what runs in the pods' cgroups (containers outlive a killed containerd).
pub fn kill_pod_processes() -> usize {
    kubepods_cgroups()
        .iter()
        .map(|c| super::process::kill_cgroup_tree(c))
        .sum()
}

/// Undoes everything the cluster did to the host, given that its processes are already gone.
pub fn clear(layout: &Layout) -> Vec<String> {
    let mut notes = Vec::new();
    let before = HostBefore::load(layout);
    let n = unmount_all();
    if n > 0 {
        notes.push(format!("unmounted {n} mounts"));
    }
    for netns_dir in [
        "/run/netns".into(),
        layout
            .containerd_state()
            .join("io.containerd.grpc.v1.cri/netns"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if Path::new(&format!("/sys/class/net/{}", layout::BRIDGE)).exists() {
        if let Ok(out) = output("ip", &["-o", "link", "show", "master", layout::BRIDGE]) {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "7: vethabc@if2: <...>" -> vethabc
                if let Some(name) = line
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().split('@').next().unwrap_or_default().to_string())
                {
                    try_run("ip", &["link", "del", name.as_str()]);
                }
            }
        }
        try_run("ip", &["link", "del", layout::BRIDGE]);
        notes.push(format!("deleted bridge {}", layout::BRIDGE));
    }
    try_run("ip", &["route", "del", layout::SERVICE_CIDR]);
    clear_iptables();
    clear_nft_tables(before.as_ref());
    for cg in kubepods_cgroups() {
        remove_cgroup_tree(&cg);
    }
    if let Some(before) = &before {
        for (name, value) in &before.sysctls {
            if let Err(e) = set_sysctl(name, value) {
                notes.push(format!("could not restore {name}: {e}"));
            }
        }
    }
    let keep: BTreeSet<String> = before
        .map(|b| b.existing_dirs.into_iter().collect())
        .unwrap_or_default();
    for dir in layout::FOREIGN_DIRS.iter().filter(|d| !keep.contains(**d)) {
        remove_dir(Path::new(dir), &mut notes);
    }
    remove_dir(&layout.state, &mut notes);
    remove_dir(&layout.run, &mut notes);
    notes
}

fn remove_dir(dir: &Path, notes: &mut Vec<String>) {
    if dir.exists() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => notes.push(format!("removed {}", dir.display())),
            Err(e) => notes.push(format!("could not remove {}: {e}", dir.display())),
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
        let mut dirs = BTreeSet::new();
        let ours = [
            layout.state.clone(),
            layout.run.clone(),
            PathBuf::from(layout::LOCK_FILE),
        ];
        for d in layout::FOREIGN_DIRS.iter().map(PathBuf::from).chain(ours) {
            if d.exists() {
                dirs.insert(d.display().to_string());
            }
        }
        let processes = super::process::cluster_processes()
            .into_iter()
            .map(|(pid, exe)| format!("{pid} {}", exe.display()))
            .collect();
        let sysctls = SYSCTLS
            .iter()
            .map(|s| {
                format!(
                    "{s}={}",
                    std::fs::read_to_string(Path::new("/proc/sys").join(s))
                        .unwrap_or_default()
                        .trim()
                )
            })
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
        let script = cleanup_script("nat", &body).unwrap_or_default();
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
        assert_eq!(cleanup_script("filter", &body), None);
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
