//! The `ModelPipeline` custom resource (`champion.dev/v1alpha1`).
//!
//! These types are the source of truth for `crds/modelpipelines.champion.dev.yaml` (printed by the
//! `crdgen` binary). Doc comments on fields are what `kubectl explain modelpipeline.spec...`
//! prints, so they are written for the user of the resource, not for the reader of the code.
//! Validation lives next to the field it guards: OpenAPI bounds where a bound is enough, CEL
//! (`x-kubernetes-validations`) for exclusive ranges and cross-field rules.

use std::collections::BTreeMap;

pub use champion_model::{Algorithm, MetricName as Metric};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every champion resource.
pub const GROUP: &str = "champion.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "champion.dev/operator";

/// Label set on everything the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "champion";
/// Label naming the pipeline an object belongs to (value: pipeline name).
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Label naming the pipeline an object belongs to, in champion's own namespace of keys.
pub const LABEL_PIPELINE: &str = "champion.dev/pipeline";
/// Label naming the model version a Job trains or a predictor serves.
pub const LABEL_MODEL_VERSION: &str = "champion.dev/model-version";
/// Label on trainer Jobs and their pods, so selectors can tell them from predictor pods.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Annotation on a ModelPipeline that forces a training run even when the data did not change.
/// Each new value forces one run; the value last acted upon is kept in `status.lastForcedRun`.
pub const ANNOTATION_FORCE_RUN: &str = "champion.dev/force-run";
/// Annotation on a ModelPipeline that rolls the predictor back to a version from
/// `status.history`. Acted upon once per value; the value is kept in `status.lastRollbackTo`.
pub const ANNOTATION_ROLLBACK_TO: &str = "champion.dev/rollback-to";
/// Annotation on a ModelPipeline that approves the challenger waiting for approval
/// (`spec.promotion.approval`), named by its version. Acted upon once per value; the value is
/// kept in `status.lastApprove`.
pub const ANNOTATION_APPROVE: &str = "champion.dev/approve";
/// Annotation on a ModelPipeline that rejects the challenger waiting for approval, named by its
/// version. Acted upon once per value; the value is kept in `status.lastReject`.
pub const ANNOTATION_REJECT: &str = "champion.dev/reject";
/// Optional annotation naming who asked for an approve or reject, used in `status.history[].by`
/// when the pipeline's managedFields do not say which field manager set the request.
pub const ANNOTATION_REQUESTED_BY: &str = "champion.dev/requested-by";
/// Annotation on Jobs and Deployments: the data fingerprint the model was trained on.
pub const ANNOTATION_DATA_FINGERPRINT: &str = "champion.dev/data-fingerprint";
/// Annotation on Deployments (and their pod template): the model version served.
pub const ANNOTATION_MODEL_VERSION: &str = "champion.dev/model-version";
/// Annotation on Deployments: the model URI served.
pub const ANNOTATION_MODEL_URI: &str = "champion.dev/model-uri";

/// Condition types written to `status.conditions`.
pub mod condition {
    /// The champion's predictor is serving and no rollout is pending.
    pub const READY: &str = "Ready";
    /// The last listing of `spec.data.uri` succeeded and found at least one object.
    pub const DATA_AVAILABLE: &str = "DataAvailable";
    /// A trainer Job is running.
    pub const TRAINING: &str = "Training";
    /// A champion has been promoted and its predictor rolled out.
    pub const PROMOTED: &str = "Promoted";
    /// Something needs attention: a failed run, a failed rollout, unreadable data.
    pub const DEGRADED: &str = "Degraded";
    /// Live analysis (spec.rollout Shadow or Canary): True while a challenger is judged on
    /// live traffic; False with reason LiveAnalysisPassed, LiveAnalysisFailed or
    /// InsufficientTraffic once it ended.
    pub const LIVE_ANALYSIS: &str = "LiveAnalysis";
    /// A challenger passed the offline gate and waits for `champion.dev/approve` or
    /// `champion.dev/reject` (`spec.promotion.approval`).
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
}

