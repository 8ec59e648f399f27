//! Faults injected on the real local cluster, each with what must hold afterwards: the trainer
//! killed or past its deadline, a corrupt model in the store, a predictor rollout that
//! crash-loops under steady traffic, the API server restarted mid-run, and failures shown
//! where a user looks (`kubectl describe`). The operator runs from its chart in each test's
//! namespace, as in `operator_e2e.rs`, with the same wine pipeline.
//!
//! Needs `make images` and the cluster (`champion-cluster up`, which imports build/images).
//! Run: `cargo test -p champion-tests --test faults_e2e -- --test-threads=2`.
//! The API server restart affects every test running at the time, so that test runs alone:
//! it takes [`EXCLUSIVE`] for writing, every other test takes it for reading (in this process,
//! with the writer first in line), and its Stage holds the cluster's tests lock exclusive, which
//! every Stage of the suites running beside this one holds shared.

use std::time::Duration;

use champion_tests::faults::{
    Corruption, SteadyClient, container_pid, corrupt_next_model, restart_api_server, signal,
};
use champion_tests::operator::{
    Stage, condition, contradicting_rows, csv_row_as_request, deployment_serves, history,
    http_post_json, model_uri_of, str_at, wine_file,
};
use champion_tests::testing::wait_for;
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Deadline of each wait: training, rollout and GC take seconds here; this is the bound for a
/// loaded two-core machine.
const WAIT: Duration = Duration::from_secs(180);
const PIPELINE: &str = "wine";
/// The pipelines' data poll interval (see `Stage::pipeline_manifest`).
const POLL: Duration = Duration::from_secs(2);

/// Held for writing by a test that disturbs the whole cluster, for reading by every other.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

fn outcome(e: &Value) -> &str {
    e.get("outcome").and_then(Value::as_str).unwrap_or_default()
}

fn outcomes(status: &Value) -> Vec<String> {
    history(status)
        .iter()
        .map(|e| outcome(e).to_string())
        .collect()
}

/// A trainer that takes seconds rather than a fraction of one: 2,000 boosting rounds of depth-8
/// trees (about 1.5 s of CPU on the wine data) under a CPU limit of 100 millicores, so about
/// 15 s of wall time in which the fault can land. `extra` is merged into the trainer section.
fn slow_trainer(extra: Value) -> Value {
    let mut t = json!({
        "algorithm": "adaboost",
        "imagePullPolicy": "IfNotPresent",
        "params": {"n_estimators": "2000", "max_depth": "8"},
        "resources": {"limits": {"cpu": "100m", "memory": "256Mi"}},
    });
    if let (Some(t), Value::Object(extra)) = (t.as_object_mut(), extra) {
        t.extend(extra);
    }
    t
}

/// Merge-patches the pipeline's trainer section.
fn patch_trainer(stage: &Stage, trainer: Value) -> Result<String> {
    let body = json!({"spec": {"trainer": trainer}}).to_string();
    stage.kubectl(&[
        "patch",
        &format!("modelpipeline/{PIPELINE}"),
        "--type=merge",
        "-p",
        &body,
    ])
}

/// Waits until the predictor Service answers with `version` (its endpoints follow the
/// Deployment's pods a moment later).
async fn wait_service_answers_with(stage: &Stage, version: &str) -> Result<()> {
    wait_for(
        &format!("the predictor Service to answer with {version}"),
        WAIT,
        || async {
            Ok(service_answers_with(stage)
                .await
                .ok()
                .filter(|v| v == version)
                .map(|_| ()))
        },
    )
    .await
}

/// Asserts the Job `name` has neither succeeded nor failed yet: the fault lands mid-run.
async fn assert_still_running(stage: &Stage, name: &str) -> Result<()> {
    let jobs: Api<Job> = stage.api();
    let job = jobs
        .get(name)
        .await
        .map_err(ClusterError::kube(format!("get Job {name}")))?;
    let finished = job
        .status
        .as_ref()
        .is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0);
    assert!(!finished, "Job {name} was still running: {job:?}");
    Ok(())
}

/// Creates the wine pipeline (`spec` merged into the recipe) on a weak first dataset and waits
/// until that model serves; returns the status and the predictor Deployment.
async fn weak_champion(stage: &Stage, spec: Value) -> Result<(Value, Deployment)> {
    let data_1 = wine_file("data_1.csv")?;
    let few: String = data_1.lines().take(61).map(|l| format!("{l}\n")).collect();
    stage.put_data("a_weak.csv", &contradicting_rows(&few)?)?;
    stage.create_pipeline(PIPELINE, spec).await?;
    stage.wait_champion(PIPELINE, None, WAIT).await
}

