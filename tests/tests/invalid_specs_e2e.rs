//! Hostile input at the door: a table of ModelPipeline specs, each with one field off (ranges,
//! enums, patterns, CEL rules, unknown fields, wrong types, missing fields), sent with
//! `kubectl create` to the live API server of the local cluster. Each must be refused, and the
//! message the user sees must say what was expected. The valid base spec is created first, so
//! every refusal is the one field's doing.
//!
//! Needs the cluster and images (as operator_e2e). Run:
//! `cargo test -p champion-tests --test invalid_specs_e2e`.

use champion_tests::operator::Stage;
use champion_tests::{ClusterError, Result};
use serde_json::{Value, json};

/// Sets `value` at the JSON pointer `path` (creating objects on the way).
fn set(manifest: &mut Value, path: &str, value: Value) {
    let mut cur = manifest;
    let keys: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for key in &keys[..keys.len() - 1] {
        cur = &mut cur[*key];
        if cur.is_null() {
            *cur = json!({});
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(keys[keys.len() - 1].to_string(), value);
    }
}

/// Removes the field at `path`.
fn remove(manifest: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
    if let Some(obj) = manifest.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.remove(key);
    }
}

/// `kubectl create -f` of `manifest`: `Ok(())` when created, `Err(message)` with what kubectl
/// printed when refused.
fn create(stage: &Stage, manifest: &Value) -> Result<std::result::Result<(), String>> {
    let file = stage.store.path.join("candidate.json");
    std::fs::write(&file, manifest.to_string()).map_err(ClusterError::io("writing", &file))?;
    let path = file.display().to_string();
    Ok(match stage.kubectl(&["create", "-f", &path]) {
        Ok(_) => Ok(()),
        Err(ClusterError::Command { stderr, .. }) => Err(stderr),
        Err(e) => return Err(e),
    })
}

type Edit = Box<dyn Fn(&mut Value)>;

fn at(path: &'static str, value: Value) -> Edit {
    Box::new(move |m| set(m, path, value.clone()))
}

