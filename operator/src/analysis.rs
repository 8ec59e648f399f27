//! The judgement of live analysis, pure: counter deltas → [`LiveFigures`] → a [`Judgement`]
//! against the spec's thresholds. No client, no clock: the elapsed time is an argument, so
//! every rule is a table test.
//!
//! Canary (per step): fail as soon as the thresholds are broken (errors beyond what even
//! `minRequests` answers could absorb; p99 or the online metric once there are enough
//! requests or labels); pass once `stepSeconds` passed with at least `minRequests` answers and
//! every threshold held; not enough traffic after 3 × `stepSeconds`. Shadow: judged once the
//! challenger answered `minRequests` mirrored requests; not enough traffic after
//! `maxDurationSeconds`.

use std::collections::{BTreeMap, BTreeSet};

use champion_api::{AnalysisSpec, CanarySpec, LiveFigures, OnlineMetric, ShadowSpec};

use crate::podmetrics::{
    Counters, KEY_ERRORS, KEY_REQUESTS, PREFIX_LATENCY, PREFIX_SHADOW, PREFIX_SHADOW_LATENCY,
    quantile,
};

/// What live analysis concludes from the figures so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// The step (or the shadow run) passed.
    Pass(String),
    /// A threshold is broken: abort.
    Fail(String),
    /// Not enough requests (or labels) within the time limit to judge.
    Insufficient(String),
    /// Not decided yet: what is awaited.
    Wait(String),
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// Online F1 (macro) or accuracy from (predicted, actual) → count; `None` without labels.
pub fn online_metric(
    metric: OnlineMetric,
    confusion: &BTreeMap<(String, String), f64>,
) -> Option<f64> {
    let total: f64 = confusion.values().sum();
    if total <= 0.0 {
        return None;
    }
    match metric {
        OnlineMetric::Accuracy => {
            let right: f64 = confusion
                .iter()
                .filter(|((p, a), _)| p == a)
                .map(|(_, n)| n)
                .sum();
            Some(right / total)
        }
        OnlineMetric::F1Macro => {
            let classes: BTreeSet<&String> = confusion.keys().flat_map(|(p, a)| [p, a]).collect();
            let mut sum = 0.0;
            for c in &classes {
                let tp = confusion
                    .get(&((*c).clone(), (*c).clone()))
                    .copied()
                    .unwrap_or(0.0);
                let predicted: f64 = confusion
                    .iter()
                    .filter(|((p, _), _)| p == *c)
                    .map(|(_, n)| n)
                    .sum();
                let actual: f64 = confusion
                    .iter()
                    .filter(|((_, a), _)| a == *c)
                    .map(|(_, n)| n)
                    .sum();
                let denom = predicted + actual;
                sum += if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
            }
            Some(sum / classes.len() as f64)
        }
    }
}

/// Canary figures from the step's counter deltas of the challenger's and the champion's pods.
pub fn canary_figures(
    challenger: &Counters,
    champion: &Counters,
    online: Option<OnlineMetric>,
) -> LiveFigures {
    let p99 = |c: &Counters| quantile(0.99, &c.buckets(PREFIX_LATENCY));
    let mut f = LiveFigures {
        challenger_requests: challenger.get(KEY_REQUESTS).round() as i64,
        challenger_error_ratio: ratio(challenger.get(KEY_ERRORS), challenger.get(KEY_REQUESTS)),
        challenger_p99_seconds: p99(challenger),
        champion_requests: champion.get(KEY_REQUESTS).round() as i64,
        champion_error_ratio: ratio(champion.get(KEY_ERRORS), champion.get(KEY_REQUESTS)),
        champion_p99_seconds: p99(champion),
        ..LiveFigures::default()
    };
    if let Some(metric) = online {
        let (cc, pc) = (challenger.confusion(), champion.confusion());
        f.challenger_online = online_metric(metric, &cc);
        f.challenger_labels = Some(cc.values().sum::<f64>().round() as i64);
        f.champion_online = online_metric(metric, &pc);
        f.champion_labels = Some(pc.values().sum::<f64>().round() as i64);
    }
    f
}

