//! The operator end to end on the real local cluster: the operator image installed from the
//! chart into the test's own namespace (namespaced RBAC, leader election, a hostPath `file://`
//! store), a `wine` ModelPipeline with the original recipe (target quality, good when above 5,
//! Id dropped, the fixed test_data.csv as holdout, poll every 2 s), and data dropped into the
//! store the way a user's pipeline would. Each test asserts what its name says on the objects
//! the operator produced: status, history, conditions, Events, Jobs, the predictor Deployment,
//! and the answers of the predictor pods themselves.
//!
//! Needs `make images` and the cluster (`champion-cluster up`, which imports build/images).
//! Run: `cargo test -p champion-tests --test operator_e2e -- --test-threads=2`.
//! A failing test prints the pipeline YAML, the objects, Events, and operator/trainer/predictor
//! logs of its namespace.

use std::time::Duration;

use champion_tests::faults::{container_pid, signal};
use champion_tests::live::{predict_request, wait_answering};
use champion_tests::operator::{
    Stage, assert_first_promotion, condition, contradicting_rows, history, http_post_json,
    model_uri_of, str_at, wine_file,
};
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

/// Deadline of each wait: training, rollout and GC take seconds here; this is the bound for a
/// loaded two-core machine.
const WAIT: Duration = Duration::from_secs(120);
const PIPELINE: &str = "wine";

fn entry_outcome(e: &Value) -> &str {
    e.get("outcome").and_then(Value::as_str).unwrap_or_default()
}

fn f64_at(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// The wine pipeline's promoted champion other than `not`, served; see
/// [`Stage::wait_champion`].
async fn wait_champion(stage: &Stage, not: Option<&str>) -> Result<(Value, Deployment)> {
    stage.wait_champion(PIPELINE, not, WAIT).await
}

/// POSTs the first row of test_data.csv to /predict on every ready predictor pod serving
/// `version`; asserts each answers 200 with that version in the header and the body.
async fn assert_predictor_answers_with(stage: &Stage, port: i64, version: &str) -> Result<()> {
    let ips = stage.predictor_ips(PIPELINE, version).await?;
    assert!(
        !ips.is_empty(),
        "no ready predictor pod serves version {version}"
    );
    let request = predict_request()?;
    for ip in ips {
        let reply = http_post_json(&format!("{ip}:{port}"), "/predict", &request).await?;
        assert_eq!(reply.status, 200, "POST /predict to {ip}: {reply:?}");
        assert_eq!(
            reply.headers.get("x-model-version").map(String::as_str),
            Some(version),
            "x-model-version of {ip}: {reply:?}"
        );
        let body: Value = serde_json::from_str(&reply.body).map_err(|e| {
            ClusterError::Invalid(format!(
                "/predict on {ip} answered non-JSON: {e}: {reply:?}"
            ))
        })?;
        assert_eq!(body["modelVersion"], version, "body of {ip}: {body}");
        let probabilities = body["probabilities"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let label = body["label"].as_str().unwrap_or_default();
        assert!(
            probabilities.contains_key(label),
            "the label {label:?} is one of the classes {probabilities:?}"
        );
        let total: f64 = probabilities.values().filter_map(Value::as_f64).sum();
        assert!((total - 1.0).abs() < 1e-6, "probabilities sum to 1: {body}");
    }
    Ok(())
}

/// The champion in `status` is the one in `before`, and its predictor Deployment still loads
/// `served_uri` and answers with it.
async fn assert_champion_untouched(
    stage: &Stage,
    status: &Value,
    before: &Value,
    served_uri: Option<&str>,
) -> Result<()> {
    assert_eq!(status["champion"], before["champion"]);
    let champion = str_at(before, "/champion/version").unwrap_or_default();
    let now = stage.predictor(PIPELINE).await?;
    assert_eq!(now.as_ref().and_then(model_uri_of).as_deref(), served_uri);
    assert!(
        now.as_ref()
            .is_some_and(|d| champion_tests::operator::deployment_serves(d, champion)),
        "the predictor still serves {champion}: {now:?}"
    );
    assert_predictor_answers_with(stage, 8080, champion).await
}

/// Deploys the wine pipeline on a weak first dataset (a few dozen rows, every label
/// contradicted) and waits until that model serves; returns the status. Any real data beats it.
async fn weak_champion(stage: &Stage) -> Result<Value> {
    let data_1 = wine_file("data_1.csv")?;
    let few: String = data_1.lines().take(61).map(|l| format!("{l}\n")).collect();
    stage.put_data("a_weak.csv", &contradicting_rows(&few)?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (before, _) = wait_champion(stage, None).await?;
    Ok(before)
}

/// (a) First data → trainer Job → Promoted → predictor Deployment Available → the predictor
/// pods answer /predict with the promoted version.
#[tokio::test]
async fn first_data_is_trained_promoted_and_served_by_the_predictor() -> Result<()> {
    let stage = Stage::deploy("e2e-first").await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;

    let (status, deployment) = wait_champion(&stage, None).await?;
    let version = str_at(&status, "/champion/version").unwrap_or_default();
    let root = stage.store.path.display().to_string();
    let model_uri = format!(
        "file://{root}/models/{}/{PIPELINE}/{version}/",
        stage.ns.name
    );
    assert_first_promotion(&status, &model_uri);

    // One run: its Job completed and wrote the model the predictor loads.
    let jobs = stage.jobs(PIPELINE).await?;
    assert_eq!(jobs.len(), 1, "one Job for one data fingerprint: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(
        job.labels()
            .get("champion.dev/model-version")
            .map(String::as_str),
        Some(version)
    );
    assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1));
    let model_dir = stage
        .store
        .path
        .join(format!("models/{}/{PIPELINE}/{version}", stage.ns.name));
    for file in ["model.json", "report.json"] {
        assert!(
            model_dir.join(file).is_file(),
            "{file} missing in {}",
            model_dir.display()
        );
    }

    // History and Events tell the same story.
    let h = history(&status);
    assert_eq!(h.len(), 1, "one history entry: {h:?}");
    assert_eq!(h[0]["version"], version);
    assert_eq!(entry_outcome(&h[0]), "Promoted");
    let score = f64_at(&h[0], "score").unwrap_or(-1.0);
    assert!(score > 0.5 && score <= 1.0, "first model score {score}");
    assert_eq!(
        status.pointer("/champion/score").and_then(Value::as_f64),
        Some(score)
    );
    let started = stage.events(PIPELINE, "TrainingStarted").await?;
    assert!(
        started.iter().any(|e| e
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(&job.name_any())),
        "a TrainingStarted Event names the Job: {started:?}"
    );
    let promoted = stage.events(PIPELINE, "ModelPromoted").await?;
    assert!(
        promoted
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains(version)),
        "a ModelPromoted Event names version {version}: {promoted:?}"
    );

    // The Deployment serves exactly that model, and Ready follows.
    assert_eq!(
        model_uri_of(&deployment).as_deref(),
        Some(model_uri.as_str())
    );
    stage.wait_ready_serving(PIPELINE, WAIT).await?;

    let port = stage
        .pipeline(PIPELINE)
        .await?
        .and_then(|p| p.pointer("/spec/predictor/port").and_then(Value::as_i64))
        .unwrap_or(8080);
    assert_eq!(port, 8080, "the CRD defaults the predictor port");
    assert_predictor_answers_with(&stage, port, version).await?;
    stage.passed();
    Ok(())
}

