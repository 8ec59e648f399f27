//! The operator deployed the way a user deploys it, once per test: the CRD (server-side apply,
//! shared by every test), then in the test's own namespace the chart rendered by `helm template`
//! (ServiceAccount, namespaced Role/RoleBindings, the operator Deployment restricted to that
//! namespace, and the chart's cluster-scoped aggregate ClusterRoles, named after the namespace and
//! removed with the stage) with a `file://` store on a hostPath directory of its own. [`Stage`] bundles that
//! and the ways a test looks at the result: the pipeline's status, its Jobs, Events and
//! predictor. When a test fails, dropping the stage prints what is needed to see why (pipeline
//! YAML, operator log, trainer logs, Events) before the namespace and the store are removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::{Cluster, FileLock, shared};
use crate::error::{ClusterError, Result};
pub use crate::testing::Reply;
use crate::testing::{TestNamespace, http_request, wait_for};

pub const OPERATOR_IMAGE: &str = "champion/operator:dev";
pub const TRAINER_IMAGE: &str = "champion/trainer-job:dev";
pub const PREDICTOR_IMAGE: &str = "champion/predictor:dev";
/// The Helm release name: the operator's Deployment, ServiceAccount and Role are all `champion`.
pub const RELEASE: &str = "champion";
pub const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=champion-operator,app.kubernetes.io/instance=champion";

/// The workspace root (the parent of this crate). Cargo's runtime CARGO_MANIFEST_DIR comes
/// first: the compiled-in one is not rebuilt when a checkout at another path reuses the shared
/// target directory, so it can name a clone that no longer exists.
pub fn workspace() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .map(Path::to_path_buf)
    .unwrap_or_else(|| PathBuf::from("."))
}

/// Asserts that `status` records a promotion of a model stored at `model_uri`, trained on the
/// data the operator listed.
pub fn assert_first_promotion(status: &Value, model_uri: &str) {
    assert_eq!(str_at(status, "/champion/modelUri"), Some(model_uri));
    assert_eq!(str_at(status, "/lastOutcome"), Some("Promoted"));
    assert_eq!(
        str_at(status, "/champion/dataFingerprint"),
        str_at(status, "/data/fingerprint"),
        "the champion was trained on the data the operator listed: {status}"
    );
}

/// One file of the wine data every suite uses (`data_1.csv`, `data_2.csv`, `test_data.csv`):
/// linfa-datasets' red-wine set as `champion_datasets::wine(2)` cuts it, the same bytes
/// `trainer-job dataset wine --out DIR` writes.
pub fn wine_file(name: &str) -> Result<String> {
    static WINE: std::sync::OnceLock<champion_datasets::WineSplit> = std::sync::OnceLock::new();
    let split = match WINE.get() {
        Some(split) => split,
        None => {
            let split = champion_datasets::wine(2)
                .map_err(|e| ClusterError::Invalid(format!("the wine data: {e}")))?;
            WINE.get_or_init(|| split)
        }
    };
    split.file(name).map(str::to_string).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "no wine file {name:?} (expected data_1.csv, data_2.csv or test_data.csv)"
        ))
    })
}

