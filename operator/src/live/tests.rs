use super::*;
use crate::decide::{Verdict, decide as decide_step};
use crate::fixtures::{champion, observed, pipeline, training_challenger};
use crate::transition::transition;
use crate::views::DeploymentView;
use champion_api::{ModelPipelineStatus, RolloutStrategy};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::SignedDuration;
use std::collections::BTreeMap;

const NEW: &str = "aaaaaaaaaaaa";
const OLD: &str = "oldversion01";

fn canary_pipeline() -> ModelPipeline {
    let mut mp = pipeline();
    mp.spec.rollout.strategy = RolloutStrategy::Canary;
    mp.spec.predictor.replicas = 2;
    mp
}

fn promote() -> Decision {
    Decision {
        verdict: Verdict::Promote,
        cause: Cause::BeatChampion,
        reason: "challenger f1Macro 0.9000 beats champion 0.8000".into(),
        score: Some(0.9),
        champion_score: Some(0.8),
        model_sha256: Some("ab".repeat(32)),
    }
}

/// A pipeline with champion OLD whose run NEW just completed.
fn judged(mp: &mut ModelPipeline) {
    mp.status = Some(ModelPipelineStatus {
        champion: Some(champion(OLD, 0.8)),
        challenger: Some(training_challenger(NEW, "wine-train-new", None)),
        observed_generation: Some(1),
        ..ModelPipelineStatus::default()
    });
}

fn deployments(t: &crate::transition::Transition) -> Vec<Deployment> {
    t.effects
        .objects
        .iter()
        .filter_map(|o| match o {
            Desired::Deployment(d) => Some((**d).clone()),
            _ => None,
        })
        .collect()
}

