//! Whole reconciles against a mock API server (tower-test): each test states the world, then
//! the exact requests the reconcile must send, in order, as a script of [`Expect`]ations.

use super::*;
use crate::build::build_job;
use crate::fixtures::{
    ApiHandle, Seen, champion, expect_request, pipeline, report, serving_deployment,
    training_challenger,
};
use crate::names::job_name;
use crate::observe;
use champion_api::{
    ANNOTATION_DATA_FINGERPRINT, ANNOTATION_MODEL_VERSION, ChampionStatus, ModelPipelineStatus,
    Outcome, RolloutStatus,
};
use http::Method;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const FIELD_MANAGER_QUERY: &str = "fieldManager=champion.dev%2Foperator";
const PIPELINE_PATH: &str = "/apis/champion.dev/v1alpha1/namespaces/default/modelpipelines/wine";
const SECRET_PATH: &str = "/api/v1/namespaces/default/secrets/store-creds";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

type Check = Box<dyn FnOnce(&Seen) + Send>;
type Reply = Box<dyn FnOnce(&Seen) -> (u16, Value) + Send>;

/// One request the reconcile must send next: its method and path (a prefix when it ends in
/// '?'), the answer, and what else must hold of it.
struct Expect {
    method: Method,
    path: String,
    reply: Reply,
    check: Check,
}

impl Expect {
    fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            reply,
            check: Box::new(|_| {}),
        }
    }

    /// Adds a check of the request.
    fn and(mut self, check: impl FnOnce(&Seen) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }
}

/// A GET of `path`, answered with `reply`.
fn get(path: impl Into<String>, reply: Value) -> Expect {
    Expect::new(Method::GET, path, Box::new(move |_| (200, reply)))
}

fn secret_read_body() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-creds", "namespace": "default"},
           "data": {"AWS_REGION": "ZXUtd2VzdC0x"}})
}

/// The read of the store credentials Secret.
fn secret_read() -> Expect {
    get(SECRET_PATH, secret_read_body())
}

/// A forced server-side apply of the object at `path` by the operator's field manager.
fn applied(path: impl Into<String>) -> Expect {
    let mut e = Expect::new(
        Method::PATCH,
        format!("{}?", path.into()),
        Box::new(|s| (200, s.body.clone())),
    );
    e.check = Box::new(|_| {});
    e
}

fn job_applied(name: &str) -> Expect {
    applied(format!("/apis/batch/v1/namespaces/default/jobs/{name}"))
}

fn deployment_applied() -> Expect {
    applied("/apis/apps/v1/namespaces/default/deployments/wine-predictor")
}

fn service_applied() -> Expect {
    applied("/api/v1/namespaces/default/services/wine-predictor")
}

/// An Event with `reason` (and `type_`).
fn event(reason: &'static str, type_: &'static str) -> Expect {
    Expect::new(
        Method::POST,
        EVENTS_PATH,
        Box::new(|s| (201, s.body.clone())),
    )
    .and(move |s| {
        assert_eq!(s.body["reason"], reason, "{}", s.body);
        assert_eq!(s.body["type"], type_, "{}", s.body);
    })
}

/// The status apply, answered as the API server does: `mp` with the applied status.
fn status_applied(mp: &ModelPipeline) -> Expect {
    let mp = mp.clone();
    Expect::new(
        Method::PATCH,
        format!("{PIPELINE_PATH}/status?"),
        Box::new(move |s| {
            let mut v = serde_json::to_value(&mp).unwrap_or_default();
            v["status"] = s.body["status"].clone();
            (200, v)
        }),
    )
}

fn note_contains(s: &Seen, fragment: &str) {
    let note = s.body["note"].as_str().unwrap_or_default();
    assert!(note.contains(fragment), "{fragment:?} in {note:?}");
}

fn condition(status: &Value, type_: &str) -> (Value, Value) {
    let c = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default();
    (c["status"].clone(), c["reason"].clone())
}