/// Rows that contradict `csv`: every row twice, each feature nudged by a distinct small factor
/// (so no row is an exact duplicate of another, which the trainer would drop), with its label
/// flipped around the threshold 5 and a fresh Id. Trained on, they outvote the true labels.
pub fn contradicting_rows(csv: &str) -> Result<String> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .ok_or_else(|| ClusterError::Invalid("CSV without a header".into()))?;
    let cols: Vec<&str> = header.split(',').collect();
    let quality = cols.iter().position(|c| *c == "quality");
    let id = cols.iter().position(|c| *c == "Id");
    let (Some(quality), Some(id)) = (quality, id) else {
        return Err(ClusterError::Invalid(format!(
            "expected quality and Id columns in {header}"
        )));
    };
    let mut out = format!("{header}\n");
    for (n, line) in lines.enumerate() {
        for copy in 1..=2u32 {
            let mut cells = Vec::with_capacity(cols.len());
            for (i, cell) in line.split(',').enumerate() {
                let v: f64 = cell.trim().parse().map_err(|_| {
                    ClusterError::Invalid(format!("line {}: {cell:?} is not a number", n + 2))
                })?;
                cells.push(if i == quality {
                    if v > 5.0 { "5".into() } else { "6".into() }
                } else if i == id {
                    format!("{}", 100_000 * copy as usize + n)
                } else {
                    format!("{}", v * (1.0 + 0.001 * f64::from(copy)))
                });
            }
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    Ok(out)
}

/// Applies the CRD (server-side, idempotent, safe from several tests at once) and waits until
/// the API server serves it.
pub fn apply_crd(c: &Cluster) -> Result<()> {
    let crd = workspace().join("crds/modelpipelines.champion.dev.yaml");
    let crd = crd.display().to_string();
    c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=champion-tests",
        "-f",
        &crd,
    ])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/modelpipelines.champion.dev",
        "--timeout=60s",
    ])?;
    Ok(())
}

fn pipeline_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("champion.dev", "v1alpha1", "ModelPipeline"),
        "modelpipelines",
    )
}

/// A directory on the node removed on drop; the data and model stores of one test live in it.
pub struct HostDir {
    pub path: PathBuf,
}

