//! Settings from the environment (the Deployment the operator writes sets them).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why the process cannot start with the given environment.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(
        "MODEL_URI is not set; expected the model version directory, e.g. s3://models/wine/v3/"
    )]
    MissingModelUri,
    #[error("{name}={value:?} is not valid: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The version directory holding `model.json` (and optionally `report.json`).
    pub model_uri: String,
    /// The name in `/v1/models/{name}` and `/v2/models/{name}`; defaults to the model's own.
    pub model_name: Option<String>,
    /// MODEL_SHA256: the hex SHA-256 model.json's bytes must have (the operator sets it from the
    /// run's report); a model with other bytes is refused.
    pub model_sha256: Option<String>,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long to keep serving after SIGTERM with readiness failed, so that endpoint removal
    /// reaches every proxy before the listener closes. The images have no shell for a preStop
    /// sleep, so the wait lives here.
    pub drain_delay: Duration,
    /// SHUTDOWN_QUIET_SECONDS (default 1): after the drain delay, keep accepting while new
    /// connections still arrive, and close the listener only once none has come for this long
    /// (bounded by the grace period). A proxy that is late with the endpoint removal then still
    /// reaches a live pod instead of a closed port or, once the pod is gone, no host at all.
    /// 0 closes the listener right after the drain delay.
    pub drain_quiet: Duration,
    /// Total time from SIGTERM to exit, drain delay included; keep it below the pod's
    /// terminationGracePeriodSeconds.
    pub grace: Duration,
    pub worker_threads: usize,
    /// REQUEST_TIMEOUT_SECONDS (default 10): from a request's headers to its complete body;
    /// slower bodies get 408 and their connection is closed.
    pub request_timeout: Duration,
    /// HEADER_TIMEOUT_SECONDS (default 30): to send request headers, and the idle time of a
    /// keep-alive connection between requests.
    pub header_timeout: Duration,
    /// MAX_CONNECTIONS (default 10000): open connections at most; more wait in the listen
    /// backlog. The process raises its open-file limit to the hard limit at start.
    pub max_connections: usize,
    /// DRIFT_TRACKING, DRIFT_MIN_ROWS (drift.rs).
    pub drift: crate::drift::DriftSettings,
    /// FEEDBACK_CAPACITY, FEEDBACK_WINDOW (feedback.rs).
    pub feedback: crate::feedback::FeedbackSettings,
    /// SHADOW_URL and friends: mirror a share of the prediction requests to a challenger.
    pub shadow: Option<ShadowConfig>,
}

