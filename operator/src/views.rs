//! What a reconcile sees of the world, as small plain values: the data listing, trainer Jobs,
//! the predictor Deployment's rollout, and store reads that failed. Pure functions turn the
//! Kubernetes objects into these views; `decide`, `transition` and `status` use only these.

use champion_api::{ANNOTATION_DATA_FINGERPRINT, ANNOTATION_MODEL_VERSION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;

impl ReadFailure {
    /// The condition reason for a listing that failed this way.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadFailure::Secret(_) => "SecretUnavailable",
            ReadFailure::Refused(_) => "PolicyViolation",
            _ => "ListFailed",
        }
    }
}

/// A store read that failed: which step, and the store's message (credentials are redacted
/// from it by the store).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReadFailure {
    /// The URI could not be opened as a store.
    #[error("{0}")]
    OpenStore(String),
    /// The Secret the pipeline names could not be read.
    #[error("{0}")]
    Secret(String),
    /// The store options from the pipeline's Secret include one a pipeline may not set.
    #[error("{0}")]
    Refused(String),
    /// Listing the data prefix failed.
    #[error("{0}")]
    List(String),
    /// Fetching an object failed (missing, forbidden, unreachable).
    #[error("{0}")]
    Fetch(String),
    /// The object was read but is not what it must be.
    #[error("{0}")]
    Parse(String),
    /// The object was not read in this reconcile.
    #[error("report.json was not read")]
    NotRead,
}

/// The data prefix as last listed.
#[derive(Clone, Debug, PartialEq)]
pub struct DataListing {
    pub fingerprint: String,
    pub objects: usize,
}

/// State of a trainer Job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Running,
    Complete,
    /// Failed, with the reason (the trainer's termination message when there is one).
    Failed(String),
}

/// A trainer Job of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub name: String,
    pub version: String,
    pub fingerprint: String,
    pub state: JobState,
}

/// Progress of the predictor Deployment's latest rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutState {
    Progressing,
    Complete,
    /// The Deployment controller gave up: its message, and when it did (a condition from an
    /// earlier rollout outlives the rollout it was about).
    Failed {
        reason: String,
        since: Option<Timestamp>,
    },
}

/// The predictor Deployment: which version its template serves and how its rollout goes.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentView {
    pub version: Option<String>,
    pub rollout: RolloutState,
}

/// Whether `v` has the shape of a model version: 1 to 63 lowercase letters and digits
/// ([`crate::names::run_version`] makes 12 hex digits), so it is safe as a path segment.
pub fn is_version(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The view of a trainer Job; `None` for Jobs without the operator's annotations.
pub fn job_view(job: &Job) -> Option<JobView> {
    let ann = job.metadata.annotations.as_ref()?;
    // The version becomes a path segment in the model store: anything but a plain version
    // (someone else's Job, or an edited annotation) is not a run of ours.
    let version = ann
        .get(ANNOTATION_MODEL_VERSION)
        .filter(|v| is_version(v))?
        .clone();
    let fingerprint = ann.get(ANNOTATION_DATA_FINGERPRINT)?.clone();
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let is_true = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let state = if is_true("Complete").is_some() {
        JobState::Complete
    } else if let Some(c) = is_true("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        JobState::Failed(match &c.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason,
        })
    } else {
        JobState::Running
    };
    Some(JobView {
        name: job.metadata.name.clone()?,
        version,
        fingerprint,
        state,
    })
}

/// The view of the predictor Deployment, judged the way `kubectl rollout status` does.
pub fn deployment_view(d: &Deployment) -> DeploymentView {
    let version = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_MODEL_VERSION).cloned());
    let Some(status) = d.status.as_ref() else {
        return DeploymentView {
            version,
            rollout: RolloutState::Progressing,
        };
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return DeploymentView {
            version,
            rollout: RolloutState::Progressing,
        };
    }
    let stalled = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stalled {
        let msg = c
            .message
            .clone()
            .unwrap_or_else(|| "ProgressDeadlineExceeded".into());
        return DeploymentView {
            version,
            rollout: RolloutState::Failed {
                reason: msg,
                since: c.last_update_time.as_ref().map(|t| t.0),
            },
        };
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let done = updated >= want && total <= updated && available >= updated;
    DeploymentView {
        version,
        rollout: if done {
            RolloutState::Complete
        } else {
            RolloutState::Progressing
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn job(cond: Option<(&str, &str)>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("wine-train-v".into()),
                annotations: Some(BTreeMap::from([
                    (ANNOTATION_MODEL_VERSION.to_string(), "v".to_string()),
                    (ANNOTATION_DATA_FINGERPRINT.to_string(), "fp".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: None,
            status: cond.map(|(t, reason)| JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
        }
    }

    #[test]
    fn job_states_follow_the_job_conditions() {
        assert_eq!(
            job_view(&job(None)).map(|j| j.state),
            Some(JobState::Running)
        );
        assert_eq!(
            job_view(&job(Some(("Complete", "Completed")))).map(|j| j.state),
            Some(JobState::Complete)
        );
        let failed = job_view(&job(Some(("Failed", "BackoffLimitExceeded")))).map(|j| j.state);
        assert!(
            matches!(failed, Some(JobState::Failed(r)) if r.starts_with("BackoffLimitExceeded: "))
        );
        for bad in ["../../champion", "V1", "", "a/b", &"a".repeat(64)] {
            let mut edited = job(None);
            if let Some(a) = edited.metadata.annotations.as_mut() {
                a.insert(ANNOTATION_MODEL_VERSION.to_string(), bad.to_string());
            }
            assert_eq!(job_view(&edited), None, "version {bad:?} is not a run");
        }
        let mut foreign = job(None);
        foreign.metadata.annotations = None;
        assert_eq!(
            job_view(&foreign),
            None,
            "Jobs without our annotations are not runs"
        );
    }

    fn deployment(
        replicas: i32,
        updated: i32,
        total: i32,
        available: i32,
        stalled: bool,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_MODEL_VERSION.to_string(),
                    "v2".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(total),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                conditions: stalled.then(|| {
                    vec![DeploymentCondition {
                        type_: "Progressing".into(),
                        status: "False".into(),
                        reason: Some("ProgressDeadlineExceeded".into()),
                        message: Some(
                            "ReplicaSet \"wine-predictor-x\" has timed out progressing.".into(),
                        ),
                        ..DeploymentCondition::default()
                    }]
                }),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn rollout_state_is_judged_like_kubectl_rollout_status() {
        assert_eq!(
            deployment_view(&deployment(2, 2, 2, 2, false)).rollout,
            RolloutState::Complete
        );
        assert_eq!(
            deployment_view(&deployment(2, 1, 3, 2, false)).rollout,
            RolloutState::Progressing
        );
        assert_eq!(
            deployment_view(&deployment(2, 2, 3, 2, false)).rollout,
            RolloutState::Progressing,
            "old pods still terminating"
        );
        assert_eq!(
            deployment_view(&deployment(2, 2, 2, 1, false)).rollout,
            RolloutState::Progressing
        );
        assert!(
            matches!(deployment_view(&deployment(2, 1, 2, 1, true)).rollout, RolloutState::Failed { reason, .. } if reason.contains("timed out"))
        );
        let mut stale = deployment(2, 2, 2, 2, false);
        stale.metadata.generation = Some(3);
        assert_eq!(
            deployment_view(&stale).rollout,
            RolloutState::Progressing,
            "controller has not seen the new spec"
        );
        assert_eq!(deployment_view(&stale).version.as_deref(), Some("v2"));
    }
}