impl HostDir {
    fn create(path: PathBuf) -> Result<HostDir> {
        use std::os::unix::fs::PermissionsExt;
        for sub in ["", "data", "models", "staging"] {
            let d = path.join(sub);
            std::fs::create_dir_all(&d).map_err(ClusterError::io("creating store dir", &d))?;
            // The operator, trainer and predictor run as uid 65532; the test writes as root.
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                .map_err(ClusterError::io("chmod store dir", &d))?;
        }
        Ok(HostDir { path })
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One test's operator: namespace, store and the operator Deployment in it.
/// Field order matters: on drop the diagnostics run first (in `Drop`), then the namespace is
/// deleted, then the store directory removed.
pub struct Stage {
    pub cluster: Cluster,
    pub ns: TestNamespace,
    pub store: HostDir,
    pipelines: Api<DynamicObject>,
    /// `kind/name` of the cluster-scoped objects the chart rendered (deleted on drop).
    cluster_scoped: Vec<String>,
    passed: bool,
    /// The cluster's tests lock, shared (or exclusive for [`Stage::deploy_alone`]); released
    /// after `drop` has cleaned up.
    _lock: FileLock,
}

impl Stage {
    /// Applies the CRD, creates the namespace `<prefix>-<random>` and the store, installs the
    /// operator there and waits until it is Available.
    pub async fn deploy(prefix: &str) -> Result<Stage> {
        Stage::deploy_with(prefix, &[]).await
    }

    /// As [`Stage::deploy`], with extra `--set key=value` chart values.
    pub async fn deploy_with(prefix: &str, values: &[&str]) -> Result<Stage> {
        Stage::deploy_locked(prefix, values, false).await
    }

    /// As [`Stage::deploy`] for a test that disturbs the whole cluster (it restarts the API
    /// server): waits until no other test, in this process or another, holds a Stage, and keeps
    /// every other from starting until this one is dropped.
    pub async fn deploy_alone(prefix: &str) -> Result<Stage> {
        Stage::deploy_locked(prefix, &[], true).await
    }

    async fn deploy_locked(prefix: &str, values: &[&str], alone: bool) -> Result<Stage> {
        let cluster = shared().await?;
        let lock = cluster.tests_lock(alone).await?;
        for image in [OPERATOR_IMAGE, TRAINER_IMAGE, PREDICTOR_IMAGE] {
            if !cluster.has_image(image)? {
                return Err(ClusterError::Invalid(format!(
                    "{image} is not in the cluster: run `make images` and `champion-cluster load-images`"
                )));
            }
        }
        apply_crd(&cluster)?;
        let ns = TestNamespace::create(&cluster, prefix).await?;
        let store = HostDir::create(cluster.layout.host_path_root().join(&ns.name))?;
        let test_data = store.path.join("test_data.csv");
        std::fs::write(&test_data, wine_file("test_data.csv")?)
            .map_err(ClusterError::io("writing", &test_data))?;
        let mut stage = Stage {
            pipelines: Api::namespaced_with(cluster.client.clone(), &ns.name, &pipeline_resource()),
            cluster,
            ns,
            store,
            cluster_scoped: Vec::new(),
            passed: false,
            _lock: lock,
        };
        stage.install_operator(values)?;
        Ok(stage)
    }

    fn install_operator(&mut self, values: &[&str]) -> Result<()> {
        let ns = &self.ns.name;
        let store = self.store.path.display().to_string();
        let mut args: Vec<String> = vec![
            "template".into(),
            RELEASE.into(),
            workspace()
                .join("charts/champion-operator")
                .display()
                .to_string(),
            "--namespace".into(),
            ns.clone(),
        ];
        let mut sets: Vec<String> = vec![
            // Namespaced mode (the chart's default), spelled out: one Role in the test's namespace.
            format!("watchNamespaces[0]={ns}"),
            "logJson=false".into(),
            "readSecrets=false".into(),
            // A replacement pod takes over quickly even when its predecessor died holding it.
            "leaderElection.leaseDurationSeconds=6".into(),
            "leaderElection.retryPeriodSeconds=1".into(),
            "storeVolumes[0].name=store".into(),
            format!("storeVolumes[0].mountPath={store}"),
            format!("storeVolumes[0].hostPath.path={store}"),
        ];
        sets.extend(values.iter().map(|v| v.to_string()));
        for s in sets {
            args.extend(["--set".into(), s]);
        }
        let helm = self.cluster.layout.bin("helm");
        let out = std::process::Command::new(&helm)
            .args(&args)
            .output()
            .map_err(|source| ClusterError::Spawn {
                command: format!("{} template", helm.display()),
                source,
            })?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                command: format!("helm {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        self.cluster_scoped = cluster_scoped_objects(&String::from_utf8_lossy(&out.stdout));
        let manifest = self.store.path.join("operator.yaml");
        std::fs::write(&manifest, &out.stdout).map_err(ClusterError::io("writing", &manifest))?;
        let manifest = manifest.display().to_string();
        self.kubectl(&["apply", "-f", &manifest])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Available",
            &format!("deployment/{RELEASE}"),
            "--timeout=120s",
        ])?;
        Ok(())
    }

    /// kubectl in the test's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.ns.name.as_str()];
        full.extend_from_slice(args);
        self.cluster.kubectl(&full)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    /// Drops a data file into the data prefix: written beside it, then renamed in, so the
    /// operator's listing never sees half a file.
    pub fn put_data(&self, name: &str, content: &str) -> Result<()> {
        let staged = self.store.path.join("staging").join(name);
        std::fs::write(&staged, content).map_err(ClusterError::io("writing", &staged))?;
        let dest = self.store.path.join("data").join(name);
        std::fs::rename(&staged, &dest).map_err(ClusterError::io("renaming into", &dest))
    }

    /// The original wine recipe as a ModelPipeline on this stage's store; `spec` is merged into
    /// the spec one level deep (e.g. `{"trainer": {...}}` replaces the trainer section).
    pub fn pipeline_manifest(&self, name: &str, spec: Value) -> Value {
        let root = self.store.path.display().to_string();
        let mut s = json!({
            "data": {
                "uri": format!("file://{root}/data/"),
                "pollInterval": "2s",
                "target": "quality",
                "positiveAbove": 5,
                "dropColumns": ["Id"],
                "testDataUri": format!("file://{root}/test_data.csv"),
            },
            "modelStore": {"uri": format!("file://{root}/models/")},
            "trainer": {"algorithm": "adaboost", "imagePullPolicy": "IfNotPresent"},
            "predictor": {"replicas": 1, "imagePullPolicy": "IfNotPresent"},
            "volumes": [{"name": "store", "mountPath": root, "hostPath": {"path": root}}],
        });
        if let (Some(base), Value::Object(extra)) = (s.as_object_mut(), spec) {
            for (k, v) in extra {
                base.insert(k, v);
            }
        }
        json!({
            "apiVersion": "champion.dev/v1alpha1",
            "kind": "ModelPipeline",
            "metadata": {"name": name},
            "spec": s,
        })
    }

    /// Creates the pipeline `name` with the wine recipe (see [`Stage::pipeline_manifest`]).
    pub async fn create_pipeline(&self, name: &str, spec: Value) -> Result<()> {
        let obj: DynamicObject = serde_json::from_value(self.pipeline_manifest(name, spec))
            .map_err(|source| ClusterError::Serialize {
                what: "ModelPipeline",
                source,
            })?;
        self.pipelines
            .create(&PostParams::default(), &obj)
            .await
            .map_err(ClusterError::kube(format!(
                "create ModelPipeline {}/{name}",
                self.ns.name
            )))?;
        Ok(())
    }

    pub fn pipelines(&self) -> &Api<DynamicObject> {
        &self.pipelines
    }

    /// The pipeline as JSON (metadata, spec, status), or None once it is gone.
    pub async fn pipeline(&self, name: &str) -> Result<Option<Value>> {
        let obj = self
            .pipelines
            .get_opt(name)
            .await
            .map_err(ClusterError::kube(format!("get ModelPipeline {name}")))?;
        obj.map(|o| {
            serde_json::to_value(o).map_err(|source| ClusterError::Serialize {
                what: "ModelPipeline",
                source,
            })
        })
        .transpose()
    }

    /// The pipeline's status (`{}` while it has none).
    pub async fn status(&self, name: &str) -> Result<Value> {
        Ok(self
            .pipeline(name)
            .await?
            .and_then(|p| p.get("status").cloned())
            .unwrap_or_else(|| json!({})))
    }

    /// Polls the pipeline's status until `check` yields a value, with a deadline.
    pub async fn wait_status<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> Option<T>,
    ) -> Result<T> {
        let what = format!("ModelPipeline {}/{name}: {what}", self.ns.name);
        let check = &check;
        wait_for(&what, timeout, || async move {
            Ok(check(&self.status(name).await?))
        })
        .await
    }