/// The first row of test_data.csv as a `/predict` request.
fn predict_request() -> Result<Value> {
    csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])
}

/// The version the predictor Service answers with (one request through the ClusterIP).
async fn service_answers_with(stage: &Stage) -> Result<String> {
    let target = stage.predictor_service(PIPELINE).await?;
    let reply = http_post_json(&target, "/predict", &predict_request()?).await?;
    if reply.status != 200 {
        return Err(ClusterError::Invalid(format!(
            "POST /predict through the Service {target}: {reply:?}"
        )));
    }
    Ok(reply
        .headers
        .get("x-model-version")
        .cloned()
        .unwrap_or_default())
}

/// The Job training a version other than `not`, once it has a pod; returns (Job, pod name).
async fn running_trainer(stage: &Stage, not: Option<&str>) -> Result<(Job, String)> {
    let pods: Api<Pod> = stage.api();
    wait_for("a trainer Job with a pod", WAIT, || async {
        let job = stage.jobs(PIPELINE).await?.into_iter().find(|j| {
            j.labels()
                .get("champion.dev/model-version")
                .map(String::as_str)
                != not
                && j.status
                    .as_ref()
                    .is_none_or(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) == 0)
        });
        let Some(job) = job else { return Ok(None) };
        let lp = ListParams::default().labels(&format!("job-name={}", job.name_any()));
        let pod = pods
            .list(&lp)
            .await
            .map_err(ClusterError::kube("list trainer pods"))?
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none());
        Ok(pod.map(|p| (job, p.name_any())))
    })
    .await
}

/// How long after `since` the trainer Job of `version` was created (the API server's
/// creationTimestamp, whole seconds).
async fn job_created_after(
    stage: &Stage,
    version: &str,
    since: k8s_openapi::jiff::Timestamp,
) -> Result<i64> {
    let job = stage
        .jobs(PIPELINE)
        .await?
        .into_iter()
        .find(|j| {
            j.labels()
                .get("champion.dev/model-version")
                .map(String::as_str)
                == Some(version)
        })
        .ok_or_else(|| ClusterError::Invalid(format!("no Job for version {version}")))?;
    let created = job.metadata.creation_timestamp.ok_or_else(|| {
        ClusterError::Invalid(format!("Job of {version} has no creationTimestamp"))
    })?;
    Ok(created.0.duration_since(since).as_secs())
}

/// New data after a failed run is looked for every poll, not held by the back-off: its Job
/// starts within this long of the data (two polls, and whole-second timestamps).
const NEW_DATA_STARTS_WITHIN: i64 = 2 * POLL.as_secs() as i64 + 2;

/// The champion, the predictor Deployment (same generation, same model) and the answers
/// through the Service are those of `before`.
async fn assert_champion_untouched(
    stage: &Stage,
    status: &Value,
    before: &Value,
    deployment: &Deployment,
) -> Result<()> {
    assert_eq!(status["champion"], before["champion"], "the champion moved");
    let champion = str_at(before, "/champion/version").unwrap_or_default();
    let now = stage
        .predictor(PIPELINE)
        .await?
        .ok_or_else(|| ClusterError::Invalid("the predictor Deployment is gone".into()))?;
    assert_eq!(
        now.metadata.generation, deployment.metadata.generation,
        "the predictor Deployment was changed"
    );
    assert_eq!(model_uri_of(&now), model_uri_of(deployment));
    assert!(
        deployment_serves(&now, champion),
        "the predictor serves {champion}"
    );
    assert_eq!(service_answers_with(stage).await?, champion);
    Ok(())
}

