//! `champion-cluster`: starts, inspects and removes the local one-node Kubernetes cluster.
//!
//! - `up`: reuse a healthy cluster, else clear what a dead one left and start fresh; prints the
//!   admin kubeconfig path and how long it took.
//! - `down`: stop everything and restore the host (idempotent; fine when nothing runs).
//! - `load-images`: re-import build/images/*.tar into the running cluster.
//! - `status`: one line per component.
//! - `selftest-cleanup`: plants foreign state (see `cluster::foreign`), then proves that `up` +
//!   pods + `down` leave the host as it was and the foreign state untouched, and that a LAN
//!   neighbour reaches nothing the cluster serves (takes the shared cluster down; run it alone).
//! - `pod-start`: measures pod creation -> Running on the running cluster.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use champion_tests::cluster::{self, Layout, foreign, host::HostSnapshot, layout};
use champion_tests::testing::{TestNamespace, phase, wait_object};
use champion_tests::{ClusterError, Result};
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

#[derive(Parser)]
#[command(about = "The champion local Kubernetes cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the cluster (or reuse a healthy one).
    Up {
        /// Leave state and logs in place when start-up fails (for debugging).
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Stop the cluster and restore the host.
    Down,
    /// Import build/images/*.tar into the running cluster's containerd.
    LoadImages,
    /// Show which components run and whether the cluster is healthy.
    Status,
    /// Take the cluster down, snapshot the host, bring it up, run a pod, take it down and
    /// compare the host with the snapshot.
    SelftestCleanup,
    /// Create pods one after another and report creation -> Running latency.
    PodStart {
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let layout = Layout::from_env();
    let result = match cli.command {
        Command::Up { keep_on_failure } => cmd_up(&layout, keep_on_failure).await,
        Command::Down => cmd_down(&layout),
        Command::LoadImages => cluster::import_images(&layout, false).map(|n| {
            println!(
                "imported {n} image archives from {}",
                layout.images_dir.display()
            )
        }),
        Command::Status => {
            for line in cluster::status(&layout).await {
                println!("{line}");
            }
            Ok(())
        }
        Command::SelftestCleanup => selftest_cleanup(&layout).await,
        Command::PodStart { count } => pod_start(count).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("champion-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn up_or_teardown(layout: &Layout, keep_on_failure: bool) -> Result<cluster::UpReport> {
    let mut say = |line: String| eprintln!("  {line}");
    let outcome = tokio::select! {
        r = cluster::up(layout, &mut say) => r,
        _ = tokio::signal::ctrl_c() => Err(ClusterError::Invalid("interrupted".into())),
    };
    if outcome.is_err() {
        print_log_tails(layout);
        if !keep_on_failure {
            eprintln!(
                "start-up failed; removing what was started (use --keep-on-failure to keep it)"
            );
            let _ = cluster::down(layout);
        }
    }
    outcome
}

async fn cmd_up(layout: &Layout, keep_on_failure: bool) -> Result<()> {
    let report = up_or_teardown(layout, keep_on_failure).await?;
    println!("{}", layout.admin_kubeconfig().display());
    if report.reused {
        println!(
            "champion cluster already running and healthy; {} image archives re-imported in {:.1} s",
            report.images,
            report.elapsed.as_secs_f64()
        );
    } else {
        println!(
            "champion cluster ready in {:.1} s: node {} at {}, {} images imported; export KUBECONFIG={}",
            report.elapsed.as_secs_f64(),
            layout::NODE_NAME,
            layout::NODE_IP,
            report.images,
            layout.admin_kubeconfig().display()
        );
    }
    Ok(())
}

fn cmd_down(layout: &Layout) -> Result<()> {
    let (elapsed, notes) = cluster::down(layout)?;
    for n in notes {
        eprintln!("  {n}");
    }
    println!(
        "champion cluster down in {:.1} s; host restored",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn print_log_tails(layout: &Layout) {
    for c in layout::COMPONENTS {
        let Ok(text) = std::fs::read_to_string(layout.log(c)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- last lines of {} ---", layout.log(c).display());
        for l in &lines[lines.len().saturating_sub(8)..] {
            eprintln!("{l}");
        }
    }
}

fn pause_pod(name: &str) -> Result<Pod> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "pause",
                "image": layout::PAUSE_IMAGE,
                "imagePullPolicy": "Never",
                "securityContext": {"runAsUser": 65532, "runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}
            }]
        }
    }))
    .map_err(|source| ClusterError::Serialize { what: "pause pod", source })
}

/// Creates pods one at a time and measures creation -> Running as the API server reports it
/// through a watch.
async fn run_pods(c: &cluster::Cluster, ns: &str, count: usize) -> Result<Vec<Duration>> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let mut times = Vec::new();
    for i in 0..count {
        let name = format!("pause-{i}");
        let t0 = Instant::now();
        pods.create(&PostParams::default(), &pause_pod(&name)?)
            .await
            .map_err(ClusterError::kube(format!("create pod {ns}/{name}")))?;
        wait_object(&pods, &name, Duration::from_secs(60), |p| {
            phase(p) == "Running"
        })
        .await?;
        times.push(t0.elapsed());
    }
    Ok(times)
}

async fn pod_start(count: usize) -> Result<()> {
    let c = cluster::shared().await?;
    let ns = TestNamespace::create(&c, "pod-start").await?;
    let times = run_pods(&c, &ns.name, count).await?;
    println!("| pod | created -> Running (s) |\n|---|---|");
    for (i, t) in times.iter().enumerate() {
        println!("| pause-{i} | {:.3} |", t.as_secs_f64());
    }
    let max = times.iter().max().copied().unwrap_or_default();
    let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len().max(1) as f64;
    println!(
        "mean {mean:.3} s, max {:.3} s (budget 2 s)",
        max.as_secs_f64()
    );
    Ok(())
}

