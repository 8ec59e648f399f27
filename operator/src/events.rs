//! Kubernetes Events (events.k8s.io/v1) about a pipeline. Publishing is best effort: a lost
//! Event is logged, it never fails a reconcile.

use champion_api::ModelPipeline;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

/// Event reasons the operator emits.
pub mod reason {
    pub const TRAINING_STARTED: &str = "TrainingStarted";
    pub const TRAINING_FAILED: &str = "TrainingFailed";
    pub const CANDIDATE_REJECTED: &str = "CandidateRejected";
    pub const MODEL_PROMOTED: &str = "ModelPromoted";
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const ROLLBACK_REFUSED: &str = "RollbackRefused";
}

/// Publishes one Event regarding `mp`.
pub async fn publish(recorder: &Recorder, mp: &ModelPipeline, warning: bool, reason: &str, action: &str, note: String) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_string(),
        // The API server refuses notes above 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &mp.object_ref(&())).await {
        tracing::warn!(%error, reason, "publishing an Event failed");
    }
}
