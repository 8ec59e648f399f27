//! Live analysis end to end on the real local cluster (spec.rollout.strategy Canary and
//! Shadow): a weak first champion serves, better data trains a challenger that passes the
//! offline gate, and the challenger is then judged on live traffic that the test itself sends
//! to the predictor Service at about 100 requests per second.
//!
//! - a canary promoted through its steps under that load with zero failed requests;
//! - a canary aborted at its first step: the challenger's pods answer 500 (the test sets the
//!   predictor's test-only `PREDICT_FAULT_STATUS=500` on the canary Deployment, which the
//!   operator's server-side apply leaves alone), the champion keeps all traffic and is never
//!   restarted (same pods, no restarts, same Deployment generation);
//! - a shadow run promoted;
//! - a shadow run rejected for errors (the same fault on the shadow Deployment).
//!
//! Latency is not what these tests judge: on a shared two-core machine p99s are noise (the
//! shadow's is measured by the champion's mirroring thread at nice 19, which a host busy with
//! other suites starves for seconds: p99 3.5 s against the champion's 3.7 ms once), so
//! latencyFloorSeconds is 5 s (the latency rule itself is unit-tested in analysis.rs).
//!
//! Needs `make test-images` and the cluster. Run: `tests/run-tests.sh cluster live_e2e`.

use std::collections::BTreeMap;
use std::time::Duration;

use champion_tests::live::{
    Load, PIPELINE, WAIT, assert_aborted_at_first_step, serving_service, wait_deployment,
    wait_outcome, wait_scaled_to_zero, weak_champion,
};
use champion_tests::operator::{Stage, condition, history, str_at, wine_file};
use champion_tests::testing::wait_for;
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

/// The test-only fault: the Deployment's pods answer every prediction with 500.
fn inject_fault(stage: &Stage, name: &str) -> Result<()> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "predictor", "env": [{"name": "PREDICT_FAULT_STATUS", "value": "500"}]}
    ]}}}});
    stage.kubectl(&["patch", "deployment", name, "-p", &patch.to_string()])?;
    Ok(())
}

/// The champion's pods: uid → restart count.
async fn champion_pods(stage: &Stage) -> Result<BTreeMap<String, i32>> {
    let lp = ListParams::default().labels(&format!(
        "champion.dev/pipeline={PIPELINE},champion.dev/role=champion"
    ));
    let pods = stage
        .api::<Pod>()
        .list(&lp)
        .await
        .map_err(ClusterError::kube("list champion pods"))?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let restarts = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .sum();
            (p.metadata.uid.clone().unwrap_or_default(), restarts)
        })
        .collect())
}

