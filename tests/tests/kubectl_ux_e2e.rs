//! What a `kubectl` user sees of a pipeline, on the real local cluster: the printer columns
//! (Ready first; `-o wide` adds the Ready message and the predictor address), the `champion`
//! category, `status.address.url`, the documented `kubectl wait` commands for the next run and
//! for a promoted version to serve, Events that name the Job or Deployment they are about,
//! and trainer logs as JSON lines.
//!
//! Needs `make images` and the cluster. Run:
//! `cargo test -p champion-tests --test kubectl_ux_e2e`.

use std::time::Duration;

use champion_tests::operator::{Stage, str_at, wine_file};
use champion_tests::testing::{http_request, wait_for};
use champion_tests::{ClusterError, Result};
use serde_json::{Value, json};

const PIPELINE: &str = "wine";
/// The `--timeout` of each `kubectl wait`: training and rollout take seconds here; this is the
/// bound for a loaded two-core machine.
const WAIT: &str = "--timeout=180s";

/// `kubectl get modelpipeline wine -o jsonpath=<path>`.
fn jsonpath(stage: &Stage, path: &str) -> Result<String> {
    stage.kubectl(&[
        "get",
        "modelpipeline",
        PIPELINE,
        "-o",
        &format!("jsonpath={path}"),
    ])
}

/// The README's recipe: the number of the last finished run (0 before the first).
fn last_run_number(stage: &Stage) -> Result<u64> {
    let n = jsonpath(stage, "{.status.lastRun.number}")?;
    if n.trim().is_empty() {
        return Ok(0);
    }
    n.trim()
        .parse()
        .map_err(|e| ClusterError::Invalid(format!("lastRun.number {n:?}: {e}")))
}

/// The README's commands, as a shell would pass them: wait for run `n` to finish, and when it
/// promoted its version, for that version to serve. Returns the lastRun.
async fn wait_for_run(stage: &Stage, n: u64) -> Result<Value> {
    stage.kubectl(&[
        "wait",
        &format!("modelpipeline/{PIPELINE}"),
        &format!("--for=jsonpath={{.status.lastRun.number}}={n}"),
        WAIT,
    ])?;
    let status = stage.status(PIPELINE).await?;
    let run = status["lastRun"].clone();
    if run["outcome"] == "Promoted" {
        let version = run["version"].as_str().unwrap_or_default();
        stage.kubectl(&[
            "wait",
            &format!("modelpipeline/{PIPELINE}"),
            &format!("--for=jsonpath={{.status.servingVersion}}={version}"),
            WAIT,
        ])?;
    }
    Ok(run)
}