    /// The trainer Jobs of `pipeline`.
    pub async fn jobs(&self, pipeline: &str) -> Result<Vec<Job>> {
        let lp = ListParams::default().labels(&format!(
            "champion.dev/pipeline={pipeline},app.kubernetes.io/component=trainer"
        ));
        Ok(self
            .api::<Job>()
            .list(&lp)
            .await
            .map_err(ClusterError::kube(format!("list Jobs of {pipeline}")))?
            .items)
    }

    /// The Events regarding `pipeline` with `reason`, oldest first, once there is at least one
    /// (or after [`EVENT_GRACE`] with none). The operator sends Events after the status write
    /// they belong to, so a test that has just seen the status must give the first Event time
    /// to arrive; [`Stage::events_now`] is the list as it is this instant.
    pub async fn events(&self, pipeline: &str, reason: &str) -> Result<Vec<Event>> {
        let what = format!("an Event {reason} about {pipeline}");
        let first = crate::testing::wait_for(&what, EVENT_GRACE, || async {
            let events = self.events_now(pipeline, reason).await?;
            Ok((!events.is_empty()).then_some(events))
        })
        .await;
        match first {
            Err(ClusterError::Timeout { .. }) => self.events_now(pipeline, reason).await,
            other => other,
        }
    }

    /// The Events regarding `pipeline` with `reason` this instant, oldest first.
    pub async fn events_now(&self, pipeline: &str, reason: &str) -> Result<Vec<Event>> {
        let list = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::kube("list Events"))?;
        let mut events: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pipeline)
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ModelPipeline")
            })
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        Ok(events)
    }

    /// Waits until an Event `reason` about `pipeline` whose note contains every one of `parts`
    /// exists, and returns it. The operator sends Events after the status write they belong
    /// to, so a test that saw the status must wait for the Event, not read it once.
    pub async fn wait_event(
        &self,
        pipeline: &str,
        reason: &str,
        parts: &[&str],
        timeout: Duration,
    ) -> Result<Event> {
        let what = format!("an Event {reason} about {pipeline} saying {parts:?}");
        crate::testing::wait_for(&what, timeout, || async {
            let events = self.events(pipeline, reason).await?;
            Ok(events.into_iter().find(|e| {
                let note = e.note.as_deref().unwrap_or_default();
                parts.iter().all(|p| note.contains(p))
            }))
        })
        .await
    }

    /// Waits until `pipeline` has a fully promoted champion (rollout finished, condition
    /// Promoted=True/ModelPromoted) other than `not`, and its predictor serves it; returns the
    /// status and the Deployment.
    pub async fn wait_champion(
        &self,
        pipeline: &str,
        not: Option<&str>,
        timeout: Duration,
    ) -> Result<(Value, Deployment)> {
        let status = self
            .wait_status(pipeline, "a promoted champion", timeout, |s| {
                let version = str_at(s, "/champion/version")?;
                let promoted = condition(s, "Promoted")
                    .is_some_and(|c| c["status"] == "True" && c["reason"] == "ModelPromoted");
                (promoted && s.get("rollout").is_none() && Some(version) != not).then(|| s.clone())
            })
            .await?;
        let version = str_at(&status, "/champion/version").unwrap_or_default();
        let deployment = self
            .wait_predictor_serving(pipeline, version, timeout)
            .await?;
        Ok((status, deployment))
    }

    /// `<ClusterIP>:8080` of `pipeline`'s predictor Service.
    pub async fn predictor_service(&self, pipeline: &str) -> Result<String> {
        let services: Api<Service> = self.api();
        let name = format!("{pipeline}-predictor");
        let ip = services
            .get(&name)
            .await
            .map_err(ClusterError::kube(format!(
                "get the predictor Service {name}"
            )))?
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| ClusterError::Invalid(format!("Service {name} has no ClusterIP")))?;
        Ok(format!("{ip}:8080"))
    }

    /// Waits until `pipeline` is Ready=True and asserts its phase is Serving; returns the status.
    pub async fn wait_ready_serving(&self, pipeline: &str, timeout: Duration) -> Result<Value> {
        let ready = self
            .wait_status(pipeline, "Ready=True", timeout, |s| {
                condition_true(s, "Ready").then(|| s.clone())
            })
            .await?;
        assert_eq!(str_at(&ready, "/phase"), Some("Serving"), "{ready}");
        Ok(ready)
    }

    /// The predictor Deployment of `pipeline`, if there is one.
    pub async fn predictor(&self, pipeline: &str) -> Result<Option<Deployment>> {
        self.api::<Deployment>()
            .get_opt(&format!("{pipeline}-predictor"))
            .await
            .map_err(ClusterError::kube(format!(
                "get Deployment {pipeline}-predictor"
            )))
    }

    /// Waits until the predictor Deployment of `pipeline` serves `version` on all its replicas
    /// (rolled out, Available, no old pods left) and returns it.
    pub async fn wait_predictor_serving(
        &self,
        pipeline: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<Deployment> {
        let what = format!("predictor of {pipeline} to serve version {version}");
        wait_for(&what, timeout, || async {
            let Some(d) = self.predictor(pipeline).await? else {
                return Ok(None);
            };
            Ok(deployment_serves(&d, version).then_some(d))
        })
        .await
    }

    /// The IPs of the ready, not-terminating predictor pods of `pipeline` serving `version`.
    pub async fn predictor_ips(&self, pipeline: &str, version: &str) -> Result<Vec<String>> {
        let lp = ListParams::default().labels(&format!(
            "champion.dev/pipeline={pipeline},app.kubernetes.io/component=predictor"
        ));
        let pods = self
            .api::<Pod>()
            .list(&lp)
            .await
            .map_err(ClusterError::kube(format!(
                "list predictor pods of {pipeline}"
            )))?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.annotations()
                    .get("champion.dev/model-version")
                    .map(String::as_str)
                    == Some(version)
            })
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.status.and_then(|s| s.pod_ip))
            .collect())
    }

    /// The running operator pod's name.
    pub async fn operator_pod(&self) -> Result<Option<Pod>> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await
            .map_err(ClusterError::kube("list operator pods"))?;
        Ok(pods
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none()))
    }

    /// Marks the test as passed: no diagnostics on drop.
    pub fn passed(mut self) {
        self.passed = true;
    }

    /// Everything needed to understand a failure, printed to stderr (the test harness shows it
    /// with the failure).
    pub fn dump_diagnostics(&self) {
        let ns = self.ns.name.as_str();
        let sections: [(&str, Vec<&str>); 6] = [
            ("pipelines", vec!["get", "modelpipelines", "-o", "yaml"]),
            (
                "objects",
                vec!["get", "jobs,pods,deployments,services,leases", "-o", "wide"],
            ),
            (
                "events",
                vec![
                    "get",
                    "events.events.k8s.io",
                    "--sort-by=.metadata.creationTimestamp",
                ],
            ),
            (
                "operator log",
                vec![
                    "logs",
                    "-l",
                    OPERATOR_SELECTOR,
                    "--tail=300",
                    "--prefix",
                    "--all-containers",
                ],
            ),
            (
                "trainer logs",
                vec![
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=trainer",
                    "--tail=40",
                    "--prefix",
                    "--max-log-requests=20",
                ],
            ),
            (
                "predictor logs",
                vec![
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=predictor",
                    "--tail=40",
                    "--prefix",
                    "--max-log-requests=20",
                ],
            ),
        ];
        eprintln!("===== diagnostics of namespace {ns} =====");
        for (title, args) in sections {
            let mut full = vec!["-n", ns];
            full.extend(args);
            match self.cluster.kubectl(&full) {
                Ok(out) => eprintln!("----- {title} -----\n{out}"),
                Err(e) => eprintln!("----- {title} -----\n(unavailable: {e})"),
            }
        }
        eprintln!("===== end of diagnostics of {ns} =====");
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.passed {
            self.dump_diagnostics();
        }
        // Deleting the namespace does not remove what the chart made outside it.
        if !self.cluster_scoped.is_empty() {
            let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
            args.extend(self.cluster_scoped.iter().map(String::as_str));
            if let Err(e) = self.cluster.kubectl(&args) {
                eprintln!("cleanup: deleting {:?}: {e}", self.cluster_scoped);
            }
        }
    }
}