/// The first container's env of `d`'s pod template (name → value).
fn env_of(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers[0]
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_canary_is_promoted_through_its_steps_under_load_with_no_failed_request() -> Result<()> {
    let stage = Stage::deploy("live-canary").await?;
    let weak = weak_champion(
        &stage,
        json!({
            "strategy": "Canary",
            "canary": {"steps": [50, 100], "stepSeconds": 10, "minRequests": 30},
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 5}
        }),
    )
    .await?;
    let load = Load::start(serving_service(&stage).await?, 100)?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;

    // The canary runs: status.live, the LiveAnalysis condition and the phase say so.
    let running = stage
        .wait_status(PIPELINE, "live analysis running", WAIT, |s| {
            (s["live"]["strategy"] == "Canary"
                && condition(s, "LiveAnalysis").is_some_and(|c| c["status"] == "True"))
            .then(|| s.clone())
        })
        .await?;
    assert_eq!(str_at(&running, "/phase"), Some("RollingOut"), "{running}");
    assert_eq!(running["challenger"]["state"], "LiveAnalysis");
    let challenger = str_at(&running, "/live/version")
        .unwrap_or_default()
        .to_string();
    let canary = wait_deployment(&stage, "wine-predictor-canary").await?;
    let labels = canary
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get("champion.dev/role").map(String::as_str),
        Some("canary")
    );
    assert_eq!(
        labels.get("champion.dev/model-version").map(String::as_str),
        Some(challenger.as_str())
    );
    // Step 2 of 2 (100 %) is reached with figures from the first.
    let last_step = stage
        .wait_status(PIPELINE, "the last canary step", WAIT, |s| {
            (s["live"]["step"] == 1).then(|| s.clone())
        })
        .await?;
    assert!(
        last_step["live"]["figures"]["challengerRequests"]
            .as_i64()
            .unwrap_or(0)
            >= 30,
        "step 1 passed on at least minRequests: {last_step}"
    );

    let status = wait_outcome(&stage, &weak, "LiveAnalysisPassed").await?;
    let h = history(&status);
    let last = h.last().cloned().unwrap_or_default();
    assert_eq!(last["outcome"], "Promoted");
    assert_eq!(last["version"], challenger);
    let (status, _) = stage.wait_champion(PIPELINE, Some(&weak), WAIT).await?;
    assert_eq!(
        str_at(&status, "/champion/version"),
        Some(challenger.as_str())
    );
    wait_scaled_to_zero(&stage, "wine-predictor-canary").await?;
    let (ok, failed, examples) = load.stop().await;
    assert_eq!(failed, 0, "no request failed ({ok} answered): {examples:?}");
    assert!(
        ok > 1000,
        "the load ran through the whole canary: {ok} answers"
    );
    assert_eq!(stage.events(PIPELINE, "LiveAnalysisStep").await?.len(), 1);
    assert_eq!(stage.events(PIPELINE, "LiveAnalysisPassed").await?.len(), 1);
    let done = stage.status(PIPELINE).await?;
    let cond = condition(&done, "LiveAnalysis")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("LiveAnalysisPassed"))
    );
    eprintln!(
        "canary promoted: {ok} requests answered, 0 failed; {}",
        done["live"]["message"]
    );
    stage.passed();
    Ok(())
}

#[tokio::test]
async fn a_failing_canary_is_aborted_at_its_first_step_and_the_champion_never_restarts()
-> Result<()> {
    let stage = Stage::deploy("live-abort").await?;
    let weak = weak_champion(
        &stage,
        json!({
            "strategy": "Canary",
            "canary": {"steps": [50, 100], "stepSeconds": 60, "minRequests": 20},
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 5}
        }),
    )
    .await?;
    let champion_before = stage
        .predictor(PIPELINE)
        .await?
        .ok_or_else(|| ClusterError::Invalid("no champion Deployment".into()))?;
    let pods_before = champion_pods(&stage).await?;
    assert!(!pods_before.is_empty());
    let load = Load::start(serving_service(&stage).await?, 100)?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    wait_deployment(&stage, "wine-predictor-canary").await?;
    inject_fault(&stage, "wine-predictor-canary")?;

    let status = wait_outcome(&stage, &weak, "LiveAnalysisFailed").await?;
    let last = history(&status).last().cloned().unwrap_or_default();
    assert_eq!(last["outcome"], "Rejected", "{last}");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("step 1/2") && reason.contains("error ratio"),
        "{reason}"
    );
    assert_aborted_at_first_step(&stage, &status, &weak).await?;
    wait_scaled_to_zero(&stage, "wine-predictor-canary").await?;
    let (ok, failed, _) = load.stop().await;
    eprintln!("abort: {ok} answered, {failed} failed (the canary's 500s)");

    // The champion keeps all traffic: every request answers 200 now.
    let after = Load::start(serving_service(&stage).await?, 50)?;
    tokio::time::sleep(Duration::from_secs(4)).await; // a load window, not a synchronisation
    let (ok, failed, examples) = after.stop().await;
    assert!(
        ok > 50 && failed == 0,
        "{ok} ok, {failed} failed: {examples:?}"
    );
    // ... and was never restarted: same pods, no restarts, same Deployment generation.
    assert_eq!(champion_pods(&stage).await?, pods_before);
    let champion_after = stage
        .predictor(PIPELINE)
        .await?
        .ok_or_else(|| ClusterError::Invalid("no champion Deployment".into()))?;
    assert_eq!(
        champion_after.metadata.generation,
        champion_before.metadata.generation
    );
    stage.passed();
    Ok(())
}

