//! The documentation, run as written on the real local cluster: the README's quick start (the
//! shell block under its `quick-start` marker, executed by bash unchanged: CRD, `helm install`
//! of the chart with its `storeVolumes`, the wine data written by `trainer-job dataset wine`,
//! `kubectl apply -f examples/wine.yaml`, `kubectl wait … Promoted`), then every other example
//! in `examples/` applied with `kubectl apply -f` as its header says — the S3 one on a moto
//! server with its Secret — and each must reach `Promoted` before a deadline. What each example
//! is for is checked on the model it produced (six grades for the multi-class one, the
//! parameters for the forest, the bucket for S3).
//!
//! The quick start installs an operator into `champion-system` that watches `default` and uses
//! the node's `/var/champion`, as a user would; everything is removed again
//! when the test ends, also on failure. It is one test, so nothing else in this binary runs
//! beside that operator (cargo runs test binaries one after another).
//!
//! Needs `make test-images` (the images and a `trainer-job`), `make test-deps` (moto) and the
//! cluster. Run: `cargo test -p champion-tests --test examples_e2e`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use champion_tests::cluster::Cluster;
use champion_tests::moto::{self, Moto};
use champion_tests::operator::{
    OPERATOR_IMAGE, PREDICTOR_IMAGE, TRAINER_IMAGE, apply_crd, condition_true, history, str_at,
    wine_file, workspace,
};
use champion_tests::testing::wait_for;
use champion_tests::{ClusterError, Result, shared};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

/// Deadline of each pipeline's first promotion (training and rollout take seconds here).
const WAIT: Duration = Duration::from_secs(300);
/// The store every `file://` example names, on the node.
const STORE: &str = "/var/champion";
/// Written into [`STORE`] by this test: a directory with it is one this test may remove.
const MARKER: &str = ".created-by-champion-examples-e2e";
const NAMESPACE: &str = "default";
const OPERATOR_NAMESPACE: &str = "champion-system";
/// Where the quick start writes the data (its `trainer-job dataset wine --out`).
const QUICK_START_DATA: &str = "/tmp/wine";
/// Every example: (file, pipeline name).
const EXAMPLES: [(&str, &str); 4] = [
    ("examples/wine.yaml", "wine"),
    ("examples/wine-multiclass.yaml", "wine-multiclass"),
    ("examples/wine-forest-params.yaml", "wine-forest"),
    ("examples/wine-s3.yaml", "wine-s3"),
];
const S3_SECRET: &str = "wine-s3-credentials";
const S3_BUCKET: &str = "champion-examples";
const README_MARKER: &str = "<!-- quick-start: run by tests/tests/examples_e2e.rs -->";

/// The shell block that follows the quick-start marker in the README.
fn quick_start_block(readme: &str) -> Result<String> {
    let after = readme
        .split_once(README_MARKER)
        .map(|(_, rest)| rest)
        .ok_or_else(|| ClusterError::Invalid(format!("README.md has no {README_MARKER}")))?;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .ok_or_else(|| ClusterError::Invalid("a ```sh block must follow the marker".into()))?;
    let (block, _) = body
        .split_once("\n```")
        .ok_or_else(|| ClusterError::Invalid("the quick-start block is not closed".into()))?;
    Ok(block.to_string())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(ClusterError::io("reading", path))
}

/// The binaries of `make test`'s one workspace build (`make test-images`; the quick start puts
/// them on PATH for `trainer-job`).
fn binaries_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("debug")
}

/// Everything the test leaves on the cluster and the node, removed on drop in dependency order
/// (pipelines while their operator still runs, then the operator, then the files), with the
/// state printed first when the test failed.
struct Installed {
    cluster: Cluster,
    passed: bool,
}

impl Installed {
    fn kubectl(&self, args: &[&str]) -> std::result::Result<String, String> {
        self.cluster.kubectl(args).map_err(|e| e.to_string())
    }

