//! `make soak`: steady load on the predictor Service while new data arrives every minute, for
//! 10 minutes (`CHAMPION_SOAK_SECONDS` to change it). Records the resident memory of the
//! operator and of the serving predictor once a minute, every request's answer, and each data
//! round's outcome; asserts zero failed requests, every round judged exactly once (one Job, one
//! history entry, one Event per outcome), and both memories flat within 10 %.
//!
//! Too long for `make test`: it is `#[ignore]`d there and run by `make soak`
//! (`cargo test -p champion-tests --test soak_e2e -- --ignored --nocapture`).

use std::time::{Duration, Instant};

use champion_tests::faults::{SteadyClient, container_pid};
use champion_tests::operator::{Stage, csv_row_as_request, history, str_at, wine_file};
use champion_tests::{ClusterError, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

const PIPELINE: &str = "wine";
const ROUND: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(180);

fn soak_length() -> Duration {
    let secs = std::env::var("CHAMPION_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// Resident memory of a process, in bytes (VmRSS of /proc/<pid>/status).
fn rss(pid: i32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(ClusterError::io("reading", &path))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
        .ok_or_else(|| ClusterError::Invalid(format!("no VmRSS in {path}")))
}

/// Resident memory of the operator and of the ready predictor pod serving now.
async fn memories(stage: &Stage) -> Result<(f64, f64)> {
    let pods: Api<Pod> = stage.api();
    let operator = stage
        .operator_pod()
        .await?
        .ok_or_else(|| ClusterError::Invalid("no operator pod".into()))?;
    let lp = ListParams::default().labels(&format!(
        "champion.dev/pipeline={PIPELINE},app.kubernetes.io/component=predictor"
    ));
    let predictor = pods
        .list(&lp)
        .await
        .map_err(ClusterError::kube("list predictor pods"))?
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .ok_or_else(|| ClusterError::Invalid("no ready predictor pod".into()))?;
    Ok((
        rss(container_pid(&pods, &operator.name_any()).await?)?,
        rss(container_pid(&pods, &predictor.name_any()).await?)?,
    ))
}

/// The data of round `i`: a slice of the wine rows, different each round (a new fingerprint).
fn round_data(i: usize) -> Result<String> {
    let data_1 = wine_file("data_1.csv")?;
    let data_2 = wine_file("data_2.csv")?;
    let mut lines = data_1.lines();
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines
        .chain(data_2.lines().skip(1))
        .skip(i * 40)
        .take(120)
        .collect();
    if rows.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "no wine rows left for round {i}"
        )));
    }
    Ok(format!("{header}\n{}\n", rows.join("\n")))
}

fn spread(values: &[f64]) -> f64 {
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    if min > 0.0 { max / min - 1.0 } else { f64::MAX }
}