#[tokio::test]
async fn a_shadow_run_is_promoted() -> Result<()> {
    let stage = Stage::deploy("live-shadow").await?;
    let weak = weak_champion(
        &stage,
        json!({
            "strategy": "Shadow",
            "shadow": {"mirrorPercent": 100, "minRequests": 200, "maxDurationSeconds": 300},
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 5}
        }),
    )
    .await?;
    let load = Load::start(serving_service(&stage).await?, 100)?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    wait_deployment(&stage, "wine-predictor-shadow").await?;
    let mirroring = wait_for("the champion to mirror to the shadow", WAIT, || async {
        Ok(stage
            .predictor(PIPELINE)
            .await?
            .filter(|d| env_of(d).contains_key("SHADOW_URL")))
    })
    .await?;
    let env = env_of(&mirroring);
    assert_eq!(
        env.get("SHADOW_URL").map(String::as_str),
        Some(format!("http://wine-predictor-shadow.{}.svc:8080", stage.ns.name).as_str())
    );
    assert_eq!(env.get("SHADOW_PERCENT").map(String::as_str), Some("100"));

    let status = wait_outcome(&stage, &weak, "LiveAnalysisPassed").await?;
    let figures = &status["live"]["figures"];
    assert!(
        figures["challengerRequests"].as_i64().unwrap_or(0) >= 200,
        "{status}"
    );
    assert!(figures["agreement"].is_number(), "{figures}");
    let (status, d) = stage.wait_champion(PIPELINE, Some(&weak), WAIT).await?;
    assert!(
        !env_of(&d).contains_key("SHADOW_URL"),
        "mirroring ends with the shadow run"
    );
    wait_scaled_to_zero(&stage, "wine-predictor-shadow").await?;
    let (ok, failed, examples) = load.stop().await;
    eprintln!(
        "shadow promoted: {ok} answered, {failed} failed {examples:?}; {}",
        status["live"]["message"]
    );
    assert_eq!(failed, 0, "mirroring never fails a caller: {examples:?}");
    stage.passed();
    Ok(())
}

#[tokio::test]
async fn a_shadow_run_whose_answers_fail_is_rejected() -> Result<()> {
    let stage = Stage::deploy("live-shadow-err").await?;
    let weak = weak_champion(
        &stage,
        json!({
            "strategy": "Shadow",
            "shadow": {"mirrorPercent": 100, "minRequests": 3000, "maxDurationSeconds": 300},
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 5}
        }),
    )
    .await?;
    let load = Load::start(serving_service(&stage).await?, 100)?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    wait_deployment(&stage, "wine-predictor-shadow").await?;
    inject_fault(&stage, "wine-predictor-shadow")?;

    let status = wait_outcome(&stage, &weak, "LiveAnalysisFailed").await?;
    let last = history(&status).last().cloned().unwrap_or_default();
    assert_eq!(last["outcome"], "Rejected");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error ratio"),
        "{last}"
    );
    assert_eq!(str_at(&status, "/champion/version"), Some(weak.as_str()));
    assert_eq!(
        stage.events(PIPELINE, "LiveAnalysisFailed").await?[0]
            .type_
            .as_deref(),
        Some("Warning")
    );
    // The champion stops mirroring (its template loses SHADOW_*), the shadow goes to 0.
    wait_for("the champion to stop mirroring", WAIT, || async {
        Ok(stage
            .predictor(PIPELINE)
            .await?
            .filter(|d| !env_of(d).contains_key("SHADOW_URL")))
    })
    .await?;
    stage.wait_predictor_serving(PIPELINE, &weak, WAIT).await?;
    wait_scaled_to_zero(&stage, "wine-predictor-shadow").await?;
    let (ok, failed, examples) = load.stop().await;
    eprintln!("shadow rejected: {ok} answered, {failed} failed {examples:?}");
    assert_eq!(
        failed, 0,
        "a failing shadow never fails a caller: {examples:?}"
    );
    stage.passed();
    Ok(())
}