/// Runs one reconcile of `mp` while the mock API server expects exactly `script`, in order,
/// and nothing after it; returns the reconcile's Action.
async fn reconcile_expecting(
    mp: ModelPipeline,
    ctx: Arc<Context>,
    mut handle: ApiHandle,
    script: Vec<Expect>,
) -> Action {
    let server = tokio::spawn(async move {
        for (i, e) in script.into_iter().enumerate() {
            let seen = expect_request(&mut handle, e.reply).await;
            assert_eq!(seen.method, e.method, "request {i}: {}", seen.uri);
            let matches = match e.path.strip_suffix('?') {
                Some(prefix) => seen.uri.starts_with(&format!("{prefix}?")),
                None => seen.uri == e.path,
            };
            assert!(
                matches,
                "request {i}: expected {} {}, got {}",
                e.method, e.path, seen.uri
            );
            if seen.method == Method::PATCH {
                assert!(seen.uri.contains(FIELD_MANAGER_QUERY), "{}", seen.uri);
            }
            (e.check)(&seen);
        }
        handle
    });
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(mp), ctx))
        .await
        .expect("reconcile finished: no request went unanswered")
        .expect("reconcile succeeds");
    let mut handle = server
        .await
        .expect("the API server saw exactly the expected requests");
    // Either the client is gone (the channel closed) or nothing more arrives.
    let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(
        !matches!(extra, Ok(Some(_))),
        "no request after the expected ones"
    );
    action
}

fn metrics_text(registry: &prometheus::Registry) -> String {
    String::from_utf8(crate::metrics::render(registry).expect("metrics")).expect("utf-8")
}

/// A pipeline whose data and model store live in `dir`.
fn pipeline_in(dir: &std::path::Path) -> ModelPipeline {
    let mut mp = pipeline();
    mp.spec.data.uri = format!("file://{}/data/", dir.display());
    mp.spec.model_store.uri = format!("file://{}/models", dir.display());
    mp
}

/// The cached trainer Job `name` of run `version` of the wine pipeline, finished with the
/// condition `condition_type` = True (and `reason`).
fn job_fixture(name: &str, version: &str, condition_type: &str, reason: Option<&str>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                "champion.dev/pipeline".to_string(),
                "wine".to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_MODEL_VERSION.to_string(), version.to_string()),
                (ANNOTATION_DATA_FINGERPRINT.to_string(), "fp1".to_string()),
            ])),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    uid: "uid-wine".into(),
                    ..Default::default()
                },
            ]),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: condition_type.into(),
                status: "True".into(),
                reason: reason.map(Into::into),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A status that promoted `new` over `old` and is rolling it out, started now.
fn rolling_out(new: &ChampionStatus, old: &ChampionStatus) -> ModelPipelineStatus {
    ModelPipelineStatus {
        champion: Some(new.clone()),
        observed_generation: Some(1),
        rollout: Some(RolloutStatus {
            version: new.version.clone(),
            previous: Some(old.clone()),
            started_at: Time(Timestamp::now()),
            data_seen_at: None,
            cause: Outcome::Promoted,
        }),
        ..Default::default()
    }
}

/// The wine pipeline with one data file in a temporary store, and its listing's first run.
async fn pipeline_with_new_data() -> (tempfile::TempDir, ModelPipeline, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::write(dir.path().join("data/wine-1.csv"), "a,quality\n1,6\n").expect("csv");
    let mp = pipeline_in(dir.path());
    let stores = champion_store::TenantStores {
        local_roots: vec![std::env::temp_dir()],
        ..Default::default()
    };
    let listing = observe::list_data(&stores, &mp.spec.data.uri, Vec::new())
        .await
        .expect("listing");
    let version = crate::decide::unused_version(&mp, &listing.fingerprint, None, 0);
    (dir, mp, version)
}

