//! Prometheus metrics of the operator, named after Prometheus' conventions (`champion_` prefix,
//! the unit last: `_seconds`, `_ratio`, `_total`).
//!
//! Operator-wide: `champion_build_info`, the `process_*` series, `champion_leader`,
//! `champion_reconciles_total{result}`, `champion_reconcile_duration_seconds` and
//! `champion_data_to_serving_seconds`.
//!
//! Per pipeline, as Flagger labels its canaries: every `champion_pipeline_*` series carries
//! `namespace` and `pipeline` and nothing unbounded beside them (a phase, an outcome, a cause or
//! a metric name, each a fixed enum). Counters count what this replica saw while it led; gauges
//! are set from the status on every reconcile, so they are right again after a restart or a
//! change of leader. A deleted pipeline's series are removed ([`Metrics::forget_pipeline`],
//! [`Metrics::retain_pipelines`]): deletion has no reconcile of its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use champion_api::{HistoryEntry, Metric, ModelPipelineStatus, Outcome, Phase};
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a training run ended, as the `outcome` label of
/// `champion_pipeline_runs_completed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Promoted,
    Rejected,
    Failed,
}

impl RunOutcome {
    const ALL: [RunOutcome; 3] = [
        RunOutcome::Promoted,
        RunOutcome::Rejected,
        RunOutcome::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            RunOutcome::Promoted => "promoted",
            RunOutcome::Rejected => "rejected",
            RunOutcome::Failed => "failed",
        }
    }
}

/// Why the predictor was rolled back, as the `cause` label of
/// `champion_pipeline_rollbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackCause {
    /// The rollout did not progress and was reverted.
    RolloutFailed,
    /// The champion.dev/rollback-to annotation asked for it.
    Requested,
}

impl RollbackCause {
    const ALL: [RollbackCause; 2] = [RollbackCause::RolloutFailed, RollbackCause::Requested];

    fn label(self) -> &'static str {
        match self {
            RollbackCause::RolloutFailed => "rollout_failed",
            RollbackCause::Requested => "requested",
        }
    }
}

/// Every phase, as the `phase` label of `champion_pipeline_phase` (the CRD's spelling).
const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::Training,
    Phase::RollingOut,
    Phase::Serving,
    Phase::Degraded,
    Phase::Suspended,
];

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Training => "Training",
        Phase::RollingOut => "RollingOut",
        Phase::Serving => "Serving",
        Phase::Degraded => "Degraded",
        Phase::Suspended => "Suspended",
    }
}

/// One change to the metrics that a reconcile step causes; recorded after the step's writes
/// succeeded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricEvent {
    RunStarted,
    RunFinished(RunOutcome),
    RolledBack(RollbackCause),
    /// Seconds from the first sighting of the data to the model trained on it serving.
    DataToServing(f64),
}

/// Training takes seconds on the wine data and may take an hour on real data.
const TRAINING_BUCKETS: [f64; 13] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles by result (`ok` or the error category).
    reconciles: IntCounterVec,
    reconcile_duration: Histogram,
    /// From the first sighting of new data to the model trained on it serving.
    data_to_serving: Histogram,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// 1 for the pipeline's current phase, 0 for the others.
    phase: IntGaugeVec,
    runs_started: IntCounterVec,
    runs_completed: IntCounterVec,
    rollbacks: IntCounterVec,
    training_duration: HistogramVec,
    last_success: GaugeVec,
    champion_promoted: GaugeVec,
    champion_score: GaugeVec,
    challenger_score: GaugeVec,
    consecutive_failures: IntGaugeVec,
    /// The pipelines that have series now, so that a deleted one's can be found.
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

const PIPELINE: [&str; 2] = ["namespace", "pipeline"];

fn labels<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut l = PIPELINE.to_vec();
    l.extend_from_slice(extra);
    l
}