/// The failed run in `status` for `version`: its history entry, checked against what a user
/// sees: Failed, Degraded=TrainingFailed with the reason, the back-off in status, and a Warning
/// Event that says when it retries. Returns the reason.
async fn assert_failed_visibly(stage: &Stage, status: &Value, version: &str) -> Result<String> {
    let entry = history(status)
        .into_iter()
        .rev()
        .find(|e| e["version"] == version)
        .unwrap_or_default();
    assert_eq!(outcome(&entry), "Failed", "{entry}");
    let reason = entry["reason"].as_str().unwrap_or_default().to_string();
    assert_eq!(str_at(status, "/lastOutcome"), Some("Failed"));
    assert_eq!(str_at(status, "/challenger/state"), Some("Failed"));
    let degraded = condition(status, "Degraded").cloned().unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "TrainingFailed", "{degraded}");
    // Back-off, visible: how many failures in a row and when the same data is retried.
    assert_eq!(
        status.get("consecutiveFailures").and_then(Value::as_i64),
        Some(1),
        "{status}"
    );
    let (Some(retry), Some(failed_at)) = (str_at(status, "/retryAfter"), entry["time"].as_str())
    else {
        panic!("the back-off is in status (retryAfter) and the entry has a time: {status}");
    };
    let parse = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().ok();
    let wait = parse(retry)
        .zip(parse(failed_at))
        .map(|(r, f)| r.duration_since(f).as_secs());
    assert_eq!(wait, Some(10), "the first retry waits 10 s: {status}");
    let events = stage.events(PIPELINE, "TrainingFailed").await?;
    assert!(
        events.iter().any(|e| {
            let note = e.note.as_deref().unwrap_or_default();
            e.type_.as_deref() == Some("Warning")
                && note.contains(version)
                && note.contains("retry in 10s")
                && note.contains("the champion is untouched")
        }),
        "a Warning Event TrainingFailed names the version and the retry: {events:?}"
    );
    Ok(reason)
}

/// Item 3: the trainer pod deleted with grace 0 while it trains. With backoffLimit 0 the Job
/// fails (the deleted pod counts as a failure), the run is Failed with the Job's reason, the
/// back-off shows in status, the champion and its predictor are untouched, and the next data
/// is trained and promoted.
#[tokio::test]
async fn a_trainer_pod_killed_mid_run_fails_the_run_and_the_next_data_is_promoted() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-trainer-kill").await?;
    let (before, deployment) = weak_champion(&stage, json!({})).await?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    patch_trainer(&stage, slow_trainer(json!({})))?;

    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let (job, pod) = running_trainer(&stage, Some(&old)).await?;
    assert_still_running(&stage, &job.name_any()).await?;
    let version = job
        .labels()
        .get("champion.dev/model-version")
        .cloned()
        .unwrap_or_default();
    let pods: Api<Pod> = stage.api();
    pods.delete(&pod, &DeleteParams::default().grace_period(0))
        .await
        .map_err(ClusterError::kube(format!("delete trainer pod {pod}")))?;

    let status = stage
        .wait_status(PIPELINE, "the killed run recorded as Failed", WAIT, |s| {
            history(s)
                .iter()
                .any(|e| e["version"] == version.as_str() && outcome(e) == "Failed")
                .then(|| s.clone())
        })
        .await?;
    let reason = assert_failed_visibly(&stage, &status, &version).await?;
    assert!(
        reason.contains("BackoffLimitExceeded"),
        "the Job's own reason is the run's reason: {reason}"
    );
    assert_champion_untouched(&stage, &status, &before, &deployment).await?;
    let jobs: Api<Job> = stage.api();
    let failed = jobs
        .get(&job.name_any())
        .await
        .map_err(ClusterError::kube("get the killed Job"))?;
    assert_eq!(
        failed.status.as_ref().and_then(|s| s.succeeded),
        None,
        "the killed Job never succeeded: {failed:?}"
    );

    // The next data starts a new run at once (new data is not held by the back-off).
    let put_at = k8s_openapi::jiff::Timestamp::now();
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let (promoted, _) = stage.wait_champion(PIPELINE, Some(&old), WAIT).await?;
    let new = str_at(&promoted, "/champion/version").unwrap_or_default();
    let started = job_created_after(&stage, new, put_at).await?;
    assert!(
        started <= NEW_DATA_STARTS_WITHIN,
        "the run on new data started {started} s after it, in a 10 s back-off (poll {POLL:?})"
    );
    assert_ne!(new, version, "a new version, not the killed one");
    assert_eq!(
        outcomes(&promoted),
        ["Promoted", "Failed", "Promoted"],
        "{promoted}"
    );
    assert_eq!(
        promoted.get("consecutiveFailures"),
        None,
        "a judged run resets the failures: {promoted}"
    );
    wait_service_answers_with(&stage, new).await?;
    stage.passed();
    Ok(())
}

