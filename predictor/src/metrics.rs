//! Prometheus metrics with every series resolved ahead of the hot path: a request costs a few
//! atomic adds, never a label lookup. Beside the request series: `predictor_build_info`, the
//! `process_*` series, `predictor_requests_in_flight` and `predictor_model_load_seconds`.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::model::ServedModel;
use crate::routes::Route;

/// Status codes the server produces; anything else is counted as "other".
const CODES: [&str; 12] = [
    "200", "400", "404", "405", "408", "409", "413", "415", "422", "500", "503", "other",
];

fn code_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        404 => 2,
        405 => 3,
        408 => 4,
        409 => 5,
        413 => 6,
        415 => 7,
        422 => 8,
        500 => 9,
        503 => 10,
        _ => 11,
    }
}

const N_ROUTES: usize = Route::ALL.len();

/// Request latencies are sub-millisecond when healthy; the buckets resolve that range and still
/// show a stalled request.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

pub struct Metrics {
    registry: Registry,
    requests_vec: IntCounterVec,
    /// Series appear on first use, so /metrics lists only (route, code) pairs that happened.
    requests: Vec<OnceLock<IntCounter>>,
    latency_vec: prometheus::HistogramVec,
    latency: Vec<OnceLock<Histogram>>,
    /// Only the three prediction routes have a series.
    rows: Vec<Option<IntCounter>>,
    per_class: Vec<IntCounter>,
    ready: IntGauge,
    /// Open client connections (bounded by MAX_CONNECTIONS).
    pub open_connections: IntGauge,
    in_flight: IntGauge,
    model_load: Gauge,
    /// `predictor_shadow_*`: mirroring to a shadow challenger (all results exist from the start).
    pub shadow: crate::shadow::ShadowMetrics,
}