    fn helm(&self, args: &[&str]) -> std::result::Result<(), String> {
        let out = Command::new(self.cluster.layout.bin("helm"))
            .args(args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Removes everything a run of this test (this one or an interrupted earlier one) made.
    fn clean(&self) {
        let names: Vec<&str> = EXAMPLES.iter().map(|(_, name)| *name).collect();
        let mut args = vec![
            "-n",
            NAMESPACE,
            "delete",
            "modelpipelines.champion.dev",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ];
        args.extend(&names);
        for (what, result) in [
            ("deleting the example pipelines", self.kubectl(&args)),
            (
                "deleting the S3 Secret",
                self.kubectl(&[
                    "-n",
                    NAMESPACE,
                    "delete",
                    "secret",
                    S3_SECRET,
                    "--ignore-not-found",
                ]),
            ),
        ] {
            if let Err(e) = result {
                eprintln!("cleanup: {what}: {e}");
            }
        }
        if self
            .kubectl(&["get", "namespace", OPERATOR_NAMESPACE])
            .is_ok()
        {
            if let Err(e) = self.helm(&[
                "uninstall",
                "champion",
                "-n",
                OPERATOR_NAMESPACE,
                "--wait",
                "--timeout",
                "120s",
            ]) {
                eprintln!("cleanup: helm uninstall: {e}");
            }
            if let Err(e) = self.kubectl(&[
                "delete",
                "namespace",
                OPERATOR_NAMESPACE,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ]) {
                eprintln!("cleanup: deleting namespace {OPERATOR_NAMESPACE}: {e}");
            }
        }
        if Path::new(STORE).join(MARKER).is_file()
            && let Err(e) = std::fs::remove_dir_all(STORE)
        {
            eprintln!("cleanup: removing {STORE}: {e}");
        }
        let _ = std::fs::remove_dir_all(QUICK_START_DATA);
    }

    fn dump_diagnostics(&self) {
        let sections: [(&str, Vec<&str>); 5] = [
            (
                "pipelines",
                vec!["-n", NAMESPACE, "get", "modelpipelines", "-o", "yaml"],
            ),
            (
                "objects",
                vec![
                    "-n",
                    NAMESPACE,
                    "get",
                    "jobs,pods,deployments",
                    "-o",
                    "wide",
                ],
            ),
            (
                "events",
                vec![
                    "-n",
                    NAMESPACE,
                    "get",
                    "events.events.k8s.io",
                    "--sort-by=.metadata.creationTimestamp",
                ],
            ),
            (
                "operator",
                vec![
                    "-n",
                    OPERATOR_NAMESPACE,
                    "logs",
                    "deployment/champion",
                    "--tail=200",
                ],
            ),
            (
                "trainer logs",
                vec![
                    "-n",
                    NAMESPACE,
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=trainer",
                    "--tail=40",
                    "--prefix",
                    "--max-log-requests=20",
                ],
            ),
        ];
        eprintln!("===== diagnostics of the examples =====");
        for (title, args) in sections {
            match self.kubectl(&args) {
                Ok(out) => eprintln!("----- {title} -----\n{out}"),
                Err(e) => eprintln!("----- {title} -----\n(unavailable: {e})"),
            }
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.passed {
            self.dump_diagnostics();
        }
        self.clean();
    }
}

/// Waits until pipeline `name` has condition Promoted=True; returns its status.
async fn wait_promoted(pipelines: &Api<DynamicObject>, name: &str) -> Result<Value> {
    wait_for(
        &format!("ModelPipeline {NAMESPACE}/{name} to be Promoted"),
        WAIT,
        || async move {
            let Some(obj) = pipelines
                .get_opt(name)
                .await
                .map_err(ClusterError::kube(format!("get ModelPipeline {name}")))?
            else {
                return Ok(None);
            };
            let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
            Ok(condition_true(&status, "Promoted").then_some(status))
        },
    )
    .await
}

/// The champion's report.json, read from the `file://` version directory the status names.
fn file_report(status: &Value) -> Result<Value> {
    let uri = str_at(status, "/champion/modelUri").unwrap_or_default();
    let dir = uri.strip_prefix("file://").ok_or_else(|| {
        ClusterError::Invalid(format!("the champion's model URI {uri:?} is not file://"))
    })?;
    let path = Path::new(dir).join("report.json");
    serde_json::from_str(&read(&path)?).map_err(|source| ClusterError::Serialize {
        what: "report.json",
        source,
    })
}

fn first_outcome(status: &Value) -> String {
    history(status)
        .first()
        .and_then(|e| e.get("outcome"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_chart_points_at_the_examples_and_its_copy_of_wine_is_the_same() -> Result<()> {
    let root = workspace();
    let chart_copy = read(&root.join("charts/champion-operator/examples/wine.yaml"))?;
    let original = read(&root.join("examples/wine.yaml"))?;
    let body: String = chart_copy
        .lines()
        .skip_while(|l| l.starts_with("# A copy") || l.starts_with("# every example"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body, original,
        "the chart's wine.yaml is examples/wine.yaml"
    );
    // The chart README's install command is the quick start's, which this suite runs.
    let chart_readme = read(&root.join("charts/champion-operator/README.md"))?;
    let block = quick_start_block(&read(&root.join("README.md"))?)?;
    let install = chart_readme
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(cmd, _)| cmd.to_string())
        .ok_or_else(|| ClusterError::Invalid("the chart README has no ```sh block".into()))?;
    assert!(
        block.contains(&install),
        "the chart README's command is in the README's quick start:\n{install}\n---\n{block}"
    );
    assert!(
        chart_readme.contains("`examples/`"),
        "the chart README points at examples/"
    );
    for (file, _) in EXAMPLES {
        assert!(root.join(file).is_file(), "{file} exists");
    }
    Ok(())
}

#[tokio::test]
async fn the_readme_quick_start_and_every_example_reach_promoted() -> Result<()> {
    let cluster = shared().await?;
    for image in [OPERATOR_IMAGE, TRAINER_IMAGE, PREDICTOR_IMAGE] {
        if !cluster.has_image(image)? {
            return Err(ClusterError::Invalid(format!(
                "{image} is not in the cluster: run `make images` and `champion-cluster load-images`"
            )));
        }
    }
    let binaries = binaries_dir();
    if !binaries.join("trainer-job").is_file() {
        return Err(ClusterError::Invalid(format!(
            "{} is missing: run `make test-images`",
            binaries.join("trainer-job").display()
        )));
    }
    let store = Path::new(STORE);
    if store.exists() && !store.join(MARKER).is_file() {
        return Err(ClusterError::Invalid(format!(
            "{STORE} exists and was not made by this test; the examples use it as their store, \
             so move it away to run this test"
        )));
    }
    let mut installed = Installed {
        cluster: cluster.clone(),
        passed: false,
    };
    // What an interrupted earlier run may have left.
    installed.clean();
    apply_crd(&cluster)?; // waits until the CRD is served; the quick start applies it again
    std::fs::create_dir_all(store).map_err(ClusterError::io("creating", store))?;
    std::fs::write(store.join(MARKER), "").map_err(ClusterError::io("marking", store))?;

    // The README's quick start, as written.
    let root = workspace();
    let block = quick_start_block(&read(&root.join("README.md"))?)?;
    let path = format!(
        "{}:{}:{}",
        cluster
            .layout
            .bin("kubectl")
            .parent()
            .unwrap_or(Path::new("/"))
            .display(),
        binaries.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euxo", "pipefail", "-c", &block])
        .current_dir(&root)
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .map_err(|source| ClusterError::Spawn {
            command: "bash -c <the README's quick start>".into(),
            source,
        })?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the quick start failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("condition met"),
        "kubectl wait reported the promotion:\n{stdout}"
    );

    let pipelines: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        NAMESPACE,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("champion.dev", "v1alpha1", "ModelPipeline"),
            "modelpipelines",
        ),
    );
    let wine = wait_promoted(&pipelines, "wine").await?;
    assert_eq!(first_outcome(&wine), "Promoted", "{wine}");
    let report = file_report(&wine)?;
    assert_eq!(
        report["classLabels"],
        serde_json::json!(["0", "1"]),
        "{report}"
    );
    assert_eq!(
        report["rows"]["holdout"], 533,
        "the fixed test set: {report}"
    );

    // The S3 example: moto on the node address, the bucket and data, and its Secret.
    let moto = Moto::start().await?;
    moto.create_bucket(S3_BUCKET).await?;
    let (key_id, secret_key) = (
        format!("AKIA{}", moto::token(16).to_ascii_uppercase()),
        moto::token(32),
    );
    let bucket = moto.store(&format!("s3://{S3_BUCKET}/"), &key_id, &secret_key)?;
    for (key, file) in [
        ("wine/data/data_1.csv", "data_1.csv"),
        ("wine/data/data_2.csv", "data_2.csv"),
        ("wine/test_data.csv", "test_data.csv"),
    ] {
        moto::put(&bucket, key, wine_file(file)?).await?;
    }
    let mut secret = Secret::default();
    secret.metadata.name = Some(S3_SECRET.into());
    secret.string_data = Some(moto.options(&key_id, &secret_key).into_iter().collect());
    Api::<Secret>::namespaced(cluster.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(ClusterError::kube(format!("create Secret {S3_SECRET}")))?;

    // Every other example, applied as its header says.
    for (file, _) in &EXAMPLES[1..] {
        cluster.kubectl(&[
            "-n",
            NAMESPACE,
            "apply",
            "-f",
            &root.join(file).display().to_string(),
        ])?;
    }
    let multiclass = wait_promoted(&pipelines, "wine-multiclass").await?;
    assert_eq!(first_outcome(&multiclass), "Promoted", "{multiclass}");
    let report = file_report(&multiclass)?;
    assert_eq!(
        report["classLabels"],
        serde_json::json!(["3", "4", "5", "6", "7", "8"]),
        "the grades are the classes: {report}"
    );
    assert_eq!(report["metric"], "f1Weighted", "{report}");

    let forest = wait_promoted(&pipelines, "wine-forest").await?;
    assert_eq!(first_outcome(&forest), "Promoted", "{forest}");
    let report = file_report(&forest)?;
    assert_eq!(report["algorithm"], "random-forest", "{report}");
    for (key, value) in [
        ("n_estimators", "200"),
        ("max_depth", "8"),
        ("max_features", "4"),
    ] {
        assert_eq!(
            report["params"][key], value,
            "the example's {key}: {report}"
        );
    }

    let s3 = match wait_promoted(&pipelines, "wine-s3").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("----- moto log -----\n{}", moto.log_tail(60));
            return Err(e);
        }
    };
    assert_eq!(first_outcome(&s3), "Promoted", "{s3}");
    let model_uri = str_at(&s3, "/champion/modelUri").unwrap_or_default();
    let key = model_uri
        .strip_prefix(&format!("s3://{S3_BUCKET}/"))
        .ok_or_else(|| {
            ClusterError::Invalid(format!("the champion {model_uri:?} is in the bucket"))
        })?;
    for file in ["model.json", "report.json"] {
        assert!(
            moto::exists(&bucket, &format!("{key}{file}")).await?,
            "{model_uri}{file} is in the bucket"
        );
    }

    installed.passed = true;
    Ok(())
}