/// (d) A CSV with a word in a numeric column: the run fails with a message naming the object
/// and the line (history, Degraded condition, Event); the champion and the predictor stay.
#[tokio::test]
async fn corrupt_data_fails_the_run_naming_object_and_line_and_keeps_the_champion() -> Result<()> {
    let stage = Stage::deploy("e2e-corrupt").await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (before, deployment) = wait_champion(&stage, None).await?;
    let champion = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let served_uri = model_uri_of(&deployment);
    assert!(served_uri.is_some(), "the predictor has a MODEL_URI");

    // Line 1 header, lines 2-3 good rows, line 4 has "abc" as its alcohol.
    let data_2 = wine_file("data_2.csv")?;
    let rows: Vec<&str> = data_2.lines().take(3).collect();
    let mut bad: Vec<String> = rows[2].split(',').map(str::to_string).collect();
    bad[10] = "abc".into();
    let corrupt = format!("{}\n{}\n{}\n{}\n", rows[0], rows[1], rows[2], bad.join(","));
    stage.put_data("corrupt.csv", &corrupt)?;

    let status = stage
        .wait_status(PIPELINE, "a Failed run in history", WAIT, |s| {
            history(s)
                .iter()
                .any(|e| entry_outcome(e) == "Failed")
                .then(|| s.clone())
        })
        .await?;
    let failed = history(&status)
        .into_iter()
        .find(|e| entry_outcome(e) == "Failed")
        .unwrap_or_default();
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("corrupt.csv line 4") && reason.contains("alcohol"),
        "the failure names object, line and column: {reason}"
    );
    assert_eq!(str_at(&status, "/lastOutcome"), Some("Failed"));
    let degraded = condition(&status, "Degraded").cloned().unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "TrainingFailed", "{degraded}");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt.csv line 4"),
        "{degraded}"
    );
    // The operator publishes the Event before it writes the status that records the failure.
    let events = stage.events(PIPELINE, "TrainingFailed").await?;
    assert!(
        events.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("corrupt.csv line 4")
        }),
        "a Warning Event TrainingFailed names object and line: {events:?}"
    );
    let failed_version = failed["version"].as_str().unwrap_or_default();
    let failed_job = stage.jobs(PIPELINE).await?.into_iter().find(|j| {
        j.labels()
            .get("champion.dev/model-version")
            .map(String::as_str)
            == Some(failed_version)
    });
    let job_failed = failed_job
        .as_ref()
        .and_then(|j| j.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
    assert!(
        job_failed,
        "the Job of version {failed_version} is Failed: {failed_job:?}"
    );

    // Untouched: champion, predictor Deployment, and what the predictor answers.
    assert_eq!(
        str_at(&status, "/champion/version"),
        Some(champion.as_str())
    );
    assert_champion_untouched(&stage, &status, &before, served_uri.as_deref()).await?;
    stage.passed();
    Ok(())
}