fn services(t: &crate::transition::Transition) -> Vec<Service> {
    t.effects
        .objects
        .iter()
        .filter_map(|o| match o {
            Desired::Service(s) => Some((**s).clone()),
            _ => None,
        })
        .collect()
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn env(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers[0]
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The status after the offline gate promoted NEW under `mp`'s strategy.
fn started(mp: &mut ModelPipeline) -> crate::transition::Transition {
    judged(mp);
    let step = Step::Judge {
        job: "wine-train-new".into(),
        version: NEW.into(),
        decision: promote(),
    };
    let t = transition(mp, &observed(None), &step);
    mp.status = Some(t.status.clone());
    t
}

#[test]
fn canary_starts_after_the_offline_gate_without_touching_the_champion() {
    let mut mp = canary_pipeline();
    let t = started(&mut mp);
    let s = &t.status;
    assert_eq!(
        s.challenger.as_ref().map(|c| c.state),
        Some(ChallengerState::LiveAnalysis)
    );
    assert_eq!(s.champion.as_ref().map(|c| c.version.as_str()), Some(OLD));
    assert!(s.rollout.is_none(), "no rollout before analysis passed");
    assert!(
        s.history.is_empty(),
        "the outcome is recorded when analysis ends"
    );
    let live = s.live.as_ref().expect("status.live");
    assert_eq!((live.strategy, live.step), (RolloutStrategy::Canary, 0));
    assert_eq!(live.model_sha256, Some("ab".repeat(32)));
    assert_eq!(s.phase, Some(Phase::RollingOut));
    let cond = s
        .conditions
        .iter()
        .find(|c| c.type_ == condition::LIVE_ANALYSIS)
        .expect("LiveAnalysis condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "Canary")
    );
    let d = deployments(&t);
    assert_eq!(d.len(), 1, "only the canary is applied");
    let canary = &d[0];
    assert_eq!(
        canary.metadata.name.as_deref(),
        Some("wine-predictor-canary")
    );
    let spec = canary.spec.as_ref().expect("spec");
    assert_eq!(
        spec.replicas,
        Some(1),
        "10 % of 2 champion replicas: 1 canary pod"
    );
    let labels = pod_labels(canary);
    assert_eq!(labels.get(LABEL_ROLE).map(String::as_str), Some("canary"));
    assert_eq!(
        labels.get("champion.dev/model-version").map(String::as_str),
        Some(NEW)
    );
    let e = env(canary);
    assert_eq!(
        e.get("MODEL_URI").map(String::as_str),
        Some("file:///models/default/wine/aaaaaaaaaaaa/")
    );
    assert_eq!(e.get("MODEL_SHA256"), Some(&"ab".repeat(32)));
    // The main Service selects the canary's pods and the champion's; the champion's selector
    // is the one it always had and does not select... it may, but its ReplicaSets own only
    // its own pods; the canary's selector does not select the champion's pods.
    let service = crate::build::build_service(&mp);
    let service_sel = service.spec.and_then(|s| s.selector).unwrap_or_default();
    assert!(selects(&service_sel, &labels));
    let champ = crate::build::build_deployment(&mp, &champion(OLD, 0.8));
    let champ_labels = pod_labels(&champ);
    assert!(selects(&service_sel, &champ_labels));
    assert_eq!(
        champ_labels.get(LABEL_ROLE).map(String::as_str),
        Some("champion")
    );
    let canary_sel = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(!selects(&canary_sel, &champ_labels));
    assert_eq!(
        champ
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone()),
        Some(BTreeMap::from([
            ("champion.dev/pipeline".to_string(), "wine".to_string()),
            (
                "app.kubernetes.io/component".to_string(),
                "predictor".to_string()
            ),
        ])),
        "the champion's selector is unchanged"
    );
    let kinds: Vec<_> = t.effects.events.iter().map(|e| e.reason).collect();
    assert_eq!(kinds, [Reason::LiveAnalysisStarted]);
}

#[test]
fn a_first_model_and_the_replace_strategy_roll_out_at_once() {
    let mut mp = pipeline();
    let t = started(&mut mp);
    assert!(t.status.live.is_none());
    assert_eq!(
        t.status.rollout.as_ref().map(|r| r.version.as_str()),
        Some(NEW)
    );
    let mut mp = canary_pipeline();
    mp.status = Some(ModelPipelineStatus {
        challenger: Some(training_challenger(NEW, "wine-train-new", None)),
        ..ModelPipelineStatus::default()
    });
    let step = Step::Judge {
        job: "wine-train-new".into(),
        version: NEW.into(),
        decision: promote(),
    };
    let t = transition(&mp, &observed(None), &step);
    assert!(t.status.live.is_none(), "no champion to compare with");
    assert_eq!(
        t.status.rollout.as_ref().map(|r| r.version.as_str()),
        Some(NEW)
    );
}

/// What observe would see `secs` into the step: the champion fully available.
fn seen_at(mp: &ModelPipeline, secs: i64, figures: LiveFigures, canary_ready: i32) -> Observed {
    let live = mp
        .status
        .as_ref()
        .and_then(|s| s.live.clone())
        .expect("live");
    let mut obs = observed(None);
    obs.now = live.step_started_at.0 + SignedDuration::from_secs(secs);
    obs.deployment = Some(DeploymentView {
        version: Some(OLD.into()),
        rollout: RolloutState::Complete,
    });
    obs.live = Some(LiveObserved {
        challenger: Some(ChallengerView {
            replicas: 1,
            ready: canary_ready,
        }),
        champion_ready: 2,
        figures: Some(Ok(figures)),
    });
    obs
}

fn good(requests: i64) -> LiveFigures {
    LiveFigures {
        challenger_requests: requests,
        challenger_error_ratio: 0.0,
        challenger_p99_seconds: Some(0.004),
        champion_requests: requests * 2,
        champion_error_ratio: 0.0,
        champion_p99_seconds: Some(0.003),
        ..LiveFigures::default()
    }
}

#[test]
fn a_failed_first_step_rejects_and_leaves_the_champion_template_alone() {
    let mut mp = canary_pipeline();
    started(&mut mp);
    let bad = LiveFigures {
        challenger_error_ratio: 0.5,
        ..good(20)
    };
    let obs = seen_at(&mp, 5, bad, 1);
    let step = decide_step(&mp, &obs);
    assert!(
        matches!(
            &step,
            Step::Live(LiveStep::Fail {
                cause: Cause::LiveAnalysisFailed,
                scale_down: true,
                ..
            })
        ),
        "{step:?}"
    );
    let t = transition(&mp, &obs, &step);
    let s = &t.status;
    assert_eq!(
        s.challenger.as_ref().map(|c| c.state),
        Some(ChallengerState::Rejected)
    );
    assert_eq!(s.champion.as_ref().map(|c| c.version.as_str()), Some(OLD));
    assert!(s.rollout.is_none());
    let h = s.history.last().expect("history");
    assert_eq!(
        (h.outcome, h.cause),
        (Outcome::Rejected, Some(Cause::LiveAnalysisFailed))
    );
    assert!(h.reason.contains("error ratio 50.00%"), "{}", h.reason);
    assert!(
        h.reason.contains("challenger 20 requests"),
        "figures in the reason: {}",
        h.reason
    );
    let cond = s
        .conditions
        .iter()
        .find(|c| c.type_ == condition::LIVE_ANALYSIS)
        .expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "LiveAnalysisFailed")
    );
    assert_eq!(s.phase, Some(Phase::Serving));
    let d = deployments(&t);
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0],
        crate::build::build_deployment(&mp, &champion(OLD, 0.8)),
        "the champion's Deployment is exactly what it was: no restart, spec replicas"
    );
    assert_eq!(d[1].metadata.name.as_deref(), Some("wine-predictor-canary"));
    assert_eq!(d[1].spec.as_ref().and_then(|s| s.replicas), Some(0));
    let warn: Vec<_> = t
        .effects
        .events
        .iter()
        .filter(|e| e.reason == Reason::LiveAnalysisFailed)
        .collect();
    assert_eq!(warn.len(), 1);
    assert_eq!(
        Reason::LiveAnalysisFailed.event_type(),
        crate::events::EventType::Warning
    );
}