/// Item 3: the trainer's process killed (SIGKILL from the node) while it trains, with
/// backoffLimit 1: the Job retries in a new pod, and the run is judged once, from the one Job.
#[tokio::test]
async fn a_trainer_container_killed_mid_run_is_retried_by_its_job_and_judged_once() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-trainer-retry").await?;
    stage
        .create_pipeline(
            PIPELINE,
            json!({"trainer": slow_trainer(json!({"backoffLimit": 1}))}),
        )
        .await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let (job, pod) = running_trainer(&stage, None).await?;
    let pods: Api<Pod> = stage.api();
    let pid = wait_for("the trainer container's process", WAIT, || async {
        Ok(container_pid(&pods, &pod).await.ok())
    })
    .await?;
    assert_still_running(&stage, &job.name_any()).await?;
    signal(pid, libc::SIGKILL)?;

    let (status, _) = stage.wait_champion(PIPELINE, None, WAIT).await?;
    let version = job
        .labels()
        .get("champion.dev/model-version")
        .cloned()
        .unwrap_or_default();
    assert_eq!(str_at(&status, "/champion/version"), Some(version.as_str()));
    let all = stage.jobs(PIPELINE).await?;
    assert_eq!(all.len(), 1, "one Job for the data: {all:?}");
    let js = all[0].status.clone().unwrap_or_default();
    assert_eq!(
        (js.failed, js.succeeded),
        (Some(1), Some(1)),
        "the killed pod failed and its retry succeeded: {js:?}"
    );
    assert_eq!(outcomes(&status), ["Promoted"], "judged once: {status}");
    let promoted = stage.events(PIPELINE, "ModelPromoted").await?;
    assert_eq!(promoted.len(), 1, "one ModelPromoted Event: {promoted:?}");
    wait_service_answers_with(&stage, &version).await?;
    stage.passed();
    Ok(())
}

/// Item 3: a trainer slower than `trainer.activeDeadlineSeconds`: Kubernetes stops the Job, the
/// run is Failed with DeadlineExceeded named in history, condition and Event, the champion and
/// its predictor are untouched; with the deadline raised again, the next data is promoted.
#[tokio::test]
async fn a_trainer_past_its_deadline_fails_the_run_naming_the_deadline() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-trainer-deadline").await?;
    let (before, deployment) = weak_champion(&stage, json!({})).await?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let patch = |trainer: Value| patch_trainer(&stage, trainer);
    // 2 s for a run that needs well over 10 s of wall time at 20 millicores.
    patch(json!({
        "activeDeadlineSeconds": 2,
        "resources": {"limits": {"cpu": "20m", "memory": "256Mi"}},
    }))?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let status = stage
        .wait_status(PIPELINE, "a Failed run", WAIT, |s| {
            (outcomes(s).last().map(String::as_str) == Some("Failed")).then(|| s.clone())
        })
        .await?;
    let failed = history(&status).last().cloned().unwrap_or_default();
    let version = failed["version"].as_str().unwrap_or_default().to_string();
    let reason = assert_failed_visibly(&stage, &status, &version).await?;
    assert!(
        reason.contains("DeadlineExceeded"),
        "the deadline is named: {reason}"
    );
    let degraded = condition(&status, "Degraded").cloned().unwrap_or_default();
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DeadlineExceeded"),
        "{degraded}"
    );
    assert_champion_untouched(&stage, &status, &before, &deployment).await?;

    patch(json!({"activeDeadlineSeconds": 1800, "resources": null}))?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let (promoted, _) = stage.wait_champion(PIPELINE, Some(&old), WAIT).await?;
    assert_eq!(
        outcomes(&promoted).last().map(String::as_str),
        Some("Promoted")
    );
    assert_ne!(
        str_at(&promoted, "/champion/version"),
        Some(version.as_str())
    );
    stage.passed();
    Ok(())
}

/// The predictor pods of `version` that terminated, with their last termination message.
async fn refused_pods(stage: &Stage, version: &str) -> Result<Vec<(String, String)>> {
    let pods: Api<Pod> = stage.api();
    let lp = ListParams::default().labels(&format!(
        "champion.dev/pipeline={PIPELINE},app.kubernetes.io/component=predictor"
    ));
    Ok(pods
        .list(&lp)
        .await
        .map_err(ClusterError::kube("list predictor pods"))?
        .items
        .into_iter()
        .filter(|p| {
            p.annotations()
                .get("champion.dev/model-version")
                .map(String::as_str)
                == Some(version)
        })
        .filter_map(|p| {
            let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let state = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let state = state.or(cs.state.as_ref().and_then(|s| s.terminated.as_ref()))?;
            Some((p.name_any(), state.message.clone().unwrap_or_default()))
        })
        .collect())
}