#[tokio::test]
async fn new_data_launches_one_trainer_job_then_records_it() {
    let (_dir, mp, version) = pipeline_with_new_data().await;
    let job = job_name("wine", &version);
    let (ctx, handle, registry) = Context::test(Vec::new(), Vec::new());
    let expected_job = job.clone();
    let script = vec![
        secret_read(),
        job_applied(&job).and(|s| {
            assert!(s.uri.contains("force=true"), "{}", s.uri);
            assert_eq!(s.body["kind"], "Job");
            assert_eq!(s.body["metadata"]["ownerReferences"][0]["uid"], "uid-wine");
            assert_eq!(
                s.body["spec"]["template"]["spec"]["containers"][0]["args"][0],
                "train"
            );
        }),
        status_applied(&mp).and(move |s| {
            let status = &s.body["status"];
            assert_eq!(status["phase"], "Training");
            assert_eq!(status["challenger"]["job"], expected_job.as_str());
            assert_eq!(status["challenger"]["state"], "Training");
            assert_eq!(condition(status, "Training").0, "True");
            assert_eq!(condition(status, "DataAvailable").0, "True");
            assert_eq!(condition(status, "Promoted").0, "False");
        }),
        event("TrainingStarted", "Normal"),
    ];
    let action = reconcile_expecting(mp, ctx, handle, script).await;
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(2)),
        "next poll after pollInterval"
    );
    let text = metrics_text(&registry);
    assert!(
        text.contains(
            "champion_pipeline_runs_started_total{namespace=\"default\",pipeline=\"wine\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn completed_better_run_is_promoted_and_rolled_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mp = pipeline_in(dir.path());
    let version = "0123456789ab";
    let report_dir = dir.path().join(format!("models/default/wine/{version}"));
    std::fs::create_dir_all(&report_dir).expect("model dir");
    let bytes = report(version, 0.81, None, None)
        .to_json_bytes()
        .expect("report serialises");
    std::fs::write(report_dir.join("report.json"), bytes).expect("report written");
    let job = job_name("wine", version);
    mp.status = Some(ModelPipelineStatus {
        challenger: Some(training_challenger(
            version,
            &job,
            Some(Time(Timestamp::UNIX_EPOCH)),
        )),
        ..Default::default()
    });
    let complete = job_fixture(&job, version, "Complete", None);
    let (ctx, handle, registry) = Context::test(vec![complete], Vec::new());
    let model_uri = mp.model_uri(version);
    let script = vec![
        secret_read(),
        deployment_applied().and(move |s| {
            let env = &s.body["spec"]["template"]["spec"]["containers"][0]["env"];
            assert_eq!(env[0], json!({"name": "MODEL_URI", "value": model_uri}));
        }),
        service_applied(),
        status_applied(&mp).and(|s| {
            let status = &s.body["status"];
            assert_eq!(status["champion"]["version"], "0123456789ab");
            assert_eq!(status["rollout"]["version"], "0123456789ab");
            assert_eq!(status["phase"], "RollingOut");
            assert_eq!(status["lastOutcome"], "Promoted");
            assert_eq!(status["history"][0]["outcome"], "Promoted");
            assert_eq!(status["history"][0]["cause"], "FirstModel");
            assert_eq!(status["challenger"]["state"], "Promoted");
        }),
        event("ModelPromoted", "Normal").and(|s| note_contains(s, "0.8100")),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
    let text = metrics_text(&registry);
    assert!(
        text.contains("champion_pipeline_runs_completed_total{namespace=\"default\",outcome=\"promoted\",pipeline=\"wine\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "champion_pipeline_champion_score_ratio{metric=\"f1Macro\",namespace=\"default\",pipeline=\"wine\"} 0.81"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn failed_run_records_the_termination_message_and_backs_off() {
    let mut mp = pipeline();
    let version = "0123456789ab";
    let job = job_name("wine", version);
    mp.status = Some(ModelPipelineStatus {
        champion: Some(champion("champ0000001", 0.7)),
        observed_generation: Some(1),
        challenger: Some(training_challenger(version, &job, None)),
        ..Default::default()
    });
    let failed = job_fixture(&job, version, "Failed", Some("BackoffLimitExceeded"));
    let serving = serving_deployment(&mp, &champion("champ0000001", 0.7));
    let (ctx, handle, _registry) = Context::test(vec![failed], vec![serving]);
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 2,
            "message": "wine-3.csv line 17: expected 13 columns, found 12"}}}]}
    }]});
    let script = vec![
        get(
            format!(
                "/api/v1/namespaces/default/pods?&labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
            ),
            pods,
        ),
        status_applied(&mp).and(|s| {
            let status = &s.body["status"];
            assert_eq!(status["challenger"]["state"], "Failed");
            assert_eq!(status["consecutiveFailures"], 1);
            assert_eq!(
                status["champion"]["version"], "champ0000001",
                "the champion is untouched"
            );
            assert!(status["retryAfter"].is_string());
            assert_eq!(status["phase"], "Degraded");
            assert_eq!(
                condition(status, "Degraded"),
                (json!("True"), json!("TrainingFailed"))
            );
            assert_eq!(status["history"][0]["cause"], "JobFailed");
            let reason = status["history"][0]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with("BackoffLimitExceeded") && reason.contains("line 17"),
                "{reason}"
            );
        }),
        event("TrainingFailed", "Warning").and(|s| note_contains(s, "line 17")),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
}