#[test]
fn canary_steps_advance_then_the_last_pass_rolls_the_champion() {
    let mut mp = canary_pipeline();
    started(&mut mp);
    // Too early: wait, showing the figures and the share the ready pods give.
    let obs = seen_at(&mp, 30, good(100), 1);
    let step = decide_step(&mp, &obs);
    let t = transition(&mp, &obs, &step);
    assert!(
        matches!(step, Step::Live(LiveStep::Wait { .. })),
        "{step:?}"
    );
    let live = t.status.live.clone().expect("live");
    assert_eq!(live.weight_percent, 33, "1 ready canary pod of 3");
    assert_eq!(live.figures, Some(good(100)));
    assert!(live.message.unwrap_or_default().contains("30s more"));
    // Step 1 over: step 2 at 50 %.
    let obs = seen_at(&mp, 60, good(100), 1);
    let step = decide_step(&mp, &obs);
    let t = transition(&mp, &obs, &step);
    assert!(
        matches!(step, Step::Live(LiveStep::Advance { .. })),
        "{step:?}"
    );
    mp.status = Some(t.status.clone());
    assert_eq!(t.status.live.as_ref().map(|l| l.step), Some(1));
    assert_eq!(
        deployments(&t)[1].spec.as_ref().and_then(|s| s.replicas),
        Some(2),
        "50 %: as many canary pods as champion pods"
    );
    assert!(
        t.effects
            .events
            .iter()
            .any(|e| e.reason == Reason::LiveAnalysisStep)
    );
    // Step 2 over: step 3 at 100 % — the champion stays until the canary has all its pods.
    let obs = seen_at(&mp, 60, good(100), 2);
    let t = transition(&mp, &obs, &decide_step(&mp, &obs));
    mp.status = Some(t.status.clone());
    assert_eq!(t.status.live.as_ref().map(|l| l.step), Some(2));
    let d = deployments(&t);
    assert_eq!(
        d[0].spec.as_ref().and_then(|s| s.replicas),
        Some(0),
        "canary ready: champion to 0"
    );
    assert_eq!(
        d[0].spec.as_ref().map(|s| &s.template),
        crate::build::build_deployment(&mp, &champion(OLD, 0.8))
            .spec
            .as_ref()
            .map(|s| &s.template),
        "only the replica count of the champion changes"
    );
    // The last step passes: promoted, the champion Deployment rolls to the challenger. (This
    // challenger was approved by a person before its analysis: the history entry names them.)
    if let Some(live) = mp.status.as_mut().and_then(|s| s.live.as_mut()) {
        live.approved_by = Some("release-manager".into());
    }
    let obs = seen_at(&mp, 61, good(100), 2);
    let step = decide_step(&mp, &obs);
    assert!(
        matches!(step, Step::Live(LiveStep::Promote { .. })),
        "{step:?}"
    );
    let t = transition(&mp, &obs, &step);
    let s = &t.status;
    assert_eq!(s.champion.as_ref().map(|c| c.version.as_str()), Some(NEW));
    assert_eq!(s.rollout.as_ref().map(|r| r.version.as_str()), Some(NEW));
    assert_eq!(
        s.champion.as_ref().and_then(|c| c.model_sha256.clone()),
        Some("ab".repeat(32))
    );
    let h = s.history.last().expect("history");
    assert_eq!(
        (h.outcome, h.cause, h.by.as_deref()),
        (
            Outcome::Promoted,
            Some(Cause::LiveAnalysisPassed),
            Some("release-manager")
        )
    );
    let d = deployments(&t);
    assert_eq!(d[0].metadata.name.as_deref(), Some("wine-predictor"));
    assert_eq!(
        env(&d[0]).get("MODEL_URI").map(String::as_str),
        Some("file:///models/default/wine/aaaaaaaaaaaa/")
    );
    assert_eq!(d[0].spec.as_ref().and_then(|s| s.replicas), Some(2));
    mp.status = Some(t.status.clone());
    // Rolled out: the canary goes to 0 once the new champion is fully available.
    let mut obs = seen_at(&mp, 120, good(0), 2);
    obs.deployment = Some(DeploymentView {
        version: Some(NEW.into()),
        rollout: RolloutState::Complete,
    });
    let mut done = mp.clone();
    if let Some(s) = done.status.as_mut() {
        s.rollout = None;
    }
    let step = decide_step(&done, &obs);
    assert_eq!(step, Step::Live(LiveStep::Cleanup));
    let t = transition(&done, &obs, &step);
    let d = deployments(&t);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].metadata.name.as_deref(), Some("wine-predictor-canary"));
    assert_eq!(d[0].spec.as_ref().and_then(|s| s.replicas), Some(0));
}