/// (b) New data that makes the model worse: CandidateRejected, both scores in the history, the
/// predictor untouched.
#[tokio::test]
async fn data_that_scores_lower_is_rejected_and_the_predictor_is_untouched() -> Result<()> {
    let stage = Stage::deploy("e2e-reject").await?;
    let (data_1, data_2) = (wine_file("data_1.csv")?, wine_file("data_2.csv")?);
    stage.put_data("data_1.csv", &data_1)?;
    stage.put_data("data_2.csv", &data_2)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (before, deployment) = wait_champion(&stage, None).await?;
    let champion = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let champion_score = before
        .pointer("/champion/score")
        .and_then(Value::as_f64)
        .unwrap_or(-1.0);
    let served_uri = model_uri_of(&deployment);

    let data_2_rows = data_2.split_once('\n').map(|(_, r)| r).unwrap_or_default();
    stage.put_data(
        "noise.csv",
        &contradicting_rows(&format!("{data_1}{data_2_rows}"))?,
    )?;
    let status = stage
        .wait_status(PIPELINE, "a Rejected run in history", WAIT, |s| {
            history(s)
                .iter()
                .any(|e| entry_outcome(e) == "Rejected")
                .then(|| s.clone())
        })
        .await?;
    let h = history(&status);
    assert_eq!(h.len(), 2, "one promoted and one rejected run: {h:?}");
    assert_eq!(entry_outcome(&h[0]), "Promoted");
    assert_eq!(h[0]["version"], champion.as_str());
    assert_eq!(f64_at(&h[0], "score"), Some(champion_score));
    let rejected = &h[1];
    assert_eq!(entry_outcome(rejected), "Rejected");
    let score = f64_at(rejected, "score").unwrap_or(f64::NAN);
    let against = f64_at(rejected, "championScore").unwrap_or(f64::NAN);
    assert!(
        score < against,
        "the challenger scores lower than the champion: {rejected}"
    );
    assert!(
        (against - champion_score).abs() < 1e-9,
        "the champion was re-scored on the same fixed holdout ({against} vs {champion_score})"
    );
    assert_eq!(str_at(&status, "/lastOutcome"), Some("Rejected"));
    assert_eq!(str_at(&status, "/challenger/state"), Some("Rejected"));
    let version = rejected["version"].as_str().unwrap_or_default();
    let events = stage.events(PIPELINE, "CandidateRejected").await?;
    assert!(
        events
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains(version)),
        "a CandidateRejected Event names version {version}: {events:?}"
    );

    // The champion and its predictor stay.
    assert_champion_untouched(&stage, &status, &before, served_uri.as_deref()).await?;
    stage.passed();
    Ok(())
}

/// (e) Deleting the ModelPipeline garbage-collects its Jobs (and their pods), the predictor
/// Deployment (and its pods) and the Service.
#[tokio::test]
async fn deleting_the_pipeline_garbage_collects_jobs_deployment_and_service() -> Result<()> {
    let stage = Stage::deploy("e2e-gc").await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let _ = wait_champion(&stage, None).await?;
    let services: Api<Service> = stage.api();
    let service = format!("{PIPELINE}-predictor");
    assert!(
        services
            .get_opt(&service)
            .await
            .map_err(ClusterError::kube("get the predictor Service"))?
            .is_some(),
        "the predictor Service exists before the deletion"
    );
    assert_eq!(stage.jobs(PIPELINE).await?.len(), 1);

    stage
        .pipelines()
        .delete(PIPELINE, &DeleteParams::background())
        .await
        .map_err(ClusterError::kube("delete the ModelPipeline"))?;
    let pods: Api<Pod> = stage.api();
    let owned = ListParams::default().labels(&format!("champion.dev/pipeline={PIPELINE}"));
    let jobs: Api<Job> = stage.api();
    let deployments: Api<Deployment> = stage.api();
    champion_tests::testing::wait_for("the pipeline's objects to be collected", WAIT, || async {
        let left = (
            stage.pipeline(PIPELINE).await?.is_some(),
            jobs.list(&owned)
                .await
                .map_err(ClusterError::kube("list Jobs"))?
                .items
                .len(),
            deployments
                .list(&owned)
                .await
                .map_err(ClusterError::kube("list Deployments"))?
                .items
                .len(),
            services
                .list(&owned)
                .await
                .map_err(ClusterError::kube("list Services"))?
                .items
                .len(),
            pods.list(&owned)
                .await
                .map_err(ClusterError::kube("list Pods"))?
                .items
                .len(),
        );
        Ok((left == (false, 0, 0, 0, 0)).then_some(()))
    })
    .await?;
    // The operator is still running and did not resurrect anything for the deleted pipeline.
    assert!(stage.operator_pod().await?.is_some());
    assert!(stage.predictor(PIPELINE).await?.is_none());
    stage.passed();
    Ok(())
}

