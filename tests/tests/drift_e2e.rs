//! Live data drift end to end on the real local cluster: the trainer writes the drift
//! reference into model.json, the champion's predictor counts live rows per feature bin and
//! exports PSI, the operator reads the predictor pods' `/metrics`, shows the largest PSI in
//! `status.drift`, and `spec.trigger.onDrift` starts a run on the data present once the inputs
//! drift. Traffic is sent from the test process to the predictor pod's own address.
//!
//! Needs `make images` and the cluster (`champion-cluster up`, which imports build/images).
//! Run: `cargo test -p champion-tests --test drift_e2e`.

use std::time::Duration;

use champion_tests::operator::{Stage, history, http_post_json, str_at, wine_file};
use champion_tests::{ClusterError, Result};
use serde_json::{Map, Value, json};

/// Deadline of each wait; the operator reads drift at most every 30 s.
const WAIT: Duration = Duration::from_secs(180);
const P: &str = "wine";
const THRESHOLD: f64 = 0.25;

/// The rows of a wine CSV as `/predict` objects (quality and Id left out).
fn rows(csv: &str) -> Result<Vec<Map<String, Value>>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| ClusterError::Invalid("CSV without a header".into()))?
        .split(',')
        .collect();
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let mut obj = Map::new();
        for (name, cell) in header.iter().zip(line.split(',')) {
            if *name == "quality" || *name == "Id" {
                continue;
            }
            let v: f64 = cell.trim().parse().map_err(|_| {
                ClusterError::Invalid(format!("line {}: {cell:?} is not a number", n + 2))
            })?;
            obj.insert(name.to_string(), json!(v));
        }
        out.push(obj);
    }
    Ok(out)
}

/// `rows` with every feature moved up by three of its standard deviations.
fn shifted(rows: &[Map<String, Value>]) -> Vec<Map<String, Value>> {
    let n = rows.len().max(1) as f64;
    let mut moved = rows.to_vec();
    let names: Vec<String> = rows
        .first()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let values: Vec<f64> = rows.iter().filter_map(|r| r[&name].as_f64()).collect();
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        for r in &mut moved {
            if let Some(v) = r[&name].as_f64() {
                r.insert(name.clone(), json!(v + 3.0 * std.max(1e-3)));
            }
        }
    }
    moved
}

/// POSTs `rows` to `/predict` on every ready predictor pod of `version`, 50 rows a request.
async fn send(stage: &Stage, version: &str, rows: &[Map<String, Value>]) -> Result<()> {
    let ips = stage.predictor_ips(P, version).await?;
    assert!(!ips.is_empty(), "no ready predictor pod serves {version}");
    for ip in ips {
        for chunk in rows.chunks(50) {
            let body = Value::Array(chunk.iter().cloned().map(Value::Object).collect());
            let reply = http_post_json(&format!("{ip}:8080"), "/predict", &body).await?;
            assert_eq!(reply.status, 200, "POST /predict to {ip}: {reply:?}");
        }
    }
    Ok(())
}

/// In-distribution traffic shows a small PSI in `status.drift` and starts nothing; shifted
/// traffic raises it past `psiThreshold`, and the operator says so (Warning DriftDetected) and
/// trains a new version on the data present, recording when.
#[tokio::test]
async fn shifted_inputs_raise_drift_in_the_status_and_start_a_run_on_the_present_data() -> Result<()>
{
    // Drift figures read every 2 s instead of every 30 s, so the test waits for traffic, not
    // for the clock.
    let stage = Stage::deploy_with("e2e-drift", &["driftReadIntervalSeconds=2"]).await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage
        .create_pipeline(
            P,
            json!({"trigger": {"onDrift": {"psiThreshold": THRESHOLD, "minRows": 300, "cooldownSeconds": 3600}}}),
        )
        .await?;
    let (first, _) = stage.wait_champion(P, None, WAIT).await?;
    let v1 = str_at(&first, "/champion/version")
        .unwrap_or_default()
        .to_string();

    // Live inputs drawn from the training data itself: a small figure, shown, and no run.
    // (Not test_data.csv: its density sits visibly lower than data_1.csv's, a real drift of
    // PSI > 1 that the first run of this test measured.)
    let train_rows = rows(&wine_file("data_1.csv")?)?;
    send(&stage, &v1, &train_rows).await?;
    let calm = stage
        .wait_status(P, "status.drift of the champion", WAIT, |s| {
            (str_at(s, "/drift/version") == Some(v1.as_str())).then(|| s.clone())
        })
        .await?;
    let psi = calm.pointer("/drift/maxPsi").and_then(Value::as_f64);
    assert!(
        psi.is_some_and(|p| (0.0..THRESHOLD).contains(&p)),
        "in-distribution inputs stay under the threshold: {calm}"
    );
    assert!(
        str_at(&calm, "/drift/feature").is_some_and(|f| !f.is_empty()),
        "{calm}"
    );
    assert!(calm.pointer("/drift/lastTriggeredAt").is_none(), "{calm}");
    assert!(stage.events_now(P, "DriftDetected").await?.is_empty());
    assert_eq!(stage.jobs(P).await?.len(), 1, "no run for calm inputs");

    // Shifted inputs: drift past the threshold starts a run on the data present.
    let moved = shifted(&train_rows);
    send(&stage, &v1, &moved).await?;
    send(&stage, &v1, &moved).await?;
    let drifted = stage
        .wait_status(P, "a run started by drift", WAIT, |s| {
            s.pointer("/drift/lastTriggeredAt")
                .is_some()
                .then(|| s.clone())
        })
        .await?;
    let psi = drifted
        .pointer("/drift/maxPsi")
        .and_then(Value::as_f64)
        .unwrap_or_default();
    assert!(psi > THRESHOLD, "{drifted}");
    assert_eq!(str_at(&drifted, "/drift/version"), Some(v1.as_str()));
    let feature = str_at(&drifted, "/drift/feature")
        .unwrap_or_default()
        .to_string();
    let events = stage.events(P, "DriftDetected").await?;
    assert!(
        events.iter().any(|e| {
            let note = e.note.as_deref().unwrap_or_default();
            e.type_.as_deref() == Some("Warning")
                && note.contains(&format!("feature {feature} of version {v1} drifted"))
                && note.contains("psiThreshold 0.25")
        }),
        "a Warning DriftDetected names the feature and the threshold: {events:?}"
    );
    let jobs = stage.jobs(P).await?;
    assert_eq!(jobs.len(), 2, "one run started by drift: {jobs:?}");
    let started = stage.events(P, "TrainingStarted").await?;
    assert!(
        started
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains("drift (")),
        "the run says drift started it: {started:?}"
    );
    // The run trains on the data present (the champion's fingerprint) and is judged.
    let fingerprint = str_at(&first, "/champion/dataFingerprint")
        .unwrap_or_default()
        .to_string();
    let judged = stage
        .wait_status(P, "the drift run judged", WAIT, |s| {
            (s.pointer("/lastRun/number").and_then(Value::as_i64) == Some(2)).then(|| s.clone())
        })
        .await?;
    let last = history(&judged).last().cloned().unwrap_or_default();
    assert_eq!(last["dataFingerprint"], fingerprint.as_str(), "{last}");
    assert_ne!(last["version"], v1.as_str(), "{last}");
    stage.passed();
    Ok(())
}
