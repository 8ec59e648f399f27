//! The desired trainer Job, predictor Deployment and predictor Service of a pipeline.
//!
//! Pure functions of the pipeline (and the model version): no client, no clock, so the same
//! pipeline always yields the same objects and a restarted operator computes the same names.

use std::collections::BTreeMap;

use champion_api::{
    ANNOTATION_DATA_FINGERPRINT, ANNOTATION_MODEL_URI, ANNOTATION_MODEL_VERSION, ChampionStatus,
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL_VERSION, LABEL_PART_OF, LABEL_PIPELINE,
    MANAGED_BY, ModelPipeline,
};
use champion_model::trainer_cli::{self, flag, long};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, HostPathVolumeSource, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretEnvSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{COMPONENT_PREDICTOR, COMPONENT_TRAINER, job_name, label_value, predictor_name};

/// uid and gid of every container the operator starts (the images' non-root user).
pub const RUN_AS: i64 = 65532;
/// Path of the trainer's termination message (the reason of a failed run).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
fn pipeline_name(mp: &ModelPipeline) -> &str {
    mp.metadata.name.as_deref().unwrap_or_default()
}

/// The labels on everything the operator creates for `mp`.
pub fn labels(mp: &ModelPipeline, component: &str) -> BTreeMap<String, String> {
    let name = label_value(pipeline_name(mp));
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_PART_OF.to_string(), name.clone()),
        (LABEL_PIPELINE.to_string(), name),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

fn selector_labels(mp: &ModelPipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PIPELINE.to_string(), label_value(pipeline_name(mp))),
        (LABEL_COMPONENT.to_string(), COMPONENT_PREDICTOR.to_string()),
    ])
}

fn owner_ref(mp: &ModelPipeline) -> Vec<OwnerReference> {
    use kube::Resource;
    mp.controller_owner_ref(&()).into_iter().collect()
}

fn meta(mp: &ModelPipeline, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: mp.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(owner_ref(mp)),
        ..ObjectMeta::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Trainer and predictor pods are hardened alike: neither talks to the API server (no token)
/// nor needs service environment variables, and both run under the restricted profile.
fn pod_spec(container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// The Secrets named by the spec, as envFrom sources (each once).
fn env_from(names: &[Option<&str>]) -> Option<Vec<EnvFromSource>> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names.iter().flatten() {
        if !seen.contains(name) {
            seen.push(name);
        }
    }
    if seen.is_empty() {
        return None;
    }
    Some(
        seen.into_iter()
            .map(|name| EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.to_string(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            })
            .collect(),
    )
}

/// The most a pod's writable /tmp may hold before the kubelet evicts it.
pub const TMP_SIZE_LIMIT: &str = "1Gi";

/// Requests and a memory limit for a container whose spec sets none, so that no pipeline's
/// pod runs unbounded on a shared node.
fn default_resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu)),
            ("memory".to_string(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q(memory_limit))])),
        ..ResourceRequirements::default()
    }
}