#[tokio::test]
async fn new_data_with_every_trainer_slot_taken_is_queued_and_says_so() {
    let (_dir, mp, _version) = pipeline_with_new_data().await;
    // Another pipeline's run holds the only slot.
    let mut other = pipeline();
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("uid-other".into());
    let running = build_job(&other, "v1", "fp1", None);
    let (mut ctx, handle, _registry) = Context::test(vec![running], Vec::new());
    if let Some(c) = Arc::get_mut(&mut ctx) {
        c.runs = crate::run_slots::RunSlots::new(Some(1));
    }
    // No Job is created: the next request is the status.
    let script = vec![
        secret_read(),
        status_applied(&mp).and(|s| {
            let status = &s.body["status"];
            assert_eq!(
                condition(status, "Training"),
                (json!("False"), json!("Queued"))
            );
            assert!(status["challenger"].is_null());
        }),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
}

#[tokio::test]
async fn a_stale_cached_copy_is_read_again_before_acting() {
    let old = champion("old000000001", 0.7);
    let new = champion("new000000001", 0.8);
    // The API server's copy after the promotion's status write: rolling out `new`.
    let mut current = pipeline();
    current.metadata.resource_version = Some("2".into());
    current.status = Some(rolling_out(&new, &old));
    // The cache still holds the copy from before that write, with `old` as champion:
    // acting on it would apply `old`'s Deployment in the middle of the rollout.
    let mut cached = pipeline();
    cached.metadata.resource_version = Some("1".into());
    cached.status = Some(ModelPipelineStatus {
        champion: Some(old.clone()),
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut rolling = serving_deployment(&current, &new);
    if let Some(st) = rolling.status.as_mut() {
        st.available_replicas = Some(0);
    }
    let (ctx, handle, registry) = Context::test(Vec::new(), vec![rolling]);
    ctx.fresh.saw(&current);
    let script = vec![
        get(
            PIPELINE_PATH,
            serde_json::to_value(&current).unwrap_or_default(),
        ),
        // Only the conditions are new; the rollout goes on.
        status_applied(&current).and(|s| {
            assert_eq!(
                s.body["metadata"]["resourceVersion"], "2",
                "the status write is conditional on the copy it was computed from"
            );
            assert_eq!(s.body["status"]["rollout"]["version"], "new000000001");
            assert_eq!(s.body["status"]["champion"]["version"], "new000000001");
        }),
    ];
    reconcile_expecting(cached.clone(), ctx.clone(), handle, script).await;
    assert!(ctx.fresh.is_stale(&cached), "the old copy stays stale");
    assert!(!ctx.fresh.is_stale(&current));
    assert!(metrics_text(&registry).contains(r#"pipeline="wine""#));
    forget_deleted(&ctx, &[]);
    assert!(
        !ctx.fresh.is_stale(&cached),
        "a deleted pipeline's record is dropped"
    );
    let text = metrics_text(&registry);
    assert!(
        !text.contains(r#"pipeline="wine""#),
        "a deleted pipeline's series are dropped: {text}"
    );
}

/// The predictor of `mp` serving `new`, stalled with ProgressDeadlineExceeded.
fn stalled(mp: &ModelPipeline, new: &ChampionStatus) -> Deployment {
    let mut d = serving_deployment(mp, new);
    if let Some(st) = d.status.as_mut() {
        st.available_replicas = Some(0);
        st.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet has timed out progressing".into()),
            ..Default::default()
        }]);
    }
    d
}

#[tokio::test]
async fn stalled_rollout_is_reverted_to_the_previous_champion() {
    let mut mp = pipeline();
    let old = champion("old000000001", 0.7);
    let new = champion("new000000001", 0.8);
    mp.status = Some(rolling_out(&new, &old));
    let (ctx, handle, registry) = Context::test(Vec::new(), vec![stalled(&mp, &new)]);
    // The new version's pod is in a crash loop; its last run said why.
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "wine-predictor-abc"},
        "status": {"containerStatuses": [{"name": "predictor", "image": "i", "imageID": "", "ready": false,
            "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1,
            "message": "refusing to serve model.json: its SHA-256 is 00aa, not the 11bb its run reported"}}}]}
    }]});
    let script = vec![
        get(
            "/api/v1/namespaces/default/pods?&labelSelector=champion.dev%2Fpipeline%3Dwine%2Capp.kubernetes.io%2Fcomponent%3Dpredictor%2Cchampion.dev%2Fmodel-version%3Dnew000000001",
            pods,
        ),
        deployment_applied().and(|s| {
            assert_eq!(
                s.body["metadata"]["annotations"]["champion.dev/model-version"],
                "old000000001"
            );
        }),
        service_applied(),
        status_applied(&mp).and(|s| {
            let status = &s.body["status"];
            assert_eq!(status["champion"]["version"], "old000000001");
            assert_eq!(status["rollout"]["version"], "old000000001");
            assert!(
                status["rollout"]["previous"].is_null(),
                "a revert has nothing to revert to"
            );
            assert_eq!(status["history"][0]["outcome"], "RolledBack");
            assert_eq!(status["history"][0]["cause"], "RolloutStalled");
            assert!(
                status["history"][0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("timed out")
            );
            assert_eq!(
                condition(status, "Degraded"),
                (json!("True"), json!("RolloutFailed"))
            );
            let degraded = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Degraded").cloned())
                .unwrap_or_default();
            let message = degraded["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("the predictor said: refusing to serve model.json"),
                "Degraded says the predictor's own reason: {message}"
            );
        }),
        event("RolloutFailed", "Warning").and(|s| {
            note_contains(s, "timed out");
            note_contains(s, "refusing to serve");
        }),
        event("RolledBack", "Normal"),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
    let text = metrics_text(&registry);
    assert!(
        text.contains(
            "champion_pipeline_rollbacks_total{cause=\"rollout_failed\",namespace=\"default\",pipeline=\"wine\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_job_missing_from_the_cache_is_looked_up_before_it_is_called_vanished() {
    let mut mp = pipeline();
    let job = job_name("wine", "0123456789ab");
    mp.status = Some(ModelPipelineStatus {
        observed_generation: Some(1),
        challenger: Some(training_challenger("0123456789ab", &job, None)),
        ..Default::default()
    });
    let running = build_job(&mp, "0123456789ab", "fp1", None);
    let (ctx, handle, _registry) = Context::test(Vec::new(), Vec::new());
    let script = vec![
        get(
            format!("/apis/batch/v1/namespaces/default/jobs/{job}"),
            serde_json::to_value(&running).unwrap_or_default(),
        ),
        // The run is still going: the first status write records conditions and phase only.
        status_applied(&mp).and(|s| {
            assert_eq!(s.body["status"]["challenger"]["state"], "Training");
            assert_eq!(s.body["status"]["phase"], "Training");
        }),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
}

#[tokio::test]
async fn a_spec_edit_made_during_a_rollout_reaches_the_deployment_once_it_ends() {
    let old = champion("old000000001", 0.7);
    let new = champion("new000000001", 0.8);
    let mut mp = pipeline();
    mp.status = Some(rolling_out(&new, &old));
    // The edit: two replicas, made while version new rolls out (generation 1 → 2).
    mp.spec.predictor.replicas = 2;
    mp.metadata.generation = Some(2);
    let before = pipeline();
    let mut progressing = serving_deployment(&before, &new);
    if let Some(st) = progressing.status.as_mut() {
        st.available_replicas = Some(0);
    }
    let (ctx, handle, _registry) = Context::test(Vec::new(), vec![progressing]);
    // Mid-rollout: no Deployment write, and observedGeneration does not claim the edit.
    let script = vec![status_applied(&mp).and(|s| {
        assert_eq!(s.body["status"]["observedGeneration"], 1, "{}", s.body);
        assert_eq!(s.body["status"]["phase"], "RollingOut");
    })];
    reconcile_expecting(mp.clone(), ctx, handle, script).await;

    // The rollout ends (of the old spec): recorded, still without claiming the edit.
    let done = serving_deployment(&before, &new);
    let (ctx, handle, _registry) = Context::test(Vec::new(), vec![done.clone()]);
    let script = vec![
        status_applied(&mp).and(|s| {
            assert!(s.body["status"]["rollout"].is_null(), "{}", s.body);
            assert_eq!(s.body["status"]["observedGeneration"], 1, "{}", s.body);
            assert_eq!(s.body["status"]["servingVersion"], "new000000001");
        }),
        event("RolloutCompleted", "Normal").and(|s| {
            note_contains(
                s,
                "version new000000001 serves at http://wine-predictor.default.svc.cluster.local:8080",
            );
            assert_eq!(s.body["related"]["kind"], "Deployment", "{}", s.body);
            assert_eq!(s.body["related"]["name"], "wine-predictor", "{}", s.body);
        }),
    ];
    reconcile_expecting(mp.clone(), ctx, handle, script).await;

    // The next reconcile applies the edit and only then claims generation 2.
    let mut after = mp.clone();
    if let Some(st) = after.status.as_mut() {
        st.rollout = None;
    }
    let (ctx, handle, _registry) = Context::test(Vec::new(), vec![done]);
    let script = vec![
        secret_read(),
        deployment_applied().and(|s| assert_eq!(s.body["spec"]["replicas"], 2)),
        service_applied(),
        status_applied(&after).and(|s| {
            assert_eq!(s.body["status"]["observedGeneration"], 2, "{}", s.body);
        }),
    ];
    reconcile_expecting(after, ctx, handle, script).await;
}

#[tokio::test]
async fn a_missing_secret_shows_in_the_status_and_one_warning_event() {
    let (_dir, mp, _version) = pipeline_with_new_data().await;
    let (ctx, handle, _registry) = Context::test(Vec::new(), Vec::new());
    let not_found = || {
        Expect::new(
            Method::GET,
            SECRET_PATH,
            Box::new(|_| {
                (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "secrets \"store-creds\" not found", "reason": "NotFound", "code": 404}),
                )
            }),
        )
    };
    let written = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let keep = written.clone();
    let script = vec![
        not_found(),
        status_applied(&mp).and(move |s| {
            let status = &s.body["status"];
            assert_eq!(
                condition(status, "DataAvailable"),
                (json!("False"), json!("SecretUnavailable"))
            );
            assert_eq!(condition(status, "Degraded").0, "True");
            let message = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "DataAvailable").cloned())
                .unwrap_or_default()["message"]
                .clone();
            assert!(
                message
                    .as_str()
                    .unwrap_or_default()
                    .contains("store-creds of spec.data.secretRef: it does not exist"),
                "{message}"
            );
            if let Ok(mut w) = keep.lock() {
                *w = status.clone();
            }
        }),
        event("DataUnavailable", "Warning").and(|s| note_contains(s, "it does not exist")),
    ];
    reconcile_expecting(mp.clone(), ctx, handle, script).await;

    // The next poll finds the same failure: no second Event, no status write.
    let mut again = mp;
    again.status =
        serde_json::from_value(written.lock().map(|w| w.clone()).unwrap_or_default()).ok();
    let (ctx, handle, _registry) = Context::test(Vec::new(), Vec::new());
    reconcile_expecting(again, ctx, handle, vec![not_found()]).await;
}

