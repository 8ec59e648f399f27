//! Kubernetes Events (events.k8s.io/v1) about a pipeline.
//!
//! Every Event is created on its own. kube's `Recorder` folds repeats of a reason into the
//! first Event's series and keeps that first note, which would hide the scores of the second
//! rejected candidate; each of ours carries different facts, so none is folded. Publishing is
//! best effort: a lost Event is logged, it never fails a reconcile.
//!
//! An Event regards the pipeline and, where one is involved, names the trainer Job or the
//! predictor Deployment as `related`, so `kubectl events --for job/<name>` finds it too.

use champion_api::ModelPipeline;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

/// Normal or Warning, as `kubectl describe` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reasons of the Events the operator emits; each has one type and one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    TrainingStarted,
    TrainingFailed,
    CandidateRejected,
    ModelPromoted,
    RolloutFailed,
    RolledBack,
    RollbackRefused,
    DataUnavailable,
    PolicyViolation,
    /// The predictor Deployment finished rolling out: the champion answers requests.
    RolloutCompleted,
    /// A reconcile failed writing or reading a Kubernetes object (the Job or Deployment was
    /// refused, a Secret could not be read); the operator retries with back-off.
    ReconcileFailed,
    /// Live analysis (shadow or canary) of a challenger that passed the offline gate began.
    LiveAnalysisStarted,
    /// A canary step passed; the next one begins.
    LiveAnalysisStep,
    /// Live analysis passed: the challenger becomes the champion.
    LiveAnalysisPassed,
    /// Live analysis failed or could not judge: the challenger is rejected, with the figures.
    LiveAnalysisFailed,
    /// A challenger passed the offline gate and waits for champion.dev/approve or reject.
    AwaitingApproval,
    /// An approve or reject annotation named another version than the waiting one.
    ApprovalIgnored,
    /// The champion's live inputs drifted past spec.trigger.onDrift: a run starts.
    DriftDetected,
}

impl Reason {
    /// The wire spelling (the Event's `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TrainingStarted => "TrainingStarted",
            Reason::TrainingFailed => "TrainingFailed",
            Reason::CandidateRejected => "CandidateRejected",
            Reason::ModelPromoted => "ModelPromoted",
            Reason::RolloutFailed => "RolloutFailed",
            Reason::RolledBack => "RolledBack",
            Reason::RollbackRefused => "RollbackRefused",
            Reason::DataUnavailable => "DataUnavailable",
            Reason::PolicyViolation => "PolicyViolation",
            Reason::RolloutCompleted => "RolloutCompleted",
            Reason::ReconcileFailed => "ReconcileFailed",
            Reason::LiveAnalysisStarted => "LiveAnalysisStarted",
            Reason::LiveAnalysisStep => "LiveAnalysisStep",
            Reason::LiveAnalysisPassed => "LiveAnalysisPassed",
            Reason::LiveAnalysisFailed => "LiveAnalysisFailed",
            Reason::AwaitingApproval => "AwaitingApproval",
            Reason::ApprovalIgnored => "ApprovalIgnored",
            Reason::DriftDetected => "DriftDetected",
        }
    }

    /// Warning for what a user has to look at, Normal for the rest.
    pub fn event_type(self) -> EventType {
        match self {
            Reason::TrainingFailed
            | Reason::RolloutFailed
            | Reason::RollbackRefused
            | Reason::DataUnavailable
            | Reason::PolicyViolation
            | Reason::ReconcileFailed
            | Reason::LiveAnalysisFailed
            | Reason::ApprovalIgnored
            | Reason::DriftDetected => EventType::Warning,
            _ => EventType::Normal,
        }
    }

    /// The Event's `action`: what the operator was doing.
    pub fn action(self) -> &'static str {
        match self {
            Reason::TrainingStarted | Reason::TrainingFailed => "Train",
            Reason::CandidateRejected => "Evaluate",
            Reason::DataUnavailable => "List",
            Reason::PolicyViolation => "Validate",
            Reason::ModelPromoted => "Promote",
            Reason::RolloutFailed | Reason::RolloutCompleted => "Rollout",
            Reason::ReconcileFailed => "Reconcile",
            Reason::RolledBack | Reason::RollbackRefused => "Rollback",
            Reason::LiveAnalysisStarted
            | Reason::LiveAnalysisStep
            | Reason::LiveAnalysisPassed
            | Reason::LiveAnalysisFailed => "Analyse",
            Reason::AwaitingApproval | Reason::ApprovalIgnored => "Approve",
            Reason::DriftDetected => "Train",
        }
    }
}