#[tokio::test]
#[ignore = "10 minutes: run by `make soak`"]
async fn ten_minutes_of_load_and_new_data_every_minute_lose_nothing() -> Result<()> {
    let length = soak_length();
    let stage = Stage::deploy("soak").await?;
    stage.put_data("round_00.csv", &round_data(0)?)?;
    // The predictors' feedback store is bounded (feedbackCapacity rows, about 100 bytes each)
    // and fills as requests arrive: at the default 100,000 rows it would still be growing after
    // ten minutes of 100 requests a second, which a leak check cannot tell from a leak. 2,000
    // rows fill in about 20 s, so the minute samples see the store at its bound and any growth
    // past it is a leak.
    stage
        .create_pipeline(
            PIPELINE,
            json!({"historyLimit": 100, "predictor": {"feedbackCapacity": 2000}}),
        )
        .await?;
    stage.wait_champion(PIPELINE, None, WAIT).await?;
    let target = stage.predictor_service(PIPELINE).await?;
    let request = csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])?;
    champion_tests::live::wait_answering(&target, &request, WAIT).await?;
    let client = SteadyClient::start(target, request);

    let start = Instant::now();
    // Sampled after each minute of load (the first after one minute: warm, not fresh).
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut rounds = 1;
    let mut result: Result<()> = Ok(());
    while start.elapsed() < length {
        // The soak's own pace: one data round a minute.
        tokio::time::sleep(ROUND).await;
        if let Err(e) = stage.put_data(&format!("round_{rounds:02}.csv"), &round_data(rounds)?) {
            result = Err(e);
            break;
        }
        rounds += 1;
        match memories(&stage).await {
            Ok(m) => samples.push(m),
            Err(e) => eprintln!("memory sample skipped: {e}"),
        }
        let (op, pred) = samples.last().copied().unwrap_or_default();
        eprintln!(
            "{:>4.0} s: round {rounds}, operator {:.1} MB, predictor {:.1} MB",
            start.elapsed().as_secs_f64(),
            op / 1e6,
            pred / 1e6
        );
    }
    // Every round judged, rollout over.
    let judged = stage
        .wait_status(PIPELINE, "every round judged", WAIT, |s| {
            (history(s).len() >= rounds && s.get("rollout").is_none()).then(|| s.clone())
        })
        .await;
    let seen = client.finish().await?;
    result?;
    let status = judged?;

    let h = history(&status);
    let outcomes: Vec<&str> = h.iter().filter_map(|e| e["outcome"].as_str()).collect();
    let jobs = stage.jobs(PIPELINE).await?;
    let promoted = outcomes.iter().filter(|o| **o == "Promoted").count();
    let rejected = outcomes.iter().filter(|o| **o == "Rejected").count();
    let promoted_events = stage.events(PIPELINE, "ModelPromoted").await?.len();
    let rejected_events = stage.events(PIPELINE, "CandidateRejected").await?.len();
    let op: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let pred: Vec<f64> = samples.iter().map(|s| s.1).collect();
    println!(
        "\n### soak: {:.0} s, {rounds} data rounds\n\n| figure | value |\n|---|---|\n\
         | requests through the Service | {} sent, {} failed |\n\
         | times the answering version changed (both serve during a rollout) | {} |\n\
         | rounds | {rounds} data rounds, {} Jobs, {} history entries: {promoted} promoted, {rejected} rejected, {} other |\n\
         | Events | {promoted_events} ModelPromoted, {rejected_events} CandidateRejected |\n\
         | operator RSS (MB, each minute) | {} (spread {:.1} %) |\n\
         | predictor RSS (MB, each minute) | {} (spread {:.1} %) |",
        start.elapsed().as_secs_f64(),
        seen.sent,
        seen.failures.len(),
        seen.versions.len(),
        jobs.len(),
        h.len(),
        h.len() - promoted - rejected,
        op.iter()
            .map(|b| format!("{:.1}", b / 1e6))
            .collect::<Vec<_>>()
            .join(" "),
        100.0 * spread(&op),
        pred.iter()
            .map(|b| format!("{:.1}", b / 1e6))
            .collect::<Vec<_>>()
            .join(" "),
        100.0 * spread(&pred),
    );
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        seen.failures.len(),
        seen.sent,
        seen.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(jobs.len(), rounds, "one Job per data round");
    assert_eq!(h.len(), rounds, "one history entry per round: {outcomes:?}");
    let versions: std::collections::BTreeSet<&str> =
        h.iter().filter_map(|e| e["version"].as_str()).collect();
    assert_eq!(versions.len(), rounds, "each version judged once: {h:?}");
    assert_eq!(
        promoted_events, promoted,
        "one ModelPromoted Event per promotion"
    );
    assert_eq!(
        rejected_events, rejected,
        "one CandidateRejected Event per rejection"
    );
    assert_eq!(promoted + rejected, rounds, "no round failed: {outcomes:?}");
    assert!(
        str_at(&status, "/champion/version").is_some(),
        "a champion serves: {status}"
    );
    assert!(spread(&op) <= 0.10, "operator RSS flat within 10 %: {op:?}");
    assert!(
        spread(&pred) <= 0.10,
        "predictor RSS flat within 10 %: {pred:?}"
    );
    stage.passed();
    Ok(())
}
