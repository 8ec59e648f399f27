//! Live input drift of the champion: `status.drift` and `spec.trigger.onDrift`.
//!
//! The champion's predictor pods export `predictor_feature_psi{feature}` (population stability
//! index of the live inputs against the training bins in model.json, rendered once a pod has
//! seen enough rows) and `predictor_drift_rows_total` (docs/design.md, "Live analysis"). The
//! operator reads them through [`crate::podmetrics`] at most once per [`READ_INTERVAL`] per
//! pipeline ([`DriftReads`]), only while the champion serves with no rollout in flight, and
//! combines the pods: per feature, the mean of the pods' PSI weighted by each pod's rows (a pod
//! that saw a handful of requests does not outvote the others); the largest feature is shown.
//!
//! Pure parts (tested as tables): [`pod_drift`], [`combine`], [`updated`] (a status write only
//! when the figure moved by more than [`PSI_STEP`], the feature or version changed, or the rows
//! doubled: not a write per poll), [`due`] (the trigger: enough rows, PSI above the threshold,
//! the cooldown passed) and [`run_step`] (a run on the present data, as a forced run is, when
//! no run, rollout, approval or live analysis is going).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use champion_api::{
    ChallengerState, DriftStatus, DriftTrigger, LABEL_MODEL_VERSION, LABEL_PIPELINE, ModelPipeline,
    ModelPipelineStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::decide::{Step, unused_version};
use crate::names::{label_value, predictor_name};
use crate::observe::Observed;
use crate::podmetrics::{Sample, ScrapeError};

/// Least time between two reads of one pipeline's predictor pods.
pub const READ_INTERVAL: Duration = Duration::from_secs(30);
/// A PSI move smaller than this does not rewrite `status.drift`.
pub const PSI_STEP: f64 = 0.01;
/// Most predictor pods read per pipeline and read (a sample of a large Deployment).
pub const MAX_PODS: usize = 20;

/// One drift figure of the champion, from its pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub version: String,
    pub max_psi: f64,
    pub feature: String,
    pub rows: i64,
}

/// One pod's drift figures: its live rows and the PSI of each feature it rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodDrift {
    pub rows: f64,
    pub psi: BTreeMap<String, f64>,
}

/// The drift figures in one pod's samples. Untrusted input: non-finite or negative values are
/// left out, feature names are cleaned and bounded.
pub fn pod_drift(samples: &[Sample]) -> PodDrift {
    let mut out = PodDrift::default();
    for s in samples {
        if !s.value.is_finite() || s.value < 0.0 {
            continue;
        }
        match s.name.as_str() {
            "predictor_drift_rows_total" => out.rows += s.value,
            "predictor_feature_psi" => {
                if let Some(f) = s.label("feature").map(crate::approval::clean)
                    && !f.is_empty()
                {
                    out.psi.insert(f, s.value);
                }
            }
            _ => {}
        }
    }
    out
}

/// The champion's drift over its pods: per feature the rows-weighted mean PSI of the pods that
/// rendered one; the largest feature (ties: the first by name). `None` when no pod rendered any.
pub fn combine(version: &str, pods: &[PodDrift]) -> Option<Reading> {
    let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for p in pods {
        let weight = p.rows.max(1.0);
        for (f, psi) in &p.psi {
            let e = sums.entry(f.as_str()).or_default();
            e.0 += psi * weight;
            e.1 += weight;
        }
    }
    let rows: f64 = pods.iter().map(|p| p.rows).sum();
    sums.into_iter()
        .map(|(f, (sum, w))| (f, sum / w))
        .fold(None, |best: Option<(&str, f64)>, (f, psi)| match best {
            Some((_, b)) if b >= psi => best,
            _ => Some((f, psi)),
        })
        .map(|(feature, psi)| Reading {
            version: version.to_string(),
            max_psi: (psi * 10_000.0).round() / 10_000.0,
            feature: feature.to_string(),
            rows: rows.min(i64::MAX as f64) as i64,
        })
}

