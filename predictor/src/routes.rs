//! URL → route matching without a framework: the route set is small and fixed, and a `match`
//! on path segments costs nothing per request.

use http::Method;

/// Every route the predictor answers; also the bounded `route` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Predict,
    V1Predict,
    V1Model,
    V2Server,
    V2Live,
    V2Ready,
    V2Model,
    V2ModelReady,
    V2Infer,
    Healthz,
    Readyz,
    Metrics,
    /// `POST /feedback`: true labels for past predictions (feedback.rs).
    Feedback,
    /// No route matched; counted so that scanners and typos show up in the metrics.
    Unknown,
}

impl Route {
    pub const ALL: [Route; 14] = [
        Route::Predict,
        Route::V1Predict,
        Route::V1Model,
        Route::V2Server,
        Route::V2Live,
        Route::V2Ready,
        Route::V2Model,
        Route::V2ModelReady,
        Route::V2Infer,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Feedback,
        Route::Unknown,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label: a fixed string per route, never the raw path.
    pub fn label(self) -> &'static str {
        match self {
            Route::Predict => "predict",
            Route::V1Predict => "v1_predict",
            Route::V1Model => "v1_model",
            Route::V2Server => "v2_server",
            Route::V2Live => "v2_live",
            Route::V2Ready => "v2_ready",
            Route::V2Model => "v2_model",
            Route::V2ModelReady => "v2_model_ready",
            Route::V2Infer => "v2_infer",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Feedback => "feedback",
            Route::Unknown => "unknown",
        }
    }

    /// The one method each route accepts (HEAD is not special-cased: no probe uses it).
    pub fn method(self) -> Option<Method> {
        match self {
            Route::Predict | Route::V1Predict | Route::V2Infer | Route::Feedback => {
                Some(Method::POST)
            }
            Route::Unknown => None,
            _ => Some(Method::GET),
        }
    }

    /// Routes whose request body is a JSON document to validate.
    pub fn takes_body(self) -> bool {
        matches!(self, Route::Predict | Route::V1Predict | Route::V2Infer)
    }

    /// Routes whose errors follow the Open Inference Protocol shape (`{"error": "…"}` only).
    pub fn is_v2(self) -> bool {
        matches!(
            self,
            Route::V2Server
                | Route::V2Live
                | Route::V2Ready
                | Route::V2Model
                | Route::V2ModelReady
                | Route::V2Infer
        )
    }
}

/// A matched path: the route plus the model name and version the URL asks for, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub route: Route,
    pub model_name: Option<&'a str>,
    pub model_version: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn plain(route: Route) -> Self {
        Target {
            route,
            model_name: None,
            model_version: None,
        }
    }
}

/// Matches a request path (without the query string) to a route.
pub fn match_path(path: &str) -> Target<'_> {
    match path {
        "/predict" | "/predict/" => return Target::plain(Route::Predict),
        "/healthz" => return Target::plain(Route::Healthz),
        "/readyz" => return Target::plain(Route::Readyz),
        "/metrics" => return Target::plain(Route::Metrics),
        "/feedback" | "/feedback/" => return Target::plain(Route::Feedback),
        "/v2" | "/v2/" => return Target::plain(Route::V2Server),
        "/v2/health/live" => return Target::plain(Route::V2Live),
        "/v2/health/ready" => return Target::plain(Route::V2Ready),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        return match_v1(rest);
    }
    if let Some(rest) = path.strip_prefix("/v2/models/") {
        return match_v2(rest);
    }
    Target::plain(Route::Unknown)
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

fn match_v1(rest: &str) -> Target<'_> {
    let (name, route) = match rest.strip_suffix(":predict") {
        Some(name) => (name, Route::V1Predict),
        None => (rest, Route::V1Model),
    };
    if !valid_segment(name) {
        return Target::plain(Route::Unknown);
    }
    Target {
        route,
        model_name: Some(name),
        model_version: None,
    }
}

fn match_v2(rest: &str) -> Target<'_> {
    let mut parts = rest.split('/');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Target::plain(Route::Unknown);
    }
    let mut version = None;
    let mut next = parts.next();
    if next == Some("versions") {
        match parts.next() {
            Some(v) if !v.is_empty() => version = Some(v),
            _ => return Target::plain(Route::Unknown),
        }
        next = parts.next();
    }
    let route = match next {
        None => Route::V2Model,
        Some("ready") => Route::V2ModelReady,
        Some("infer") => Route::V2Infer,
        Some(_) => return Target::plain(Route::Unknown),
    };
    if parts.next().is_some() {
        return Target::plain(Route::Unknown);
    }
    Target {
        route,
        model_name: Some(name),
        model_version: version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_every_documented_path() {
        let cases: &[(&str, Route, Option<&str>, Option<&str>)] = &[
            ("/predict", Route::Predict, None, None),
            ("/predict/", Route::Predict, None, None),
            ("/healthz", Route::Healthz, None, None),
            ("/readyz", Route::Readyz, None, None),
            ("/metrics", Route::Metrics, None, None),
            ("/feedback", Route::Feedback, None, None),
            ("/v2", Route::V2Server, None, None),
            ("/v2/health/live", Route::V2Live, None, None),
            ("/v2/health/ready", Route::V2Ready, None, None),
            (
                "/v1/models/wine:predict",
                Route::V1Predict,
                Some("wine"),
                None,
            ),
            ("/v1/models/wine", Route::V1Model, Some("wine"), None),
            ("/v2/models/wine", Route::V2Model, Some("wine"), None),
            (
                "/v2/models/wine/ready",
                Route::V2ModelReady,
                Some("wine"),
                None,
            ),
            ("/v2/models/wine/infer", Route::V2Infer, Some("wine"), None),
            (
                "/v2/models/wine/versions/v3/infer",
                Route::V2Infer,
                Some("wine"),
                Some("v3"),
            ),
            (
                "/v2/models/wine/versions/v3",
                Route::V2Model,
                Some("wine"),
                Some("v3"),
            ),
        ];
        for (path, route, name, version) in cases {
            let t = match_path(path);
            assert_eq!(t.route, *route, "{path}");
            assert_eq!(t.model_name, *name, "{path}");
            assert_eq!(t.model_version, *version, "{path}");
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for path in [
            "/",
            "",
            "/predictx",
            "/v1/models/",
            "/v1/models/:predict",
            "/v1/models/a/b",
            "/v2/models/",
            "/v2/models//infer",
            "/v2/models/wine/infer/extra",
            "/v2/models/wine/versions",
            "/v2/models/wine/versions//infer",
            "/v2/models/wine/explain",
        ] {
            assert_eq!(match_path(path).route, Route::Unknown, "{path}");
        }
    }

    #[test]
    fn route_labels_are_unique_and_indices_dense() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = Route::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Route::ALL.len());
    }
}