#[test]
fn too_little_traffic_ends_as_insufficient_traffic() {
    let mut mp = canary_pipeline();
    started(&mut mp);
    let obs = seen_at(&mp, 180, good(3), 1);
    let step = decide_step(&mp, &obs);
    let t = transition(&mp, &obs, &step);
    let h = t.status.history.last().expect("history");
    assert_eq!(
        (h.outcome, h.cause),
        (Outcome::Rejected, Some(Cause::InsufficientTraffic))
    );
}

/// Without figures (none read this time, or reading them failed) a started live run of `mp`
/// waits with `plan` until `limit` seconds have passed since `elapsed` counts, then fails as
/// InsufficientTraffic with a message naming the limit (`limit_text`).
fn assert_waits_without_figures_then_fails(
    mp: &ModelPipeline,
    plan: Plan,
    limit: i64,
    limit_text: &str,
) {
    let why = "no pod answered";
    let at = |secs, why: Option<&str>| {
        let mut obs = seen_at(mp, secs, good(0), 1);
        if let Some(live) = obs.live.as_mut() {
            live.figures = why.map(|w| Err(w.to_string()));
        }
        decide(mp, &obs)
    };
    let wait = |message: Option<String>| {
        Some(Step::Live(LiveStep::Wait {
            figures: None,
            message,
            plan: plan.clone(),
        }))
    };
    assert_eq!(
        at(limit - 1, None),
        wait(None),
        "between reads: the message as it is"
    );
    assert_eq!(
        at(limit - 1, Some(why)),
        wait(Some(format!("figures unavailable: {why}")))
    );
    assert_eq!(
        at(limit, Some(why)),
        Some(Step::Live(LiveStep::Fail {
            cause: Cause::InsufficientTraffic,
            figures: None,
            message: format!("the figures could not be read {limit_text}: {why}"),
            scale_down: true,
        }))
    );
}

#[test]
fn unreadable_canary_figures_wait_then_end_as_insufficient_traffic_after_3_step_lengths() {
    let mut mp = canary_pipeline();
    mp.spec.rollout.canary.step_seconds = 60;
    started(&mut mp);
    let plan = canary_plan(&mp, mp.spec.rollout.canary.steps[0], 2, 1);
    assert_waits_without_figures_then_fails(&mp, plan, 180, "for 3 × stepSeconds");
}

#[test]
fn unreadable_shadow_figures_wait_then_end_as_insufficient_traffic_after_max_duration() {
    let mut mp = pipeline();
    mp.spec.rollout.strategy = RolloutStrategy::Shadow;
    mp.spec.rollout.shadow.max_duration_seconds = 300;
    started(&mut mp);
    let shadow = &mp.spec.rollout.shadow;
    let plan = Plan {
        champion: None,
        challenger: shadow.replicas,
        weight_percent: shadow.mirror_percent,
    };
    assert_waits_without_figures_then_fails(&mp, plan, 300, "within maxDurationSeconds");
}

