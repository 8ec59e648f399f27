//! The CRD's CEL rules, evaluated client-side with Kubernetes' CEL libraries (kube-cel) against
//! the generated schema: each rule compiles, accepts a valid pipeline and rejects what it
//! guards against.

use champion_api::ModelPipeline;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = ModelPipeline::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.clone());
    serde_json::to_value(schema.expect("the CRD has a schema")).expect("schema serialises")
}

/// A valid pipeline with every defaulted field present, as the API server sees it after
/// defaulting.
fn valid() -> Value {
    let minimal = json!({
        "apiVersion": "champion.dev/v1alpha1",
        "kind": "ModelPipeline",
        "metadata": {"name": "wine", "namespace": "default"},
        "spec": {
            "data": {"uri": "file:///data/wine/", "target": "quality", "dropColumns": ["Id"], "positiveAbove": 5.0},
            "modelStore": {"uri": "file:///models/"},
            "volumes": [{"name": "store", "mountPath": "/data", "hostPath": {"path": "/var/champion"}}]
        }
    });
    let mp: ModelPipeline = serde_json::from_value(minimal).expect("valid pipeline parses");
    serde_json::to_value(mp).expect("pipeline serialises")
}

fn errors(object: &Value) -> String {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    }
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = valid();
    let mut cur = &mut v;
    for key in &path[..path.len() - 1] {
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
    v
}

#[test]
fn a_valid_pipeline_passes_every_rule() {
    let e = errors(&valid());
    assert!(e.is_empty(), "{e}");
    for (algorithm, key) in [
        ("adaboost", "n_estimators"),
        ("logistic", "max_iterations"),
        ("random-forest", "max_features"),
        ("gaussian-nb", "var_smoothing"),
    ] {
        let mut v = with(&["spec", "trainer", "params"], json!({key: "7"}));
        v["spec"]["trainer"]["algorithm"] = json!(algorithm);
        let e = errors(&v);
        assert!(e.is_empty(), "{algorithm} {key}: {e}");
    }
}

