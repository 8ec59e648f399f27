//! Approval, the gate between the offline gate and the rollout (`spec.promotion.approval`).
//!
//! Pure functions only: whether a challenger that passed the offline gate waits
//! ([`must_wait`], applied to the judged step by [`gate`]), which answer the pipeline's
//! `champion.dev/approve` / `champion.dev/reject` annotations give to the waiting challenger
//! ([`requested`]), who gave it ([`requester`], from `metadata.managedFields`), and what the
//! user reads (the condition and the Event notes). `decide` and `transition` call them; the
//! writes stay in `apply` and `record`.
//!
//! Rules:
//! - `Automatic`: nothing waits. `Manual`: every challenger that passed waits, the first model
//!   of a pipeline too. `Borderline`: a challenger waits when its score exceeds the champion's
//!   by less than `borderlineBand`, or when the champion has no score to measure that against;
//!   the first model (no champion) does not wait: there is nothing it is borderline against.
//! - A waiting challenger is `status.challenger.state: AwaitingApproval` with both scores; the
//!   champion keeps serving (phase Serving, or Pending before the first model).
//! - The annotations act once per value, as `champion.dev/rollback-to` does: the value acted
//!   upon is kept in `status.lastApprove` / `status.lastReject`. A value naming another
//!   version than the waiting one is acknowledged the same way, with a Warning Event naming
//!   the version that waits, and otherwise ignored. A request is looked at only while a
//!   challenger waits, so `approve=<version>` may be set while that version still trains.
//!   When both name the waiting version, reject wins.
//! - New data (or a forced run) while a challenger waits starts a run on it, and the waiting
//!   challenger is recorded as Rejected with cause `Superseded`: an approval is about the
//!   freshest candidate, and a stale one would otherwise hold back every newer model until a
//!   person comes back.

use champion_api::{
    ANNOTATION_APPROVE, ANNOTATION_REJECT, ANNOTATION_REQUESTED_BY, Approval, ChallengerState,
    ChallengerStatus, ChampionStatus, Metric, ModelPipeline, ModelPipelineStatus, PromotionSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::decide::{Step, Verdict};

/// The answer an annotation gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Reject,
}

impl Answer {
    /// The annotation that gives this answer.
    pub fn annotation(self) -> &'static str {
        match self {
            Answer::Approve => ANNOTATION_APPROVE,
            Answer::Reject => ANNOTATION_REJECT,
        }
    }
}

/// Who set an approve or reject annotation, as far as the API server tells: the field manager
/// that owns the annotation in `metadata.managedFields` (and when it wrote it), else the
/// optional `champion.dev/requested-by` annotation. Untrusted text, cleaned by [`clean`].
#[derive(Clone, Debug, PartialEq)]
pub struct Requester {
    pub who: String,
    pub at: Option<Time>,
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(t) => write!(f, "{} (annotation set at {})", self.who, t.0),
            None => f.write_str(&self.who),
        }
    }
}

/// The longest requester name kept.
pub const MAX_REQUESTER_CHARS: usize = 128;

/// `text` without control characters, trimmed, at most [`MAX_REQUESTER_CHARS`] characters.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_REQUESTER_CHARS)
        .collect()
}

/// Why a challenger that passed the offline gate waits for a person, or `None` when it goes on.
/// `champion_score` is the champion's score the gate compared with.
pub fn must_wait(
    policy: &PromotionSpec,
    metric: Metric,
    score: Option<f64>,
    champion: Option<&ChampionStatus>,
    champion_score: Option<f64>,
) -> Option<String> {
    match policy.approval {
        Approval::Automatic => None,
        Approval::Manual => Some("approval is Manual: every candidate waits".to_string()),
        Approval::Borderline => {
            let champion = champion?;
            let (Some(score), Some(cs)) = (score, champion_score) else {
                return Some(format!(
                    "approval is Borderline and champion {} has no {metric} score to measure the band against",
                    champion.version
                ));
            };
            let delta = score - cs;
            (delta < policy.borderline_band).then(|| {
                format!(
                    "approval is Borderline: it beats champion {} by {delta:.4}, less than borderlineBand {}",
                    champion.version, policy.borderline_band
                )
            })
        }
    }
}

