//! A real Prometheus server (3.x, built from the Go module proxy by `make prometheus`: Debian's
//! build lacks Kubernetes service discovery) scrapes the test's namespace on the local cluster
//! the way the usual `kubernetes-pods` job does: Kubernetes service discovery (pod role, through the admin kubeconfig) and the pods'
//! `prometheus.io/scrape`, `port` and `path` annotations, which the chart puts on the operator
//! pod and the operator puts on every predictor pod. It runs on the host, bound to 127.0.0.1 on
//! a free port, and scrapes the pod IPs directly (the host routes the pod network; no packet
//! leaves the machine). It also loads the chart's PrometheusRule, rendered for the test's
//! namespace, so the alert expressions are evaluated on real series.
//!
//! After a promotion, the test asks Prometheus' HTTP API for the pipeline's promotion counter
//! and champion score and compares them with the pipeline's status.
//!
//! Needs `make images`, the cluster (`champion-cluster up` + `load-images`) and `make prometheus`.
//! Run: `cargo test -p champion-tests --test prometheus_e2e`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use champion_tests::operator::{RELEASE, Stage, str_at, wine_file, workspace};
use champion_tests::testing::{http_request, wait_for};
use champion_tests::{ClusterError, Result};
use serde_json::{Value, json};

/// Deadline of each wait; training, rollout and a few scrapes take seconds here.
const WAIT: Duration = Duration::from_secs(120);
const PIPELINE: &str = "wine";