/// Shadow figures from the step's counter deltas of the champion's pods (they count the
/// mirrored requests and time the challenger's answers).
pub fn shadow_figures(champion: &Counters) -> LiveFigures {
    let r = |k: &str| champion.get(&format!("{PREFIX_SHADOW}{k}"));
    let answered = r("agree") + r("disagree") + r("error");
    LiveFigures {
        challenger_requests: answered.round() as i64,
        challenger_error_ratio: ratio(r("error"), answered),
        challenger_p99_seconds: quantile(0.99, &champion.buckets(PREFIX_SHADOW_LATENCY)),
        champion_requests: champion.get(KEY_REQUESTS).round() as i64,
        champion_error_ratio: ratio(champion.get(KEY_ERRORS), champion.get(KEY_REQUESTS)),
        champion_p99_seconds: quantile(0.99, &champion.buckets(PREFIX_LATENCY)),
        agreement: (r("agree") + r("disagree") > 0.0)
            .then(|| ratio(r("agree"), r("agree") + r("disagree"))),
        dropped: Some(r("dropped").round() as i64),
        ..LiveFigures::default()
    }
}

/// The figures in one line, for messages, history and Events.
pub fn describe(f: &LiveFigures) -> String {
    let secs =
        |s: Option<f64>| s.map_or_else(|| "n/a".to_string(), |s| format!("{:.1}ms", s * 1000.0));
    let mut out = format!(
        "challenger {} requests, {:.2}% errors, p99 {}; champion {} requests, {:.2}% errors, p99 {}",
        f.challenger_requests,
        f.challenger_error_ratio * 100.0,
        secs(f.challenger_p99_seconds),
        f.champion_requests,
        f.champion_error_ratio * 100.0,
        secs(f.champion_p99_seconds),
    );
    if let Some(a) = f.agreement {
        out.push_str(&format!("; agreement {:.1}%", a * 100.0));
    }
    if let Some(d) = f.dropped {
        out.push_str(&format!("; {d} mirrored requests dropped"));
    }
    if f.challenger_labels.is_some() {
        let m = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        out.push_str(&format!(
            "; online challenger {} ({} labels), champion {} ({} labels)",
            m(f.challenger_online),
            f.challenger_labels.unwrap_or(0),
            m(f.champion_online),
            f.champion_labels.unwrap_or(0)
        ));
    }
    out
}

/// The highest p99 the challenger may have: `maxLatencyRatio` × the champion's, never below
/// `latencyFloorSeconds`.
pub fn latency_limit(a: &AnalysisSpec, champion_p99: Option<f64>) -> f64 {
    let relative = champion_p99.map_or(0.0, |p| p * a.max_latency_ratio);
    relative.max(a.latency_floor_seconds)
}

/// Errors and latency of `answered` challenger requests against the thresholds: `Some(why)`
/// when broken. Errors fail early: once more failed than `maxErrorRatio` of
/// max(answered, `min_requests`), no later success can bring the ratio back.
fn broken(a: &AnalysisSpec, f: &LiveFigures, min_requests: i64) -> Option<String> {
    let answered = f.challenger_requests as f64;
    let errors = f.challenger_error_ratio * answered;
    if errors > a.max_error_ratio * answered.max(min_requests as f64) {
        return Some(format!(
            "error ratio {:.2}% over {} requests exceeds maxErrorRatio {:.2}%",
            f.challenger_error_ratio * 100.0,
            f.challenger_requests,
            a.max_error_ratio * 100.0
        ));
    }
    if f.challenger_requests >= min_requests
        && let Some(p99) = f.challenger_p99_seconds
    {
        let limit = latency_limit(a, f.champion_p99_seconds);
        if p99 > limit {
            return Some(format!(
                "p99 {:.1}ms exceeds the limit {:.1}ms (maxLatencyRatio {} × champion p99, at least latencyFloorSeconds {})",
                p99 * 1000.0,
                limit * 1000.0,
                a.max_latency_ratio,
                a.latency_floor_seconds
            ));
        }
    }
    None
}

/// The analysis of canary step `index` at `percent`: at 100 % after earlier steps the champion
/// serves no traffic and gets no labels, so the online comparison (made and passed at the
/// earlier steps, where both served) is not asked again; it would otherwise wait for champion
/// labels that cannot come and end as InsufficientTraffic.
pub fn step_analysis(a: &AnalysisSpec, index: usize, percent: i32) -> AnalysisSpec {
    let mut a = a.clone();
    if percent >= 100 && index > 0 {
        a.online = None;
    }
    a
}