/// A ModelPipeline keeps a model fresh: it watches a data location, trains a challenger in a
/// Job when the data changes, promotes it only when it beats the champion on the same held-out
/// data, and rolls the predictor Deployment to the winner.
// Every printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "champion.dev",
    version = "v1alpha1",
    kind = "ModelPipeline",
    plural = "modelpipelines",
    singular = "modelpipeline",
    shortname = "mlp",
    namespaced,
    status = "ModelPipelineStatus",
    derive = "PartialEq",
    doc = "A ModelPipeline trains a challenger model when new data arrives, promotes it only when it beats the champion, and serves the champion from a predictor Deployment.",
    category = "champion",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the champion's predictor serves with no rollout pending"
    ),
    printcolumn(
        name = "Champion",
        type_ = "string",
        json_path = ".status.champion.version",
        description = "Model version the predictor serves"
    ),
    printcolumn(
        name = "Score",
        type_ = "number",
        json_path = ".status.champion.score",
        description = "Champion score on its evaluation metric"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "What the pipeline is doing"
    ),
    printcolumn(
        name = "Last",
        type_ = "string",
        json_path = ".status.lastOutcome",
        description = "Outcome of the last training run"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        description = "The Ready condition's message"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        priority = 1,
        json_path = ".status.address.url",
        description = "In-cluster URL of the predictor Service"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.rollout) || !has(self.rollout.analysis) || !has(self.rollout.analysis.online) || !has(self.predictor) || !has(self.predictor.feedbackCapacity) || self.predictor.feedbackCapacity > 0", "message": "rollout.analysis.online needs the predictors' feedback: predictor.feedbackCapacity must be more than 0"}
]))]
pub struct ModelPipelineSpec {
    /// Where the training data lives and how often to look at it.
    pub data: DataSpec,
    /// Where trained models are written: `<modelStore.uri>/<namespace>/<pipeline>/<version>/`.
    pub model_store: ModelStoreSpec,
    /// The trainer Job: image, algorithm and the Job's limits.
    #[serde(default)]
    pub trainer: TrainerSpec,
    /// How a challenger is scored against the champion.
    #[serde(default)]
    pub evaluation: EvaluationSpec,
    /// When a challenger replaces the champion.
    #[serde(default)]
    pub promotion: PromotionSpec,
    /// The predictor Deployment and Service that serve the champion.
    #[serde(default)]
    pub predictor: PredictorSpec,
    /// How a promoted challenger reaches live traffic: at once (`Replace`), after a shadow run
    /// on mirrored requests (`Shadow`) or in canary steps (`Canary`), and the live analysis
    /// that judges it.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// What starts a training run besides new data.
    #[serde(default)]
    pub trigger: TriggerSpec,
    /// Volumes mounted into trainer Jobs and predictor pods at the same path, for `file://`
    /// data and model stores. The operator reads a `file://` store itself, so it must have
    /// the same volume mounted at the same path (see the Helm chart's `storeVolumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volumes: Vec<StoreVolume>,
    /// How many entries `status.history` keeps (oldest dropped first), 1 to 100.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
    /// Stop launching training runs and promotions. A running Job is left to finish; its
    /// result is evaluated when the pipeline is resumed. The predictor keeps serving.
    #[serde(default)]
    pub suspend: bool,
}

/// Training data: CSV files with a header row under a URI prefix.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "duration(self.pollInterval) >= duration('1s')", "message": "pollInterval must be at least 1s"},
    {"rule": "!has(self.dropColumns) || !self.dropColumns.exists(c, c == self.target)", "message": "dropColumns must not contain the target column"},
    {"rule": "!has(self.testDataUri) || self.testDataUri != self.uri", "message": "testDataUri must differ from uri"}
]))]
pub struct DataSpec {
    /// URI prefix of the training CSV files: file:///abs/dir/, s3://bucket/prefix/, gs://,
    /// az://, or http(s)://. Every object under the prefix is training data.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(file|s3|gs|az|abfs|abfss|http|https)://")
    )]
    pub uri: String,
    /// How often the data prefix is listed to detect new data, as a Go duration ("30s", "2m").
    /// At least 1s.
    #[serde(default = "default_poll_interval")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
    )]
    pub poll_interval: Duration,
    /// Name of the target (label) column in the CSV header.
    #[schemars(length(min = 1, max = 128))]
    pub target: String,
    /// Optional fixed test set, scored instead of a holdout split from the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(file|s3|gs|az|abfs|abfss|http|https)://")
    )]
    pub test_data_uri: Option<String>,
    /// Binarise the target: values above this number are the positive class, the rest the
    /// negative class (the wine system uses 5: quality > 5 is "good").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_above: Option<f64>,
    /// Columns ignored by training (for example an Id column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub drop_columns: Vec<String>,
    /// Secret with the store credentials as environment-style keys (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP, ...), in the
    /// pipeline's namespace. Trainer Jobs get it as environment; the operator reads it to list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Where trained models are stored.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStoreSpec {
    /// URI prefix under which each model version gets a directory
    /// `<uri>/<namespace>/<pipeline>/<version>/` holding model.json and report.json.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(file|s3|gs|az|abfs|abfss|http|https)://")
    )]
    pub uri: String,
    /// Secret with the store credentials (same keys as `data.secretRef`). Trainer Jobs and
    /// predictor pods get it as environment; the operator reads it to fetch report.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// A reference to a Secret in the pipeline's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A volume carrying a `file://` store, mounted at `mountPath` in trainer and predictor pods.
/// Exactly one of `persistentVolumeClaim` and `hostPath` is set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.persistentVolumeClaim) != has(self.hostPath)", "message": "set exactly one of persistentVolumeClaim and hostPath"}
]))]
pub struct StoreVolume {
    /// Volume name inside the pods (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Absolute path the volume is mounted at; `file://` URIs refer to paths under it.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub mount_path: String,
    /// A PersistentVolumeClaim in the pipeline's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimVolume>,
    /// A directory on the node (single-node and test clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolume>,
}

/// A PersistentVolumeClaim used as a store volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimVolume {
    /// Name of the claim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// A node directory used as a store volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolume {
    /// Absolute directory on the node; created when missing.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: String,
}

