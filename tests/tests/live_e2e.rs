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
//! Latency is not what these tests judge: on a shared two-core machine p99s are noise, so
//! latencyFloorSeconds is 0.25 s (the latency rule itself is unit-tested in analysis.rs).
//!
//! Needs `make images` and the cluster. Run:
//! `cargo test -p champion-tests --test live_e2e -- --test-threads=2`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use champion_tests::operator::{
    Stage, condition, contradicting_rows, csv_row_as_request, history, http_post_json, str_at,
    wine_file,
};
use champion_tests::testing::wait_for;
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{Value, json};

const PIPELINE: &str = "wine";
/// Deadline of training, promotion and rollout waits on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(180);

/// The weak first champion, promoted directly (a first model has nothing to be compared with
/// live); returns its version.
async fn weak_champion(stage: &Stage, rollout: Value) -> Result<String> {
    let few: String = wine_file("data_1.csv")?
        .lines()
        .take(61)
        .map(|l| format!("{l}\n"))
        .collect();
    stage.put_data("a_weak.csv", &contradicting_rows(&few)?)?;
    stage
        .create_pipeline(PIPELINE, json!({"rollout": rollout}))
        .await?;
    let (status, _) = stage.wait_champion(PIPELINE, None, WAIT).await?;
    assert!(
        status.get("live").is_none(),
        "no live analysis for a first model: {status}"
    );
    Ok(str_at(&status, "/champion/version")
        .unwrap_or_default()
        .to_string())
}

/// Requests sent, and the failures (status or error) with a few examples.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    examples: std::sync::Mutex<Vec<String>>,
}

/// About `rate` POST /predict per second to `target`, from 4 senders, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts once the Service answers (kube-proxy routes a new Service within moments; a
    /// request before that is refused, and is no failure of what is under test).
    async fn start(target: String, rate: u32) -> Result<Load> {
        let request = csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])?;
        wait_for("the predictor Service to answer", WAIT, || async {
            Ok(http_post_json(&target, "/predict", &request)
                .await
                .ok()
                .filter(|r| r.status == 200))
        })
        .await?;
        let began = std::time::Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let senders = 4;
        let period = Duration::from_secs_f64(f64::from(senders) / f64::from(rate.max(1)));
        let tasks = (0..senders)
            .map(|_| {
                let (stop, tally, target, request) =
                    (stop.clone(), tally.clone(), target.clone(), request.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let failure = match http_post_json(&target, "/predict", &request).await {
                            Ok(r) if r.status == 200 => None,
                            Ok(r) => Some(format!(
                                "at {:.1}s: {} {}",
                                began.elapsed().as_secs_f64(),
                                r.status,
                                r.body
                            )),
                            Err(e) => {
                                Some(format!("at {:.1}s: {e}", began.elapsed().as_secs_f64()))
                            }
                        };
                        match failure {
                            None => tally.ok.fetch_add(1, Ordering::Relaxed),
                            Some(f) => {
                                if let Ok(mut ex) = tally.examples.lock()
                                    && ex.len() < 5
                                {
                                    ex.push(f);
                                }
                                tally.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Ok(Load { stop, tally, tasks })
    }

    /// Stops the senders; (answered 200, failed, examples of failures).
    async fn stop(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let examples = self
            .tally
            .examples
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        (
            self.tally.ok.load(Ordering::Relaxed),
            self.tally.failed.load(Ordering::Relaxed),
            examples,
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The Deployment `name`, if it exists.
async fn deployment(stage: &Stage, name: &str) -> Result<Option<Deployment>> {
    stage
        .api::<Deployment>()
        .get_opt(name)
        .await
        .map_err(ClusterError::kube(format!("get Deployment {name}")))
}

/// Waits for the Deployment `name` to exist.
async fn wait_deployment(stage: &Stage, name: &str) -> Result<Deployment> {
    wait_for(&format!("Deployment {name}"), WAIT, || async {
        deployment(stage, name).await
    })
    .await
}

/// Waits until the Deployment `name` asks for 0 replicas and has no pods left.
async fn wait_scaled_to_zero(stage: &Stage, name: &str) -> Result<()> {
    let d = wait_for(
        &format!("Deployment {name} at 0 replicas"),
        WAIT,
        || async {
            Ok(deployment(stage, name).await?.filter(|d| {
                d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
                    && d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
            }))
        },
    )
    .await?;
    // status.replicas drops to 0 as soon as the pods are marked for deletion, but a
    // terminating predictor keeps answering through its drain delay and kube-proxy may
    // still route new connections to it for a moment: wait until its pods are gone.
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .ok_or_else(|| ClusterError::Invalid(format!("Deployment {name} has no selector")))?;
    let lp = ListParams::default().labels(&selector);
    wait_for(&format!("the pods of {name} gone"), WAIT, || async {
        let pods = stage
            .api::<Pod>()
            .list(&lp)
            .await
            .map_err(ClusterError::kube(format!("list the pods of {name}")))?;
        Ok(pods.items.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

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

/// Waits until the history's last entry is about a version other than `not` and has `cause`.
async fn wait_outcome(stage: &Stage, not: &str, cause: &str) -> Result<Value> {
    stage
        .wait_status(
            PIPELINE,
            &format!("a history entry with cause {cause}"),
            WAIT * 2,
            |s| {
                let h = history(s);
                let last = h.last()?;
                (last["version"] != not && last["cause"] == cause).then(|| s.clone())
            },
        )
        .await
}

#[tokio::test]
async fn a_canary_is_promoted_through_its_steps_under_load_with_no_failed_request() -> Result<()> {
    let stage = Stage::deploy("live-canary").await?;
    let weak = weak_champion(
        &stage,
        json!({
            "strategy": "Canary",
            "canary": {"steps": [50, 100], "stepSeconds": 10, "minRequests": 30},
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 0.25}
        }),
    )
    .await?;
    let load = Load::start(stage.predictor_service(PIPELINE).await?, 100).await?;
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
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 0.25}
        }),
    )
    .await?;
    let champion_before = stage
        .predictor(PIPELINE)
        .await?
        .ok_or_else(|| ClusterError::Invalid("no champion Deployment".into()))?;
    let pods_before = champion_pods(&stage).await?;
    assert!(!pods_before.is_empty());
    let load = Load::start(stage.predictor_service(PIPELINE).await?, 100).await?;
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
    assert_eq!(status["live"]["step"], 0, "aborted at the first step");
    assert_eq!(str_at(&status, "/champion/version"), Some(weak.as_str()));
    let cond = condition(&status, "LiveAnalysis")
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["reason"], "LiveAnalysisFailed", "{status}");
    let warnings = stage.events(PIPELINE, "LiveAnalysisFailed").await?;
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    wait_scaled_to_zero(&stage, "wine-predictor-canary").await?;
    let (ok, failed, _) = load.stop().await;
    eprintln!("abort: {ok} answered, {failed} failed (the canary's 500s)");

    // The champion keeps all traffic: every request answers 200 now.
    let after = Load::start(stage.predictor_service(PIPELINE).await?, 50).await?;
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
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 0.25}
        }),
    )
    .await?;
    let load = Load::start(stage.predictor_service(PIPELINE).await?, 100).await?;
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
            "analysis": {"intervalSeconds": 2, "latencyFloorSeconds": 0.25}
        }),
    )
    .await?;
    let load = Load::start(stage.predictor_service(PIPELINE).await?, 100).await?;
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
