//! Prometheus metrics of the operator. Labels are bounded: results and error categories are
//! fixed enums, and the per-pipeline gauges carry only namespace and name of pipelines that
//! exist (one series each).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use prometheus::{GaugeVec, core::Collector};
use std::collections::HashSet;

/// How a training run ended, as the `outcome` label of `champion_training_runs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Promoted,
    Rejected,
    Failed,
}

impl RunOutcome {
    fn label(self) -> &'static str {
        match self {
            RunOutcome::Promoted => "promoted",
            RunOutcome::Rejected => "rejected",
            RunOutcome::Failed => "failed",
        }
    }
}

/// Why the predictor was rolled back, as the `cause` label of `champion_rollbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackCause {
    /// The rollout did not progress and was reverted.
    RolloutFailed,
    /// The champion.dev/rollback-to annotation asked for it.
    Requested,
}

impl RollbackCause {
    fn label(self) -> &'static str {
        match self {
            RollbackCause::RolloutFailed => "rollout_failed",
            RollbackCause::Requested => "requested",
        }
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

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles by result (`ok` or the error category).
    pub reconciles: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// Training runs by outcome: started, promoted, rejected, failed.
    pub training_runs: IntCounterVec,
    pub promotions: IntCounter,
    /// Rollbacks by cause: rollout_failed, requested.
    pub rollbacks: IntCounterVec,
    pub champion_score: GaugeVec,
    pub challenger_score: GaugeVec,
    /// From the first sighting of new data to the model trained on it serving.
    pub data_to_serving: Histogram,
    pub leader: IntGauge,
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, prometheus::Error> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            reconciles: register(
                registry,
                IntCounterVec::new(Opts::new("champion_reconciles_total", "Reconciles by result"), &["result"])?,
            )?,
            reconcile_duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("champion_reconcile_duration_seconds", "Duration of one reconcile")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                    &[],
                )?,
            )?,
            training_runs: register(
                registry,
                IntCounterVec::new(Opts::new("champion_training_runs_total", "Training runs by outcome"), &["outcome"])?,
            )?,
            promotions: register(registry, IntCounter::new("champion_promotions_total", "Challengers promoted")?)?,
            rollbacks: register(
                registry,
                IntCounterVec::new(Opts::new("champion_rollbacks_total", "Predictor rollbacks by cause"), &["cause"])?,
            )?,
            champion_score: register(
                registry,
                GaugeVec::new(Opts::new("champion_champion_score", "Champion score on its metric"), &["namespace", "pipeline"])?,
            )?,
            challenger_score: register(
                registry,
                GaugeVec::new(Opts::new("champion_challenger_score", "Last challenger score on its metric"), &["namespace", "pipeline"])?,
            )?,
            data_to_serving: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "champion_data_to_serving_seconds",
                        "Seconds from the first sighting of new data to the model trained on it serving",
                    )
                    .buckets(vec![2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
                )?,
            )?,
            leader: register(registry, IntGauge::new("champion_leader", "1 while this replica holds the leader Lease")?)?,
        })
    }

    /// Drops the per-pipeline series of pipelines not in `keep` (namespace, name): a deleted
    /// pipeline has no reconcile of its own that could remove them.
    pub fn retain_pipelines(&self, keep: &HashSet<(String, String)>) {
        for gauge in [&self.champion_score, &self.challenger_score] {
            let mut gone = Vec::new();
            for family in gauge.collect() {
                for metric in family.get_metric() {
                    let label = |n: &str| {
                        metric
                            .get_label()
                            .iter()
                            .find(|l| l.name() == n)
                            .map(|l| l.value().to_string())
                            .unwrap_or_default()
                    };
                    let key = (label("namespace"), label("pipeline"));
                    if !keep.contains(&key) {
                        gone.push(key);
                    }
                }
            }
            for (ns, name) in gone {
                let _ = gauge.remove_label_values(&[&ns, &name]);
            }
        }
    }

    /// Counts a training run launched.
    pub fn run_started(&self) {
        self.training_runs.with_label_values(&["started"]).inc();
    }

    /// Counts a training run that ended; a promotion also counts in `champion_promotions_total`.
    pub fn run_finished(&self, outcome: RunOutcome) {
        self.training_runs
            .with_label_values(&[outcome.label()])
            .inc();
        if outcome == RunOutcome::Promoted {
            self.promotions.inc();
        }
    }

    /// Counts a rollback of the predictor.
    pub fn rolled_back(&self, cause: RollbackCause) {
        self.rollbacks.with_label_values(&[cause.label()]).inc();
    }

    /// Records one [`MetricEvent`].
    pub fn record(&self, event: MetricEvent) {
        match event {
            MetricEvent::RunStarted => self.run_started(),
            MetricEvent::RunFinished(outcome) => self.run_finished(outcome),
            MetricEvent::RolledBack(cause) => self.rolled_back(cause),
            MetricEvent::DataToServing(secs) => self.data_to_serving.observe(secs.max(0.0)),
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

    /// Sets the per-pipeline score gauges from the status (also after a restart): the
    /// champion's series goes away when there is no champion.
    pub fn scores(&self, ns: &str, name: &str, champion: Option<f64>, challenger: Option<f64>) {
        let key = [ns, name];
        match champion {
            Some(s) => self.champion_score.with_label_values(&key).set(s),
            None => {
                let _ = self.champion_score.remove_label_values(&key);
            }
        }
        if let Some(s) = challenger {
            self.challenger_score.with_label_values(&key).set(s);
        }
    }

    /// Times one reconcile; the histogram is observed when the guard drops.
    pub fn reconcile_timer(&self) -> prometheus::HistogramTimer {
        self.reconcile_duration
            .with_label_values::<&str>(&[])
            .start_timer()
    }
}

/// The registry's content in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_names() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).expect("metrics register once");
        m.reconciled();
        m.record(MetricEvent::RunStarted);
        m.record(MetricEvent::RunFinished(RunOutcome::Promoted));
        m.record(MetricEvent::RolledBack(RollbackCause::Requested));
        m.scores("default", "wine", Some(0.8), None);
        drop(m.reconcile_timer());
        let text = String::from_utf8(render(&registry).expect("renders")).expect("utf-8");
        assert!(
            text.contains("champion_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("champion_champion_score{namespace=\"default\",pipeline=\"wine\"} 0.8"),
            "{text}"
        );
        assert!(
            text.contains("champion_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        for line in [
            "champion_training_runs_total{outcome=\"started\"} 1",
            "champion_training_runs_total{outcome=\"promoted\"} 1",
            "champion_promotions_total 1",
            "champion_rollbacks_total{cause=\"requested\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.challenger_score
            .with_label_values(&["default", "gone"])
            .set(0.7);
        m.retain_pipelines(&HashSet::from([(
            "default".to_string(),
            "wine".to_string(),
        )]));
        let text = String::from_utf8(render(&registry).expect("renders")).expect("utf-8");
        assert!(!text.contains("pipeline=\"gone\""), "{text}");
        assert!(text.contains("pipeline=\"wine\""), "{text}");
        assert!(
            Metrics::register(&registry).is_err(),
            "double registration is refused"
        );
    }
}