impl Metrics {
    /// Creates the metrics and registers them, the build information and the process
    /// collector in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let info = IntGauge::with_opts(
            Opts::new(
                "champion_build_info",
                "The running operator build; always 1, the labels carry the information.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("api_version", "champion.dev/v1alpha1"),
        )?;
        info.set(1);
        registry.register(Box::new(info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let gauge = |name: &str, help: &str, extra: &[&str]| {
            register(
                registry,
                GaugeVec::new(Opts::new(name, help), &labels(extra))?,
            )
        };
        let int_gauge = |name: &str, help: &str, extra: &[&str]| {
            register(
                registry,
                IntGaugeVec::new(Opts::new(name, help), &labels(extra))?,
            )
        };
        let counter = |name: &str, help: &str, extra: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), &labels(extra))?,
            )
        };
        Ok(Self {
            reconciles: register(
                registry,
                IntCounterVec::new(
                    Opts::new("champion_reconciles_total", "Reconciles by result: ok or the error category."),
                    &["result"],
                )?,
            )?,
            reconcile_duration: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("champion_reconcile_duration_seconds", "Duration of one reconcile.")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )?,
            )?,
            data_to_serving: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "champion_data_to_serving_seconds",
                        "Seconds from the first sighting of new data to the model trained on it serving.",
                    )
                    .buckets(vec![2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
                )?,
            )?,
            leader: register(
                registry,
                IntGauge::new("champion_leader", "1 while this replica holds the leader Lease, else 0.")?,
            )?,
            phase: int_gauge(
                "champion_pipeline_phase",
                "1 for the pipeline's current status.phase, 0 for the other phases.",
                &["phase"],
            )?,
            runs_started: counter(
                "champion_pipeline_runs_started_total",
                "Training runs launched (trainer Jobs created).",
                &[],
            )?,
            runs_completed: counter(
                "champion_pipeline_runs_completed_total",
                "Training runs judged, by outcome: promoted, rejected or failed.",
                &["outcome"],
            )?,
            rollbacks: counter(
                "champion_pipeline_rollbacks_total",
                "Predictor rollbacks by cause: rollout_failed (a stalled rollout reverted) or requested.",
                &["cause"],
            )?,
            training_duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "champion_pipeline_training_duration_seconds",
                        "Seconds from launching a training run's Job to judging its outcome.",
                    )
                    .buckets(TRAINING_BUCKETS.to_vec()),
                    &PIPELINE,
                )?,
            )?,
            last_success: gauge(
                "champion_pipeline_last_successful_run_timestamp_seconds",
                "When the newest run that produced a scored model (promoted or rejected) was judged, in Unix seconds.",
                &[],
            )?,
            champion_promoted: gauge(
                "champion_pipeline_champion_promoted_timestamp_seconds",
                "When the champion (the model the predictor serves) was promoted or rolled back to, in Unix seconds.",
                &[],
            )?,
            champion_score: gauge(
                "champion_pipeline_champion_score_ratio",
                "The champion's holdout score (0 to 1) in the metric it was judged on.",
                &["metric"],
            )?,
            challenger_score: gauge(
                "champion_pipeline_challenger_score_ratio",
                "The last scored challenger's holdout score (0 to 1) in the pipeline's metric.",
                &["metric"],
            )?,
            consecutive_failures: int_gauge(
                "champion_pipeline_consecutive_failed_runs",
                "Training runs that failed in a row (status.consecutiveFailures); 0 after a run that scored.",
                &[],
            )?,
            known: Arc::default(),
        })
    }

    /// Records a reconcile step of pipeline `ns`/`name`: the step's `events`, then every gauge
    /// from `status` (the status the step wrote), in `metric`, the pipeline's evaluation metric.
    pub fn record_step(
        &self,
        ns: &str,
        name: &str,
        metric: Metric,
        status: &ModelPipelineStatus,
        events: &[MetricEvent],
    ) {
        let key = [ns, name];
        for event in events {
            match *event {
                MetricEvent::RunStarted => self.runs_started.with_label_values(&key).inc(),
                MetricEvent::RunFinished(outcome) => {
                    self.runs_completed
                        .with_label_values(&[ns, name, outcome.label()])
                        .inc();
                    if let Some(secs) = training_seconds(status) {
                        self.training_duration.with_label_values(&key).observe(secs);
                    }
                }
                MetricEvent::RolledBack(cause) => self
                    .rollbacks
                    .with_label_values(&[ns, name, cause.label()])
                    .inc(),
                MetricEvent::DataToServing(secs) => self.data_to_serving.observe(secs.max(0.0)),
            }
        }
        self.observe_status(ns, name, metric, status);
    }

    /// Sets the per-pipeline gauges from `status`, and creates the pipeline's counters at 0 so
    /// that `increase()` sees their first count.
    fn observe_status(&self, ns: &str, name: &str, metric: Metric, status: &ModelPipelineStatus) {
        let key = [ns, name];
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((ns.to_string(), name.to_string()));
        self.runs_started.with_label_values(&key);
        for outcome in RunOutcome::ALL {
            self.runs_completed
                .with_label_values(&[ns, name, outcome.label()]);
        }
        for cause in RollbackCause::ALL {
            self.rollbacks.with_label_values(&[ns, name, cause.label()]);
        }
        for phase in PHASES {
            self.phase
                .with_label_values(&[ns, name, phase_label(phase)])
                .set(i64::from(status.phase == Some(phase)));
        }
        self.consecutive_failures
            .with_label_values(&key)
            .set(i64::from(status.consecutive_failures));
        match status.history.iter().rev().find(|h| scored(h)) {
            Some(h) => self
                .last_success
                .with_label_values(&key)
                .set(unix_seconds(&h.time)),
            None => {
                let _ = self.last_success.remove_label_values(&key);
            }
        }
        let champion = status.champion.as_ref();
        match champion {
            Some(c) => self
                .champion_promoted
                .with_label_values(&key)
                .set(unix_seconds(&c.promoted_at)),
            None => {
                let _ = self.champion_promoted.remove_label_values(&key);
            }
        }
        let champion_score = champion.and_then(|c| Some((c.metric.unwrap_or(metric), c.score?)));
        set_score(&self.champion_score, ns, name, champion_score);
        let challenger_score = status
            .challenger
            .as_ref()
            .and_then(|c| Some((metric, c.score?)));
        set_score(&self.challenger_score, ns, name, challenger_score);
    }

    /// Removes every series of pipeline `ns`/`name`.
    pub fn forget_pipeline(&self, ns: &str, name: &str) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(ns.to_string(), name.to_string()));
        let key = [ns, name];
        // Removing a series that does not exist is not an error worth reporting.
        let _ = self.runs_started.remove_label_values(&key);
        let _ = self.training_duration.remove_label_values(&key);
        let _ = self.last_success.remove_label_values(&key);
        let _ = self.champion_promoted.remove_label_values(&key);
        let _ = self.consecutive_failures.remove_label_values(&key);
        for outcome in RunOutcome::ALL {
            let _ = self
                .runs_completed
                .remove_label_values(&[ns, name, outcome.label()]);
        }
        for cause in RollbackCause::ALL {
            let _ = self
                .rollbacks
                .remove_label_values(&[ns, name, cause.label()]);
        }
        for phase in PHASES {
            let _ = self
                .phase
                .remove_label_values(&[ns, name, phase_label(phase)]);
        }
        set_score(&self.champion_score, ns, name, None);
        set_score(&self.challenger_score, ns, name, None);
    }

    /// Removes the series of every pipeline not in `keep` (namespace, name).
    pub fn retain_pipelines(&self, keep: &HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.forget_pipeline(&ns, &name);
        }
    }

    /// Counts a reconcile that succeeded.
    pub fn reconciled(&self) {
        self.reconciles.with_label_values(&["ok"]).inc();
    }

    /// Counts a reconcile that failed, by its error's bounded category.
    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconciles.with_label_values(&[category]).inc();
    }

    /// Times one reconcile; the histogram is observed when the guard drops.
    pub fn reconcile_timer(&self) -> prometheus::HistogramTimer {
        self.reconcile_duration.start_timer()
    }
}

/// A run that produced a scored model: promoted or rejected.
fn scored(h: &HistoryEntry) -> bool {
    matches!(h.outcome, Outcome::Promoted | Outcome::Rejected)
}

fn unix_seconds(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

/// Seconds from the launch of the run `status` just judged to its judgement: the newest history
/// entry is that run's (same version).
fn training_seconds(status: &ModelPipelineStatus) -> Option<f64> {
    let run = status.challenger.as_ref()?;
    let judged = status.history.last().filter(|h| h.version == run.version)?;
    let secs = unix_seconds(&judged.time) - unix_seconds(&run.started_at);
    (secs >= 0.0).then_some(secs)
}

/// Sets the one series of `ns`/`name` in `gauge` to `score` in its metric, removing the series
/// in every other metric (the pipeline's metric can change); `None` removes them all.
fn set_score(gauge: &GaugeVec, ns: &str, name: &str, score: Option<(Metric, f64)>) {
    for m in Metric::ALL {
        match score {
            Some((metric, value)) if metric == m => {
                gauge.with_label_values(&[ns, name, m.as_str()]).set(value)
            }
            _ => {
                let _ = gauge.remove_label_values(&[ns, name, m.as_str()]);
            }
        }
    }
}

/// The registry's content in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
