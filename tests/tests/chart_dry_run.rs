//! The chart as the API server sees it: `helm template | kubectl apply --dry-run=server` on the
//! local cluster for several value sets (defaults; two replicas with monitors, budget and two
//! watched namespaces; cluster-wide with the OpenShift toggle and a pinned digest), every object
//! accepted by admission and validation (RBAC escalation checks included) and nothing created.
//! The ServiceMonitor/PodMonitor kinds are served by the schema-less stand-in CRDs of
//! `tests/fixtures/monitoring-crds.yaml` when prometheus-operator's are absent: the API server
//! checks their kind and metadata, `chart_values.rs` their spec. Also the chart README's CRD
//! upgrade command (`kubectl apply --server-side -f charts/champion-operator/crds/`), dry-run,
//! and the NOTES.txt that `helm install` prints.
//!
//! Needs the cluster (images are not needed: nothing runs). Run:
//! `cargo test -p champion-tests --test chart_dry_run`.

mod chart_common;

use std::collections::BTreeSet;

use champion_tests::operator::workspace;
use champion_tests::testing::TestNamespace;
use champion_tests::{ClusterError, Result, shared};
use chart_common::{documents, helm_template};

const MONITOR_CRDS: [&str; 2] = [
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
];

#[tokio::test]
async fn the_api_server_accepts_the_rendered_chart_for_each_value_set() -> Result<()> {
    let cluster = shared().await?;
    if MONITOR_CRDS
        .iter()
        .any(|crd| cluster.kubectl(&["get", "crd", crd]).is_err())
    {
        let fixture = workspace().join("tests/fixtures/monitoring-crds.yaml");
        cluster.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=champion-tests",
            "-f",
            &fixture.display().to_string(),
        ])?;
    }
    for crd in MONITOR_CRDS {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=60s",
        ])?;
    }
    let release = TestNamespace::create(&cluster, "chart-release").await?;
    let team = TestNamespace::create(&cluster, "chart-team").await?;
    let digest = format!("image.digest=sha256:{}", "0f".repeat(32));
    let watched = format!("watchNamespaces={{{},{}}}", release.name, team.name);
    let cases: [(&str, Vec<&str>, &[&str]); 3] = [
        (
            "defaults",
            vec![],
            &[
                "networkpolicy.networking.k8s.io/champion",
                "role.rbac.authorization.k8s.io/champion",
            ],
        ),
        (
            "two replicas, monitors, budget, two namespaces",
            vec![
                "replicaCount=2",
                "serviceMonitor.enabled=true",
                "podMonitor.enabled=true",
                &watched,
                "storePolicy.allowedHosts={10.244.0.1}",
            ],
            &[
                "poddisruptionbudget.policy/champion",
                "servicemonitor.monitoring.coreos.com/champion",
                "podmonitor.monitoring.coreos.com/champion-predictors",
            ],
        ),
        (
            "cluster-wide, OpenShift, pinned digest",
            vec![
                "clusterWide=true",
                "openshift=true",
                &digest,
                "networkPolicy.apiServer.cidrs={10.244.0.1/32}",
            ],
            &["clusterrolebinding.rbac.authorization.k8s.io/champion-"],
        ),
    ];
    let dir = tempfile::tempdir().map_err(ClusterError::io("creating", "a temporary directory"))?;
    for (name, values, expected) in cases {
        let manifest = helm_template(&release.name, &values)?
            .map_err(|e| ClusterError::Invalid(format!("{name}: helm template: {e}")))?;
        let rendered = documents(&manifest)?.len();
        let file = dir.path().join("chart.yaml");
        std::fs::write(&file, &manifest).map_err(ClusterError::io("writing", &file))?;
        let out = cluster.kubectl(&[
            "apply",
            "--dry-run=server",
            "-o",
            "name",
            "-f",
            &file.display().to_string(),
        ])?;
        let accepted: BTreeSet<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            accepted.len(),
            rendered,
            "{name}: every rendered object is accepted:\n{out}"
        );
        for want in expected {
            assert!(
                accepted.iter().any(|a| a.starts_with(want)),
                "{name}: {want} among the accepted objects:\n{out}"
            );
        }
    }
    // Nothing was created.
    let roles = cluster.kubectl(&["-n", &team.name, "get", "roles", "-o", "name"])?;
    assert_eq!(roles.trim(), "", "a dry run creates nothing");

    // The chart README's upgrade path for the CRD.
    let crds = workspace().join("charts/champion-operator/crds/");
    let out = cluster.kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        &crds.display().to_string(),
    ])?;
    assert!(out.contains("modelpipelines.champion.dev"), "{out}");

    // NOTES.txt (helm renders it on install only; a client-side dry run needs the cluster).
    let notes = |values: &[&str]| -> Result<String> {
        let helm = cluster.layout.bin("helm");
        let chart = chart_common::chart_dir().display().to_string();
        let mut args = vec![
            "install",
            "champion",
            chart.as_str(),
            "--namespace",
            release.name.as_str(),
            "--dry-run=client",
        ];
        for v in values {
            args.extend(["--set", v]);
        }
        let out = std::process::Command::new(&helm)
            .args(&args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .output()
            .map_err(ClusterError::io("running", &helm))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helm install --dry-run=client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text
            .split_once("NOTES:")
            .map(|(_, n)| n.to_string())
            .unwrap_or_default())
    };
    let default = notes(&[])?;
    assert!(
        default.contains("kubectl apply --server-side -f charts/champion-operator/crds/"),
        "{default}"
    );
    assert!(
        default.contains(&format!("It watches ModelPipelines in: {}", release.name)),
        "{default}"
    );
    assert!(default.contains("No storeVolumes are set"), "{default}");
    let wide = notes(&["clusterWide=true", "replicaCount=2"])?;
    assert!(wide.contains("every namespace"), "{wide}");
    assert!(
        wide.contains("may read any Secret of the cluster"),
        "{wide}"
    );
    assert!(wide.contains("2 replicas, one leader"), "{wide}");
    Ok(())
}