/// The judged step as the approval gate lets it go: a `Judge` whose verdict is Promote becomes
/// `AwaitApproval` when [`must_wait`] says so; every other step is returned as it is.
pub fn gate(mp: &ModelPipeline, champion: Option<&ChampionStatus>, step: Step) -> Step {
    match step {
        Step::Judge {
            job,
            version,
            decision,
        } if decision.verdict == Verdict::Promote => {
            match must_wait(
                &mp.spec.promotion,
                mp.spec.evaluation.metric,
                decision.score,
                champion,
                decision.champion_score,
            ) {
                Some(why) => Step::AwaitApproval {
                    job,
                    version,
                    decision,
                    why,
                },
                None => Step::Judge {
                    job,
                    version,
                    decision,
                },
            }
        }
        step => step,
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// The challenger that waits for approval, if any.
pub fn waiting(status: &ModelPipelineStatus) -> Option<&ChallengerStatus> {
    status
        .challenger
        .as_ref()
        .filter(|c| c.state == ChallengerState::AwaitingApproval)
}

/// The step an approve or reject annotation asks for while a challenger waits: the answer for
/// the waiting version, or the acknowledgement of a request that names another version.
/// `None` when nothing waits or no annotation has a value not yet acted upon.
pub fn requested(mp: &ModelPipeline, status: &ModelPipelineStatus) -> Option<Step> {
    let waiting = waiting(status)?;
    let pending = |answer: Answer, last: &Option<String>| {
        annotation(&mp.metadata, answer.annotation())
            .filter(|v| last.as_deref() != Some(*v))
            .map(|v| (answer, v.to_string()))
    };
    let reject = pending(Answer::Reject, &status.last_reject);
    let approve = pending(Answer::Approve, &status.last_approve);
    // A request for the waiting version first (reject before approve), then the others.
    let for_waiting =
        |r: &Option<(Answer, String)>| r.as_ref().filter(|(_, v)| *v == waiting.version).cloned();
    if let Some((answer, request)) = for_waiting(&reject).or_else(|| for_waiting(&approve)) {
        return Some(Step::Answer {
            answer,
            by: requester(&mp.metadata, answer.annotation()),
            version: waiting.version.clone(),
            request,
        });
    }
    let (answer, request) = reject.or(approve)?;
    Some(Step::IgnoreAnswer {
        answer,
        request,
        waiting: waiting.version.clone(),
    })
}

/// Who set annotation `key`: the field manager whose managedFields entry owns
/// `f:metadata.f:annotations.f:<key>` (the most recent one when several do), else the
/// `champion.dev/requested-by` annotation, else "unknown".
pub fn requester(meta: &ObjectMeta, key: &str) -> Requester {
    let field = format!("f:{key}");
    let owner = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:metadata")?.get("f:annotations")?.get(&field))
                .is_some()
        })
        .filter_map(|e| Some((e.manager.as_deref().map(clean)?, e.time.clone())))
        .filter(|(m, _)| !m.is_empty())
        .max_by_key(|(_, t)| t.as_ref().map(|t| t.0));
    if let Some((who, at)) = owner {
        return Requester { who, at };
    }
    let named = annotation(meta, ANNOTATION_REQUESTED_BY)
        .map(clean)
        .filter(|s| !s.is_empty());
    Requester {
        who: named.unwrap_or_else(|| "unknown".to_string()),
        at: None,
    }
}

fn score_text(s: Option<f64>) -> String {
    s.map_or_else(|| "none".to_string(), |s| format!("{s:.4}"))
}

/// The two kubectl commands that answer for `version` of `mp`.
pub fn commands(mp: &ModelPipeline, version: &str) -> String {
    let name = mp.metadata.name.as_deref().unwrap_or_default();
    let ns = mp.metadata.namespace.as_deref().unwrap_or_default();
    let cmd = |key: &str| {
        format!("kubectl annotate modelpipeline/{name} -n {ns} --overwrite {key}={version}")
    };
    format!(
        "approve: `{}`; reject: `{}`",
        cmd(ANNOTATION_APPROVE),
        cmd(ANNOTATION_REJECT)
    )
}

