//! Reads the predictor pods' own `/metrics` for live analysis (no Prometheus needed): lists the
//! pods of one role (`champion`, `canary`, `shadow`) of a pipeline, checks that each was made by
//! the operator's own Deployment (pod → its controlling ReplicaSet → that ReplicaSet's
//! controlling Deployment, matched by uid), GETs `http://<podIP>:<port>/metrics` with a short
//! timeout and a size cap, and parses the Prometheus text format.
//!
//! The figures analysis needs are kept per pod as a flat map of counters ([`Counters`]), so two
//! reads subtract key by key ([`Counters::delta`]); histogram helpers turn bucket deltas into
//! quantiles the way PromQL's `histogram_quantile` does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// How long one GET of a pod's `/metrics` (or one Prometheus query) may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `/metrics` answer read (a predictor's is a few KiB).
pub const MAX_SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// Label on every predictor pod: which part it plays.
pub const LABEL_ROLE: &str = "champion.dev/role";
pub const ROLE_CHAMPION: &str = "champion";
pub const ROLE_CANARY: &str = "canary";
pub const ROLE_SHADOW: &str = "shadow";

/// Prediction routes of the predictor (`predictor_requests_total{route}`).
pub const PREDICT_ROUTES: [&str; 3] = ["predict", "v1_predict", "v2_infer"];

/// Why figures could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("listing the {role} pods: {message}")]
    List { role: String, message: String },
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("GET {url} took longer than {}s", SCRAPE_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("GET {url}: answer larger than {MAX_SCRAPE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// Parses `{a="x",b="y"}` starting after the `{`; returns the labels and the rest after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// Parses the Prometheus text format, tolerantly: comments, blank lines and lines it cannot
/// read are skipped (a pod's answer is data, not trusted input; a broken line costs that
/// line only).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() {
            continue;
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            match parse_labels(&line[name_end + 1..]) {
                Some(x) => x,
                None => continue,
            }
        } else {
            (Vec::new(), &line[name_end..])
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The counters one pod exposes that analysis uses, flattened to `key → value`:
/// - `req`, `err`: requests and 5xx answers on the prediction routes;
/// - `lat|<le>`: `predictor_request_duration_seconds_bucket` of those routes, summed;
/// - `shadow|<result>`: `predictor_shadow_requests_total`;
/// - `shlat|<le>`: `predictor_shadow_duration_seconds_bucket`;
/// - `cm|<predicted>|<actual>`: `predictor_feedback_confusion_total`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters(pub BTreeMap<String, f64>);

pub const KEY_REQUESTS: &str = "req";
pub const KEY_ERRORS: &str = "err";
pub const PREFIX_LATENCY: &str = "lat|";
pub const PREFIX_SHADOW: &str = "shadow|";
pub const PREFIX_SHADOW_LATENCY: &str = "shlat|";
pub const PREFIX_CONFUSION: &str = "cm|";

impl Counters {
    /// The analysis counters in `samples` (one pod's scrape).
    pub fn from_samples(samples: &[Sample]) -> Counters {
        let mut c = BTreeMap::new();
        let mut add = |k: String, v: f64| {
            if v.is_finite() {
                *c.entry(k).or_insert(0.0) += v;
            }
        };
        let predict = |s: &Sample| {
            s.label("route")
                .is_some_and(|r| PREDICT_ROUTES.contains(&r))
        };
        for s in samples {
            match s.name.as_str() {
                "predictor_requests_total" if predict(s) => {
                    add(KEY_REQUESTS.into(), s.value);
                    if s.label("code").is_some_and(|code| code.starts_with('5')) {
                        add(KEY_ERRORS.into(), s.value);
                    }
                }
                "predictor_request_duration_seconds_bucket" if predict(s) => {
                    if let Some(le) = s.label("le") {
                        add(format!("{PREFIX_LATENCY}{le}"), s.value);
                    }
                }
                "predictor_shadow_requests_total" => {
                    if let Some(r) = s.label("result") {
                        add(format!("{PREFIX_SHADOW}{r}"), s.value);
                    }
                }
                "predictor_shadow_duration_seconds_bucket" => {
                    if let Some(le) = s.label("le") {
                        add(format!("{PREFIX_SHADOW_LATENCY}{le}"), s.value);
                    }
                }
                "predictor_feedback_confusion_total" => {
                    if let (Some(p), Some(a)) = (s.label("predicted"), s.label("actual")) {
                        add(format!("{PREFIX_CONFUSION}{p}|{a}"), s.value);
                    }
                }
                _ => {}
            }
        }
        Counters(c)
    }

    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// `self - base`, key by key. Counters only grow: when any went down the pod restarted,
    /// and all of `self` counts (it is all new since the restart).
    pub fn delta(&self, base: &Counters) -> Counters {
        let reset = base.0.iter().any(|(k, b)| self.get(k) < *b);
        if reset {
            return self.clone();
        }
        Counters(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - base.get(k)))
                .collect(),
        )
    }

    /// Adds `other` key by key.
    pub fn add(&mut self, other: &Counters) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0.0) += v;
        }
    }

    /// The cumulative buckets under `prefix`, as (upper bound, count), sorted by bound.
    pub fn buckets(&self, prefix: &str) -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| Some((parse_value(k.strip_prefix(prefix)?)?, *v)))
            .filter(|(le, _)| !le.is_nan())
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }

    /// The confusion counts (predicted, actual) → count.
    pub fn confusion(&self) -> BTreeMap<(String, String), f64> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let (p, a) = k.strip_prefix(PREFIX_CONFUSION)?.split_once('|')?;
                Some(((p.to_string(), a.to_string()), *v))
            })
            .collect()
    }
}

