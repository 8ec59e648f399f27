//! Live analysis (spec.rollout.strategy `Canary` or `Shadow`): the challenger that passed the
//! offline gate is judged on live traffic before it becomes the champion.
//!
//! The reconcile keeps its shape; this file holds each stage's part:
//! - observe: [`observe`] reads the challenger Deployment and, while analysis runs, the figures
//!   of the current step: the predictor pods' `/metrics` ([`crate::podmetrics`]) as deltas
//!   against the step's first read ([`Baselines`], in memory), or PromQL when
//!   `analysis.prometheusUrl` is set ([`crate::promql`]);
//! - decide: [`decide`] (pure) turns the figures into a [`LiveStep`] with the
//!   [`crate::analysis`] judgement and the replica [`Plan`];
//! - transition: `Next::start_live` (called where the offline gate promotes) and
//!   `Next::live_step` (pure) write `status.live`, history, Events and the Deployments;
//! - status: [`derive`] sets the `LiveAnalysis` condition and shows the phase `RollingOut`.
//!
//! Canary: `<pipeline>-predictor-canary` (the challenger, same pod template as the champion's
//! but for role=canary) joins the predictor Service; each step sets the two replica counts.
//! The champion's pod template never changes, so a failed canary never restarts it. A passed
//! last step rolls the champion Deployment to the challenger (the Replace rollout, so a stalled
//! rollout is still reverted); the canary is scaled to 0 once the champion is fully available.
//!
//! Shadow: `<pipeline>-predictor-shadow` with its own Service; the champion's pods get
//! SHADOW_URL / SHADOW_PERCENT (a pod template change: the champion's pods are replaced once
//! by a zero-downtime rolling update when the shadow run starts, and once more when it ends
//! without promotion).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use champion_api::{
    Cause, ChallengerState, ChampionStatus, LABEL_PIPELINE, LiveFigures, LiveStatus, ModelPipeline,
    ModelPipelineStatus, Outcome, Phase, RolloutStrategy, condition,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::analysis::{self, Judgement};
use crate::build::{Part, build_predictor, build_shadow_service};
use crate::context::Context;
use crate::decide::{Decision, Step};
use crate::effects::Desired;
use crate::events::Reason;
use crate::metrics::{MetricEvent, RunOutcome};
use crate::names::{canary_name, label_value, predictor_name, shadow_name};
use crate::observe::Observed;
use crate::podmetrics::{
    Counters, LABEL_ROLE, PodTarget, ROLE_CANARY, ROLE_CHAMPION, pods_of, scrape,
};
use crate::status::set_condition;
use crate::transition::Next;
use crate::views::{DeploymentView, RolloutState};

type Key = (String, String);

/// Each pipeline's counters at the start of the current step, per pod uid: the figures of a
/// step are the deltas since. In memory: after an operator restart the step's window starts
/// again at the first read (pods older than the step count from then, newer ones in full).
#[derive(Default)]
pub struct Baselines(
    Mutex<HashMap<Key, Baseline>>,
    Mutex<HashMap<Key, std::time::Instant>>,
);

struct Baseline {
    /// (version, step) the baseline belongs to.
    window: (String, i32),
    /// When the window began: pods started later count in full.
    since: Timestamp,
    pods: HashMap<String, Counters>,
}

impl Baselines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Baseline>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The summed deltas of `pods` since the start of `window` (which began at `since`).
    pub fn delta(
        &self,
        key: &Key,
        window: (String, i32),
        since: Timestamp,
        pods: &[(PodTarget, Counters)],
    ) -> Counters {
        let mut all = self.lock();
        let b = all.entry(key.clone()).or_insert_with(|| Baseline {
            window: window.clone(),
            since,
            pods: HashMap::new(),
        });
        if b.window != window {
            *b = Baseline {
                window,
                since,
                pods: HashMap::new(),
            };
        }
        let mut sum = Counters::default();
        for (pod, now) in pods {
            match b.pods.get(&pod.uid) {
                Some(base) => sum.add(&now.delta(base)),
                None => {
                    let new = pod.started.is_some_and(|t| t >= b.since);
                    if new {
                        sum.add(now);
                        b.pods.insert(pod.uid.clone(), Counters::default());
                    } else {
                        b.pods.insert(pod.uid.clone(), now.clone());
                    }
                }
            }
        }
        sum
    }

    /// Whether the figures of `key` are due: not read within the last `interval`. A status
    /// write wakes the pipeline again at once; reading (and writing new figures) only every
    /// interval keeps that from becoming a loop.
    pub fn due(&self, key: &Key, interval: Duration) -> bool {
        let mut reads = self
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        match reads.get(key) {
            Some(last) if now.duration_since(*last) < interval => false,
            _ => {
                reads.insert(key.clone(), now);
                true
            }
        }
    }

    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
        self.1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    pub fn retain(&self, keep: &HashSet<Key>) {
        self.lock().retain(|k, _| keep.contains(k));
        self.1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| keep.contains(k));
    }
}

