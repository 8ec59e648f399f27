//! Ground-truth feedback: the pod remembers the predicted classes of its last
//! `FEEDBACK_CAPACITY` rows by request id, and `POST /feedback` joins true labels to them.
//!
//! - Every prediction response carries `x-request-id`: the caller's when it is a valid id (at
//!   most 64 characters of `[A-Za-z0-9._:-]`), else one the pod made ([`valid_request_id`]).
//! - Memory is bounded whatever clients send: a ring of `FEEDBACK_CAPACITY` predicted classes
//!   (u32 each), and per remembered request one small entry keyed by a keyed 64-bit hash of its
//!   id (ids themselves are not stored). The oldest rows are forgotten first; a request whose
//!   rows are partly overwritten is forgotten whole. A request with more rows than the capacity
//!   is not remembered. A caller that reuses an id reaches its newest prediction.
//! - `POST /feedback` `{"requestId": "...", "labels": [...]}` (one true label per predicted
//!   row, in order) or `{"requestId": "...", "label": ...}` (a single row). Labels are the
//!   model's class labels as the predict answers show them (strings; a number is accepted for a
//!   label that reads as that number). Answers: 200 matched, 400 invalid (with what was
//!   expected), 404 unknown or forgotten id, 409 feedback already received for that id.
//! - Metrics: `predictor_feedback_total{result}` (matched, unknown_id, invalid, duplicate),
//!   `predictor_feedback_confusion_total{actual,predicted}` (cumulative, pre-created for the
//!   model's classes, up to [`MAX_CONFUSION_CLASSES`]), and over the last `FEEDBACK_WINDOW`
//!   labelled rows `predictor_online_f1_macro`, `predictor_online_accuracy` (computed with
//!   champion-model's `Metrics`, exactly as the trainer's offline figures) and
//!   `predictor_online_labels`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::config::ConfigError;
use crate::drift::{escape_label, prom_f64};
use crate::model::ServedModel;

/// Longest request id accepted from a caller.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Models with more classes than this have no per-cell confusion series (k² series).
pub const MAX_CONFUSION_CLASSES: usize = 50;