#[tokio::test]
async fn a_replica_without_the_lease_reads_but_writes_nothing() {
    let (_dir, mp, _version) = pipeline_with_new_data().await;
    let (mut ctx, mut handle, _registry) = Context::test(Vec::new(), Vec::new());
    if let Some(c) = Arc::get_mut(&mut ctx) {
        c.fence = crate::lease::Fence::closed();
    }
    let server = tokio::spawn(async move {
        let e = secret_read();
        let seen = expect_request(&mut handle, e.reply).await;
        assert_eq!(seen.uri, SECRET_PATH);
        handle
    });
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(mp), ctx))
        .await
        .expect("reconcile finished");
    assert!(
        matches!(&result, Err(Error::NotLeader { what }) if what.starts_with("Job wine-train-")),
        "{result:?}"
    );
    let mut handle = server.await.expect("only the read was sent");
    let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(!matches!(extra, Ok(Some(_))), "no write after the read");
}

#[tokio::test]
async fn a_host_path_outside_the_policy_builds_nothing_and_says_why() {
    let (_dir, mut mp, _version) = pipeline_with_new_data().await;
    if let Some(h) = mp.spec.volumes[0].host_path.as_mut() {
        h.path = "/etc".into();
    }
    let (ctx, handle, _registry) = Context::test(Vec::new(), Vec::new());
    let script = vec![
        secret_read(),
        // No Job: the status says why, then one Warning Event.
        status_applied(&mp).and(|s| {
            let status = &s.body["status"];
            assert_eq!(
                condition(status, "Degraded"),
                (json!("True"), json!("PolicyViolation"))
            );
            assert!(status["challenger"].is_null());
        }),
        event("PolicyViolation", "Warning").and(|s| note_contains(s, "\"/etc\"")),
    ];
    reconcile_expecting(mp, ctx, handle, script).await;
}

