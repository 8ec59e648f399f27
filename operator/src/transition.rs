//! The step's consequences, computed: a pure function from (pipeline, what was observed, the
//! step) to the next status and the [`Effects`] that go with it. No client, no clock (the time
//! is the one observed), so every step is tested as a table without an API server.

use std::time::Duration;

use champion_api::{
    Cause, ChallengerState, ChallengerStatus, ChampionStatus, DataStatus, HistoryEntry,
    ModelPipeline, ModelPipelineStatus, Outcome, RolloutStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::build::{build_deployment, build_job, build_service};
use crate::decide::{Decision, Step, Verdict, backoff};
use crate::effects::{Desired, Effects};
use crate::events::{EventSpec, Reason};
use crate::metrics::{MetricEvent, RollbackCause, RunOutcome};
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
    t.step(step);
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
struct Next<'a> {
    mp: &'a ModelPipeline,
    now: Timestamp,
    status: ModelPipelineStatus,
    effects: Effects,
}

impl Next<'_> {
    fn event(&mut self, reason: Reason, note: String) {
        self.effects.events.push(EventSpec { reason, note });
    }

    fn count(&mut self, m: MetricEvent) {
        self.effects.metrics.push(m);
    }

    fn history(&mut self, entry: HistoryEntry) {
        push_history(&mut self.status.history, entry, self.mp.spec.history_limit);
        self.status.last_outcome = Some(entry_outcome(&self.status));
    }

    fn entry(&self, version: &str, outcome: Outcome, cause: Cause, reason: String) -> HistoryEntry {
        HistoryEntry {
            version: version.to_string(),
            outcome,
            cause: Some(cause),
            score: None,
            champion_score: None,
            data_fingerprint: None,
            reason,
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
            reason: None,
            started_at: Time(self.now),
            data_seen_at: self.data_seen_at(fingerprint),
        }
    }

    /// The predictor Deployment serving `champion`, and its Service.
    fn predictor(&mut self, champion: &ChampionStatus) {
        self.effects.objects.extend([
            Desired::Deployment(Box::new(build_deployment(self.mp, champion))),
            Desired::Service(Box::new(build_service(self.mp))),
        ]);
    }

    /// Starts rolling the predictor to `champion`, remembering the champion to revert to.
    fn start_rollout(&mut self, champion: ChampionStatus, cause: Outcome, seen: Option<Time>) {
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
            Step::Suspended
            | Step::Idle
            | Step::NoData
            | Step::DataUnavailable { .. }
            | Step::Queued => {}
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
                let wait = until.duration_since(self.now).unsigned_abs();
                let poll = self.effects.requeue;
                self.effects.requeue = wait.clamp(Duration::from_secs(1), poll * 20);
            }
            Step::Launch {
                version,
                fingerprint,
                forced,
            } => self.launch(version, fingerprint, forced.as_deref()),
            Step::Judge {
                version, decision, ..
            } => self.judge(version, decision),
            Step::TrainingFailed { cause, reason, .. } => self.fail_run(*cause, reason.clone()),
            Step::RolloutComplete => {
                if let Some(r) = self.status.rollout.take()
                    && r.cause == Outcome::Promoted
                    && let Some(seen) = r.data_seen_at
                {
                    let secs = self.now.duration_since(seen.0).as_secs_f64();
                    self.count(MetricEvent::DataToServing(secs));
                }
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
            Step::EnsurePredictor => {
                if let Some(champion) = self.status.champion.clone() {
                    self.predictor(&champion);
                }
            }
        }
    }

    fn launch(&mut self, version: &str, fingerprint: &str, forced: Option<&str>) {
        let job = build_job(self.mp, version, fingerprint, self.status.champion.as_ref());
        let job_name = job.metadata.name.clone().unwrap_or_default();
        self.effects.objects.push(Desired::Job(Box::new(job)));
        self.status.challenger = Some(self.training(version, &job_name, fingerprint));
        if let Some(token) = forced {
            self.status.last_forced_run = Some(token.to_string());
        }
        self.count(MetricEvent::RunStarted);
        let why = match forced {
            Some(t) => format!("forced by annotation ({t})"),
            None => format!(
                "new data {}",
                fingerprint.chars().take(12).collect::<String>()
            ),
        };
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
                promoted_at: Time(self.now),
            };
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
        let mut h = self.entry(version, outcome, decision.cause, decision.reason.clone());
        h.score = decision.score;
        h.champion_score = decision.champion_score;
        h.data_fingerprint = Some(fp);
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

/// The outcome of the newest history entry.
fn entry_outcome(status: &ModelPipelineStatus) -> Outcome {
    status.history.last().map_or(Outcome::Failed, |h| h.outcome)
}