/// Whether a caller's `x-request-id` is used as it is: 1 to 64 characters of
/// `[A-Za-z0-9._:-]`.
pub fn valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `FEEDBACK_CAPACITY` and `FEEDBACK_WINDOW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackSettings {
    /// Predicted rows remembered for feedback; 0 turns feedback off.
    pub capacity: usize,
    /// Labelled rows the online F1 and accuracy are computed over.
    pub window: usize,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            capacity: 100_000,
            window: 10_000,
        }
    }
}

impl FeedbackSettings {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = FeedbackSettings::default();
        let count = |name: &'static str, min: usize, expected: &'static str| match get(name)
            .filter(|v| !v.trim().is_empty())
        {
            None => Ok(None),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (min..=100_000_000).contains(&n) => Ok(Some(n)),
                _ => Err(ConfigError::Invalid {
                    name,
                    value: v,
                    expected,
                }),
            },
        };
        if let Some(n) = count(
            "FEEDBACK_CAPACITY",
            0,
            "a row count from 0 (feedback off) to 100000000",
        )? {
            s.capacity = n;
        }
        if let Some(n) = count("FEEDBACK_WINDOW", 1, "a row count from 1 to 100000000")? {
            s.window = n;
        }
        Ok(s)
    }
}

/// The outcome classes of `POST /feedback`, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackResult {
    Matched,
    UnknownId,
    Invalid,
    Duplicate,
}

impl FeedbackResult {
    pub const ALL: [FeedbackResult; 4] = [
        FeedbackResult::Matched,
        FeedbackResult::UnknownId,
        FeedbackResult::Invalid,
        FeedbackResult::Duplicate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FeedbackResult::Matched => "matched",
            FeedbackResult::UnknownId => "unknown_id",
            FeedbackResult::Invalid => "invalid",
            FeedbackResult::Duplicate => "duplicate",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            FeedbackResult::Matched => StatusCode::OK,
            FeedbackResult::UnknownId => StatusCode::NOT_FOUND,
            FeedbackResult::Invalid => StatusCode::BAD_REQUEST,
            FeedbackResult::Duplicate => StatusCode::CONFLICT,
        }
    }
}

/// A refused feedback: the status and the message for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

struct Entry {
    hash: u64,
    /// Absolute position of the request's first row.
    start: u64,
    len: u32,
    answered: bool,
}

struct Inner {
    /// Predicted classes; absolute row `r` is at `r % capacity` (grown up to the capacity).
    ring: Vec<u32>,
    /// Rows remembered since start (the next absolute row position).
    head: u64,
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    index: HashMap<u64, u64>,
    /// (true, predicted) of the last `window` labelled rows.
    window: VecDeque<(u32, u32)>,
    /// `window_cm[true * k + predicted]` over `window`.
    window_cm: Vec<u64>,
}

/// The feedback store and its counters.
pub struct Feedback {
    settings: FeedbackSettings,
    k: usize,
    class_labels: Vec<String>,
    /// Label values escaped for the metrics, one per class.
    label_values: Vec<String>,
    by_name: HashMap<String, u32>,
    /// The number each label reads as, when it does.
    numeric: Vec<Option<f64>>,
    hasher: std::collections::hash_map::RandomState,
    inner: Mutex<Inner>,
    results: [AtomicU64; 4],
    /// Cumulative `confusion[true * k + predicted]`.
    confusion: Box<[AtomicU64]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    request_id: String,
    #[serde(default)]
    labels: Option<Vec<Value>>,
    #[serde(default)]
    label: Option<Value>,
}

const SHAPE: &str = r#"expected {"requestId": "<the x-request-id of the prediction>", "labels": [<one true label per predicted row>]} or {"requestId": "...", "label": <the true label>}"#;

impl Feedback {
    pub fn new(class_labels: &[String], settings: FeedbackSettings) -> Self {
        let k = class_labels.len();
        Feedback {
            settings,
            k,
            class_labels: class_labels.to_vec(),
            label_values: class_labels.iter().map(|l| escape_label(l)).collect(),
            by_name: class_labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i as u32))
                .collect(),
            numeric: class_labels
                .iter()
                .map(|l| l.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            inner: Mutex::new(Inner {
                ring: Vec::new(),
                head: 0,
                entries: VecDeque::new(),
                first_seq: 0,
                index: HashMap::new(),
                window: VecDeque::new(),
                window_cm: vec![0; k * k],
            }),
            results: std::array::from_fn(|_| AtomicU64::new(0)),
            confusion: (0..k * k).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough counters; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, r: FeedbackResult) {
        self.results[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a feedback request refused before its body reached [`Feedback::receive`]
    /// (too large, wrong media type, too slow).
    pub fn count_invalid(&self) {
        self.count(FeedbackResult::Invalid);
    }

    /// Remembers the predicted classes of one answered request.
    pub fn remember(&self, request_id: &str, classes: &[u32]) {
        let cap = self.settings.capacity;
        if cap == 0
            || classes.is_empty()
            || classes.len() > cap
            || classes.len() > u32::MAX as usize
        {
            return;
        }
        let hash = self.hasher.hash_one(request_id);
        let mut g = self.lock();
        let inner = &mut *g;
        let start = inner.head;
        for (i, &c) in classes.iter().enumerate() {
            let pos = ((start + i as u64) % cap as u64) as usize;
            if pos < inner.ring.len() {
                inner.ring[pos] = c;
            } else {
                inner.ring.push(c);
            }
        }
        inner.head += classes.len() as u64;
        let seq = inner.first_seq + inner.entries.len() as u64;
        inner.entries.push_back(Entry {
            hash,
            start,
            len: classes.len() as u32,
            answered: false,
        });
        inner.index.insert(hash, seq);
        while let Some(front) = inner.entries.front() {
            if front.start + cap as u64 >= inner.head {
                break;
            }
            if inner.index.get(&front.hash) == Some(&inner.first_seq) {
                inner.index.remove(&front.hash);
            }
            inner.entries.pop_front();
            inner.first_seq += 1;
        }
    }

    fn label_index(&self, v: &Value) -> Result<u32, String> {
        let known = || format!("the model's class labels are {:?}", self.class_labels);
        match v {
            Value::String(s) => self
                .by_name
                .get(s.as_str())
                .copied()
                .ok_or_else(|| format!("unknown label {s:?}; {}", known())),
            Value::Number(n) => {
                let text = n.to_string();
                if let Some(&i) = self.by_name.get(&text) {
                    return Ok(i);
                }
                let x = n.as_f64();
                self.numeric
                    .iter()
                    .position(|l| l.is_some() && *l == x)
                    .map(|i| i as u32)
                    .ok_or_else(|| format!("unknown label {text}; {}", known()))
            }
            other => Err(format!(
                "a label must be a string or a number, got {other}; {}",
                known()
            )),
        }
    }

    /// Handles a `POST /feedback` body: the JSON answer, or the refusal. Counts the outcome.
    pub fn receive(&self, model: &ServedModel, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let (result, outcome) = self.receive_inner(model, body);
        self.count(result);
        outcome.map_err(|message| Refusal {
            status: result.status(),
            message,
        })
    }

    fn receive_inner(
        &self,
        model: &ServedModel,
        body: &[u8],
    ) -> (FeedbackResult, Result<Vec<u8>, String>) {
        let invalid = |m: String| (FeedbackResult::Invalid, Err(m));
        let parsed: Body = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return invalid(format!("invalid feedback body: {e}; {SHAPE}")),
        };
        if !valid_request_id(parsed.request_id.as_bytes()) {
            return invalid(format!(
                "requestId {:?} is not a request id this predictor hands out (1 to {MAX_REQUEST_ID_LEN} characters of A-Z a-z 0-9 . _ : -); send the x-request-id header of the prediction's response",
                parsed.request_id
            ));
        }
        let values = match (parsed.labels, parsed.label) {
            (Some(_), Some(_)) => {
                return invalid(format!(
                    "send either \"labels\" or \"label\", not both; {SHAPE}"
                ));
            }
            (None, None) => {
                return invalid(format!("no \"labels\" or \"label\"; {SHAPE}"));
            }
            (Some(list), None) => list,
            (None, Some(one)) => vec![one],
        };
        if values.is_empty() {
            return invalid(format!("\"labels\" is empty; {SHAPE}"));
        }
        let mut truth = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match self.label_index(v) {
                Ok(t) => truth.push(t),
                Err(m) => return invalid(format!("label {i}: {m}")),
            }
        }
        if !self.enabled() {
            return (
                FeedbackResult::UnknownId,
                Err("feedback is off on this predictor (FEEDBACK_CAPACITY=0)".into()),
            );
        }
        let id = parsed.request_id;
        let hash = self.hasher.hash_one(id.as_str());
        let k = self.k;
        let mut correct = 0u64;
        {
            let mut g = self.lock();
            let inner = &mut *g;
            let Some(&seq) = inner.index.get(&hash) else {
                return (
                    FeedbackResult::UnknownId,
                    Err(format!(
                        "no prediction with request id {id:?} is remembered here: unknown, or older than the last {} predicted rows (FEEDBACK_CAPACITY); send feedback to the pod that answered, on the same connection",
                        self.settings.capacity
                    )),
                );
            };
            let Some(entry) = inner
                .entries
                .get_mut(seq.wrapping_sub(inner.first_seq) as usize)
            else {
                return (
                    FeedbackResult::UnknownId,
                    Err(format!("request id {id:?} was forgotten")),
                );
            };
            if entry.answered {
                return (
                    FeedbackResult::Duplicate,
                    Err(format!(
                        "feedback for request id {id:?} was already received; each prediction takes feedback once"
                    )),
                );
            }
            if entry.len as usize != truth.len() {
                return invalid(format!(
                    "request {id:?} predicted {} row(s), got {} label(s); send one true label per predicted row, in order",
                    entry.len,
                    truth.len()
                ));
            }
            entry.answered = true;
            let (start, cap) = (entry.start, self.settings.capacity as u64);
            for (i, &t) in truth.iter().enumerate() {
                let p = inner.ring[((start + i as u64) % cap) as usize];
                let cell = t as usize * k + p as usize;
                self.confusion[cell].fetch_add(1, Ordering::Relaxed);
                if t == p {
                    correct += 1;
                }
                inner.window.push_back((t, p));
                inner.window_cm[cell] += 1;
                if inner.window.len() > self.settings.window
                    && let Some((ot, op)) = inner.window.pop_front()
                {
                    inner.window_cm[ot as usize * k + op as usize] -= 1;
                }
            }
        }
        let mut out = Vec::with_capacity(96 + id.len());
        out.extend_from_slice(b"{\"requestId\":");
        let _ = serde_json::to_writer(&mut out, &id);
        let _ = write!(
            VecWriter(&mut out),
            ",\"labels\":{},\"correct\":{correct},\"modelVersion\":{}}}",
            truth.len(),
            model.version_json
        );
        (FeedbackResult::Matched, Ok(out))
    }

    /// The online metrics over the window: (labelled rows, F1 macro, accuracy).
    pub fn online(&self) -> (u64, f64, f64) {
        let cm_flat = self.lock().window_cm.clone();
        let k = self.k;
        let n: u64 = cm_flat.iter().sum();
        let cm: Vec<Vec<u64>> = cm_flat.chunks(k.max(1)).map(<[u64]>::to_vec).collect();
        match champion_model::Metrics::from_confusion(cm, &self.class_labels, None) {
            Ok(m) => (n, m.f1_macro, m.accuracy),
            Err(_) => (n, 0.0, 0.0),
        }
    }

    /// Appends the feedback series in the Prometheus text format.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        let k = self.k;
        let mut s = String::with_capacity(1024 + 80 * k * k);
        s.push_str("# HELP predictor_feedback_total POST /feedback requests by outcome.\n");
        s.push_str("# TYPE predictor_feedback_total counter\n");
        for r in FeedbackResult::ALL {
            let _ = writeln!(
                s,
                "predictor_feedback_total{{result=\"{}\"}} {}",
                r.label(),
                self.results[r as usize].load(Ordering::Relaxed)
            );
        }
        if k <= MAX_CONFUSION_CLASSES {
            s.push_str("# HELP predictor_feedback_confusion_total Labelled rows by true (actual) and predicted class, since the pod started.\n");
            s.push_str("# TYPE predictor_feedback_confusion_total counter\n");
            for t in 0..k {
                for p in 0..k {
                    let _ = writeln!(
                        s,
                        "predictor_feedback_confusion_total{{actual=\"{}\",predicted=\"{}\"}} {}",
                        self.label_values[t],
                        self.label_values[p],
                        self.confusion[t * k + p].load(Ordering::Relaxed)
                    );
                }
            }
        }
        let (n, f1, accuracy) = self.online();
        s.push_str("# HELP predictor_online_labels Labelled rows in the online window (at most FEEDBACK_WINDOW).\n");
        s.push_str("# TYPE predictor_online_labels gauge\n");
        let _ = writeln!(s, "predictor_online_labels {n}");
        if n > 0 {
            s.push_str("# HELP predictor_online_f1_macro Macro F1 of the predictions over the last FEEDBACK_WINDOW labelled rows.\n");
            s.push_str("# TYPE predictor_online_f1_macro gauge\n");
            let _ = writeln!(s, "predictor_online_f1_macro {}", prom_f64(f1));
            s.push_str("# HELP predictor_online_accuracy Accuracy of the predictions over the last FEEDBACK_WINDOW labelled rows.\n");
            s.push_str("# TYPE predictor_online_accuracy gauge\n");
            let _ = writeln!(s, "predictor_online_accuracy {}", prom_f64(accuracy));
        }
        out.extend_from_slice(s.as_bytes());
    }
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Every feedback family with a series, for the metrics tests (promtool, the chart's names).
#[cfg(test)]
pub(crate) fn sample_exposition() -> Vec<u8> {
    let m = crate::model::test_support::sum_model();
    let f = Feedback::new(&m.meta.class_labels, FeedbackSettings::default());
    f.remember("r", &[1]);
    let _ = f.receive(&m, br#"{"requestId":"r","label":"good"}"#);
    let mut out = Vec::new();
    f.render_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::sum_model;

    fn store(capacity: usize, window: usize) -> (ServedModel, Feedback) {
        let m = sum_model(); // classes "bad", "good"
        let f = Feedback::new(&m.meta.class_labels, FeedbackSettings { capacity, window });
        (m, f)
    }

    fn send(f: &Feedback, m: &ServedModel, body: &str) -> Result<serde_json::Value, Refusal> {
        f.receive(m, body.as_bytes())
            .map(|b| serde_json::from_slice(&b).expect("JSON answer"))
    }

    fn rendered(f: &Feedback) -> String {
        let mut out = Vec::new();
        f.render_into(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(b"abc-1.2_3:x"));
        assert!(valid_request_id(&[b'a'; 64]));
        assert!(!valid_request_id(&[b'a'; 65]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a/b"));
        assert!(!valid_request_id("é".as_bytes()));
    }

    #[test]
    fn feedback_joins_labels_to_predictions_and_computes_online_metrics() {
        let (m, f) = store(100, 100);
        f.remember("r1", &[1, 0, 1]);
        f.remember("r2", &[0]);
        let v = send(
            &f,
            &m,
            r#"{"requestId":"r1","labels":["good","good","bad"]}"#,
        )
        .unwrap();
        assert_eq!(v["labels"], 3);
        assert_eq!(v["correct"], 1);
        assert_eq!(v["modelVersion"], "v1");
        send(&f, &m, r#"{"requestId":"r2","label":"bad"}"#).unwrap();
        // truth/pred: (1,1) (1,0) (0,1) (0,0)
        let want = champion_model::Metrics::compute(
            &[1, 1, 0, 0],
            &[1, 0, 1, 0],
            &m.meta.class_labels,
            None,
        )
        .unwrap();
        let (n, f1, acc) = f.online();
        assert_eq!(n, 4);
        assert_eq!(f1, want.f1_macro);
        assert_eq!(acc, 0.5);
        let text = rendered(&f);
        for needle in [
            "predictor_feedback_total{result=\"matched\"} 2\n",
            "predictor_feedback_total{result=\"duplicate\"} 0\n",
            "predictor_feedback_confusion_total{actual=\"good\",predicted=\"good\"} 1\n",
            "predictor_feedback_confusion_total{actual=\"good\",predicted=\"bad\"} 1\n",
            "predictor_feedback_confusion_total{actual=\"bad\",predicted=\"good\"} 1\n",
            "predictor_feedback_confusion_total{actual=\"bad\",predicted=\"bad\"} 1\n",
            "predictor_online_accuracy 0.5\n",
            "predictor_online_labels 4\n",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // Feedback is taken once.
        let e = send(&f, &m, r#"{"requestId":"r2","label":"good"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message.contains("already received"), "{}", e.message);
        assert!(rendered(&f).contains("predictor_feedback_total{result=\"duplicate\"} 1\n"));
    }

    #[test]
    fn the_window_keeps_only_the_last_labels() {
        let (m, f) = store(100, 2);
        for (i, (pred, truth)) in [(0, "good"), (1, "good"), (0, "bad")].iter().enumerate() {
            f.remember(&format!("w{i}"), &[*pred]);
            send(
                &f,
                &m,
                &format!(r#"{{"requestId":"w{i}","label":"{truth}"}}"#),
            )
            .unwrap();
        }
        // The first (wrong) one left the window: (1,1) and (0,0) remain.
        assert_eq!(f.online(), (2, 1.0, 1.0));
        // The cumulative matrix still counts all three.
        assert!(
            rendered(&f).contains(
                "predictor_feedback_confusion_total{actual=\"good\",predicted=\"bad\"} 1\n"
            )
        );
    }

    #[test]
    fn bad_feedback_is_refused_with_what_was_expected() {
        let (m, f) = store(100, 100);
        f.remember("r1", &[1, 0]);
        for (body, status, needle) in [
            ("{", 400, "invalid feedback body"),
            (r#"{"requestId":"r1"}"#, 400, "no \"labels\" or \"label\""),
            (
                r#"{"requestId":"r1","lable":"bad"}"#,
                400,
                "unknown field `lable`",
            ),
            (r#"{"labels":["bad"]}"#, 400, "missing field `requestId`"),
            (
                r#"{"requestId":"r 1","label":"bad"}"#,
                400,
                "is not a request id",
            ),
            (
                r#"{"requestId":"r1","label":"bad","labels":["bad"]}"#,
                400,
                "not both",
            ),
            (r#"{"requestId":"r1","labels":[]}"#, 400, "is empty"),
            (
                r#"{"requestId":"r1","labels":["bad","meh"]}"#,
                400,
                "label 1: unknown label \"meh\"; the model's class labels are [\"bad\", \"good\"]",
            ),
            (
                r#"{"requestId":"r1","labels":["bad",true]}"#,
                400,
                "must be a string or a number",
            ),
            (
                r#"{"requestId":"r1","labels":["bad"]}"#,
                400,
                "predicted 2 row(s), got 1 label(s)",
            ),
            (
                r#"{"requestId":"nope","label":"bad"}"#,
                404,
                "no prediction with request id \"nope\"",
            ),
        ] {
            let e = send(&f, &m, body).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {}", e.message);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let text = rendered(&f);
        assert!(
            text.contains("predictor_feedback_total{result=\"invalid\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("predictor_feedback_total{result=\"unknown_id\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("predictor_online_labels 0\n"), "{text}");
        assert!(!text.contains("predictor_online_f1_macro"), "{text}");
        // The refusals did not use up the id.
        send(&f, &m, r#"{"requestId":"r1","labels":["good","bad"]}"#).unwrap();
    }

    #[test]
    fn numbers_match_labels_that_read_as_numbers() {
        let labels: Vec<String> = ["3", "5", "6.5"].iter().map(|s| s.to_string()).collect();
        let f = Feedback::new(&labels, FeedbackSettings::default());
        assert_eq!(f.label_index(&serde_json::json!(5)), Ok(1));
        assert_eq!(f.label_index(&serde_json::json!(5.0)), Ok(1));
        assert_eq!(f.label_index(&serde_json::json!("5")), Ok(1));
        assert_eq!(f.label_index(&serde_json::json!(6.5)), Ok(2));
        assert!(f.label_index(&serde_json::json!(4)).is_err());
        assert!(f.label_index(&serde_json::json!("5.0")).is_err());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_are_forgotten() {
        let (m, f) = store(10, 100);
        for i in 0..20 {
            f.remember(&format!("id{i}"), &[1]);
        }
        {
            let g = f.lock();
            assert_eq!(g.ring.len(), 10);
            assert_eq!(g.entries.len(), 10);
            assert_eq!(g.index.len(), 10);
        }
        for i in 0..10 {
            let e = send(
                &f,
                &m,
                &format!(r#"{{"requestId":"id{i}","label":"good"}}"#),
            )
            .unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "id{i}");
        }
        for i in 10..20 {
            send(
                &f,
                &m,
                &format!(r#"{{"requestId":"id{i}","label":"good"}}"#),
            )
            .unwrap();
        }
        // A batch larger than the capacity is not remembered; one that overwrites part of an
        // older request forgets that request whole.
        f.remember("huge", &[0; 11]);
        f.remember("a", &[0; 6]);
        f.remember("b", &[1; 6]);
        assert!(send(&f, &m, r#"{"requestId":"huge","label":"bad"}"#).is_err());
        assert_eq!(
            send(
                &f,
                &m,
                r#"{"requestId":"a","labels":["bad","bad","bad","bad","bad","bad"]}"#
            )
            .unwrap_err()
            .status,
            StatusCode::NOT_FOUND
        );
        let v = send(
            &f,
            &m,
            r#"{"requestId":"b","labels":["good","good","good","good","good","good"]}"#,
        )
        .unwrap();
        assert_eq!(v["correct"], 6);
        // A reused id reaches its newest prediction.
        f.remember("same", &[0]);
        f.remember("same", &[1, 1]);
        send(&f, &m, r#"{"requestId":"same","labels":["good","good"]}"#).unwrap();
    }

    #[test]
    fn capacity_zero_turns_feedback_off() {
        let (m, f) = store(0, 10);
        f.remember("r", &[1]);
        let e = send(&f, &m, r#"{"requestId":"r","label":"good"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(e.message.contains("FEEDBACK_CAPACITY=0"), "{}", e.message);
    }

    #[test]
    fn settings_from_the_environment() {
        let env =
            |k: &'static str, v: &'static str| move |name: &str| (name == k).then(|| v.to_string());
        assert_eq!(
            FeedbackSettings::from_lookup(&|_: &str| None).unwrap(),
            FeedbackSettings::default()
        );
        assert_eq!(
            FeedbackSettings::from_lookup(&env("FEEDBACK_CAPACITY", "0"))
                .unwrap()
                .capacity,
            0
        );
        assert_eq!(
            FeedbackSettings::from_lookup(&env("FEEDBACK_WINDOW", "50"))
                .unwrap()
                .window,
            50
        );
        for (k, v) in [
            ("FEEDBACK_WINDOW", "0"),
            ("FEEDBACK_CAPACITY", "-1"),
            ("FEEDBACK_CAPACITY", "lots"),
        ] {
            match FeedbackSettings::from_lookup(&env(k, v)) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }
}
