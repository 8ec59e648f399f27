//! The ModelPipeline reconcile: observe → decide → build → apply → record.
//!
//! One reconcile takes one step (see [`crate::decide::Step`]); every step that changes
//! something writes the status, and the status write itself triggers the next reconcile, so a
//! run flows launch → evaluate → promote → rollout without waiting for the poll timer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use champion_api::{
    ChallengerState, ChallengerStatus, ChampionStatus, DataStatus, HistoryEntry, ModelPipeline,
    ModelPipelineStatus, Outcome, RolloutStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use tracing::{Span, field, info, instrument, warn};

use crate::apply::{apply, apply_status};
use crate::build::{build_deployment, build_job, build_service};
use crate::decide::{Step, Verdict, backoff, decide_promotion, plan};
use crate::events::{Publisher, publish, reason};
use crate::metrics::Metrics;
use crate::observe::{self, Observed};
use crate::status::{derive, push_history};

/// Errors of one reconcile, one variant per step that can fail. The variant name is the
/// bounded `result` label of `champion_reconciles_total`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ModelPipeline {0} has no namespace")]
    MissingNamespace(String),
    #[error("reading the credentials Secret {name}: {source}")]
    ReadSecret {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("reading ModelPipeline {name}: {source}")]
    ReadPipeline {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("reading trainer Job {name}: {source}")]
    ReadJob {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying trainer Job {name}: {source}")]
    ApplyJob {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying predictor Deployment {name}: {source}")]
    ApplyDeployment {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("applying predictor Service {name}: {source}")]
    ApplyService {
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing the status of ModelPipeline {name}: {source}")]
    PatchStatus {
        name: String,
        source: Box<kube::Error>,
    },
}

impl Error {
    /// The bounded category used in metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingNamespace(_) => "missing_namespace",
            Error::ReadSecret { .. } => "read_secret",
            Error::ReadPipeline { .. } => "read_pipeline",
            Error::ReadJob { .. } => "read_job",
            Error::ApplyJob { .. } => "apply_job",
            Error::ApplyDeployment { .. } => "apply_deployment",
            Error::ApplyService { .. } => "apply_service",
            Error::PatchStatus { .. } => "patch_status",
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    pub client: kube::Client,
    /// The operator's trainer Jobs (label managed-by=champion), kept by a watch.
    pub jobs: Cache<Job>,
    /// The operator's predictor Deployments, kept by a watch.
    pub deployments: Cache<Deployment>,
    /// Set once both caches hold a complete listing: before that a missing Job could be
    /// mistaken for a vanished one.
    pub caches_ready: Arc<AtomicBool>,
    /// Operator-wide limit of concurrently running trainer Jobs, so that hundreds of pipelines
    /// seeing data at once do not flood the cluster.
    pub runs: RunSlots,
    pub events: Publisher,
    pub metrics: Metrics,
    /// Which copy of each pipeline is the newest the operator has seen.
    pub fresh: Freshness,
}

/// The resourceVersion of the newest copy of each pipeline this operator has seen from the API
/// server: the answer to its own status writes, or a read.
///
/// The controller's cache lags behind a status write, and the write's own watch event, or an
/// owned Job or Deployment changing, can start the next reconcile before the cache has the new
/// status. Reconciling on the old status would take a step twice (a promotion judged again, or
/// the previous champion's Deployment applied in the middle of a rollout), so a cached copy
/// whose resourceVersion is not the one last seen is read again from the API server first. The
/// cache catches up within milliseconds, so this costs one GET per status write at most.
#[derive(Debug, Default)]
pub struct Freshness(Mutex<HashMap<(String, String), String>>);

/// A pipeline's (namespace, name): how the operator's per-pipeline records are keyed.
fn pipeline_key(mp: &ModelPipeline) -> (String, String) {
    (mp.namespace().unwrap_or_default(), mp.name_any())
}

impl Freshness {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        // The map holds plain strings: a panic elsewhere cannot leave it inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers `mp`'s resourceVersion as the newest seen.
    pub fn saw(&self, mp: &ModelPipeline) {
        if let Some(rv) = mp.resource_version() {
            self.map().insert(pipeline_key(mp), rv);
        }
    }

    /// Forgets a pipeline that no longer exists.
    pub fn forget(&self, mp: &ModelPipeline) {
        self.map().remove(&pipeline_key(mp));
    }

    /// Forgets every pipeline not in `keep` (namespace, name).
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        self.map().retain(|k, _| keep.contains(k));
    }

    /// Whether `mp` is older or newer than the copy last seen, so it must be read again.
    pub fn is_stale(&self, mp: &ModelPipeline) -> bool {
        match self.map().get(&pipeline_key(mp)) {
            None => false,
            Some(rv) => mp.resource_version().as_ref() != Some(rv),
        }
    }
}

/// The operator-wide cap on running trainer Jobs. The Job cache lags behind a create, so the
/// Jobs this process launched that the cache does not show yet count too, and a launch takes its
/// slot under a lock: reconciles running at the same moment cannot both take the last one.
#[derive(Debug, Default)]
pub struct RunSlots {
    max: Option<usize>,
    launched: Mutex<HashSet<(String, String)>>,
}

impl RunSlots {
    /// At most `max` runs at once; `None` for no limit.
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            launched: Mutex::default(),
        }
    }

    fn used(&self, cache: &Cache<Job>, launched: &mut HashSet<(String, String)>) -> usize {
        launched.retain(|(ns, name)| cache.get(&ObjectRef::new(name).within(ns)).is_none());
        observe::running_runs(cache) + launched.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        // Plain strings: a panic elsewhere cannot leave the set inconsistent.
        self.launched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Free slots now (`None`: no limit); what `plan` sees.
    pub fn free(&self, cache: &Cache<Job>) -> Option<usize> {
        let max = self.max?;
        Some(max.saturating_sub(self.used(cache, &mut self.lock())))
    }

    /// Takes a slot for Job `ns/name`; false when none is left.
    pub fn take(&self, cache: &Cache<Job>, ns: &str, name: &str) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        let mut launched = self.lock();
        if cache.get(&ObjectRef::new(name).within(ns)).is_some() {
            return true;
        }
        if self.used(cache, &mut launched) >= max {
            return false;
        }
        launched.insert((ns.to_string(), name.to_string()));
        true
    }

    /// Gives back the slot of a Job whose create failed.
    pub fn release(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_string(), name.to_string()));
    }
}

