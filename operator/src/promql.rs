//! Live-analysis figures through Prometheus (`spec.rollout.analysis.prometheusUrl`), as
//! Flagger does: instant queries of `increase(...[<window>])` over the current step, summed by
//! the same keys the pods' own counters use ([`crate::podmetrics::Counters`]), so both paths
//! feed the same [`crate::analysis`] figures. The series are the predictor's, with the labels
//! the chart's PodMonitor adds from the pod labels: `namespace`, `pipeline`, `role`.
//!
//! The URL must be plain `http://host[:port][/prefix]` and its host must pass the operator's
//! egress policy (the same one tenant store URIs pass); the operator connects only to an
//! address it checked.

use std::net::SocketAddr;

use champion_api::{LiveFigures, LiveStatus, ModelPipeline, OnlineMetric, RolloutStrategy};
use champion_store::EgressPolicy;

use crate::analysis;
use crate::context::Context;
use crate::names::label_value;
use crate::podmetrics::{
    Counters, KEY_ERRORS, KEY_REQUESTS, PREFIX_CONFUSION, PREFIX_LATENCY, PREFIX_SHADOW,
    PREFIX_SHADOW_LATENCY, ROLE_CANARY, ROLE_CHAMPION, http_get,
};

/// The shortest window queried: `increase()` needs two scrapes inside it.
pub const MIN_WINDOW_SECONDS: i64 = 15;

/// A prometheusUrl split into what is connected to.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing '/', "" for none.
    pub prefix: String,
}

/// Parses `http://host[:port][/prefix]`.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let expected = "expected http://host[:port][/path]";
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("prometheusUrl {url:?}: https is not supported yet; {expected}")
        } else {
            format!("prometheusUrl {url:?}: {expected}")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
        return Err(format!("prometheusUrl {url:?}: {expected}"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) if authority.starts_with('[') && authority.ends_with(']') => (authority, 80),
            Err(_) => return Err(format!("prometheusUrl {url:?}: bad port {p:?}")),
        },
        _ => (authority, 80),
    };
    Ok(Endpoint {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        prefix: path.trim_end_matches('/').to_string(),
    })
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The queries of one step: (key prefix or key, `by` label(s), PromQL). Each result sample
/// becomes the counter `<key><label values joined by '|'>`.
pub fn queries(
    ns: &str,
    pipeline: &str,
    strategy: RolloutStrategy,
    online: bool,
    window_seconds: i64,
) -> Vec<(String, &'static str, String)> {
    let w = window_seconds.max(MIN_WINDOW_SECONDS);
    let sel = |role: &str, extra: &str| {
        format!(
            "namespace=\"{}\",pipeline=\"{}\",role=\"{role}\"{extra}",
            quote(ns),
            quote(pipeline)
        )
    };
    let routes = ",route=~\"predict|v1_predict|v2_infer\"";
    let role_queries = |role: &str, prefix: &str| {
        let mut q = vec![
            (
                format!("{prefix}{KEY_REQUESTS}"),
                "",
                format!(
                    "sum(increase(predictor_requests_total{{{}}}[{w}s]))",
                    sel(role, routes)
                ),
            ),
            (
                format!("{prefix}{KEY_ERRORS}"),
                "",
                format!(
                    "sum(increase(predictor_requests_total{{{}}}[{w}s]))",
                    sel(role, &format!("{routes},code=~\"5..\""))
                ),
            ),
            (
                format!("{prefix}{PREFIX_LATENCY}"),
                "le",
                format!(
                    "sum by (le) (increase(predictor_request_duration_seconds_bucket{{{}}}[{w}s]))",
                    sel(role, routes)
                ),
            ),
        ];
        if online {
            q.push((
                format!("{prefix}{PREFIX_CONFUSION}"),
                "predicted,actual",
                format!(
                    "sum by (predicted, actual) (increase(predictor_feedback_confusion_total{{{}}}[{w}s]))",
                    sel(role, "")
                ),
            ));
        }
        q
    };
    let mut all = role_queries(ROLE_CHAMPION, "champion/");
    match strategy {
        RolloutStrategy::Shadow => {
            all.push((
                format!("champion/{PREFIX_SHADOW}"),
                "result",
                format!(
                    "sum by (result) (increase(predictor_shadow_requests_total{{{}}}[{w}s]))",
                    sel(ROLE_CHAMPION, "")
                ),
            ));
            all.push((
                format!("champion/{PREFIX_SHADOW_LATENCY}"),
                "le",
                format!(
                    "sum by (le) (increase(predictor_shadow_duration_seconds_bucket{{{}}}[{w}s]))",
                    sel(ROLE_CHAMPION, "")
                ),
            ));
        }
        _ => all.extend(role_queries(ROLE_CANARY, "canary/")),
    }
    all
}