/// The trainer Job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = param_keys_rule)]
pub struct TrainerSpec {
    /// Trainer image; its entrypoint must accept the trainer contract's `train` arguments.
    #[serde(default = "default_trainer_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Image pull policy of the trainer container.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Classifier to fit.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Algorithm parameters passed as `--param key=value`, for example `n_estimators: "50"`.
    /// Keys per algorithm: adaboost: n_estimators, learning_rate, max_depth, tree; logistic:
    /// alpha, max_iterations, gradient_tolerance; random-forest: n_estimators, max_depth,
    /// max_features; gaussian-nb: var_smoothing. Any other key is refused when the pipeline
    /// is applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub params: BTreeMap<String, String>,
    /// CPU and memory requests and limits of the trainer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Seconds a training run may take before Kubernetes stops it (Job activeDeadlineSeconds).
    #[serde(default = "default_active_deadline_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub active_deadline_seconds: i64,
    /// Pod retries inside one training run (Job backoffLimit), 0 to 10.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Seconds a finished trainer Job is kept before Kubernetes deletes it, at least 60: the
    /// operator judges a run from its finished Job, which must still be there when it looks.
    #[serde(default = "default_ttl_seconds_after_finished")]
    #[schemars(range(min = 60, max = 604800))]
    pub ttl_seconds_after_finished: i32,
}

/// The CEL rule that refuses `params` keys the chosen algorithm does not accept, generated
/// from [`Algorithm::param_keys`] so the CRD and the trainer cannot disagree.
fn param_keys_rule(schema: &mut schemars::Schema) {
    let per_algorithm: Vec<String> = Algorithm::ALL
        .iter()
        .map(|a| {
            let keys: Vec<String> = a.param_keys().iter().map(|k| format!("'{k}'")).collect();
            format!(
                "(self.algorithm == '{}' && self.params.all(k, k in [{}]))",
                a.as_str(),
                keys.join(", ")
            )
        })
        .collect();
    let message: Vec<String> = Algorithm::ALL
        .iter()
        .map(|a| format!("{}: {}", a.as_str(), a.param_keys().join(", ")))
        .collect();
    let rule = serde_json::json!({
        "rule": format!("!has(self.params) || {}", per_algorithm.join(" || ")),
        "message": format!("params has a key the algorithm does not accept; accepted keys: {}", message.join("; ")),
    });
    if let Some(obj) = schema.as_object_mut() {
        let rules = obj
            .entry("x-kubernetes-validations")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(list) = rules.as_array_mut() {
            list.push(rule);
        }
    }
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            image: default_trainer_image(),
            image_pull_policy: PullPolicy::default(),
            algorithm: Algorithm::default(),
            params: BTreeMap::new(),
            resources: None,
            active_deadline_seconds: default_active_deadline_seconds(),
            backoff_limit: 0,
            ttl_seconds_after_finished: default_ttl_seconds_after_finished(),
        }
    }
}

/// Container image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// How challenger and champion are scored.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.holdoutFraction > 0.0 && self.holdoutFraction < 1.0", "message": "holdoutFraction must be greater than 0 and less than 1"}
]))]
pub struct EvaluationSpec {
    /// Metric compared between challenger and champion (trainer `--metric`).
    #[serde(default)]
    pub metric: Metric,
    /// Share of the rows held out for scoring, strictly between 0 and 1. A row's side is a
    /// function of its content, so champion and challenger are scored on the same rows.
    #[serde(default = "default_holdout_fraction")]
    pub holdout_fraction: f64,
    /// Seed of the trainer's random number generator.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        Self {
            metric: Metric::default(),
            holdout_fraction: default_holdout_fraction(),
            seed: default_seed(),
        }
    }
}

/// When a challenger becomes the champion.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minScore >= 0.0 && self.minScore <= 1.0", "message": "minScore must be between 0 and 1"},
    {"rule": "self.minImprovement >= 0.0 && self.minImprovement < 1.0", "message": "minImprovement must be at least 0 and less than 1"},
    {"rule": "self.minScore + self.minImprovement <= 1.0", "message": "minScore + minImprovement must not exceed 1, or no challenger could ever win"},
    {"rule": "self.borderlineBand >= 0.0 && self.borderlineBand <= 1.0", "message": "borderlineBand must be between 0 and 1"}
]))]
pub struct PromotionSpec {
    /// The challenger must beat the champion's score on the same holdout by more than this
    /// margin, so noise does not swap champions. 0 means "strictly better".
    #[serde(default)]
    pub min_improvement: f64,
    /// Absolute floor: a challenger scoring below it is never promoted, 0 to 1.
    #[serde(default)]
    pub min_score: f64,
    /// What happens to the first model, when there is no champion yet.
    #[serde(default)]
    pub first_model: FirstModelPolicy,
    /// Seconds a predictor rollout may go without progress before it is reverted to the
    /// previous champion (the Deployment's progressDeadlineSeconds).
    #[serde(default = "default_rollout_deadline_seconds")]
    #[schemars(range(min = 10, max = 3600))]
    pub rollout_deadline_seconds: i32,
    /// Whether a challenger that passed the offline gate needs a person's approval:
    /// `Automatic` (never), `Manual` (always) or `Borderline` (only when its score is within
    /// `borderlineBand` of the champion's). A waiting challenger shows the condition
    /// AwaitingApproval; annotate the pipeline `champion.dev/approve=<version>` or
    /// `champion.dev/reject=<version>`.
    #[serde(default)]
    pub approval: Approval,
    /// With `approval: Borderline`: a challenger whose score exceeds the champion's by less
    /// than this waits for approval, 0 to 1.
    #[serde(default = "default_borderline_band")]
    pub borderline_band: f64,
}

