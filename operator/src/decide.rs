//! What to do next: one pure function of the pipeline and what was observed.
//!
//! [`decide`] picks the one step a reconcile takes, in a documented priority order; when the
//! tracked run finished, the step carries the promotion gate's [`Decision`]
//! ([`decide_promotion`]: report + policy + champion → promote, reject or fail, with a typed
//! cause). Neither touches a client or a clock, so both are tested as tables.

use champion_api::{
    ANNOTATION_FORCE_RUN, ANNOTATION_ROLLBACK_TO, Cause, ChallengerState, ChampionStatus,
    FirstModelPolicy, HistoryEntry, Metric, ModelPipeline, Outcome, PromotionSpec,
};
use champion_model::Report;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::names::{pipeline_identity, run_version};
use crate::observe::Observed;
use crate::views::{DeploymentView, JobState, ReadFailure, RolloutState};

/// The promotion gate's verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The challenger becomes the champion.
    Promote,
    /// The challenger is kept out; the champion stays.
    Reject,
    /// The run produced nothing usable.
    Fail,
}

/// A verdict with its cause, its reason and the two scores it was based on.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Why, as a fixed word: what conditions and metrics are derived from.
    pub cause: Cause,
    /// Why, in full, for the user.
    pub reason: String,
    pub score: Option<f64>,
    pub champion_score: Option<f64>,
    /// The challenger's model.json digest, from its report (None when the report was unusable).
    pub model_sha256: Option<String>,
}

/// Decides whether the challenger described by `report` replaces `champion`.
///
/// `report` is `Err` when report.json was missing or unreadable. The champion's score is the
/// one the trainer measured on the same holdout; when the report has none for the current
/// champion (it was trained against another one, or could not score it), the score recorded at
/// the champion's promotion is used instead, and the reason says so, but only when it was
/// measured in the same metric: scores in two metrics are not compared.
pub fn decide_promotion(
    policy: &PromotionSpec,
    metric: Metric,
    expected_version: &str,
    report: Result<&Report, &ReadFailure>,
    champion: Option<&ChampionStatus>,
) -> Decision {
    let fail = |cause: Cause, reason: String| Decision {
        verdict: Verdict::Fail,
        cause,
        reason,
        score: None,
        champion_score: None,
        model_sha256: None,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return fail(Cause::ReportUnusable, format!("no usable report.json: {e}"));
        }
    };
    if report.metric != metric {
        return fail(
            Cause::ReportUnusable,
            format!(
                "report.json scores {} but the pipeline evaluates {}",
                report.metric, metric
            ),
        );
    }
    if report.model_version != expected_version {
        return fail(
            Cause::ReportUnusable,
            format!(
                "report.json is for version {} but the run wrote version {expected_version}",
                report.model_version
            ),
        );
    }
    let score = report.challenger_score;
    let m = metric.as_str();
    let Some(champion) = champion else {
        let d = |verdict, cause, reason| Decision {
            verdict,
            cause,
            reason,
            score: Some(score),
            champion_score: None,
            model_sha256: Some(report.model_sha256.clone()),
        };
        if score < policy.min_score {
            return d(
                Verdict::Reject,
                Cause::BelowFloor,
                format!(
                    "first model scores {m} {score:.4}, below the floor minScore {}",
                    policy.min_score
                ),
            );
        }
        return match policy.first_model {
            FirstModelPolicy::Promote => d(
                Verdict::Promote,
                Cause::FirstModel,
                format!("first model, {m} {score:.4}"),
            ),
            FirstModelPolicy::Manual => d(
                Verdict::Reject,
                Cause::AwaitsManualPromotion,
                format!(
                    "first model ({m} {score:.4}) awaits manual promotion (firstModel: Manual)"
                ),
            ),
        };
    };
    let same_champion = report.champion_version.as_deref() == Some(champion.version.as_str());
    let (champion_score, basis) = match (same_champion, report.champion_score) {
        (true, Some(s)) => (Some(s), "on the same holdout"),
        _ if champion.score.is_some() && champion.metric != Some(metric) => {
            let recorded = champion
                .metric
                .map_or("an unrecorded metric", Metric::as_str);
            return fail(
                Cause::ChampionNotComparable,
                format!(
                    "report.json did not score champion {} on the holdout, and its score recorded at promotion is in {recorded}, not {m}: the two cannot be compared; the next run scores both again",
                    champion.version
                ),
            );
        }
        _ => (
            champion.score,
            "as recorded at its promotion (the trainer did not score it)",
        ),
    };
    let d = |verdict, cause, reason| Decision {
        verdict,
        cause,
        reason,
        score: Some(score),
        champion_score,
        model_sha256: Some(report.model_sha256.clone()),
    };
    if score < policy.min_score {
        return d(
            Verdict::Reject,
            Cause::BelowFloor,
            format!(
                "challenger {m} {score:.4} is below the floor minScore {}",
                policy.min_score
            ),
        );
    }
    let Some(cs) = champion_score else {
        return d(
            Verdict::Promote,
            Cause::BeatChampion,
            format!(
                "challenger {m} {score:.4}; champion {} has no score",
                champion.version
            ),
        );
    };
    let delta = score - cs;
    if delta > policy.min_improvement {
        d(
            Verdict::Promote,
            Cause::BeatChampion,
            format!(
                "challenger {m} {score:.4} beats champion {} {cs:.4} {basis} by {delta:.4}",
                champion.version
            ),
        )
    } else if delta > 0.0 {
        d(
            Verdict::Reject,
            Cause::WithinMargin,
            format!(
                "challenger {m} {score:.4} beats champion {} {cs:.4} by {delta:.4}, within the margin minImprovement {}",
                champion.version, policy.min_improvement
            ),
        )
    } else if delta == 0.0 {
        d(
            Verdict::Reject,
            Cause::NotBetter,
            format!(
                "challenger {m} {score:.4} equals champion {} {basis}",
                champion.version
            ),
        )
    } else {
        d(
            Verdict::Reject,
            Cause::NotBetter,
            format!(
                "challenger {m} {score:.4} is worse than champion {} {cs:.4} {basis}",
                champion.version
            ),
        )
    }
}

