//! `champion-cluster`: starts, inspects and removes the local one-node Kubernetes cluster.
//!
//! - `up`: reuse a healthy cluster, else clear what a dead one left and start fresh; prints the
//!   admin kubeconfig path and how long it took.
//! - `down`: stop everything and restore the host (idempotent; fine when nothing runs).
//! - `load-images`: re-import build/images/*.tar into the running cluster.
//! - `status`: one line per component.
//! - `selftest-cleanup`: proves that `down` leaves the host as `up` found it (takes the shared
//!   cluster down; run it alone).
//! - `pod-start`: measures pod creation -> Running on the running cluster.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use champion_tests::cluster::{self, Layout, host::HostSnapshot, layout};
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
    let before = HostSnapshot::take(layout);
    let report = up_or_teardown(layout, false).await?;
    eprintln!("  cluster up in {:.1} s", report.elapsed.as_secs_f64());
    let during = HostSnapshot::take(layout);
    if before.diff(&during).is_empty() {
        let _ = cluster::down(layout);
        return Err(ClusterError::Invalid(
            "a running cluster changed nothing on the host: the snapshot cannot see it".into(),
        ));
    }
    // A running pod gives the host what teardown must undo: a netns, a veth, mounts, cgroups.
    let pods_ran = async {
        let c = cluster::Cluster::connect(layout).await?;
        let ns = TestNamespace::create(&c, "selftest").await?;
        run_pods(&c, &ns.name, 2).await?;
        Ok::<_, ClusterError>(HostSnapshot::take(layout))
    }
    .await;
    let (elapsed, _) = cluster::down(layout)?;
    let with_pods = before.diff(&pods_ran?);
    // The snapshot must see every kind of trace a running pod leaves, or "equal" proves nothing.
    for (section, trace) in [
        ("links", "left behind: veth"),
        ("links", "left behind: cni0"),
        ("mounts", "left behind: /run/champion-cluster/containerd"),
        ("cgroups", "/kubepods"),
        ("iptables", "left behind: -A KUBE-SERVICES"),
        ("processes", "containerd-shim-runc-v2"),
        ("directories", "left behind: /var/lib/kubelet"),
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
    if !diff.is_empty() {
        return Err(ClusterError::HostChanged(diff));
    }
    println!(
        "selftest-cleanup passed: after `down` ({:.1} s) the host's mounts, links, routes, iptables rules, netns, cgroups, directories, processes and sysctls equal what they were before `up`",
        elapsed.as_secs_f64()
    );
    Ok(())
}
