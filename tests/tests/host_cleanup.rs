//! After `champion-cluster down` the host's mounts, links, routes, iptables rules, network
//! namespaces, nft tables, cgroups, directories, processes and sysctls equal what they were
//! before `up`; foreign state planted before `up` (processes named containerd and kubelet, CNI
//! and kubelet files, a KUBE-FOREIGN chain, an nft table, netns `other`, a flipped ip_forward,
//! a Docker container where Docker runs) is unchanged; and a LAN neighbour routed via the host
//! reached neither the API server, the kubelet, etcd nor a Service while the cluster was up.
//!
//! It takes the shared cluster down, so it is ignored by default and run alone:
//! `cargo test -p champion-tests --test host_cleanup -- --ignored` (or
//! `champion-cluster selftest-cleanup`, which it runs).

#[test]
#[ignore = "takes the shared cluster down; run alone with --ignored"]
fn down_leaves_the_host_as_up_found_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_champion-cluster"))
        .arg("selftest-cleanup")
        .output()
        .expect("champion-cluster runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "selftest-cleanup failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("selftest-cleanup passed"), "{stdout}");
}