impl Default for PromotionSpec {
    fn default() -> Self {
        Self {
            min_improvement: 0.0,
            min_score: 0.0,
            first_model: FirstModelPolicy::default(),
            rollout_deadline_seconds: default_rollout_deadline_seconds(),
            approval: Approval::default(),
            borderline_band: default_borderline_band(),
        }
    }
}

/// Who lets a challenger that passed the offline gate go on.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Approval {
    /// Go on at once.
    #[default]
    Automatic,
    /// Every challenger that passes waits for `champion.dev/approve=<version>`.
    Manual,
    /// Only challengers within `borderlineBand` of the champion's score wait.
    Borderline,
}

/// How a promoted challenger reaches live traffic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `Replace` (default): roll the predictor Deployment to the challenger at once.
    /// `Shadow`: run the challenger beside the champion on a copy of live requests first.
    /// `Canary`: give the challenger a growing share of live traffic in steps first.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Settings of the `Shadow` strategy.
    #[serde(default)]
    pub shadow: ShadowSpec,
    /// Settings of the `Canary` strategy.
    #[serde(default)]
    pub canary: CanarySpec,
    /// The thresholds live analysis judges the challenger by (`Shadow` and `Canary`).
    #[serde(default)]
    pub analysis: AnalysisSpec,
}

/// The rollout strategy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// Roll the predictor to the challenger at once (a rolling update).
    #[default]
    Replace,
    /// Mirror live requests to the challenger; promote it when its answers hold up.
    Shadow,
    /// Serve a share of live traffic from the challenger in steps; promote it after the last.
    Canary,
}

/// The `Shadow` strategy: the challenger answers copies of live requests, its answers are
/// compared with the champion's and never reach a caller.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// Percent of the champion's prediction requests copied to the challenger, 1 to 100.
    /// Copies go through a bounded queue and are dropped when it is full; they never delay
    /// or fail the caller's answer.
    #[serde(default = "default_mirror_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub mirror_percent: i32,
    /// Mirrored requests the challenger must answer before it is judged.
    #[serde(default = "default_shadow_min_requests")]
    #[schemars(range(min = 1, max = 10000000))]
    pub min_requests: i64,
    /// Seconds the shadow run may take. A challenger that has not answered minRequests
    /// mirrored requests by then is rejected (not enough traffic to judge it).
    #[serde(default = "default_shadow_max_duration_seconds")]
    #[schemars(range(min = 10, max = 604800))]
    pub max_duration_seconds: i32,
    /// Number of challenger pods during the shadow run.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            mirror_percent: default_mirror_percent(),
            min_requests: default_shadow_min_requests(),
            max_duration_seconds: default_shadow_max_duration_seconds(),
            replicas: default_replicas(),
        }
    }
}

/// The `Canary` strategy: the challenger's pods join the predictor Service, and the share of
/// traffic they get is the ratio of ready replicas. No service mesh is needed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.steps.all(s, s >= 1 && s <= 100)", "message": "canary steps are percents from 1 to 100"},
    {"rule": "self.steps[size(self.steps) - 1] == 100", "message": "the last canary step must be 100"},
    {"rule": "self.steps.isSorted() && self.steps.all(i, self.steps.filter(j, j == i).size() == 1)", "message": "canary steps must be strictly increasing"}
]))]
pub struct CanarySpec {
    /// Traffic percents of the steps, strictly increasing, the last one 100. With few
    /// replicas the share is rounded to what the replica ratio can give; status.live says
    /// the share actually reached.
    #[serde(default = "default_canary_steps")]
    #[schemars(length(min = 1, max = 10))]
    pub steps: Vec<i32>,
    /// Seconds each step runs before it is judged.
    #[serde(default = "default_canary_step_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub step_seconds: i32,
    /// Requests the challenger must answer in a step before the step can pass. A step that
    /// has fewer after three times stepSeconds fails (not enough traffic to judge it).
    #[serde(default = "default_canary_min_requests")]
    #[schemars(range(min = 1, max = 10000000))]
    pub min_requests: i64,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            steps: default_canary_steps(),
            step_seconds: default_canary_step_seconds(),
            min_requests: default_canary_min_requests(),
        }
    }
}