/// The samples of a Prometheus instant-query answer: (label values of `by`, value).
pub fn parse_answer(body: &str, by: &str) -> Result<Vec<(Vec<String>, f64)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "the query failed: {}",
            v["error"].as_str().unwrap_or("no error message")
        ));
    }
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let Some(value) = r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        let labels = by
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| r["metric"][l].as_str().unwrap_or_default().to_string())
            .collect();
        out.push((labels, value));
    }
    Ok(out)
}

/// Resolves the endpoint's host and returns the first address the egress policy allows.
async fn checked_address(egress: &EgressPolicy, e: &Endpoint) -> Result<SocketAddr, String> {
    let what = "spec.rollout.analysis.prometheusUrl";
    egress
        .check_host(&e.host, e.port, what)
        .await
        .map_err(|err| err.to_string())?;
    let addrs = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((e.host.as_str(), e.port)),
    )
    .await
    .map_err(|_| format!("resolving {} took too long", e.host))?
    .map_err(|err| format!("resolving {}: {err}", e.host))?;
    for addr in addrs {
        // Connect only to an address that itself passes the policy (no re-resolution).
        if egress
            .check_host(&addr.ip().to_string(), e.port, what)
            .await
            .is_ok()
        {
            return Ok(addr);
        }
    }
    Err(format!(
        "{} has no address the egress policy allows",
        e.host
    ))
}

/// The step's figures of `mp` from Prometheus.
pub async fn figures(
    ctx: &Context,
    mp: &ModelPipeline,
    live: &LiveStatus,
    url: &str,
) -> Result<LiveFigures, String> {
    let window = k8s_openapi::jiff::Timestamp::now()
        .duration_since(live.step_started_at.0)
        .as_secs()
        .max(1);
    let ns = mp.metadata.namespace.as_deref().unwrap_or_default();
    let pipeline = label_value(mp.metadata.name.as_deref().unwrap_or_default());
    let online = mp.spec.rollout.analysis.online.as_ref().map(|g| g.metric);
    query_figures(
        &ctx.stores.egress,
        url,
        ns,
        &pipeline,
        live.strategy,
        online,
        window,
    )
    .await
}