/// `kind/name` of every cluster-scoped object (ClusterRole, ClusterRoleBinding) in a rendered
/// manifest.
pub fn cluster_scoped_objects(manifest: &str) -> Vec<String> {
    manifest
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter_map(|v| {
            let kind = v["kind"].as_str()?;
            let name = v["metadata"]["name"].as_str()?;
            matches!(kind, "ClusterRole" | "ClusterRoleBinding")
                .then(|| format!("{}/{name}", kind.to_lowercase()))
        })
        .collect()
}

/// True when `d` has rolled out the pod template of `version` to all its replicas and they are
/// available.
pub fn deployment_serves(d: &Deployment, version: &str) -> bool {
    let template_version = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("champion.dev/model-version"));
    if template_version.map(String::as_str) != Some(version) {
        return false;
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    let available = st.conditions.as_ref().is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    });
    available
        && st.observed_generation == d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
}

/// The `MODEL_URI` the predictor container of `d` is given.
pub fn model_uri_of(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "predictor")?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == "MODEL_URI")?
        .value
        .clone()
}

/// The condition `type_` of a status, if present.
pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// True when condition `type_` is "True".
pub fn condition_true(status: &Value, type_: &str) -> bool {
    condition(status, type_)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// A string at a JSON pointer (`/champion/version`).
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The history entries of a status.
pub fn history(status: &Value) -> Vec<Value> {
    status
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// How long [`Stage::events`] waits for the first Event of a kind.
pub const EVENT_GRACE: Duration = Duration::from_secs(15);

/// One row of a CSV as a `/predict` request: every column but `skip` by header name.
pub fn csv_row_as_request(csv: &str, row: usize, skip: &[&str]) -> Result<Value> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| ClusterError::Invalid("CSV without a header".into()))?
        .split(',')
        .collect();
    let line = lines
        .nth(row)
        .ok_or_else(|| ClusterError::Invalid(format!("CSV has no data row {row}")))?;
    let mut obj = serde_json::Map::new();
    for (name, cell) in header.iter().zip(line.split(',')) {
        if skip.contains(name) {
            continue;
        }
        let v: f64 = cell.trim().parse().map_err(|_| {
            ClusterError::Invalid(format!(
                "CSV row {row}, column {name}: {cell:?} is not a number"
            ))
        })?;
        obj.insert(name.to_string(), json!(v));
    }
    Ok(Value::Object(obj))
}