/// Item 4: the promoted model.json is altered in the store after the trainer wrote it and
/// before any predictor pod loads it (its report still says success). The predictor refuses to
/// serve it (its termination message names the file), the rollout does not complete and is
/// reverted to the previous champion, which keeps answering through the Service; status,
/// history and Events say what happened.
#[tokio::test]
async fn a_corrupt_model_is_refused_and_the_rollout_reverts_to_the_champion() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-corrupt-model").await?;
    let spec = json!({"promotion": {"rolloutDeadlineSeconds": 10}});
    let (before, deployment) = weak_champion(&stage, spec).await?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let models = stage
        .store
        .path
        .join(format!("models/{}/{PIPELINE}", stage.ns.name));
    let corrupt = corrupt_next_model(models, vec![old.clone()], Corruption::Truncate, WAIT);
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let corrupted = corrupt
        .await
        .map_err(|e| ClusterError::Invalid(format!("the corrupting task panicked: {e}")))??;
    let new = corrupted.version.clone();

    let status = stage
        .wait_status(PIPELINE, "a RolledBack run, rollout over", WAIT, |s| {
            let back = outcomes(s).iter().any(|o| o == "RolledBack");
            (back && s.get("rollout").is_none()).then(|| s.clone())
        })
        .await?;
    assert_eq!(
        outcomes(&status),
        ["Promoted", "Promoted", "RolledBack"],
        "{status}"
    );
    let h = history(&status);
    assert_eq!(
        h[1]["version"],
        new.as_str(),
        "the corrupted version was promoted"
    );
    assert_eq!(h[2]["version"], new.as_str());
    assert_eq!(str_at(&status, "/champion/version"), Some(old.as_str()));
    assert_eq!(str_at(&status, "/lastOutcome"), Some("RolledBack"));
    let degraded = condition(&status, "Degraded").cloned().unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "RolloutFailed", "{degraded}");
    let said = degraded["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("the predictor said: refusing to serve") && said.contains("model.json"),
        "Degraded carries the predictor's own reason: {said}"
    );
    let note = h[2]["reason"].as_str().unwrap_or_default();
    assert!(
        note.contains(&new) && note.contains(&old) && note.contains("did not progress"),
        "the history names the failed and the restored version: {note}"
    );
    let back = stage.events(PIPELINE, "RolledBack").await?;
    assert!(
        back.iter().any(|e| {
            let n = e.note.as_deref().unwrap_or_default();
            n.contains(&new) && n.contains(&old)
        }),
        "a RolledBack Event names both versions: {back:?}"
    );

    // The predictor refused the file: its pod's termination message says so.
    let refused = refused_pods(&stage, &new).await?;
    assert!(
        refused
            .iter()
            .any(|(_, m)| m.contains("refusing to serve") && m.contains("model.json")),
        "a predictor pod of {new} stopped refusing model.json: {refused:?}"
    );
    // The champion is back in the Deployment and answers through the Service.
    let now = stage.wait_predictor_serving(PIPELINE, &old, WAIT).await?;
    assert_eq!(model_uri_of(&now), model_uri_of(&deployment));
    assert_eq!(service_answers_with(&stage).await?, old);
    stage.passed();
    Ok(())
}