/// The challenger Deployment (canary or shadow) as the cache has it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChallengerView {
    pub replicas: i32,
    pub ready: i32,
}

/// What observe saw of live analysis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveObserved {
    pub challenger: Option<ChallengerView>,
    /// Ready pods of the champion Deployment.
    pub champion_ready: i32,
    /// The current step's figures (only while analysis runs, and at most once per
    /// `analysis.intervalSeconds`: `None` in between); `Err` says why they could not be read.
    pub figures: Option<Result<LiveFigures, String>>,
}

/// Whether live analysis of `status.live` is running (not ended).
pub fn in_progress(status: &ModelPipelineStatus) -> bool {
    match (&status.live, &status.challenger) {
        (Some(l), Some(c)) => c.state == ChallengerState::LiveAnalysis && c.version == l.version,
        _ => false,
    }
}

fn challenger_name(mp: &ModelPipeline, strategy: RolloutStrategy) -> Option<String> {
    let name = mp.metadata.name.as_deref().unwrap_or_default();
    match strategy {
        RolloutStrategy::Canary => Some(canary_name(name)),
        RolloutStrategy::Shadow => Some(shadow_name(name)),
        RolloutStrategy::Replace => None,
    }
}

fn cached(ctx: &Context, ns: &str, name: &str) -> Option<std::sync::Arc<Deployment>> {
    ctx.deployments.get(&ObjectRef::new(name).within(ns))
}

fn ready(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// The live part of `observe`: `None` when the pipeline never had live analysis.
pub async fn observe(ctx: &Context, mp: &ModelPipeline) -> Option<LiveObserved> {
    let status = mp.status.as_ref()?;
    let live = status.live.as_ref()?;
    let ns = mp.metadata.namespace.clone().unwrap_or_default();
    let name = mp.metadata.name.clone().unwrap_or_default();
    let key = (ns.clone(), name.clone());
    let challenger_dep = challenger_name(mp, live.strategy).and_then(|n| cached(ctx, &ns, &n));
    let champion_dep = cached(ctx, &ns, &predictor_name(&name));
    let mut seen = LiveObserved {
        challenger: challenger_dep.as_ref().map(|d| ChallengerView {
            replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: ready(d),
        }),
        champion_ready: champion_dep.as_deref().map_or(0, ready),
        figures: None,
    };
    if !in_progress(status) {
        ctx.live.forget(&key);
        return Some(seen);
    }
    if !ctx.live.due(&key, requeue(mp)) {
        return Some(seen);
    }
    let window = (live.version.clone(), live.step);
    let since = live.step_started_at.0;
    let figures = match &mp.spec.rollout.analysis.prometheus_url {
        Some(url) => crate::promql::figures(ctx, mp, live, url).await,
        None => {
            pod_figures(
                ctx,
                mp,
                live.strategy,
                &key,
                window,
                since,
                champion_dep.as_deref(),
                challenger_dep.as_deref(),
            )
            .await
        }
    };
    seen.figures = Some(figures);
    Some(seen)
}

/// Reads and sums the deltas of one role's pods; `Err` when there are pods but none could be
/// read.
async fn role_delta(
    ctx: &Context,
    mp: &ModelPipeline,
    key: &Key,
    window: &(String, i32),
    since: Timestamp,
    role: &str,
    deployment: Option<&Deployment>,
) -> Result<Counters, String> {
    let Some(uid) = deployment.and_then(|d| d.metadata.uid.as_deref()) else {
        return Ok(Counters::default());
    };
    let ns = mp.metadata.namespace.as_deref().unwrap_or_default();
    let selector = format!(
        "{LABEL_PIPELINE}={},{LABEL_ROLE}={role}",
        label_value(mp.metadata.name.as_deref().unwrap_or_default())
    );
    let pods = pods_of(&ctx.client, ns, &selector, uid, role)
        .await
        .map_err(|e| e.to_string())?;
    let port = u16::try_from(mp.spec.predictor.port).unwrap_or(8080);
    let reads = futures::future::join_all(pods.iter().map(|p| scrape(p, port))).await;
    let mut ok = Vec::new();
    let mut first_error = None;
    for (pod, read) in pods.into_iter().zip(reads) {
        match read {
            Ok(c) => ok.push((pod, c)),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{role} pod {}: {e}", pod.name));
            }
        }
    }
    if ok.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    Ok(ctx.live.delta(key, window.clone(), since, &ok))
}