/// (f) The operator pod killed while its trainer Job runs: the Deployment's replacement adopts
/// the run — still exactly one Job for that data fingerprint — and judges it.
#[tokio::test]
async fn an_operator_killed_mid_training_adopts_the_run_without_a_second_job() -> Result<()> {
    let stage = Stage::deploy("e2e-restart").await?;
    // A CPU limit stretches the run to seconds, so the kill lands while the Job is running.
    stage
        .create_pipeline(
            PIPELINE,
            json!({"trainer": {
                "algorithm": "adaboost",
                "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"cpu": "100m", "memory": "256Mi"}},
            }}),
        )
        .await?;
    let old = stage
        .operator_pod()
        .await?
        .map(|p| p.name_any())
        .unwrap_or_default();
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let job = champion_tests::testing::wait_for("the trainer Job", WAIT, || async {
        Ok(stage.jobs(PIPELINE).await?.into_iter().next())
    })
    .await?;
    let pods: Api<Pod> = stage.api();
    pods.delete(&old, &DeleteParams::default().grace_period(0))
        .await
        .map_err(ClusterError::kube(format!("delete operator pod {old}")))?;
    let jobs: Api<Job> = stage.api();
    let at_kill = jobs
        .get(&job.name_any())
        .await
        .map_err(ClusterError::kube("get the trainer Job"))?;
    let finished = at_kill
        .status
        .as_ref()
        .is_some_and(|s| s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0);
    assert!(
        !finished,
        "the Job was still running when the operator died: {at_kill:?}"
    );

    let new = champion_tests::testing::wait_for("a replacement operator pod", WAIT, || async {
        Ok(stage.operator_pod().await?.filter(|p| p.name_any() != old))
    })
    .await?;
    let (status, _) = wait_champion(&stage, None).await?;
    let version = job
        .labels()
        .get("champion.dev/model-version")
        .cloned()
        .unwrap_or_default();
    let fingerprint = job
        .annotations()
        .get("champion.dev/data-fingerprint")
        .cloned()
        .unwrap_or_default();
    assert_eq!(str_at(&status, "/champion/version"), Some(version.as_str()));
    assert_eq!(
        str_at(&status, "/champion/dataFingerprint"),
        Some(fingerprint.as_str())
    );
    let judged: Vec<Value> = history(&status)
        .into_iter()
        .filter(|e| e["version"] == version.as_str())
        .collect();
    assert_eq!(judged.len(), 1, "the run is judged once: {judged:?}");
    assert!(matches!(entry_outcome(&judged[0]), "Promoted" | "Rejected"));

    let all = stage.jobs(PIPELINE).await?;
    let same: Vec<String> = all
        .iter()
        .filter(|j| j.annotations().get("champion.dev/data-fingerprint") == Some(&fingerprint))
        .map(|j| j.name_any())
        .collect();
    assert_eq!(
        same,
        vec![job.name_any()],
        "exactly one Job for the fingerprint"
    );
    assert_eq!(all.len(), 1, "no other Job either: {all:?}");
    assert!(
        pods.get_opt(&old)
            .await
            .map_err(ClusterError::kube("get the old operator pod"))?
            .is_none(),
        "the killed operator pod {old} is gone; {} replaced it",
        new.name_any()
    );
    stage.passed();
    Ok(())
}

