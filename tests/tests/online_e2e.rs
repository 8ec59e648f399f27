//! Ground-truth feedback deciding a canary, end to end on the local cluster
//! (`spec.rollout.analysis.online`): a weak first champion (trained on rows whose labels are
//! flipped around 5) serves, the real wine data trains a challenger that passes the offline
//! gate and goes into a Canary whose steps require its online accuracy to be at least the
//! champion's over at least 40 labelled predictions each.
//!
//! The test is the client: it sends the wine test rows as `/predict` through the predictor
//! Service and, on the same keep-alive connection (so the label reaches the pod that answered),
//! `POST /feedback` with the answer's `x-request-id` and the row's label ("1" above 5, else "0",
//! the model's class labels with positiveAbove 5). Each connection carries one pair; a new
//! connection is spread over the champion's and the canary's pods by kube-proxy.
//!
//! - true labels: the challenger's online accuracy beats the weak champion's, the canary is
//!   promoted;
//! - every label flipped (the truth agrees with the weak champion): the challenger loses
//!   online, the canary is aborted with `LiveAnalysisFailed` naming the online figures.
//!
//! The figures are also computed from the predictors' own feedback answers (`modelVersion`,
//! `correct`) and compared with what the operator judged on. Zero failed `/predict` in both.
//!
//! Needs `make images` and the cluster. Run:
//! `cargo test -p champion-tests --test online_e2e -- --test-threads=2`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use champion_tests::live::{
    PIPELINE, WAIT, assert_aborted_at_first_step, serving_service, wait_outcome, weak_champion,
};
use champion_tests::operator::{Stage, csv_row_as_request, history, wine_file};
use champion_tests::{ClusterError, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIN_SAMPLES: i64 = 40;

/// The rollout both cases use: steps [50, 100] of 10 s, the online accuracy gate.
fn rollout() -> Value {
    json!({
        "strategy": "Canary",
        "canary": {"steps": [50, 100], "stepSeconds": 10, "minRequests": 20},
        "analysis": {
            "intervalSeconds": 2,
            "latencyFloorSeconds": 5,
            "online": {"metric": "accuracy", "minSamples": MIN_SAMPLES}
        }
    })
}

/// The wine test rows as (request, label) with label "1" above 5 else "0"; `flip` swaps them.
fn labelled_rows(flip: bool) -> Result<Vec<(Value, String)>> {
    let csv = wine_file("test_data.csv")?;
    let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let q = header
        .iter()
        .position(|c| *c == "quality")
        .ok_or_else(|| ClusterError::Invalid("test_data.csv without quality".into()))?;
    let mut rows = Vec::new();
    for (i, line) in csv.lines().skip(1).enumerate() {
        let cell = line.split(',').nth(q).unwrap_or_default().trim();
        let quality: f64 = cell
            .parse()
            .map_err(|_| ClusterError::Invalid(format!("row {i}: quality {cell:?}")))?;
        let good = (quality > 5.0) != flip;
        rows.push((
            csv_row_as_request(&csv, i, &["quality", "Id"])?,
            if good { "1" } else { "0" }.to_string(),
        ));
    }
    Ok(rows)
}

/// One HTTP/1.1 exchange on a kept-alive connection: (status, headers lower-cased, body).
async fn exchange(
    conn: &mut TcpStream,
    host: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, BTreeMap<String, String>, String)> {
    let io = |e: std::io::Error| ClusterError::Invalid(format!("POST {path} to {host}: {e}"));
    let payload = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
        payload.len()
    );
    conn.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(ClusterError::Invalid(format!(
                "POST {path}: connection closed before an answer"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClusterError::Invalid(format!("POST {path}: bad status line in {head}")))?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ClusterError::Invalid(format!("POST {path}: expected content-length in {head}"))
        })?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = conn.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(ClusterError::Invalid(format!(
                "POST {path}: body cut short"
            )));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        headers,
        String::from_utf8_lossy(&body[..len]).to_string(),
    ))
}

/// What the feeder saw: failed predictions, and per model version (from the feedback answers
/// of the predictors) labelled rows and correct ones.
#[derive(Default)]
struct Seen {
    predicted: u64,
    failed: Vec<String>,
    feedback_refused: Vec<String>,
    feedback_lost: Vec<String>,
    per_version: BTreeMap<String, (u64, u64)>,
}

impl Seen {
    /// Labelled and correct rows of `version`, as the predictors answered.
    fn of(&self, version: &str) -> (u64, u64) {
        self.per_version.get(version).copied().unwrap_or_default()
    }