/// `mp` itself when the cache is up to date, else the API server's copy; `None` when the
/// pipeline is gone.
async fn fresh_copy(
    ctx: &Context,
    ns: &str,
    mp: Arc<ModelPipeline>,
) -> Result<Option<Arc<ModelPipeline>>, Error> {
    if !ctx.fresh.is_stale(&mp) {
        return Ok(Some(mp));
    }
    let api: Api<ModelPipeline> = Api::namespaced(ctx.client.clone(), ns);
    let name = mp.name_any();
    match api.get_opt(&name).await {
        Ok(Some(current)) => {
            ctx.fresh.saw(&current);
            Ok(Some(Arc::new(current)))
        }
        Ok(None) => {
            ctx.fresh.forget(&mp);
            Ok(None)
        }
        Err(source) => Err(Error::ReadPipeline {
            name,
            source: Box::new(source),
        }),
    }
}

fn poll_interval(mp: &ModelPipeline) -> Duration {
    let d: Duration = mp.spec.data.poll_interval.into();
    d.max(Duration::from_secs(1))
}

fn entry(version: &str, outcome: Outcome, reason: String, now: Timestamp) -> HistoryEntry {
    HistoryEntry {
        version: version.to_string(),
        outcome,
        score: None,
        champion_score: None,
        data_fingerprint: None,
        reason,
        time: Time(now),
    }
}

fn score_text(s: Option<f64>) -> String {
    s.map_or_else(|| "none".to_string(), |s| format!("{s:.4}"))
}

/// Reconciles one ModelPipeline.
#[instrument(skip(mp, ctx), fields(namespace, pipeline, step))]
pub async fn reconcile(mp: Arc<ModelPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let name = mp.name_any();
    let ns = mp
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(name.clone()))?;
    Span::current()
        .record("namespace", field::display(&ns))
        .record("pipeline", field::display(&name));
    if !ctx.caches_ready.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(mp) = fresh_copy(&ctx, &ns, mp).await? else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let before = mp.status.clone().unwrap_or_default();

    // observe
    let busy = before.rollout.is_some()
        || before
            .challenger
            .as_ref()
            .is_some_and(|c| c.state == ChallengerState::Training);
    let data = if mp.spec.suspend || busy {
        None
    } else {
        let opts =
            observe::secret_options(&ctx.client, &ns, mp.spec.data.secret_ref.as_ref()).await?;
        Some(observe::list_data(&mp.spec.data.uri, opts).await)
    };
    let mut jobs = observe::jobs_of(&ctx.jobs, &mp);
    if let Some(c) = before
        .challenger
        .as_ref()
        .filter(|c| c.state == ChallengerState::Training)
        && !jobs.iter().any(|j| j.name == c.job)
    {
        // The Job watch may not have delivered a Job created a moment ago; ask the API server
        // before concluding that the run vanished.
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        let job = api.get_opt(&c.job).await.map_err(|source| Error::ReadJob {
            name: c.job.clone(),
            source: Box::new(source),
        })?;
        jobs.extend(job.as_ref().and_then(observe::job_view));
    }
    let obs = Observed {
        now,
        data,
        jobs,
        deployment: observe::deployment_of(&ctx.deployments, &mp),
        run_slots: ctx.runs.free(&ctx.jobs),
    };

    // decide
    let step = plan(&mp, &obs);
    Span::current().record("step", field::debug(&step));

    let mut status = before.clone();
    if let Some(Ok(listing)) = &obs.data {
        match &mut status.data {
            Some(d) if d.fingerprint == listing.fingerprint => d.objects = listing.objects as i64,
            _ => {
                status.data = Some(DataStatus {
                    fingerprint: listing.fingerprint.clone(),
                    objects: listing.objects as i64,
                    seen_at: Time(now),
                })
            }
        }
    }

    // build + apply
    let queued = step == Step::Queued;
    let requeue = execute(&mp, &ns, &ctx, &obs, step, &mut status).await?;

    // record
    derive(&mp, &mut status, &obs, queued);
    record_scores(&ctx.metrics, &ns, &name, &status);
    if status != before {
        let written = apply_status(&ctx.client, &mp, &status)
            .await
            .map_err(|source| Error::PatchStatus {
                name: name.clone(),
                source: Box::new(source),
            })?;
        ctx.fresh.saw(&written);
    }
    ctx.metrics.reconciles.with_label_values(&["ok"]).inc();
    Ok(Action::requeue(requeue))
}

/// Keeps the per-pipeline score gauges in line with the status (also after a restart).
fn record_scores(metrics: &Metrics, ns: &str, name: &str, status: &ModelPipelineStatus) {
    let key = [ns, name];
    match status.champion.as_ref().and_then(|c| c.score) {
        Some(s) => metrics.champion_score.with_label_values(&key).set(s),
        None => {
            let _ = metrics.champion_score.remove_label_values(&key);
        }
    }
    if let Some(s) = status.challenger.as_ref().and_then(|c| c.score) {
        metrics.challenger_score.with_label_values(&key).set(s);
    }
}