#[test]
fn each_rule_rejects_what_it_guards_against() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "pollInterval below 1s",
            with(&["spec", "data", "pollInterval"], json!("500ms")),
            "pollInterval must be at least 1s",
        ),
        (
            "target dropped",
            with(&["spec", "data", "dropColumns"], json!(["Id", "quality"])),
            "dropColumns must not contain",
        ),
        (
            "test data equals data",
            with(
                &["spec", "data", "testDataUri"],
                json!("file:///data/wine/"),
            ),
            "testDataUri must differ",
        ),
        (
            "holdoutFraction 0",
            with(&["spec", "evaluation", "holdoutFraction"], json!(0.0)),
            "holdoutFraction must be greater than 0",
        ),
        (
            "holdoutFraction 1",
            with(&["spec", "evaluation", "holdoutFraction"], json!(1.0)),
            "holdoutFraction must be greater than 0",
        ),
        (
            "minScore above 1",
            with(&["spec", "promotion", "minScore"], json!(1.5)),
            "minScore must be between 0 and 1",
        ),
        (
            "minScore negative",
            with(&["spec", "promotion", "minScore"], json!(-0.1)),
            "minScore must be between 0 and 1",
        ),
        (
            "minImprovement negative",
            with(&["spec", "promotion", "minImprovement"], json!(-0.01)),
            "minImprovement must be at least 0",
        ),
        (
            "unwinnable floor and margin",
            {
                let mut v = with(&["spec", "promotion", "minScore"], json!(0.95));
                v["spec"]["promotion"]["minImprovement"] = json!(0.1);
                v
            },
            "minScore + minImprovement must not exceed 1",
        ),
        (
            "a camelCase params key",
            with(&["spec", "trainer", "params"], json!({"nEstimators": "50"})),
            "params has a key the algorithm does not accept; accepted keys: adaboost: n_estimators",
        ),
        (
            "a key of another algorithm",
            {
                let mut v = with(
                    &["spec", "trainer", "params"],
                    json!({"var_smoothing": "1e-9"}),
                );
                v["spec"]["trainer"]["algorithm"] = json!("logistic");
                v
            },
            "logistic: alpha, max_iterations, gradient_tolerance",
        ),
        (
            "volume with two sources",
            with(
                &["spec", "volumes"],
                json!([{"name": "store", "mountPath": "/data",
            "hostPath": {"path": "/a"}, "persistentVolumeClaim": {"claimName": "c"}}]),
            ),
            "set exactly one of",
        ),
        (
            "canary steps not ending at 100",
            with(&["spec", "rollout", "canary", "steps"], json!([10, 50])),
            "the last canary step must be 100",
        ),
        (
            "canary steps not increasing",
            with(
                &["spec", "rollout", "canary", "steps"],
                json!([50, 10, 100]),
            ),
            "canary steps must be strictly increasing",
        ),
        (
            "canary step repeated",
            with(
                &["spec", "rollout", "canary", "steps"],
                json!([10, 10, 100]),
            ),
            "canary steps must be strictly increasing",
        ),
        (
            "canary step 0",
            with(&["spec", "rollout", "canary", "steps"], json!([0, 100])),
            "canary steps are percents from 1 to 100",
        ),
        (
            "maxErrorRatio above 1",
            with(
                &["spec", "rollout", "analysis", "maxErrorRatio"],
                json!(1.5),
            ),
            "maxErrorRatio must be between 0 and 1",
        ),
        (
            "minAgreement negative",
            with(
                &["spec", "rollout", "analysis", "minAgreement"],
                json!(-0.5),
            ),
            "minAgreement must be between 0 and 1",
        ),
        (
            "maxLatencyRatio below 1",
            with(
                &["spec", "rollout", "analysis", "maxLatencyRatio"],
                json!(0.5),
            ),
            "maxLatencyRatio must be at least 1",
        ),
        (
            "borderlineBand above 1",
            with(&["spec", "promotion", "borderlineBand"], json!(2.0)),
            "borderlineBand must be between 0 and 1",
        ),
        (
            "psiThreshold 0",
            with(
                &["spec", "trigger"],
                json!({"onDrift": {"psiThreshold": 0.0, "minRows": 500, "cooldownSeconds": 3600}}),
            ),
            "psiThreshold must be greater than 0",
        ),
        (
            "online gate with feedback off",
            {
                let mut v = with(&["spec", "predictor", "feedbackCapacity"], json!(0));
                v["spec"]["rollout"]["analysis"]["online"] =
                    json!({"metric": "accuracy", "minSamples": 100});
                v
            },
            "predictor.feedbackCapacity must be more than 0",
        ),
        (
            "volume without a source",
            with(
                &["spec", "volumes"],
                json!([{"name": "store", "mountPath": "/data"}]),
            ),
            "set exactly one of",
        ),
    ];
    for (name, object, message) in cases {
        let e = errors(&object);
        assert!(
            e.contains(message),
            "{name}: expected {message:?}, got {e:?}"
        );
    }
}

#[test]
fn boundary_values_are_accepted() {
    for (path, value) in [
        (&["spec", "data", "pollInterval"][..], json!("1s")),
        (&["spec", "evaluation", "holdoutFraction"][..], json!(0.99)),
        (&["spec", "promotion", "minScore"][..], json!(1.0)),
        (&["spec", "promotion", "minScore"][..], json!(0.0)),
        (&["spec", "rollout", "canary", "steps"][..], json!([100])),
        (
            &["spec", "rollout", "canary", "steps"][..],
            json!([1, 2, 100]),
        ),
        (
            &["spec", "rollout", "analysis", "maxLatencyRatio"][..],
            json!(1.0),
        ),
        (&["spec", "promotion", "borderlineBand"][..], json!(0.0)),
    ] {
        let e = errors(&with(path, value.clone()));
        assert!(e.is_empty(), "{path:?} = {value}: {e}");
    }
}

#[test]
fn the_chart_example_parses_and_passes_every_rule() {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../charts/champion-operator/examples/wine.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mp: ModelPipeline =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        mp.spec.data.poll_interval,
        std::time::Duration::from_secs(2)
    );
    let e = errors(&serde_json::to_value(mp).expect("serialises"));
    assert!(e.is_empty(), "{e}");
}

/// A finished Job must outlive the poll that judges it: a TTL below a minute is refused by
/// the schema (the API server enforces `minimum`).
#[test]
fn a_finished_job_is_kept_long_enough_to_be_judged() {
    let ttl = &schema()["properties"]["spec"]["properties"]["trainer"]["properties"]["ttlSecondsAfterFinished"];
    assert_eq!(ttl["minimum"].as_f64(), Some(60.0), "{ttl}");
}