#[allow(clippy::too_many_arguments)]
async fn pod_figures(
    ctx: &Context,
    mp: &ModelPipeline,
    strategy: RolloutStrategy,
    key: &Key,
    window: (String, i32),
    since: Timestamp,
    champion: Option<&Deployment>,
    challenger: Option<&Deployment>,
) -> Result<LiveFigures, String> {
    let champ = role_delta(ctx, mp, key, &window, since, ROLE_CHAMPION, champion).await?;
    match strategy {
        RolloutStrategy::Shadow => Ok(analysis::shadow_figures(&champ)),
        _ => {
            let canary = role_delta(ctx, mp, key, &window, since, ROLE_CANARY, challenger).await?;
            let online = mp.spec.rollout.analysis.online.as_ref().map(|g| g.metric);
            Ok(analysis::canary_figures(&canary, &champ, online))
        }
    }
}

/// Replica counts a live step asks for and the traffic share they give now.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The champion's replicas; `None`: the spec's.
    pub champion: Option<i32>,
    /// The challenger's (canary or shadow) replicas.
    pub challenger: i32,
    /// The challenger's share of live traffic now (canary: of ready pods; shadow: mirrored).
    pub weight_percent: i32,
}

/// One live-analysis step of a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveStep {
    /// Not decided yet: keep the replicas, show the figures (`None`: figures and message as
    /// they are, when none were read in this reconcile).
    Wait {
        figures: Option<LiveFigures>,
        message: Option<String>,
        plan: Plan,
    },
    /// A canary step passed: the next begins with `plan`.
    Advance {
        figures: LiveFigures,
        message: String,
        plan: Plan,
    },
    /// The last step (or the shadow run) passed: the challenger becomes the champion.
    Promote {
        figures: LiveFigures,
        message: String,
    },
    /// A threshold broke (LiveAnalysisFailed) or there was not enough traffic
    /// (InsufficientTraffic): the challenger is rejected. `scale_down`: the champion is fully
    /// available, the challenger may go to 0 now (else a later Cleanup does it).
    Fail {
        cause: Cause,
        figures: Option<LiveFigures>,
        message: String,
        scale_down: bool,
    },
    /// Analysis ended and the champion is fully available: scale the challenger to 0.
    Cleanup,
}

fn champion_available(mp: &ModelPipeline, obs: &Observed, live: &LiveObserved) -> bool {
    let champion = mp
        .status
        .as_ref()
        .and_then(|s| s.champion.as_ref())
        .map(|c| c.version.as_str());
    let complete = matches!(&obs.deployment, Some(DeploymentView { version: Some(v), rollout: RolloutState::Complete }) if Some(v.as_str()) == champion);
    complete && live.champion_ready >= mp.spec.predictor.replicas
}

