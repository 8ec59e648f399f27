//! The chart's monitoring objects as `helm template` renders them: the PrometheusRule passes
//! `promtool check rules` and the alert unit tests in `tests/fixtures/prometheus/rules_test.yaml`
//! (`promtool test rules`: alerts fire when they should and not when they should not), and the
//! Grafana dashboard is a ConfigMap with the sidecar's label whose JSON is the dashboard file.
//! Whether every metric name in them exists is checked by the operator's and the predictor's
//! unit tests, which render their real registries.
//!
//! Needs helm (`make components`) and promtool (`make test-deps`); no cluster. Without promtool
//! the promtool half is skipped loudly, unless CHAMPION_REQUIRE_PROMTOOL=1 (as `make test` sets).

use std::path::{Path, PathBuf};
use std::process::Command;

use champion_tests::cluster::Layout;
use champion_tests::operator::workspace;
use champion_tests::{ClusterError, Result};
use serde_json::Value;

/// Every object `helm template` renders with `values`, in the namespace champion-system.
fn rendered(values: &[&str]) -> Result<Vec<Value>> {
    let helm = Layout::from_env().bin("helm");
    let chart = workspace()
        .join("charts/champion-operator")
        .display()
        .to_string();
    let mut args = vec![
        "template",
        "champion",
        chart.as_str(),
        "--namespace",
        "champion-system",
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    let out = Command::new(&helm)
        .args(&args)
        .output()
        .map_err(ClusterError::io("running", &helm))?;
    if !out.status.success() {
        return Err(ClusterError::Invalid(format!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| ClusterError::Invalid(format!("helm template output: {e}")))?;
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The ConfigMaps carrying a dashboard (those with a `*.json` key).
fn dashboards(objects: &[Value]) -> Vec<&Value> {
    of_kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| {
            c["data"]
                .as_object()
                .is_some_and(|d| d.keys().any(|k| k.ends_with(".json")))
        })
        .collect()
}

/// promtool on the PATH, or None after a loud skip message; a failure when
/// CHAMPION_REQUIRE_PROMTOOL=1.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CHAMPION_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "promtool is not installed and CHAMPION_REQUIRE_PROMTOOL=1 requires it (make test-deps)"
        );
        eprintln!(
            "\n\n!!!!!!!! SKIPPED: promtool is not installed (make test-deps); set CHAMPION_REQUIRE_PROMTOOL=1 to make this a failure !!!!!!!!\n\n"
        );
    }
    found
}

/// Runs `promtool args...` in `dir`; its output, or an error carrying it.
fn run_promtool(promtool: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(ClusterError::io("running", promtool))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(ClusterError::Invalid(format!(
            "promtool {}: {}\n{text}",
            args.join(" "),
            out.status
        )));
    }
    Ok(text)
}