/// The new `status.drift` for `reading`, or `None` when the shown one is close enough: same
/// version and feature, PSI within [`PSI_STEP`], rows not doubled.
pub fn updated(
    prev: Option<&DriftStatus>,
    reading: &Reading,
    now: Timestamp,
) -> Option<DriftStatus> {
    if let Some(p) = prev
        && p.version == reading.version
        && p.feature == reading.feature
        && (p.max_psi - reading.max_psi).abs() <= PSI_STEP
        && reading.rows < p.rows.saturating_mul(2).max(1)
    {
        return None;
    }
    Some(DriftStatus {
        version: reading.version.clone(),
        max_psi: reading.max_psi,
        feature: reading.feature.clone(),
        rows: reading.rows,
        measured_at: Time(now),
        last_triggered_at: prev.and_then(|p| p.last_triggered_at.clone()),
    })
}

/// Records a fresh reading in the status (see [`updated`]).
pub fn record(status: &mut ModelPipelineStatus, obs: &Observed) {
    if let Some(r) = &obs.drift
        && let Some(d) = updated(status.drift.as_ref(), r, obs.now)
    {
        status.drift = Some(d);
    }
}

/// Why `trigger` starts a run on `reading` now, or `None`: at least minRows live rows, the
/// largest PSI above psiThreshold, and cooldownSeconds since the last run drift started.
pub fn due(
    trigger: &DriftTrigger,
    reading: &Reading,
    last_triggered: Option<&Time>,
    now: Timestamp,
) -> Option<String> {
    if reading.rows < trigger.min_rows || reading.max_psi <= trigger.psi_threshold {
        return None;
    }
    let cooldown = SignedDuration::from_secs(i64::from(trigger.cooldown_seconds));
    if last_triggered.is_some_and(|t| now.duration_since(t.0) < cooldown) {
        return None;
    }
    Some(format!(
        "feature {} of version {} drifted: PSI {:.4} > psiThreshold {} over {} live rows",
        reading.feature, reading.version, reading.max_psi, trigger.psi_threshold, reading.rows
    ))
}

/// The run drift starts on the data present (`fingerprint`), when `spec.trigger.onDrift` is
/// set, this reconcile read a figure that is [`due`], and nothing else is going: no challenger
/// waits for approval or is under live analysis (the caller has already ruled out a training
/// run and a rollout). A full run slot queues it like new data.
pub fn run_step(
    mp: &ModelPipeline,
    obs: &Observed,
    status: &ModelPipelineStatus,
    fingerprint: &str,
) -> Option<Step> {
    let trigger = mp.spec.trigger.on_drift.as_ref()?;
    let reading = obs.drift.as_ref()?;
    let champion = status.champion.as_ref()?;
    if reading.version != champion.version || status.rollout.is_some() {
        return None;
    }
    let busy = status.challenger.as_ref().is_some_and(|c| {
        matches!(
            c.state,
            ChallengerState::Training
                | ChallengerState::AwaitingApproval
                | ChallengerState::LiveAnalysis
        )
    });
    if busy {
        return None;
    }
    let last = status
        .drift
        .as_ref()
        .and_then(|d| d.last_triggered_at.as_ref());
    let why = due(trigger, reading, last, obs.now)?;
    if obs.run_slots == Some(0) {
        return Some(Step::Queued);
    }
    let token = format!("drift-{}", obs.now.as_second());
    Some(Step::DriftRun {
        version: unused_version(mp, fingerprint, Some(&token), 0),
        fingerprint: fingerprint.to_string(),
        why,
    })
}

/// When each pipeline's pods were last read, so reads happen at most once per interval
/// ([`READ_INTERVAL`] unless the operator's `DRIFT_READ_INTERVAL_SECONDS` says otherwise).
pub struct DriftReads {
    last: Mutex<HashMap<(String, String), Instant>>,
    /// None: never read.
    interval: Option<Duration>,
}