/// Item 5: a promoted model that passes the trainer's checks but makes the predictor exit at
/// start (model.json tampered in the store, checksum kept): the new pods crash-loop and never
/// become ready. A client sending /predict through the Service every 10 ms for the whole time
/// gets an answer to every request, always from the champion, and the operator rolls back
/// within rolloutDeadlineSeconds plus one poll (plus 2 s: both timestamps have 1 s resolution).
#[tokio::test]
async fn a_crash_looping_rollout_is_rolled_back_in_time_with_zero_failed_requests() -> Result<()> {
    const DEADLINE: u64 = 10;
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-crashloop").await?;
    let spec = json!({"promotion": {"rolloutDeadlineSeconds": DEADLINE}});
    let (before, _) = weak_champion(&stage, spec).await?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let target = stage.predictor_service(PIPELINE).await?;
    let request = predict_request()?;
    champion_tests::live::wait_answering(&target, &request, WAIT).await?;
    let client = SteadyClient::start(target, request);

    let models = stage
        .store
        .path
        .join(format!("models/{}/{PIPELINE}", stage.ns.name));
    let corrupt = corrupt_next_model(models, vec![old.clone()], Corruption::Tamper, WAIT);
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let corrupted = corrupt.await;
    let reverted = async {
        let status = stage
            .wait_status(PIPELINE, "a RolledBack run, rollout over", WAIT, |s| {
                let back = outcomes(s).iter().any(|o| o == "RolledBack");
                (back && s.get("rollout").is_none()).then(|| s.clone())
            })
            .await?;
        stage.wait_predictor_serving(PIPELINE, &old, WAIT).await?;
        Ok::<_, ClusterError>(status)
    }
    .await;
    let seen = client.finish().await?;
    let corrupted = corrupted
        .map_err(|e| ClusterError::Invalid(format!("the corrupting task panicked: {e}")))??;
    let status = reverted?;
    let new = corrupted.version;

    assert_eq!(
        outcomes(&status),
        ["Promoted", "Promoted", "RolledBack"],
        "{status}"
    );
    let h = history(&status);
    assert_eq!(h[1]["version"], new.as_str());
    let parse = |e: &Value| {
        e["time"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    };
    let took = parse(&h[2])
        .zip(parse(&h[1]))
        .map(|(back, promoted)| back.duration_since(promoted).as_secs())
        .unwrap_or(i64::MAX);
    eprintln!(
        "rolled back {took} s after the promotion (deadline {DEADLINE} s, poll {POLL:?}); {} requests, versions {:?}",
        seen.sent, seen.versions
    );
    let bound = DEADLINE + POLL.as_secs() + 2;
    assert!(
        took >= DEADLINE as i64 && took <= bound as i64,
        "rolled back {took} s after the promotion, expected {DEADLINE}..={bound}"
    );
    let refused = refused_pods(&stage, &new).await?;
    assert!(
        refused.iter().any(|(_, m)| m.contains("refusing to serve")),
        "the new pods exited refusing the model: {refused:?}"
    );
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        seen.failures.len(),
        seen.sent,
        seen.failures
    );
    assert_eq!(seen.versions, vec![old], "only the champion answered");
    assert!(seen.sent > 500, "the client kept sending: {}", seen.sent);
    stage.passed();
    Ok(())
}

/// Item 2: the API server stopped and started again while the trainer Job runs. The operator
/// reconnects (its watches and its Lease), and the run is judged once: one Job, one history
/// entry, one TrainingStarted and one ModelPromoted Event.
#[tokio::test]
async fn an_api_server_restart_mid_run_loses_nothing_and_judges_the_run_once() -> Result<()> {
    let _alone = EXCLUSIVE.write().await;
    let stage = Stage::deploy_alone("fault-apiserver").await?;
    stage
        .create_pipeline(PIPELINE, json!({"trainer": slow_trainer(json!({}))}))
        .await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let (job, _) = running_trainer(&stage, None).await?;
    assert_still_running(&stage, &job.name_any()).await?;
    let down = restart_api_server(&stage.cluster).await?;
    eprintln!("the API server was unavailable for {down:?}");

    let (status, _) = stage.wait_champion(PIPELINE, None, WAIT).await?;
    let version = job
        .labels()
        .get("champion.dev/model-version")
        .cloned()
        .unwrap_or_default();
    assert_eq!(str_at(&status, "/champion/version"), Some(version.as_str()));
    let jobs: Vec<String> = stage
        .jobs(PIPELINE)
        .await?
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(jobs, [job.name_any()], "one Job for the data");
    assert_eq!(outcomes(&status), ["Promoted"], "judged once: {status}");
    for reason in ["TrainingStarted", "ModelPromoted"] {
        let events = stage.events(PIPELINE, reason).await?;
        assert_eq!(events.len(), 1, "one {reason} Event: {events:?}");
    }
    wait_service_answers_with(&stage, &version).await?;
    // Down for longer than its lease (6 s), the operator stepped down and was restarted by the
    // kubelet, at most once; the run was not judged twice for it.
    let restarts = stage
        .operator_pod()
        .await?
        .and_then(|p| {
            p.status?
                .container_statuses?
                .first()
                .map(|c| c.restart_count)
        })
        .unwrap_or(0);
    eprintln!("operator restarts across the API server restart: {restarts}");
    assert!(restarts <= 1, "the operator restarted {restarts} times");
    stage.passed();
    Ok(())
}

