//! The step's consequences, computed: a pure function from (pipeline, what was observed, the
//! step) to the next status and the [`Effects`] that go with it. No client, no clock (the time
//! is the one observed), so every step is tested as a table without an API server.

use std::time::Duration;

use champion_api::{
    Address, Cause, ChallengerState, ChallengerStatus, ChampionStatus, DataStatus, HistoryEntry,
    LastRun, ModelPipeline, ModelPipelineStatus, Outcome, RolloutStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::approval::{self, Answer, Requester};
use crate::build::{build_job, build_predictor, build_service};
use crate::decide::{Decision, Step, Verdict};
use crate::effects::{Desired, Effects};
use crate::events::{EventSpec, Reason, Related};
use crate::metrics::{MetricEvent, RollbackCause, RunOutcome};
use crate::names::predictor_name;
use crate::observe::Observed;
use crate::status::{derive, push_history};

/// The next status and what goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub status: ModelPipelineStatus,
    pub effects: Effects,
}

/// How long to wait between polls of the data.
pub fn poll_interval(mp: &ModelPipeline) -> Duration {
    let d: Duration = mp.spec.data.poll_interval.into();
    d.max(Duration::from_secs(1))
}

/// Exponential back-off after `failures` failed runs in a row: 10 s, 20 s, 40 s, … capped at
/// 10 minutes.
pub fn backoff(failures: i32) -> SignedDuration {
    let exp = failures.clamp(1, 7) - 1;
    SignedDuration::from_secs((10i64 << exp).min(600))
}

/// The status and effects that `step` leads to.
pub fn transition(mp: &ModelPipeline, obs: &Observed, step: &Step) -> Transition {
    let mut t = Next {
        mp,
        now: obs.now,
        status: mp.status.clone().unwrap_or_default(),
        effects: Effects {
            requeue: poll_interval(mp),
            ..Effects::default()
        },
    };
    record_listing(&mut t.status, obs);
    crate::drift::record(&mut t.status, obs);
    t.step(step);
    if obs.listing_pending {
        t.effects.requeue = t.effects.requeue.min(crate::listings::RECHECK);
    }
    let Next {
        mut status,
        effects,
        ..
    } = t;
    derive(
        mp,
        &mut status,
        obs,
        *step == Step::Queued,
        effects.applies_predictor(),
    );
    Transition { status, effects }
}

/// The data listing as `status.data`: `seenAt` moves only when the fingerprint changes.
fn record_listing(status: &mut ModelPipelineStatus, obs: &Observed) {
    let Some(Ok(listing)) = &obs.data else {
        return;
    };
    match &mut status.data {
        Some(d) if d.fingerprint == listing.fingerprint => d.objects = listing.objects as i64,
        _ => {
            status.data = Some(DataStatus {
                fingerprint: listing.fingerprint.clone(),
                objects: listing.objects as i64,
                seen_at: Time(obs.now),
            })
        }
    }
}

fn score_text(s: Option<f64>) -> String {
    s.map_or_else(|| "none".to_string(), |s| format!("{s:.4}"))
}

/// A transition being built.
pub(crate) struct Next<'a> {
    pub(crate) mp: &'a ModelPipeline,
    pub(crate) now: Timestamp,
    pub(crate) status: ModelPipelineStatus,
    pub(crate) effects: Effects,
}

/// The in-cluster URL of `mp`'s predictor Service.
pub fn predictor_url(mp: &ModelPipeline) -> String {
    format!(
        "http://{}.{}.svc.cluster.local:{}",
        predictor_name(mp.metadata.name.as_deref().unwrap_or_default()),
        mp.metadata.namespace.as_deref().unwrap_or_default(),
        mp.spec.predictor.port
    )
}

