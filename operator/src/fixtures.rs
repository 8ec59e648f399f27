//! Test fixtures: a sample pipeline, reports, and a mocked API server (tower-test) that
//! asserts the exact requests one reconcile sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use champion_api::{
    ChampionStatus, DataSpec, HostPathVolume, Metric, ModelPipeline, ModelPipelineSpec,
    ModelStoreSpec, SecretRef, StoreVolume,
};
use champion_model::{
    Durations, MetricName, Metrics as ModelMetrics, REPORT_FORMAT_VERSION, Report, RowCounts,
};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::{reflector, watcher};
use prometheus::Registry;
use tower_test::mock::{self, Handle};

use crate::context::Context;
use crate::metrics::Metrics;
use crate::observe::Observed;
use crate::views::{DataListing, ReadFailure};

/// The wine pipeline of the original system, with data and models on a hostPath volume.
pub fn pipeline() -> ModelPipeline {
    let spec = ModelPipelineSpec {
        data: DataSpec {
            uri: "file:///data/wine/".into(),
            poll_interval: kube::core::Duration::from(std::time::Duration::from_secs(2)),
            target: "quality".into(),
            test_data_uri: None,
            positive_above: Some(5.0),
            drop_columns: vec!["Id".into()],
            secret_ref: Some(SecretRef {
                name: "store-creds".into(),
            }),
        },
        model_store: ModelStoreSpec {
            uri: "file:///models".into(),
            secret_ref: Some(SecretRef {
                name: "store-creds".into(),
            }),
        },
        trainer: champion_api::TrainerSpec {
            params: BTreeMap::from([("n_estimators".to_string(), "20".to_string())]),
            ..Default::default()
        },
        evaluation: Default::default(),
        promotion: Default::default(),
        predictor: Default::default(),
        rollout: Default::default(),
        trigger: Default::default(),
        volumes: vec![StoreVolume {
            name: "store".into(),
            mount_path: "/data".into(),
            persistent_volume_claim: None,
            host_path: Some(HostPathVolume {
                path: "/var/champion".into(),
            }),
        }],
        history_limit: 10,
        suspend: false,
    };
    let mut mp = ModelPipeline::new("wine", spec);
    mp.metadata = ObjectMeta {
        name: Some("wine".into()),
        namespace: Some("default".into()),
        uid: Some("uid-wine".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    mp
}

/// A champion with `version` and `score`, stored under the pipeline's model store.
pub fn champion(version: &str, score: f64) -> ChampionStatus {
    ChampionStatus {
        version: version.into(),
        model_uri: format!("file:///models/wine/{version}/"),
        score: Some(score),
        metric: Some(Metric::F1Macro),
        data_fingerprint: "fp0".into(),
        model_sha256: Some(champion_model::sha256_hex(version.as_bytes())),
        promoted_at: Time(Timestamp::UNIX_EPOCH),
    }
}

/// What a reconcile saw, with nothing but the data listing.
pub fn observed(data: Option<Result<DataListing, ReadFailure>>) -> Observed {
    Observed {
        now: Timestamp::UNIX_EPOCH,
        data,
        jobs: Vec::new(),
        deployment: None,
        run_slots: None,
        report: None,
        termination_message: None,
        predictor_failure: None,
        policy_violation: None,
        listing_pending: false,
        live: None,
        drift: None,
    }
}

fn model_metrics(score: f64) -> ModelMetrics {
    ModelMetrics {
        accuracy: score,
        f1_binary: None,
        f1_macro: score,
        f1_weighted: score,
        per_class: Vec::new(),
        confusion_matrix: Vec::new(),
    }
}

/// A report.json of a run that wrote `version`, scored in f1Macro.
pub fn report(
    version: &str,
    score: f64,
    champion_score: Option<f64>,
    champion_version: Option<&str>,
) -> Report {
    Report {
        format_version: REPORT_FORMAT_VERSION,
        model_version: version.into(),
        metric: MetricName::F1Macro,
        challenger_score: score,
        champion_score,
        champion_version: champion_version.map(str::to_string),
        challenger_metrics: model_metrics(score),
        champion_metrics: champion_score.map(model_metrics),
        rows: RowCounts::default(),
        class_labels: vec!["0".into(), "1".into()],
        positive_label: None,
        // The data of `training_challenger`'s run.
        data_fingerprint: "fp1".into(),
        model_sha256: champion_model::sha256_hex(version.as_bytes()),
        algorithm: "adaboost".into(),
        params: BTreeMap::new(),
        durations: Durations::default(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A request as the mock API server saw it.
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: serde_json::Value,
}

/// The JSON body of a request the client sent; `Null` when it has none (a GET).
pub async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// Receives the next request, answers it with `respond(&seen)` and returns it.
pub async fn expect_request(
    handle: &mut ApiHandle,
    respond: impl FnOnce(&Seen) -> (u16, serde_json::Value),
) -> Seen {
    let (req, send) = handle
        .next_request()
        .await
        .expect("the reconcile sent another request");
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let body = body_json(req).await;
    let seen = Seen { method, uri, body };
    let (status, reply) = respond(&seen);
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
        .expect("a valid response");
    send.send_response(response);
    seen
}

impl Context {
    /// A context with a mocked client, caches holding `cached_jobs` and `cached_deployments`,
    /// and fresh metrics.
    pub fn test(
        cached_jobs: Vec<Job>,
        cached_deployments: Vec<Deployment>,
    ) -> (Arc<Context>, ApiHandle, Registry) {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).expect("metrics register");
        let (jobs, mut job_writer) = reflector::store();
        for job in cached_jobs {
            job_writer.apply_watcher_event(&watcher::Event::Apply(job));
        }
        let (deployments, mut deployment_writer) = reflector::store();
        for d in cached_deployments {
            deployment_writer.apply_watcher_event(&watcher::Event::Apply(d));
        }
        let ctx = Context {
            client: client.clone(),
            jobs: crate::caches::Caches::new(vec![jobs]),
            deployments: crate::caches::Caches::new(vec![deployments]),
            caches_ready: Arc::new(AtomicBool::new(true)),
            runs: Default::default(),
            events: crate::events::Publisher::new(client, "champion-operator", "test"),
            metrics,
            fresh: Default::default(),
            errors: Default::default(),
            fence: crate::lease::Fence::open(),
            policy: crate::policy::PodPolicy {
                host_path_prefixes: vec!["/var/champion".into()],
                image_prefixes: Vec::new(),
            },
            stores: champion_store::TenantStores {
                local_roots: vec![std::env::temp_dir()],
                ..Default::default()
            },
            listings: Default::default(),
            live: Default::default(),
            drift: crate::drift::DriftReads::disabled(),
        };
        (Arc::new(ctx), handle, registry)
    }
}

/// The predictor Deployment of `mp` serving `champion`, fully rolled out.
pub fn serving_deployment(mp: &ModelPipeline, champion: &ChampionStatus) -> Deployment {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    let mut d = crate::build::build_deployment(mp, champion);
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(1),
        updated_replicas: Some(1),
        available_replicas: Some(1),
        ..DeploymentStatus::default()
    });
    d
}

/// The challenger of run `version` (Job `job`, data "fp1") that is still training.
pub fn training_challenger(
    version: &str,
    job: &str,
    data_seen_at: Option<Time>,
) -> champion_api::ChallengerStatus {
    champion_api::ChallengerStatus {
        version: version.into(),
        job: job.into(),
        data_fingerprint: "fp1".into(),
        state: champion_api::ChallengerState::Training,
        score: None,
        champion_score: None,
        model_sha256: None,
        reason: None,
        started_at: Time(Timestamp::UNIX_EPOCH),
        data_seen_at,
    }
}