/// The figures of the last `window` seconds of `pipeline` in `ns`, from the Prometheus at
/// `url` (which must pass `egress`).
pub async fn query_figures(
    egress: &EgressPolicy,
    url: &str,
    ns: &str,
    pipeline: &str,
    strategy: RolloutStrategy,
    online: Option<OnlineMetric>,
    window: i64,
) -> Result<LiveFigures, String> {
    let e = endpoint(url)?;
    let addr = checked_address(egress, &e).await?;
    let host = if e.port == 80 {
        e.host.clone()
    } else {
        format!("{}:{}", e.host, e.port)
    };
    let mut champion = Counters::default();
    let mut canary = Counters::default();
    for (key, by, query) in queries(ns, pipeline, strategy, online.is_some(), window) {
        let path = format!("{}/api/v1/query?query={}", e.prefix, encode(&query));
        let body = http_get(addr, &host, &path)
            .await
            .map_err(|err| err.to_string())?;
        let (target, key) = match key.split_once('/') {
            Some(("canary", k)) => (&mut canary, k.to_string()),
            Some((_, k)) => (&mut champion, k.to_string()),
            None => (&mut champion, key.clone()),
        };
        for (labels, value) in parse_answer(&body, by)? {
            if value.is_finite() {
                *target
                    .0
                    .entry(format!("{key}{}", labels.join("|")))
                    .or_insert(0.0) += value;
            }
        }
    }
    Ok(match strategy {
        RolloutStrategy::Shadow => analysis::shadow_figures(&champion),
        _ => analysis::canary_figures(&canary, &champion, online),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            endpoint("http://prometheus.monitoring.svc:9090/prom/"),
            Ok(Endpoint {
                host: "prometheus.monitoring.svc".into(),
                port: 9090,
                prefix: "/prom".into()
            })
        );
        assert_eq!(
            endpoint("http://127.0.0.1").map(|e| (e.host, e.port)),
            Ok(("127.0.0.1".into(), 80))
        );
        for bad in [
            "https://p:9090",
            "ftp://x",
            "http://",
            "http://u@h:1",
            "http://h:x",
        ] {
            let err = endpoint(bad).expect_err(bad);
            assert!(
                err.contains("expected http://") || err.contains("bad port"),
                "{err}"
            );
        }
    }

    #[test]
    fn canary_queries_cover_both_roles_over_the_step_window() {
        let q = queries("team-a", "wine", RolloutStrategy::Canary, false, 42);
        let texts: Vec<&str> = q.iter().map(|(_, _, t)| t.as_str()).collect();
        assert!(texts.contains(
            &"sum(increase(predictor_requests_total{namespace=\"team-a\",pipeline=\"wine\",role=\"canary\",route=~\"predict|v1_predict|v2_infer\",code=~\"5..\"}[42s]))"
        ), "{texts:#?}");
        assert!(texts.contains(
            &"sum by (le) (increase(predictor_request_duration_seconds_bucket{namespace=\"team-a\",pipeline=\"wine\",role=\"champion\",route=~\"predict|v1_predict|v2_infer\"}[42s]))"
        ), "{texts:#?}");
        assert_eq!(q.len(), 6);
        let short = queries("a", "b", RolloutStrategy::Canary, true, 2);
        assert!(
            short.iter().all(|(_, _, t)| t.contains("[15s]")),
            "at least 15 s"
        );
        assert_eq!(short.len(), 8, "confusion per role with the online gate");
        let shadow = queries("a", "b", RolloutStrategy::Shadow, false, 60);
        assert!(shadow.iter().any(|(k, by, t)| k == "champion/shadow|"
            && *by == "result"
            && t.starts_with("sum by (result) (increase(predictor_shadow_requests_total{")));
    }

    #[test]
    fn answers_parse_into_labelled_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"le":"0.01"},"value":[1700000000.1,"12"]},
            {"metric":{"le":"+Inf"},"value":[1700000000.1,"20.5"]}]}}"#;
        assert_eq!(
            parse_answer(body, "le"),
            Ok(vec![
                (vec!["0.01".to_string()], 12.0),
                (vec!["+Inf".to_string()], 20.5)
            ])
        );
        let failed = r#"{"status":"error","error":"parse error"}"#;
        assert!(
            parse_answer(failed, "")
                .expect_err("error")
                .contains("parse error")
        );
        assert_eq!(encode("a b{\"}"), "a%20b%7B%22%7D");
    }
}