/// Applies the predictor Deployment for `champion` and its Service.
async fn apply_predictor(
    mp: &ModelPipeline,
    ns: &str,
    ctx: &Context,
    champion: &ChampionStatus,
) -> Result<(), Error> {
    let deployment = build_deployment(mp, champion);
    apply(&ctx.client, ns, &deployment)
        .await
        .map_err(|source| Error::ApplyDeployment {
            name: deployment.name_any(),
            source: Box::new(source),
        })?;
    let service = build_service(mp);
    apply(&ctx.client, ns, &service)
        .await
        .map_err(|source| Error::ApplyService {
            name: service.name_any(),
            source: Box::new(source),
        })?;
    Ok(())
}

/// Starts rolling the predictor to `champion`, remembering the champion to revert to.
async fn start_rollout(
    mp: &ModelPipeline,
    ctx: &Context,
    status: &mut ModelPipelineStatus,
    champion: ChampionStatus,
    cause: Outcome,
    data_seen_at: Option<Time>,
    now: Timestamp,
) -> Result<(), Error> {
    let ns = mp.namespace().unwrap_or_default();
    apply_predictor(mp, &ns, ctx, &champion).await?;
    let previous = status.champion.replace(champion.clone());
    status.rollout = Some(RolloutStatus {
        version: champion.version.clone(),
        previous: previous.filter(|p| p.version != champion.version),
        started_at: Time(now),
        data_seen_at,
        cause,
    });
    Ok(())
}

/// Records a failed run and schedules the retry.
async fn record_failure(
    mp: &ModelPipeline,
    ctx: &Context,
    status: &mut ModelPipelineStatus,
    reason: String,
    now: Timestamp,
) {
    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
    let delay = backoff(status.consecutive_failures);
    status.retry_after = Some(Time(now + delay));
    let version = status
        .challenger
        .as_ref()
        .map(|c| c.version.clone())
        .unwrap_or_default();
    let fp = status
        .challenger
        .as_ref()
        .map(|c| c.data_fingerprint.clone());
    if let Some(c) = status.challenger.as_mut() {
        c.state = ChallengerState::Failed;
        c.reason = Some(reason.clone());
    }
    let mut h = entry(&version, Outcome::Failed, reason.clone(), now);
    h.data_fingerprint = fp;
    push_history(&mut status.history, h, mp.spec.history_limit);
    status.last_outcome = Some(Outcome::Failed);
    ctx.metrics
        .training_runs
        .with_label_values(&["failed"])
        .inc();
    let note = format!(
        "version {version} failed: {reason}; retry in {}s (failure {} in a row); the champion is untouched",
        delay.as_secs(),
        status.consecutive_failures
    );
    warn!(%note, "training run failed");
    publish(
        &ctx.events,
        mp,
        true,
        reason::TRAINING_FAILED,
        "Train",
        note,
    )
    .await;
}

