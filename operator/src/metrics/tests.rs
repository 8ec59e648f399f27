use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::*;

fn text(registry: &Registry) -> String {
    String::from_utf8(render(registry).expect("renders")).expect("utf-8")
}

fn status(v: Value) -> ModelPipelineStatus {
    serde_json::from_value(v).expect("a valid status")
}

/// A pipeline whose second run was just promoted: launched at t=100, judged at t=130.
fn promoted_status() -> ModelPipelineStatus {
    status(json!({
        "phase": "RollingOut",
        "champion": {
            "version": "v2", "modelUri": "file:///m/v2/", "score": 0.81, "metric": "f1Macro",
            "dataFingerprint": "fp2", "promotedAt": "1970-01-01T00:02:10Z",
        },
        "challenger": {
            "version": "v2", "job": "wine-train-v2", "dataFingerprint": "fp2", "state": "Promoted",
            "score": 0.81, "championScore": 0.7, "startedAt": "1970-01-01T00:01:40Z",
        },
        "history": [
            {"version": "v1", "outcome": "Promoted", "score": 0.7, "reason": "first", "time": "1970-01-01T00:00:50Z"},
            {"version": "v2", "outcome": "Promoted", "score": 0.81, "reason": "better", "time": "1970-01-01T00:02:10Z"},
        ],
    }))
}

fn lines_of<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .collect()
}

#[test]
fn per_pipeline_series_follow_the_steps_and_the_status() {
    let registry = Registry::new();
    let m = Metrics::register(&registry).expect("metrics register once");
    let launched = status(json!({
        "phase": "Training",
        "challenger": {
            "version": "v2", "job": "wine-train-v2", "dataFingerprint": "fp2", "state": "Training",
            "startedAt": "1970-01-01T00:01:40Z",
        },
    }));
    m.record_step(
        "ml",
        "wine",
        Metric::F1Macro,
        &launched,
        &[MetricEvent::RunStarted],
    );
    let t = text(&registry);
    for line in [
        r#"champion_pipeline_runs_started_total{namespace="ml",pipeline="wine"} 1"#,
        // Created at 0 before their first count, so that increase() sees that count.
        r#"champion_pipeline_runs_completed_total{namespace="ml",outcome="promoted",pipeline="wine"} 0"#,
        r#"champion_pipeline_runs_completed_total{namespace="ml",outcome="failed",pipeline="wine"} 0"#,
        r#"champion_pipeline_rollbacks_total{cause="rollout_failed",namespace="ml",pipeline="wine"} 0"#,
        r#"champion_pipeline_phase{namespace="ml",phase="Training",pipeline="wine"} 1"#,
        r#"champion_pipeline_phase{namespace="ml",phase="Serving",pipeline="wine"} 0"#,
        r#"champion_pipeline_consecutive_failed_runs{namespace="ml",pipeline="wine"} 0"#,
    ] {
        assert!(t.contains(line), "{line} in\n{t}");
    }
    assert_eq!(lines_of(&t, "champion_pipeline_phase").len(), 6, "{t}");
    assert!(
        lines_of(&t, "champion_pipeline_champion_score_ratio").is_empty(),
        "no champion yet: {t}"
    );
    assert!(
        lines_of(
            &t,
            "champion_pipeline_last_successful_run_timestamp_seconds"
        )
        .is_empty()
    );

    m.record_step(
        "ml",
        "wine",
        Metric::F1Macro,
        &promoted_status(),
        &[MetricEvent::RunFinished(RunOutcome::Promoted)],
    );
    let t = text(&registry);
    for line in [
        r#"champion_pipeline_runs_completed_total{namespace="ml",outcome="promoted",pipeline="wine"} 1"#,
        r#"champion_pipeline_runs_completed_total{namespace="ml",outcome="rejected",pipeline="wine"} 0"#,
        r#"champion_pipeline_runs_started_total{namespace="ml",pipeline="wine"} 1"#,
        r#"champion_pipeline_phase{namespace="ml",phase="RollingOut",pipeline="wine"} 1"#,
        r#"champion_pipeline_phase{namespace="ml",phase="Training",pipeline="wine"} 0"#,
        r#"champion_pipeline_champion_score_ratio{metric="f1Macro",namespace="ml",pipeline="wine"} 0.81"#,
        r#"champion_pipeline_challenger_score_ratio{metric="f1Macro",namespace="ml",pipeline="wine"} 0.81"#,
        r#"champion_pipeline_champion_promoted_timestamp_seconds{namespace="ml",pipeline="wine"} 130"#,
        r#"champion_pipeline_last_successful_run_timestamp_seconds{namespace="ml",pipeline="wine"} 130"#,
        // Launched at 100 s, judged at 130 s: one observation in the 30 s bucket and above.
        r#"champion_pipeline_training_duration_seconds_bucket{namespace="ml",pipeline="wine",le="20"} 0"#,
        r#"champion_pipeline_training_duration_seconds_bucket{namespace="ml",pipeline="wine",le="30"} 1"#,
        r#"champion_pipeline_training_duration_seconds_sum{namespace="ml",pipeline="wine"} 30"#,
        r#"champion_pipeline_training_duration_seconds_count{namespace="ml",pipeline="wine"} 1"#,
    ] {
        assert!(t.contains(line), "{line} in\n{t}");
    }

    // A failed run: the failure counts, the streak shows, the last success stays.
    let mut failed = promoted_status();
    failed.phase = Some(Phase::Degraded);
    failed.consecutive_failures = 2;
    failed.history.push(
        serde_json::from_value(json!({
            "version": "v3", "outcome": "Failed", "reason": "exit 1", "time": "1970-01-01T00:05:00Z",
        }))
        .expect("entry"),
    );
    m.record_step(
        "ml",
        "wine",
        Metric::F1Macro,
        &failed,
        &[
            MetricEvent::RunFinished(RunOutcome::Failed),
            MetricEvent::RolledBack(RollbackCause::RolloutFailed),
        ],
    );
    let t = text(&registry);
    for line in [
        r#"champion_pipeline_runs_completed_total{namespace="ml",outcome="failed",pipeline="wine"} 1"#,
        r#"champion_pipeline_consecutive_failed_runs{namespace="ml",pipeline="wine"} 2"#,
        r#"champion_pipeline_phase{namespace="ml",phase="Degraded",pipeline="wine"} 1"#,
        r#"champion_pipeline_last_successful_run_timestamp_seconds{namespace="ml",pipeline="wine"} 130"#,
        r#"champion_pipeline_rollbacks_total{cause="rollout_failed",namespace="ml",pipeline="wine"} 1"#,
        // The failed run's history entry is not the challenger's: no duration observed.
        r#"champion_pipeline_training_duration_seconds_count{namespace="ml",pipeline="wine"} 1"#,
    ] {
        assert!(t.contains(line), "{line} in\n{t}");
    }
}