/// Where and how much to mirror (see `crate::shadow`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// SHADOW_URL: `http://host[:port]`; the mirrored request keeps its path and query.
    pub authority: http::uri::Authority,
    /// SHADOW_PERCENT (0-100, default 100): the share of successful prediction requests mirrored.
    pub percent: f64,
    /// SHADOW_QUEUE (default 1024): mirrored requests waiting at most; beyond, they are dropped.
    pub queue: usize,
    /// SHADOW_CONCURRENCY (default 8): mirrored requests in flight at most.
    pub concurrency: usize,
    /// SHADOW_TIMEOUT_SECONDS (default 2): the challenger's whole answer, or the request is an error.
    pub timeout: Duration,
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            value: v,
            expected,
        }),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let model_uri = get("MODEL_URI")
            .filter(|s| !s.trim().is_empty())
            .ok_or(ConfigError::MissingModelUri)?;
        let model_name = get("MODEL_NAME").filter(|s| !s.trim().is_empty());
        if let Some(name) = &model_name
            && (name.contains('/') || name.contains(':') || name.trim() != name)
        {
            return Err(ConfigError::Invalid {
                name: "MODEL_NAME",
                value: name.clone(),
                expected: "a name without '/', ':' or surrounding spaces (it is a URL segment)",
            });
        }
        let model_sha256 = get("MODEL_SHA256")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(digest) = &model_sha256
            && !champion_model::is_sha256_hex(digest)
        {
            return Err(ConfigError::Invalid {
                name: "MODEL_SHA256",
                value: digest.clone(),
                expected: "a hex SHA-256 digest (64 lowercase hex digits)",
            });
        }
        let port: u16 = parse(&get, "PORT", 8080, "a TCP port 0-65535")?;
        let host: IpAddr = parse(
            &get,
            "BIND_ADDRESS",
            IpAddr::from([0, 0, 0, 0]),
            "an IP address",
        )?;
        let max_body_bytes: usize = parse(&get, "MAX_BODY_BYTES", 1024 * 1024, "a byte count")?;
        if max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_BODY_BYTES",
                value: "0".into(),
                expected: "a positive byte count",
            });
        }
        let drain: f64 = parse(&get, "SHUTDOWN_DRAIN_SECONDS", 5.0, "seconds")?;
        let grace: f64 = parse(&get, "SHUTDOWN_GRACE_SECONDS", 25.0, "seconds")?;
        let seconds = |name, v: f64| {
            if v.is_finite() && (0.0..=3600.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(ConfigError::Invalid {
                    name,
                    value: v.to_string(),
                    expected: "seconds between 0 and 3600",
                })
            }
        };
        let drain_delay = seconds("SHUTDOWN_DRAIN_SECONDS", drain)?;
        let quiet: f64 = parse(&get, "SHUTDOWN_QUIET_SECONDS", 1.0, "seconds")?;
        let drain_quiet = seconds("SHUTDOWN_QUIET_SECONDS", quiet)?;
        let grace = seconds("SHUTDOWN_GRACE_SECONDS", grace)?;
        let positive_seconds =
            |name: &'static str, default: f64| -> Result<Duration, ConfigError> {
                let v: f64 = parse(&get, name, default, "seconds")?;
                if v.is_finite() && v > 0.0 && v <= 3600.0 {
                    Ok(Duration::from_secs_f64(v))
                } else {
                    Err(ConfigError::Invalid {
                        name,
                        value: v.to_string(),
                        expected: "seconds, more than 0 and at most 3600",
                    })
                }
            };
        let request_timeout = positive_seconds("REQUEST_TIMEOUT_SECONDS", 10.0)?;
        let header_timeout = positive_seconds("HEADER_TIMEOUT_SECONDS", 30.0)?;
        let max_connections: usize = parse(&get, "MAX_CONNECTIONS", 10_000, "a connection count")?;
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_CONNECTIONS",
                value: "0".into(),
                expected: "a positive connection count",
            });
        }
        let shadow = shadow_config(&get)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads: usize = parse(&get, "WORKER_THREADS", cores, "a thread count")?;
        Ok(Config {
            model_uri,
            model_name,
            model_sha256,
            listen: SocketAddr::new(host, port),
            max_body_bytes,
            drain_delay: drain_delay.min(grace),
            drain_quiet: drain_quiet.min(grace),
            grace,
            worker_threads: worker_threads.max(1),
            request_timeout,
            header_timeout,
            max_connections,
            shadow,
            drift: crate::drift::DriftSettings::from_lookup(&get)?,
            feedback: crate::feedback::FeedbackSettings::from_lookup(&get)?,
        })
    }
}