/// The live step of this reconcile, if live analysis runs or needs cleaning up (pure).
pub fn decide(mp: &ModelPipeline, obs: &Observed) -> Option<Step> {
    let status = mp.status.as_ref()?;
    let live = status.live.as_ref()?;
    let seen = obs.live.as_ref()?;
    if !in_progress(status) {
        let leftover = seen.challenger.as_ref().is_some_and(|c| c.replicas > 0);
        return (leftover && status.rollout.is_none() && champion_available(mp, obs, seen))
            .then_some(Step::Live(LiveStep::Cleanup));
    }
    let now = obs.now;
    let scale_down = champion_available(mp, obs, seen);
    let fail = |cause, figures, message| {
        Some(Step::Live(LiveStep::Fail {
            cause,
            figures,
            message,
            scale_down,
        }))
    };
    let spec = &mp.spec.rollout;
    let challenger_ready = seen.challenger.as_ref().map_or(0, |c| c.ready);
    match live.strategy {
        RolloutStrategy::Replace => fail(
            Cause::LiveAnalysisFailed,
            None,
            "status.live names no live strategy".to_string(),
        ),
        RolloutStrategy::Canary => {
            let steps = &spec.canary.steps;
            let last = steps.len().saturating_sub(1);
            let index = usize::try_from(live.step).unwrap_or(0).min(last);
            let percent = steps.get(index).copied().unwrap_or(100);
            let plan = canary_plan(mp, percent, seen.champion_ready, challenger_ready);
            let elapsed = now.duration_since(live.step_started_at.0).as_secs_f64();
            let limit = 3.0 * f64::from(spec.canary.step_seconds);
            let Some(Ok(figures)) = &seen.figures else {
                let text = "for 3 × stepSeconds";
                return Some(Step::Live(without_figures(
                    seen, elapsed, limit, text, plan, scale_down,
                )));
            };
            let figures = figures.clone();
            let step_text = format!("step {}/{} ({percent} %)", index + 1, steps.len());
            Some(Step::Live(
                match analysis::judge_canary(
                    &analysis::step_analysis(&spec.analysis, index, percent),
                    &spec.canary,
                    &figures,
                    elapsed,
                ) {
                    Judgement::Wait(m) => LiveStep::Wait {
                        figures: Some(figures),
                        message: Some(format!("{step_text}: {m}")),
                        plan,
                    },
                    Judgement::Pass(m) if index < last => {
                        let next = steps.get(index + 1).copied().unwrap_or(100);
                        LiveStep::Advance {
                            figures,
                            message: format!("{step_text} passed: {m}"),
                            plan: canary_plan(mp, next, seen.champion_ready, challenger_ready),
                        }
                    }
                    Judgement::Pass(m) => LiveStep::Promote {
                        figures,
                        message: format!("{step_text} passed, the last: {m}"),
                    },
                    Judgement::Fail(m) => LiveStep::Fail {
                        cause: Cause::LiveAnalysisFailed,
                        figures: Some(figures),
                        message: format!("canary {step_text} failed: {m}"),
                        scale_down,
                    },
                    Judgement::Insufficient(m) => LiveStep::Fail {
                        cause: Cause::InsufficientTraffic,
                        figures: Some(figures),
                        message: format!("canary {step_text}: {m}"),
                        scale_down,
                    },
                },
            ))
        }
        RolloutStrategy::Shadow => {
            let plan = Plan {
                champion: None,
                challenger: spec.shadow.replicas,
                weight_percent: spec.shadow.mirror_percent,
            };
            let elapsed = now.duration_since(live.started_at.0).as_secs_f64();
            let limit = f64::from(spec.shadow.max_duration_seconds);
            let Some(Ok(figures)) = &seen.figures else {
                let text = "within maxDurationSeconds";
                return Some(Step::Live(without_figures(
                    seen, elapsed, limit, text, plan, scale_down,
                )));
            };
            let figures = figures.clone();
            Some(Step::Live(
                match analysis::judge_shadow(&spec.analysis, &spec.shadow, &figures, elapsed) {
                    Judgement::Wait(m) => LiveStep::Wait {
                        figures: Some(figures),
                        message: Some(format!("shadow: {m}")),
                        plan,
                    },
                    Judgement::Pass(m) => LiveStep::Promote {
                        figures,
                        message: m,
                    },
                    Judgement::Fail(m) => LiveStep::Fail {
                        cause: Cause::LiveAnalysisFailed,
                        figures: Some(figures),
                        message: format!("shadow run failed: {m}"),
                        scale_down,
                    },
                    Judgement::Insufficient(m) => LiveStep::Fail {
                        cause: Cause::InsufficientTraffic,
                        figures: Some(figures),
                        message: format!("shadow run: {m}"),
                        scale_down,
                    },
                },
            ))
        }
    }
}