/// (c) New data that makes the model better: promoted, and the predictor rolls to the new
/// version while answering every request — old version until the new pods are ready, then the
/// new one, never an error.
#[tokio::test]
async fn better_data_is_promoted_and_the_predictor_rolls_over_without_failed_requests() -> Result<()>
{
    let stage = Stage::deploy("e2e-better").await?;
    let before = weak_champion(&stage).await?;
    let data_1 = wine_file("data_1.csv")?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let old_score = before
        .pointer("/champion/score")
        .and_then(Value::as_f64)
        .unwrap_or(-1.0);

    // Requests through the Service for the whole rollout, from before the new data lands.
    let target = stage.predictor_service(PIPELINE).await?;
    let request = predict_request()?;
    wait_answering(&target, &request, WAIT).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let (target, request) = (target.clone(), request.clone());
        tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            let mut sent = 0u32;
            // Paced, so the loop neither starves the node's two cores nor runs out of ports.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !*stop_rx.borrow() {
                tick.tick().await;
                sent += 1;
                match http_post_json(&target, "/predict", &request).await {
                    Ok(r) if r.status == 200 => {
                        let v = r
                            .headers
                            .get("x-model-version")
                            .cloned()
                            .unwrap_or_default();
                        if seen.last() != Some(&v) {
                            seen.push(v);
                        }
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (sent, seen, failures)
        })
    };

    let data_2 = wine_file("data_2.csv")?;
    stage.put_data("data_1.csv", &data_1)?;
    stage.put_data("data_2.csv", &data_2)?;
    // Returns once the Deployment reports only updated replicas: the old pods are gone.
    let rolled = wait_champion(&stage, Some(&old)).await;
    let _ = stop_tx.send(true);
    let (sent, seen, failures) = load
        .await
        .map_err(|e| ClusterError::Invalid(format!("the request loop panicked: {e}")))?;
    let (status, deployment) = rolled?;
    let new = str_at(&status, "/champion/version")
        .unwrap_or_default()
        .to_string();

    let h = history(&status);
    assert_eq!(h.len(), 2, "two promoted runs: {h:?}");
    assert_eq!(entry_outcome(&h[1]), "Promoted", "{h:?}");
    assert_eq!(h[1]["version"], new.as_str());
    let score = f64_at(&h[1], "score").unwrap_or(f64::NAN);
    let against = f64_at(&h[1], "championScore").unwrap_or(f64::NAN);
    assert!(
        score > against && (against - old_score).abs() < 1e-9,
        "the challenger beat the champion's {old_score} on the same holdout: {}",
        h[1]
    );
    let root = stage.store.path.display().to_string();
    assert_eq!(
        model_uri_of(&deployment),
        Some(format!(
            "file://{root}/models/{}/{PIPELINE}/{new}/",
            stage.ns.name
        ))
    );
    let promoted = stage.events(PIPELINE, "ModelPromoted").await?;
    assert!(
        promoted
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains(&new)),
        "a ModelPromoted Event names version {new}: {promoted:?}"
    );
    let promotions = promoted
        .iter()
        .filter(|e| e.note.as_deref().unwrap_or_default().contains(&new))
        .count();
    assert_eq!(
        promotions, 1,
        "version {new} is promoted once: {promoted:?}"
    );

    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the rollout: {failures:?}",
        failures.len()
    );
    assert_eq!(
        seen.first(),
        Some(&old),
        "answers start with the old version: {seen:?}"
    );
    assert!(
        seen.iter().all(|v| *v == old || *v == new),
        "only the two versions answer: {seen:?}"
    );
    assert_predictor_answers_with(&stage, 8080, &new).await?;
    stage.passed();
    Ok(())
}

/// A promoted version whose rollout cannot progress (its surge pod does not fit on the
/// node) is reverted automatically: the previous champion keeps serving, and status, history
/// and Events say what happened.
#[tokio::test]
async fn a_rollout_that_cannot_progress_is_reverted_to_the_previous_champion() -> Result<()> {
    let stage = Stage::deploy("e2e-revert").await?;
    // Each predictor pod requests over half the node's memory: one fits, a second (the surge
    // pod of the next version, maxUnavailable 0) stays Pending.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(stage.cluster.client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::kube("list nodes"))?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| ClusterError::Invalid("the cluster has no node".into()))?;
    let allocatable = node
        .status
        .and_then(|s| s.allocatable)
        .and_then(|a| a.get("memory").map(|q| q.0.clone()))
        .unwrap_or_default();
    let kib: u64 = allocatable
        .strip_suffix("Ki")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            ClusterError::Invalid(format!("node memory {allocatable:?} is not in Ki"))
        })?;
    let request = format!("{}Ki", kib * 55 / 100);
    stage
        .create_pipeline(
            PIPELINE,
            json!({
                "predictor": {
                    "replicas": 1,
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": {"memory": request}},
                },
                "promotion": {"rolloutDeadlineSeconds": 10},
            }),
        )
        .await?;
    let data_1 = wine_file("data_1.csv")?;
    let few: String = data_1.lines().take(61).map(|l| format!("{l}\n")).collect();
    stage.put_data("a_weak.csv", &contradicting_rows(&few)?)?;
    let (before, deployment) = wait_champion(&stage, None).await?;
    let old = str_at(&before, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let old_uri = model_uri_of(&deployment);

    stage.put_data("data_1.csv", &data_1)?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let status = stage
        .wait_status(PIPELINE, "a RolledBack run, rollout over", WAIT, |s| {
            let back = history(s).iter().any(|e| entry_outcome(e) == "RolledBack");
            (back && s.get("rollout").is_none()).then(|| s.clone())
        })
        .await?;
    let h = history(&status);
    let outcomes: Vec<&str> = h.iter().map(entry_outcome).collect();
    assert_eq!(outcomes, ["Promoted", "Promoted", "RolledBack"], "{h:?}");
    let new = h[1]["version"].as_str().unwrap_or_default().to_string();
    assert_eq!(h[2]["version"], new.as_str());
    let note = h[2]["reason"].as_str().unwrap_or_default();
    assert!(
        note.contains("did not progress") && note.contains(&old),
        "the history says the rollout stalled and what it reverted to: {note}"
    );
    // The stall is the Deployment controller's verdict (its progress deadline, set from
    // rolloutDeadlineSeconds), not the operator's last-resort timer.
    assert!(
        note.contains("timed out progressing"),
        "reverted because the Deployment reported ProgressDeadlineExceeded: {note}"
    );
    assert_eq!(str_at(&status, "/champion/version"), Some(old.as_str()));
    assert_eq!(str_at(&status, "/lastOutcome"), Some("RolledBack"));
    let degraded = condition(&status, "Degraded").cloned().unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{degraded}");
    assert_eq!(degraded["reason"], "RolloutFailed", "{degraded}");
    let failed = stage.events(PIPELINE, "RolloutFailed").await?;
    assert!(
        failed.iter().any(|e| e.type_.as_deref() == Some("Warning")
            && e.note.as_deref().unwrap_or_default().contains(&new)),
        "a Warning Event RolloutFailed names version {new}: {failed:?}"
    );
    let back = stage.events(PIPELINE, "RolledBack").await?;
    assert!(
        back.iter().any(|e| {
            let n = e.note.as_deref().unwrap_or_default();
            n.contains(&new) && n.contains(&old)
        }),
        "a RolledBack Event names both versions: {back:?}"
    );

    // The predictor is back on the old version, and that version answers.
    let deployment = stage.wait_predictor_serving(PIPELINE, &old, WAIT).await?;
    assert_eq!(model_uri_of(&deployment), old_uri);
    assert_predictor_answers_with(&stage, 8080, &old).await?;
    stage.passed();
    Ok(())
}