/// The `SHADOW_*` settings; `None` without SHADOW_URL (the others are then not read).
fn shadow_config(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<ShadowConfig>, ConfigError> {
    let Some(url) = get("SHADOW_URL").filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let authority = shadow_authority(url.trim()).map_err(|expected| ConfigError::Invalid {
        name: "SHADOW_URL",
        value: url.clone(),
        expected,
    })?;
    let invalid = |name: &'static str, value: String, expected: &'static str| {
        Err(ConfigError::Invalid {
            name,
            value,
            expected,
        })
    };
    let percent: f64 = parse(get, "SHADOW_PERCENT", 100.0, "a percentage from 0 to 100")?;
    if !(0.0..=100.0).contains(&percent) {
        return invalid(
            "SHADOW_PERCENT",
            percent.to_string(),
            "a percentage from 0 to 100",
        );
    }
    let queue: usize = parse(get, "SHADOW_QUEUE", 1024, "a queue capacity (1-1000000)")?;
    if !(1..=1_000_000).contains(&queue) {
        return invalid(
            "SHADOW_QUEUE",
            queue.to_string(),
            "a queue capacity (1-1000000)",
        );
    }
    let concurrency: usize = parse(get, "SHADOW_CONCURRENCY", 8, "a request count (1-1024)")?;
    if !(1..=1024).contains(&concurrency) {
        return invalid(
            "SHADOW_CONCURRENCY",
            concurrency.to_string(),
            "a request count (1-1024)",
        );
    }
    let timeout: f64 = parse(
        get,
        "SHADOW_TIMEOUT_SECONDS",
        2.0,
        "seconds, more than 0 and at most 3600",
    )?;
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0) {
        return invalid(
            "SHADOW_TIMEOUT_SECONDS",
            timeout.to_string(),
            "seconds, more than 0 and at most 3600",
        );
    }
    Ok(Some(ShadowConfig {
        authority,
        percent,
        queue,
        concurrency,
        timeout: Duration::from_secs_f64(timeout),
    }))
}

const SHADOW_URL_EXPECTED: &str = "an http:// base URL with a host and an optional port, e.g. http://wine-predictor-shadow.ml.svc:8080 (no user info, path, query or https)";