/// Thresholds of live analysis. Figures come from the predictor pods' own `/metrics`, or from
/// Prometheus when prometheusUrl is set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxErrorRatio >= 0.0 && self.maxErrorRatio <= 1.0", "message": "maxErrorRatio must be between 0 and 1"},
    {"rule": "self.minAgreement >= 0.0 && self.minAgreement <= 1.0", "message": "minAgreement must be between 0 and 1"},
    {"rule": "self.maxLatencyRatio >= 1.0", "message": "maxLatencyRatio must be at least 1"}
]))]
pub struct AnalysisSpec {
    /// Highest share of the challenger's requests that may fail (5xx answers, and for a
    /// shadow also timeouts and unreadable answers), 0 to 1.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
    /// Highest p99 latency of the challenger as a multiple of the champion's p99 over the
    /// same window (at least 1). Latencies under latencyFloorSeconds always pass.
    #[serde(default = "default_max_latency_ratio")]
    pub max_latency_ratio: f64,
    /// p99 latencies below this many seconds pass whatever the ratio, so that noise on
    /// sub-millisecond answers fails nothing.
    #[serde(default = "default_latency_floor_seconds")]
    pub latency_floor_seconds: f64,
    /// `Shadow` only: least share of mirrored requests on which the challenger's answer equals
    /// the champion's, 0 to 1. 0 (the default) does not require agreement: a better model may
    /// well answer differently.
    #[serde(default)]
    pub min_agreement: f64,
    /// The online gate: ground-truth labels sent to the predictors' `POST /feedback` must
    /// show the challenger at least as good as the champion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineGate>,
    /// Base URL of a Prometheus server (http or https) to query instead of reading the pods'
    /// `/metrics` directly. The operator's store policy decides which hosts it may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prometheus_url: Option<String>,
    /// Seconds between two reads of the figures during live analysis.
    #[serde(default = "default_analysis_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            max_error_ratio: default_max_error_ratio(),
            max_latency_ratio: default_max_latency_ratio(),
            latency_floor_seconds: default_latency_floor_seconds(),
            min_agreement: 0.0,
            online: None,
            prometheus_url: None,
            interval_seconds: default_analysis_interval_seconds(),
        }
    }
}

/// The online gate of live analysis.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineGate {
    /// Metric computed from the labelled predictions of each version.
    #[serde(default)]
    pub metric: OnlineMetric,
    /// Labelled predictions each of challenger and champion needs before the gate decides;
    /// until then the analysis waits (within the strategy's time limits).
    #[serde(default = "default_online_min_samples")]
    #[schemars(range(min = 1, max = 10000000))]
    pub min_samples: i64,
}

/// A metric of the online gate.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnlineMetric {
    /// Unweighted mean of the per-class F1 scores.
    #[default]
    F1Macro,
    /// Share of labelled predictions that were right.
    Accuracy,
}

/// What starts a training run besides new data.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Start a run on the data present when the live inputs drift from the champion's
    /// training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_drift: Option<DriftTrigger>,
}

/// A run started by live data drift.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.psiThreshold > 0.0", "message": "psiThreshold must be greater than 0"}
]))]
pub struct DriftTrigger {
    /// Population stability index of any one feature above which a run starts (0.1 is a
    /// small shift, 0.25 a large one).
    #[serde(default = "default_psi_threshold")]
    pub psi_threshold: f64,
    /// Live rows the champion's predictors must have seen before drift counts.
    #[serde(default = "default_drift_min_rows")]
    #[schemars(range(min = 1, max = 100000000))]
    pub min_rows: i64,
    /// Least seconds between two runs started by drift.
    #[serde(default = "default_drift_cooldown_seconds")]
    #[schemars(range(min = 60, max = 604800))]
    pub cooldown_seconds: i32,
}

/// Policy for the first model of a pipeline.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FirstModelPolicy {
    /// Promote the first model when it reaches minScore.
    #[default]
    Promote,
    /// Never promote automatically; the user promotes a version from status.history with the
    /// champion.dev/rollback-to annotation.
    Manual,
}

/// The predictor that serves the champion.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictorSpec {
    /// Predictor image; it reads MODEL_URI and serves on PORT.
    #[serde(default = "default_predictor_image")]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Image pull policy of the predictor container.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Number of predictor pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the predictor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Port the predictor listens on and the Service exposes.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Rows of recent predictions each predictor pod remembers by request id, so that
    /// `POST /feedback` can join true labels to them (the online accuracy and F1 series and
    /// rollout.analysis.online). The pod's memory grows with the rows it remembers, up to about
    /// 100 bytes a row (10 MB at the default), and no further whatever the traffic. 0 turns
    /// feedback off; rollout.analysis.online then cannot be used.
    #[serde(default = "default_feedback_capacity")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub feedback_capacity: i32,
}

impl Default for PredictorSpec {
    fn default() -> Self {
        Self {
            image: default_predictor_image(),
            image_pull_policy: PullPolicy::default(),
            replicas: default_replicas(),
            resources: None,
            port: default_port(),
            feedback_capacity: default_feedback_capacity(),
        }
    }
}

fn default_feedback_capacity() -> i32 {
    100_000
}