/// The `q` quantile (0..1) of cumulative `buckets` (upper bound, count), as PromQL's
/// `histogram_quantile`: linear interpolation inside the bucket that holds the rank; a rank in
/// the `+Inf` bucket gives the highest finite bound. `None` when there are no observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    Some(prev_bound)
}

/// A pod whose `/metrics` may be read: its name, uid, address and when it started.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTarget {
    pub name: String,
    pub uid: String,
    pub ip: IpAddr,
    pub started: Option<k8s_openapi::jiff::Timestamp>,
    pub ready: bool,
}

fn controller_of(
    meta: &kube::api::ObjectMeta,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The running pods with `selector` in `ns` that the Deployment with uid `deployment_uid`
/// made (pod → controlling ReplicaSet with that uid → controlled by the Deployment). Pods on
/// the host network are left out: their address is the node's, not a pod's.
pub async fn pods_of(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    deployment_uid: &str,
    role: &str,
) -> Result<Vec<PodTarget>, ScrapeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| ScrapeError::List {
            role: role.to_string(),
            message: e.to_string(),
        })?;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let mut trusted_sets: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for pod in list.items {
        let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
            continue;
        };
        let trusted = match trusted_sets.get(&owner.uid) {
            Some(t) => *t,
            None => {
                let t = match sets.get_opt(&owner.name).await {
                    Ok(Some(rs)) => {
                        rs.metadata.uid.as_deref() == Some(owner.uid.as_str())
                            && controller_of(&rs.metadata)
                                .is_some_and(|d| d.kind == "Deployment" && d.uid == deployment_uid)
                    }
                    Ok(None) => false,
                    Err(e) => {
                        return Err(ScrapeError::List {
                            role: role.to_string(),
                            message: format!("reading ReplicaSet {}: {e}", owner.name),
                        });
                    }
                };
                trusted_sets.insert(owner.uid.clone(), t);
                t
            }
        };
        if !trusted {
            continue;
        }
        let spec_host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if spec_host_network || status.phase.as_deref() != Some("Running") {
            continue;
        }
        let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        out.push(PodTarget {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ip,
            started: status.start_time.as_ref().map(|t| t.0),
            ready,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// GET `http://<addr><path_and_query>` with `host` as the Host header, within
/// [`SCRAPE_TIMEOUT`], reading at most [`MAX_SCRAPE_BYTES`]. Only plain http.
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path_and_query: &str,
) -> Result<String, ScrapeError> {
    let url = format!("http://{host}{path_and_query}");
    let call = async {
        let http = |message: String| ScrapeError::Http {
            url: url.clone(),
            message,
        };
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| http(e.to_string()))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let request = http::Request::get(path_and_query)
            .header(http::header::HOST, host)
            .header(http::header::ACCEPT, "text/plain, application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_SCRAPE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        ScrapeError::TooLarge { url: url.clone() }
                    } else {
                        http(e.to_string())
                    }
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(http(format!("answered {status}")));
            }
            String::from_utf8(body.to_vec()).map_err(|_| http("answer is not UTF-8".into()))
        }
        .await;
        driver.abort();
        result
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout { url }),
    }
}