/// One step of a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// spec.suspend: record it, do nothing else.
    Suspended,
    /// The spec asks for what the operator's pod policy does not allow: build nothing.
    PolicyViolation { reason: String },
    /// A predictor rollout is in progress.
    WaitRollout,
    /// The rollout finished: the champion serves.
    RolloutComplete,
    /// The rollout did not progress: revert to the previous champion.
    RolloutFailed { reason: String },
    /// The rollback annotation names a version from the history: roll the predictor to it.
    Rollback {
        entry: HistoryEntry,
        request: String,
    },
    /// The rollback annotation cannot be honoured; remember the request and say why.
    RefuseRollback { request: String, reason: String },
    /// A trainer Job runs (possibly one the status does not know yet: adopt it).
    WaitTraining {
        job: String,
        version: String,
        fingerprint: String,
    },
    /// The tracked Job completed and its report was judged by the promotion gate.
    Judge {
        job: String,
        version: String,
        decision: Decision,
    },
    /// The offline gate promoted the challenger, but `spec.promotion.approval` makes it wait
    /// for a person ([`crate::approval`]).
    AwaitApproval {
        job: String,
        version: String,
        decision: Decision,
        why: String,
    },
    /// An approve or reject annotation names the waiting challenger: act on it.
    Answer {
        answer: crate::approval::Answer,
        version: String,
        /// The annotation's value (acted upon once).
        request: String,
        by: crate::approval::Requester,
    },
    /// An approve or reject annotation names another version than the waiting one: remember
    /// the request and say which version waits.
    IgnoreAnswer {
        answer: crate::approval::Answer,
        request: String,
        waiting: String,
    },
    /// The tracked Job failed (or vanished): why, with the trainer's own words when it left
    /// any.
    TrainingFailed {
        job: String,
        cause: Cause,
        reason: String,
    },
    /// Listing the data failed.
    DataUnavailable { reason: ReadFailure },
    /// The data prefix is empty.
    NoData,
    /// The last run failed; wait before retrying.
    Backoff { until: Timestamp },
    /// A run is due but the operator-wide limit of concurrent runs is reached.
    Queued,
    /// The champion's live inputs drifted past `spec.trigger.onDrift`: launch a trainer Job on
    /// the data present ([`crate::drift`]).
    DriftRun {
        version: String,
        fingerprint: String,
        why: String,
    },
    /// Launch a trainer Job.
    Launch {
        version: String,
        fingerprint: String,
        forced: Option<String>,
    },
    /// The champion's Deployment is missing or out of date: apply it again.
    EnsurePredictor,
    /// Nothing to do until the next poll.
    Idle,
    /// Live analysis of a challenger (canary or shadow), see [`crate::live`].
    Live(crate::live::LiveStep),
}

