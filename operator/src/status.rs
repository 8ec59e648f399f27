//! Conditions, phase and the history ring: derived from the status the steps wrote and what was
//! observed. Pure, and written so that an unchanged world yields a byte-identical status —
//! the controller only patches the status when it differs.

use champion_api::{
    Cause, ChallengerState, HistoryEntry, ModelPipeline, ModelPipelineStatus, Outcome, Phase,
    condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::observe::Observed;
use crate::views::{DeploymentView, ReadFailure, RolloutState};

/// Sets condition `type_`. `lastTransitionTime` moves only when the status flips; nothing
/// changes when status, reason, message and generation are all the same. Returns whether
/// anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = if status { "True" } else { "False" };
    let fresh = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        None => {
            conditions.push(fresh);
            true
        }
        Some(c) => {
            if c.status == fresh.status
                && c.reason == fresh.reason
                && c.message == fresh.message
                && c.observed_generation == fresh.observed_generation
            {
                return false;
            }
            let transition = if c.status == fresh.status {
                c.last_transition_time.clone()
            } else {
                Time(now)
            };
            *c = Condition {
                last_transition_time: transition,
                ..fresh
            };
            true
        }
    }
}

/// Appends `entry`, dropping the oldest entries beyond `limit` (at least one is kept).
pub fn push_history(history: &mut Vec<HistoryEntry>, entry: HistoryEntry, limit: i32) {
    history.push(entry);
    let limit = usize::try_from(limit.max(1)).unwrap_or(1);
    if history.len() > limit {
        let excess = history.len() - limit;
        history.drain(..excess);
    }
}

