//! Helpers shared by the live-analysis suites (`tests/tests/live_e2e.rs`,
//! `tests/tests/online_e2e.rs`): the weak first champion they start from, traffic through the
//! predictor Service ([`serving_service`], [`Load`]), waits on the challenger's Deployment and
//! on the run's outcome, and the checks of a canary aborted at its first step.
//!
//! Every suite using them names its pipeline [`PIPELINE`]; every wait has a deadline
//! ([`WAIT`], or twice that for a whole live run), none sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::Value;

use crate::operator::{
    Stage, condition, contradicting_rows, csv_row_as_request, history, http_post_json, str_at,
    wine_file,
};
use crate::testing::wait_for;
use crate::{ClusterError, Result};

/// The pipeline the live suites create.
pub const PIPELINE: &str = "wine";
/// Deadline of training, promotion and rollout waits on a loaded two-core machine.
pub const WAIT: Duration = Duration::from_secs(180);

/// The weak first champion of [`PIPELINE`] with `rollout` as its `spec.rollout`: trained on 60
/// wine rows whose labels contradict each other, promoted directly (a first model has nothing
/// to be compared with live, so `status.live` stays empty); returns its version.
pub async fn weak_champion(stage: &Stage, rollout: Value) -> Result<String> {
    let few: String = wine_file("data_1.csv")?
        .lines()
        .take(61)
        .map(|l| format!("{l}\n"))
        .collect();
    stage.put_data("a_weak.csv", &contradicting_rows(&few)?)?;
    stage
        .create_pipeline(PIPELINE, serde_json::json!({"rollout": rollout}))
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

/// The first wine test row as a `/predict` request (the label and the id left out).
pub fn predict_request() -> Result<Value> {
    csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])
}

/// Waits (at most `within`) until `POST /predict` of `request` to `target` answers 200:
/// kube-proxy routes a new Service within moments, and a request refused before that is no
/// failure of what is under test.
pub async fn wait_answering(target: &str, request: &Value, within: Duration) -> Result<()> {
    wait_for("the predictor Service to answer", within, || async {
        Ok(http_post_json(target, "/predict", request)
            .await
            .ok()
            .filter(|r| r.status == 200))
    })
    .await?;
    Ok(())
}

/// The address of [`PIPELINE`]'s predictor Service, once it answers [`predict_request`].
pub async fn serving_service(stage: &Stage) -> Result<String> {
    let target = stage.predictor_service(PIPELINE).await?;
    wait_answering(&target, &predict_request()?, WAIT).await?;
    Ok(target)
}

/// Requests sent, and the failures (status or error) with a few examples.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    examples: Mutex<Vec<String>>,
}

/// About `rate` POST /predict of [`predict_request`] per second to `target`, from 4 senders,
/// until stopped (or dropped).
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts sending to `target` at once: take it from [`serving_service`], so that it
    /// answers already.
    pub fn start(target: String, rate: u32) -> Result<Load> {
        let request = predict_request()?;
        let began = Instant::now();
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
    pub async fn stop(mut self) -> (u64, u64, Vec<String>) {
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
pub async fn deployment(stage: &Stage, name: &str) -> Result<Option<Deployment>> {
    stage
        .api::<Deployment>()
        .get_opt(name)
        .await
        .map_err(ClusterError::kube(format!("get Deployment {name}")))
}

/// Waits for the Deployment `name` to exist.
pub async fn wait_deployment(stage: &Stage, name: &str) -> Result<Deployment> {
    wait_for(&format!("Deployment {name}"), WAIT, || async {
        deployment(stage, name).await
    })
    .await
}

/// Waits until the Deployment `name` asks for 0 replicas and has no pods left.
pub async fn wait_scaled_to_zero(stage: &Stage, name: &str) -> Result<()> {
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

/// Waits (at most twice [`WAIT`]: a whole live run) until the history's last entry is about
/// a version other than `not` and has `cause`; returns that status.
pub async fn wait_outcome(stage: &Stage, not: &str, cause: &str) -> Result<Value> {
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

/// Asserts that the canary of `status` (a status whose last entry was rejected for
/// `LiveAnalysisFailed`) ended at its first step with the champion `weak` still serving, the
/// LiveAnalysis condition saying why, and one Warning Event `LiveAnalysisFailed`.
pub async fn assert_aborted_at_first_step(stage: &Stage, status: &Value, weak: &str) -> Result<()> {
    assert_eq!(status["live"]["step"], 0, "aborted at the first step");
    assert_eq!(str_at(status, "/champion/version"), Some(weak));
    let cond = condition(status, "LiveAnalysis")
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["reason"], "LiveAnalysisFailed", "{status}");
    let warnings = stage.events(PIPELINE, "LiveAnalysisFailed").await?;
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    Ok(())
}