/// What the condition and the Event say about a waiting challenger: the version, both scores
/// and the commands.
pub fn waiting_message(
    mp: &ModelPipeline,
    challenger: &ChallengerStatus,
    champion: Option<&ChampionStatus>,
) -> String {
    let metric = mp.spec.evaluation.metric;
    let champion = match champion {
        Some(c) => format!(
            "champion {} {metric} {}",
            c.version,
            score_text(challenger.champion_score)
        ),
        None => "no champion yet".to_string(),
    };
    format!(
        "version {} ({metric} {}) waits for approval; {champion}; {}",
        challenger.version,
        score_text(challenger.score),
        commands(mp, &challenger.version)
    )
}

/// The AwaitingApproval condition: (status, reason, message), or `None` when the pipeline does
/// not show it (approval is Automatic and it never did).
pub fn condition(
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
) -> Option<(bool, &'static str, String)> {
    if let Some(c) = waiting(status) {
        return Some((
            true,
            "AwaitingApproval",
            waiting_message(mp, c, status.champion.as_ref()),
        ));
    }
    let shown = status
        .conditions
        .iter()
        .any(|c| c.type_ == champion_api::condition::AWAITING_APPROVAL);
    (mp.spec.promotion.approval != Approval::Automatic || shown).then(|| {
        (
            false,
            "NothingWaiting",
            "no candidate waits for approval".to_string(),
        )
    })
}