impl Next<'_> {
    /// Queues an Event; it names the object it is also about: the run's Job for training
    /// and judging, the predictor Deployment for rollouts.
    pub(crate) fn event(&mut self, reason: Reason, note: String) {
        let job = || {
            self.status
                .challenger
                .as_ref()
                .map(|c| Related::Job(c.job.clone()))
        };
        let deployment = || {
            Some(Related::Deployment(predictor_name(
                self.mp.metadata.name.as_deref().unwrap_or_default(),
            )))
        };
        let related = match reason {
            Reason::TrainingStarted
            | Reason::TrainingFailed
            | Reason::CandidateRejected
            | Reason::ModelPromoted => job(),
            Reason::RolloutFailed | Reason::RolledBack | Reason::RolloutCompleted => deployment(),
            Reason::LiveAnalysisStarted
            | Reason::LiveAnalysisStep
            | Reason::LiveAnalysisPassed
            | Reason::LiveAnalysisFailed => deployment(),
            Reason::AwaitingApproval => job(),
            Reason::DriftDetected => deployment(),
            Reason::RollbackRefused
            | Reason::ApprovalIgnored
            | Reason::DataUnavailable
            | Reason::PolicyViolation
            | Reason::ReconcileFailed => None,
        };
        self.effects.events.push(EventSpec {
            reason,
            note,
            related,
        });
    }

    /// Records the run that just finished as `status.lastRun`, numbered after the one before.
    pub(crate) fn finish_run(
        &mut self,
        version: &str,
        outcome: Outcome,
        scores: (Option<f64>, Option<f64>),
    ) {
        let number = self.status.last_run.as_ref().map_or(0, |r| r.number) + 1;
        self.status.last_run = Some(LastRun {
            number,
            version: version.to_string(),
            outcome,
            score: scores.0,
            champion_score: scores.1,
            finished_at: Time(self.now),
        });
    }

    pub(crate) fn count(&mut self, m: MetricEvent) {
        self.effects.metrics.push(m);
    }

    pub(crate) fn history(&mut self, entry: HistoryEntry) {
        self.status.last_outcome = Some(entry.outcome);
        push_history(&mut self.status.history, entry, self.mp.spec.history_limit);
    }

    /// Whether condition `type_` already says `reason` (and `message`, when given): a failure
    /// already shown is not announced again by an Event on every poll.
    fn already_shown(&self, type_: &str, reason: &str, message: Option<&str>) -> bool {
        self.status.conditions.iter().any(|c| {
            c.type_ == type_ && c.reason == reason && message.is_none_or(|m| c.message == m)
        })
    }

    pub(crate) fn entry(
        &self,
        version: &str,
        outcome: Outcome,
        cause: Cause,
        reason: String,
    ) -> HistoryEntry {
        HistoryEntry {
            version: version.to_string(),
            outcome,
            cause: Some(cause),
            score: None,
            champion_score: None,
            data_fingerprint: None,
            model_sha256: None,
            reason,
            by: None,
            time: Time(self.now),
        }
    }

    /// When the data with `fingerprint` was first seen, if it is the data last listed.
    fn data_seen_at(&self, fingerprint: &str) -> Option<Time> {
        self.status
            .data
            .as_ref()
            .filter(|d| d.fingerprint == fingerprint)
            .map(|d| d.seen_at.clone())
    }

    /// The challenger of a run that trains `version` in Job `job` on data `fingerprint`.
    fn training(&self, version: &str, job: &str, fingerprint: &str) -> ChallengerStatus {
        ChallengerStatus {
            version: version.to_string(),
            job: job.to_string(),
            data_fingerprint: fingerprint.to_string(),
            state: ChallengerState::Training,
            score: None,
            champion_score: None,
            model_sha256: None,
            reason: None,
            started_at: Time(self.now),
            data_seen_at: self.data_seen_at(fingerprint),
        }
    }

    /// The predictor Deployment serving `champion`, and its Service, whose address the status
    /// shows.
    fn predictor(&mut self, champion: &ChampionStatus) {
        // During a shadow run the champion's pods also carry SHADOW_URL / SHADOW_PERCENT.
        let part = crate::live::champion_part(self.mp, &self.status, None);
        self.effects.objects.extend([
            Desired::Deployment(Box::new(build_predictor(self.mp, champion, &part))),
            Desired::Service(Box::new(build_service(self.mp))),
        ]);
        self.status.address = Some(Address {
            url: predictor_url(self.mp),
        });
    }

    /// Starts rolling the predictor to `champion`, remembering the champion to revert to.
    pub(crate) fn start_rollout(
        &mut self,
        champion: ChampionStatus,
        cause: Outcome,
        seen: Option<Time>,
    ) {
        self.predictor(&champion);
        let previous = self.status.champion.replace(champion.clone());
        self.status.rollout = Some(RolloutStatus {
            version: champion.version.clone(),
            previous: previous.filter(|p| p.version != champion.version),
            started_at: Time(self.now),
            data_seen_at: seen,
            cause,
        });
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Suspended | Step::Idle | Step::NoData | Step::Queued => {}
            Step::PolicyViolation { reason } => {
                let known = self.already_shown(
                    champion_api::condition::DEGRADED,
                    "PolicyViolation",
                    Some(reason),
                );
                if !known {
                    self.event(Reason::PolicyViolation, reason.clone());
                }
            }
            Step::DataUnavailable { reason } => {
                // Once per failure, not once per poll: only when DataAvailable was not
                // already False for this reason.
                // (DataAvailable carries a failure reason only while False.)
                let known = self.already_shown(
                    champion_api::condition::DATA_AVAILABLE,
                    reason.reason(),
                    None,
                );
                // A store that keeps failing is asked less and less often (from 10 s up to
                // 5 min, by how long it has been failing), so failing stores, however short
                // their poll interval, cannot crowd the reconciles of working pipelines.
                let failing_for = self
                    .status
                    .conditions
                    .iter()
                    .find(|c| {
                        c.type_ == champion_api::condition::DATA_AVAILABLE && c.status == "False"
                    })
                    .map_or(Duration::ZERO, |c| {
                        self.now
                            .duration_since(c.last_transition_time.0)
                            .unsigned_abs()
                    });
                self.effects.requeue = self
                    .effects
                    .requeue
                    .max(failing_for.clamp(Duration::from_secs(10), Duration::from_secs(300)));
                if !known {
                    self.event(
                        Reason::DataUnavailable,
                        format!(
                            "the data at {} cannot be listed: {reason}",
                            self.mp.spec.data.uri
                        ),
                    );
                }
            }
            Step::WaitTraining {
                job,
                version,
                fingerprint,
            } => {
                let tracked = self
                    .status
                    .challenger
                    .as_ref()
                    .is_some_and(|c| c.job == *job && c.state == ChallengerState::Training);
                if !tracked {
                    // A Job the status does not know (the operator stopped between creating
                    // and recording it): adopt it.
                    self.status.challenger = Some(self.training(version, job, fingerprint));
                }
            }
            Step::WaitRollout => {
                self.effects.requeue = self.effects.requeue.min(Duration::from_secs(10));
            }
            Step::Backoff { until } => {
                // The back-off holds the retry of the same data, not the look for new data:
                // keep polling, and look again when the back-off ends if that comes first.
                let wait = until.duration_since(self.now).unsigned_abs();
                let poll = self.effects.requeue;
                self.effects.requeue = wait.clamp(Duration::from_secs(1), poll);
            }
            Step::Launch {
                version,
                fingerprint,
                forced,
            } => self.launch(version, fingerprint, forced.as_deref()),
            Step::DriftRun {
                version,
                fingerprint,
                why,
            } => {
                if let Some(d) = self.status.drift.as_mut() {
                    d.last_triggered_at = Some(Time(self.now));
                }
                self.event(
                    Reason::DriftDetected,
                    format!("{why}: training version {version} on the data present"),
                );
                self.launch_because(version, fingerprint, None, format!("drift ({why})"));
            }
            Step::Judge {
                version, decision, ..
            } => self.judge(version, decision),
            Step::TrainingFailed { cause, reason, .. } => self.fail_run(*cause, reason.clone()),
            Step::AwaitApproval {
                version,
                decision,
                why,
                ..
            } => self.await_approval(version, decision, why),
            Step::Answer {
                answer,
                version,
                request,
                by,
            } => self.answer(*answer, version, request, by),
            Step::IgnoreAnswer {
                answer,
                request,
                waiting,
            } => self.ignore_answer(*answer, request, waiting),
            Step::RolloutComplete => {
                let Some(r) = self.status.rollout.take() else {
                    return;
                };
                if r.cause == Outcome::Promoted
                    && let Some(seen) = &r.data_seen_at
                {
                    let secs = self.now.duration_since(seen.0).as_secs_f64();
                    self.count(MetricEvent::DataToServing(secs));
                }
                let url = self
                    .status
                    .address
                    .as_ref()
                    .map_or_else(|| predictor_url(self.mp), |a| a.url.clone());
                self.event(
                    Reason::RolloutCompleted,
                    format!("version {} serves at {url}", r.version),
                );
            }
            Step::RolloutFailed { reason } => self.revert(reason),
            Step::Rollback { entry, request } => self.roll_back(entry, request),
            Step::RefuseRollback { request, reason } => {
                self.status.last_rollback_to = Some(request.clone());
                self.event(
                    Reason::RollbackRefused,
                    format!("rollback to {request} refused: {reason}"),
                );
            }
            Step::Live(live) => self.live_step(live),
            Step::EnsurePredictor => {
                if let Some(champion) = self.status.champion.clone() {
                    self.predictor(&champion);
                }
            }
        }
    }

    fn launch(&mut self, version: &str, fingerprint: &str, forced: Option<&str>) {
        if let Some(token) = forced {
            self.status.last_forced_run = Some(token.to_string());
        }
        let why = match forced {
            Some(t) => format!("forced by annotation ({t})"),
            None => format!(
                "new data {}",
                fingerprint.chars().take(12).collect::<String>()
            ),
        };
        self.launch_because(version, fingerprint, forced, why);
    }

    /// Launches the trainer Job of `version` on `fingerprint`, for the reason `why`.
    fn launch_because(
        &mut self,
        version: &str,
        fingerprint: &str,
        forced: Option<&str>,
        why: String,
    ) {
        self.supersede_waiting(version, fingerprint, forced);
        let job = build_job(self.mp, version, fingerprint, self.status.champion.as_ref());
        let job_name = job.metadata.name.clone().unwrap_or_default();
        self.effects.objects.push(Desired::Job(Box::new(job)));
        self.status.challenger = Some(self.training(version, &job_name, fingerprint));
        self.count(MetricEvent::RunStarted);
        self.event(
            Reason::TrainingStarted,
            format!("Job {job_name} trains version {version}: {why}"),
        );
    }

    /// Records a failed run and schedules the retry; the champion is untouched.
    fn fail_run(&mut self, cause: Cause, reason: String) {
        let status = &mut self.status;
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        let delay = backoff(status.consecutive_failures);
        status.retry_after = Some(Time(self.now + delay));
        let (version, fp) = match status.challenger.as_mut() {
            Some(c) => {
                c.state = ChallengerState::Failed;
                c.reason = Some(reason.clone());
                (c.version.clone(), Some(c.data_fingerprint.clone()))
            }
            None => (String::new(), None),
        };
        let failures = status.consecutive_failures;
        self.finish_run(&version, Outcome::Failed, (None, None));
        let mut h = self.entry(&version, Outcome::Failed, cause, reason.clone());
        h.data_fingerprint = fp;
        self.history(h);
        self.count(MetricEvent::RunFinished(RunOutcome::Failed));
        self.event(
            Reason::TrainingFailed,
            format!(
                "version {version} failed: {reason}; retry in {}s (failure {failures} in a row); the champion is untouched",
                delay.as_secs()
            ),
        );
    }

    fn judge(&mut self, version: &str, decision: &Decision) {
        if decision.verdict == Verdict::Fail {
            self.fail_run(decision.cause, decision.reason.clone());
            return;
        }
        let metric = self.mp.spec.evaluation.metric;
        let (fp, seen) = match self.status.challenger.as_mut() {
            Some(c) => {
                c.score = decision.score;
                c.champion_score = decision.champion_score;
                c.reason = Some(decision.reason.clone());
                c.state = if decision.verdict == Verdict::Promote {
                    ChallengerState::Promoted
                } else {
                    ChallengerState::Rejected
                };
                (c.data_fingerprint.clone(), c.data_seen_at.clone())
            }
            None => (String::new(), None),
        };
        self.status.consecutive_failures = 0;
        self.status.retry_after = None;
        let scores = format!(
            "challenger {metric} {}, champion {}",
            score_text(decision.score),
            score_text(decision.champion_score)
        );
        let outcome = if decision.verdict == Verdict::Promote {
            let champion = ChampionStatus {
                version: version.to_string(),
                model_uri: self.mp.model_uri(version),
                score: decision.score,
                metric: Some(metric),
                data_fingerprint: fp.clone(),
                model_sha256: decision.model_sha256.clone(),
                promoted_at: Time(self.now),
            };
            // The approval gate (promotion.approval) goes before this point. A Shadow or
            // Canary strategy judges the challenger on live traffic first (crate::live); its
            // end records the outcome.
            if self.start_live(&champion, decision, None) {
                return;
            }
            self.start_rollout(champion, Outcome::Promoted, seen);
            self.count(MetricEvent::RunFinished(RunOutcome::Promoted));
            self.event(
                Reason::ModelPromoted,
                format!("version {version} promoted ({scores}): {}", decision.reason),
            );
            Outcome::Promoted
        } else {
            self.count(MetricEvent::RunFinished(RunOutcome::Rejected));
            self.event(
                Reason::CandidateRejected,
                format!("version {version} rejected ({scores}): {}", decision.reason),
            );
            Outcome::Rejected
        };
        self.finish_run(version, outcome, (decision.score, decision.champion_score));
        let mut h = self.entry(version, outcome, decision.cause, decision.reason.clone());
        h.score = decision.score;
        h.champion_score = decision.champion_score;
        h.data_fingerprint = Some(fp);
        h.model_sha256 = decision.model_sha256.clone();
        self.history(h);
    }

    /// The challenger passed the offline gate and waits for a person (see [`crate::approval`]):
    /// it keeps both scores and its model digest; no history entry until it is answered.
    fn await_approval(&mut self, version: &str, decision: &Decision, why: &str) {
        if let Some(c) = self.status.challenger.as_mut() {
            c.state = ChallengerState::AwaitingApproval;
            c.score = decision.score;
            c.champion_score = decision.champion_score;
            c.model_sha256 = decision.model_sha256.clone();
            c.reason = Some(format!("{}; {why}", decision.reason));
        }
        self.status.consecutive_failures = 0;
        self.status.retry_after = None;
        let message = match approval::waiting(&self.status) {
            Some(c) => approval::waiting_message(self.mp, c, self.status.champion.as_ref()),
            None => format!("version {version} waits for approval"),
        };
        self.event(Reason::AwaitingApproval, format!("{message} ({why})"));
    }

    /// A person approved or rejected the waiting challenger: promote it through the usual
    /// rollout, or reject it with the champion untouched; the history says who asked.
    fn answer(&mut self, answer: Answer, version: &str, request: &str, by: &Requester) {
        let Some(c) = approval::waiting(&self.status).cloned() else {
            return;
        };
        let metric = self.mp.spec.evaluation.metric;
        let reason = approval::answered_reason(answer, by, &c);
        let scores = format!(
            "challenger {metric} {}, champion {}",
            score_text(c.score),
            score_text(c.champion_score)
        );
        let (outcome, cause, state) = match answer {
            Answer::Approve => {
                self.status.last_approve = Some(request.to_string());
                let champion = ChampionStatus {
                    version: version.to_string(),
                    model_uri: self.mp.model_uri(version),
                    score: c.score,
                    metric: Some(metric),
                    data_fingerprint: c.data_fingerprint.clone(),
                    model_sha256: c.model_sha256.clone(),
                    promoted_at: Time(self.now),
                };
                // Approval is the gate before live analysis: with a Shadow or Canary strategy
                // the approved challenger is judged on live traffic next, and the history entry
                // that ends that analysis names who approved it.
                let approved = Decision {
                    verdict: Verdict::Promote,
                    cause: Cause::Approved,
                    reason: format!("approved by {by}"),
                    score: c.score,
                    champion_score: c.champion_score,
                    model_sha256: c.model_sha256.clone(),
                };
                if self.start_live(&champion, &approved, Some(&by.who)) {
                    if let Some(ch) = self.status.challenger.as_mut() {
                        ch.reason = Some(reason);
                    }
                    return;
                }
                self.start_rollout(champion, Outcome::Promoted, c.data_seen_at.clone());
                self.count(MetricEvent::RunFinished(RunOutcome::Promoted));
                self.event(
                    Reason::ModelPromoted,
                    format!("version {version} promoted on approval by {by} ({scores})"),
                );
                (
                    Outcome::Promoted,
                    Cause::Approved,
                    ChallengerState::Promoted,
                )
            }
            Answer::Reject => {
                self.status.last_reject = Some(request.to_string());
                let champion = self
                    .status
                    .champion
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |c| c.version.clone());
                self.count(MetricEvent::RunFinished(RunOutcome::Rejected));
                self.event(
                    Reason::CandidateRejected,
                    format!(
                        "version {version} rejected by {by} ({scores}); the champion ({champion}) is untouched"
                    ),
                );
                (
                    Outcome::Rejected,
                    Cause::RejectedByUser,
                    ChallengerState::Rejected,
                )
            }
        };
        if let Some(ch) = self.status.challenger.as_mut() {
            ch.state = state;
            ch.reason = Some(reason.clone());
        }
        self.finish_run(version, outcome, (c.score, c.champion_score));
        let mut h = self.entry(version, outcome, cause, reason);
        h.score = c.score;
        h.champion_score = c.champion_score;
        h.data_fingerprint = Some(c.data_fingerprint.clone());
        h.model_sha256 = c.model_sha256.clone();
        h.by = Some(by.who.clone());
        self.history(h);
    }

    /// An approve or reject request naming another version: acknowledged once, with a Warning
    /// naming the version that waits.
    fn ignore_answer(&mut self, answer: Answer, request: &str, waiting: &str) {
        match answer {
            Answer::Approve => self.status.last_approve = Some(request.to_string()),
            Answer::Reject => self.status.last_reject = Some(request.to_string()),
        }
        self.event(
            Reason::ApprovalIgnored,
            format!(
                "{}={request} ignored: version {waiting} is the one waiting for approval; {}",
                answer.annotation(),
                approval::commands(self.mp, waiting)
            ),
        );
    }

    /// A new run starts while a challenger waits for approval: the waiting one is recorded as
    /// rejected (cause Superseded); the new run's candidate takes its place.
    fn supersede_waiting(&mut self, version: &str, fingerprint: &str, forced: Option<&str>) {
        let Some(c) = approval::waiting(&self.status).cloned() else {
            return;
        };
        let why = match forced {
            Some(t) => format!("a forced run ({t}) trains version {version}"),
            None => format!(
                "new data {} trains version {version}",
                fingerprint.chars().take(12).collect::<String>()
            ),
        };
        let metric = self.mp.spec.evaluation.metric;
        let reason = format!("superseded while waiting for approval: {why}");
        self.count(MetricEvent::RunFinished(RunOutcome::Rejected));
        self.event(
            Reason::CandidateRejected,
            format!(
                "version {} (challenger {metric} {}, champion {}) no longer waits for approval: {why}",
                c.version,
                score_text(c.score),
                score_text(c.champion_score)
            ),
        );
        self.finish_run(&c.version, Outcome::Rejected, (c.score, c.champion_score));
        let mut h = self.entry(&c.version, Outcome::Rejected, Cause::Superseded, reason);
        h.score = c.score;
        h.champion_score = c.champion_score;
        h.data_fingerprint = Some(c.data_fingerprint.clone());
        h.model_sha256 = c.model_sha256.clone();
        self.history(h);
    }

    /// The rollout did not progress: revert to the champion before it, if there was one.
    fn revert(&mut self, reason: &str) {
        let Some(r) = self.status.rollout.take() else {
            return;
        };
        let failed = r.version.clone();
        let note = match &r.previous {
            Some(p) => format!(
                "rollout of version {failed} did not progress ({reason}); reverting to version {}",
                p.version
            ),
            None => format!(
                "rollout of version {failed} did not progress ({reason}); no earlier champion to revert to"
            ),
        };
        self.event(Reason::RolloutFailed, note.clone());
        let h = self.entry(&failed, Outcome::RolledBack, Cause::RolloutStalled, note);
        self.history(h);
        self.status.champion = None;
        if let Some(previous) = r.previous {
            let back_to = previous.version.clone();
            self.start_rollout(previous, Outcome::RolledBack, None);
            self.count(MetricEvent::RolledBack(RollbackCause::RolloutFailed));
            self.event(
                Reason::RolledBack,
                format!("predictor rolled back from version {failed} to version {back_to}"),
            );
        }
    }

    /// Rolls the predictor to a version from the history, as the annotation asked.
    fn roll_back(&mut self, target: &HistoryEntry, request: &str) {
        self.status.last_rollback_to = Some(request.to_string());
        let from = self
            .status
            .champion
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.version.clone());
        let champion = ChampionStatus {
            version: target.version.clone(),
            model_uri: self.mp.model_uri(&target.version),
            score: target.score,
            metric: Some(self.mp.spec.evaluation.metric),
            data_fingerprint: target.data_fingerprint.clone().unwrap_or_default(),
            model_sha256: target.model_sha256.clone(),
            promoted_at: Time(self.now),
        };
        self.start_rollout(champion, Outcome::RolledBack, None);
        let note = format!(
            "rolled back from version {from} to version {} on request",
            target.version
        );
        let mut h = self.entry(
            &target.version,
            Outcome::RolledBack,
            Cause::RollbackRequested,
            note.clone(),
        );
        h.score = target.score;
        h.data_fingerprint = target.data_fingerprint.clone();
        self.history(h);
        self.count(MetricEvent::RolledBack(RollbackCause::Requested));
        self.event(Reason::RolledBack, note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Decision;
    use crate::fixtures::{champion, observed, pipeline, training_challenger};
    use crate::views::DataListing;
    use k8s_openapi::jiff::SignedDuration;

    /// Kinds of the objects a transition applies, in order.
    fn kinds(e: &Effects) -> Vec<&'static str> {
        e.objects
            .iter()
            .map(|o| match o {
                Desired::Job(_) => "Job",
                Desired::Deployment(_) => "Deployment",
                Desired::Service(_) => "Service",
            })
            .collect()
    }

    fn reasons(e: &Effects) -> Vec<Reason> {
        e.events.iter().map(|ev| ev.reason).collect()
    }

    fn training() -> ChallengerStatus {
        training_challenger(
            "new000000001",
            "wine-train-new000000001",
            Some(Time(Timestamp::UNIX_EPOCH)),
        )
    }

    fn decision(verdict: Verdict, cause: Cause) -> Decision {
        Decision {
            verdict,
            cause,
            reason: "because".into(),
            score: Some(0.8),
            champion_score: Some(0.7),
            model_sha256: None,
        }
    }

    fn serving(old: &ChampionStatus) -> ModelPipelineStatus {
        ModelPipelineStatus {
            champion: Some(old.clone()),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    fn judging(old: &ChampionStatus) -> ModelPipelineStatus {
        ModelPipelineStatus {
            challenger: Some(training()),
            ..serving(old)
        }
    }

    fn rolling(new: &ChampionStatus, previous: Option<&ChampionStatus>) -> ModelPipelineStatus {
        ModelPipelineStatus {
            champion: Some(new.clone()),
            observed_generation: Some(1),
            rollout: Some(RolloutStatus {
                version: new.version.clone(),
                previous: previous.cloned(),
                started_at: Time(Timestamp::UNIX_EPOCH),
                data_seen_at: Some(Time(Timestamp::UNIX_EPOCH)),
                cause: Outcome::Promoted,
            }),
            ..Default::default()
        }
    }

    type Row = (
        &'static str,
        ModelPipelineStatus,
        Step,
        Vec<&'static str>,
        Vec<Reason>,
        Vec<MetricEvent>,
        fn(&ModelPipelineStatus),
    );

    /// Every step from the statuses it is taken in: the status it leads to, the objects it
    /// applies, the Events it sends and the metrics it counts.
    #[test]
    fn transition_table() {
        use Reason::*;
        let old = champion("old000000001", 0.7);
        let new = champion("new000000001", 0.8);
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(90);
        let rows: Vec<Row> = vec![
            (
                "launch",
                ModelPipelineStatus::default(),
                Step::Launch {
                    version: "new000000001".into(),
                    fingerprint: "fp1".into(),
                    forced: None,
                },
                vec!["Job"],
                vec![TrainingStarted],
                vec![MetricEvent::RunStarted],
                |s| {
                    let c = s.challenger.as_ref().expect("challenger");
                    assert_eq!(c.state, ChallengerState::Training);
                    assert_eq!(c.job, "wine-train-new000000001");
                    assert_eq!(s.phase, Some(champion_api::Phase::Training));
                    assert_eq!(s.last_forced_run, None);
                },
            ),
            (
                "forced launch remembers its token",
                ModelPipelineStatus::default(),
                Step::Launch {
                    version: "new000000001".into(),
                    fingerprint: "fp1".into(),
                    forced: Some("t1".into()),
                },
                vec!["Job"],
                vec![TrainingStarted],
                vec![MetricEvent::RunStarted],
                |s| assert_eq!(s.last_forced_run.as_deref(), Some("t1")),
            ),
            (
                "promotion starts a rollout that remembers the old champion",
                judging(&old),
                Step::Judge {
                    job: "wine-train-new000000001".into(),
                    version: "new000000001".into(),
                    decision: decision(Verdict::Promote, Cause::BeatChampion),
                },
                vec!["Deployment", "Service"],
                vec![ModelPromoted],
                vec![MetricEvent::RunFinished(RunOutcome::Promoted)],
                |s| {
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("new000000001")
                    );
                    let r = s.rollout.as_ref().expect("rollout");
                    assert_eq!(
                        r.previous.as_ref().map(|p| p.version.as_str()),
                        Some("old000000001")
                    );
                    assert_eq!(
                        s.history.last().and_then(|h| h.cause),
                        Some(Cause::BeatChampion)
                    );
                    assert_eq!(s.last_outcome, Some(Outcome::Promoted));
                    assert_eq!(s.observed_generation, Some(2));
                    assert_eq!(
                        s.address.as_ref().map(|a| a.url.as_str()),
                        Some("http://wine-predictor.default.svc.cluster.local:8080")
                    );
                    let run = s.last_run.as_ref().expect("lastRun");
                    assert_eq!(
                        (run.number, run.version.as_str(), run.outcome, run.score),
                        (1, "new000000001", Outcome::Promoted, Some(0.8))
                    );
                    assert_eq!(
                        s.serving_version, None,
                        "the new version serves only once rolled out"
                    );
                },
            ),
            (
                "rejection leaves the champion",
                judging(&old),
                Step::Judge {
                    job: "wine-train-new000000001".into(),
                    version: "new000000001".into(),
                    decision: decision(Verdict::Reject, Cause::WithinMargin),
                },
                vec![],
                vec![CandidateRejected],
                vec![MetricEvent::RunFinished(RunOutcome::Rejected)],
                |s| {
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("old000000001")
                    );
                    assert_eq!(
                        s.challenger.as_ref().map(|c| c.state),
                        Some(ChallengerState::Rejected)
                    );
                    assert_eq!(
                        s.history.last().and_then(|h| h.cause),
                        Some(Cause::WithinMargin)
                    );
                    assert!(s.rollout.is_none());
                    assert!(s.address.is_none(), "no predictor applied");
                    assert_eq!(
                        s.last_run.as_ref().map(|r| (r.number, r.outcome)),
                        Some((1, Outcome::Rejected))
                    );
                },
            ),
            (
                "an unusable report fails the run and backs off",
                judging(&old),
                Step::Judge {
                    job: "wine-train-new000000001".into(),
                    version: "new000000001".into(),
                    decision: decision(Verdict::Fail, Cause::ReportUnusable),
                },
                vec![],
                vec![TrainingFailed],
                vec![MetricEvent::RunFinished(RunOutcome::Failed)],
                |s| {
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("old000000001")
                    );
                    assert_eq!(s.consecutive_failures, 1);
                    assert!(s.retry_after.is_some());
                    assert_eq!(
                        s.history.last().and_then(|h| h.cause),
                        Some(Cause::ReportUnusable)
                    );
                    assert_eq!(s.phase, Some(champion_api::Phase::Degraded));
                },
            ),
            (
                "a failed Job fails the run",
                judging(&old),
                Step::TrainingFailed {
                    job: "wine-train-new000000001".into(),
                    cause: Cause::JobFailed,
                    reason: "BackoffLimitExceeded".into(),
                },
                vec![],
                vec![TrainingFailed],
                vec![MetricEvent::RunFinished(RunOutcome::Failed)],
                |s| {
                    assert_eq!(
                        s.challenger.as_ref().map(|c| c.state),
                        Some(ChallengerState::Failed)
                    );
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("old000000001")
                    );
                },
            ),
            (
                "a finished rollout measures data to serving and says so",
                rolling(&new, Some(&old)),
                Step::RolloutComplete,
                vec![],
                vec![RolloutCompleted],
                vec![MetricEvent::DataToServing(90.0)],
                |s| assert!(s.rollout.is_none()),
            ),
            (
                "a stalled rollout reverts to the previous champion",
                rolling(&new, Some(&old)),
                Step::RolloutFailed {
                    reason: "timed out".into(),
                },
                vec!["Deployment", "Service"],
                vec![RolloutFailed, RolledBack],
                vec![MetricEvent::RolledBack(RollbackCause::RolloutFailed)],
                |s| {
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("old000000001")
                    );
                    let r = s.rollout.as_ref().expect("the revert is a rollout");
                    assert!(r.previous.is_none());
                    assert_eq!(
                        s.history.last().and_then(|h| h.cause),
                        Some(Cause::RolloutStalled)
                    );
                },
            ),
            (
                "a stalled first rollout leaves no champion",
                rolling(&new, None),
                Step::RolloutFailed {
                    reason: "timed out".into(),
                },
                vec![],
                vec![RolloutFailed],
                vec![],
                |s| {
                    assert!(s.champion.is_none());
                    assert!(s.rollout.is_none());
                },
            ),
            (
                "a requested rollback",
                serving(&new),
                Step::Rollback {
                    entry: HistoryEntry {
                        version: "old000000001".into(),
                        outcome: Outcome::Promoted,
                        cause: Some(Cause::FirstModel),
                        score: Some(0.7),
                        champion_score: None,
                        data_fingerprint: Some("fp0".into()),
                        model_sha256: None,
                        reason: "first".into(),
                        by: None,
                        time: Time(Timestamp::UNIX_EPOCH),
                    },
                    request: "old000000001".into(),
                },
                vec!["Deployment", "Service"],
                vec![RolledBack],
                vec![MetricEvent::RolledBack(RollbackCause::Requested)],
                |s| {
                    assert_eq!(
                        s.champion.as_ref().map(|c| c.version.as_str()),
                        Some("old000000001")
                    );
                    assert_eq!(s.last_rollback_to.as_deref(), Some("old000000001"));
                    assert_eq!(
                        s.history.last().and_then(|h| h.cause),
                        Some(Cause::RollbackRequested)
                    );
                },
            ),
            (
                "a refused rollback is remembered",
                serving(&new),
                Step::RefuseRollback {
                    request: "nope".into(),
                    reason: "not in history".into(),
                },
                vec![],
                vec![RollbackRefused],
                vec![],
                |s| assert_eq!(s.last_rollback_to.as_deref(), Some("nope")),
            ),
            (
                "ensure predictor re-applies the champion and claims the spec",
                serving(&old),
                Step::EnsurePredictor,
                vec!["Deployment", "Service"],
                vec![],
                vec![],
                |s| assert_eq!(s.observed_generation, Some(2)),
            ),
            (
                "waiting for a rollout claims no spec edit",
                rolling(&new, Some(&old)),
                Step::WaitRollout,
                vec![],
                vec![],
                vec![],
                |s| assert_eq!(s.observed_generation, Some(1)),
            ),
            (
                "a running Job the status does not know is adopted",
                serving(&old),
                Step::WaitTraining {
                    job: "wine-train-new000000001".into(),
                    version: "new000000001".into(),
                    fingerprint: "fp1".into(),
                },
                vec![],
                vec![],
                vec![],
                |s| {
                    assert_eq!(
                        s.challenger.as_ref().map(|c| c.state),
                        Some(ChallengerState::Training)
                    )
                },
            ),
            (
                "queued says so",
                ModelPipelineStatus::default(),
                Step::Queued,
                vec![],
                vec![],
                vec![],
                |s| {
                    let t = s.conditions.iter().find(|c| c.type_ == "Training");
                    assert_eq!(t.map(|c| c.reason.as_str()), Some("Queued"));
                },
            ),
            (
                "idle records the listing only",
                ModelPipelineStatus::default(),
                Step::Idle,
                vec![],
                vec![],
                vec![],
                |s| {
                    assert_eq!(s.data.as_ref().map(|d| d.objects), Some(3));
                    assert!(s.challenger.is_none());
                },
            ),
        ];
        for (name, status, step, objects, events, metrics, check) in rows {
            let mut mp = pipeline();
            mp.metadata.generation = Some(2);
            mp.status = Some(status);
            let mut obs = observed(Some(Ok(DataListing {
                fingerprint: "fp1".into(),
                objects: 3,
            })));
            obs.now = now;
            let t = transition(&mp, &obs, &step);
            assert_eq!(kinds(&t.effects), objects, "{name}: objects");
            assert_eq!(reasons(&t.effects), events, "{name}: events");
            assert_eq!(t.effects.metrics, metrics, "{name}: metrics");
            check(&t.status);
            assert_eq!(
                transition(&mp, &obs, &step),
                t,
                "{name}: the same inputs give the same transition"
            );
        }
    }

    #[test]
    fn runs_are_numbered_and_events_name_the_job_or_the_deployment() {
        let old = champion("old000000001", 0.7);
        let mut mp = pipeline();
        let mut status = judging(&old);
        status.last_run = Some(LastRun {
            number: 4,
            version: "older0000001".into(),
            outcome: Outcome::Rejected,
            score: None,
            champion_score: None,
            finished_at: Time(Timestamp::UNIX_EPOCH),
        });
        mp.status = Some(status);
        let obs = observed(None);
        let failed = transition(
            &mp,
            &obs,
            &Step::TrainingFailed {
                job: "wine-train-new000000001".into(),
                cause: Cause::JobFailed,
                reason: "BackoffLimitExceeded".into(),
            },
        );
        assert_eq!(
            failed
                .status
                .last_run
                .as_ref()
                .map(|r| (r.number, r.version.as_str(), r.outcome)),
            Some((5, "new000000001", Outcome::Failed))
        );
        assert_eq!(
            failed.effects.events[0].related,
            Some(Related::Job("wine-train-new000000001".into()))
        );

        let mut rolling_mp = pipeline();
        rolling_mp.status = Some(rolling(&champion("new000000001", 0.8), Some(&old)));
        let done = transition(&rolling_mp, &obs, &Step::RolloutComplete);
        assert_eq!(
            done.effects.events[0].related,
            Some(Related::Deployment("wine-predictor".into()))
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1).as_secs(), 10);
        assert_eq!(backoff(2).as_secs(), 20);
        assert_eq!(backoff(3).as_secs(), 40);
        assert_eq!(backoff(30).as_secs(), 600);
    }

    #[test]
    fn requeue_follows_the_poll_interval_the_rollout_and_the_backoff() {
        let mp = pipeline();
        let mut obs = observed(None);
        obs.now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            transition(&mp, &obs, &Step::Idle).effects.requeue,
            Duration::from_secs(2)
        );
        let mut slow = pipeline();
        slow.spec.data.poll_interval = kube::core::Duration::from(Duration::from_secs(60));
        assert_eq!(
            transition(&slow, &obs, &Step::WaitRollout).effects.requeue,
            Duration::from_secs(10)
        );
        let soon = Timestamp::UNIX_EPOCH + SignedDuration::from_millis(1500);
        assert_eq!(
            transition(&mp, &obs, &Step::Backoff { until: soon })
                .effects
                .requeue,
            Duration::from_millis(1500),
            "the end of the back-off, when it comes before the next poll"
        );
        let far = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(3600);
        assert_eq!(
            transition(&mp, &obs, &Step::Backoff { until: far })
                .effects
                .requeue,
            Duration::from_secs(2),
            "new data is looked for every poll during a back-off"
        );
    }

    #[test]
    fn failing_stores_are_asked_less_often_and_pending_listings_soon() {
        let mut mp = pipeline();
        mp.spec.data.poll_interval = kube::core::Duration::from(Duration::from_secs(1));
        let mut obs = observed(None);
        obs.now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
        let step = Step::DataUnavailable {
            reason: crate::views::ReadFailure::Fetch("did not answer within 20s".into()),
        };
        assert_eq!(
            transition(&mp, &obs, &step).effects.requeue,
            Duration::from_secs(10),
            "a new failure: 10 s, not the 1 s poll interval"
        );
        let failing_since = |secs: i64| {
            let mut failing = mp.clone();
            failing.status = Some(ModelPipelineStatus {
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: champion_api::condition::DATA_AVAILABLE.into(),
                    status: "False".into(),
                    reason: "FetchFailed".into(),
                    message: "did not answer".into(),
                    observed_generation: None,
                    last_transition_time: Time(
                        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000 - secs),
                    ),
                }],
                ..ModelPipelineStatus::default()
            });
            failing
        };
        assert_eq!(
            transition(&failing_since(120), &obs, &step).effects.requeue,
            Duration::from_secs(120)
        );
        assert_eq!(
            transition(&failing_since(900), &obs, &step).effects.requeue,
            Duration::from_secs(300),
            "at most 5 minutes"
        );
        let mut slow = pipeline();
        slow.spec.data.poll_interval = kube::core::Duration::from(Duration::from_secs(60));
        obs.listing_pending = true;
        assert_eq!(
            transition(&slow, &obs, &Step::Idle).effects.requeue,
            crate::listings::RECHECK,
            "a listing still running is picked up soon"
        );
    }
}