fn default_borderline_band() -> f64 {
    0.02
}
fn default_mirror_percent() -> i32 {
    100
}
fn default_shadow_min_requests() -> i64 {
    200
}
fn default_shadow_max_duration_seconds() -> i32 {
    900
}
fn default_canary_steps() -> Vec<i32> {
    vec![10, 50, 100]
}
fn default_canary_step_seconds() -> i32 {
    60
}
fn default_canary_min_requests() -> i64 {
    50
}
fn default_max_error_ratio() -> f64 {
    0.01
}
fn default_max_latency_ratio() -> f64 {
    2.0
}
fn default_latency_floor_seconds() -> f64 {
    0.01
}
fn default_analysis_interval_seconds() -> i32 {
    10
}
fn default_online_min_samples() -> i64 {
    100
}
fn default_psi_threshold() -> f64 {
    0.25
}
fn default_drift_min_rows() -> i64 {
    500
}
fn default_drift_cooldown_seconds() -> i32 {
    3600
}
fn default_history_limit() -> i32 {
    10
}
fn default_poll_interval() -> Duration {
    Duration::from(std::time::Duration::from_secs(30))
}
fn default_trainer_image() -> String {
    "champion/trainer-job:dev".to_string()
}
fn default_predictor_image() -> String {
    "champion/predictor:dev".to_string()
}
fn default_active_deadline_seconds() -> i64 {
    1800
}
fn default_ttl_seconds_after_finished() -> i32 {
    3600
}
fn default_holdout_fraction() -> f64 {
    0.2
}
fn default_seed() -> i64 {
    42
}
fn default_rollout_deadline_seconds() -> i32 {
    120
}
fn default_replicas() -> i32 {
    1
}
fn default_port() -> i32 {
    8080
}

/// What the pipeline is doing, as one word for `kubectl get`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// No champion yet and nothing running (no data, or waiting for the first run).
    Pending,
    /// A trainer Job is running.
    Training,
    /// A promoted model is being rolled out.
    RollingOut,
    /// The champion is serving; nothing to do until the data changes.
    Serving,
    /// The last run or rollout failed; see the Degraded condition.
    Degraded,
    /// spec.suspend is true.
    Suspended,
}

/// Observed state of a ModelPipeline. Written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPipelineStatus {
    /// The spec generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, DataAvailable, Training, Promoted and Degraded, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What the pipeline is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Outcome of the last finished run (Promoted, Rejected, Failed, RolledBack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    /// The model the predictor serves (or is rolling out to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionStatus>,
    /// The latest training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger: Option<ChallengerStatus>,
    /// A predictor rollout in progress, with the champion to revert to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The data as last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataStatus>,
    /// Finished runs and rollbacks, newest last, at most spec.historyLimit entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Training runs that failed in a row; drives the exponential back-off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: i32,
    /// No new run starts before this time (back-off after failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// The value of the champion.dev/force-run annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forced_run: Option<String>,
    /// The value of the champion.dev/rollback-to annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback_to: Option<String>,
    /// The value of the champion.dev/approve annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_approve: Option<String>,
    /// The value of the champion.dev/reject annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reject: Option<String>,
    /// Where the predictor Service answers inside the cluster (set once the operator applied
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// The last finished training run. Its `number` grows by one with every finished run, so a
    /// script waits for the run after number N with
    /// `kubectl wait --for=jsonpath='{.status.lastRun.number}'=N+1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// The model version whose predictor rollout completed last: the version answering
    /// requests. Wait for a promoted version to serve with
    /// `kubectl wait --for=jsonpath='{.status.servingVersion}'=<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_version: Option<String>,
    /// Live analysis of a challenger (spec.rollout.strategy Shadow or Canary): in progress, or
    /// the last one until the next begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveStatus>,
    /// Live input drift of the champion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
}

/// How to reach the predictor, as KServe's `status.address`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// In-cluster URL of the predictor Service:
    /// `http://<service>.<namespace>.svc.cluster.local:<port>`.
    pub url: String,
}

/// The last finished training run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// Finished runs of this pipeline so far, this one included (1 for the first).
    pub number: i64,
    /// Model version the run trained.
    pub version: String,
    /// Promoted, Rejected or Failed.
    pub outcome: Outcome,
    /// Challenger score on the evaluation metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Champion score on the same holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_score: Option<f64>,
    /// When the run was judged.
    pub finished_at: Time,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The champion model.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChampionStatus {
    /// Model version (the last segment of the model URI).
    pub version: String,
    /// Version directory the predictor loads (its MODEL_URI).
    pub model_uri: String,
    /// Score on the evaluation metric when it was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Metric the score is measured in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Fingerprint of the data it was trained on.
    pub data_fingerprint: String,
    /// Hex SHA-256 of its model.json, from the run's report: the predictor is started with it
    /// and refuses any other bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// When it was promoted.
    pub promoted_at: Time,
}

/// State of a training run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ChallengerState {
    /// The trainer Job is running.
    Training,
    /// Won and promoted.
    Promoted,
    /// Scored but not better than the champion (or below the floor).
    Rejected,
    /// The Job failed, or its report was missing or unreadable.
    Failed,
    /// Passed the offline gate; waits for `champion.dev/approve` or `champion.dev/reject`.
    AwaitingApproval,
    /// Passed the offline gate (and approval); being judged on live traffic (status.live).
    LiveAnalysis,
}