/// One pod's analysis counters, read from its `/metrics` on `port`.
pub async fn scrape(pod: &PodTarget, port: u16) -> Result<Counters, ScrapeError> {
    let addr = SocketAddr::new(pod.ip, port);
    let host = match pod.ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    let text = http_get(addr, &host, "/metrics").await?;
    Ok(Counters::from_samples(&parse(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP predictor_requests_total HTTP requests by route and status code.
# TYPE predictor_requests_total counter
predictor_requests_total{code="200",route="predict"} 90
predictor_requests_total{code="500",route="predict"} 4
predictor_requests_total{code="503",route="v2_infer"} 1
predictor_requests_total{code="200",route="v2_infer"} 5
predictor_requests_total{code="500",route="metrics"} 7
predictor_request_duration_seconds_bucket{route="predict",le="0.01"} 50
predictor_request_duration_seconds_bucket{route="predict",le="0.1"} 94
predictor_request_duration_seconds_bucket{route="predict",le="+Inf"} 94
predictor_request_duration_seconds_bucket{route="v2_infer",le="0.01"} 6
predictor_request_duration_seconds_bucket{route="v2_infer",le="0.1"} 6
predictor_request_duration_seconds_bucket{route="v2_infer",le="+Inf"} 6
predictor_shadow_requests_total{result="agree"} 30
predictor_shadow_requests_total{result="dropped"} 2
predictor_feedback_confusion_total{predicted="a \"b\"",actual="c"} 3
broken{label="x" 12
another broken line
no_labels 1.5e3 1700000000
"#;

    #[test]
    fn parses_samples_with_escapes_and_skips_broken_lines() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 15, "{s:?}");
        let last = s.last().expect("a sample");
        assert_eq!(last.name, "no_labels");
        assert_eq!(last.value, 1500.0);
        let cm = s
            .iter()
            .find(|x| x.name == "predictor_feedback_confusion_total")
            .expect("confusion");
        assert_eq!(cm.label("predicted"), Some("a \"b\""));
        assert_eq!(cm.label("actual"), Some("c"));
        let inf = s
            .iter()
            .find(|x| x.label("le") == Some("+Inf"))
            .expect("+Inf bucket");
        assert_eq!(inf.value, 94.0);
    }

    #[test]
    fn counters_keep_prediction_routes_only_and_sum_buckets_over_routes() {
        let c = Counters::from_samples(&parse(TEXT));
        assert_eq!(
            c.get(KEY_REQUESTS),
            100.0,
            "the metrics route is not counted"
        );
        assert_eq!(c.get(KEY_ERRORS), 5.0);
        assert_eq!(
            c.buckets(PREFIX_LATENCY),
            vec![(0.01, 56.0), (0.1, 100.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(c.get("shadow|agree"), 30.0);
        assert_eq!(c.get("shadow|dropped"), 2.0);
        let cm = c.confusion();
        assert_eq!(
            cm.get(&("a \"b\"".to_string(), "c".to_string())),
            Some(&3.0)
        );
    }

    #[test]
    fn delta_subtracts_and_a_reset_counts_everything_new() {
        let base = Counters(BTreeMap::from([("req".into(), 10.0), ("err".into(), 1.0)]));
        let now = Counters(BTreeMap::from([
            ("req".into(), 25.0),
            ("err".into(), 1.0),
            ("lat|0.1".into(), 3.0),
        ]));
        let d = now.delta(&base);
        assert_eq!(d.get("req"), 15.0);
        assert_eq!(d.get("err"), 0.0);
        assert_eq!(d.get("lat|0.1"), 3.0);
        let restarted = Counters(BTreeMap::from([("req".into(), 4.0)]));
        assert_eq!(restarted.delta(&base), restarted, "a pod restart resets");
    }

    #[test]
    fn quantile_interpolates_like_histogram_quantile() {
        let b = [(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(0.01));
        let p99 = quantile(0.99, &b).expect("p99");
        assert!((p99 - (0.01 + 0.09 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        // A rank in the +Inf bucket: the highest finite bound.
        let slow = [(0.01, 1.0), (0.1, 2.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.99, &slow), Some(0.1));
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }
}