/// `http://host[:port]` with at most a trailing `/`.
fn shadow_authority(url: &str) -> Result<http::uri::Authority, &'static str> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(SHADOW_URL_EXPECTED);
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['@', '/', '?', '#']) {
        return Err(SHADOW_URL_EXPECTED);
    }
    let parsed: http::uri::Authority = authority.parse().map_err(|_| SHADOW_URL_EXPECTED)?;
    // `Authority` accepts any text after the host's ':'; the port must be a TCP port.
    let has_port = parsed.as_str().len() > parsed.host().len();
    if parsed.host().is_empty() || (has_port && parsed.port_u16().is_none()) {
        return Err(SHADOW_URL_EXPECTED);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("MODEL_URI", "file:///m/v1/")]).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.model_name, None);
        assert_eq!(c.grace, Duration::from_secs(25));
        assert_eq!(c.drain_quiet, Duration::from_secs(1));
        assert!(c.worker_threads >= 1);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 10_000);
        assert!(c.drift.enabled);
        assert_eq!(c.drift.min_rows, 100);
        assert_eq!(c.feedback.capacity, 100_000);
        assert_eq!(c.feedback.window, 10_000);
        let c = cfg(&[
            ("MODEL_URI", "file:///m/v1/"),
            ("REQUEST_TIMEOUT_SECONDS", "2.5"),
            ("HEADER_TIMEOUT_SECONDS", "5"),
            ("MAX_CONNECTIONS", "64"),
        ])
        .unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(2500));
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections, 64);
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        assert_eq!(cfg(&[]), Err(ConfigError::MissingModelUri));
        for (k, v) in [
            ("PORT", "http"),
            ("PORT", "70000"),
            ("MAX_BODY_BYTES", "0"),
            ("SHUTDOWN_GRACE_SECONDS", "-1"),
            ("BIND_ADDRESS", "nowhere"),
            ("MODEL_NAME", "a/b"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "soon"),
            ("HEADER_TIMEOUT_SECONDS", "-3"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "many"),
            ("SHADOW_URL", "https://challenger:8080"),
            ("DRIFT_TRACKING", "sometimes"),
            ("DRIFT_MIN_ROWS", "0"),
            ("FEEDBACK_CAPACITY", "all"),
            ("FEEDBACK_WINDOW", "0"),
        ] {
            match cfg(&[("MODEL_URI", "file:///m/"), (k, v)]) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn shadow_settings_default_and_parse() {
        assert_eq!(cfg(&[("MODEL_URI", "file:///m/")]).unwrap().shadow, None);
        // The other SHADOW_* settings are not read without SHADOW_URL.
        let c = cfg(&[("MODEL_URI", "file:///m/"), ("SHADOW_PERCENT", "x")]).unwrap();
        assert_eq!(c.shadow, None);
        let s = cfg(&[
            ("MODEL_URI", "file:///m/"),
            ("SHADOW_URL", "http://wine-predictor-shadow.ml.svc:8080/"),
        ])
        .unwrap()
        .shadow
        .unwrap();
        assert_eq!(s.authority.host(), "wine-predictor-shadow.ml.svc");
        assert_eq!(s.authority.port_u16(), Some(8080));
        assert_eq!(s.percent, 100.0);
        assert_eq!(s.queue, 1024);
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.timeout, Duration::from_secs(2));
        let s = cfg(&[
            ("MODEL_URI", "file:///m/"),
            ("SHADOW_URL", "http://10.0.0.7"),
            ("SHADOW_PERCENT", "12.5"),
            ("SHADOW_QUEUE", "4"),
            ("SHADOW_CONCURRENCY", "2"),
            ("SHADOW_TIMEOUT_SECONDS", "0.5"),
        ])
        .unwrap()
        .shadow
        .unwrap();
        assert_eq!(s.authority.as_str(), "10.0.0.7");
        assert_eq!(
            (s.percent, s.queue, s.concurrency, s.timeout),
            (12.5, 4, 2, Duration::from_millis(500))
        );
        let s = cfg(&[
            ("MODEL_URI", "file:///m/"),
            ("SHADOW_URL", "http://[::1]:9000"),
        ]);
        assert_eq!(s.unwrap().shadow.unwrap().authority.port_u16(), Some(9000));
    }

    #[test]
    fn shadow_settings_refuse_bad_values_with_what_was_expected() {
        for url in [
            "https://challenger:8080",
            "challenger:8080",
            "ftp://challenger",
            "http://",
            "http://user:secret@challenger:8080",
            "http://challenger:8080/v2",
            "http://challenger:8080?x=1",
            "http://challenger:8080#f",
            "http://challenger:port",
            "http://challenger:",
            "http://challenger:99999",
            "http://chal lenger",
        ] {
            match cfg(&[("MODEL_URI", "file:///m/"), ("SHADOW_URL", url)]) {
                Err(ConfigError::Invalid {
                    name: "SHADOW_URL",
                    expected,
                    ..
                }) => assert!(expected.contains("http:// base URL"), "{url}: {expected}"),
                other => panic!("SHADOW_URL={url}: {other:?}"),
            }
        }
        for (k, v) in [
            ("SHADOW_PERCENT", "101"),
            ("SHADOW_PERCENT", "-1"),
            ("SHADOW_PERCENT", "half"),
            ("SHADOW_PERCENT", "NaN"),
            ("SHADOW_QUEUE", "0"),
            ("SHADOW_QUEUE", "-5"),
            ("SHADOW_CONCURRENCY", "0"),
            ("SHADOW_CONCURRENCY", "100000"),
            ("SHADOW_TIMEOUT_SECONDS", "0"),
            ("SHADOW_TIMEOUT_SECONDS", "inf"),
        ] {
            match cfg(&[
                ("MODEL_URI", "file:///m/"),
                ("SHADOW_URL", "http://127.0.0.1:9"),
                (k, v),
            ]) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, k, "{k}={v}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        let e = cfg(&[("MODEL_URI", "file:///m/"), ("SHADOW_URL", "https://x")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SHADOW_URL=\"https://x\" is not valid: expected an http:// base URL"),
            "{e}"
        );
    }
}