/// The `champion.dev/rollback-to` annotation: a version that is not in the history is refused
/// with an Event and nothing moves; a promoted earlier version is rolled out again, serves, and
/// the history and Events say so. The user's spec and annotation are left as they are, and no
/// training run starts because of the rollback.
#[tokio::test]
async fn the_rollback_annotation_restores_an_earlier_version_from_the_history() -> Result<()> {
    let stage = Stage::deploy("e2e-rollback").await?;
    let first = weak_champion(&stage).await?;
    let old = str_at(&first, "/champion/version")
        .unwrap_or_default()
        .to_string();
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let (promoted, _) = wait_champion(&stage, Some(&old)).await?;
    let new = str_at(&promoted, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let generation = stage
        .pipeline(PIPELINE)
        .await?
        .and_then(|p| p.pointer("/metadata/generation").and_then(Value::as_i64));

    // Unknown version: refused, said so, champion and predictor untouched.
    stage.kubectl(&[
        "annotate",
        "--overwrite",
        &format!("modelpipeline/{PIPELINE}"),
        "champion.dev/rollback-to=v-not-in-history",
    ])?;
    let refused = stage
        .wait_status(PIPELINE, "the refused rollback recorded", WAIT, |s| {
            (str_at(s, "/lastRollbackTo") == Some("v-not-in-history")).then(|| s.clone())
        })
        .await?;
    assert_eq!(str_at(&refused, "/champion/version"), Some(new.as_str()));
    assert!(refused.get("rollout").is_none(), "no rollout: {refused}");
    // A RollbackRefused Event names the version and why.
    stage
        .wait_event(
            PIPELINE,
            "RollbackRefused",
            &["v-not-in-history", "history"],
            WAIT,
        )
        .await?;

    // A version from the history: rolled out again and served.
    stage.kubectl(&[
        "annotate",
        "--overwrite",
        &format!("modelpipeline/{PIPELINE}"),
        &format!("champion.dev/rollback-to={old}"),
    ])?;
    let back = stage
        .wait_status(PIPELINE, "the old version back as champion", WAIT, |s| {
            (str_at(s, "/champion/version") == Some(old.as_str()) && s.get("rollout").is_none())
                .then(|| s.clone())
        })
        .await?;
    let deployment = stage.wait_predictor_serving(PIPELINE, &old, WAIT).await?;
    let root = stage.store.path.display().to_string();
    assert_eq!(
        model_uri_of(&deployment),
        Some(format!(
            "file://{root}/models/{}/{PIPELINE}/{old}/",
            stage.ns.name
        ))
    );
    assert_predictor_answers_with(&stage, 8080, &old).await?;
    assert_eq!(str_at(&back, "/lastRollbackTo"), Some(old.as_str()));
    assert_eq!(str_at(&back, "/lastOutcome"), Some("RolledBack"));
    assert_eq!(
        f64_at(&back["champion"], "score"),
        f64_at(&first["champion"], "score"),
        "the restored champion keeps the score it was promoted with"
    );
    let h = history(&back);
    let last = h.last().cloned().unwrap_or_default();
    assert_eq!(entry_outcome(&last), "RolledBack", "{h:?}");
    assert_eq!(last["version"], old.as_str());
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&new) && reason.contains("on request"),
        "the history names both versions: {reason}"
    );
    let rolled = stage.events(PIPELINE, "RolledBack").await?;
    assert!(
        rolled.iter().any(|e| {
            let note = e.note.as_deref().unwrap_or_default();
            note.contains(&old) && note.contains(&new)
        }),
        "a RolledBack Event names both versions: {rolled:?}"
    );

    // The operator wrote only the status: spec and annotation are the user's.
    let now = stage.pipeline(PIPELINE).await?.unwrap_or_default();
    assert_eq!(
        now.pointer("/metadata/generation").and_then(Value::as_i64),
        generation,
        "the spec was not edited"
    );
    assert_eq!(
        now.pointer("/metadata/annotations/champion.dev~1rollback-to")
            .and_then(Value::as_str),
        Some(old.as_str())
    );
    assert_eq!(
        stage.jobs(PIPELINE).await?.len(),
        2,
        "the rollback started no training run"
    );
    stage.passed();
    Ok(())
}