#[tokio::test]
async fn invalid_specs_are_refused_by_the_api_server_with_a_message_that_says_what_is_expected()
-> Result<()> {
    let stage = Stage::deploy("e2e-invalid").await?;
    let base = stage.pipeline_manifest("base", json!({}));
    create(&stage, &base)?
        .map_err(|e| ClusterError::Invalid(format!("the valid base spec was refused: {e}")))?;
    let rows: Vec<(&str, Edit, &str)> = vec![
        (
            "pollInterval below 1s",
            at("/spec/data/pollInterval", json!("500ms")),
            "pollInterval must be at least 1s",
        ),
        (
            "target dropped",
            at("/spec/data/dropColumns", json!(["Id", "quality"])),
            "dropColumns must not contain",
        ),
        (
            "test data equals data",
            Box::new(|m| {
                let uri = m["spec"]["data"]["uri"].clone();
                set(m, "/spec/data/testDataUri", uri);
            }),
            "testDataUri must differ",
        ),
        (
            "holdoutFraction 0",
            at("/spec/evaluation/holdoutFraction", json!(0.0)),
            "holdoutFraction must be greater than 0",
        ),
        (
            "holdoutFraction 1",
            at("/spec/evaluation/holdoutFraction", json!(1.0)),
            "holdoutFraction must be greater than 0 and less than 1",
        ),
        (
            "minScore above 1",
            at("/spec/promotion/minScore", json!(1.5)),
            "minScore must be between 0 and 1",
        ),
        (
            "minScore negative",
            at("/spec/promotion/minScore", json!(-0.1)),
            "minScore must be between 0 and 1",
        ),
        (
            "minImprovement negative",
            at("/spec/promotion/minImprovement", json!(-0.01)),
            "minImprovement must be at least 0",
        ),
        (
            "unwinnable floor and margin",
            Box::new(|m| {
                set(m, "/spec/promotion/minScore", json!(0.95));
                set(m, "/spec/promotion/minImprovement", json!(0.1));
            }),
            "minScore + minImprovement must not exceed 1",
        ),
        (
            "volume with two sources",
            at(
                "/spec/volumes",
                json!([{"name": "store", "mountPath": "/data", "hostPath": {"path": "/a"}, "persistentVolumeClaim": {"claimName": "c"}}]),
            ),
            "set exactly one of",
        ),
        (
            "volume without a source",
            at(
                "/spec/volumes",
                json!([{"name": "store", "mountPath": "/data"}]),
            ),
            "set exactly one of",
        ),
        (
            "params key of no algorithm",
            at("/spec/trainer/params", json!({"nEstimators": "50"})),
            "params has a key the algorithm does not accept",
        ),
        (
            "params key of another algorithm",
            Box::new(|m| {
                set(m, "/spec/trainer/algorithm", json!("logistic"));
                set(m, "/spec/trainer/params", json!({"n_estimators": "50"}));
            }),
            "logistic: alpha, max_iterations, gradient_tolerance",
        ),
        (
            "unknown algorithm",
            at("/spec/trainer/algorithm", json!("svm")),
            "Unsupported value: \"svm\"",
        ),
        (
            "unknown metric",
            at("/spec/evaluation/metric", json!("auc")),
            "Unsupported value: \"auc\"",
        ),
        (
            "unknown pull policy",
            at("/spec/predictor/imagePullPolicy", json!("Sometimes")),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            "finished Jobs kept under a minute",
            at("/spec/trainer/ttlSecondsAfterFinished", json!(0)),
            "should be greater than or equal to 60",
        ),
        (
            "backoffLimit above 10",
            at("/spec/trainer/backoffLimit", json!(11)),
            "should be less than or equal to 10",
        ),
        (
            "no time to train",
            at("/spec/trainer/activeDeadlineSeconds", json!(0)),
            "should be greater than or equal to 1",
        ),
        (
            "rollout deadline below 10 s",
            at("/spec/promotion/rolloutDeadlineSeconds", json!(5)),
            "should be greater than or equal to 10",
        ),
        (
            "negative seed",
            at("/spec/evaluation/seed", json!(-1)),
            "should be greater than or equal to 0",
        ),
        (
            "replicas above 100",
            at("/spec/predictor/replicas", json!(101)),
            "should be less than or equal to 100",
        ),
        (
            "port above 65535",
            at("/spec/predictor/port", json!(70000)),
            "should be less than or equal to 65535",
        ),
        (
            "historyLimit 0",
            at("/spec/historyLimit", json!(0)),
            "should be greater than or equal to 1",
        ),
        (
            "relative hostPath",
            at(
                "/spec/volumes",
                json!([{"name": "store", "mountPath": "/data", "hostPath": {"path": "data"}}]),
            ),
            "should match '^/'",
        ),
        (
            "relative mountPath",
            at(
                "/spec/volumes",
                json!([{"name": "store", "mountPath": "data", "hostPath": {"path": "/data"}}]),
            ),
            "should match '^/'",
        ),
        (
            "empty target",
            at("/spec/data/target", json!("")),
            "should be at least 1 chars long",
        ),
        (
            "replicas as text",
            at("/spec/predictor/replicas", json!("two")),
            "must be of type integer",
        ),
        (
            "suspend as text",
            at("/spec/suspend", json!("yes")),
            "must be of type boolean",
        ),
        (
            "unknown field",
            at("/spec/data/bucket", json!("b")),
            "unknown field \"spec.data.bucket\"",
        ),
        (
            "missing data URI",
            Box::new(|m| remove(m, "/spec/data/uri")),
            "spec.data.uri: Required value",
        ),
        (
            "missing model store",
            Box::new(|m| remove(m, "/spec/modelStore")),
            "spec.modelStore: Required value",
        ),
    ];
    assert!(rows.len() >= 25, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for (i, (name, edit, expected)) in rows.iter().enumerate() {
        let mut m = base.clone();
        set(&mut m, "/metadata/name", json!(format!("invalid-{i}")));
        edit(&mut m);
        match create(&stage, &m)? {
            Ok(()) => wrong.push(format!("{name}: accepted")),
            Err(message) if !message.contains(expected) => {
                wrong.push(format!("{name}: expected {expected:?} in {message:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
    eprintln!(
        "{} invalid specs refused, each with the expected message",
        rows.len()
    );
    stage.passed();
    Ok(())
}