/// The latest training run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengerStatus {
    /// Model version the run writes.
    pub version: String,
    /// Name of the trainer Job.
    pub job: String,
    /// Fingerprint of the data the run trains on.
    pub data_fingerprint: String,
    /// Run state.
    pub state: ChallengerState,
    /// Challenger score on the evaluation metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Champion score on the same holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_score: Option<f64>,
    /// Hex SHA-256 of the run's model.json, from its report (kept while the challenger waits
    /// for approval or live analysis, so the predictor is started with exactly those bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// Why the run ended as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the Job was launched.
    pub started_at: Time,
    /// When the data this run trains on was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seen_at: Option<Time>,
}

/// A rollout of the predictor in progress.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Version being rolled out.
    pub version: String,
    /// The champion to revert to when the rollout does not progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ChampionStatus>,
    /// When the rollout started.
    pub started_at: Time,
    /// When the data behind this model was first seen (for the data-to-serving metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_seen_at: Option<Time>,
    /// Why the rollout happens: a promotion, a requested rollback, or a revert.
    pub cause: Outcome,
}

/// The data as last listed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataStatus {
    /// Fingerprint of the sorted (key, size, etag) listing.
    pub fingerprint: String,
    /// Number of objects under the data URI.
    pub objects: i64,
    /// When this fingerprint was first seen.
    pub seen_at: Time,
}

/// How a run or rollback ended.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    /// The challenger won and was promoted.
    Promoted,
    /// The challenger lost or scored below the floor.
    Rejected,
    /// The run failed.
    Failed,
    /// The predictor was rolled back to an earlier version (on request or after a failed rollout).
    RolledBack,
}

impl Outcome {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "Promoted",
            Outcome::Rejected => "Rejected",
            Outcome::Failed => "Failed",
            Outcome::RolledBack => "RolledBack",
        }
    }
}

/// Why a run or rollback ended as it did: the machine-readable half of a history entry's
/// reason. Conditions and metrics are derived from it, never from the reason's text.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Cause {
    /// The first model of the pipeline, promoted (firstModel: Promote).
    FirstModel,
    /// The challenger beat the champion by more than minImprovement.
    BeatChampion,
    /// The challenger scored below minScore.
    BelowFloor,
    /// The challenger was better, but not by more than minImprovement.
    WithinMargin,
    /// The challenger was not better than the champion.
    NotBetter,
    /// The first model waits for a manual promotion (firstModel: Manual).
    AwaitsManualPromotion,
    /// The trainer Job failed (its reason and termination message say why).
    JobFailed,
    /// The trainer Job was deleted before it finished.
    JobVanished,
    /// report.json was missing, unreadable or about another run.
    ReportUnusable,
    /// The report did not score the champion, and the champion's recorded score is in
    /// another metric: the two cannot be compared.
    ChampionNotComparable,
    /// The predictor rollout did not progress and was reverted.
    RolloutStalled,
    /// The champion.dev/rollback-to annotation asked for it.
    RollbackRequested,
    /// A person approved the challenger with champion.dev/approve.
    Approved,
    /// A person rejected the challenger with champion.dev/reject.
    RejectedByUser,
    /// The challenger waited for approval when newer data (or a forced run) started another
    /// run: the newer candidate replaces it in the wait.
    Superseded,
    /// Live analysis passed: the challenger held up on live traffic.
    LiveAnalysisPassed,
    /// Live analysis failed: errors, latency, agreement or the online metric were outside the
    /// thresholds (the reason has the figures).
    LiveAnalysisFailed,
    /// Live analysis could not judge: too few requests or labels within its time limit.
    InsufficientTraffic,
}

/// One finished run or rollback.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Model version.
    pub version: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why, as a fixed word (the reason below says it in full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Challenger score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Champion score on the same holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_score: Option<f64>,
    /// Fingerprint of the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// Hex SHA-256 of the version's model.json (promoted and rejected runs), so a rollback to it
    /// serves exactly those bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// Why.
    pub reason: String,
    /// Who asked, for outcomes a person caused (approve, reject, rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When.
    pub time: Time,
}

/// Live analysis in progress, or the last one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    /// `Shadow` or `Canary`.
    pub strategy: RolloutStrategy,
    /// The challenger version under analysis.
    pub version: String,
    /// Index of the current canary step (0-based); 0 for a shadow run.
    #[serde(default)]
    pub step: i32,
    /// Share of live traffic the challenger gets now, in percent, as the ready replicas give
    /// it (canary), or the mirrored share (shadow).
    #[serde(default)]
    pub weight_percent: i32,
    /// When live analysis started.
    pub started_at: Time,
    /// When the current step started.
    pub step_started_at: Time,
    /// The latest figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<LiveFigures>,
    /// The last judgement in words (what passed, what is awaited, what failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who approved the challenger before its live analysis (promotion.approval Manual or
    /// Borderline); the history entry that ends the analysis names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The challenger's model.json digest (from its report), which its pods verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