/// One POST with a JSON body from the test process (pod IPs are local on the node).
pub async fn http_post_json(host_port: &str, path: &str, body: &Value) -> Result<Reply> {
    let payload = body.to_string();
    http_request(
        host_port,
        "POST",
        path,
        Some(("application/json", payload.as_bytes())),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cluster_scoped_objects_of_a_manifest_are_listed_for_removal() {
        let manifest = "---\n# Source: x\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n\
                        ---\nkind: ClusterRole\nmetadata:\n  name: champion-ns-a-view\n\
                        ---\nkind: Role\nmetadata:\n  name: champion\n\
                        ---\nkind: ClusterRoleBinding\nmetadata:\n  name: champion-ns-a\n";
        assert_eq!(
            cluster_scoped_objects(manifest),
            vec![
                "clusterrole/champion-ns-a-view".to_string(),
                "clusterrolebinding/champion-ns-a".to_string()
            ]
        );
    }

    #[test]
    fn a_csv_row_becomes_a_request_without_the_skipped_columns() {
        let csv = "a,quality,b,Id\n1,5,2.5,0\n3,6,4,1\n";
        let req = csv_row_as_request(csv, 1, &["quality", "Id"]).expect("row parses");
        assert_eq!(req, json!({"a": 3.0, "b": 4.0}));
        assert!(csv_row_as_request(csv, 2, &[]).is_err());
        assert!(csv_row_as_request("a\nx\n", 0, &[]).is_err());
    }

    #[test]
    fn a_deployment_serves_a_version_only_when_fully_rolled_out() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "p", "generation": 2},
            "spec": {
                "replicas": 1,
                "selector": {},
                "template": {"metadata": {"annotations": {"champion.dev/model-version": "v1"}}}
            },
            "status": {
                "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}]
            }
        }))
        .expect("fixture parses");
        assert!(deployment_serves(&d, "v1"));
        assert!(!deployment_serves(&d, "v2"));
        if let Some(s) = d.status.as_mut() {
            s.replicas = Some(2); // an old pod still around
        }
        assert!(!deployment_serves(&d, "v1"));
    }
}