/// Store volumes from the spec plus a writable /tmp (the root filesystem is read-only).
fn volumes(mp: &ModelPipeline) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut vols = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(TMP_SIZE_LIMIT.to_string())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_string(),
        mount_path: "/tmp".to_string(),
        ..VolumeMount::default()
    }];
    for v in &mp.spec.volumes {
        vols.push(Volume {
            name: v.name.clone(),
            persistent_volume_claim: v.persistent_volume_claim.as_ref().map(|c| {
                PersistentVolumeClaimVolumeSource {
                    claim_name: c.claim_name.clone(),
                    read_only: None,
                }
            }),
            host_path: v.host_path.as_ref().map(|h| HostPathVolumeSource {
                path: h.path.clone(),
                type_: Some("DirectoryOrCreate".to_string()),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: v.name.clone(),
            mount_path: v.mount_path.clone(),
            ..VolumeMount::default()
        });
    }
    (vols, mounts)
}

/// The trainer's command line, per the trainer contract ([`champion_model::trainer_cli`]).
pub fn trainer_args(
    mp: &ModelPipeline,
    version: &str,
    champion: Option<&ChampionStatus>,
) -> Vec<String> {
    let spec = &mp.spec;
    let mut args: Vec<String> = vec![trainer_cli::TRAIN.into()];
    let mut arg = |name: &str, value: String| args.extend([long(name), value]);
    arg(flag::DATA_URI, spec.data.uri.clone());
    arg(flag::MODEL_URI, mp.model_uri(version));
    if let Some(c) = champion {
        arg(flag::CHAMPION_URI, c.model_uri.clone());
    }
    if let Some(t) = &spec.data.test_data_uri {
        arg(flag::TEST_DATA_URI, t.clone());
    }
    arg(flag::TARGET, spec.data.target.clone());
    if let Some(p) = spec.data.positive_above {
        arg(flag::POSITIVE_ABOVE, p.to_string());
    }
    for d in &spec.data.drop_columns {
        arg(flag::DROP, d.clone());
    }
    arg(flag::METRIC, spec.evaluation.metric.as_str().into());
    arg(
        flag::HOLDOUT_FRACTION,
        spec.evaluation.holdout_fraction.to_string(),
    );
    arg(flag::SEED, spec.evaluation.seed.to_string());
    arg(flag::ALGORITHM, spec.trainer.algorithm.as_str().into());
    for (k, v) in &spec.trainer.params {
        arg(flag::PARAM, format!("{k}={v}"));
    }
    arg(flag::TERMINATION_LOG, TERMINATION_LOG.into());
    args
}

/// The trainer Job for `version`, trained on data with `fingerprint`, challenging `champion`.
pub fn build_job(
    mp: &ModelPipeline,
    version: &str,
    fingerprint: &str,
    champion: Option<&ChampionStatus>,
) -> Job {
    let spec = &mp.spec;
    let mut labels = labels(mp, COMPONENT_TRAINER);
    labels.insert(LABEL_MODEL_VERSION.to_string(), version.to_string());
    let mut metadata = meta(mp, job_name(pipeline_name(mp), version), labels.clone());
    metadata.annotations = Some(BTreeMap::from([
        (
            ANNOTATION_DATA_FINGERPRINT.to_string(),
            fingerprint.to_string(),
        ),
        (ANNOTATION_MODEL_VERSION.to_string(), version.to_string()),
    ]));
    let (vols, mounts) = volumes(mp);
    let container = Container {
        name: "trainer".to_string(),
        image: Some(spec.trainer.image.clone()),
        image_pull_policy: Some(spec.trainer.image_pull_policy.as_str().to_string()),
        args: Some(trainer_args(mp, version, champion)),
        env_from: env_from(&[
            spec.data.secret_ref.as_ref().map(|s| s.name.as_str()),
            spec.model_store
                .secret_ref
                .as_ref()
                .map(|s| s.name.as_str()),
        ]),
        resources: Some(
            spec.trainer
                .resources
                .clone()
                .unwrap_or_else(|| default_resources("250m", "256Mi", "2Gi")),
        ),
        security_context: Some(container_security_context()),
        termination_message_path: Some(TERMINATION_LOG.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.trainer.backoff_limit),
            active_deadline_seconds: Some(spec.trainer.active_deadline_seconds),
            ttl_seconds_after_finished: Some(spec.trainer.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    ..pod_spec(container, vols)
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Which predictor Deployment to build: the champion's, or a challenger's during live
/// analysis (see [`crate::live`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// `<pipeline>-predictor`, behind the Service. `replicas` overrides the spec's (canary
    /// steps only change the count, never the pod template); `shadow` is (URL, percent) of a
    /// shadow run the champion's pods mirror requests to.
    Champion {
        replicas: Option<i32>,
        shadow: Option<(String, i32)>,
    },
    /// `<pipeline>-predictor-canary`: its pods carry the labels the Service selects.
    Canary { replicas: i32 },
    /// `<pipeline>-predictor-shadow`: its pods are not selected by the main Service.
    Shadow { replicas: i32 },
}

impl Part {
    /// The `champion.dev/role` label value of the Deployment's pods.
    pub fn role(&self) -> &'static str {
        match self {
            Part::Champion { .. } => crate::podmetrics::ROLE_CHAMPION,
            Part::Canary { .. } => crate::podmetrics::ROLE_CANARY,
            Part::Shadow { .. } => crate::podmetrics::ROLE_SHADOW,
        }
    }
}

/// Component label of the shadow pods: not the predictor's, so the main Service (which
/// selects pipeline + component=predictor) never sends them live traffic.
pub const COMPONENT_SHADOW: &str = "predictor-shadow";

/// The predictor Deployment serving `champion`. The pod template carries the version, so a new
/// champion is a rolling update that only proceeds as new pods pass the readiness probe
/// (maxUnavailable 0: the old model keeps serving until the new one is ready).
#[cfg(test)]
pub fn build_deployment(mp: &ModelPipeline, champion: &ChampionStatus) -> Deployment {
    build_predictor(
        mp,
        champion,
        &Part::Champion {
            replicas: None,
            shadow: None,
        },
    )
}

/// The selector of a predictor Deployment. The champion's stays what it always was (the API
/// server refuses to change a Deployment's selector); the canary's adds its role, the shadow's
/// has its own component.
fn part_selector(mp: &ModelPipeline, part: &Part) -> BTreeMap<String, String> {
    let mut s = selector_labels(mp);
    match part {
        Part::Champion { .. } => {}
        Part::Canary { .. } => {
            s.insert(
                crate::podmetrics::LABEL_ROLE.to_string(),
                part.role().to_string(),
            );
        }
        Part::Shadow { .. } => {
            s.insert(LABEL_COMPONENT.to_string(), COMPONENT_SHADOW.to_string());
        }
    }
    s
}

/// A predictor Deployment serving `model` as `part`: the champion's
/// ([`build_deployment`]), a canary's or a shadow's. All three share the pod template but for
/// the role label (and the shadow's component label, and the champion's SHADOW_* env).
pub fn build_predictor(mp: &ModelPipeline, champion: &ChampionStatus, part: &Part) -> Deployment {
    let spec = &mp.spec;
    let name = pipeline_name(mp);
    let mut labels = labels(mp, COMPONENT_PREDICTOR);
    labels.insert(
        LABEL_MODEL_VERSION.to_string(),
        label_value(&champion.version),
    );
    let annotations = BTreeMap::from([
        (
            ANNOTATION_MODEL_VERSION.to_string(),
            champion.version.clone(),
        ),
        (ANNOTATION_MODEL_URI.to_string(), champion.model_uri.clone()),
        (
            ANNOTATION_DATA_FINGERPRINT.to_string(),
            champion.data_fingerprint.clone(),
        ),
    ]);
    let object_name = match part {
        Part::Champion { .. } => predictor_name(name),
        Part::Canary { .. } => crate::names::canary_name(name),
        Part::Shadow { .. } => crate::names::shadow_name(name),
    };
    let mut metadata = meta(mp, object_name, labels.clone());
    metadata.annotations = Some(annotations.clone());
    let (vols, mounts) = volumes(mp);
    let port = spec.predictor.port;
    let shadow_env = match part {
        Part::Champion {
            shadow: Some((url, percent)),
            ..
        } => vec![
            EnvVar {
                name: "SHADOW_URL".into(),
                value: Some(url.clone()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "SHADOW_PERCENT".into(),
                value: Some(percent.to_string()),
                ..EnvVar::default()
            },
        ],
        _ => Vec::new(),
    };
    let container = Container {
        name: "predictor".to_string(),
        image: Some(spec.predictor.image.clone()),
        image_pull_policy: Some(spec.predictor.image_pull_policy.as_str().to_string()),
        env: Some(
            vec![
                EnvVar {
                    name: "MODEL_URI".into(),
                    value: Some(champion.model_uri.clone()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "PORT".into(),
                    value: Some(port.to_string()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "MODEL_NAME".into(),
                    value: Some(name.to_string()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "FEEDBACK_CAPACITY".into(),
                    value: Some(spec.predictor.feedback_capacity.to_string()),
                    ..EnvVar::default()
                },
            ]
            .into_iter()
            .chain(champion.model_sha256.as_ref().map(|digest| EnvVar {
                // The predictor refuses a model.json whose bytes do not have this digest.
                name: "MODEL_SHA256".into(),
                value: Some(digest.clone()),
                ..EnvVar::default()
            }))
            .chain(shadow_env)
            .collect(),
        ),
        env_from: env_from(&[spec
            .model_store
            .secret_ref
            .as_ref()
            .map(|s| s.name.as_str())]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // The predictor opens its port only once the model is loaded and verified: the startup
        // probe allows a load of up to 90 s (1 s × 90) before liveness starts counting, so a
        // slow load is not killed and mistaken for a failed rollout. Probing every second keeps
        // what it adds to a rollout under a second.
        startup_probe: Some(Probe {
            timeout_seconds: Some(1),
            ..http_probe("/v2/health/live", port, 1, 90)
        }),
        readiness_probe: Some(http_probe("/v2/health/ready", port, 2, 3)),
        liveness_probe: Some(http_probe("/v2/health/live", port, 10, 3)),
        resources: Some(
            spec.predictor
                .resources
                .clone()
                .unwrap_or_else(|| default_resources("100m", "64Mi", "512Mi")),
        ),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let selector = part_selector(mp, part);
    let mut pod_labels = labels;
    pod_labels.extend(selector.clone());
    pod_labels.insert(
        crate::podmetrics::LABEL_ROLE.to_string(),
        part.role().to_string(),
    );
    let replicas = match part {
        Part::Champion { replicas, .. } => replicas.unwrap_or(spec.predictor.replicas),
        Part::Canary { replicas } | Part::Shadow { replicas } => *replicas,
    };
    // The de-facto scrape convention (Prometheus' kubernetes-pods example job, the chart's
    // own operator pod): the pods say where their /metrics is.
    let mut pod_annotations = annotations;
    pod_annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            progress_deadline_seconds: Some(spec.promotion.rollout_deadline_seconds),
            revision_history_limit: Some(3),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(container, vols)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service in front of the predictor pods: the champion's and, during a
/// canary, the canary's (both carry pipeline + component=predictor).
pub fn build_service(mp: &ModelPipeline) -> Service {
    service(mp, predictor_name(pipeline_name(mp)), selector_labels(mp))
}

/// The Service in front of the shadow pods: the champion's pods mirror requests to it.
pub fn build_shadow_service(mp: &ModelPipeline) -> Service {
    let shadow = Part::Shadow { replicas: 0 };
    service(
        mp,
        crate::names::shadow_name(pipeline_name(mp)),
        part_selector(mp, &shadow),
    )
}

fn service(mp: &ModelPipeline, name: String, selector: BTreeMap<String, String>) -> Service {
    let port = mp.spec.predictor.port;
    Service {
        metadata: meta(mp, name, labels(mp, COMPONENT_PREDICTOR)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{champion, pipeline};

    #[test]
    fn job_carries_owner_labels_limits_args_and_credentials() {
        let mp = pipeline();
        let champ = champion("oldversion01", 0.7);
        let job = build_job(&mp, "0123456789ab", "fp-abc", Some(&champ));
        let meta = &job.metadata;
        assert_eq!(meta.name.as_deref(), Some("wine-train-0123456789ab"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("champion")
        );
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("wine")
        );
        assert_eq!(
            labels.get("champion.dev/pipeline").map(String::as_str),
            Some("wine")
        );
        assert_eq!(
            labels.get("champion.dev/model-version").map(String::as_str),
            Some("0123456789ab")
        );
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ModelPipeline");
        assert_eq!(owners[0].uid, "uid-wine");
        assert_eq!(owners[0].controller, Some(true));
        let spec = job.spec.expect("job spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(1800));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap_or_default();
        let expect = [
            "train",
            "--data-uri",
            "file:///data/wine/",
            "--model-uri",
            "file:///models/default/wine/0123456789ab/",
            "--champion-uri",
            "file:///models/wine/oldversion01/",
            "--target",
            "quality",
            "--positive-above",
            "5",
            "--drop",
            "Id",
            "--metric",
            "f1Macro",
            "--holdout-fraction",
            "0.2",
            "--seed",
            "42",
            "--algorithm",
            "adaboost",
            "--param",
            "n_estimators=20",
            "--termination-log",
            "/dev/termination-log",
        ];
        assert_eq!(args, expect);
        let env_from = c.env_from.clone().unwrap_or_default();
        let secrets: Vec<_> = env_from
            .iter()
            .filter_map(|e| e.secret_ref.as_ref().map(|s| s.name.clone()))
            .collect();
        assert_eq!(secrets, ["store-creds"], "one envFrom per distinct Secret");
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "store" && m.mount_path == "/data")
        );
        let vols = pod.volumes.unwrap_or_default();
        let store = vols
            .iter()
            .find(|v| v.name == "store")
            .expect("store volume");
        assert_eq!(
            store.host_path.as_ref().map(|h| h.path.as_str()),
            Some("/var/champion")
        );
        let sc = c.security_context.clone().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_user, Some(RUN_AS));
    }

    #[test]
    fn pods_without_resources_get_defaults_and_a_bounded_tmp() {
        let mut mp = pipeline();
        mp.spec.trainer.resources = None;
        mp.spec.predictor.resources = None;
        let job = build_job(&mp, "0123456789ab", "fp", None);
        let deployment = build_deployment(&mp, &champion("v1", 0.8));
        for pod in [
            job.spec.and_then(|s| s.template.spec),
            deployment.spec.and_then(|s| s.template.spec),
        ] {
            let pod = pod.expect("a pod spec");
            let r = pod.containers[0].resources.clone().expect("resources");
            let requests = r.requests.unwrap_or_default();
            assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
            assert!(r.limits.unwrap_or_default().contains_key("memory"));
            let tmp = pod
                .volumes
                .unwrap_or_default()
                .into_iter()
                .find(|v| v.name == "tmp")
                .and_then(|v| v.empty_dir)
                .and_then(|e| e.size_limit);
            assert_eq!(tmp, Some(Quantity(TMP_SIZE_LIMIT.into())));
        }
    }

    #[test]
    fn first_job_has_no_champion_uri() {
        let job = build_job(&pipeline(), "0123456789ab", "fp", None);
        let args = job
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].args.clone().unwrap_or_default());
        assert!(
            !args
                .unwrap_or_default()
                .iter()
                .any(|a| a == "--champion-uri")
        );
    }

    #[test]
    fn deployment_serves_the_champion_with_probes_and_non_root() {
        let mp = pipeline();
        let champ = champion("0123456789ab", 0.8);
        let d = build_deployment(&mp, &champ);
        assert_eq!(d.metadata.name.as_deref(), Some("wine-predictor"));
        let ann = d.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(ANNOTATION_MODEL_VERSION).map(String::as_str),
            Some("0123456789ab")
        );
        let spec = d.spec.expect("deployment spec");
        assert_eq!(spec.progress_deadline_seconds, Some(120));
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            !selector.contains_key(LABEL_MODEL_VERSION),
            "the selector is immutable, so it must not name a version"
        );
        let tmpl_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for (k, v) in &selector {
            assert_eq!(
                tmpl_labels.get(k),
                Some(v),
                "pod template matches the selector"
            );
        }
        let pod_ann = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        for (k, v) in [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "8080"),
            ("prometheus.io/path", "/metrics"),
            (ANNOTATION_MODEL_VERSION, "0123456789ab"),
        ] {
            assert_eq!(
                pod_ann.get(k).map(String::as_str),
                Some(v),
                "pod annotation {k}"
            );
        }
        let pod = spec.template.spec.expect("pod spec");
        let sc = pod.security_context.expect("pod security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        let c = &pod.containers[0];
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            env["MODEL_URI"].as_deref(),
            Some("file:///models/wine/0123456789ab/")
        );
        assert_eq!(env["PORT"].as_deref(), Some("8080"));
        assert_eq!(env["MODEL_NAME"].as_deref(), Some("wine"));
        assert_eq!(
            env["FEEDBACK_CAPACITY"].as_deref(),
            Some("100000"),
            "spec.predictor.feedbackCapacity, by default the predictor's own default"
        );
        assert_eq!(
            env["MODEL_SHA256"].as_deref(),
            Some(champion_model::sha256_hex(b"0123456789ab").as_str()),
            "the predictor is told the champion's model digest"
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness probe");
        assert_eq!(ready.path.as_deref(), Some("/v2/health/ready"));
        assert_eq!(ready.port, IntOrString::Int(8080));
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness probe");
        assert_eq!(live.path.as_deref(), Some("/v2/health/live"));
        let startup = c.startup_probe.as_ref().expect("startup probe");
        assert_eq!(
            startup.period_seconds.unwrap_or(0) * startup.failure_threshold.unwrap_or(0),
            90,
            "a model load of up to 90 s is not killed"
        );
        let csc = c
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }

    #[test]
    fn service_selects_predictor_pods_on_the_predictor_port() {
        let mp = pipeline();
        let svc = build_service(&mp);
        let d = build_deployment(&mp, &champion("v", 0.5));
        let spec = svc.spec.expect("service spec");
        let sel = spec.selector.unwrap_or_default();
        let pod_labels = d
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert!(sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        let ports = spec.ports.unwrap_or_default();
        assert_eq!(ports[0].port, 8080);
        assert_eq!(svc.metadata.owner_references.map(|o| o.len()), Some(1));
    }
}