/// The value of the unlabelled sample `name` in Prometheus text, if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sum of every sample of the counter `name` (all label sets).
fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operator pods that are running and ready, by name → pod IP.
async fn ready_operators(stage: &Stage) -> Result<Vec<(String, String)>> {
    let pods: Api<Pod> = stage.api();
    let list = pods
        .list(&ListParams::default().labels(champion_tests::operator::OPERATOR_SELECTOR))
        .await
        .map_err(ClusterError::kube("list operator pods"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((p.name_any(), ip))
        })
        .collect())
}

async fn operator_metrics(ip: &str) -> Result<String> {
    let (code, body) = champion_tests::testing::http_get(&format!("{ip}:8080"), "/metrics").await?;
    if code != 200 {
        return Err(ClusterError::Invalid(format!(
            "GET /metrics on operator {ip}: {code}"
        )));
    }
    Ok(body)
}

async fn lease_holder(stage: &Stage) -> Result<Option<String>> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = stage.api();
    Ok(leases
        .get_opt("champion-operator")
        .await
        .map_err(ClusterError::kube("get the operator Lease"))?
        .and_then(|l| l.spec?.holder_identity))
}

/// Waits for two ready operators, one holding the Lease: (leader, standby) as (name, pod IP).
async fn leader_and_standby(stage: &Stage) -> Result<((String, String), (String, String))> {
    champion_tests::testing::wait_for(
        "two ready operators, one holding the Lease",
        WAIT,
        || async {
            let pods = ready_operators(stage).await?;
            let holder = lease_holder(stage).await?;
            if pods.len() != 2 {
                return Ok(None);
            }
            let Some(holder) = holder else {
                return Ok(None);
            };
            let leader = pods.iter().find(|(n, _)| *n == holder).cloned();
            let standby = pods.iter().find(|(n, _)| *n != holder).cloned();
            Ok(leader.zip(standby))
        },
    )
    .await
}

/// A process stopped with SIGSTOP, continued when this is dropped (also when the test fails).
struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = signal(self.0, libc::SIGCONT);
    }
}

/// Restarts of the container of pod `name`.
async fn restarts(stage: &Stage, name: &str) -> Result<i32> {
    let pods: Api<Pod> = stage.api();
    let pod = pods
        .get(name)
        .await
        .map_err(ClusterError::kube(format!("get pod {name}")))?;
    Ok(pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap_or(0))
}

/// Fencing: the leader is paused (SIGSTOP) past its lease, the standby takes over and promotes
/// new data, then the old leader is woken (SIGCONT). Its view of the world is stale (it still
/// sees the first champion), but it writes nothing: not the status, not the Deployment, no
/// Event. It notices it lost the Lease and restarts as a follower.
#[tokio::test]
async fn a_paused_leader_that_wakes_up_after_losing_the_lease_writes_nothing() -> Result<()> {
    let stage = Stage::deploy_with("e2e-fence", &["replicaCount=2"]).await?;
    // A paused process fails its liveness probe and would be restarted by the kubelet before
    // it could wake up on its own; this test is about waking up, so the probe goes.
    stage.kubectl(&[
        "patch",
        "deployment",
        champion_tests::operator::RELEASE,
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/template/spec/containers/0/livenessProbe"}]"#,
    ])?;
    stage.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{}", champion_tests::operator::RELEASE),
        "--timeout=120s",
    ])?;
    let (leader, standby) = leader_and_standby(&stage).await?;
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (first, _) = wait_champion(&stage, None).await?;
    let first_version = str_at(&first, "/champion/version").map(str::to_string);

    let pid = container_pid(&stage.api(), &leader.0).await?;
    signal(pid, libc::SIGSTOP)?;
    let paused = Paused(pid);
    champion_tests::testing::wait_for("the standby to take the Lease", WAIT, || async {
        Ok((lease_holder(&stage).await?.as_deref() == Some(standby.0.as_str())).then_some(()))
    })
    .await?;
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let (second, deployment) = wait_champion(&stage, first_version.as_deref()).await?;
    let pipelines = stage.pipelines();
    let before = pipelines
        .get(PIPELINE)
        .await
        .map_err(ClusterError::kube("get the pipeline"))?;
    let deployments: Api<Deployment> = stage.api();
    let restarts_before = restarts(&stage, &leader.0).await?;

    assert_eq!(
        restarts(&stage, &leader.0).await?,
        0,
        "the paused leader was not restarted while paused"
    );
    let woke = k8s_openapi::jiff::Timestamp::now();
    drop(paused); // SIGCONT
    // The old leader runs again with its stale view, finds it lost the Lease and restarts.
    champion_tests::testing::wait_for(
        "the woken leader to restart as a follower",
        WAIT,
        || async { Ok((restarts(&stage, &leader.0).await? > restarts_before).then_some(())) },
    )
    .await?;
    // The new leader is still the holder, and the world is as it left it.
    assert_eq!(
        lease_holder(&stage).await?.as_deref(),
        Some(standby.0.as_str())
    );
    let after = pipelines
        .get(PIPELINE)
        .await
        .map_err(ClusterError::kube("get the pipeline"))?;
    assert_eq!(
        after.data.get("status"),
        before.data.get("status"),
        "the woken leader changed the status"
    );
    assert_eq!(
        str_at(
            after.data.get("status").unwrap_or(&Value::Null),
            "/champion/version"
        ),
        str_at(&second, "/champion/version")
    );
    let now = deployments
        .get(&deployment.name_any())
        .await
        .map_err(ClusterError::kube("get the predictor Deployment"))?;
    assert_eq!(
        now.metadata.generation, deployment.metadata.generation,
        "the woken leader patched the predictor"
    );
    assert_eq!(model_uri_of(&now), model_uri_of(&deployment));
    let events: Api<k8s_openapi::api::events::v1::Event> = stage.api();
    let from_old: Vec<String> = events
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::kube("list Events"))?
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(leader.0.as_str()))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 >= woke))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(
        from_old.is_empty(),
        "Events from the woken leader: {from_old:?}"
    );
    stage.passed();
    Ok(())
}