    /// Asserts that no prediction failed, no feedback was refused, and at most 1 % of the
    /// labels were lost (to pods shutting down between an answer and its feedback).
    fn assert_nothing_failed(&self) {
        assert!(
            self.failed.is_empty(),
            "failed predictions: {:?}",
            self.failed
        );
        assert!(
            self.feedback_refused.is_empty(),
            "{:?}",
            self.feedback_refused
        );
        assert!(
            self.feedback_lost.len() as u64 * 100 <= self.predicted,
            "at most 1 % of labels lost to pods shutting down: {:?}",
            self.feedback_lost
        );
    }
}

/// Predict + feedback pairs through the Service, one connection per pair, until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Feeder {
    fn start(target: String, rows: Vec<(Value, String)>) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, sn) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let (req, label) = &rows[i % rows.len()];
                i += 1;
                let r = pair(&target, req, label).await;
                let Ok(mut seen) = sn.lock() else { return };
                match r {
                    Ok(Pair::Labelled { version, correct }) => {
                        seen.predicted += 1;
                        let e = seen.per_version.entry(version).or_default();
                        e.0 += 1;
                        e.1 += u64::from(correct);
                    }
                    Ok(Pair::FeedbackRefused(why)) => {
                        seen.predicted += 1;
                        seen.feedback_refused.push(why);
                    }
                    Ok(Pair::FeedbackLost(why)) => {
                        seen.predicted += 1;
                        seen.feedback_lost.push(why);
                    }
                    Err(e) => seen.failed.push(e.to_string()),
                }
            }
        });
        Feeder { stop, seen, task }
    }

    /// Labelled and correct rows of `version` so far, as the predictors answered.
    fn of(&self, version: &str) -> (u64, u64) {
        self.seen.lock().map(|s| s.of(version)).unwrap_or_default()
    }

    async fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.seen
            .lock()
            .map(|s| Seen {
                predicted: s.predicted,
                failed: s.failed.clone(),
                feedback_refused: s.feedback_refused.clone(),
                feedback_lost: s.feedback_lost.clone(),
                per_version: s.per_version.clone(),
            })
            .unwrap_or_default()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

enum Pair {
    Labelled { version: String, correct: bool },
    FeedbackRefused(String),
    FeedbackLost(String),
}

/// One /predict and its /feedback on one connection. A failed prediction is an error; a
/// refused feedback is reported (it should not happen on the same connection).
async fn pair(target: &str, req: &Value, label: &str) -> Result<Pair> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
        .await
        .map_err(|_| ClusterError::Invalid(format!("connect {target}: timed out")))?
        .map_err(|e| ClusterError::Invalid(format!("connect {target}: {e}")))?;
    let (status, headers, body) = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(&mut conn, target, "/predict", req),
    )
    .await
    .map_err(|_| ClusterError::Invalid("/predict timed out".into()))??;
    if status != 200 {
        return Err(ClusterError::Invalid(format!("/predict {status}: {body}")));
    }
    let id = headers
        .get("x-request-id")
        .cloned()
        .ok_or_else(|| ClusterError::Invalid("/predict answer without x-request-id".into()))?;
    let fb = json!({"requestId": id, "label": label});
    // A pod that shuts down (the rollout after a promotion) may close the connection between
    // the answer and its feedback: that loses a label, not a prediction, and is reported.
    let (status, _, body) = match tokio::time::timeout(
        Duration::from_secs(5),
        exchange(&mut conn, target, "/feedback", &fb),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Ok(Pair::FeedbackLost(e.to_string())),
        Err(_) => return Ok(Pair::FeedbackLost("/feedback timed out".into())),
    };
    if status != 200 {
        return Ok(Pair::FeedbackRefused(format!("{status}: {body}")));
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| ClusterError::Invalid(format!("/feedback answer {body}: {e}")))?;
    Ok(Pair::Labelled {
        version: v["modelVersion"].as_str().unwrap_or_default().to_string(),
        correct: v["correct"].as_i64() == Some(1),
    })
}

/// `part` of `whole` (0 when nothing).
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The online part of a figures text: (challenger, its labels, champion, its labels).
fn online_in(text: &str) -> Option<(f64, i64, f64, i64)> {
    let rest = text.split("online challenger ").nth(1)?;
    let (c, rest) = rest.split_once(" (")?;
    let (cl, rest) = rest.split_once(" labels), champion ")?;
    let (p, rest) = rest.split_once(" (")?;
    let (pl, _) = rest.split_once(" labels)")?;
    Some((
        c.parse().ok()?,
        cl.parse().ok()?,
        p.parse().ok()?,
        pl.parse().ok()?,
    ))
}

#[test]
fn the_online_figures_are_read_from_a_message() {
    let m = "step 1/2 (50 %) passed: challenger 30 requests, 0.00% errors, p99 2.0ms; champion 31 requests, 0.00% errors, p99 2.0ms; online challenger 0.7250 (40 labels), champion 0.3000 (41 labels)";
    assert_eq!(online_in(m), Some((0.725, 40, 0.3, 41)));
    assert_eq!(online_in("no figures"), None);
}