/// Figures of live analysis over the current step (deltas of the predictors' counters).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveFigures {
    /// Requests the challenger answered (mirrored ones for a shadow).
    pub challenger_requests: i64,
    /// Share of them that failed.
    pub challenger_error_ratio: f64,
    /// The challenger's p99 latency in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_p99_seconds: Option<f64>,
    /// Requests the champion answered.
    pub champion_requests: i64,
    /// Share of them that failed.
    pub champion_error_ratio: f64,
    /// The champion's p99 latency in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_p99_seconds: Option<f64>,
    /// Shadow: share of mirrored requests with the same answer from both models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Shadow: mirrored requests dropped because the queue was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<i64>,
    /// Online gate: the challenger's online metric and its labelled samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_online: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_labels: Option<i64>,
    /// Online gate: the champion's online metric and its labelled samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_online: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_labels: Option<i64>,
}

/// Live input drift of the champion, as its predictors measure it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The champion version measured.
    pub version: String,
    /// The largest population stability index of any feature.
    pub max_psi: f64,
    /// The feature with that index.
    pub feature: String,
    /// Live rows behind the figure.
    pub rows: i64,
    /// When it was measured.
    pub measured_at: Time,
    /// When drift last started a run (spec.trigger.onDrift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_triggered_at: Option<Time>,
}

/// The CRD as YAML, exactly as `crdgen` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&ModelPipeline::crd())
}

impl ModelPipeline {
    /// The version directory of `version` (see [`champion_model::VersionDir`]).
    pub fn model_uri(&self, version: &str) -> String {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let ns = self.metadata.namespace.as_deref().unwrap_or_default();
        champion_model::VersionDir::new(&self.spec.model_store.uri, ns, name, version).uri()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn printer_columns_show_readiness_and_wide_columns_the_message_and_address() {
        let crd = serde_json::to_value(ModelPipeline::crd()).expect("crd serialises");
        let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let shown: Vec<(String, String, i64)> = columns
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["jsonPath"].as_str().unwrap_or_default().to_string(),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        let col = |name: &str| shown.iter().find(|c| c.0 == name).cloned();
        assert_eq!(
            col("Ready"),
            Some((
                "Ready".into(),
                ".status.conditions[?(@.type==\"Ready\")].status".into(),
                0
            ))
        );
        assert_eq!(shown.first().map(|c| c.0.as_str()), Some("Ready"));
        for name in ["Champion", "Score", "Age"] {
            assert_eq!(
                col(name).map(|c| c.2),
                Some(0),
                "{name} is a default column"
            );
        }
        assert_eq!(
            col("Message").map(|c| (c.1, c.2)),
            Some((".status.conditions[?(@.type==\"Ready\")].message".into(), 1))
        );
        assert_eq!(
            col("Address").map(|c| (c.1, c.2)),
            Some((".status.address.url".into(), 1))
        );
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "champion.dev/v1alpha1",
            "kind": "ModelPipeline",
            "metadata": {"name": "wine", "namespace": "default"},
            "spec": {
                "data": {"uri": "file:///data/wine/", "target": "quality"},
                "modelStore": {"uri": "file:///models"}
            }
        })
    }

    #[test]
    fn minimal_spec_gets_documented_defaults() {
        let mp: ModelPipeline = serde_json::from_value(minimal()).expect("minimal spec parses");
        assert_eq!(
            mp.spec.data.poll_interval,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(mp.spec.evaluation.metric, Metric::F1Macro);
        assert_eq!(mp.spec.evaluation.holdout_fraction, 0.2);
        assert_eq!(mp.spec.trainer.image, "champion/trainer-job:dev");
        assert_eq!(mp.spec.predictor.image, "champion/predictor:dev");
        assert_eq!(mp.spec.predictor.port, 8080);
        assert_eq!(mp.spec.promotion.first_model, FirstModelPolicy::Promote);
        assert_eq!(mp.spec.history_limit, 10);
        assert!(!mp.spec.suspend);
    }

    #[test]
    fn metric_names_match_the_trainer_contract() {
        for (m, s) in [
            (Metric::F1Macro, "f1Macro"),
            (Metric::F1Weighted, "f1Weighted"),
            (Metric::F1Binary, "f1Binary"),
            (Metric::Accuracy, "accuracy"),
        ] {
            assert_eq!(
                serde_json::to_value(m).expect("serialises"),
                serde_json::json!(s)
            );
            assert_eq!(m.as_str(), s);
        }
    }

    #[test]
    fn model_uri_is_the_version_directory() {
        let mp: ModelPipeline = serde_json::from_value(minimal()).expect("minimal spec parses");
        assert_eq!(mp.model_uri("abc"), "file:///models/default/wine/abc/");
    }

    #[test]
    fn crd_has_short_name_status_subresource_and_cel_rules() {
        let crd = serde_json::to_value(ModelPipeline::crd()).expect("crd serialises");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["mlp"])
        );
        assert_eq!(
            crd["spec"]["names"]["categories"],
            serde_json::json!(["champion"])
        );
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let rules = spec["evaluation"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("holdoutFraction > 0.0"), "{rules}");
        let rules = spec["data"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("duration(self.pollInterval)"), "{rules}");
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in ["address", "lastRun", "servingVersion"] {
            assert!(status[field].is_object(), "status.{field} is in the schema");
        }
        assert_eq!(
            spec["evaluation"]["properties"]["metric"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
    }
}