/// Two operator replicas: only the Lease holder reconciles (the standby's reconcile counter
/// stays at zero while the leader trains and promotes), and when the leader pod is deleted
/// with grace 0 another live replica (the standby, or the deleted pod's replacement when it
/// joins first) takes the Lease within the lease duration and carries on: new data is trained
/// and judged by it.
#[tokio::test]
async fn with_two_replicas_only_the_leader_reconciles_and_the_standby_takes_over() -> Result<()> {
    const LEASE: Duration = Duration::from_secs(6);
    const RETRY: Duration = Duration::from_secs(1);
    // A replacement pod needs this long to start and report ready before it can be seen.
    const WAIT_READY: Duration = Duration::from_secs(10);
    let stage = Stage::deploy_with("e2e-leader", &["replicaCount=2"]).await?;
    let (leader, standby) = leader_and_standby(&stage).await?;

    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let (first, _) = wait_champion(&stage, None).await?;
    let (lm, sm) = (
        operator_metrics(&leader.1).await?,
        operator_metrics(&standby.1).await?,
    );
    assert_eq!(sample(&lm, "champion_leader"), Some(1.0), "{}", leader.0);
    assert_eq!(sample(&sm, "champion_leader"), Some(0.0), "{}", standby.0);
    assert!(
        counter_total(&lm, "champion_reconciles_total") > 0.0,
        "the leader reconciled"
    );
    assert_eq!(
        counter_total(&sm, "champion_reconciles_total"),
        0.0,
        "the standby {} never reconciled",
        standby.0
    );
    assert_eq!(history(&first).len(), 1, "the run was judged once: {first}");

    // Kill the leader without a clean shutdown: it cannot release the Lease.
    let pods: Api<Pod> = stage.api();
    let killed_at = std::time::Instant::now();
    pods.delete(&leader.0, &DeleteParams::default().grace_period(0))
        .await
        .map_err(ClusterError::kube(format!(
            "delete operator pod {}",
            leader.0
        )))?;
    // The standby, or the killed pod's replacement if it joins first, takes the Lease: never
    // the killed pod, and within the lease duration (a clean SIGTERM release is faster).
    let holder =
        champion_tests::testing::wait_for("another operator to take the Lease", WAIT, || async {
            let holder = lease_holder(&stage).await?;
            let ready = ready_operators(&stage).await?;
            Ok(holder
                .filter(|h| *h != leader.0)
                .and_then(|h| ready.into_iter().find(|(n, _)| *n == h)))
        })
        .await?;
    let took = killed_at.elapsed();
    assert!(
        took <= LEASE + RETRY * 2 + WAIT_READY,
        "another operator took over {took:?} after the leader died (lease {LEASE:?}, retry {RETRY:?})"
    );
    eprintln!(
        "{} ({}) took the Lease {took:?} after the leader was killed",
        holder.0,
        if holder.0 == standby.0 {
            "the standby"
        } else {
            "the replacement"
        }
    );

    // The new leader carries the pipeline on: new data is trained and judged.
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let status = stage
        .wait_status(PIPELINE, "the second run judged", WAIT, |s| {
            let h = history(s);
            (h.len() == 2
                && matches!(entry_outcome(&h[1]), "Promoted" | "Rejected")
                && s.get("rollout").is_none())
            .then(|| s.clone())
        })
        .await?;
    let sm = operator_metrics(&holder.1).await?;
    assert_eq!(sample(&sm, "champion_leader"), Some(1.0));
    assert!(counter_total(&sm, "champion_reconciles_total") > 0.0);
    let h = history(&status);
    assert_ne!(h[1]["version"], h[0]["version"], "{h:?}");
    assert_eq!(
        stage.jobs(PIPELINE).await?.len(),
        2,
        "one Job per data state"
    );
    stage.passed();
    Ok(())
}