#[test]
fn the_score_series_carry_the_metric_and_follow_a_change_of_metric() {
    let registry = Registry::new();
    let m = Metrics::register(&registry).expect("metrics register once");
    let mut s = promoted_status();
    m.record_step("ml", "wine", Metric::F1Macro, &s, &[]);
    // The spec now asks for accuracy; the champion keeps the metric it was judged on until a
    // challenger scored in accuracy replaces it.
    if let Some(c) = s.challenger.as_mut() {
        c.score = Some(0.9);
    }
    m.record_step("ml", "wine", Metric::Accuracy, &s, &[]);
    let t = text(&registry);
    assert_eq!(
        lines_of(&t, "champion_pipeline_challenger_score_ratio"),
        [
            r#"champion_pipeline_challenger_score_ratio{metric="accuracy",namespace="ml",pipeline="wine"} 0.9"#
        ],
        "{t}"
    );
    assert_eq!(
        lines_of(&t, "champion_pipeline_champion_score_ratio"),
        [
            r#"champion_pipeline_champion_score_ratio{metric="f1Macro",namespace="ml",pipeline="wine"} 0.81"#
        ],
        "{t}"
    );
    s.champion = None;
    m.record_step("ml", "wine", Metric::Accuracy, &s, &[]);
    let t = text(&registry);
    assert!(
        lines_of(&t, "champion_pipeline_champion_score_ratio").is_empty(),
        "{t}"
    );
    assert!(
        lines_of(&t, "champion_pipeline_champion_promoted_timestamp_seconds").is_empty(),
        "{t}"
    );
}