fn annotation<'a>(mp: &'a ModelPipeline, key: &str) -> Option<&'a str> {
    mp.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn rollout_failed(
    obs: &Observed,
    mp: &ModelPipeline,
    version: &str,
    started: Timestamp,
) -> Option<String> {
    let deadline = i64::from(mp.spec.promotion.rollout_deadline_seconds);
    match &obs.deployment {
        // A stall reported before this rollout started belongs to the rollout it replaced
        // (a revert starts while the failed ReplicaSet's condition is still there).
        Some(DeploymentView {
            rollout: RolloutState::Failed { reason, since },
            version: Some(v),
        }) if v == version && since.is_none_or(|t| t > started) => {
            return Some(match &obs.predictor_failure {
                Some(said) => format!("{reason}; the predictor said: {said}"),
                None => reason.clone(),
            });
        }
        _ => {}
    }
    // The Deployment controller reports a stalled rollout itself; this guard covers a
    // Deployment that never gets that far (deleted, or its controller not running).
    let waited = obs.now.duration_since(started);
    (waited > SignedDuration::from_secs(2 * deadline + 30)).then(|| {
        format!(
            "version {version} not rolled out after {}s",
            waited.as_secs()
        )
    })
}

/// Picks the one step this reconcile takes, in priority order: suspension, a pod-policy
/// violation (nothing is built for such a spec), an ongoing rollout,
/// a rollback request, a missing predictor, an answer to a challenger waiting for approval,
/// the running or finished run (a finished run's promotion passes the approval gate), then
/// the data (new data supersedes a challenger waiting for approval).
pub fn decide(mp: &ModelPipeline, obs: &Observed) -> Step {
    let status = mp.status.clone().unwrap_or_default();
    if mp.spec.suspend {
        return Step::Suspended;
    }
    if let Some(reason) = &obs.policy_violation {
        return Step::PolicyViolation {
            reason: reason.clone(),
        };
    }
    if let Some(rollout) = &status.rollout {
        let ready = matches!(
            &obs.deployment,
            Some(DeploymentView { rollout: RolloutState::Complete, version: Some(v) }) if *v == rollout.version
        );
        if ready {
            return Step::RolloutComplete;
        }
        if let Some(reason) = rollout_failed(obs, mp, &rollout.version, rollout.started_at.0) {
            return Step::RolloutFailed { reason };
        }
        return Step::WaitRollout;
    }
    if let Some(request) = annotation(mp, ANNOTATION_ROLLBACK_TO)
        && status.last_rollback_to.as_deref() != Some(request)
    {
        let request = request.to_string();
        let current = status.champion.as_ref().map(|c| c.version.as_str());
        let entry = status.history.iter().rev().find(|h| {
            h.version == request
                && matches!(
                    h.outcome,
                    Outcome::Promoted | Outcome::Rejected | Outcome::RolledBack
                )
        });
        return match entry {
            _ if current == Some(request.as_str()) => Step::RefuseRollback {
                reason: format!("version {request} is already the champion"),
                request,
            },
            Some(entry) => Step::Rollback {
                entry: entry.clone(),
                request,
            },
            None => Step::RefuseRollback {
                reason: format!(
                    "version {request} is not a promoted or rejected model in status.history"
                ),
                request,
            },
        };
    }
    // Live analysis of a challenger that passed the offline gate (or its cleanup).
    if let Some(step) = crate::live::decide(mp, obs) {
        return step;
    }
    // The champion's predictor was deleted, edited or the spec changed: restore it first, so
    // serving does not wait for a training run.
    if let Some(champion) = &status.champion {
        let stale = match &obs.deployment {
            None => true,
            Some(d) => d.version.as_deref() != Some(champion.version.as_str()),
        };
        if stale || status.observed_generation != mp.metadata.generation {
            return Step::EnsurePredictor;
        }
    }
    // A person's answer to the challenger waiting for approval.
    if let Some(step) = crate::approval::requested(mp, &status) {
        return step;
    }
    // The run the status tracks, if it is still in flight.
    if let Some(ch) = status
        .challenger
        .as_ref()
        .filter(|c| c.state == ChallengerState::Training)
    {
        return match obs.jobs.iter().find(|j| j.name == ch.job).map(|j| &j.state) {
            Some(JobState::Running) => Step::WaitTraining {
                job: ch.job.clone(),
                version: ch.version.clone(),
                fingerprint: ch.data_fingerprint.clone(),
            },
            Some(JobState::Complete) => {
                let missing = ReadFailure::NotRead;
                let other_data;
                let report = match &obs.report {
                    // A report about other data than the run was started for is no verdict on
                    // this run (a stale or planted report.json).
                    Some(Ok(r)) if r.data_fingerprint != ch.data_fingerprint => {
                        other_data = ReadFailure::Parse(format!(
                            "its dataFingerprint {} is not the run's {}",
                            r.data_fingerprint, ch.data_fingerprint
                        ));
                        Err(&other_data)
                    }
                    Some(Ok(r)) => Ok(r),
                    Some(Err(e)) => Err(e),
                    None => Err(&missing),
                };
                let judged = Step::Judge {
                    job: ch.job.clone(),
                    version: ch.version.clone(),
                    decision: decide_promotion(
                        &mp.spec.promotion,
                        mp.spec.evaluation.metric,
                        &ch.version,
                        report,
                        status.champion.as_ref(),
                    ),
                };
                crate::approval::gate(mp, status.champion.as_ref(), judged)
            }
            Some(JobState::Failed(reason)) => Step::TrainingFailed {
                job: ch.job.clone(),
                cause: Cause::JobFailed,
                reason: match &obs.termination_message {
                    Some(msg) => format!("{reason}; trainer said: {msg}"),
                    None => reason.clone(),
                },
            },
            None => Step::TrainingFailed {
                job: ch.job.clone(),
                cause: Cause::JobVanished,
                reason: format!("Job {} disappeared before it finished", ch.job),
            },
        };
    }
    // A running Job the status does not know (the operator stopped between creating it and
    // recording it): adopt it rather than start a second run.
    if let Some(job) = obs.jobs.iter().find(|j| j.state == JobState::Running) {
        return Step::WaitTraining {
            job: job.name.clone(),
            version: job.version.clone(),
            fingerprint: job.fingerprint.clone(),
        };
    }
    let listing = match &obs.data {
        Some(Ok(listing)) => listing,
        Some(Err(reason)) => {
            return Step::DataUnavailable {
                reason: reason.clone(),
            };
        }
        None => return Step::Idle,
    };
    if listing.objects == 0 {
        return Step::NoData;
    }
    let fp = listing.fingerprint.as_str();
    let force = annotation(mp, ANNOTATION_FORCE_RUN)
        .filter(|t| status.last_forced_run.as_deref() != Some(*t));
    let last = status.challenger.as_ref();
    let retry =
        last.is_some_and(|c| c.state == ChallengerState::Failed && c.data_fingerprint == fp);
    if retry
        && force.is_none()
        && let Some(until) = &status.retry_after
        && obs.now < until.0
    {
        return Step::Backoff { until: until.0 };
    }
    let new_data = last.is_none_or(|c| c.data_fingerprint != fp);
    if force.is_some() || new_data || retry {
        if obs.run_slots == Some(0) {
            return Step::Queued;
        }
        let attempt = if retry {
            status.consecutive_failures
        } else {
            0
        };
        return Step::Launch {
            version: unused_version(mp, fp, force, attempt),
            fingerprint: fp.to_string(),
            forced: force.map(str::to_string),
        };
    }
    crate::drift::run_step(mp, obs, &status, fp).unwrap_or(Step::Idle)
}