async fn selftest_cleanup(layout: &Layout) -> Result<()> {
    cluster::down(layout)?;
    let mut planted = foreign::Planted::plant(layout)?;
    eprintln!(
        "  planted foreign state: processes named containerd and kubelet, /etc/cni/net.d/keep.conf, /var/lib/kubelet/keep, iptables chain KUBE-FOREIGN, nft table inet foreign_selftest, netns other, a flipped net.ipv4.ip_forward"
    );
    eprintln!("  {}", planted.docker_note);
    let result = selftest_with_foreign_state(layout, &mut planted).await;
    // Always, also on failure: the cluster first, then what the test planted.
    if result.is_err() {
        let _ = cluster::down(layout);
    }
    planted.remove();
    result
}

async fn selftest_with_foreign_state(
    layout: &Layout,
    planted: &mut foreign::Planted,
) -> Result<()> {
    let before = HostSnapshot::take(layout);
    let report = up_or_teardown(layout, false).await?;
    eprintln!("  cluster up in {:.1} s", report.elapsed.as_secs_f64());
    let during = HostSnapshot::take(layout);
    if before.diff(&during).is_empty() {
        return Err(ClusterError::Invalid(
            "a running cluster changed nothing on the host: the snapshot cannot see it".into(),
        ));
    }
    if let Err(e) = planted.docker_ok() {
        return Err(ClusterError::Invalid(format!(
            "while the cluster is up: {e}"
        )));
    }
    // A running pod gives the host what teardown must undo: a netns, a veth, mounts, cgroups.
    let c = cluster::Cluster::connect(layout).await?;
    let ns = TestNamespace::create(&c, "selftest").await?;
    run_pods(&c, &ns.name, 2).await?;
    let with_pods = before.diff(&HostSnapshot::take(layout));
    // Pods are up (the CNI plugin ran): the host's global forwarding is still what it was.
    if let Some(changed) = with_pods
        .lines()
        .find(|l| l.contains("sysctls:") && l.contains("ip_forward"))
    {
        return Err(ClusterError::Invalid(format!(
            "the running cluster changed the host's global forwarding: {}",
            changed.trim()
        )));
    }

    // A LAN neighbour routing the cluster's ranges via this host reaches none of it.
    let lan = foreign::LanNeighbour::create()?;
    let seen = lan.probe()?;
    drop(lan);
    for (what, reachable) in &seen {
        eprintln!(
            "  LAN neighbour -> {what}: {}",
            if *reachable {
                "connects"
            } else {
                "no connection"
            }
        );
    }
    match seen.split_first() {
        Some(((_, true), rest)) => {
            if let Some((what, _)) = rest.iter().find(|(_, r)| *r) {
                return Err(ClusterError::Invalid(format!(
                    "a LAN neighbour routed via this host connects to {what}"
                )));
            }
        }
        _ => {
            return Err(ClusterError::Invalid(
                "the LAN neighbour cannot reach even the host's control listener; its route is broken and the check proves nothing".into(),
            ));
        }
    }
    // The same API server answers from the host (so "no connection" above was the guard).
    if std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([10, 244, 0, 1], layout::API_PORT)),
        Duration::from_secs(2),
    )
    .is_err()
    {
        return Err(ClusterError::Invalid(
            "the API server does not answer on the node address from the host either".into(),
        ));
    }

    drop(ns);
    let (elapsed, _) = cluster::down(layout)?;
    // The snapshot must see every kind of trace a running pod leaves, or "equal" proves nothing.
    for (section, trace) in [
        ("links", "left behind: veth"),
        ("links", "left behind: champion0"),
        ("mounts", "left behind: /run/champion-cluster/containerd"),
        ("cgroups", "/champion-cluster"),
        ("iptables", "left behind: -A KUBE-SERVICES"),
        ("iptables", "left behind: -A CHAMPION-GUARD"),
        ("processes", "containerd-shim-runc-v2"),
        ("directories", "left behind: /var/lib/champion-cluster"),
        (
            "directories",
            "left behind: /var/lib/kubelet/device-plugins",
        ),
    ] {
        let seen = with_pods
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{section}:")) && l.contains(trace));
        if !seen {
            return Err(ClusterError::Invalid(format!(
                "with pods running, the host snapshot shows no {section} entry containing {trace:?}; it cannot prove the cleanup:\n{with_pods}"
            )));
        }
    }
    let after = HostSnapshot::take(layout);
    let diff = before.diff(&after);
    let untouched = planted.check();
    if !untouched.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "up + down changed foreign state: {}{}",
            untouched.join("; "),
            if diff.is_empty() {
                String::new()
            } else {
                format!("\nhost diff:\n{diff}")
            }
        )));
    }
    if !diff.is_empty() {
        return Err(ClusterError::HostChanged(diff));
    }
    println!(
        "selftest-cleanup passed: after `down` ({:.1} s) the host's mounts, links, routes, iptables rules, netns, nft tables, cgroups, directories, processes and sysctls equal what they were before `up`; the foreign processes, files, KUBE-FOREIGN chain, nft table, netns `other` and ip_forward are unchanged; a LAN neighbour reached none of the API server, kubelet, etcd or Services. {}",
        elapsed.as_secs_f64(),
        planted.docker_note
    );
    Ok(())
}