/// The decision behind a waiting challenger, in words, for the history of an answered one.
pub fn answered_reason(answer: Answer, by: &Requester, c: &ChallengerStatus) -> String {
    let verb = match answer {
        Answer::Approve => "approved",
        Answer::Reject => "rejected",
    };
    let gate = c.reason.as_deref().unwrap_or("passed the offline gate");
    format!("{verb} by {by}; offline gate: {gate}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Decision, decide};
    use crate::fixtures::{champion, observed, pipeline, training_challenger};
    use champion_api::ChallengerState;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    fn policy(approval: Approval, band: f64) -> PromotionSpec {
        PromotionSpec {
            approval,
            borderline_band: band,
            ..PromotionSpec::default()
        }
    }

    fn decision(score: f64, champion_score: Option<f64>) -> Decision {
        Decision {
            verdict: Verdict::Promote,
            cause: champion_api::Cause::BeatChampion,
            reason: "beats".into(),
            score: Some(score),
            champion_score,
            model_sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn who_waits_table() {
        let champ = champion("champ0000001", 0.70);
        let m = Metric::F1Macro;
        // (name, policy, score, champion?, champion score, waits)
        type Row<'a> = (&'a str, PromotionSpec, f64, bool, Option<f64>, bool);
        let rows: Vec<Row> = vec![
            (
                "automatic never waits",
                policy(Approval::Automatic, 0.5),
                0.71,
                true,
                Some(0.70),
                false,
            ),
            (
                "manual waits",
                policy(Approval::Manual, 0.0),
                0.99,
                true,
                Some(0.70),
                true,
            ),
            (
                "manual first model waits",
                policy(Approval::Manual, 0.0),
                0.80,
                false,
                None,
                true,
            ),
            (
                "borderline inside the band waits",
                policy(Approval::Borderline, 0.02),
                0.71,
                true,
                Some(0.70),
                true,
            ),
            (
                "borderline outside the band goes on",
                policy(Approval::Borderline, 0.02),
                0.75,
                true,
                Some(0.70),
                false,
            ),
            (
                "borderline exactly the band goes on",
                policy(Approval::Borderline, 0.25),
                0.75,
                true,
                Some(0.50),
                false,
            ),
            (
                "borderline band 1 holds every candidate",
                policy(Approval::Borderline, 1.0),
                0.99,
                true,
                Some(0.01),
                true,
            ),
            (
                "borderline band 0 holds none",
                policy(Approval::Borderline, 0.0),
                0.7001,
                true,
                Some(0.70),
                false,
            ),
            (
                "borderline first model goes on",
                policy(Approval::Borderline, 1.0),
                0.80,
                false,
                None,
                false,
            ),
            (
                "borderline unscored champion waits",
                policy(Approval::Borderline, 0.02),
                0.80,
                true,
                None,
                true,
            ),
        ];
        for (name, p, score, has_champion, cs, waits) in rows {
            let why = must_wait(&p, m, Some(score), has_champion.then_some(&champ), cs);
            assert_eq!(why.is_some(), waits, "{name}: {why:?}");
            if let Some(why) = why {
                assert!(why.contains("approval is"), "{name}: {why}");
            }
        }
    }

    #[test]
    fn gate_holds_only_a_promotion() {
        let mut mp = pipeline();
        mp.spec.promotion.approval = Approval::Manual;
        let champ = champion("champ0000001", 0.70);
        let judged = |d: Decision| Step::Judge {
            job: "wine-train-new000000001".into(),
            version: "new000000001".into(),
            decision: d,
        };
        assert!(matches!(
            gate(&mp, Some(&champ), judged(decision(0.8, Some(0.7)))),
            Step::AwaitApproval { version, why, .. } if version == "new000000001" && why.contains("Manual")
        ));
        let mut rejected = decision(0.6, Some(0.7));
        rejected.verdict = Verdict::Reject;
        assert_eq!(
            gate(&mp, Some(&champ), judged(rejected.clone())),
            judged(rejected),
            "a rejected candidate is not asked about"
        );
        mp.spec.promotion.approval = Approval::Automatic;
        assert_eq!(
            gate(&mp, Some(&champ), judged(decision(0.8, Some(0.7)))),
            judged(decision(0.8, Some(0.7)))
        );
    }

    fn waiting_pipeline() -> ModelPipeline {
        let mut mp = pipeline();
        mp.spec.promotion.approval = Approval::Manual;
        let mut c = training_challenger("new000000001", "wine-train-new000000001", None);
        c.state = ChallengerState::AwaitingApproval;
        c.score = Some(0.8);
        c.champion_score = Some(0.7);
        mp.status = Some(ModelPipelineStatus {
            champion: Some(champion("cur000000001", 0.7)),
            challenger: Some(c),
            observed_generation: Some(1),
            ..Default::default()
        });
        mp
    }

    fn annotate(mp: &mut ModelPipeline, pairs: &[(&str, &str)]) {
        mp.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    fn managed(manager: &str, key: &str, secs: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            api_version: Some("champion.dev/v1alpha1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:annotations": {".": {}, format!("f:{key}"): {}}}
            }))),
            time: Some(Time(
                Timestamp::UNIX_EPOCH + SignedDuration::from_secs(secs),
            )),
            subresource: None,
        }
    }

    #[test]
    fn approve_names_the_waiting_version_and_who_asked() {
        let mut mp = waiting_pipeline();
        annotate(&mut mp, &[(ANNOTATION_APPROVE, "new000000001")]);
        mp.metadata.managed_fields = Some(vec![
            managed(
                "kubectl-client-side-apply",
                "kubectl.kubernetes.io/last-applied-configuration",
                5,
            ),
            managed("kubectl-annotate", ANNOTATION_APPROVE, 10),
        ]);
        let step = requested(&mp, mp.status.as_ref().expect("status")).expect("a step");
        assert_eq!(
            step,
            Step::Answer {
                answer: Answer::Approve,
                version: "new000000001".into(),
                request: "new000000001".into(),
                by: Requester {
                    who: "kubectl-annotate".into(),
                    at: Some(Time(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(10))),
                },
            }
        );
        // decide takes it (ahead of the data), and once acted upon it is not taken again.
        let mut obs = observed(None);
        obs.deployment = Some(crate::views::DeploymentView {
            version: Some("cur000000001".into()),
            rollout: crate::views::RolloutState::Complete,
        });
        assert!(matches!(
            decide(&mp, &obs),
            Step::Answer {
                answer: Answer::Approve,
                ..
            }
        ));
        if let Some(s) = mp.status.as_mut() {
            s.last_approve = Some("new000000001".into());
        }
        assert_eq!(requested(&mp, mp.status.as_ref().expect("status")), None);
    }

    #[test]
    fn reject_wins_over_approve_for_the_same_version() {
        let mut mp = waiting_pipeline();
        annotate(
            &mut mp,
            &[
                (ANNOTATION_APPROVE, "new000000001"),
                (ANNOTATION_REJECT, "new000000001"),
                (ANNOTATION_REQUESTED_BY, "alice\u{7}\n"),
            ],
        );
        let step = requested(&mp, mp.status.as_ref().expect("status"));
        assert_eq!(
            step,
            Some(Step::Answer {
                answer: Answer::Reject,
                version: "new000000001".into(),
                request: "new000000001".into(),
                by: Requester {
                    who: "alice".into(),
                    at: None
                },
            }),
            "no managedFields entry: the requested-by annotation, cleaned"
        );
    }

    #[test]
    fn a_request_for_another_version_is_acknowledged_with_the_waiting_one() {
        let mut mp = waiting_pipeline();
        annotate(&mut mp, &[(ANNOTATION_APPROVE, "old000000009")]);
        assert_eq!(
            requested(&mp, mp.status.as_ref().expect("status")),
            Some(Step::IgnoreAnswer {
                answer: Answer::Approve,
                request: "old000000009".into(),
                waiting: "new000000001".into(),
            })
        );
        // Nothing waits: the request is kept for later, nothing is said.
        if let Some(s) = mp.status.as_mut()
            && let Some(c) = s.challenger.as_mut()
        {
            c.state = ChallengerState::Training;
        }
        assert_eq!(requested(&mp, mp.status.as_ref().expect("status")), None);
    }

    #[test]
    fn requester_text_is_bounded_and_unknown_without_a_source() {
        let meta = ObjectMeta::default();
        assert_eq!(requester(&meta, ANNOTATION_APPROVE).who, "unknown");
        let meta = ObjectMeta {
            managed_fields: Some(vec![managed(
                &"m\u{1b}[31m".repeat(100),
                ANNOTATION_REJECT,
                1,
            )]),
            ..ObjectMeta::default()
        };
        let who = requester(&meta, ANNOTATION_REJECT).who;
        assert_eq!(who.chars().count(), MAX_REQUESTER_CHARS);
        assert!(!who.chars().any(char::is_control), "{who:?}");
    }

    #[test]
    fn condition_names_version_scores_and_commands() {
        let mp = waiting_pipeline();
        let status = mp.status.clone().expect("status");
        let (on, reason, msg) = condition(&mp, &status).expect("shown");
        assert!(on);
        assert_eq!(reason, "AwaitingApproval");
        for part in [
            "version new000000001 (f1Macro 0.8000) waits for approval",
            "champion cur000000001 f1Macro 0.7000",
            "kubectl annotate modelpipeline/wine -n default --overwrite champion.dev/approve=new000000001",
            "champion.dev/reject=new000000001",
        ] {
            assert!(msg.contains(part), "{part:?} in {msg}");
        }
        let mut automatic = pipeline();
        automatic.status = Some(ModelPipelineStatus::default());
        assert_eq!(
            condition(&automatic, &ModelPipelineStatus::default()),
            None,
            "Automatic pipelines do not grow the condition"
        );
    }

    /// The whole life of a waiting challenger through `transition`: it waits with both scores
    /// (condition, Event, phase Serving, nothing applied), then is approved (rollout, history
    /// Approved with `by`), rejected (history RejectedByUser, champion untouched), answered for
    /// the wrong version (Warning, acknowledged) or superseded by new data.
    #[test]
    fn waiting_approving_rejecting_and_superseding() {
        use crate::events::Reason;
        use crate::metrics::{MetricEvent, RunOutcome};
        use crate::transition::transition;
        use crate::views::DataListing;
        use champion_api::{Cause, Outcome, Phase};

        let mut mp = pipeline();
        mp.spec.promotion.approval = Approval::Manual;
        mp.status = Some(ModelPipelineStatus {
            champion: Some(champion("cur000000001", 0.7)),
            challenger: Some(training_challenger(
                "new000000001",
                "wine-train-new000000001",
                Some(Time(Timestamp::UNIX_EPOCH)),
            )),
            observed_generation: Some(1),
            ..Default::default()
        });
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(60);
        let reasons = |t: &crate::transition::Transition| -> Vec<Reason> {
            t.effects.events.iter().map(|e| e.reason).collect()
        };

        // Judged Promote, held by the gate.
        let step = Step::AwaitApproval {
            job: "wine-train-new000000001".into(),
            version: "new000000001".into(),
            decision: decision(0.8, Some(0.7)),
            why: "approval is Manual: every candidate waits".into(),
        };
        let t = transition(&mp, &obs, &step);
        assert!(
            t.effects.objects.is_empty(),
            "nothing is applied while it waits"
        );
        assert_eq!(reasons(&t), vec![Reason::AwaitingApproval]);
        assert!(t.effects.metrics.is_empty(), "the run is not finished yet");
        let c = t.status.challenger.clone().expect("challenger");
        assert_eq!(c.state, ChallengerState::AwaitingApproval);
        assert_eq!((c.score, c.champion_score), (Some(0.8), Some(0.7)));
        assert_eq!(c.model_sha256, Some("ab".repeat(32)));
        assert_eq!(t.status.phase, Some(Phase::Serving));
        assert!(t.status.history.is_empty() && t.status.last_run.is_none());
        let cond = t
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "AwaitingApproval")
            .expect("condition");
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "AwaitingApproval")
        );
        let note = &t.effects.events[0].note;
        assert!(
            note.contains("new000000001") && note.contains("0.8000") && note.contains("0.7000"),
            "{note}"
        );
        mp.status = Some(t.status);
        let waiting = mp.clone();

        // Approved: rolled out like any promotion, with who asked.
        let by = Requester {
            who: "kubectl-annotate".into(),
            at: None,
        };
        let approve = Step::Answer {
            answer: Answer::Approve,
            version: "new000000001".into(),
            request: "new000000001".into(),
            by: by.clone(),
        };
        let t = transition(&mp, &obs, &approve);
        let kinds: Vec<bool> = t
            .effects
            .objects
            .iter()
            .map(|o| matches!(o, crate::effects::Desired::Deployment(_)))
            .collect();
        assert_eq!(
            kinds,
            vec![true, false],
            "the predictor Deployment and Service"
        );
        assert_eq!(reasons(&t), vec![Reason::ModelPromoted]);
        assert_eq!(
            t.effects.metrics,
            vec![MetricEvent::RunFinished(RunOutcome::Promoted)]
        );
        let champ = t.status.champion.clone().expect("champion");
        assert_eq!(champ.version, "new000000001");
        assert_eq!(
            champ.model_sha256,
            Some("ab".repeat(32)),
            "the digest the gate read"
        );
        assert_eq!(
            t.status
                .rollout
                .as_ref()
                .and_then(|r| r.previous.as_ref())
                .map(|p| p.version.as_str()),
            Some("cur000000001")
        );
        let h = t.status.history.last().cloned().expect("history");
        assert_eq!(
            (h.outcome, h.cause, h.by.as_deref()),
            (
                Outcome::Promoted,
                Some(Cause::Approved),
                Some("kubectl-annotate")
            )
        );
        assert_eq!((h.score, h.champion_score), (Some(0.8), Some(0.7)));
        assert_eq!(t.status.last_approve.as_deref(), Some("new000000001"));
        assert_eq!(
            t.status.last_run.as_ref().map(|r| r.outcome),
            Some(Outcome::Promoted)
        );
        assert_eq!(t.status.phase, Some(Phase::RollingOut));
        let cond = t
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "AwaitingApproval");
        assert_eq!(cond.map(|c| c.status.as_str()), Some("False"));

        // With a Canary strategy, approval is the gate before live analysis: the approved
        // challenger goes into its canary, not straight to the champion, and the analysis
        // carries who approved it into the history entry that ends it.
        let mut canary = waiting.clone();
        canary.spec.rollout.strategy = champion_api::RolloutStrategy::Canary;
        let t = transition(&canary, &obs, &approve);
        assert_eq!(reasons(&t), vec![Reason::LiveAnalysisStarted]);
        assert_eq!(
            t.status.champion.as_ref().map(|c| c.version.as_str()),
            Some("cur000000001"),
            "the champion stays until the canary passes"
        );
        assert!(t.status.rollout.is_none());
        assert_eq!(
            t.status.challenger.as_ref().map(|c| c.state),
            Some(ChallengerState::LiveAnalysis)
        );
        let live = t.status.live.clone().expect("live analysis started");
        assert_eq!(live.version, "new000000001");
        assert_eq!(live.approved_by.as_deref(), Some("kubectl-annotate"));
        assert!(t.status.history.is_empty(), "the analysis' end records it");
        assert_eq!(t.status.last_approve.as_deref(), Some("new000000001"));

        // Rejected: history says who, the champion is untouched, nothing applied.
        let reject = Step::Answer {
            answer: Answer::Reject,
            version: "new000000001".into(),
            request: "new000000001".into(),
            by,
        };
        let t = transition(&waiting, &obs, &reject);
        assert!(t.effects.objects.is_empty());
        assert_eq!(reasons(&t), vec![Reason::CandidateRejected]);
        assert_eq!(
            t.effects.metrics,
            vec![MetricEvent::RunFinished(RunOutcome::Rejected)]
        );
        assert_eq!(
            t.status.champion,
            waiting.status.as_ref().and_then(|s| s.champion.clone())
        );
        let h = t.status.history.last().cloned().expect("history");
        assert_eq!(
            (h.outcome, h.cause, h.by.as_deref()),
            (
                Outcome::Rejected,
                Some(Cause::RejectedByUser),
                Some("kubectl-annotate")
            )
        );
        assert_eq!(t.status.last_reject.as_deref(), Some("new000000001"));
        assert_eq!(
            t.status.challenger.as_ref().map(|c| c.state),
            Some(ChallengerState::Rejected)
        );
        assert_eq!(t.status.phase, Some(Phase::Serving));

        // The wrong version: a Warning naming the waiting one, acknowledged, still waiting.
        let wrong = Step::IgnoreAnswer {
            answer: Answer::Approve,
            request: "old000000009".into(),
            waiting: "new000000001".into(),
        };
        let t = transition(&waiting, &obs, &wrong);
        assert_eq!(reasons(&t), vec![Reason::ApprovalIgnored]);
        let note = &t.effects.events[0].note;
        assert!(
            note.contains("old000000009")
                && note.contains("version new000000001 is the one waiting"),
            "{note}"
        );
        assert_eq!(t.status.last_approve.as_deref(), Some("old000000009"));
        assert_eq!(
            t.status.challenger.as_ref().map(|c| c.state),
            Some(ChallengerState::AwaitingApproval)
        );
        assert!(t.status.history.is_empty());

        // New data: decide launches a run, which supersedes the waiting candidate.
        let mut newer = obs.clone();
        newer.data = Some(Ok(DataListing {
            fingerprint: "fp2".into(),
            objects: 4,
        }));
        newer.deployment = Some(crate::views::DeploymentView {
            version: Some("cur000000001".into()),
            rollout: crate::views::RolloutState::Complete,
        });
        let step = decide(&waiting, &newer);
        assert!(
            matches!(step, Step::Launch { ref fingerprint, .. } if fingerprint == "fp2"),
            "{step:?}"
        );
        let t = transition(&waiting, &newer, &step);
        assert_eq!(
            reasons(&t),
            vec![Reason::CandidateRejected, Reason::TrainingStarted]
        );
        let h = t.status.history.last().cloned().expect("history");
        assert_eq!(
            (h.version.as_str(), h.outcome, h.cause),
            ("new000000001", Outcome::Rejected, Some(Cause::Superseded))
        );
        assert_eq!(
            t.status.challenger.as_ref().map(|c| c.state),
            Some(ChallengerState::Training)
        );
        assert_eq!(
            t.status.last_run.as_ref().map(|r| r.version.as_str()),
            Some("new000000001")
        );
        // The same data: it keeps waiting.
        newer.data = obs.data.clone();
        assert_eq!(decide(&waiting, &newer), Step::Idle);
    }
}