/// One request being served: counted in `predictor_requests_in_flight` until dropped.
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new(model: &ServedModel) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let build = IntGauge::with_opts(
            Opts::new(
                "predictor_build_info",
                "The running predictor build; always 1, the labels carry the information.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1);
        registry.register(Box::new(build))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "predictor_requests_total",
                "HTTP requests by route and status code.",
            ),
            &["route", "code"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        let latency_vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "predictor_request_duration_seconds",
                "Time from request head to response, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(latency_vec.clone()))?;
        let rows_vec = IntCounterVec::new(
            Opts::new(
                "predictor_rows_predicted_total",
                "Rows scored, by route (a batch request counts each row).",
            ),
            &["route"],
        )?;
        registry.register(Box::new(rows_vec.clone()))?;
        let class_vec = IntCounterVec::new(
            Opts::new(
                "predictor_predictions_total",
                "Predicted rows by class label.",
            ),
            &["class"],
        )?;
        registry.register(Box::new(class_vec.clone()))?;
        let info = IntGauge::with_opts(
            Opts::new(
                "predictor_model_info",
                "The served model; always 1, the labels carry the information.",
            )
            .const_label("model_name", &model.meta.name)
            .const_label("model_version", &model.meta.version)
            .const_label("algorithm", &model.meta.algorithm)
            .const_label(
                "metric",
                model
                    .meta
                    .score
                    .as_ref()
                    .map(|s| s.metric.as_str())
                    .unwrap_or(""),
            ),
        )?;
        info.set(1);
        registry.register(Box::new(info))?;
        if let Some(score) = &model.meta.score {
            let g = Gauge::with_opts(
                Opts::new(
                    "predictor_model_score",
                    "Holdout score of the served model from its report.json.",
                )
                .const_label("model_version", &model.meta.version)
                .const_label("metric", &score.metric),
            )?;
            g.set(score.value);
            registry.register(Box::new(g))?;
        }
        let ready = IntGauge::new(
            "predictor_ready",
            "1 while the predictor reports ready, 0 while draining.",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let open_connections = IntGauge::new(
            "predictor_open_connections",
            "Client connections open now (at most MAX_CONNECTIONS).",
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        let in_flight = IntGauge::new(
            "predictor_requests_in_flight",
            "Requests being served now (a /metrics scrape counts itself).",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let model_load = Gauge::new(
            "predictor_model_load_seconds",
            "Seconds the predictor took at start to fetch, verify and load its model.",
        )?;
        registry.register(Box::new(model_load.clone()))?;
        let shadow = crate::shadow::ShadowMetrics::register(&registry, &LATENCY_BUCKETS)?;

        let rows = Route::ALL
            .iter()
            .map(|r| {
                r.takes_body()
                    .then(|| rows_vec.with_label_values(&[r.label()]))
            })
            .collect();
        let per_class = model
            .meta
            .class_labels
            .iter()
            .map(|c| class_vec.with_label_values(&[c.as_str()]))
            .collect();
        Ok(Metrics {
            registry,
            requests_vec,
            requests: (0..N_ROUTES * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            latency_vec,
            latency: (0..N_ROUTES).map(|_| OnceLock::new()).collect(),
            rows,
            per_class,
            ready,
            open_connections,
            in_flight,
            model_load,
            shadow,
        })
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records how long loading the model took.
    pub fn set_model_load_seconds(&self, seconds: f64) {
        self.model_load.set(seconds);
    }

    pub fn observe_request(&self, route: Route, status: u16, seconds: f64) {
        let ci = code_index(status);
        let counter = self.requests[route.index() * CODES.len() + ci].get_or_init(|| {
            self.requests_vec
                .with_label_values(&[route.label(), CODES[ci]])
        });
        counter.inc();
        self.latency[route.index()]
            .get_or_init(|| self.latency_vec.with_label_values(&[route.label()]))
            .observe(seconds);
    }

    pub fn observe_rows(&self, route: Route, per_class: &[u64]) {
        let mut total = 0;
        for (counter, n) in self.per_class.iter().zip(per_class) {
            if *n > 0 {
                counter.inc_by(*n);
                total += n;
            }
        }
        if total > 0
            && let Some(rows) = &self.rows[route.index()]
        {
            rows.inc_by(total);
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding our own registry into a Vec does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;

    #[test]
    fn renders_requests_latency_rows_classes_and_info() {
        let m = sum_model();
        let metrics = Metrics::new(&m).unwrap();
        metrics.observe_request(Route::Predict, 200, 0.0002);
        metrics.observe_request(Route::Predict, 200, 0.0002);
        metrics.observe_request(Route::V2Infer, 422, 0.001);
        metrics.observe_request(Route::Unknown, 418, 0.001);
        metrics.observe_request(Route::V1Predict, 408, 10.0);
        metrics.open_connections.set(3);
        metrics.observe_rows(Route::V2Infer, &[3, 4]);
        metrics.set_ready(true);
        let text = String::from_utf8(metrics.render()).unwrap();
        for needle in [
            r#"predictor_requests_total{code="200",route="predict"} 2"#,
            r#"predictor_requests_total{code="422",route="v2_infer"} 1"#,
            r#"predictor_requests_total{code="other",route="unknown"} 1"#,
            r#"predictor_request_duration_seconds_count{route="predict"} 2"#,
            r#"predictor_rows_predicted_total{route="v2_infer"} 7"#,
            r#"predictor_predictions_total{class="bad"} 3"#,
            r#"predictor_predictions_total{class="good"} 4"#,
            r#"predictor_model_info{algorithm="test",metric="f1Macro",model_name="wine",model_version="v1"} 1"#,
            r#"predictor_model_score{metric="f1Macro",model_version="v1"} 0.75"#,
            "predictor_ready 1",
            r#"predictor_requests_total{code="408",route="v1_predict"} 1"#,
            "predictor_open_connections 3",
            r#"predictor_shadow_requests_total{result="agree"} 0"#,
            r#"predictor_shadow_requests_total{result="disagree"} 0"#,
            r#"predictor_shadow_requests_total{result="error"} 0"#,
            r#"predictor_shadow_requests_total{result="dropped"} 0"#,
            "predictor_shadow_duration_seconds_count 0",
            r#"predictor_shadow_duration_seconds_bucket{le="0.00005"} 0"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains(r#"code="404""#),
            "unused series must not appear"
        );
    }

    #[test]
    fn build_info_process_in_flight_and_model_load_series_are_exported() {
        let metrics = Metrics::new(&sum_model()).unwrap();
        metrics.set_model_load_seconds(0.25);
        let text = |m: &Metrics| String::from_utf8(m.render()).unwrap();
        assert!(text(&metrics).contains("predictor_requests_in_flight 0\n"));
        {
            let _a = metrics.request_started();
            let _b = metrics.request_started();
            assert!(text(&metrics).contains("predictor_requests_in_flight 2\n"));
        }
        let t = text(&metrics);
        for needle in [
            "predictor_requests_in_flight 0\n".to_string(),
            "predictor_model_load_seconds 0.25\n".to_string(),
            format!(
                "predictor_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE process_cpu_seconds_total counter".to_string(),
            "# TYPE process_resident_memory_bytes gauge".to_string(),
            "# TYPE process_start_time_seconds gauge".to_string(),
        ] {
            assert!(t.contains(&needle), "missing {needle} in\n{t}");
        }
    }

    /// Every family the predictor exports, each with at least one series.
    fn full_render() -> String {
        let metrics = Metrics::new(&sum_model()).unwrap();
        metrics.observe_request(Route::Predict, 200, 0.0002);
        metrics.observe_request(Route::Predict, 500, 0.0002);
        metrics.observe_rows(Route::Predict, &[1, 1]);
        metrics.set_ready(true);
        metrics.set_model_load_seconds(0.1);
        let mut out = metrics.render();
        // The drift and feedback families, rendered beside the registry on /metrics.
        out.extend(crate::drift::sample_exposition());
        out.extend(crate::feedback::sample_exposition());
        String::from_utf8(out).unwrap()
    }

    /// `promtool check metrics` on the predictor's /metrics. Skipped loudly without promtool,
    /// unless CHAMPION_REQUIRE_PROMTOOL=1 (as `make test` sets) makes that a failure.
    #[test]
    fn promtool_check_metrics_passes_on_the_predictors_metrics() {
        crate::promtool::check(&full_render());
    }

    /// Every `predictor_*` name in the chart's alerting rules and Grafana dashboard is a series
    /// the predictor exports (histograms add `_bucket`, `_sum`, `_count`). The operator's tests
    /// check the `champion_*` names.
    #[test]
    fn the_charts_alerts_and_dashboard_use_only_series_the_predictor_exports() {
        let families: std::collections::BTreeSet<String> = full_render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let chart =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/champion-operator");
        let mut used = std::collections::BTreeSet::new();
        for file in ["templates/prometheusrule.yaml", "dashboards/champion.json"] {
            let text = std::fs::read_to_string(chart.join(file)).unwrap();
            let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            used.extend(
                words
                    .filter(|w| w.starts_with("predictor_"))
                    .map(str::to_string),
            );
        }
        assert!(
            used.len() >= 3,
            "the chart uses the predictor's series: {used:?}"
        );
        let exported = |name: &str| {
            families.contains(name)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
        };
        let missing: Vec<&String> = used.iter().filter(|n| !exported(n)).collect();
        assert!(
            missing.is_empty(),
            "not exported by the predictor: {missing:?}\nexported: {families:?}"
        );
    }
}