/// The rule groups (`spec`) of the one PrometheusRule rendered with `values`.
fn rule_groups(values: &[&str]) -> Result<Value> {
    let objects = rendered(values)?;
    let rules = of_kind(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule: {rules:?}");
    assert_eq!(rules[0]["apiVersion"], "monitoring.coreos.com/v1");
    Ok(rules[0]["spec"].clone())
}

#[test]
fn monitoring_objects_are_off_by_default() -> Result<()> {
    let objects = rendered(&[])?;
    assert!(of_kind(&objects, "PrometheusRule").is_empty());
    assert!(dashboards(&objects).is_empty());
    Ok(())
}

#[test]
fn the_prometheus_rule_alerts_on_what_goes_wrong_and_passes_promtool() -> Result<()> {
    let spec = rule_groups(&["prometheusRule.enabled=true"])?;
    let alerts: Vec<&str> = spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        [
            "ChampionTrainingFailing",
            "ChampionRolloutReverted",
            "ChampionNoLeader",
            "ChampionModelStale",
            "ChampionPredictorErrors",
            "ChampionPredictorSlow",
            "ChampionInputDrift",
        ]
    );
    let Some(promtool) = promtool() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(ClusterError::io("creating", "a temporary directory"))?;
    let write = |name: &str, spec: &Value| -> Result<()> {
        let path = dir.path().join(name);
        let yaml = serde_yaml::to_string(spec)
            .map_err(|e| ClusterError::Invalid(format!("rules as YAML: {e}")))?;
        std::fs::write(&path, yaml).map_err(ClusterError::io("writing", &path))
    };
    write("defaults.yaml", &spec)?;
    let out = run_promtool(&promtool, dir.path(), &["check", "rules", "defaults.yaml"])?;
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");

    // The unit tests, on the rules rendered as that file says.
    write(
        "rules.yaml",
        &rule_groups(&[
            "prometheusRule.enabled=true",
            "prometheusRule.modelMaxAgeHours=2",
        ])?,
    )?;
    let fixture = workspace().join("tests/fixtures/prometheus/rules_test.yaml");
    let test_file = dir.path().join("rules_test.yaml");
    std::fs::copy(&fixture, &test_file).map_err(ClusterError::io("copying", &fixture))?;
    let out = run_promtool(&promtool, dir.path(), &["test", "rules", "rules_test.yaml"])?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn the_rule_unit_tests_fail_when_an_alert_fires_at_the_wrong_time() -> Result<()> {
    // Two failures in a row already alert with this value: the fixture's pipeline "steady"
    // (two failures) must not, so `promtool test rules` has to fail.
    let Some(promtool) = promtool() else {
        return Ok(());
    };
    let spec = rule_groups(&[
        "prometheusRule.enabled=true",
        "prometheusRule.modelMaxAgeHours=2",
        "prometheusRule.trainingFailuresInARow=2",
    ])?;
    let dir = tempfile::tempdir().map_err(ClusterError::io("creating", "a temporary directory"))?;
    let rules = dir.path().join("rules.yaml");
    let yaml = serde_yaml::to_string(&spec)
        .map_err(|e| ClusterError::Invalid(format!("rules as YAML: {e}")))?;
    std::fs::write(&rules, yaml).map_err(ClusterError::io("writing", &rules))?;
    let fixture = workspace().join("tests/fixtures/prometheus/rules_test.yaml");
    std::fs::copy(&fixture, dir.path().join("rules_test.yaml"))
        .map_err(ClusterError::io("copying", &fixture))?;
    let err = run_promtool(&promtool, dir.path(), &["test", "rules", "rules_test.yaml"])
        .expect_err("the unit tests catch an alert that fires too early");
    assert!(
        err.to_string()
            .contains(r#"pipeline="steady", severity="warning""#),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_dashboard_is_a_configmap_for_grafanas_sidecar_with_the_dashboard_json() -> Result<()> {
    let objects = rendered(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.annotations.grafana_folder=ML",
    ])?;
    let maps = dashboards(&objects);
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap: {maps:?}");
    let cm = maps[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "ML");
    assert_eq!(cm["metadata"]["namespace"], "champion-system");
    let json = cm["data"]["champion.json"].as_str().unwrap_or_default();
    let dashboard: Value = serde_json::from_str(json)
        .map_err(|e| ClusterError::Invalid(format!("the dashboard is not JSON: {e}")))?;
    let file = workspace().join("charts/champion-operator/dashboards/champion.json");
    let text = std::fs::read_to_string(&file).map_err(ClusterError::io("reading", &file))?;
    let on_disk: Value = serde_json::from_str(&text)
        .map_err(|e| ClusterError::Invalid(format!("{}: {e}", file.display())))?;
    assert_eq!(dashboard, on_disk, "helm carries the dashboard unchanged");
    assert_eq!(dashboard["uid"], "champion-operator");
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let graphs: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 12, "{} panels", graphs.len());
    for p in graphs {
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "panel {:?} queries something: {p}",
            p["title"]
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
    }
    // The other namespace value puts it where Grafana's sidecar looks.
    let objects = rendered(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=monitoring",
    ])?;
    assert_eq!(
        dashboards(&objects)[0]["metadata"]["namespace"],
        "monitoring"
    );
    Ok(())
}
