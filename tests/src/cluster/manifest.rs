//! The record of everything `up` creates on the host, written *before* it creates each thing, so
//! `down` removes exactly that — also when the session that ran `up` was killed and left only
//! debris. One JSON object per line in [`Layout::manifest`], appended and synced one at a time;
//! a line cut short by a crash is ignored.
//!
//! Processes are recognised by pid plus start time (field 22 of /proc/<pid>/stat) plus the boot
//! id, never by name: a process with the same name started by anyone else is never signalled.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::Layout;
use crate::error::{ClusterError, Result};

/// One thing `up` created or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A directory that did not exist; `down` removes it with its contents.
    Dir { path: PathBuf },
    /// A cgroup directory (one per hierarchy); `down` kills what runs in it, then removes it.
    Cgroup { path: PathBuf },
    /// A network link (the bridge); its veths and routes go with it.
    Link { name: String },
    /// A route added to the main table.
    Route { dst: String, dev: String },
    /// An iptables chain of ours, jumped to from the built-in `from` chain.
    Chain {
        tool: String,
        table: String,
        chain: String,
        from: String,
    },
    /// The cluster's kubelet and kube-proxy will create `KUBE-*` chains; these (as
    /// `"<tool> <table> <chain>"`) existed before and belong to someone else.
    KubeChains { existing: Vec<String> },
    /// nftables tables (`"<family> <name>"`) that existed before `up`. iptables-nft creates a
    /// table the first time a rule goes into it and never removes it; `down` removes those it
    /// created (only iptables' own table names, only when they hold no rule).
    NftTables { existing: Vec<String> },
    /// A sysctl (path under /proc/sys) and its value before `up`; `down` writes it back.
    Sysctl { path: String, old: String },
    /// A process `up` started.
    Process {
        name: String,
        pid: i32,
        start_time: u64,
        boot_id: String,
    },
}

/// The manifest on disk.
pub struct Manifest {
    path: PathBuf,
}

impl Manifest {
    /// Opens (creating if needed) the manifest of `layout`; its directory must exist.
    pub fn open(layout: &Layout) -> Manifest {
        Manifest {
            path: layout.manifest(),
        }
    }

    /// Appends `entry` and syncs it to disk before returning, so that a crash right after this
    /// call (while the thing is being created) still leaves the record.
    pub fn record(&self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(|source| ClusterError::Serialize {
            what: "manifest entry",
            source,
        })?;
        line.push(b'\n');
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(ClusterError::io("opening manifest", &self.path))?;
        f.write_all(&line)
            .map_err(ClusterError::io("writing manifest", &self.path))?;
        f.sync_data()
            .map_err(ClusterError::io("syncing manifest", &self.path))
    }

    /// Every complete entry, in the order recorded; empty when there is no manifest.
    pub fn entries(layout: &Layout) -> Vec<Entry> {
        read_entries(&layout.manifest())
    }
}

fn read_entries(path: &Path) -> Vec<Entry> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The kernel's id of this boot: a pid and start time recorded before a reboot name nothing.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot. Parsed
/// after the last `)`, since the command name (field 2) may contain spaces and parentheses.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so field 22 is index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process recorded in `entry` still runs (same pid, start time and boot), and is
/// not a zombie.
pub fn is_alive(pid: i32, start: u64, boot: &str) -> bool {
    boot == boot_id()
        && start_time(pid) == Some(start)
        && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_when_the_name_has_spaces_and_parens() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn our_own_start_time_is_stable_and_identifies_us() {
        let me = std::process::id() as i32;
        let t = start_time(me);
        assert!(t.is_some());
        assert_eq!(start_time(me), t);
        let t = t.unwrap_or_default();
        assert!(is_alive(me, t, &boot_id()));
        assert!(!is_alive(me, t + 1, &boot_id()));
        assert!(!is_alive(me, t, "another-boot"));
    }

    #[test]
    fn entries_round_trip_and_a_torn_last_line_is_ignored() {
        let dir = std::env::temp_dir().join(format!("champion-manifest-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("m.jsonl");
        let _ = std::fs::remove_file(&path);
        let m = Manifest { path: path.clone() };
        let a = Entry::Dir {
            path: PathBuf::from("/var/lib/kubelet"),
        };
        let b = Entry::Sysctl {
            path: "net/ipv4/ip_forward".into(),
            old: "0".into(),
        };
        assert!(m.record(&a).is_ok());
        assert!(m.record(&b).is_ok());
        let mut f = std::fs::File::options()
            .append(true)
            .open(&path)
            .expect("manifest exists");
        f.write_all(b"{\"kind\":\"dir\",\"pa").expect("append");
        assert_eq!(read_entries(&path), vec![a, b]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