/// The version of a new run: [`run_version`] with the smallest salt that gives a version this
/// pipeline has not used (not in its history, not its champion, not its last challenger), so
/// data that returns to an earlier fingerprint never relaunches, and never overwrites, an
/// earlier version. (The trainer's create-only writes refuse a version directory that exists
/// even if the history no longer lists it.)
pub fn unused_version(mp: &ModelPipeline, fp: &str, force: Option<&str>, attempt: i32) -> String {
    let identity = pipeline_identity(mp);
    let status = mp.status.as_ref();
    let used = |v: &str| {
        status.is_some_and(|s| {
            s.history.iter().any(|h| h.version == v)
                || s.champion.as_ref().is_some_and(|c| c.version == v)
                || s.challenger.as_ref().is_some_and(|c| c.version == v)
                || s.rollout.as_ref().is_some_and(|r| r.version == v)
        })
    };
    let mut salt = 0;
    loop {
        let version = run_version(&identity, fp, force, attempt, salt);
        if !used(&version) {
            return version;
        }
        salt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{champion, observed, pipeline, report};
    use crate::views::{DataListing, JobView};
    use champion_api::{ChallengerStatus, ModelPipelineStatus, RolloutStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn policy(min_improvement: f64, min_score: f64, first: FirstModelPolicy) -> PromotionSpec {
        PromotionSpec {
            min_improvement,
            min_score,
            first_model: first,
            ..PromotionSpec::default()
        }
    }

    #[test]
    fn promotion_gate_table() {
        use FirstModelPolicy::{Manual, Promote};
        use Verdict::{Fail, Promote as P, Reject as R};
        let champ = champion("champ0000001", 0.70);
        let same = Some("champ0000001");
        // (name, policy, report (score, champion score, champion version) or an error, champion?, verdict, reason fragment)
        type Row<'a> = (
            &'a str,
            PromotionSpec,
            Result<(f64, Option<f64>, Option<&'a str>), &'a str>,
            bool,
            Verdict,
            &'a str,
        );
        let table: Vec<Row> = vec![
            (
                "first model promoted",
                policy(0.0, 0.0, Promote),
                Ok((0.60, None, None)),
                false,
                P,
                "first model",
            ),
            (
                "first model held when manual",
                policy(0.0, 0.0, Manual),
                Ok((0.60, None, None)),
                false,
                R,
                "manual promotion",
            ),
            (
                "first model below the floor",
                policy(0.0, 0.65, Promote),
                Ok((0.60, None, None)),
                false,
                R,
                "below the floor",
            ),
            (
                "better",
                policy(0.0, 0.0, Promote),
                Ok((0.75, Some(0.70), same)),
                true,
                P,
                "beats champion",
            ),
            (
                "equal",
                policy(0.0, 0.0, Promote),
                Ok((0.70, Some(0.70), same)),
                true,
                R,
                "equals champion",
            ),
            (
                "worse",
                policy(0.0, 0.0, Promote),
                Ok((0.65, Some(0.70), same)),
                true,
                R,
                "worse than champion",
            ),
            (
                "within the margin",
                policy(0.02, 0.0, Promote),
                Ok((0.71, Some(0.70), same)),
                true,
                R,
                "within the margin",
            ),
            (
                "beyond the margin",
                policy(0.02, 0.0, Promote),
                Ok((0.73, Some(0.70), same)),
                true,
                P,
                "beats champion",
            ),
            (
                "better but below the floor",
                policy(0.0, 0.9, Promote),
                Ok((0.75, Some(0.70), same)),
                true,
                R,
                "below the floor",
            ),
            (
                "same holdout wins over recorded score",
                policy(0.0, 0.0, Promote),
                Ok((0.68, Some(0.60), same)),
                true,
                P,
                "same holdout",
            ),
            (
                "other champion scored: recorded score used",
                policy(0.0, 0.0, Promote),
                Ok((0.68, Some(0.60), Some("older"))),
                true,
                R,
                "recorded at its promotion",
            ),
            (
                "champion not scored: recorded score used",
                policy(0.0, 0.0, Promote),
                Ok((0.72, None, None)),
                true,
                P,
                "recorded at its promotion",
            ),
            (
                "missing report",
                policy(0.0, 0.0, Promote),
                Err("report.json not found"),
                true,
                Fail,
                "not found",
            ),
            (
                "corrupt report",
                policy(0.0, 0.0, Promote),
                Err("expected value at line 1"),
                false,
                Fail,
                "no usable report.json",
            ),
        ];
        for (name, policy, rep, has_champion, verdict, fragment) in table {
            let rep = rep
                .map(|(s, cs, cv)| report("newversion01", s, cs, cv))
                .map_err(|e| ReadFailure::Fetch(e.to_string()));
            let d = decide_promotion(
                &policy,
                Metric::F1Macro,
                "newversion01",
                rep.as_ref(),
                has_champion.then_some(&champ),
            );
            assert_eq!(d.verdict, verdict, "{name}: {}", d.reason);
            assert!(
                d.reason.contains(fragment),
                "{name}: reason {:?} lacks {fragment:?}",
                d.reason
            );
        }
    }

    #[test]
    fn report_for_another_metric_or_version_fails() {
        let p = PromotionSpec::default();
        let r = report("newversion01", 0.9, None, None);
        let d = decide_promotion(&p, Metric::Accuracy, "newversion01", Ok(&r), None);
        assert_eq!(d.verdict, Verdict::Fail, "{}", d.reason);
        let d = decide_promotion(&p, Metric::F1Macro, "otherversion", Ok(&r), None);
        assert_eq!(d.verdict, Verdict::Fail, "{}", d.reason);
    }

    #[test]
    fn a_recorded_champion_score_in_another_metric_is_not_compared() {
        let p = PromotionSpec::default();
        // The trainer could not score the champion; its recorded score is in accuracy.
        let r = report("newversion01", 0.9, None, None);
        let mut champ = champion("champ0000001", 0.95);
        champ.metric = Some(Metric::Accuracy);
        let d = decide_promotion(&p, Metric::F1Macro, "newversion01", Ok(&r), Some(&champ));
        assert_eq!(d.verdict, Verdict::Fail, "{}", d.reason);
        assert_eq!(d.cause, Cause::ChampionNotComparable);
        assert!(
            d.reason.contains("in accuracy, not f1Macro"),
            "{}",
            d.reason
        );
        champ.metric = None;
        let d = decide_promotion(&p, Metric::F1Macro, "newversion01", Ok(&r), Some(&champ));
        assert_eq!(d.cause, Cause::ChampionNotComparable, "{}", d.reason);
        // The same metric: the recorded score is used, and the reason says so.
        champ.metric = Some(Metric::F1Macro);
        let d = decide_promotion(&p, Metric::F1Macro, "newversion01", Ok(&r), Some(&champ));
        assert_eq!(d.verdict, Verdict::Reject, "{}", d.reason);
        assert!(
            d.reason.contains("recorded at its promotion"),
            "{}",
            d.reason
        );
        // Scored on the same holdout: the metric of the recorded score does not matter.
        champ.metric = Some(Metric::Accuracy);
        let r = report("newversion01", 0.9, Some(0.8), Some("champ0000001"));
        let d = decide_promotion(&p, Metric::F1Macro, "newversion01", Ok(&r), Some(&champ));
        assert_eq!(d.verdict, Verdict::Promote, "{}", d.reason);
    }

    fn with_status(mut mp: ModelPipeline, s: ModelPipelineStatus) -> ModelPipeline {
        mp.status = Some(s);
        mp
    }

    fn challenger(state: ChallengerState, fp: &str) -> ChallengerStatus {
        ChallengerStatus {
            version: "run000000001".into(),
            job: "wine-train-run000000001".into(),
            data_fingerprint: fp.into(),
            state,
            score: None,
            champion_score: None,
            model_sha256: None,
            reason: None,
            started_at: Time(Timestamp::UNIX_EPOCH),
            data_seen_at: None,
        }
    }

    #[test]
    fn new_data_launches_a_run_named_from_the_fingerprint() {
        let obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        let mp = pipeline();
        let step = decide(&mp, &obs);
        assert_eq!(
            step,
            Step::Launch {
                version: unused_version(&mp, "fp1", None, 0),
                fingerprint: "fp1".into(),
                forced: None
            }
        );
    }

    #[test]
    fn data_that_returns_to_an_earlier_fingerprint_gets_a_new_version() {
        let listing = |fp: &str| {
            observed(Some(Ok(DataListing {
                fingerprint: fp.into(),
                objects: 3,
            })))
        };
        let mut mp = pipeline();
        let Step::Launch { version: first, .. } = decide(&mp, &listing("fp1")) else {
            panic!("new data launches");
        };
        // fp1's run was rejected, then fp2 came and was rejected too; now the data is fp1 again.
        let mut status = ModelPipelineStatus {
            history: vec![HistoryEntry {
                version: first.clone(),
                outcome: Outcome::Rejected,
                cause: Some(Cause::NotBetter),
                score: Some(0.5),
                champion_score: None,
                data_fingerprint: Some("fp1".into()),
                model_sha256: None,
                reason: "worse".into(),
                by: None,
                time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..ModelPipelineStatus::default()
        };
        status.challenger = Some(ChallengerStatus {
            version: "fp2version01".into(),
            job: "wine-train-fp2version01".into(),
            data_fingerprint: "fp2".into(),
            state: ChallengerState::Rejected,
            score: None,
            champion_score: None,
            model_sha256: None,
            reason: None,
            started_at: Time(Timestamp::UNIX_EPOCH),
            data_seen_at: None,
        });
        mp.status = Some(status);
        let Step::Launch { version: again, .. } = decide(&mp, &listing("fp1")) else {
            panic!("changed data launches");
        };
        assert_ne!(
            again, first,
            "a version in the history is never launched again"
        );
        let mut other = pipeline();
        other.metadata.namespace = Some("team-b".into());
        assert_ne!(
            unused_version(&other, "fp1", None, 0),
            unused_version(&pipeline(), "fp1", None, 0),
            "another namespace's pipeline of the same name gets other versions"
        );
    }

    #[test]
    fn due_run_waits_for_a_free_run_slot() {
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        obs.run_slots = Some(0);
        assert_eq!(decide(&pipeline(), &obs), Step::Queued);
        obs.run_slots = Some(1);
        assert!(matches!(decide(&pipeline(), &obs), Step::Launch { .. }));
    }

    #[test]
    fn seen_data_is_idle_and_empty_data_waits() {
        let mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                challenger: Some(challenger(ChallengerState::Rejected, "fp1")),
                ..Default::default()
            },
        );
        let obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        assert_eq!(decide(&mp, &obs), Step::Idle);
        let obs = observed(Some(Ok(DataListing {
            fingerprint: "e".into(),
            objects: 0,
        })));
        assert_eq!(decide(&pipeline(), &obs), Step::NoData);
    }

    #[test]
    fn a_running_job_blocks_a_second_run_even_when_untracked() {
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp2".into(),
            objects: 3,
        })));
        obs.jobs.push(JobView {
            name: "wine-train-x".into(),
            version: "x".into(),
            fingerprint: "fp1".into(),
            state: JobState::Running,
        });
        let step = decide(&pipeline(), &obs);
        assert_eq!(
            step,
            Step::WaitTraining {
                job: "wine-train-x".into(),
                version: "x".into(),
                fingerprint: "fp1".into()
            }
        );
    }

    #[test]
    fn tracked_job_outcomes() {
        let mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                challenger: Some(challenger(ChallengerState::Training, "fp1")),
                ..Default::default()
            },
        );
        let job = |state| JobView {
            name: "wine-train-run000000001".into(),
            version: "run000000001".into(),
            fingerprint: "fp1".into(),
            state,
        };
        let mut obs = observed(None);
        obs.jobs = vec![job(JobState::Complete)];
        assert!(
            matches!(decide(&mp, &obs), Step::Judge { decision, .. } if decision.verdict == Verdict::Fail && decision.cause == Cause::ReportUnusable),
            "a complete Job whose report was not read fails its run"
        );
        obs.report = Some(Ok(report("run000000001", 0.8, None, None)));
        assert!(
            matches!(decide(&mp, &obs), Step::Judge { decision, .. } if decision.verdict == Verdict::Promote && decision.cause == Cause::FirstModel && decision.model_sha256.is_some())
        );
        let mut other_data = report("run000000001", 0.99, None, None);
        other_data.data_fingerprint = "fp-planted".into();
        obs.report = Some(Ok(other_data));
        assert!(
            matches!(decide(&mp, &obs), Step::Judge { decision, .. } if decision.verdict == Verdict::Fail
                && decision.cause == Cause::ReportUnusable
                && decision.reason.contains("dataFingerprint fp-planted is not the run's fp1")),
            "a report about other data than the run's is no verdict on the run"
        );
        obs.jobs = vec![job(JobState::Failed("exit 1: bad row".into()))];
        assert_eq!(
            decide(&mp, &obs),
            Step::TrainingFailed {
                job: "wine-train-run000000001".into(),
                cause: Cause::JobFailed,
                reason: "exit 1: bad row".into()
            }
        );
        obs.termination_message = Some("wine-3.csv line 17: expected 13 columns".into());
        assert!(
            matches!(decide(&mp, &obs), Step::TrainingFailed { reason, .. } if reason == "exit 1: bad row; trainer said: wine-3.csv line 17: expected 13 columns")
        );
        obs.jobs.clear();
        assert!(
            matches!(decide(&mp, &obs), Step::TrainingFailed { reason, cause: Cause::JobVanished, .. } if reason.contains("disappeared"))
        );
    }

    #[test]
    fn failed_run_backs_off_then_retries_with_a_new_version() {
        let until = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(100);
        let mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                challenger: Some(challenger(ChallengerState::Failed, "fp1")),
                consecutive_failures: 2,
                retry_after: Some(Time(until)),
                ..Default::default()
            },
        );
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(50);
        assert_eq!(decide(&mp, &obs), Step::Backoff { until });
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(101);
        let step = decide(&mp, &obs);
        assert_eq!(
            step,
            Step::Launch {
                version: unused_version(&mp, "fp1", None, 2),
                fingerprint: "fp1".into(),
                forced: None
            }
        );
        assert_ne!(
            unused_version(&mp, "fp1", None, 2),
            unused_version(&mp, "fp1", None, 0)
        );
    }

    #[test]
    fn force_annotation_runs_once_per_value() {
        let mut mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                challenger: Some(challenger(ChallengerState::Rejected, "fp1")),
                ..Default::default()
            },
        );
        mp.metadata.annotations =
            Some([(ANNOTATION_FORCE_RUN.to_string(), "t1".to_string())].into());
        let obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        assert!(matches!(decide(&mp, &obs), Step::Launch { forced: Some(t), .. } if t == "t1"));
        if let Some(s) = mp.status.as_mut() {
            s.last_forced_run = Some("t1".into());
        }
        assert_eq!(decide(&mp, &obs), Step::Idle);
    }

    #[test]
    fn rollback_annotation_picks_a_history_entry_once() {
        let entry = HistoryEntry {
            version: "old000000001".into(),
            outcome: Outcome::Promoted,
            cause: Some(Cause::FirstModel),
            score: Some(0.6),
            champion_score: None,
            data_fingerprint: Some("fp0".into()),
            model_sha256: None,
            reason: "first".into(),
            by: None,
            time: Time(Timestamp::UNIX_EPOCH),
        };
        let mut mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                champion: Some(champion("cur000000001", 0.7)),
                history: vec![entry.clone()],
                ..Default::default()
            },
        );
        mp.metadata.annotations = Some(
            [(
                ANNOTATION_ROLLBACK_TO.to_string(),
                "old000000001".to_string(),
            )]
            .into(),
        );
        let obs = observed(None);
        assert_eq!(
            decide(&mp, &obs),
            Step::Rollback {
                entry,
                request: "old000000001".into()
            }
        );
        mp.metadata.annotations =
            Some([(ANNOTATION_ROLLBACK_TO.to_string(), "nope".to_string())].into());
        assert!(
            matches!(decide(&mp, &obs), Step::RefuseRollback { reason, .. } if reason.contains("not a promoted"))
        );
        if let Some(s) = mp.status.as_mut() {
            s.last_rollback_to = Some("nope".into());
        }
        assert!(!matches!(
            decide(&mp, &obs),
            Step::RefuseRollback { .. } | Step::Rollback { .. }
        ));
    }

    #[test]
    fn rollout_completes_fails_or_waits() {
        let mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                champion: Some(champion("new000000001", 0.8)),
                rollout: Some(RolloutStatus {
                    version: "new000000001".into(),
                    previous: Some(champion("old000000001", 0.7)),
                    started_at: Time(Timestamp::UNIX_EPOCH),
                    data_seen_at: None,
                    cause: Outcome::Promoted,
                }),
                ..Default::default()
            },
        );
        let mut obs = observed(None);
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(5);
        let view = |v: &str, rollout| {
            Some(DeploymentView {
                version: Some(v.into()),
                rollout,
            })
        };
        obs.deployment = view("new000000001", RolloutState::Progressing);
        assert_eq!(decide(&mp, &obs), Step::WaitRollout);
        obs.deployment = view("new000000001", RolloutState::Complete);
        assert_eq!(decide(&mp, &obs), Step::RolloutComplete);
        obs.deployment = view("old000000001", RolloutState::Complete);
        assert_eq!(
            decide(&mp, &obs),
            Step::WaitRollout,
            "the old version being available is not the new rollout"
        );
        let stalled = |secs: i64| RolloutState::Failed {
            reason: "ProgressDeadlineExceeded".into(),
            since: Some(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(secs)),
        };
        obs.deployment = view("new000000001", stalled(3));
        assert_eq!(
            decide(&mp, &obs),
            Step::RolloutFailed {
                reason: "ProgressDeadlineExceeded".into()
            }
        );
        obs.predictor_failure =
            Some("refusing to serve model.json: its SHA-256 is a, not b".into());
        assert_eq!(
            decide(&mp, &obs),
            Step::RolloutFailed {
                reason: "ProgressDeadlineExceeded; the predictor said: refusing to serve \
                         model.json: its SHA-256 is a, not b"
                    .into()
            },
            "the predictor's own reason is carried into the revert"
        );
        obs.predictor_failure = None;
        obs.deployment = view("new000000001", stalled(-1));
        assert_eq!(
            decide(&mp, &obs),
            Step::WaitRollout,
            "a stall reported before this rollout started is the replaced rollout's"
        );
        obs.deployment = view("new000000001", RolloutState::Progressing);
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
        assert!(matches!(decide(&mp, &obs), Step::RolloutFailed { .. }));
    }

    #[test]
    fn suspended_pipeline_does_nothing_else() {
        let mut mp = pipeline();
        mp.spec.suspend = true;
        let obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        assert_eq!(decide(&mp, &obs), Step::Suspended);
    }

    #[test]
    fn missing_predictor_is_applied_again() {
        let mut mp = with_status(
            pipeline(),
            ModelPipelineStatus {
                champion: Some(champion("cur000000001", 0.7)),
                challenger: Some(challenger(ChallengerState::Promoted, "fp1")),
                observed_generation: Some(1),
                ..Default::default()
            },
        );
        mp.metadata.generation = Some(1);
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        assert_eq!(decide(&mp, &obs), Step::EnsurePredictor);
        obs.deployment = Some(DeploymentView {
            version: Some("cur000000001".into()),
            rollout: RolloutState::Complete,
        });
        assert_eq!(decide(&mp, &obs), Step::Idle);
        // A deleted predictor is restored first, even while a run trains.
        if let Some(st) = mp.status.as_mut() {
            st.challenger = Some(challenger(ChallengerState::Training, "fp2"));
        }
        let serving = obs.deployment.take();
        assert_eq!(decide(&mp, &obs), Step::EnsurePredictor);
        obs.deployment = serving;
        mp.metadata.generation = Some(2);
        assert_eq!(
            decide(&mp, &obs),
            Step::EnsurePredictor,
            "a spec change reaches the predictor"
        );
    }
}