/// The step to take when this reconcile has no figures: while they are unavailable, wait with
/// `plan` (saying why when reading them failed); once reading them has failed for
/// `limit_seconds` of `elapsed` (`limit_text` names the limit in the message), fail with
/// `InsufficientTraffic`.
fn without_figures(
    seen: &LiveObserved,
    elapsed: f64,
    limit_seconds: f64,
    limit_text: &str,
    plan: Plan,
    scale_down: bool,
) -> LiveStep {
    match &seen.figures {
        Some(Err(e)) if elapsed >= limit_seconds => LiveStep::Fail {
            cause: Cause::InsufficientTraffic,
            figures: None,
            message: format!("the figures could not be read {limit_text}: {e}"),
            scale_down,
        },
        other => LiveStep::Wait {
            figures: None,
            message: other
                .as_ref()
                .and_then(|r| r.as_ref().err())
                .map(|e| format!("figures unavailable: {e}")),
            plan,
        },
    }
}

/// The replicas of a canary step of `percent` (see [`analysis::canary_split`]) and the share
/// the ready pods give now.
pub fn canary_plan(
    mp: &ModelPipeline,
    percent: i32,
    champion_ready: i32,
    canary_ready: i32,
) -> Plan {
    let spec_replicas = mp.spec.predictor.replicas;
    let (champion, canary) = analysis::canary_split(spec_replicas, percent, canary_ready);
    Plan {
        champion: (champion != spec_replicas).then_some(champion),
        challenger: canary,
        weight_percent: analysis::effective_percent(champion_ready, canary_ready),
    }
}

/// The champion's Deployment part: with the shadow's SHADOW_* env while a shadow run is in
/// progress.
pub fn champion_part(
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
    replicas: Option<i32>,
) -> Part {
    let shadow = status
        .live
        .as_ref()
        .filter(|l| l.strategy == RolloutStrategy::Shadow && in_progress(status))
        .map(|_| (shadow_url(mp), mp.spec.rollout.shadow.mirror_percent));
    Part::Champion { replicas, shadow }
}

/// The in-cluster URL of the shadow Service.
pub fn shadow_url(mp: &ModelPipeline) -> String {
    format!(
        "http://{}.{}.svc:{}",
        shadow_name(mp.metadata.name.as_deref().unwrap_or_default()),
        mp.metadata.namespace.as_deref().unwrap_or_default(),
        mp.spec.predictor.port
    )
}

/// The challenger of `live` as a model to build a Deployment for.
fn challenger_model(
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
    live: &LiveStatus,
) -> ChampionStatus {
    let c = status
        .challenger
        .as_ref()
        .filter(|c| c.version == live.version);
    ChampionStatus {
        version: live.version.clone(),
        model_uri: mp.model_uri(&live.version),
        score: c.and_then(|c| c.score),
        metric: Some(mp.spec.evaluation.metric),
        data_fingerprint: c.map(|c| c.data_fingerprint.clone()).unwrap_or_default(),
        model_sha256: live.model_sha256.clone(),
        promoted_at: live.started_at.clone(),
    }
}

fn requeue(mp: &ModelPipeline) -> Duration {
    Duration::from_secs(
        u64::try_from(mp.spec.rollout.analysis.interval_seconds.max(1)).unwrap_or(10),
    )
}

