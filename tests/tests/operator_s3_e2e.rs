//! The operator end to end with `s3://` data and model stores: a local S3-compatible server
//! (moto's server mode, started by the test on the node address, where pods reach it), the
//! store credentials and endpoint in a Secret that the pipeline names in `data.secretRef` and
//! `modelStore.secretRef`, and the same first-data loop as operator_e2e (a): data in the bucket
//! → trainer Job → Promoted → predictor Available → the predictor answers with the promoted
//! version, its model and report in the bucket. Then the Secret's values are searched for, and
//! must be absent, everywhere the system reports: status, Events, the objects it created, the
//! operator, trainer and predictor logs and the trainer's termination message.
//!
//! Needs `make images`, `make test-deps` (moto) and the cluster.
//! Run: `cargo test -p champion-tests --test operator_s3_e2e -- --test-threads=1`.

use std::time::Duration;

use champion_tests::moto::{self, Moto};
use champion_tests::operator::{
    Stage, assert_first_promotion, csv_row_as_request, history, http_post_json, model_uri_of,
    str_at, wine_file,
};
use champion_tests::testing::pod_logs;
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

/// Deadline of each wait (as in operator_e2e): seconds here, bounded for a loaded machine.
const WAIT: Duration = Duration::from_secs(120);
const PIPELINE: &str = "wine";
const SECRET: &str = "wine-s3";

/// The ModelPipeline: the wine recipe of operator_e2e, with both stores and the holdout in the
/// bucket, both secretRefs naming the credentials Secret, and no volumes (nothing on the node).
fn s3_pipeline(stage: &Stage, bucket: &str) -> Value {
    let secret = json!({"name": SECRET});
    let mut manifest = stage.pipeline_manifest(
        PIPELINE,
        json!({
            "data": {
                "uri": format!("s3://{bucket}/wine/data/"),
                "pollInterval": "2s",
                "target": "quality",
                "positiveAbove": 5,
                "dropColumns": ["Id"],
                "testDataUri": format!("s3://{bucket}/wine/test_data.csv"),
                "secretRef": secret,
            },
            "modelStore": {
                "uri": format!("s3://{bucket}/wine/models/"),
                "secretRef": secret,
            },
        }),
    );
    if let Some(spec) = manifest.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("volumes");
    }
    manifest
}

/// Every place the system reports to, as (where, text): the pipeline (YAML and JSON), the
/// Events, the Jobs, Deployments and pods it created, and the logs and termination messages of
/// the operator, trainer and predictor pods.
async fn everything_reported(stage: &Stage) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let pipeline = stage
        .pipeline(PIPELINE)
        .await?
        .ok_or_else(|| ClusterError::Invalid("the pipeline is gone".into()))?;
    out.push(("pipeline (JSON)".into(), pipeline.to_string()));
    out.push((
        "pipeline (YAML)".into(),
        stage.kubectl(&["get", "modelpipeline", PIPELINE, "-o", "yaml"])?,
    ));
    let all = ListParams::default();
    let events = stage
        .api::<Event>()
        .list(&all)
        .await
        .map_err(ClusterError::kube("list events.k8s.io Events"))?;
    let core_events = stage
        .api::<CoreEvent>()
        .list(&all)
        .await
        .map_err(ClusterError::kube("list core Events"))?;
    out.push(("Events".into(), json_text(&events.items)?));
    out.push(("Events (core/v1)".into(), json_text(&core_events.items)?));
    let jobs = stage
        .api::<Job>()
        .list(&all)
        .await
        .map_err(ClusterError::kube("list Jobs"))?;
    out.push(("Jobs".into(), json_text(&jobs.items)?));
    let deployments = stage
        .api::<Deployment>()
        .list(&all)
        .await
        .map_err(ClusterError::kube("list Deployments"))?;
    out.push(("Deployments".into(), json_text(&deployments.items)?));

    let pods = stage
        .api::<Pod>()
        .list(&all)
        .await
        .map_err(ClusterError::kube("list Pods"))?;
    out.push(("Pods".into(), json_text(&pods.items)?));
    for pod in &pods.items {
        let name = pod.name_any();
        let component = pod
            .labels()
            .get("app.kubernetes.io/component")
            .cloned()
            .unwrap_or_else(|| "operator".into());
        let log = pod_logs(&stage.cluster, &stage.ns.name, &name).await?;
        out.push((format!("log of {component} pod {name}"), log));
        let messages: Vec<String> = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.message.clone())
            .collect();
        if !messages.is_empty() {
            out.push((
                format!("termination message of {component} pod {name}"),
                messages.join("\n"),
            ));
        }
    }
    Ok(out)
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| ClusterError::Serialize {
        what: "listed objects",
        source,
    })
}