#[tokio::test]
async fn true_labels_make_the_challenger_win_online_and_the_canary_is_promoted() -> Result<()> {
    let began = std::time::Instant::now();
    let stage = Stage::deploy("online-win").await?;
    let weak = weak_champion(&stage, rollout()).await?;
    let target = serving_service(&stage).await?;
    let feeder = Feeder::start(target, labelled_rows(false)?);
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;

    let status = wait_outcome(&stage, &weak, "LiveAnalysisPassed").await?;
    let last = history(&status).last().cloned().unwrap_or_default();
    assert_eq!(last["outcome"], "Promoted", "{last}");
    let challenger = last["version"].as_str().unwrap_or_default().to_string();
    // Step 1 (50 %) was judged on the online figures: the LiveAnalysisStep Event has them.
    let steps = stage.events(PIPELINE, "LiveAnalysisStep").await?;
    assert_eq!(steps.len(), 1);
    let note = steps[0].note.clone().unwrap_or_default();
    let (c, cl, p, pl) = online_in(&note).ok_or_else(|| {
        ClusterError::Invalid(format!("no online figures in the step Event: {note}"))
    })?;
    assert!(cl >= MIN_SAMPLES && pl >= MIN_SAMPLES, "{note}");
    assert!(c > p, "challenger online {c} beats champion {p}: {note}");
    stage.wait_champion(PIPELINE, Some(&weak), WAIT).await?;
    let seen = feeder.stop().await;
    let (wl, wc) = seen.of(&weak);
    let (cl2, cc2) = seen.of(&challenger);
    seen.assert_nothing_failed();
    // The predictors' own answers agree: the challenger is right more often than the weak one.
    assert!(wl >= MIN_SAMPLES as u64 && cl2 >= MIN_SAMPLES as u64);
    assert!(share(cc2, cl2) > share(wc, wl), "{cc2}/{cl2} vs {wc}/{wl}");
    eprintln!(
        "online win: operator step figures challenger {c:.4} ({cl} labels), champion {p:.4} ({pl} labels); \
         predictor answers: challenger {cc2}/{cl2}, weak {wc}/{wl}; {} predictions, 0 failed, {} feedbacks lost to a closed connection {:?}; {:.0}s",
        seen.predicted,
        seen.feedback_lost.len(),
        seen.feedback_lost.first(),
        began.elapsed().as_secs_f64()
    );
    stage.passed();
    Ok(())
}

#[tokio::test]
async fn flipped_labels_make_the_challenger_lose_online_and_the_canary_is_aborted() -> Result<()> {
    let began = std::time::Instant::now();
    let stage = Stage::deploy("online-lose").await?;
    let weak = weak_champion(&stage, rollout()).await?;
    let target = serving_service(&stage).await?;
    let feeder = Feeder::start(target, labelled_rows(true)?);
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;

    let status = wait_outcome(&stage, &weak, "LiveAnalysisFailed").await?;
    let last = history(&status).last().cloned().unwrap_or_default();
    assert_eq!(last["outcome"], "Rejected", "{last}");
    let challenger = last["version"].as_str().unwrap_or_default().to_string();
    let reason = last["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("online Accuracy") && reason.contains("below the champion's"),
        "{reason}"
    );
    let (c, cl, p, pl) = online_in(&reason)
        .ok_or_else(|| ClusterError::Invalid(format!("no online figures: {reason}")))?;
    assert!(cl >= MIN_SAMPLES && pl >= MIN_SAMPLES && c < p, "{reason}");
    assert_aborted_at_first_step(&stage, &status, &weak).await?;
    // The champion keeps serving: the feeder's pairs are still answered by the weak version.
    let (before, _) = feeder.of(&weak);
    champion_tests::testing::wait_for("the champion to answer on", WAIT, || async {
        Ok((feeder.of(&weak).0 >= before + 20).then_some(()))
    })
    .await?;
    let seen = feeder.stop().await;
    seen.assert_nothing_failed();
    let (wl, wc) = seen.of(&weak);
    let (cl2, cc2) = seen.of(&challenger);
    assert!(cl2 >= MIN_SAMPLES as u64, "the canary answered {cl2}");
    assert!(share(cc2, cl2) < share(wc, wl), "{cc2}/{cl2} vs {wc}/{wl}");
    eprintln!(
        "online loss: operator figures challenger {c:.4} ({cl} labels), champion {p:.4} ({pl} labels); \
         predictor answers: challenger {cc2}/{cl2}, weak {wc}/{wl}; {} predictions, 0 failed, {} feedbacks lost to a closed connection {:?}; {:.0}s",
        seen.predicted,
        seen.feedback_lost.len(),
        seen.feedback_lost.first(),
        began.elapsed().as_secs_f64()
    );
    stage.passed();
    Ok(())
}