impl Next<'_> {
    /// The challenger Deployment of `live` with `replicas` (and the shadow's Service).
    fn challenger_objects(&mut self, live: &LiveStatus, replicas: i32) {
        let model = challenger_model(self.mp, &self.status, live);
        let part = match live.strategy {
            RolloutStrategy::Shadow => Part::Shadow { replicas },
            _ => Part::Canary { replicas },
        };
        self.effects
            .objects
            .push(Desired::Deployment(Box::new(build_predictor(
                self.mp, &model, &part,
            ))));
        if live.strategy == RolloutStrategy::Shadow && replicas > 0 {
            self.effects
                .objects
                .push(Desired::Service(Box::new(build_shadow_service(self.mp))));
        }
    }

    /// The champion's Deployment as live analysis wants it now.
    fn champion_object(&mut self, replicas: Option<i32>) {
        if let Some(champion) = self.status.champion.clone() {
            let part = champion_part(self.mp, &self.status, replicas);
            self.effects
                .objects
                .push(Desired::Deployment(Box::new(build_predictor(
                    self.mp, &champion, &part,
                ))));
        }
    }

    /// Where the offline gate (and approval) promoted `candidate`: with a live strategy and a
    /// champion to compare with, live analysis starts instead of the rollout; returns whether
    /// it did. A first model has no champion to compare with or mirror from: it rolls out
    /// directly.
    pub(crate) fn start_live(
        &mut self,
        candidate: &ChampionStatus,
        decision: &Decision,
        approved_by: Option<&str>,
    ) -> bool {
        let strategy = self.mp.spec.rollout.strategy;
        if strategy == RolloutStrategy::Replace || self.status.champion.is_none() {
            return false;
        }
        let spec = &self.mp.spec.rollout;
        if let Some(c) = self.status.challenger.as_mut() {
            c.state = ChallengerState::LiveAnalysis;
        }
        let (weight, replicas, what) = match strategy {
            RolloutStrategy::Shadow => (
                spec.shadow.mirror_percent,
                spec.shadow.replicas,
                format!(
                    "shadow run: {} % of live requests mirrored to it, judged after {} answers",
                    spec.shadow.mirror_percent, spec.shadow.min_requests
                ),
            ),
            _ => {
                let first = spec.canary.steps.first().copied().unwrap_or(100);
                let plan = canary_plan(self.mp, first, 0, 0);
                (
                    0,
                    plan.challenger,
                    format!(
                        "canary step 1/{} ({first} %), {}s each",
                        spec.canary.steps.len(),
                        spec.canary.step_seconds
                    ),
                )
            }
        };
        let message = format!(
            "version {} passed the offline gate ({}); {what}",
            candidate.version, decision.reason
        );
        let live = LiveStatus {
            strategy,
            version: candidate.version.clone(),
            step: 0,
            weight_percent: weight,
            started_at: Time(self.now),
            step_started_at: Time(self.now),
            figures: None,
            message: Some(message.clone()),
            model_sha256: candidate.model_sha256.clone(),
            approved_by: approved_by.map(str::to_string),
        };
        self.status.live = Some(live.clone());
        self.challenger_objects(&live, replicas);
        if strategy == RolloutStrategy::Shadow {
            self.champion_object(None);
        }
        self.effects.requeue = requeue(self.mp);
        self.event(Reason::LiveAnalysisStarted, message);
        true
    }

    /// The status, objects and Events of one live step.
    pub(crate) fn live_step(&mut self, step: &LiveStep) {
        let Some(mut live) = self.status.live.clone() else {
            return;
        };
        self.effects.requeue = requeue(self.mp);
        match step {
            LiveStep::Wait {
                figures,
                message,
                plan,
            } => {
                if figures.is_some() {
                    live.figures = figures.clone();
                }
                if message.is_some() {
                    live.message = message.clone();
                }
                live.weight_percent = plan.weight_percent;
                self.status.live = Some(live.clone());
                self.champion_object(plan.champion);
                self.challenger_objects(&live, plan.challenger);
            }
            LiveStep::Advance {
                figures,
                message,
                plan,
            } => {
                live.step += 1;
                live.step_started_at = Time(self.now);
                live.figures = Some(figures.clone());
                live.message = Some(message.clone());
                live.weight_percent = plan.weight_percent;
                self.status.live = Some(live.clone());
                self.champion_object(plan.champion);
                self.challenger_objects(&live, plan.challenger);
                self.event(Reason::LiveAnalysisStep, message.clone());
            }
            LiveStep::Promote { figures, message } => {
                live.figures = Some(figures.clone());
                live.message = Some(format!("passed: {message}; rolling the champion to it"));
                self.finish_live(&live, Outcome::Promoted, Cause::LiveAnalysisPassed, message);
            }
            LiveStep::Fail {
                cause,
                figures,
                message,
                scale_down,
            } => {
                if figures.is_some() {
                    live.figures = figures.clone();
                }
                live.message = Some(message.clone());
                self.finish_live(&live, Outcome::Rejected, *cause, message);
                self.champion_object(None);
                if *scale_down {
                    self.challenger_objects(&live, 0);
                }
            }
            LiveStep::Cleanup => self.challenger_objects(&live, 0),
        }
    }

    /// Ends live analysis of `live` with `outcome`: history, last run, metrics and Events; a
    /// promotion starts the champion's rollout to the challenger.
    fn finish_live(&mut self, live: &LiveStatus, outcome: Outcome, cause: Cause, message: &str) {
        let model = challenger_model(self.mp, &self.status, live);
        let (score, champion_score, fp, seen) = match self.status.challenger.as_mut() {
            Some(c) => {
                c.state = if outcome == Outcome::Promoted {
                    ChallengerState::Promoted
                } else {
                    ChallengerState::Rejected
                };
                c.reason = Some(message.to_string());
                (
                    c.score,
                    c.champion_score,
                    c.data_fingerprint.clone(),
                    c.data_seen_at.clone(),
                )
            }
            None => (None, None, String::new(), None),
        };
        self.status.live = Some(live.clone());
        let version = live.version.clone();
        self.finish_run(&version, outcome, (score, champion_score));
        let mut h = self.entry(&version, outcome, cause, message.to_string());
        h.score = score;
        h.champion_score = champion_score;
        h.data_fingerprint = Some(fp);
        h.model_sha256 = live.model_sha256.clone();
        h.by = live.approved_by.clone();
        self.history(h);
        if outcome == Outcome::Promoted {
            let champion = ChampionStatus {
                promoted_at: Time(self.now),
                ..model
            };
            self.start_rollout(champion, Outcome::Promoted, seen);
            self.count(MetricEvent::RunFinished(RunOutcome::Promoted));
            self.event(
                Reason::LiveAnalysisPassed,
                format!("version {version} passed live analysis: {message}"),
            );
            self.event(
                Reason::ModelPromoted,
                format!("version {version} promoted after live analysis"),
            );
        } else {
            self.count(MetricEvent::RunFinished(RunOutcome::Rejected));
            self.event(
                Reason::LiveAnalysisFailed,
                format!(
                    "version {version} rejected ({}): {message}; the champion keeps all traffic",
                    cause_word(cause)
                ),
            );
        }
    }
}