/// The PromQL path against a real Prometheus (the one `make prometheus` builds into
/// `~/.cache/champion/bin`), bound to 127.0.0.1, scraping a local stand-in for a champion pod
/// and a canary pod whose counters grow with time: 10 % of the canary's answers are 500s, half
/// of its answers take at most 1 ms and all at most 100 ms. Without the binary the test says
/// so and passes, unless CHAMPION_REQUIRE_PROMETHEUS=1.
#[cfg(test)]
mod prometheus_tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn exposition(role: &str, seconds: f64) -> String {
        let (ok, failed) = if role == "canary" {
            (45.0 * seconds, 5.0 * seconds)
        } else {
            (100.0 * seconds, 0.0)
        };
        let all = ok + failed;
        format!(
            "# TYPE predictor_requests_total counter\n\
             predictor_requests_total{{route=\"predict\",code=\"200\"}} {ok}\n\
             predictor_requests_total{{route=\"predict\",code=\"500\"}} {failed}\n\
             predictor_requests_total{{route=\"metrics\",code=\"500\"}} {all}\n\
             # TYPE predictor_request_duration_seconds histogram\n\
             predictor_request_duration_seconds_bucket{{route=\"predict\",le=\"0.001\"}} {}\n\
             predictor_request_duration_seconds_bucket{{route=\"predict\",le=\"0.1\"}} {all}\n\
             predictor_request_duration_seconds_bucket{{route=\"predict\",le=\"+Inf\"}} {all}\n\
             predictor_request_duration_seconds_sum{{route=\"predict\"}} 0\n\
             predictor_request_duration_seconds_count{{route=\"predict\"}} {all}\n",
            all / 2.0
        )
    }

    #[tokio::test]
    async fn canary_figures_come_from_a_real_prometheus() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let binary = std::path::Path::new(&home).join(".cache/champion/bin/prometheus");
        if !binary.is_file() {
            assert!(
                std::env::var("CHAMPION_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
                "{} is missing: run `make prometheus`",
                binary.display()
            );
            eprintln!("skipped: {} is missing (make prometheus)", binary.display());
            return;
        }
        // The stand-in pods: /champion and /canary on one local listener.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        let start = Instant::now();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let role = if head.starts_with("GET /canary") {
                        "canary"
                    } else {
                        "champion"
                    };
                    let body = exposition(role, start.elapsed().as_secs_f64());
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let job = |role: &str| {
            format!(
                "- job_name: {role}\n  metrics_path: /{role}\n  static_configs:\n  - targets: ['{target}']\n    labels: {{namespace: team-a, pipeline: wine, role: {role}}}\n"
            )
        };
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\nscrape_configs:\n{}{}",
            job("champion"),
            job("canary")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let _prometheus = Killed(child);
        let egress = EgressPolicy::new(&["127.0.0.1".into()], &[]).expect("policy");
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(60);
        let figures = loop {
            let f = query_figures(
                &egress,
                &url,
                "team-a",
                "wine",
                RolloutStrategy::Canary,
                None,
                10,
            )
            .await;
            // Once the 10 s window is covered by samples (increase() extrapolates a series
            // younger than the window).
            if let Ok(f) = &f
                && start.elapsed() > Duration::from_secs(14)
                && f.challenger_requests >= 100
                && f.champion_requests >= 100
            {
                break f.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no figures from Prometheus in 60 s: {f:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        server.abort();
        assert!(
            (figures.challenger_error_ratio - 0.1).abs() < 0.02,
            "10 % of the canary's answers failed: {figures:?}"
        );
        assert_eq!(
            figures.champion_error_ratio, 0.0,
            "the metrics route is not counted"
        );
        let p99 = figures.challenger_p99_seconds.expect("canary p99");
        assert!(
            p99 > 0.09 && p99 <= 0.1,
            "p99 from the bucket increases: {p99}"
        );
        let ratio = figures.champion_requests as f64 / figures.challenger_requests as f64;
        assert!(
            (ratio - 2.0).abs() < 0.3,
            "champion 100/s, canary 50/s: {figures:?}"
        );
        // The egress policy applies: a host it refuses is never queried.
        let refused = query_figures(
            &EgressPolicy::default(),
            &url,
            "team-a",
            "wine",
            RolloutStrategy::Canary,
            None,
            10,
        )
        .await;
        assert!(
            refused.is_err_and(|e| e.contains("127.0.0.1")),
            "loopback is denied by default"
        );
    }
}