/// One canary step, `elapsed` seconds after it started.
pub fn judge_canary(a: &AnalysisSpec, c: &CanarySpec, f: &LiveFigures, elapsed: f64) -> Judgement {
    let figures = describe(f);
    if let Some(why) = broken(a, f, c.min_requests) {
        return Judgement::Fail(format!("{why} ({figures})"));
    }
    let mut awaiting = Vec::new();
    if let Some(gate) = &a.online {
        let (cl, pl) = (
            f.challenger_labels.unwrap_or(0),
            f.champion_labels.unwrap_or(0),
        );
        if cl >= gate.min_samples && pl >= gate.min_samples {
            if let (Some(cm), Some(pm)) = (f.challenger_online, f.champion_online)
                && cm < pm
            {
                return Judgement::Fail(format!(
                    "online {:?} {cm:.4} is below the champion's {pm:.4} ({figures})",
                    gate.metric
                ));
            }
        } else {
            awaiting.push(format!(
                "{} labelled predictions each (challenger {cl}, champion {pl})",
                gate.min_samples
            ));
        }
    }
    if f.challenger_requests < c.min_requests {
        awaiting.insert(
            0,
            format!(
                "{} challenger requests (has {})",
                c.min_requests, f.challenger_requests
            ),
        );
    }
    let step = f64::from(c.step_seconds);
    if awaiting.is_empty() && elapsed >= step {
        return Judgement::Pass(format!("step passed: {figures}"));
    }
    if !awaiting.is_empty() && elapsed >= 3.0 * step {
        return Judgement::Insufficient(format!(
            "not enough traffic to judge after {elapsed:.0}s (3 × stepSeconds): awaiting {} ({figures})",
            awaiting.join(" and ")
        ));
    }
    let mut wait = Vec::new();
    if elapsed < step {
        wait.push(format!("{:.0}s more of the step", step - elapsed));
    }
    wait.extend(awaiting);
    Judgement::Wait(format!("awaiting {} ({figures})", wait.join(" and ")))
}

/// A shadow run, `elapsed` seconds after it started.
pub fn judge_shadow(a: &AnalysisSpec, s: &ShadowSpec, f: &LiveFigures, elapsed: f64) -> Judgement {
    let figures = describe(f);
    if let Some(why) = broken(a, f, s.min_requests) {
        return Judgement::Fail(format!("{why} ({figures})"));
    }
    if f.challenger_requests >= s.min_requests {
        let agreement = f.agreement.unwrap_or(0.0);
        if agreement < a.min_agreement {
            return Judgement::Fail(format!(
                "agreement {:.1}% is below minAgreement {:.1}% ({figures})",
                agreement * 100.0,
                a.min_agreement * 100.0
            ));
        }
        return Judgement::Pass(format!("shadow run passed: {figures}"));
    }
    if elapsed >= f64::from(s.max_duration_seconds) {
        return Judgement::Insufficient(format!(
            "only {} of minRequests {} mirrored requests answered within maxDurationSeconds {} ({figures})",
            f.challenger_requests, s.min_requests, s.max_duration_seconds
        ));
    }
    Judgement::Wait(format!(
        "awaiting {} mirrored answers (has {}) ({figures})",
        s.min_requests, f.challenger_requests
    ))
}

/// Replica counts (champion, canary) for a step of `percent` with the champion's `replicas`:
/// below 100 the champion keeps all its replicas and the canary gets the count nearest to
/// the percent (at least 1, at most the champion's); at 100 the canary gets them all and the
/// champion goes to 0 once `canary_ready` reached that count (not before: capacity never
/// drops).
pub fn canary_split(replicas: i32, percent: i32, canary_ready: i32) -> (i32, i32) {
    let replicas = replicas.max(1);
    if percent >= 100 {
        let champion = if canary_ready >= replicas {
            0
        } else {
            replicas
        };
        return (champion, replicas);
    }
    let p = f64::from(percent.clamp(1, 99));
    let canary = (f64::from(replicas) * p / (100.0 - p)).round() as i32;
    (replicas, canary.clamp(1, replicas))
}