/// A Prometheus process with its own config and storage; killed, and its files removed, on
/// drop (also when the test fails).
struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus server `make prometheus` builds into the component cache (Debian's package
/// has no Kubernetes service discovery).
fn prometheus_binary(stage: &Stage) -> Result<PathBuf> {
    let binary = stage.cluster.layout.bin("prometheus");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(ClusterError::Invalid(format!(
            "{} is missing: run `make prometheus`",
            binary.display()
        )))
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(ClusterError::io("binding", "127.0.0.1:0"))?;
    let port = l
        .local_addr()
        .map_err(ClusterError::io("reading the address of", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// The scrape configuration: pods of `namespace` that ask to be scraped, on the port and path
/// their annotations name. `honor_labels` keeps the operator's own `namespace` and `pipeline`
/// labels (a pipeline's, not the operator pod's); the target's namespace, pod and
/// `champion.dev/pipeline` label name the predictors' series.
fn config(kubeconfig: &Path, namespace: &str) -> Value {
    json!({
        "global": {"scrape_interval": "2s", "scrape_timeout": "1s", "evaluation_interval": "2s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{
            "job_name": "kubernetes-pods",
            "honor_labels": true,
            "kubernetes_sd_configs": [{
                "role": "pod",
                "kubeconfig_file": kubeconfig.display().to_string(),
                "namespaces": {"names": [namespace]},
            }],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                 "regex": "true", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_phase"],
                 "regex": "Pending|Succeeded|Failed", "action": "drop"},
                {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                 "regex": "(.+)", "target_label": "__metrics_path__"},
                {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                 "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2",
                 "target_label": "__address__"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_label_champion_dev_pipeline"],
                 "target_label": "pipeline"},
            ],
        }],
    })
}

/// The chart's alerting rules (the PrometheusRule's spec), rendered for `namespace`.
fn chart_rules(stage: &Stage) -> Result<Value> {
    let helm = stage.cluster.layout.bin("helm");
    let chart = workspace().join("charts/champion-operator");
    let out = Command::new(&helm)
        .arg("template")
        .arg(RELEASE)
        .arg(&chart)
        .args(["--namespace", &stage.ns.name])
        .args(["--set", "prometheusRule.enabled=true"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .output()
        .map_err(ClusterError::io("running", &helm))?;
    if !out.status.success() {
        return Err(ClusterError::Invalid(format!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let rule: Value = serde_yaml::from_slice(&out.stdout)
        .map_err(|e| ClusterError::Invalid(format!("the rendered PrometheusRule: {e}")))?;
    Ok(rule["spec"].clone())
}

impl Prometheus {
    /// Starts Prometheus for `stage`'s namespace and waits until it is ready.
    async fn start(stage: &Stage) -> Result<Prometheus> {
        let binary = prometheus_binary(stage)?;
        let dir = tempfile::tempdir().map_err(ClusterError::io("creating", "a temp dir"))?;
        let write = |name: &str, v: &Value| -> Result<()> {
            let path = dir.path().join(name);
            let text = serde_yaml::to_string(v)
                .map_err(|e| ClusterError::Invalid(format!("{name} as YAML: {e}")))?;
            std::fs::write(&path, text).map_err(ClusterError::io("writing", &path))
        };
        write(
            "prometheus.yml",
            &config(&stage.cluster.kubeconfig, &stage.ns.name),
        )?;
        write("rules.yaml", &chart_rules(stage)?)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).map_err(ClusterError::io("creating", &log))?;
        let err_file = log_file
            .try_clone()
            .map_err(ClusterError::io("opening", &log))?;
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(ClusterError::io("starting", &binary))?;
        let mut p = Prometheus { child, addr, dir };
        let ready = wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            let addr = p.addr.clone();
            async move {
                Ok(http_request(&addr, "GET", "/-/ready", None)
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ()))
            }
        })
        .await;
        if let Err(e) = ready {
            let exited = p.child.try_wait().ok().flatten();
            return Err(ClusterError::Invalid(format!(
                "{e} (exit: {exited:?}); its log:\n{}",
                p.log()
            )));
        }
        Ok(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API; its `data` when the status is "success".
    async fn api(&self, path: &str) -> Result<Value> {
        let reply = http_request(&self.addr, "GET", path, None).await?;
        let body: Value = serde_json::from_str(&reply.body).map_err(|e| {
            ClusterError::Invalid(format!("{path}: not JSON ({e}): {}", reply.body))
        })?;
        if reply.status != 200 || body["status"] != "success" {
            return Err(ClusterError::Invalid(format!(
                "{path}: {} {body}",
                reply.status
            )));
        }
        Ok(body["data"].clone())
    }

    /// The instant vector `query` evaluates to now: (labels, value) per series.
    async fn query(&self, query: &str) -> Result<Vec<(Value, f64)>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(query)))
            .await?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), value))
            })
            .collect())
    }

    /// Waits until `query` yields exactly one series for which `check` holds.
    async fn wait_one(
        &self,
        what: &str,
        query: &str,
        check: impl Fn(&Value, f64) -> bool,
    ) -> Result<(Value, f64)> {
        let check = &check;
        wait_for(
            &format!("Prometheus: {what} ({query})"),
            WAIT,
            || async move {
                let result = self.query(query).await?;
                Ok(match result.as_slice() {
                    [(labels, value)] if check(labels, *value) => Some((labels.clone(), *value)),
                    _ => None,
                })
            },
        )
        .await
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn prometheus_scrapes_the_operator_and_the_predictor_and_sees_the_promotion() -> Result<()> {
    let stage = Stage::deploy("e2e-prom").await?;
    let prom = Prometheus::start(&stage).await?;
    let outcome = promotion_seen_by_prometheus(&stage, &prom).await;
    if outcome.is_err() {
        let targets = prom.api("/api/v1/targets").await;
        eprintln!(
            "--- Prometheus targets:\n{targets:?}\n--- Prometheus log:\n{}",
            prom.log()
        );
    }
    outcome?;
    drop(prom);
    stage.passed();
    Ok(())
}

async fn promotion_seen_by_prometheus(stage: &Stage, prom: &Prometheus) -> Result<()> {
    let ns = stage.ns.name.clone();

    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (status, _) = stage.wait_champion(PIPELINE, None, WAIT).await?;
    let version = str_at(&status, "/champion/version").unwrap_or_default();
    let score = status
        .pointer("/champion/score")
        .and_then(Value::as_f64)
        .ok_or_else(|| ClusterError::Invalid(format!("a champion without a score: {status}")))?;
    let metric = str_at(&status, "/champion/metric").unwrap_or("f1Macro");

    let sel = format!(r#"namespace="{ns}",pipeline="{PIPELINE}""#);
    // The promotion counter: one run promoted, none failed.
    prom.wait_one(
        "one promotion",
        &format!(r#"champion_pipeline_runs_completed_total{{{sel},outcome="promoted"}}"#),
        |_, v| v == 1.0,
    )
    .await?;
    let failed = prom
        .query(&format!(
            r#"champion_pipeline_runs_completed_total{{{sel},outcome="failed"}}"#
        ))
        .await?;
    assert_eq!(
        failed.len(),
        1,
        "the failure counter exists at 0: {failed:?}"
    );
    assert_eq!(failed[0].1, 0.0, "{failed:?}");
    // The champion score, in the metric it was judged on, as the status says it.
    let (labels, value) = prom
        .wait_one(
            "the champion score",
            &format!("champion_pipeline_champion_score_ratio{{{sel}}}"),
            |_, v| (v - score).abs() < 1e-9,
        )
        .await?;
    assert_eq!(labels["metric"], metric, "{labels}");
    assert!(value > 0.5 && value <= 1.0, "score {value}");
    eprintln!("Prometheus at {} saw {labels} = {value}", prom.addr);

    // The predictor is scraped through its pod annotations: it serves the promoted version.
    prom.wait_one(
        "the predictor's model info",
        &format!(r#"predictor_model_info{{{sel},model_version="{version}"}}"#),
        |l, v| {
            v == 1.0
                && l["pod"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("wine-predictor-"))
        },
    )
    .await?;
    // Every target in the namespace is up: the operator and the predictor pod(s).
    let up = prom.query(&format!(r#"up{{namespace="{ns}"}}"#)).await?;
    assert!(
        up.len() >= 2 && up.iter().all(|(_, v)| *v == 1.0),
        "targets of {ns}: {up:?}"
    );
    let build = prom
        .query(&format!(r#"champion_build_info{{namespace="{ns}"}}"#))
        .await?;
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        prom.query(&format!(r#"champion_leader{{namespace="{ns}"}}"#))
            .await?
            .first()
            .map(|s| s.1),
        Some(1.0)
    );

    // The chart's 7 rules (chart_monitoring checks their names) evaluate on these series
    // without an error, and none fires.
    let rules = wait_for("every chart rule evaluated", WAIT, || async {
        let data = prom.api("/api/v1/rules").await?;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.len() == 7
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        Ok(evaluated.then_some(rules))
    })
    .await?;
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} : {r}", r["name"]);
        assert_ne!(r["state"], "firing", "rule {} fires: {r}", r["name"]);
    }
    Ok(())
}