#[tokio::test]
async fn kubectl_shows_readiness_and_address_and_waits_for_each_run_and_its_model() -> Result<()> {
    let stage = Stage::deploy("ux").await?;
    let ns = stage.ns.name.clone();
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;

    // The first run, waited for exactly as the README says.
    let first = wait_for_run(&stage, 1).await?;
    assert_eq!(first["number"], 1, "{first}");
    assert_eq!(first["outcome"], "Promoted", "{first}");
    let version = first["version"].as_str().unwrap_or_default().to_string();
    let status = stage.status(PIPELINE).await?;
    assert_eq!(str_at(&status, "/servingVersion"), Some(version.as_str()));
    assert_eq!(str_at(&status, "/champion/version"), Some(version.as_str()));
    let url = format!("http://wine-predictor.{ns}.svc.cluster.local:8080");
    assert_eq!(
        str_at(&status, "/address/url"),
        Some(url.as_str()),
        "{status}"
    );

    // The address names the Service that answers: the host reaches its ClusterIP (once
    // kube-proxy has synced the new endpoint; until then the connection is refused).
    let service = stage.predictor_service(PIPELINE).await?;
    let ready = wait_for(
        "the predictor Service to answer",
        Duration::from_secs(60),
        || async {
            Ok(http_request(&service, "GET", "/v2/health/ready", None)
                .await
                .ok())
        },
    )
    .await?;
    assert_eq!(ready.status, 200, "{ready:?}");

    // `kubectl wait --for=condition=Ready` holds once the version serves.
    stage.kubectl(&[
        "wait",
        &format!("modelpipeline/{PIPELINE}"),
        "--for=condition=Ready",
        WAIT,
    ])?;

    // Printer columns: Ready first; -o wide adds the message and the address.
    let table = stage.kubectl(&["get", "modelpipelines"])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "CHAMPION", "SCORE", "PHASE", "LAST", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(..3),
        Some(&[PIPELINE, "True", version.as_str()][..]),
        "{table}"
    );
    let wide = stage.kubectl(&["get", "modelpipelines", "-o", "wide"])?;
    let header = wide.lines().next().unwrap_or_default();
    assert!(
        header.contains("MESSAGE") && header.trim_end().ends_with("ADDRESS"),
        "{wide}"
    );
    let row = wide.lines().nth(1).unwrap_or_default();
    assert!(row.trim_end().ends_with(&url), "{wide}");
    assert!(
        row.contains(&format!("version {version} is available")),
        "{wide}"
    );

    // The category lists the pipeline.
    let category = stage.kubectl(&["get", "champion", "-A"])?;
    assert!(
        category
            .lines()
            .skip(1)
            .any(
                |l| l.split_whitespace().take(2).collect::<Vec<_>>() == [ns.as_str(), PIPELINE]
                    || l.contains(&format!("modelpipeline.champion.dev/{PIPELINE}"))
            ),
        "{category}"
    );

    // Events name the object they are also about.
    let promoted = stage.events(PIPELINE, "ModelPromoted").await?;
    let job = format!("wine-train-{version}");
    assert!(
        promoted
            .iter()
            .any(|e| e.related.as_ref().is_some_and(
                |r| r.kind.as_deref() == Some("Job") && r.name.as_deref() == Some(&job)
            )),
        "ModelPromoted names Job {job}: {promoted:?}"
    );
    let completed = stage.events(PIPELINE, "RolloutCompleted").await?;
    assert!(
        completed
            .iter()
            .any(|e| e.type_.as_deref() == Some("Normal")
                && e.note.as_deref().is_some_and(|n| n.contains(&version))
                && e.related.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Deployment")
                        && r.name.as_deref() == Some("wine-predictor")
                })),
        "RolloutCompleted names the Deployment and version {version}: {completed:?}"
    );

    let listed = stage.kubectl(&["events", "--for", &format!("modelpipeline/{PIPELINE}")])?;
    assert!(listed.contains("RolloutCompleted"), "{listed}");
    assert_eq!(jsonpath(&stage, "{.status.address.url}")?, url);

    // The trainer logged JSON lines (the default off a terminal, as in a pod).
    let log = stage.kubectl(&["logs", &format!("job/{job}")])?;
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "fitted" && l["level"] == "INFO"),
        "a flat JSON `fitted` line in the trainer log: {log}"
    );

    // The next slot: the run after the last one, waited for the same way, whatever it decides.
    let n = last_run_number(&stage)?;
    assert_eq!(n, 1);
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let second = wait_for_run(&stage, n + 1).await?;
    assert_eq!(second["number"], 2, "{second}");
    assert_ne!(second["version"], first["version"], "{second}");
    assert!(
        ["Promoted", "Rejected"].contains(&second["outcome"].as_str().unwrap_or_default()),
        "{second}"
    );
    assert!(
        second["score"].is_f64() && second["championScore"].is_f64(),
        "{second}"
    );
    let status = stage.status(PIPELINE).await?;
    let serving = if second["outcome"] == "Promoted" {
        second["version"].as_str()
    } else {
        Some(version.as_str())
    };
    assert_eq!(str_at(&status, "/servingVersion"), serving, "{status}");

    stage.passed();
    Ok(())
}