/// Item 6: what `kubectl describe modelpipeline` shows a user whose pipeline names a
/// credentials Secret the operator cannot read: a missing one (the operator may read Secrets)
/// and a forbidden one (it may not), each as the DataAvailable condition's reason and message
/// and one Warning Event.
#[tokio::test]
async fn kubectl_describe_shows_a_missing_or_forbidden_secret() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    // (operator may read Secrets, the data's secretRef, an unreadable data directory, the
    // DataAvailable reason, what describe must say)
    for (read_secrets, secret, unreadable, reason, says) in [
        (
            "true",
            true,
            false,
            "SecretUnavailable",
            "it does not exist",
        ),
        (
            "false",
            true,
            false,
            "SecretUnavailable",
            "the operator may not read it (forbidden)",
        ),
        // A failed listing: the data directory exists but the operator (uid 65532, no
        // capabilities) may not read it.
        ("true", false, true, "ListFailed", "Permission denied"),
    ] {
        let stage =
            Stage::deploy_with("fault-describe", &[&format!("readSecrets={read_secrets}")]).await?;
        let dir = stage.store.path.join("data");
        if unreadable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir).map_err(ClusterError::io("creating", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000))
                .map_err(ClusterError::io("making unreadable", &dir))?;
        }
        let uri = format!("file://{}/data/", stage.store.path.display());
        let mut data = json!({"uri": uri, "pollInterval": "2s", "target": "quality"});
        if secret {
            data["secretRef"] = json!({"name": "store-credentials"});
        }
        stage
            .create_pipeline(PIPELINE, json!({ "data": data }))
            .await?;
        let status = stage
            .wait_status(PIPELINE, "DataAvailable=False", WAIT, |s| {
                condition(s, "DataAvailable")
                    .is_some_and(|c| c["status"] == "False")
                    .then(|| s.clone())
            })
            .await?;
        let available = condition(&status, "DataAvailable")
            .cloned()
            .unwrap_or_default();
        assert_eq!(available["reason"], reason, "{available}");
        let described = wait_for("the Warning Event in describe", WAIT, || async {
            let out = stage.kubectl(&["describe", "modelpipeline", PIPELINE])?;
            Ok(out.contains("DataUnavailable").then_some(out))
        })
        .await?;
        let named = if secret { "store-credentials" } else { "data" };
        for expected in [reason, named, says, "Warning", "DataUnavailable"] {
            assert!(
                described.contains(expected),
                "`kubectl describe` shows {expected:?}:\n{described}"
            );
        }
        // Once per failure, not once per poll: still one Event after three more reconciles.
        let first = stage.events(PIPELINE, "DataUnavailable").await?;
        assert_eq!(first.len(), 1, "one Warning Event: {first:?}");
        let ip = stage
            .operator_pod()
            .await?
            .and_then(|p| p.status?.pod_ip)
            .ok_or_else(|| ClusterError::Invalid("the operator pod has no IP".into()))?;
        let reconciles = || async {
            let (_, body) =
                champion_tests::testing::http_get(&format!("{ip}:8080"), "/metrics").await?;
            Ok::<_, ClusterError>(counter_total(&body, "champion_reconciles_total"))
        };
        let at_first = reconciles().await?;
        wait_for("three more reconciles", WAIT, || async {
            Ok((reconciles().await? >= at_first + 3.0).then_some(()))
        })
        .await?;
        let after = stage.events(PIPELINE, "DataUnavailable").await?;
        assert_eq!(after.len(), 1, "still one Warning Event: {after:?}");
        stage.passed();
    }
    Ok(())
}