#[test]
fn a_deleted_pipelines_series_are_removed_and_the_others_kept() {
    let registry = Registry::new();
    let m = Metrics::register(&registry).expect("metrics register once");
    let events = [
        MetricEvent::RunStarted,
        MetricEvent::RunFinished(RunOutcome::Promoted),
        MetricEvent::RolledBack(RollbackCause::Requested),
    ];
    for (ns, name) in [("ml", "wine"), ("ml", "gone"), ("other", "deleted")] {
        m.record_step(ns, name, Metric::F1Macro, &promoted_status(), &events);
    }
    m.forget_pipeline("other", "deleted");
    m.retain_pipelines(&HashSet::from([("ml".to_string(), "wine".to_string())]));
    let t = text(&registry);
    assert!(!t.contains(r#"pipeline="gone""#), "{t}");
    assert!(!t.contains(r#"pipeline="deleted""#), "{t}");
    let wine: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(r#"pipeline="wine""#))
        .collect();
    // Every per-pipeline family still has wine's series: 6 phases, 1 started, 3 outcomes,
    // 2 causes, 13 buckets + +Inf + sum + count, 2 timestamps, 2 scores, 1 failure streak.
    assert_eq!(wine.len(), 6 + 1 + 3 + 2 + 16 + 2 + 2 + 1, "{wine:#?}");
    // A pipeline seen again after being forgotten gets its series back.
    m.record_step("ml", "gone", Metric::F1Macro, &promoted_status(), &[]);
    assert!(text(&registry).contains(r#"pipeline="gone""#));
}

#[test]
fn build_info_process_and_operator_wide_series_are_exported() {
    let registry = Registry::new();
    let m = Metrics::register(&registry).expect("metrics register once");
    m.reconciled();
    m.reconcile_failed("observe");
    m.record_step(
        "ml",
        "wine",
        Metric::F1Macro,
        &promoted_status(),
        &[MetricEvent::DataToServing(42.0)],
    );
    drop(m.reconcile_timer());
    m.leader.set(1);
    let t = text(&registry);
    for line in [
        format!(
            r#"champion_build_info{{api_version="champion.dev/v1alpha1",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
        r#"champion_reconciles_total{result="ok"} 1"#.into(),
        r#"champion_reconciles_total{result="observe"} 1"#.into(),
        "champion_reconcile_duration_seconds_count 1".into(),
        r#"champion_data_to_serving_seconds_bucket{le="60"} 1"#.into(),
        "champion_leader 1".into(),
    ] {
        assert!(t.contains(&line), "{line} in\n{t}");
    }
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert_eq!(lines_of(&t, family).len(), 1, "{family} in\n{t}");
    }
    let families = family_names(&t);
    assert!(
        families
            .iter()
            .all(|f| !f.starts_with("champion_champion_")),
        "no stutter: {families:?}"
    );
    assert!(
        Metrics::register(&registry).is_err(),
        "double registration is refused"
    );
}

/// The `# TYPE` names of `text`.
fn family_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every series this operator can export, each family at least once.
fn full_render() -> String {
    let registry = Registry::new();
    let m = Metrics::register(&registry).expect("metrics register once");
    m.reconciled();
    m.leader.set(1);
    drop(m.reconcile_timer());
    m.record_step(
        "ml",
        "wine",
        Metric::F1Macro,
        &promoted_status(),
        &[
            MetricEvent::RunStarted,
            MetricEvent::RunFinished(RunOutcome::Promoted),
            MetricEvent::RolledBack(RollbackCause::Requested),
            MetricEvent::DataToServing(30.0),
        ],
    );
    text(&registry)
}

/// `promtool check metrics` on the operator's /metrics: names, types, help texts and units as
/// Prometheus' linter wants them. Skipped loudly without promtool, unless
/// CHAMPION_REQUIRE_PROMTOOL=1 (as `make test` sets) makes that a failure.
#[test]
fn promtool_check_metrics_passes_on_the_operators_metrics() {
    let exposition = full_render();
    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("exposition written to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\non\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
            "\n\n!!!!!!!! SKIPPED: promtool is not installed (apt-get install prometheus, or make test-deps); set CHAMPION_REQUIRE_PROMTOOL=1 to make this a failure !!!!!!!!\n\n"
        );
    }
    found
}

/// The chart's alerting rules and dashboard, as their files say them.
fn chart_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/champion-operator")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The `champion_*` / `process_*` metric names `expr` refers to (a family, or one of a
/// histogram's `_bucket`/`_sum`/`_count` series).
fn referenced(expr: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_lowercase()) {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if prefixes.iter().any(|p| word.starts_with(p)) {
            out.insert(word.to_string());
        }
        rest = &rest[end..];
    }
    out
}

/// Whether `name` is a series of a family in `families` (histograms add suffixes).
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
}

/// The Grafana dashboard's expressions (every `expr` of every panel target, every variable's
/// query).
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&chart_file("dashboards/champion.json"))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                // Panel queries, and the template variables' label_values(...) queries.
                for key in ["expr", "definition"] {
                    if let Some(Value::String(e)) = o.get(key) {
                        out.push(e.clone());
                    }
                }
                o.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    exprs
}

/// Every `champion_*` and `process_*` name in the chart's alerting rules and in each dashboard
/// expression is a series this operator exports: a renamed metric cannot leave a dead alert
/// or an empty panel behind. (The predictor's names are checked by the predictor's tests.)
#[test]
fn the_charts_alerts_and_dashboard_use_only_series_the_operator_exports() {
    let families = family_names(&full_render());
    let rules = chart_file("templates/prometheusrule.yaml");
    let in_rules = referenced(&rules, &["champion_"]);
    assert!(
        in_rules.len() >= 4,
        "the rules use the operator's series: {in_rules:?}"
    );
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 8, "the dashboard has panels: {exprs:?}");
    let mut in_dashboard = BTreeSet::new();
    for expr in &exprs {
        let names = referenced(expr, &["champion_", "predictor_", "process_"]);
        assert!(!names.is_empty(), "{expr:?} refers to no metric of ours");
        in_dashboard.extend(names);
    }
    let ours = in_rules
        .iter()
        .chain(in_dashboard.iter().filter(|n| !n.starts_with("predictor_")));
    let missing: Vec<&String> = ours.filter(|n| !exported(n, &families)).collect();
    assert!(
        missing.is_empty(),
        "not exported by the operator: {missing:?}\nexported: {families:?}"
    );
}