#[test]
fn shadow_run_mirrors_from_the_champion_and_ends_removing_the_mirror() {
    let mut mp = pipeline();
    mp.spec.rollout.strategy = RolloutStrategy::Shadow;
    mp.spec.rollout.shadow.mirror_percent = 50;
    let t = started(&mut mp);
    let d = deployments(&t);
    let names: Vec<_> = d
        .iter()
        .map(|d| d.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["wine-predictor-shadow", "wine-predictor"]);
    let e = env(&d[1]);
    assert_eq!(
        e.get("SHADOW_URL").map(String::as_str),
        Some("http://wine-predictor-shadow.default.svc:8080")
    );
    assert_eq!(e.get("SHADOW_PERCENT").map(String::as_str), Some("50"));
    let shadow_labels = pod_labels(&d[0]);
    assert_eq!(
        shadow_labels.get(LABEL_ROLE).map(String::as_str),
        Some("shadow")
    );
    let main = crate::build::build_service(&mp)
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert!(
        !selects(&main, &shadow_labels),
        "the main Service never sends it live traffic"
    );
    let svc = services(&t);
    assert_eq!(svc.len(), 1);
    assert_eq!(
        svc[0].metadata.name.as_deref(),
        Some("wine-predictor-shadow")
    );
    let shadow_sel = svc[0]
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    assert!(selects(&shadow_sel, &shadow_labels));
    assert!(!selects(&shadow_sel, &pod_labels(&d[1])));
    // Errors: rejected, the champion loses its SHADOW_* env again.
    let bad = LiveFigures {
        challenger_requests: 300,
        challenger_error_ratio: 0.2,
        agreement: Some(0.9),
        ..good(300)
    };
    let obs = seen_at(&mp, 20, bad, 1);
    let step = decide_step(&mp, &obs);
    let t = transition(&mp, &obs, &step);
    let h = t.status.history.last().expect("history");
    assert_eq!(
        (h.outcome, h.cause),
        (Outcome::Rejected, Some(Cause::LiveAnalysisFailed))
    );
    let d = deployments(&t);
    assert_eq!(d[0].metadata.name.as_deref(), Some("wine-predictor"));
    assert!(!env(&d[0]).contains_key("SHADOW_URL"));
    assert_eq!(
        d[0],
        crate::build::build_deployment(&mp, &champion(OLD, 0.8))
    );
}

#[test]
fn baselines_count_deltas_per_step_and_new_pods_in_full() {
    let b = Baselines::default();
    let key = ("ns".to_string(), "p".to_string());
    let t0 = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1000);
    let pod = |uid: &str, started: i64| PodTarget {
        name: uid.into(),
        uid: uid.into(),
        ip: "10.0.0.1".parse().expect("ip"),
        started: Some(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(started)),
        ready: true,
    };
    let c = |n: f64| Counters(BTreeMap::from([("req".to_string(), n)]));
    let w = ("v".to_string(), 0);
    // An old pod: its first read is the baseline.
    assert_eq!(
        b.delta(&key, w.clone(), t0, &[(pod("old", 10), c(500.0))])
            .get("req"),
        0.0
    );
    // A pod started in the step counts in full.
    let d = b.delta(
        &key,
        w.clone(),
        t0,
        &[(pod("old", 10), c(520.0)), (pod("new", 1001), c(7.0))],
    );
    assert_eq!(d.get("req"), 27.0);
    // The next step starts from its own first read.
    let d = b.delta(
        &key,
        ("v".to_string(), 1),
        t0 + SignedDuration::from_secs(60),
        &[(pod("old", 10), c(600.0))],
    );
    assert_eq!(d.get("req"), 0.0);
}

#[test]
fn between_reads_the_status_stays_as_it_was() {
    let mut mp = canary_pipeline();
    started(&mut mp);
    let obs = seen_at(&mp, 30, good(100), 1);
    let t = transition(&mp, &obs, &decide_step(&mp, &obs));
    mp.status = Some(t.status.clone());
    // The next reconcile (woken by that status write) reads no figures: nothing changes, so
    // nothing is written and no loop of reconciles follows.
    let mut quiet = seen_at(&mp, 31, good(100), 1);
    if let Some(l) = quiet.live.as_mut() {
        l.figures = None;
    }
    let step = decide_step(&mp, &quiet);
    assert!(
        matches!(
            &step,
            Step::Live(LiveStep::Wait {
                figures: None,
                message: None,
                ..
            })
        ),
        "{step:?}"
    );
    assert_eq!(transition(&mp, &quiet, &step).status, t.status);
}