/// The hostile CSVs of the trainer's bad-input tests (`trainer-job/tests/bad_input.rs`), built
/// on the wine header: (what, file content, the message fragment the run must end with).
fn hostile_csvs() -> Result<Vec<(&'static str, String, String)>> {
    let data = wine_file("data_2.csv")?;
    let lines: Vec<&str> = data.lines().collect();
    let (header, r1, r2) = match lines.as_slice() {
        [h, a, b, ..] => (*h, *a, *b),
        _ => {
            return Err(ClusterError::Invalid(
                "data_2.csv has under two rows".into(),
            ));
        }
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| {
        cols.iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| ClusterError::Invalid(format!("no column {name} in {header}")))
    };
    let (alcohol, quality) = (at("alcohol")?, at("quality")?);
    let with = |row: &str, col: usize, value: &str| {
        let mut cells: Vec<&str> = row.split(',').collect();
        cells[col] = value;
        cells.join(",")
    };
    let n = cols.len();
    let ragged: Vec<&str> = r2.split(',').take(n - 1).collect();
    let mut dup = cols.clone();
    dup[1] = "Fixed Acidity";
    let mut no_target = cols.clone();
    no_target[quality] = "grade";
    Ok(vec![
        (
            "a ragged row",
            format!("{header}\n{r1}\n{}\n", ragged.join(",")),
            format!(
                "hostile.csv line 3: has {} fields, the header has {n}",
                n - 1
            ),
        ),
        (
            "a word in a numeric column",
            format!("{header}\n{r1}\n{}\n", with(r2, alcohol, "abc")),
            "hostile.csv line 3: column \"alcohol\" is \"abc\", expected a number".into(),
        ),
        (
            "a missing value",
            format!("{header}\n{}\n{r2}\n", with(r1, alcohol, "")),
            "hostile.csv line 2: column \"alcohol\" is empty (missing value)".into(),
        ),
        (
            "NaN",
            format!("{header}\n{r1}\n{}\n", with(r2, alcohol, "NaN")),
            "hostile.csv line 3: column \"alcohol\" is \"NaN\", expected a finite number".into(),
        ),
        (
            "-inf",
            format!("{header}\n{}\n{r2}\n", with(r1, alcohol, "-inf")),
            "hostile.csv line 2: column \"alcohol\" is \"-inf\", expected a finite number".into(),
        ),
        (
            "a word as the target",
            format!("{header}\n{}\n{r2}\n", with(r1, quality, "good")),
            "hostile.csv line 2: target column \"quality\" is \"good\", expected a number".into(),
        ),
        (
            "no target column",
            format!("{}\n{r1}\n{r2}\n", no_target.join(",")),
            "hostile.csv: no target column \"quality\"".into(),
        ),
        (
            "a column twice after normalising",
            format!("{}\n{r1}\n{r2}\n", dup.join(",")),
            "hostile.csv: column \"fixed_acidity\" appears twice in the header".into(),
        ),
        (
            "a header and no rows",
            format!("{header}\n"),
            "hostile.csv: has a header row but no data rows".into(),
        ),
        (
            "an empty object",
            String::new(),
            "hostile.csv: the object is empty".into(),
        ),
    ])
}

/// Item 8: each hostile CSV of the trainer's bad-input tests, dropped into the data prefix
/// beside good data (one after another, each replacing the last), ends as a Failed run whose
/// reason names the object and, where there is one, the line; the champion and its predictor
/// are untouched by all of them.
#[tokio::test]
async fn every_hostile_csv_ends_as_a_failed_run_naming_object_and_line() -> Result<()> {
    let _shared = EXCLUSIVE.read().await;
    let stage = Stage::deploy("fault-hostile-csv").await?;
    let (before, deployment) = weak_champion(&stage, json!({})).await?;
    let mut seen: Vec<String> = history(&before)
        .iter()
        .filter_map(|e| e["version"].as_str().map(str::to_string))
        .collect();
    let cases = hostile_csvs()?;
    for (what, csv, expected) in &cases {
        let put_at = k8s_openapi::jiff::Timestamp::now();
        stage.put_data("hostile.csv", csv)?;
        let status = stage
            .wait_status(PIPELINE, &format!("the run on {what} judged"), WAIT, |s| {
                let last = history(s).last().cloned()?;
                let version = last["version"].as_str()?.to_string();
                (!seen.contains(&version)).then(|| s.clone())
            })
            .await?;
        let last = history(&status).last().cloned().unwrap_or_default();
        let reason = last["reason"].as_str().unwrap_or_default();
        assert_eq!(outcome(&last), "Failed", "{what}: {last}");
        assert!(
            reason.contains(expected.as_str()),
            "{what}: the reason names the object and line ({expected}): {reason}"
        );
        let version = last["version"].as_str().unwrap_or_default().to_string();
        // Each file arrives in the back-off of the failure before it, growing 10, 20, 40 s…
        let started = job_created_after(&stage, &version, put_at).await?;
        eprintln!("{what}: run started {started} s after the file: {reason}");
        assert!(
            started <= NEW_DATA_STARTS_WITHIN,
            "{what}: the run started {started} s after its data, held by the back-off"
        );
        seen.push(version);
        assert_champion_untouched(&stage, &status, &before, &deployment).await?;
    }
    assert_eq!(seen.len(), cases.len() + 1, "one run per hostile file");
    stage.passed();
    Ok(())
}

/// Sum of every sample of the counter `name` (all label sets) in Prometheus text.
fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