/// (g) The first-data loop on `s3://` stores with credentials from a Secret: trained, promoted,
/// served, model and report in the bucket — and the Secret's values nowhere in what the system
/// reports.
#[tokio::test]
async fn s3_stores_with_secret_credentials_train_promote_serve_and_never_show_the_secret()
-> Result<()> {
    let moto = Moto::start().await?;
    // Random-looking, distinctive values: a hit below can only be a leak of these.
    let access_key_id = format!("AKIA{}", moto::token(16).to_ascii_uppercase());
    let secret_access_key = format!("{}/{}", moto::token(20), moto::token(19));
    let bucket = format!("champion-{}", moto::token(8));
    moto.create_bucket(&bucket).await?;
    let root = moto.store(
        &format!("s3://{bucket}/wine/"),
        &access_key_id,
        &secret_access_key,
    )?;
    moto::put(&root, "data/data_1.csv", wine_file("data_1.csv")?).await?;
    moto::put(&root, "test_data.csv", wine_file("test_data.csv")?).await?;

    // moto listens on the node address, inside the pod range the store policy denies by default.
    let stage = Stage::deploy_with(
        "e2e-s3",
        &["readSecrets=true", "storePolicy.allowedHosts[0]=10.244.0.1"],
    )
    .await?;
    // The operator may read Secrets in the namespace it watches, and in no other.
    assert!(
        operator_can_get_secrets(&stage, &stage.ns.name)?,
        "the operator can read Secrets where it watches"
    );
    assert!(
        !operator_can_get_secrets(&stage, "kube-system")?,
        "the operator is denied Secrets in a namespace it does not watch"
    );
    let mut secret = Secret::default();
    secret.metadata.name = Some(SECRET.into());
    secret.string_data = Some(
        moto.options(&access_key_id, &secret_access_key)
            .into_iter()
            .collect(),
    );
    stage
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .map_err(ClusterError::kube(format!("create Secret {SECRET}")))?;
    let obj = serde_json::from_value(s3_pipeline(&stage, &bucket)).map_err(|source| {
        ClusterError::Serialize {
            what: "ModelPipeline",
            source,
        }
    })?;
    stage
        .pipelines()
        .create(&PostParams::default(), &obj)
        .await
        .map_err(ClusterError::kube("create the s3 ModelPipeline"))?;

    let (status, deployment) = match stage.wait_champion(PIPELINE, None, WAIT).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("----- moto log -----\n{}", moto.log_tail(60));
            return Err(e);
        }
    };
    let version = str_at(&status, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let model_uri = format!(
        "s3://{bucket}/wine/models/{}/{PIPELINE}/{version}/",
        stage.ns.name
    );
    assert_first_promotion(&status, &model_uri);
    let h = history(&status);
    assert_eq!(h.len(), 1, "one history entry: {h:?}");
    assert_eq!(h[0]["outcome"], "Promoted");
    let jobs = stage.jobs(PIPELINE).await?;
    assert_eq!(jobs.len(), 1, "one Job for one data fingerprint: {jobs:?}");
    assert_eq!(jobs[0].status.as_ref().and_then(|s| s.succeeded), Some(1));

    // The trainer wrote the version directory into the bucket; the report names the version.
    for file in ["model.json", "report.json"] {
        let key = format!("models/{}/{PIPELINE}/{version}/{file}", stage.ns.name);
        assert!(
            moto::exists(&root, &key).await?,
            "s3://{bucket}/wine/{key} is in the bucket"
        );
    }
    let report = moto::get(
        &root,
        &format!("models/{}/{PIPELINE}/{version}/report.json", stage.ns.name),
    )
    .await?;
    let report: Value =
        serde_json::from_slice(&report).map_err(|source| ClusterError::Serialize {
            what: "report.json from the bucket",
            source,
        })?;
    assert_eq!(report["modelVersion"], version.as_str(), "{report}");

    // The predictor loads the model from the bucket and answers with that version.
    assert_eq!(
        model_uri_of(&deployment).as_deref(),
        Some(model_uri.as_str())
    );
    stage.wait_ready_serving(PIPELINE, WAIT).await?;
    let ips = stage.predictor_ips(PIPELINE, &version).await?;
    assert!(
        !ips.is_empty(),
        "no ready predictor pod serves version {version}"
    );
    let request = csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])?;
    for ip in &ips {
        let reply = http_post_json(&format!("{ip}:8080"), "/predict", &request).await?;
        assert_eq!(reply.status, 200, "POST /predict to {ip}: {reply:?}");
        assert_eq!(
            reply.headers.get("x-model-version").map(String::as_str),
            Some(version.as_str()),
            "x-model-version of {ip}: {reply:?}"
        );
        let body: Value = serde_json::from_str(&reply.body).map_err(|e| {
            ClusterError::Invalid(format!(
                "/predict on {ip} answered non-JSON: {e}: {reply:?}"
            ))
        })?;
        assert_eq!(
            body["modelVersion"],
            version.as_str(),
            "body of {ip}: {body}"
        );
    }

    // The Secret's values are nowhere the system reports. The search is over real material:
    // the operator, trainer and predictor logs and the trainer's summary are all there.
    let reported = everything_reported(&stage).await?;
    for must in [
        "log of operator pod",
        "log of trainer pod",
        "log of predictor pod",
        "termination message of trainer pod",
    ] {
        assert!(
            reported
                .iter()
                .any(|(where_, text)| where_.starts_with(must) && !text.trim().is_empty()),
            "expected a non-empty {must}…; have {:?}",
            reported.iter().map(|(w, _)| w).collect::<Vec<_>>()
        );
    }
    let summaries: Vec<&String> = reported
        .iter()
        .filter(|(w, _)| w.starts_with("termination message of trainer"))
        .map(|(_, t)| t)
        .collect();
    assert!(
        summaries.iter().any(|t| t.contains(&version)),
        "the trainer's summary names the version it wrote: {summaries:?}"
    );
    // Positive controls: the search sees the status, the Events and the trainer's log — what a
    // leak would sit beside — for they carry the (non-secret) bucket URIs and the version.
    let data_uri = format!("s3://{bucket}/wine/data/");
    for (place, needle) in [
        ("pipeline (YAML)", model_uri.as_str()),
        ("Events", version.as_str()),
        ("log of trainer pod", data_uri.as_str()),
    ] {
        assert!(
            reported
                .iter()
                .any(|(w, t)| w.starts_with(place) && t.contains(needle)),
            "the {place} mentions {needle}"
        );
    }
    for (where_, text) in &reported {
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", &access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &secret_access_key),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "the value of the Secret's {name} appears in the {where_}"
            );
        }
    }
    stage.passed();
    Ok(())
}

/// Whether the API server's RBAC lets the operator's ServiceAccount read Secrets in `ns`
/// (`kubectl auth can-i`, which exits 1 on "no").
fn operator_can_get_secrets(stage: &Stage, ns: &str) -> Result<bool> {
    let sa = format!(
        "system:serviceaccount:{}:{}",
        stage.ns.name,
        champion_tests::operator::RELEASE
    );
    match stage
        .cluster
        .kubectl(&["auth", "can-i", "get", "secrets", "--as", &sa, "-n", ns])
    {
        Ok(out) => Ok(out.trim() == "yes"),
        Err(ClusterError::Command { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