fn cause_word(cause: Cause) -> &'static str {
    match cause {
        Cause::InsufficientTraffic => "InsufficientTraffic",
        Cause::LiveAnalysisPassed => "LiveAnalysisPassed",
        _ => "LiveAnalysisFailed",
    }
}

/// The `LiveAnalysis` condition and, while analysis runs, the phase `RollingOut`.
pub fn derive(
    mp: &ModelPipeline,
    status: &mut ModelPipelineStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let Some(live) = status.live.clone() else {
        return;
    };
    let running = in_progress(status);
    let strategy = match live.strategy {
        RolloutStrategy::Canary => "Canary",
        RolloutStrategy::Shadow => "Shadow",
        RolloutStrategy::Replace => "Replace",
    };
    let message = live.message.clone().unwrap_or_default();
    let (on, reason) = if running {
        (true, strategy)
    } else {
        let last = status
            .history
            .iter()
            .rev()
            .find(|h| h.version == live.version)
            .and_then(|h| h.cause);
        (
            false,
            match last {
                Some(Cause::LiveAnalysisPassed) => "LiveAnalysisPassed",
                Some(Cause::InsufficientTraffic) => "InsufficientTraffic",
                Some(Cause::LiveAnalysisFailed) => "LiveAnalysisFailed",
                _ => "Ended",
            },
        )
    };
    let text = if running {
        format!(
            "{strategy} of version {}: {} % of traffic; {message}",
            live.version, live.weight_percent
        )
    } else {
        format!("version {}: {message}", live.version)
    };
    set_condition(
        &mut status.conditions,
        condition::LIVE_ANALYSIS,
        on,
        reason,
        &text,
        generation,
        now,
    );
    if running && !mp.spec.suspend && status.rollout.is_none() {
        status.phase = Some(Phase::RollingOut);
    }
}

#[cfg(test)]
mod tests;