/// Fills in conditions, phase, servingVersion and observedGeneration from the rest of the
/// status; `queued`:
/// new data is waiting for a free trainer slot; `predictor_applied`: this step applies the
/// predictor from the current spec.
///
/// observedGeneration claims a spec only once it has acted on it: while there is a champion,
/// that is when the predictor was applied from it. An edit made during a rollout is therefore
/// not claimed until the rollout ended and the edit reached the Deployment.
pub fn derive(
    mp: &ModelPipeline,
    status: &mut ModelPipelineStatus,
    obs: &Observed,
    queued: bool,
    predictor_applied: bool,
) {
    if status.champion.is_none() || predictor_applied {
        status.observed_generation = mp.metadata.generation;
    }
    let generation = status.observed_generation;
    let now = obs.now;
    let awaiting = crate::approval::condition(mp, status);
    let conds = &mut status.conditions;
    // Every condition here is stamped with the same generation and time.
    let mut set = |type_: &str, on: bool, reason: &str, message: &str| {
        set_condition(conds, type_, on, reason, message, generation, now)
    };

    match &obs.data {
        Some(Ok(l)) if l.objects > 0 => {
            set(
                condition::DATA_AVAILABLE,
                true,
                "DataListed",
                &format!("{} objects under {}", l.objects, mp.spec.data.uri),
            );
        }
        Some(Ok(_)) => {
            set(
                condition::DATA_AVAILABLE,
                false,
                "NoData",
                &format!("no objects under {}", mp.spec.data.uri),
            );
        }
        Some(Err(e)) => {
            set(condition::DATA_AVAILABLE, false, e.reason(), &e.to_string());
        }
        None => {}
    }
    let data_failed = matches!(&obs.data, Some(Err(_)));

    let training = status
        .challenger
        .as_ref()
        .filter(|c| c.state == ChallengerState::Training);
    match training {
        Some(c) => set(
            condition::TRAINING,
            true,
            "JobRunning",
            &format!("Job {} trains version {}", c.job, c.version),
        ),
        None if queued => set(
            condition::TRAINING,
            false,
            "Queued",
            "new data waits for a free trainer slot (the operator's maxConcurrentRuns)",
        ),
        None => set(
            condition::TRAINING,
            false,
            "Idle",
            "no training run in progress",
        ),
    };

    // The version whose rollout completed: kept while a newer one rolls out.
    let mut serving_version = None;
    let serving = |d: &Option<DeploymentView>, v: &str| matches!(d, Some(DeploymentView { version: Some(dv), rollout: RolloutState::Complete }) if dv == v);
    match (&status.champion, &status.rollout) {
        (None, _) => {
            set(
                condition::PROMOTED,
                false,
                "NoChampion",
                "no model has been promoted yet",
            );
            set(
                condition::READY,
                false,
                "NoChampion",
                "no model has been promoted yet",
            );
        }
        (Some(_), Some(r)) => {
            let msg = format!("rolling out version {}", r.version);
            match (&r.previous, r.cause) {
                (Some(p), _) => set(
                    condition::PROMOTED,
                    true,
                    "RollingOut",
                    &format!("{msg}; version {} serves meanwhile", p.version),
                ),
                // Reverting: the version being restored never stopped serving (maxUnavailable 0).
                (None, Outcome::RolledBack) => set(
                    condition::PROMOTED,
                    true,
                    "RollingBack",
                    &format!("rolling back to version {}", r.version),
                ),
                (None, _) => set(condition::PROMOTED, false, "RollingOut", &msg),
            };
            set(condition::READY, false, "RollingOut", &msg);
        }
        (Some(c), None) => {
            let reason = match status.last_outcome {
                Some(Outcome::RolledBack) => "RolledBack",
                _ => "ModelPromoted",
            };
            set(
                condition::PROMOTED,
                true,
                reason,
                &format!("version {} serves ({})", c.version, c.model_uri),
            );
            if serving(&obs.deployment, &c.version) {
                serving_version = Some(c.version.clone());
                set(
                    condition::READY,
                    true,
                    "PredictorAvailable",
                    &format!("version {} is available", c.version),
                );
            } else {
                set(
                    condition::READY,
                    false,
                    "PredictorUnavailable",
                    &format!("the predictor of version {} is not available", c.version),
                );
            }
        }
    }

    if serving_version.is_some() {
        status.serving_version = serving_version;
    }

    let degraded = if let Some(why) = &obs.policy_violation {
        Some(("PolicyViolation", why.clone()))
    } else if let Some(Err(ReadFailure::Refused(why))) = &obs.data {
        Some(("PolicyViolation", why.clone()))
    } else if data_failed {
        Some((
            "DataUnavailable",
            "listing the data failed; see DataAvailable".to_string(),
        ))
    } else {
        match (status.last_outcome, status.history.last()) {
            (Some(Outcome::Failed), Some(h)) if h.outcome == Outcome::Failed => {
                Some(("TrainingFailed", h.reason.clone()))
            }
            (Some(Outcome::RolledBack), Some(h)) if h.cause == Some(Cause::RolloutStalled) => {
                Some(("RolloutFailed", h.reason.clone()))
            }
            _ => None,
        }
    };
    match &degraded {
        Some((reason, msg)) => set(condition::DEGRADED, true, reason, msg),
        None => set(condition::DEGRADED, false, "AsExpected", "no failures"),
    };
    if let Some((on, reason, msg)) = &awaiting {
        set(condition::AWAITING_APPROVAL, *on, reason, msg);
    }

    let phase = if mp.spec.suspend {
        Phase::Suspended
    } else if status.rollout.is_some() {
        Phase::RollingOut
    } else if training.is_some() {
        Phase::Training
    } else if degraded.is_some() {
        Phase::Degraded
    } else if status.champion.is_some() {
        Phase::Serving
    } else {
        Phase::Pending
    };
    status.phase = Some(phase);
    crate::live::derive(mp, status, generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{champion, observed, pipeline};
    use crate::views::DataListing;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn condition_changes_only_when_something_changed() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = t0 + SignedDuration::from_secs(60);
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Ready",
            false,
            "NoChampion",
            "none",
            Some(1),
            t0
        ));
        assert!(
            !set_condition(&mut c, "Ready", false, "NoChampion", "none", Some(1), t1),
            "same content: no change"
        );
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert!(
            set_condition(&mut c, "Ready", false, "RollingOut", "v2", Some(1), t1),
            "new reason is a change"
        );
        assert_eq!(
            c[0].last_transition_time,
            Time(t0),
            "same status: transition time kept"
        );
        assert!(set_condition(
            &mut c,
            "Ready",
            true,
            "PredictorAvailable",
            "v2",
            Some(1),
            t1
        ));
        assert_eq!(
            c[0].last_transition_time,
            Time(t1),
            "status flip moves the transition time"
        );
        assert!(
            set_condition(
                &mut c,
                "Ready",
                true,
                "PredictorAvailable",
                "v2",
                Some(2),
                t1
            ),
            "new generation observed"
        );
        assert_eq!(c.len(), 1);
    }

    fn entry(i: i32) -> HistoryEntry {
        HistoryEntry {
            version: format!("v{i}"),
            outcome: Outcome::Rejected,
            cause: None,
            score: None,
            champion_score: None,
            data_fingerprint: None,
            model_sha256: None,
            reason: String::new(),
            by: None,
            time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn history_ring_keeps_the_newest_entries_up_to_the_limit() {
        let mut h = Vec::new();
        for i in 0..7 {
            push_history(&mut h, entry(i), 3);
        }
        let versions: Vec<_> = h.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(versions, ["v4", "v5", "v6"]);
        push_history(&mut h, entry(7), 1);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].version, "v7");
    }

    #[test]
    fn derive_is_stable_for_an_unchanged_world() {
        let mp = pipeline();
        let mut status = ModelPipelineStatus {
            champion: Some(champion("v1", 0.8)),
            ..Default::default()
        };
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp".into(),
            objects: 2,
        })));
        obs.deployment = Some(DeploymentView {
            version: Some("v1".into()),
            rollout: RolloutState::Complete,
        });
        derive(&mp, &mut status, &obs, false, false);
        let first = status.clone();
        obs.now += SignedDuration::from_secs(30);
        derive(&mp, &mut status, &obs, false, false);
        assert_eq!(
            first, status,
            "a later poll of the same world changes nothing"
        );
        assert_eq!(status.phase, Some(Phase::Serving));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        assert_eq!(ready, Some("True"));
        for t in ["Ready", "DataAvailable", "Training", "Promoted", "Degraded"] {
            assert!(
                status.conditions.iter().any(|c| c.type_ == t),
                "condition {t} is written"
            );
        }
    }

    #[test]
    fn a_refused_store_option_degrades_the_pipeline_naming_the_key() {
        let mp = pipeline();
        let mut status = ModelPipelineStatus::default();
        let obs = observed(Some(Err(ReadFailure::Refused(
            "store option \"AWS_WEB_IDENTITY_TOKEN_FILE\" is not allowed".into(),
        ))));
        derive(&mp, &mut status, &obs, false, false);
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        assert_eq!(degraded.map(|c| c.reason.as_str()), Some("PolicyViolation"));
        assert!(
            degraded.is_some_and(|c| c.message.contains("AWS_WEB_IDENTITY_TOKEN_FILE")),
            "{degraded:?}"
        );
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    #[test]
    fn list_failure_degrades_the_pipeline() {
        let mp = pipeline();
        let mut status = ModelPipelineStatus::default();
        let obs = observed(Some(Err(crate::views::ReadFailure::List(
            "permission denied listing s3://b/p/".into(),
        ))));
        derive(&mp, &mut status, &obs, false, false);
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| (c.status.clone(), c.reason.clone()));
        assert_eq!(
            degraded,
            Some(("True".to_string(), "DataUnavailable".to_string()))
        );
        assert_eq!(status.phase, Some(Phase::Degraded));
    }
}