#[tokio::test]
async fn a_refused_deployment_is_one_warning_event_naming_it_per_streak() {
    let mut mp = pipeline();
    mp.status = Some(ModelPipelineStatus {
        champion: Some(champion("old000000001", 0.7)),
        observed_generation: Some(1),
        ..Default::default()
    });
    mp.metadata.generation = Some(2);
    let (ctx, mut handle, _registry) = Context::test(Vec::new(), Vec::new());
    let refused = Expect::new(
        Method::PATCH,
        "/apis/apps/v1/namespaces/default/deployments/wine-predictor?",
        Box::new(|_| {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "deployments.apps \"wine-predictor\" is forbidden: exceeded quota", "reason": "Forbidden", "code": 403}),
            )
        }),
    );
    let mp = Arc::new(mp);
    let server = tokio::spawn(async move {
        let seen = expect_request(&mut handle, |_| (200, secret_read_body())).await;
        assert_eq!(seen.uri, SECRET_PATH);
        let seen = expect_request(&mut handle, refused.reply).await;
        assert!(
            seen.uri
                .starts_with(&refused.path[..refused.path.len() - 1]),
            "{}",
            seen.uri
        );
        handle
    });
    let error = reconcile(mp.clone(), ctx.clone())
        .await
        .expect_err("the Deployment was refused");
    let mut handle = server.await.expect("the reconcile's requests");
    assert_eq!(error.category(), "apply_deployment");

    error_policy(mp.clone(), &error, ctx.clone());
    let seen = tokio::time::timeout(
        Duration::from_secs(5),
        expect_request(&mut handle, |s| (201, s.body.clone())),
    )
    .await
    .expect("the Event is sent");
    assert!(seen.uri.starts_with(EVENTS_PATH), "{}", seen.uri);
    assert_eq!(seen.body["reason"], "ReconcileFailed", "{}", seen.body);
    assert_eq!(seen.body["type"], "Warning");
    assert_eq!(seen.body["related"]["kind"], "Deployment");
    assert_eq!(seen.body["related"]["name"], "wine-predictor");
    note_contains(&seen, "exceeded quota");

    // The same failure again, in the same streak: logged and retried, not announced again.
    error_policy(mp, &error, ctx);
    let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        !matches!(extra, Ok(Some(_))),
        "no second Event for a failure already announced"
    );
}

#[test]
fn only_failures_the_author_can_act_on_are_events() {
    let kube_error = || {
        Box::new(kube::Error::Api(Box::new(kube::core::Status::failure(
            "denied",
            "Forbidden",
        ))))
    };
    let job = failure_event(&Error::ApplyJob {
        name: "wine-train-v1".into(),
        source: kube_error(),
    });
    assert_eq!(
        job.and_then(|e| e.related),
        Some(crate::events::Related::Job("wine-train-v1".into()))
    );
    let secret = failure_event(&Error::ReadSecret {
        name: "creds".into(),
        source: kube_error(),
    });
    assert_eq!(secret.map(|e| e.reason), Some(Reason::ReconcileFailed));
    assert_eq!(failure_event(&Error::NotLeader { what: "x".into() }), None);
    assert_eq!(
        failure_event(&Error::PatchStatus {
            name: "wine".into(),
            source: kube_error(),
        }),
        None
    );
}