/// The share of traffic the canary gets: its ready pods among all ready pods behind the
/// Service, in percent.
pub fn effective_percent(champion_ready: i32, canary_ready: i32) -> i32 {
    let total = champion_ready.max(0) + canary_ready.max(0);
    if total == 0 {
        return 0;
    }
    ((f64::from(canary_ready.max(0)) * 100.0 / f64::from(total)).round()) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use champion_api::OnlineGate;

    fn figures(req: i64, err: f64, p99: f64, champ_p99: f64) -> LiveFigures {
        LiveFigures {
            challenger_requests: req,
            challenger_error_ratio: err,
            challenger_p99_seconds: Some(p99),
            champion_requests: 1000,
            champion_error_ratio: 0.0,
            champion_p99_seconds: Some(champ_p99),
            ..LiveFigures::default()
        }
    }

    fn canary() -> CanarySpec {
        CanarySpec {
            steps: vec![10, 50, 100],
            step_seconds: 60,
            min_requests: 50,
        }
    }

    fn kind(j: &Judgement) -> &'static str {
        match j {
            Judgement::Pass(_) => "pass",
            Judgement::Fail(_) => "fail",
            Judgement::Insufficient(_) => "insufficient",
            Judgement::Wait(_) => "wait",
        }
    }

    #[test]
    fn canary_step_table() {
        let a = AnalysisSpec::default(); // 1 % errors, 2 × p99, floor 10 ms
        let c = canary();
        let cases = [
            // (requests, error ratio, p99, champion p99, elapsed) → verdict
            ((100, 0.0, 0.004, 0.002, 60.0), "pass"),
            ((100, 0.0, 0.004, 0.002, 59.0), "wait"),
            ((49, 0.0, 0.004, 0.002, 60.0), "wait"),
            ((49, 0.0, 0.004, 0.002, 180.0), "insufficient"),
            // 3 errors of 10 answers: even 50 answers could not bring it under 1 %: fail at once
            ((10, 0.3, 0.004, 0.002, 5.0), "fail"),
            // 1 error in 200 is 0.5 %: fine
            ((200, 0.005, 0.004, 0.002, 60.0), "pass"),
            // 2 % errors over 200: fail
            ((200, 0.02, 0.004, 0.002, 60.0), "fail"),
            // slow, but under the 10 ms floor: pass
            ((100, 0.0, 0.009, 0.001, 60.0), "pass"),
            // 50 ms against a 20 ms champion, limit 40 ms: fail before the step ends
            ((100, 0.0, 0.050, 0.020, 10.0), "fail"),
            // 35 ms against 20 ms: within 2 ×
            ((100, 0.0, 0.035, 0.020, 60.0), "pass"),
            // slow but too few requests to judge latency yet
            ((10, 0.0, 0.500, 0.002, 10.0), "wait"),
        ];
        for ((req, err, p99, cp99, elapsed), want) in cases {
            let j = judge_canary(&a, &c, &figures(req, err, p99, cp99), elapsed);
            assert_eq!(
                kind(&j),
                want,
                "{req} req, {err} err, p99 {p99}, {elapsed}s: {j:?}"
            );
        }
    }

    #[test]
    fn canary_online_gate_waits_for_labels_then_compares() {
        let a = AnalysisSpec {
            online: Some(OnlineGate {
                metric: OnlineMetric::Accuracy,
                min_samples: 100,
            }),
            ..AnalysisSpec::default()
        };
        let c = canary();
        let mut f = figures(100, 0.0, 0.004, 0.002);
        f.challenger_labels = Some(50);
        f.champion_labels = Some(500);
        f.challenger_online = Some(0.9);
        f.champion_online = Some(0.8);
        assert_eq!(kind(&judge_canary(&a, &c, &f, 60.0)), "wait");
        assert_eq!(kind(&judge_canary(&a, &c, &f, 180.0)), "insufficient");
        f.challenger_labels = Some(100);
        assert_eq!(kind(&judge_canary(&a, &c, &f, 60.0)), "pass");
        f.challenger_online = Some(0.7);
        let j = judge_canary(&a, &c, &f, 20.0);
        assert_eq!(kind(&j), "fail", "{j:?}");
    }

    #[test]
    fn the_online_gate_is_not_asked_again_at_100_percent_where_the_champion_gets_no_labels() {
        let a = AnalysisSpec {
            online: Some(OnlineGate {
                metric: OnlineMetric::Accuracy,
                min_samples: 40,
            }),
            ..AnalysisSpec::default()
        };
        let c = canary();
        let mut f = figures(100, 0.0, 0.004, 0.002);
        f.challenger_labels = Some(80);
        f.champion_labels = Some(0);
        f.challenger_online = Some(0.9);
        // Step 2 of [50, 100]: the champion is at 0 replicas, so it has no labels.
        let last = step_analysis(&a, 1, 100);
        assert!(last.online.is_none());
        assert_eq!(kind(&judge_canary(&last, &c, &f, 60.0)), "pass");
        assert_eq!(kind(&judge_canary(&a, &c, &f, 180.0)), "insufficient");
        // Earlier steps, and a canary whose only step is 100 %, keep the gate.
        assert!(step_analysis(&a, 0, 50).online.is_some());
        assert!(step_analysis(&a, 0, 100).online.is_some());
    }

    #[test]
    fn shadow_table() {
        let s = ShadowSpec {
            min_requests: 200,
            max_duration_seconds: 300,
            ..ShadowSpec::default()
        };
        let a = AnalysisSpec {
            min_agreement: 0.8,
            ..AnalysisSpec::default()
        };
        let with = |req: i64, err: f64, agree: f64| LiveFigures {
            agreement: Some(agree),
            ..figures(req, err, 0.003, 0.002)
        };
        assert_eq!(
            kind(&judge_shadow(&a, &s, &with(250, 0.0, 0.9), 10.0)),
            "pass"
        );
        assert_eq!(
            kind(&judge_shadow(&a, &s, &with(250, 0.0, 0.7), 10.0)),
            "fail"
        );
        assert_eq!(
            kind(&judge_shadow(&a, &s, &with(100, 0.0, 0.9), 10.0)),
            "wait"
        );
        assert_eq!(
            kind(&judge_shadow(&a, &s, &with(100, 0.0, 0.9), 300.0)),
            "insufficient"
        );
        assert_eq!(
            kind(&judge_shadow(&a, &s, &with(100, 0.5, 0.9), 10.0)),
            "fail"
        );
    }

    #[test]
    fn figures_from_counter_deltas() {
        let counters = |pairs: &[(&str, f64)]| {
            Counters(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
        };
        let challenger = counters(&[
            ("req", 200.0),
            ("err", 2.0),
            ("lat|0.01", 100.0),
            ("lat|0.1", 200.0),
            ("lat|+Inf", 200.0),
            ("cm|a|a", 8.0),
            ("cm|b|a", 2.0),
        ]);
        let champion = counters(&[("req", 800.0), ("lat|0.01", 800.0), ("lat|+Inf", 800.0)]);
        let f = canary_figures(&challenger, &champion, Some(OnlineMetric::Accuracy));
        assert_eq!(f.challenger_requests, 200);
        assert!((f.challenger_error_ratio - 0.01).abs() < 1e-12);
        assert!(
            f.challenger_p99_seconds
                .is_some_and(|p| p > 0.09 && p <= 0.1)
        );
        assert_eq!(f.champion_error_ratio, 0.0);
        assert_eq!(f.challenger_online, Some(0.8));
        assert_eq!(f.challenger_labels, Some(10));
        assert_eq!(f.champion_online, None);
        let shadow = counters(&[
            ("shadow|agree", 90.0),
            ("shadow|disagree", 5.0),
            ("shadow|error", 5.0),
            ("shadow|dropped", 3.0),
            ("shlat|0.01", 100.0),
            ("shlat|+Inf", 100.0),
        ]);
        let f = shadow_figures(&shadow);
        assert_eq!(f.challenger_requests, 100);
        assert!((f.challenger_error_ratio - 0.05).abs() < 1e-12);
        assert!(f.agreement.is_some_and(|a| (a - 90.0 / 95.0).abs() < 1e-12));
        assert_eq!(f.dropped, Some(3));
    }

    #[test]
    fn f1_macro_of_a_confusion_matrix() {
        // a: tp 8, predicted 9, actual 10 → 16/19; b: tp 1, predicted 3, actual 2 → 2/5
        let cm = BTreeMap::from([
            (("a".to_string(), "a".to_string()), 8.0),
            (("a".to_string(), "b".to_string()), 1.0),
            (("b".to_string(), "a".to_string()), 2.0),
            (("b".to_string(), "b".to_string()), 1.0),
        ]);
        let f1 = online_metric(OnlineMetric::F1Macro, &cm).expect("f1");
        assert!((f1 - (16.0 / 19.0 + 2.0 / 5.0) / 2.0).abs() < 1e-12, "{f1}");
        assert_eq!(
            online_metric(OnlineMetric::Accuracy, &BTreeMap::new()),
            None
        );
    }

    #[test]
    fn replica_split_and_effective_share() {
        assert_eq!(canary_split(2, 10, 0), (2, 1));
        assert_eq!(canary_split(2, 50, 0), (2, 2));
        assert_eq!(canary_split(4, 10, 0), (4, 1));
        assert_eq!(canary_split(9, 10, 0), (9, 1));
        assert_eq!(canary_split(1, 90, 0), (1, 1));
        // The last step: the champion stays until the canary has all replicas ready.
        assert_eq!(canary_split(2, 100, 1), (2, 2));
        assert_eq!(canary_split(2, 100, 2), (0, 2));
        assert_eq!(effective_percent(2, 1), 33);
        assert_eq!(effective_percent(9, 1), 10);
        assert_eq!(effective_percent(0, 2), 100);
        assert_eq!(effective_percent(0, 0), 0);
    }
}