/// Performs `step`, updating `status`; returns when to look again.
async fn execute(
    mp: &ModelPipeline,
    ns: &str,
    ctx: &Context,
    obs: &Observed,
    step: Step,
    status: &mut ModelPipelineStatus,
) -> Result<Duration, Error> {
    let now = obs.now;
    let poll = poll_interval(mp);
    let metric = mp.spec.evaluation.metric;
    match step {
        Step::Suspended
        | Step::Idle
        | Step::NoData
        | Step::DataUnavailable { .. }
        | Step::Queued => Ok(poll),
        Step::WaitTraining {
            job,
            version,
            fingerprint,
        } => {
            let tracked = status
                .challenger
                .as_ref()
                .is_some_and(|c| c.job == job && c.state == ChallengerState::Training);
            if !tracked {
                info!(%job, "adopting a running trainer Job");
                let seen = status
                    .data
                    .as_ref()
                    .filter(|d| d.fingerprint == fingerprint)
                    .map(|d| d.seen_at.clone());
                status.challenger = Some(ChallengerStatus {
                    version,
                    job,
                    data_fingerprint: fingerprint,
                    state: ChallengerState::Training,
                    score: None,
                    champion_score: None,
                    reason: None,
                    started_at: Time(now),
                    data_seen_at: seen,
                });
            }
            Ok(poll)
        }
        Step::WaitRollout => Ok(poll.min(Duration::from_secs(10))),
        Step::Backoff { until } => {
            let wait = until.duration_since(now).unsigned_abs();
            Ok(wait.clamp(
                Duration::from_secs(1),
                poll.max(Duration::from_secs(1)) * 20,
            ))
        }
        Step::Launch {
            version,
            fingerprint,
            forced,
        } => {
            let job = build_job(mp, &version, &fingerprint, status.champion.as_ref());
            let job_name = job.name_any();
            if !ctx.runs.take(&ctx.jobs, ns, &job_name) {
                // Another pipeline took the last slot since `plan` looked.
                return Ok(poll);
            }
            if let Err(source) = apply(&ctx.client, ns, &job).await {
                ctx.runs.release(ns, &job_name);
                return Err(Error::ApplyJob {
                    name: job_name,
                    source: Box::new(source),
                });
            }
            let seen = status
                .data
                .as_ref()
                .filter(|d| d.fingerprint == fingerprint)
                .map(|d| d.seen_at.clone());
            status.challenger = Some(ChallengerStatus {
                version: version.clone(),
                job: job_name.clone(),
                data_fingerprint: fingerprint.clone(),
                state: ChallengerState::Training,
                score: None,
                champion_score: None,
                reason: None,
                started_at: Time(now),
                data_seen_at: seen,
            });
            if let Some(token) = &forced {
                status.last_forced_run = Some(token.clone());
            }
            ctx.metrics
                .training_runs
                .with_label_values(&["started"])
                .inc();
            let why = match &forced {
                Some(t) => format!("forced by annotation ({t})"),
                None => format!(
                    "new data {}",
                    fingerprint.chars().take(12).collect::<String>()
                ),
            };
            info!(%job_name, %version, "training started");
            publish(
                &ctx.events,
                mp,
                false,
                reason::TRAINING_STARTED,
                "Train",
                format!("Job {job_name} trains version {version}: {why}"),
            )
            .await;
            Ok(poll)
        }
        Step::Evaluate { job, version } => {
            let opts =
                observe::secret_options(&ctx.client, ns, mp.spec.model_store.secret_ref.as_ref())
                    .await?;
            let model_uri = mp.model_uri(&version);
            let report = observe::read_report(&model_uri, opts).await;
            let decision = decide_promotion(
                &mp.spec.promotion,
                metric,
                &version,
                report.as_ref().map_err(String::as_str),
                status.champion.as_ref(),
            );
            info!(%job, %version, verdict = ?decision.verdict, reason = %decision.reason, "run evaluated");
            if decision.verdict == Verdict::Fail {
                record_failure(mp, ctx, status, decision.reason, now).await;
                return Ok(poll);
            }
            let fp = status
                .challenger
                .as_ref()
                .map(|c| c.data_fingerprint.clone())
                .unwrap_or_default();
            let seen = status
                .challenger
                .as_ref()
                .and_then(|c| c.data_seen_at.clone());
            if let Some(c) = status.challenger.as_mut() {
                c.score = decision.score;
                c.champion_score = decision.champion_score;
                c.reason = Some(decision.reason.clone());
            }
            status.consecutive_failures = 0;
            status.retry_after = None;
            let mut h = entry(&version, Outcome::Rejected, decision.reason.clone(), now);
            h.score = decision.score;
            h.champion_score = decision.champion_score;
            h.data_fingerprint = Some(fp.clone());
            let scores = format!(
                "challenger {} {}, champion {}",
                metric.as_str(),
                score_text(decision.score),
                score_text(decision.champion_score)
            );
            if decision.verdict == Verdict::Promote {
                let champion = ChampionStatus {
                    version: version.clone(),
                    model_uri,
                    score: decision.score,
                    metric: Some(metric),
                    data_fingerprint: fp,
                    promoted_at: Time(now),
                };
                start_rollout(mp, ctx, status, champion, Outcome::Promoted, seen, now).await?;
                if let Some(c) = status.challenger.as_mut() {
                    c.state = ChallengerState::Promoted;
                }
                h.outcome = Outcome::Promoted;
                status.last_outcome = Some(Outcome::Promoted);
                ctx.metrics.promotions.inc();
                ctx.metrics
                    .training_runs
                    .with_label_values(&["promoted"])
                    .inc();
                publish(
                    &ctx.events,
                    mp,
                    false,
                    reason::MODEL_PROMOTED,
                    "Promote",
                    format!("version {version} promoted ({scores}): {}", decision.reason),
                )
                .await;
            } else {
                if let Some(c) = status.challenger.as_mut() {
                    c.state = ChallengerState::Rejected;
                }
                status.last_outcome = Some(Outcome::Rejected);
                ctx.metrics
                    .training_runs
                    .with_label_values(&["rejected"])
                    .inc();
                publish(
                    &ctx.events,
                    mp,
                    false,
                    reason::CANDIDATE_REJECTED,
                    "Evaluate",
                    format!("version {version} rejected ({scores}): {}", decision.reason),
                )
                .await;
            }
            push_history(&mut status.history, h, mp.spec.history_limit);
            Ok(poll)
        }
        Step::TrainingFailed { job, reason } => {
            let reason = match observe::termination_message(&ctx.client, ns, &job).await {
                Some(msg) => format!("{reason}; trainer said: {msg}"),
                None => reason,
            };
            record_failure(mp, ctx, status, reason, now).await;
            Ok(poll)
        }
        Step::RolloutComplete => {
            if let Some(r) = status.rollout.take() {
                if r.cause == Outcome::Promoted
                    && let Some(seen) = r.data_seen_at
                {
                    let secs = now.duration_since(seen.0).as_secs_f64();
                    ctx.metrics.data_to_serving.observe(secs.max(0.0));
                }
                info!(version = %r.version, "rollout complete");
            }
            Ok(poll)
        }
        Step::RolloutFailed { reason } => {
            let Some(r) = status.rollout.take() else {
                return Ok(poll);
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
            publish(
                &ctx.events,
                mp,
                true,
                reason::ROLLOUT_FAILED,
                "Rollout",
                note.clone(),
            )
            .await;
            push_history(
                &mut status.history,
                entry(&failed, Outcome::RolledBack, note, now),
                mp.spec.history_limit,
            );
            status.last_outcome = Some(Outcome::RolledBack);
            match r.previous {
                Some(previous) => {
                    let back_to = previous.version.clone();
                    status.champion = None;
                    start_rollout(mp, ctx, status, previous, Outcome::RolledBack, None, now)
                        .await?;
                    ctx.metrics
                        .rollbacks
                        .with_label_values(&["rollout_failed"])
                        .inc();
                    publish(
                        &ctx.events,
                        mp,
                        false,
                        reason::ROLLED_BACK,
                        "Rollback",
                        format!("predictor rolled back from version {failed} to version {back_to}"),
                    )
                    .await;
                }
                None => status.champion = None,
            }
            Ok(poll)
        }
        Step::Rollback {
            entry: target,
            request,
        } => {
            status.last_rollback_to = Some(request);
            let from = status
                .champion
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_else(|| "none".into());
            let champion = ChampionStatus {
                version: target.version.clone(),
                model_uri: mp.model_uri(&target.version),
                score: target.score,
                metric: Some(metric),
                data_fingerprint: target.data_fingerprint.clone().unwrap_or_default(),
                promoted_at: Time(now),
            };
            start_rollout(mp, ctx, status, champion, Outcome::RolledBack, None, now).await?;
            let note = format!(
                "rolled back from version {from} to version {} on request",
                target.version
            );
            let mut h = entry(&target.version, Outcome::RolledBack, note.clone(), now);
            h.score = target.score;
            h.data_fingerprint = target.data_fingerprint;
            push_history(&mut status.history, h, mp.spec.history_limit);
            status.last_outcome = Some(Outcome::RolledBack);
            ctx.metrics
                .rollbacks
                .with_label_values(&["requested"])
                .inc();
            publish(
                &ctx.events,
                mp,
                false,
                reason::ROLLED_BACK,
                "Rollback",
                note,
            )
            .await;
            Ok(poll)
        }
        Step::RefuseRollback {
            request,
            reason: why,
        } => {
            status.last_rollback_to = Some(request.clone());
            publish(
                &ctx.events,
                mp,
                true,
                reason::ROLLBACK_REFUSED,
                "Rollback",
                format!("rollback to {request} refused: {why}"),
            )
            .await;
            Ok(poll)
        }
        Step::EnsurePredictor => {
            if let Some(champion) = status.champion.clone() {
                apply_predictor(mp, ns, ctx, &champion).await?;
            }
            Ok(poll)
        }
    }
}

/// Forgets what the operator keeps per pipeline (score series, freshness records) for
/// pipelines that no longer exist: deletion has no reconcile of its own.
pub fn forget_deleted(ctx: &Context, existing: &[Arc<ModelPipeline>]) {
    let keep: HashSet<(String, String)> = existing.iter().map(|mp| pipeline_key(mp)).collect();
    ctx.fresh.retain(&keep);
    ctx.metrics.retain_pipelines(&keep);
}

/// Requeues failed reconciles after a short pause and counts them by category.
pub fn error_policy(mp: Arc<ModelPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(pipeline = %mp.name_any(), category = error.category(), %error, "reconcile failed");
    ctx.metrics
        .reconciles
        .with_label_values(&[error.category()])
        .inc();
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{job_name, run_version};
    use crate::fixtures::{ApiHandle, Seen, expect_request, pipeline, report};
    use champion_api::{ANNOTATION_DATA_FINGERPRINT, ANNOTATION_MODEL_VERSION};
    use http::Method;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use kube::api::ObjectMeta;
    use serde_json::json;
    use std::collections::BTreeMap;

    const FIELD_MANAGER_QUERY: &str = "fieldManager=champion.dev%2Foperator";

    fn secret() -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-creds", "namespace": "default"},
               "data": {"AWS_REGION": "ZXUtd2VzdC0x"}})
    }

    /// A pipeline whose data and model store live in `dir`.
    fn pipeline_in(dir: &std::path::Path) -> ModelPipeline {
        let mut mp = pipeline();
        mp.spec.data.uri = format!("file://{}/data/", dir.display());
        mp.spec.model_store.uri = format!("file://{}/models", dir.display());
        mp
    }

    /// What the API server answers to a status apply: the pipeline with the applied status.
    fn with_status(mp: &ModelPipeline, patch: &serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::to_value(mp).unwrap_or_default();
        v["status"] = patch["status"].clone();
        v
    }

    async fn reconcile_with_timeout(mp: ModelPipeline, ctx: Arc<Context>) -> Result<Action, Error> {
        tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(mp), ctx))
            .await
            .expect("reconcile finished: no request went unanswered")
    }

    /// Runs one reconcile against the mock API server `server` and waits until the server has
    /// checked every request it expected.
    async fn reconcile_then_join(
        mp: ModelPipeline,
        ctx: Arc<Context>,
        server: tokio::task::JoinHandle<()>,
    ) {
        reconcile_with_timeout(mp, ctx)
            .await
            .expect("reconcile succeeds");
        server
            .await
            .expect("the API server saw exactly the expected requests");
    }

    fn metrics_text(registry: &prometheus::Registry) -> String {
        String::from_utf8(crate::metrics::render(registry).expect("metrics")).expect("utf-8")
    }

    /// Expects the read of the store credentials Secret and answers it with `secret()`.
    async fn expect_secret_read(handle: &mut ApiHandle) {
        let seen = expect_request(handle, |_| (200, secret())).await;
        assert_eq!(
            (seen.method, seen.uri.as_str()),
            (
                Method::GET,
                "/api/v1/namespaces/default/secrets/store-creds"
            )
        );
    }

    /// Expects the predictor Deployment apply, then the Service apply, echoing both; returns
    /// the Deployment request for the caller's own checks.
    async fn expect_predictor_applied(handle: &mut ApiHandle) -> Seen {
        let deployment = expect_request(handle, |s| (200, s.body.clone())).await;
        assert!(
            deployment
                .uri
                .starts_with("/apis/apps/v1/namespaces/default/deployments/wine-predictor?"),
            "{}",
            deployment.uri
        );
        let service = expect_request(handle, |s| (200, s.body.clone())).await;
        assert!(
            service
                .uri
                .starts_with("/api/v1/namespaces/default/services/wine-predictor?"),
            "{}",
            service.uri
        );
        deployment
    }

    /// The cached trainer Job `name` of run `version` of the wine pipeline, finished with the
    /// condition `condition_type` = True (and `reason`).
    fn job_fixture(
        name: &str,
        version: &str,
        fingerprint: &str,
        condition_type: &str,
        reason: Option<&str>,
    ) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(
                    "champion.dev/pipeline".to_string(),
                    "wine".to_string(),
                )])),
                annotations: Some(BTreeMap::from([
                    (ANNOTATION_MODEL_VERSION.to_string(), version.to_string()),
                    (
                        ANNOTATION_DATA_FINGERPRINT.to_string(),
                        fingerprint.to_string(),
                    ),
                ])),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: "uid-wine".into(),
                        ..Default::default()
                    },
                ]),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: condition_type.into(),
                    status: "True".into(),
                    reason: reason.map(Into::into),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// The challenger of a run `version` (Job `job`, data "fp1") that is still training.
    fn training_challenger(
        version: &str,
        job: &str,
        data_seen_at: Option<Time>,
    ) -> ChallengerStatus {
        ChallengerStatus {
            version: version.into(),
            job: job.into(),
            data_fingerprint: "fp1".into(),
            state: ChallengerState::Training,
            score: None,
            champion_score: None,
            reason: None,
            started_at: Time(Timestamp::UNIX_EPOCH),
            data_seen_at,
        }
    }

    #[tokio::test]
    async fn new_data_launches_one_trainer_job_then_records_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(dir.path().join("data/wine-1.csv"), "a,quality\n1,6\n").expect("csv");
        let mp = pipeline_in(dir.path());
        let listing = observe::list_data(&mp.spec.data.uri, Vec::new())
            .await
            .expect("listing");
        let version = run_version(&listing.fingerprint, None, 0);
        let job = job_name("wine", &version);

        let (ctx, mut handle, registry) = Context::test(Vec::new(), Vec::new());
        let expected_job = job.clone();
        let applied = mp.clone();
        let server = tokio::spawn(async move {
            expect_secret_read(&mut handle).await;

            let seen = expect_request(&mut handle, |s| (200, s.body.clone())).await;
            assert_eq!(seen.method, Method::PATCH);
            assert!(
                seen.uri.starts_with(&format!(
                    "/apis/batch/v1/namespaces/default/jobs/{expected_job}?"
                )),
                "{}",
                seen.uri
            );
            assert!(
                seen.uri.contains(FIELD_MANAGER_QUERY) && seen.uri.contains("force=true"),
                "{}",
                seen.uri
            );
            assert_eq!(seen.body["kind"], "Job");
            assert_eq!(
                seen.body["metadata"]["ownerReferences"][0]["uid"],
                "uid-wine"
            );
            assert_eq!(
                seen.body["spec"]["template"]["spec"]["containers"][0]["args"][0],
                "train"
            );

            let seen = expect_request(&mut handle, |s| (201, s.body.clone())).await;
            assert_eq!(
                (seen.method, seen.uri.as_str()),
                (
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/default/events?"
                )
            );
            assert_eq!(seen.body["reason"], "TrainingStarted");

            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            assert_eq!(seen.method, Method::PATCH);
            assert!(
                seen.uri.starts_with(
                    "/apis/champion.dev/v1alpha1/namespaces/default/modelpipelines/wine/status?"
                ),
                "{}",
                seen.uri
            );
            assert!(seen.uri.contains(FIELD_MANAGER_QUERY), "{}", seen.uri);
            let status = &seen.body["status"];
            assert_eq!(status["phase"], "Training");
            assert_eq!(status["challenger"]["job"], expected_job.as_str());
            assert_eq!(status["challenger"]["state"], "Training");
            let conds = status["conditions"].as_array().cloned().unwrap_or_default();
            let cond = |t: &str| {
                conds
                    .iter()
                    .find(|c| c["type"] == t)
                    .map(|c| c["status"].clone())
            };
            assert_eq!(cond("Training"), Some(json!("True")));
            assert_eq!(cond("DataAvailable"), Some(json!("True")));
            assert_eq!(cond("Promoted"), Some(json!("False")));
            handle
        });
        let action = reconcile_with_timeout(mp, ctx.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(2)),
            "next poll after pollInterval"
        );
        let mut handle = server
            .await
            .expect("the API server saw exactly the expected requests");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), handle.next_request())
                .await
                .is_err(),
            "no request after the status patch"
        );
        let text = metrics_text(&registry);
        assert!(
            text.contains("champion_training_runs_total{outcome=\"started\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn completed_better_run_is_promoted_and_rolled_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mp = pipeline_in(dir.path());
        let version = "0123456789ab";
        let report_dir = dir.path().join(format!("models/wine/{version}"));
        std::fs::create_dir_all(&report_dir).expect("model dir");
        let bytes = report(version, 0.81, None, None)
            .to_json_bytes()
            .expect("report serialises");
        std::fs::write(report_dir.join("report.json"), bytes).expect("report written");
        let job = job_name("wine", version);
        mp.status = Some(ModelPipelineStatus {
            challenger: Some(training_challenger(
                version,
                &job,
                Some(Time(Timestamp::UNIX_EPOCH)),
            )),
            ..Default::default()
        });
        let complete = job_fixture(&job, version, "fp1", "Complete", None);
        let (ctx, mut handle, registry) = Context::test(vec![complete], Vec::new());
        let model_uri = mp.model_uri(version);
        let applied = mp.clone();
        let server = tokio::spawn(async move {
            expect_secret_read(&mut handle).await;

            let seen = expect_predictor_applied(&mut handle).await;
            assert_eq!(seen.method, Method::PATCH);
            let env = &seen.body["spec"]["template"]["spec"]["containers"][0]["env"];
            assert_eq!(env[0], json!({"name": "MODEL_URI", "value": model_uri}));

            let seen = expect_request(&mut handle, |s| (201, s.body.clone())).await;
            assert_eq!(seen.body["reason"], "ModelPromoted");
            assert!(
                seen.body["note"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("0.8100"),
                "{}",
                seen.body["note"]
            );

            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            assert!(
                seen.uri.contains("/modelpipelines/wine/status?"),
                "{}",
                seen.uri
            );
            let status = &seen.body["status"];
            assert_eq!(status["champion"]["version"], "0123456789ab");
            assert_eq!(status["rollout"]["version"], "0123456789ab");
            assert_eq!(status["phase"], "RollingOut");
            assert_eq!(status["lastOutcome"], "Promoted");
            assert_eq!(status["history"][0]["outcome"], "Promoted");
            assert_eq!(status["challenger"]["state"], "Promoted");
        });
        reconcile_then_join(mp, ctx, server).await;
        let text = metrics_text(&registry);
        assert!(text.contains("champion_promotions_total 1"), "{text}");
        assert!(
            text.contains("champion_champion_score{namespace=\"default\",pipeline=\"wine\"} 0.81"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failed_run_records_the_termination_message_and_backs_off() {
        let mut mp = pipeline();
        let version = "0123456789ab";
        let job = job_name("wine", version);
        mp.status = Some(ModelPipelineStatus {
            champion: Some(crate::fixtures::champion("champ0000001", 0.7)),
            observed_generation: Some(1),
            challenger: Some(training_challenger(version, &job, None)),
            ..Default::default()
        });
        let failed = job_fixture(&job, version, "fp1", "Failed", Some("BackoffLimitExceeded"));
        let serving = crate::fixtures::serving_deployment(
            &mp,
            &crate::fixtures::champion("champ0000001", 0.7),
        );
        let (ctx, mut handle, _registry) = Context::test(vec![failed], vec![serving]);
        let applied = mp.clone();
        let expected_job = job.clone();
        let server = tokio::spawn(async move {
            let pod = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                "metadata": {"name": "p"},
                "status": {"containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 2,
                    "message": "wine-3.csv line 17: expected 13 columns, found 12"}}}]}
            }]});
            let seen = expect_request(&mut handle, |_| (200, pod)).await;
            assert_eq!(seen.method, Method::GET);
            assert_eq!(
                seen.uri,
                format!(
                    "/api/v1/namespaces/default/pods?&labelSelector=batch.kubernetes.io%2Fjob-name%3D{expected_job}"
                )
            );

            let seen = expect_request(&mut handle, |s| (201, s.body.clone())).await;
            assert_eq!(seen.body["reason"], "TrainingFailed");
            assert_eq!(seen.body["type"], "Warning");
            assert!(
                seen.body["note"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("line 17"),
                "{}",
                seen.body["note"]
            );

            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            let status = &seen.body["status"];
            assert_eq!(status["challenger"]["state"], "Failed");
            assert_eq!(status["consecutiveFailures"], 1);
            assert_eq!(
                status["champion"]["version"], "champ0000001",
                "the champion is untouched"
            );
            assert!(status["retryAfter"].is_string());
            assert_eq!(status["phase"], "Degraded");
            let reason = status["history"][0]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with("BackoffLimitExceeded") && reason.contains("line 17"),
                "{reason}"
            );
        });
        reconcile_then_join(mp, ctx, server).await;
    }

    #[tokio::test]
    async fn new_data_with_every_trainer_slot_taken_is_queued_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::write(dir.path().join("data/wine-1.csv"), "a,quality\n1,6\n").expect("csv");
        let mp = pipeline_in(dir.path());
        // Another pipeline's run holds the only slot.
        let mut other = pipeline();
        other.metadata.name = Some("other".into());
        other.metadata.uid = Some("uid-other".into());
        let running = build_job(&other, "v1", "fp1", None);
        let (mut ctx, mut handle, _registry) = Context::test(vec![running], Vec::new());
        if let Some(c) = Arc::get_mut(&mut ctx) {
            c.runs = RunSlots::new(Some(1));
        }
        let applied = mp.clone();
        let server = tokio::spawn(async move {
            expect_secret_read(&mut handle).await;
            // No Job is created: the next request is the status.
            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            assert!(
                seen.uri.contains("/modelpipelines/wine/status"),
                "{}",
                seen.uri
            );
            let training = seen.body["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Training").cloned())
                .unwrap_or_default();
            assert_eq!(training["status"], "False");
            assert_eq!(training["reason"], "Queued");
            assert!(seen.body["status"]["challenger"].is_null());
        });
        reconcile_then_join(mp, ctx, server).await;
    }

    #[test]
    fn the_run_cap_counts_launches_the_cache_has_not_seen_yet() {
        use kube::runtime::{reflector, watcher};
        let mp = pipeline();
        let (cache, mut writer) = reflector::store::<Job>();
        let slots = RunSlots::new(Some(2));
        assert_eq!(slots.free(&cache), Some(2));
        assert!(slots.take(&cache, "default", "a"));
        assert_eq!(
            slots.free(&cache),
            Some(1),
            "a launch counts before the watch shows it"
        );
        assert!(slots.take(&cache, "default", "b"));
        assert!(!slots.take(&cache, "default", "c"), "no third run");
        slots.release("default", "b");
        assert!(
            slots.take(&cache, "default", "c"),
            "a failed create gives its slot back"
        );
        // Once the watch delivers a running Job it is counted from the cache instead, once.
        let running = build_job(&mp, "v1", "fp1", None);
        let (ns, name) = (running.namespace().unwrap_or_default(), running.name_any());
        assert!(!slots.take(&cache, &ns, &name), "the cap is reached");
        writer.apply_watcher_event(&watcher::Event::Apply(running));
        assert_eq!(
            slots.free(&cache),
            Some(0),
            "a, c launched and one running Job in the cache: over the cap, none free"
        );
        assert!(
            slots.take(&cache, &ns, &name),
            "re-applying a Job that exists takes no new slot"
        );
        assert!(RunSlots::new(None).take(&cache, "default", "x"));
        assert_eq!(RunSlots::new(None).free(&cache), None);
    }

    /// A status that promoted `new` over `old` and is rolling it out, started now.
    fn rolling_out(new: &ChampionStatus, old: &ChampionStatus) -> ModelPipelineStatus {
        ModelPipelineStatus {
            champion: Some(new.clone()),
            observed_generation: Some(1),
            rollout: Some(RolloutStatus {
                version: new.version.clone(),
                previous: Some(old.clone()),
                started_at: Time(Timestamp::now()),
                data_seen_at: None,
                cause: Outcome::Promoted,
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_stale_cached_copy_is_read_again_before_acting() {
        use crate::fixtures::{champion, serving_deployment};
        let old = champion("old000000001", 0.7);
        let new = champion("new000000001", 0.8);
        // The API server's copy after the promotion's status write: rolling out `new`.
        let mut current = pipeline();
        current.metadata.resource_version = Some("2".into());
        current.status = Some(rolling_out(&new, &old));
        // The cache still holds the copy from before that write, with `old` as champion:
        // acting on it would apply `old`'s Deployment in the middle of the rollout.
        let mut cached = pipeline();
        cached.metadata.resource_version = Some("1".into());
        cached.status = Some(ModelPipelineStatus {
            champion: Some(old.clone()),
            observed_generation: Some(1),
            ..Default::default()
        });
        let mut rolling = serving_deployment(&current, &new);
        if let Some(st) = rolling.status.as_mut() {
            st.available_replicas = Some(0);
        }
        let (ctx, mut handle, _registry) = Context::test(Vec::new(), vec![rolling]);
        ctx.fresh.saw(&current);
        let reply = serde_json::to_value(&current).unwrap_or_default();
        let applied = current.clone();
        let server = tokio::spawn(async move {
            let seen = expect_request(&mut handle, |_| (200, reply)).await;
            assert_eq!(
                (seen.method, seen.uri.as_str()),
                (
                    Method::GET,
                    "/apis/champion.dev/v1alpha1/namespaces/default/modelpipelines/wine"
                )
            );
            // Only the conditions are new; the rollout goes on.
            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            assert_eq!(seen.method, Method::PATCH);
            assert!(
                seen.uri.contains("/modelpipelines/wine/status"),
                "{}",
                seen.uri
            );
            assert_eq!(seen.body["status"]["rollout"]["version"], "new000000001");
            assert_eq!(seen.body["status"]["champion"]["version"], "new000000001");
        });
        reconcile_then_join(cached.clone(), ctx.clone(), server).await;
        assert!(ctx.fresh.is_stale(&cached), "the old copy stays stale");
        assert!(!ctx.fresh.is_stale(&current));
        forget_deleted(&ctx, &[]);
        assert!(
            !ctx.fresh.is_stale(&cached),
            "a deleted pipeline's record is dropped"
        );
    }

    #[tokio::test]
    async fn stalled_rollout_is_reverted_to_the_previous_champion() {
        use crate::fixtures::{champion, serving_deployment};
        use k8s_openapi::api::apps::v1::DeploymentCondition;
        let mut mp = pipeline();
        let old = champion("old000000001", 0.7);
        let new = champion("new000000001", 0.8);
        mp.status = Some(rolling_out(&new, &old));
        let mut stalled = serving_deployment(&mp, &new);
        if let Some(st) = stalled.status.as_mut() {
            st.available_replicas = Some(0);
            st.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet has timed out progressing".into()),
                ..Default::default()
            }]);
        }
        let (ctx, mut handle, registry) = Context::test(Vec::new(), vec![stalled]);
        let applied = mp.clone();
        let server = tokio::spawn(async move {
            let seen = expect_request(&mut handle, |s| (201, s.body.clone())).await;
            assert_eq!(seen.body["reason"], "RolloutFailed");
            assert!(
                seen.body["note"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("timed out"),
                "{}",
                seen.body["note"]
            );

            let seen = expect_predictor_applied(&mut handle).await;
            assert_eq!(
                seen.body["metadata"]["annotations"]["champion.dev/model-version"],
                "old000000001"
            );

            let seen = expect_request(&mut handle, |s| (201, s.body.clone())).await;
            assert_eq!(seen.body["reason"], "RolledBack");

            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            let status = &seen.body["status"];
            assert_eq!(status["champion"]["version"], "old000000001");
            assert_eq!(status["rollout"]["version"], "old000000001");
            assert!(
                status["rollout"]["previous"].is_null(),
                "a revert has nothing to revert to"
            );
            assert_eq!(status["history"][0]["outcome"], "RolledBack");
            assert!(
                status["history"][0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("timed out")
            );
            let degraded = status["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|c| c["type"] == "Degraded");
            assert_eq!(
                degraded.map(|c| (c["status"].clone(), c["reason"].clone())),
                Some((json!("True"), json!("RolloutFailed")))
            );
        });
        reconcile_then_join(mp, ctx, server).await;
        let text = metrics_text(&registry);
        assert!(
            text.contains("champion_rollbacks_total{cause=\"rollout_failed\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_job_missing_from_the_cache_is_looked_up_before_it_is_called_vanished() {
        let mut mp = pipeline();
        let job = job_name("wine", "0123456789ab");
        mp.status = Some(ModelPipelineStatus {
            observed_generation: Some(1),
            challenger: Some(training_challenger("0123456789ab", &job, None)),
            ..Default::default()
        });
        let running = crate::build::build_job(&mp, "0123456789ab", "fp1", None);
        let (ctx, mut handle, _registry) = Context::test(Vec::new(), Vec::new());
        let applied = mp.clone();
        let expected = job.clone();
        let server = tokio::spawn(async move {
            let reply = serde_json::to_value(&running).unwrap_or_default();
            let seen = expect_request(&mut handle, |_| (200, reply)).await;
            assert_eq!(
                (seen.method, seen.uri),
                (
                    Method::GET,
                    format!("/apis/batch/v1/namespaces/default/jobs/{expected}")
                )
            );
            // The run is still going: the first status write records conditions and phase only.
            let seen = expect_request(&mut handle, |s| (200, with_status(&applied, &s.body))).await;
            assert_eq!(seen.body["status"]["challenger"]["state"], "Training");
            assert_eq!(seen.body["status"]["phase"], "Training");
        });
        reconcile_then_join(mp, ctx, server).await;
    }
}