impl Default for DriftReads {
    fn default() -> Self {
        Self::every(READ_INTERVAL)
    }
}

impl DriftReads {
    /// Reads each pipeline's pods at most once per `interval`.
    pub fn every(interval: Duration) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            interval: Some(interval),
        }
    }

    /// Never reads (the scripted API server of the controller tests has no pods).
    #[cfg(test)]
    pub fn disabled() -> Self {
        Self {
            interval: None,
            ..Self::default()
        }
    }

    /// Whether pipeline `key` is due for a read at `now`; if so, the read is booked.
    pub fn take(&self, key: (String, String), now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        match last.get(&key) {
            Some(t) if now.duration_since(*t) < interval => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    /// Forgets pipelines not in `keep`.
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        if let Ok(mut last) = self.last.lock() {
            last.retain(|k, _| keep.contains(k));
        }
    }
}

/// Reads the champion's drift from its predictor pods, when one is due (see [`DriftReads`]):
/// only for a pipeline whose champion serves, with no rollout in flight, from the pods of the
/// operator's own predictor Deployment that carry the champion's version. A failure is logged
/// and is no figure: drift is shown, never required.
pub async fn read(
    ctx: &Context,
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
) -> Option<Reading> {
    let champion = status.champion.as_ref()?;
    if mp.spec.suspend || status.rollout.is_some() {
        return None;
    }
    let ns = mp.namespace()?;
    let name = mp.name_any();
    let deployment = ctx
        .deployments
        .get(&ObjectRef::new(&predictor_name(&name)).within(&ns))?;
    let uid = deployment.metadata.uid.clone()?;
    if !ctx.drift.take((ns.clone(), name.clone()), Instant::now()) {
        return None;
    }
    let selector = format!(
        "{LABEL_PIPELINE}={},app.kubernetes.io/component=predictor,{LABEL_MODEL_VERSION}={}",
        label_value(&name),
        label_value(&champion.version)
    );
    let port = u16::try_from(mp.spec.predictor.port).ok()?;
    let result: Result<Vec<PodDrift>, ScrapeError> = async {
        let pods =
            crate::podmetrics::pods_of(&ctx.client, &ns, &selector, &uid, "champion").await?;
        let reads = pods
            .iter()
            .filter(|p| p.ready)
            .take(MAX_PODS)
            .map(|p| async move {
                let host = std::net::SocketAddr::new(p.ip, port);
                crate::podmetrics::http_get(host, &host.to_string(), "/metrics").await
            });
        let answers = futures::future::join_all(reads).await;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                Ok(text) => Some(pod_drift(&crate::podmetrics::parse(&text))),
                Err(error) => {
                    tracing::debug!(%error, pipeline = %name, "reading a predictor's drift failed");
                    None
                }
            })
            .collect())
    }
    .await;
    match result {
        Ok(pods) => combine(&champion.version, &pods),
        Err(error) => {
            tracing::warn!(%error, pipeline = %name, "listing the predictor pods for drift failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{champion, observed, pipeline};
    use crate::views::DataListing;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn pod(rows: f64, psi: &[(&str, f64)]) -> PodDrift {
        PodDrift {
            rows,
            psi: psi.iter().map(|(f, v)| (f.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn a_pods_figures_are_read_from_its_samples_and_bad_values_dropped() {
        let samples = [
            sample("predictor_drift_rows_total", &[], 700.0),
            sample("predictor_feature_psi", &[("feature", "alcohol")], 0.31),
            sample("predictor_feature_psi", &[("feature", "pH\u{7}")], 0.02),
            sample("predictor_feature_psi", &[("feature", "bad")], f64::NAN),
            sample("predictor_feature_psi", &[("feature", "neg")], -1.0),
            sample("predictor_feature_psi", &[], 9.0),
            sample("predictor_requests_total", &[("route", "predict")], 5.0),
        ];
        assert_eq!(
            pod_drift(&samples),
            pod(700.0, &[("alcohol", 0.31), ("pH", 0.02)])
        );
    }

    #[test]
    fn pods_combine_by_rows_and_the_largest_feature_is_shown() {
        let pods = [
            pod(900.0, &[("alcohol", 0.40), ("pH", 0.05)]),
            pod(100.0, &[("alcohol", 0.00), ("pH", 0.90)]),
        ];
        // alcohol: (0.40*900 + 0*100)/1000 = 0.36; pH: (0.05*900 + 0.9*100)/1000 = 0.135.
        assert_eq!(
            combine("v1", &pods),
            Some(Reading {
                version: "v1".into(),
                max_psi: 0.36,
                feature: "alcohol".into(),
                rows: 1000
            })
        );
        assert_eq!(
            combine("v1", &[pod(50.0, &[])]),
            None,
            "no pod rendered PSI (too few rows)"
        );
    }

    #[test]
    fn the_status_is_rewritten_only_when_the_figure_moved() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = t0 + SignedDuration::from_secs(30);
        let r = |psi: f64, feature: &str, rows: i64| Reading {
            version: "v1".into(),
            max_psi: psi,
            feature: feature.into(),
            rows,
        };
        let mut first = updated(None, &r(0.20, "alcohol", 600), t0).expect("first figure");
        first.last_triggered_at = Some(Time(t0));
        assert_eq!(first.measured_at, Time(t0));
        for (name, reading, rewritten) in [
            ("same", r(0.20, "alcohol", 600), false),
            (
                "moved by less than the step",
                r(0.205, "alcohol", 900),
                false,
            ),
            ("moved by more than the step", r(0.22, "alcohol", 900), true),
            ("another feature", r(0.20, "pH", 600), true),
            ("rows doubled", r(0.20, "alcohol", 1200), true),
        ] {
            let next = updated(Some(&first), &reading, t1);
            assert_eq!(next.is_some(), rewritten, "{name}");
            if let Some(n) = next {
                assert_eq!(n.measured_at, Time(t1), "{name}");
                assert_eq!(n.last_triggered_at, Some(Time(t0)), "{name}: kept");
            }
        }
        let other = Reading {
            version: "v2".into(),
            ..r(0.20, "alcohol", 600)
        };
        assert!(
            updated(Some(&first), &other, t1).is_some(),
            "a new champion"
        );
    }

    #[test]
    fn the_trigger_needs_rows_a_psi_above_the_threshold_and_the_cooldown() {
        let trigger = DriftTrigger {
            psi_threshold: 0.25,
            min_rows: 500,
            cooldown_seconds: 600,
        };
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(10_000);
        let r = |psi: f64, rows: i64| Reading {
            version: "v1".into(),
            max_psi: psi,
            feature: "alcohol".into(),
            rows,
        };
        let ago = |s: i64| Time(now - SignedDuration::from_secs(s));
        for (name, reading, last, fires) in [
            ("drifted, never triggered", r(0.30, 500), None, true),
            ("too few rows", r(0.90, 499), None, false),
            ("at the threshold", r(0.25, 5000), None, false),
            ("within the cooldown", r(0.30, 5000), Some(ago(599)), false),
            ("after the cooldown", r(0.30, 5000), Some(ago(600)), true),
        ] {
            let why = due(&trigger, &reading, last.as_ref(), now);
            assert_eq!(why.is_some(), fires, "{name}: {why:?}");
            if let Some(why) = why {
                assert!(
                    why.contains("alcohol") && why.contains("0.3000"),
                    "{name}: {why}"
                );
            }
        }
    }

    #[test]
    fn drift_starts_a_run_on_the_present_data_only_when_nothing_else_goes() {
        let mut mp = pipeline();
        mp.spec.trigger.on_drift = Some(DriftTrigger {
            psi_threshold: 0.2,
            min_rows: 100,
            cooldown_seconds: 60,
        });
        let mut c = crate::fixtures::training_challenger("cur000000001", "j", None);
        c.state = ChallengerState::Promoted;
        let status = ModelPipelineStatus {
            champion: Some(champion("cur000000001", 0.7)),
            challenger: Some(c),
            observed_generation: Some(1),
            ..Default::default()
        };
        mp.status = Some(status.clone());
        let mut obs = observed(Some(Ok(DataListing {
            fingerprint: "fp1".into(),
            objects: 3,
        })));
        obs.deployment = Some(crate::views::DeploymentView {
            version: Some("cur000000001".into()),
            rollout: crate::views::RolloutState::Complete,
        });
        assert_eq!(
            crate::decide::decide(&mp, &obs),
            Step::Idle,
            "no reading: idle"
        );
        obs.drift = Some(Reading {
            version: "cur000000001".into(),
            max_psi: 0.5,
            feature: "alcohol".into(),
            rows: 1000,
        });
        let step = crate::decide::decide(&mp, &obs);
        let Step::DriftRun {
            version,
            fingerprint,
            why,
        } = &step
        else {
            panic!("drift starts a run: {step:?}");
        };
        assert_eq!(fingerprint, "fp1", "on the data present");
        assert!(why.contains("alcohol"), "{why}");
        assert_ne!(
            version,
            &unused_version(&mp, "fp1", None, 0),
            "a version of its own"
        );
        // The transition launches the Job, stamps lastTriggeredAt and says so.
        let t = crate::transition::transition(&mp, &obs, &step);
        let reasons: Vec<_> = t.effects.events.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            vec![
                crate::events::Reason::DriftDetected,
                crate::events::Reason::TrainingStarted
            ]
        );
        assert_eq!(t.effects.objects.len(), 1, "the trainer Job");
        let d = t.status.drift.clone().expect("drift shown");
        assert_eq!(d.last_triggered_at, Some(Time(obs.now)));
        assert_eq!(
            t.status.challenger.as_ref().map(|c| c.state),
            Some(ChallengerState::Training)
        );
        assert_eq!(
            t.status.last_forced_run, None,
            "not the force-run annotation"
        );
        // Within the cooldown: idle.
        mp.status = Some(t.status.clone());
        if let Some(s) = mp.status.as_mut()
            && let Some(c) = s.challenger.as_mut()
        {
            c.state = ChallengerState::Rejected;
        }
        assert_eq!(crate::decide::decide(&mp, &obs), Step::Idle);
        // A waiting candidate is not superseded by drift, and a full slot queues.
        let mut waiting = status.clone();
        if let Some(c) = waiting.challenger.as_mut() {
            c.state = ChallengerState::AwaitingApproval;
        }
        mp.status = Some(waiting);
        assert_eq!(
            run_step(&mp, &obs, mp.status.as_ref().expect("s"), "fp1"),
            None
        );
        mp.status = Some(status);
        obs.run_slots = Some(0);
        assert_eq!(crate::decide::decide(&mp, &obs), Step::Queued);
        // No trigger configured: shown, never acted upon.
        mp.spec.trigger.on_drift = None;
        obs.run_slots = None;
        assert_eq!(crate::decide::decide(&mp, &obs), Step::Idle);
    }

    #[test]
    fn reads_are_spaced_by_the_interval() {
        let reads = DriftReads::default();
        let key = || ("ns".to_string(), "wine".to_string());
        let t0 = Instant::now();
        assert!(reads.take(key(), t0));
        assert!(!reads.take(key(), t0 + Duration::from_secs(29)));
        assert!(reads.take(key(), t0 + READ_INTERVAL));
        reads.retain(&HashSet::new());
        assert!(reads.take(key(), t0 + READ_INTERVAL), "forgotten");
        assert!(!DriftReads::disabled().take(key(), t0));
        // DRIFT_READ_INTERVAL_SECONDS=2
        let fast = DriftReads::every(Duration::from_secs(2));
        assert!(fast.take(key(), t0));
        assert!(!fast.take(key(), t0 + Duration::from_secs(1)));
        assert!(fast.take(key(), t0 + Duration::from_secs(2)));
    }
}