/// An Event to send about the pipeline: its reason, the note a user reads and the object
/// involved besides the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSpec {
    pub reason: Reason,
    pub note: String,
    pub related: Option<Related>,
}

/// The object an Event is also about (its `related`), in the pipeline's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Related {
    /// A trainer Job, by name.
    Job(String),
    /// The predictor Deployment, by name.
    Deployment(String),
    /// The predictor Service, by name.
    Service(String),
}

impl Related {
    /// The reference in namespace `ns`.
    pub fn object_ref(&self, ns: Option<String>) -> ObjectReference {
        let (api_version, kind, name) = match self {
            Related::Job(n) => ("batch/v1", "Job", n),
            Related::Deployment(n) => ("apps/v1", "Deployment", n),
            Related::Service(n) => ("v1", "Service", n),
        };
        ObjectReference {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
            name: Some(name.clone()),
            namespace: ns,
            ..ObjectReference::default()
        }
    }
}

/// Who reports the Events.
#[derive(Clone)]
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(
        client: kube::Client,
        controller: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
        }
    }

    /// The Event object for `mp` at `now`.
    pub fn event(&self, mp: &ModelPipeline, spec: &EventSpec, now: Timestamp) -> Event {
        let EventSpec {
            reason,
            note,
            related,
        } = spec;
        let name = mp.name_any();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: mp.namespace(),
                ..ObjectMeta::default()
            },
            action: Some(reason.action().to_string()),
            reason: Some(reason.as_str().to_string()),
            // The API server refuses notes above 1 kB.
            note: Some(note.chars().take(1000).collect()),
            type_: Some(reason.event_type().as_str().to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(mp.object_ref(&())),
            related: related.as_ref().map(|r| r.object_ref(mp.namespace())),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// Publishes one Event regarding `mp`.
pub async fn publish(publisher: &Publisher, mp: &ModelPipeline, spec: &EventSpec) {
    let event = publisher.event(mp, spec, Timestamp::now());
    let api: Api<Event> = Api::namespaced(
        publisher.client.clone(),
        &mp.namespace().unwrap_or_default(),
    );
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%error, reason = spec.reason.as_str(), "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pipeline;

    #[tokio::test]
    async fn event_regards_the_pipeline_and_names_the_reporter() {
        let (svc, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let p = Publisher::new(
            kube::Client::new(svc, "default"),
            "champion-operator",
            "pod-a",
        );
        let mp = pipeline();
        let long = "x".repeat(2000);
        let spec = EventSpec {
            reason: Reason::RolloutFailed,
            note: long,
            related: Some(Related::Deployment("wine-predictor".into())),
        };
        let e = p.event(&mp, &spec, Timestamp::UNIX_EPOCH);
        assert_eq!(e.action.as_deref(), Some("Rollout"));
        assert_eq!(e.reason.as_deref(), Some("RolloutFailed"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()),
            Some("ModelPipeline")
        );
        assert_eq!(
            e.regarding.as_ref().and_then(|r| r.uid.as_deref()),
            Some("uid-wine")
        );
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(e.note.map(|n| n.len()), Some(1000));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        let related = e.related.expect("related is set");
        assert_eq!(
            (
                related.api_version.as_deref(),
                related.kind.as_deref(),
                related.name.as_deref(),
                related.namespace.as_deref()
            ),
            (
                Some("apps/v1"),
                Some("Deployment"),
                Some("wine-predictor"),
                Some("default")
            )
        );
    }

    #[test]
    fn failures_are_warnings_and_a_completed_rollout_is_normal() {
        assert_eq!(Reason::ReconcileFailed.event_type(), EventType::Warning);
        assert_eq!(Reason::RolloutCompleted.event_type(), EventType::Normal);
        assert_eq!(Reason::RolloutCompleted.action(), "Rollout");
        assert_eq!(Reason::RolloutCompleted.as_str(), "RolloutCompleted");
    }
}
