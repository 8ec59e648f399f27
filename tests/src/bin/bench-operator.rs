//! `bench-operator`: the operator's benchmark on the running local cluster (`make bench-operator`
//! brings the cluster up and loads the images first). Prints markdown tables; the exit status
//! is non-zero only when the benchmark could not measure, not when a figure misses its goal.
//!
//! - Scenario A, data → serving: the operator in a namespace of its own, a `wine` pipeline
//!   polling every 2 s, and rounds of new data, each renamed into the hostPath store in one
//!   step. A round is timed from that rename to the first `/predict` answer through the
//!   predictor Service that carries the new `x-model-version`; the phases in between are timed
//!   by polling the API server every 100 ms.
//! - Scenario B, scale: N pipelines (300) in one namespace on an empty data prefix, so the
//!   operator reconciles them all but launches no Job or predictor (300 predictors would not fit
//!   the node's pod limit). Time to steady state (every status has the current
//!   observedGeneration and a DataAvailable condition), then the operator process's resident
//!   memory and CPU over an idle window, read from `/proc` of the process on this host (the
//!   node is this machine; the operator exports no process metrics).
//! - Scenario C, failing: N pipelines (300) whose credentials Secret does not exist, in a
//!   namespace with an operator of its own. The API requests the operator makes are counted
//!   from the API server's own `apiserver_request_total` (by resource and verb), over a window
//!   with no pipeline and over one of the same length once all N show the failure; the
//!   difference is what N failing pipelines cost. (A missing Secret costs the same reads,
//!   but the API server leaves requests its authorizer refuses out of
//!   `apiserver_request_total`: such a window measured 0 Secret reads.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use champion_tests::operator::{
    Stage, condition, csv_row_as_request, deployment_serves, history, http_post_json, str_at,
    wine_file, workspace,
};
use champion_tests::testing::{http_get, wait_for};
use champion_tests::{ClusterError, Result};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const PIPELINE: &str = "wine";
/// The data file every round replaces: one key, so each round's data is exactly one rung of the
/// ladder (see [`ladder_data`]).
const DATA_FILE: &str = "data.csv";
/// Upper bound of one round on a loaded two-core machine; a round that takes longer is
/// reported as timed out, not measured.
const ROUND_DEADLINE: Duration = Duration::from_secs(120);
/// How often the phases of a round are sampled from the API server.
const SAMPLE: Duration = Duration::from_millis(100);
/// How often the Service is asked which version it serves.
const PROBE: Duration = Duration::from_millis(20);
const INTERRUPTED: &str = "interrupted by Ctrl-C";
const GOAL_SERVING_S: f64 = 10.0;
const GOAL_RSS_BYTES: f64 = 100e6;
const GOAL_IDLE_CPU_PERCENT: f64 = 2.0;

#[derive(Parser)]
#[command(about = "Benchmark of the champion operator on the running local cluster")]
struct Cli {
    /// Data rounds of scenario A (each must produce a promotion).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Pipelines of scenario B.
    #[arg(long, default_value_t = 300)]
    pipelines: usize,
    /// Length of each idle CPU window of scenario B, in seconds.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Deadline for all pipelines of scenario B to reach steady state, in seconds.
    #[arg(long, default_value_t = 300)]
    steady_deadline: u64,
    /// Also measure idle CPU with every pipeline of scenario B polling at 2 s (the first window
    /// uses the CRD's default pollInterval).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fast_poll_window: bool,
    /// Pipelines of scenario C, each failing on a missing Secret.
    #[arg(long, default_value_t = 300)]
    failing_pipelines: usize,
    /// Length of each API request window of scenario C, in seconds.
    #[arg(long, default_value_t = 60)]
    rate_seconds: u64,
    /// Run only one scenario.
    #[arg(long, value_enum)]
    only: Option<Scenario>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// A: new data → new model serving.
    Data,
    /// B: N pipelines, memory and idle CPU.
    Scale,
    /// C: N failing pipelines, API request rate.
    Failing,
}

/// One row of the summary table.
struct Row {
    figure: String,
    value: String,
    goal: String,
    pass: Option<bool>,
}

impl Row {
    fn new(
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: &str,
        pass: Option<bool>,
    ) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            goal: goal.to_string(),
            pass,
        }
    }
}

/// Runs `scenario` unless Ctrl-C comes first; then the scenario is dropped, and with it its
/// stage, whose drop deletes the namespace and the store.
async fn interruptible<T>(scenario: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        r = scenario => r,
        _ = tokio::signal::ctrl_c() => Err(ClusterError::Invalid(INTERRUPTED.into())),
    }
}

/// Adds `row` to the summary, and shows it at once on stderr.
fn push(rows: &mut Vec<Row>, row: Row) {
    eprintln!("  {}: {}", row.figure, row.value);
    rows.push(row);
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = false;
    let mut interrupted = false;
    let only = cli.only;
    if only.is_none_or(|o| o == Scenario::Data) {
        let outcome = interruptible(data_to_serving(cli.rounds)).await;
        match outcome {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench-operator: scenario A (data → serving) failed: {e}");
                interrupted = e.to_string() == INTERRUPTED;
                failed = true;
            }
        }
    }
    if !interrupted && only.is_none_or(|o| o == Scenario::Scale) {
        let outcome = interruptible(scale(&cli, &mut rows)).await;
        if let Err(e) = outcome {
            eprintln!(
                "bench-operator: scenario B ({} pipelines) failed: {e}",
                cli.pipelines
            );
            failed = true;
        }
    }
    if !interrupted && only.is_none_or(|o| o == Scenario::Failing) {
        let outcome = interruptible(failing(&cli, &mut rows)).await;
        if let Err(e) = outcome {
            eprintln!(
                "bench-operator: scenario C ({} failing pipelines) failed: {e}",
                cli.failing_pipelines
            );
            failed = true;
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n### operator benchmark ({cores} cores, {cpu}; local one-node cluster; {:.0} s in all)\n",
        started.elapsed().as_secs_f64()
    );
    println!("| figure | value | goal | result |");
    println!("|---|---|---|---|");
    for r in &rows {
        let verdict = match r.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "–",
        };
        println!("| {} | {} | {} | {verdict} |", r.figure, r.value, r.goal);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario A: data → serving
// ---------------------------------------------------------------------------------------------

/// What one round saw, each instant measured from the rename of the data file.
#[derive(Default, Debug)]
struct Round {
    version: Option<String>,
    data_seen: Option<Duration>,
    job_created: Option<Duration>,
    job_complete: Option<Duration>,
    promoted: Option<Duration>,
    first_answer: Option<Duration>,
    rolled_out: Option<Duration>,
    /// Promoted, Rejected, Failed or timed out.
    outcome: String,
    score: Option<f64>,
}

/// The Service's answers during scenario A: when each version answered first, and how many
/// requests failed (connection errors or non-200).
#[derive(Default)]
struct Answers {
    first_seen: BTreeMap<String, Instant>,
    sent: u64,
    failed: u64,
}

async fn data_to_serving(rounds: usize) -> Result<Vec<Row>> {
    eprintln!("== scenario A: data → serving, pollInterval 2s, {rounds} rounds");
    let stage = Stage::deploy("bench-op-data").await?;
    let data = ladder_data(rounds, &stage.store.path)?;
    eprintln!(
        "data ladder (share of training labels flipped → expected f1Macro): {}",
        data.iter()
            .map(|r| match r.expected {
                Some(s) => format!("{}% → {s:.4}", r.flipped_percent),
                None => format!("{}%", r.flipped_percent),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    stage.put_data(DATA_FILE, &data[0].csv)?;
    stage.create_pipeline(PIPELINE, json!({})).await?;
    let first = stage
        .wait_status(PIPELINE, "the first champion", ROUND_DEADLINE, |s| {
            let v = str_at(s, "/champion/version")?;
            (s.get("rollout").is_none()).then(|| v.to_string())
        })
        .await?;
    stage
        .wait_predictor_serving(PIPELINE, &first, ROUND_DEADLINE)
        .await?;
    let target = stage.predictor_service(PIPELINE).await?;
    let request = csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])?;
    wait_for(
        "the predictor Service to answer the first champion",
        ROUND_DEADLINE,
        || async {
            Ok(http_post_json(&target, "/predict", &request)
                .await
                .ok()
                .filter(|r| r.headers.get("x-model-version") == Some(&first)))
        },
    )
    .await?;
    eprintln!("first champion {first} serves through {target}");

    let answers = Arc::new(Mutex::new(Answers::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let prober = tokio::spawn(probe_service(
        target.clone(),
        request.clone(),
        answers.clone(),
        stop_rx,
    ));
    let mut results = Vec::new();
    for (n, rung) in data.iter().enumerate().skip(1) {
        let r = round(&stage, &answers, &rung.csv).await;
        match r {
            Ok(r) => {
                eprintln!(
                    "round {n}: {} {} (score {}) data seen {} job created {} job complete {} promoted {} first answer {} rolled out {}",
                    r.outcome,
                    r.version.as_deref().unwrap_or("-"),
                    r.score.map_or("-".into(), |s| format!("{s:.4}")),
                    secs(r.data_seen),
                    secs(r.job_created),
                    secs(r.job_complete),
                    secs(r.promoted),
                    secs(r.first_answer),
                    secs(r.rolled_out),
                );
                results.push(r);
            }
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = prober.await;
                return Err(e);
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = prober.await;
    let (sent, failed_requests) = answers
        .lock()
        .map(|a| (a.sent, a.failed))
        .unwrap_or_default();

    let promoted: Vec<&Round> = results.iter().filter(|r| r.outcome == "Promoted").collect();
    println!(
        "\n#### data → serving: {} of {rounds} rounds promoted (times from the rename of the data file)\n",
        promoted.len()
    );
    println!(
        "| round | version | outcome | f1Macro | data seen | Job created | Job complete | promoted | first answer via Service | rollout complete |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.version.as_deref().unwrap_or("-"),
            r.outcome,
            r.score.map_or("-".into(), |s| format!("{s:.4}")),
            secs(r.data_seen),
            secs(r.job_created),
            secs(r.job_complete),
            secs(r.promoted),
            secs(r.first_answer),
            secs(r.rolled_out),
        );
    }
    println!("\n| phase (s after the rename, promoted rounds) | min | median | max |");
    println!("|---|---:|---:|---:|");
    type Phase = fn(&Round) -> Option<Duration>;
    let phases: [(&str, Phase); 6] = [
        ("data seen by the operator (status.data)", |r| r.data_seen),
        ("trainer Job created", |r| r.job_created),
        ("trainer Job complete", |r| r.job_complete),
        ("promoted (status.champion)", |r| r.promoted),
        (
            "first /predict answer of the new version via the Service",
            |r| r.first_answer,
        ),
        ("predictor Deployment rolled out and Available", |r| {
            r.rolled_out
        }),
    ];
    for (name, f) in phases {
        let s = stats(promoted.iter().filter_map(|r| f(r)));
        println!("| {name} | {} | {} | {} |", s.min, s.median, s.max);
    }
    println!(
        "\n{sent} requests to the Service during the rounds, {failed_requests} failed; phases sampled every {} ms, answers every {} ms.",
        SAMPLE.as_millis(),
        PROBE.as_millis()
    );

    let serving: Vec<f64> = promoted
        .iter()
        .filter_map(|r| r.first_answer)
        .map(|d| d.as_secs_f64())
        .collect();
    let serving_stats = stats(serving.iter().map(|s| Duration::from_secs_f64(*s)));
    let worst = serving.iter().copied().fold(f64::NAN, f64::max);
    let rolled_stats = stats(promoted.iter().filter_map(|r| r.rolled_out));
    let rows = vec![
        Row::new(
            "rounds of new data promoted and served",
            format!("{} / {rounds}", promoted.len()),
            "every round",
            Some(promoted.len() == rounds && serving.len() == rounds),
        ),
        Row::new(
            "new data file → new model answering via the Service (pollInterval 2 s)",
            format!(
                "max {} s (min {}, median {})",
                serving_stats.max, serving_stats.min, serving_stats.median
            ),
            "≤ 10 s",
            Some(!serving.is_empty() && worst <= GOAL_SERVING_S),
        ),
        Row::new(
            "new data file → rollout complete (all replicas on the new model)",
            format!(
                "max {} s (min {}, median {})",
                rolled_stats.max, rolled_stats.min, rolled_stats.median
            ),
            "–",
            None,
        ),
        Row::new(
            "requests failed during the rounds",
            format!("{failed_requests} of {sent}"),
            "–",
            None,
        ),
    ];
    stage.passed();
    Ok(rows)
}

/// Asks the Service which version it serves every [`PROBE`] until told to stop.
async fn probe_service(
    target: String,
    request: Value,
    answers: Arc<Mutex<Answers>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PROBE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tick.tick().await;
        let reply = http_post_json(&target, "/predict", &request).await;
        let at = Instant::now();
        let Ok(mut a) = answers.lock() else { return };
        a.sent += 1;
        match reply {
            Ok(r) if r.status == 200 => {
                if let Some(v) = r.headers.get("x-model-version") {
                    a.first_seen.entry(v.clone()).or_insert(at);
                }
            }
            _ => a.failed += 1,
        }
    }
}

/// Replaces the data file with `csv` and follows the run it triggers until the new version
/// answers through the Service and the rollout is complete (or the run is rejected or fails).
async fn round(stage: &Stage, answers: &Mutex<Answers>, csv: &str) -> Result<Round> {
    let before = stage.status(PIPELINE).await?;
    let old_fingerprint = str_at(&before, "/data/fingerprint").map(str::to_string);
    let known_jobs: BTreeSet<String> = stage
        .jobs(PIPELINE)
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    stage.put_data(DATA_FILE, csv)?;
    let start = Instant::now();
    let mut r = Round::default();
    let mut tick = tokio::time::interval(SAMPLE);
    loop {
        tick.tick().await;
        let (status, jobs, deployment) = tokio::join!(
            stage.status(PIPELINE),
            stage.jobs(PIPELINE),
            stage.predictor(PIPELINE)
        );
        let (status, jobs, deployment) = (status?, jobs?, deployment?);
        let now = start.elapsed();
        if r.data_seen.is_none()
            && str_at(&status, "/data/fingerprint").map(str::to_string) != old_fingerprint
        {
            r.data_seen = Some(now);
        }
        let job = jobs.iter().find(|j| !known_jobs.contains(&j.name_any()));
        if let Some(job) = job {
            r.job_created.get_or_insert(now);
            r.version = job.labels().get("champion.dev/model-version").cloned();
            let st = job.status.as_ref();
            if st.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
                r.job_complete.get_or_insert(now);
            }
            if job_failed(job) {
                r.outcome = "Failed".into();
                return Ok(r);
            }
        }
        if let Some(v) = r.version.clone() {
            let entry = history(&status)
                .into_iter()
                .find(|e| e["version"] == v.as_str());
            if let Some(e) = entry {
                r.score = e.get("score").and_then(Value::as_f64);
                match e.get("outcome").and_then(Value::as_str) {
                    Some("Promoted") => {
                        r.promoted.get_or_insert(now);
                    }
                    Some(other) => {
                        r.outcome = other.to_string();
                        return Ok(r);
                    }
                    None => {}
                }
            }
            if r.promoted.is_none() && str_at(&status, "/champion/version") == Some(v.as_str()) {
                r.promoted = Some(now);
            }
            if r.rolled_out.is_none()
                && deployment
                    .as_ref()
                    .is_some_and(|d| deployment_serves(d, &v))
            {
                r.rolled_out = Some(now);
            }
            if r.first_answer.is_none() {
                let seen = answers
                    .lock()
                    .ok()
                    .and_then(|a| a.first_seen.get(&v).copied());
                r.first_answer = seen.map(|t| t.saturating_duration_since(start));
            }
            if r.first_answer.is_some() && r.rolled_out.is_some() {
                r.outcome = "Promoted".into();
                return Ok(r);
            }
        }
        if start.elapsed() > ROUND_DEADLINE {
            r.outcome = format!("timed out after {} s", ROUND_DEADLINE.as_secs());
            return Ok(r);
        }
    }
}

fn job_failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}

/// One rung of the data ladder: the CSV, and what the trainer scores it when it could be
/// checked on this host.
struct Rung {
    flipped_percent: u32,
    csv: String,
    expected: Option<f64>,
}

/// Data whose models score strictly better from one rung to the next, so that every round is
/// promoted (the CRD demands minImprovement ≥ 0 and the gate promotes only a strictly better
/// challenger): the wine rows of slots 1 and 2 with the label of k in 10 rows flipped, k falling.
/// The trainer is deterministic, so when its release binary is on this host each candidate is
/// scored here first (against the same fixed test set, a few ms each) and the rungs are picked
/// from the strictly increasing ones; without it the candidates are used as they are.
fn ladder_data(rounds: usize, scratch: &Path) -> Result<Vec<Rung>> {
    let (d1, d2) = (wine_file("data_1.csv")?, wine_file("data_2.csv")?);
    let mut lines = d1.lines();
    let header = lines
        .next()
        .ok_or_else(|| ClusterError::Invalid("data_1.csv has no header".into()))?;
    let rows: Vec<&str> = lines.chain(d2.lines().skip(1)).collect();
    let quality = header
        .split(',')
        .position(|c| c == "quality")
        .ok_or_else(|| ClusterError::Invalid(format!("no quality column in {header}")))?;
    let candidate = |k: usize| -> Result<String> {
        let mut out = format!("{header}\n");
        for (i, row) in rows.iter().enumerate() {
            let mut cells: Vec<String> = row.split(',').map(str::to_string).collect();
            if i % 10 < k {
                let q: f64 = cells
                    .get(quality)
                    .and_then(|c| c.trim().parse().ok())
                    .ok_or_else(|| {
                        ClusterError::Invalid(format!("wine row {i}: no numeric quality in {row}"))
                    })?;
                cells[quality] = if q > 5.0 { "5".into() } else { "6".into() };
            }
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        Ok(out)
    };
    let mut rungs: Vec<Rung> = Vec::new();
    match local_trainer() {
        Some(trainer) => {
            for k in (0..=10).rev() {
                let csv = candidate(k)?;
                let score = score_locally(&trainer, scratch, k, &csv)?;
                if rungs
                    .last()
                    .and_then(|r| r.expected)
                    .is_none_or(|s| score > s)
                {
                    rungs.push(Rung {
                        flipped_percent: 10 * k as u32,
                        csv,
                        expected: Some(score),
                    });
                }
            }
        }
        None => {
            eprintln!(
                "no release trainer-job on this host: the rungs are not checked, a round may be rejected"
            );
            for k in (0..=10).rev() {
                rungs.push(Rung {
                    flipped_percent: 10 * k as u32,
                    csv: candidate(k)?,
                    expected: None,
                });
            }
        }
    }
    if rungs.len() < rounds + 1 {
        return Err(ClusterError::Invalid(format!(
            "only {} strictly improving data sets for {rounds} rounds; use --rounds {}",
            rungs.len(),
            rungs.len().saturating_sub(1)
        )));
    }
    // Evenly spaced over the ladder, first and last included.
    let last = rungs.len() - 1;
    let picks: BTreeSet<usize> = (0..=rounds)
        .map(|i| (i * last + rounds / 2) / rounds.max(1))
        .collect();
    let mut picked: Vec<Rung> = rungs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| picks.contains(i))
        .map(|(_, r)| r)
        .collect();
    picked.truncate(rounds + 1);
    Ok(picked)
}

/// The trainer binary `make images` built, if it is here.
fn local_trainer() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin = target.join("release/trainer-job");
    bin.is_file().then_some(bin)
}

/// Trains on `csv` with the pipeline's recipe and returns the challenger's f1Macro.
fn score_locally(trainer: &Path, scratch: &Path, k: usize, csv: &str) -> Result<f64> {
    let dir = scratch.join(format!("ladder/{k}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(ClusterError::io("creating", &data))?;
    let file = data.join(DATA_FILE);
    std::fs::write(&file, csv).map_err(ClusterError::io("writing", &file))?;
    let model = dir.join("model").join("v");
    let test_data = dir.join("test_data.csv");
    std::fs::write(&test_data, wine_file("test_data.csv")?)
        .map_err(ClusterError::io("writing", &test_data))?;
    let args: Vec<String> = vec![
        "train".into(),
        "--data-uri".into(),
        format!("file://{}/", data.display()),
        "--model-uri".into(),
        format!("file://{}/", model.display()),
        "--test-data-uri".into(),
        format!("file://{}", test_data.display()),
        "--target".into(),
        "quality".into(),
        "--positive-above".into(),
        "5".into(),
        "--drop".into(),
        "Id".into(),
        "--metric".into(),
        "f1Macro".into(),
        "--holdout-fraction".into(),
        "0.2".into(),
        "--seed".into(),
        "42".into(),
        "--algorithm".into(),
        "adaboost".into(),
        "--termination-log".into(),
        dir.join("termination-log").display().to_string(),
    ];
    let out = std::process::Command::new(trainer)
        .args(&args)
        .output()
        .map_err(|source| ClusterError::Spawn {
            command: trainer.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command: format!("{} {}", trainer.display(), args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let report = model.join("report.json");
    let text = std::fs::read_to_string(&report).map_err(ClusterError::io("reading", &report))?;
    let v: Value = serde_json::from_str(&text).map_err(|source| ClusterError::Serialize {
        what: "report.json of the ladder",
        source,
    })?;
    v.get("challengerScore")
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            ClusterError::Invalid(format!("{} has no challengerScore", report.display()))
        })
}

// ---------------------------------------------------------------------------------------------
// Scenario B: N pipelines
// ---------------------------------------------------------------------------------------------

/// Runs scenario B in a namespace of its own; the pipelines are deleted afterwards also when a
/// step failed (so the stage's diagnostics stay readable), and the rows measured before a
/// failure are kept.
async fn scale(cli: &Cli, rows: &mut Vec<Row>) -> Result<()> {
    let n = cli.pipelines;
    eprintln!("== scenario B: {n} pipelines on an empty data prefix");
    let stage = Stage::deploy("bench-op-scale").await?;
    let measured = scale_on(&stage, cli, rows).await;
    let deleted_at = Instant::now();
    let deleted = delete_pipelines(&stage, Duration::from_secs(cli.steady_deadline)).await;
    if deleted.is_ok() {
        eprintln!(
            "{n} pipelines deleted in {:.1} s",
            deleted_at.elapsed().as_secs_f64()
        );
    }
    measured?;
    deleted?;
    stage.passed();
    Ok(())
}

async fn delete_pipelines(stage: &Stage, deadline: Duration) -> Result<()> {
    stage
        .pipelines()
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .map_err(ClusterError::kube("delete the ModelPipelines"))?;
    wait_for("the ModelPipelines to be gone", deadline, || async {
        let left = stage
            .pipelines()
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::kube("list ModelPipelines"))?
            .items
            .len();
        Ok((left == 0).then_some(()))
    })
    .await
}

/// Runs `op` on each of the `n` scale-scenario pipelines (`p000`, `p001`, …), 16 requests in
/// flight, stopping at the first error.
async fn each_scale_pipeline<F, Fut>(n: usize, op: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter((0..n).map(|i| format!("p{i:03}")))
        .map(op)
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn scale_on(stage: &Stage, cli: &Cli, rows: &mut Vec<Row>) -> Result<()> {
    let n = cli.pipelines;
    let created_at = Instant::now();
    // The manifest's data prefix (`<store>/data/`) stays empty: NoData, no Job, no predictor.
    let api = stage.pipelines().clone();
    each_scale_pipeline(n, |name| {
        let api = api.clone();
        let mut m = stage.pipeline_manifest(&name, json!({}));
        if let Some(d) = m.pointer_mut("/spec/data").and_then(Value::as_object_mut) {
            d.remove("pollInterval");
        }
        async move {
            let obj: DynamicObject =
                serde_json::from_value(m).map_err(|source| ClusterError::Serialize {
                    what: "ModelPipeline",
                    source,
                })?;
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(ClusterError::kube(format!("create ModelPipeline {name}")))?;
            Ok(())
        }
    })
    .await?;
    let create_s = created_at.elapsed().as_secs_f64();
    eprintln!("{n} pipelines created in {create_s:.1} s");
    let deadline = Duration::from_secs(cli.steady_deadline);
    let (steady_n, steady_s) = wait_steady(stage, n, created_at, deadline).await?;
    push(
        rows,
        Row::new(
            format!("{n} pipelines reach steady state (observedGeneration + DataAvailable)"),
            format!(
                "{steady_n} / {n} in {steady_s:.1} s from the first create (creates took {create_s:.1} s)"
            ),
            &format!("all, within {} s", cli.steady_deadline),
            Some(steady_n == n),
        ),
    );

    let default_window = idle_window(stage, cli.idle_seconds).await?;
    let pod = default_window.pod.clone();
    push(
        rows,
        Row::new(
            format!("operator resident memory, {n} pipelines, steady"),
            format!(
                "{:.1} MB (peak {:.1} MB; container cgroup memory usage {})",
                default_window.rss_after / 1e6,
                default_window.rss_peak / 1e6,
                default_window
                    .cgroup_bytes
                    .map_or("n/a".into(), |b| format!("{:.1} MB", b / 1e6))
            ),
            "≤ 100 MB",
            Some(default_window.rss_peak <= GOAL_RSS_BYTES),
        ),
    );
    push(
        rows,
        Row::new(
            format!(
                "operator idle CPU, {n} pipelines, pollInterval 30s (CRD default), {} s",
                cli.idle_seconds
            ),
            format!(
                "{:.2} % of a core ({})",
                default_window.cpu_percent,
                default_window.reconciles_text()
            ),
            "≤ 2 %",
            Some(default_window.cpu_percent <= GOAL_IDLE_CPU_PERCENT),
        ),
    );

    let mut last = default_window;
    if cli.fast_poll_window {
        let patched_at = Instant::now();
        each_scale_pipeline(n, |name| {
            let api = api.clone();
            async move {
                let patch = json!({"spec": {"data": {"pollInterval": "2s"}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(ClusterError::kube(format!("patch ModelPipeline {name}")))?;
                Ok(())
            }
        })
        .await?;
        let (again, again_s) = wait_steady(stage, n, patched_at, deadline).await?;
        eprintln!("{again} / {n} steady at pollInterval 2s after {again_s:.1} s");
        let fast = idle_window(stage, cli.idle_seconds).await?;
        push(
            rows,
            Row::new(
                format!(
                    "operator idle CPU, {n} pipelines, pollInterval 2s, {} s",
                    cli.idle_seconds
                ),
                format!(
                    "{:.2} % of a core ({}); RSS {:.1} MB",
                    fast.cpu_percent,
                    fast.reconciles_text(),
                    fast.rss_after / 1e6
                ),
                "≤ 2 %",
                Some(fast.cpu_percent <= GOAL_IDLE_CPU_PERCENT && again == n),
            ),
        );
        last = fast;
    }

    // Nothing ran: no Job, no predictor, and the operator is the pod it was.
    let jobs: Api<Job> = stage.api();
    let deployments: Api<Deployment> = stage.api();
    let launched = jobs
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::kube("list Jobs"))?
        .items
        .len()
        + deployments
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=champion"))
            .await
            .map_err(ClusterError::kube("list Deployments"))?
            .items
            .len();
    let now_pod = stage.operator_pod().await?;
    let restarts = now_pod.as_ref().map_or(0, restart_count);
    let same = now_pod.as_ref().map(ResourceExt::name_any) == Some(pod.clone());
    push(
        rows,
        Row::new(
            "operator restarts during scenario B",
            format!(
                "{restarts}{}",
                if same {
                    ""
                } else {
                    " (the operator pod was replaced)"
                }
            ),
            "0",
            Some(restarts == 0 && same && last.restarts == 0),
        ),
    );
    if launched > 0 {
        eprintln!("warning: {launched} Jobs/predictor Deployments exist in the scale namespace");
    }

    Ok(())
}

/// Waits until every pipeline's status carries its current generation and a DataAvailable
/// condition; returns how many got there and when (seconds since `since`). Stops at the
/// deadline with the count reached so far.
async fn wait_steady(
    stage: &Stage,
    n: usize,
    since: Instant,
    deadline: Duration,
) -> Result<(usize, f64)> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_report = Instant::now();
    let mut steady = 0;
    loop {
        tick.tick().await;
        // A busy API server may drop one list of N full objects; the next tick asks again.
        match stage.pipelines().list(&ListParams::default()).await {
            Ok(list) => steady = list.items.iter().filter(|p| is_steady(p)).count(),
            Err(e) => eprintln!("  listing the ModelPipelines failed (retrying): {e}"),
        }
        if steady >= n {
            return Ok((steady, since.elapsed().as_secs_f64()));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {steady} / {n} steady after {:.0} s",
                since.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if since.elapsed() > deadline {
            return Ok((steady, since.elapsed().as_secs_f64()));
        }
    }
}

fn is_steady(p: &DynamicObject) -> bool {
    let status = p.data.get("status").cloned().unwrap_or_default();
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    observed.is_some()
        && observed == p.metadata.generation
        && condition(&status, "DataAvailable").is_some()
}

/// The operator process over one idle window.
struct Window {
    pod: String,
    rss_after: f64,
    rss_peak: f64,
    cgroup_bytes: Option<f64>,
    cpu_percent: f64,
    reconciles: Option<f64>,
    seconds: f64,
    restarts: i32,
}

impl Window {
    fn reconciles_text(&self) -> String {
        match self.reconciles {
            Some(r) => format!("{:.1} reconciles/s", r / self.seconds),
            None => "reconcile count unavailable".into(),
        }
    }
}

/// Measures the operator process's CPU over `seconds` of idleness, and its memory after.
async fn idle_window(stage: &Stage, seconds: u64) -> Result<Window> {
    let pod = stage
        .operator_pod()
        .await?
        .ok_or_else(|| ClusterError::Invalid("no operator pod".into()))?;
    let proc = OperatorProcess::find(&pod)?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let metrics = format!("{ip}:8080");
    let reconciles_before = reconciles_total(&metrics).await;
    let cpu_before = proc.cpu_ticks()?;
    let t0 = Instant::now();
    eprintln!(
        "measuring operator pid {} (pod {}) for {seconds} s",
        proc.pid,
        pod.name_any()
    );
    // The measurement window itself: the operator is left alone for its length.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_after = proc.cpu_ticks()?;
    let elapsed = t0.elapsed().as_secs_f64();
    let reconciles_after = reconciles_total(&metrics).await;
    let (rss_after, rss_peak) = proc.rss()?;
    let restarts = stage
        .operator_pod()
        .await?
        .as_ref()
        .map_or(0, restart_count);
    Ok(Window {
        pod: pod.name_any(),
        rss_after,
        rss_peak,
        cgroup_bytes: proc.cgroup_memory(),
        cpu_percent: 100.0 * (cpu_after - cpu_before) / elapsed,
        reconciles: reconciles_before.zip(reconciles_after).map(|(a, b)| b - a),
        seconds: elapsed,
        restarts,
    })
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The sum of `champion_reconciles_total` over its results, from the operator's /metrics.
async fn reconciles_total(host_port: &str) -> Option<f64> {
    let (code, body) = http_get(host_port, "/metrics").await.ok()?;
    (code == 200).then(|| {
        body.lines()
            .filter(|l| l.starts_with("champion_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// The operator's process on this host, found through the cgroup of its container.
struct OperatorProcess {
    pid: u32,
    /// The container's cgroup path (`/kubepods/…/<container id>`).
    cgroup: String,
}

impl OperatorProcess {
    fn find(pod: &Pod) -> Result<OperatorProcess> {
        let id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "operator"))
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.rsplit("://").next())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ClusterError::Invalid(format!(
                    "operator pod {} has no running container id",
                    pod.name_any()
                ))
            })?
            .to_string();
        let proc_dir = Path::new("/proc");
        let entries = std::fs::read_dir(proc_dir).map_err(ClusterError::io("listing", proc_dir))?;
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cgroups) = std::fs::read_to_string(e.path().join("cgroup")) else {
                continue;
            };
            let Some(line) = cgroups.lines().find(|l| l.ends_with(&id)) else {
                continue;
            };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim() != "operator" {
                continue;
            }
            let cgroup = line.splitn(3, ':').nth(2).unwrap_or_default().to_string();
            return Ok(OperatorProcess { pid, cgroup });
        }
        Err(ClusterError::Invalid(format!(
            "no process named operator in a cgroup of container {id} on this host"
        )))
    }

    /// utime + stime in seconds.
    fn cpu_ticks(&self) -> Result<f64> {
        let path = PathBuf::from(format!("/proc/{}/stat", self.pid));
        let text = std::fs::read_to_string(&path).map_err(ClusterError::io("reading", &path))?;
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
            return Err(ClusterError::Invalid(format!(
                "{}: expected utime and stime as fields 14 and 15 in {text:?}",
                path.display()
            )));
        };
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        Ok((utime + stime) as f64 / hz)
    }

    /// (VmRSS, VmHWM) in bytes.
    fn rss(&self) -> Result<(f64, f64)> {
        let path = PathBuf::from(format!("/proc/{}/status", self.pid));
        let text = std::fs::read_to_string(&path).map_err(ClusterError::io("reading", &path))?;
        let kb = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v * 1024.0)
        };
        match (kb("VmRSS:"), kb("VmHWM:")) {
            (Some(now), Some(peak)) => Ok((now, peak)),
            _ => Err(ClusterError::Invalid(format!(
                "{}: no VmRSS/VmHWM lines",
                path.display()
            ))),
        }
    }

    /// The container's memory as its cgroup counts it (includes page cache), when readable.
    fn cgroup_memory(&self) -> Option<f64> {
        let rel = self.cgroup.trim_start_matches('/');
        [
            format!("/sys/fs/cgroup/memory/{rel}/memory.usage_in_bytes"),
            format!("/sys/fs/cgroup/{rel}/memory.current"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.trim().parse().ok())
    }
}

// ---------------------------------------------------------------------------------------------

struct Stats {
    min: String,
    median: String,
    max: String,
}

fn stats(values: impl Iterator<Item = Duration>) -> Stats {
    let mut v: Vec<f64> = values.map(|d| d.as_secs_f64()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        let none = || "-".to_string();
        return Stats {
            min: none(),
            median: none(),
            max: none(),
        };
    }
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Stats {
        min: format!("{:.1}", v[0]),
        median: format!("{median:.1}"),
        max: format!("{:.1}", v[v.len() - 1]),
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------
// Scenario C: failing pipelines, API request rate
// ---------------------------------------------------------------------------------------------

/// `apiserver_request_total` by (resource/subresource, verb), summed over codes and the rest.
type RequestCounts = BTreeMap<(String, String), f64>;

/// The API server's request counters, read from its `/metrics`.
async fn request_counts(stage: &Stage) -> Result<RequestCounts> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| ClusterError::Invalid(format!("GET /metrics request: {e}")))?;
    let text = stage
        .cluster
        .client
        .request_text(req)
        .await
        .map_err(ClusterError::kube("GET the API server's /metrics"))?;
    Ok(parse_request_counts(&text))
}

fn parse_request_counts(text: &str) -> RequestCounts {
    let mut out = RequestCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let (resource, sub) = (label("resource"), label("subresource"));
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        *out.entry((resource, label("verb"))).or_default() += value;
    }
    out
}

/// Requests per second of each (resource, verb) between two readings `seconds` apart.
fn rates(before: &RequestCounts, after: &RequestCounts, seconds: f64) -> RequestCounts {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) / seconds,
            )
        })
        .filter(|(_, r)| *r > 0.0)
        .collect()
}

/// The API request rates over a window of `seconds` in which the benchmark sends nothing.
async fn request_window(stage: &Stage, seconds: u64) -> Result<RequestCounts> {
    let before = request_counts(stage).await?;
    let t0 = Instant::now();
    // The measurement window itself: the cluster is left alone for its length.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = request_counts(stage).await?;
    Ok(rates(&before, &after, t0.elapsed().as_secs_f64()))
}

fn rate_of(r: &RequestCounts, resource: &str, verbs: &[&str]) -> f64 {
    r.iter()
        .filter(|((res, verb), _)| res == resource && verbs.contains(&verb.as_str()))
        .map(|(_, v)| v)
        .sum()
}

fn rate_text(r: &RequestCounts) -> String {
    let mut top: Vec<_> = r.iter().filter(|(_, v)| **v >= 0.05).collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1));
    top.iter()
        .take(6)
        .map(|((res, verb), v)| format!("{verb} {res} {v:.2}/s"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn failing(cli: &Cli, rows: &mut Vec<Row>) -> Result<()> {
    let n = cli.failing_pipelines;
    eprintln!("== scenario C: {n} pipelines failing on a missing Secret");
    // readSecrets=true: the operator may read Secrets; the one every pipeline names is missing.
    let stage = Stage::deploy_with("bench-op-failing", &["readSecrets=true"]).await?;
    let measured = failing_on(&stage, cli, rows).await;
    let deleted = delete_pipelines(&stage, Duration::from_secs(cli.steady_deadline)).await;
    measured?;
    deleted?;
    stage.passed();
    Ok(())
}

async fn failing_on(stage: &Stage, cli: &Cli, rows: &mut Vec<Row>) -> Result<()> {
    let n = cli.failing_pipelines;
    let w = cli.rate_seconds;
    eprintln!("baseline: the operator with no pipeline, {w} s");
    let baseline = request_window(stage, w).await?;
    let base_total: f64 = baseline.values().sum();

    let api = stage.pipelines().clone();
    let created_at = Instant::now();
    each_scale_pipeline(n, |name| {
        let api = api.clone();
        let mut m = stage.pipeline_manifest(&name, json!({}));
        if let Some(d) = m.pointer_mut("/spec/data").and_then(Value::as_object_mut) {
            // The CRD's default pollInterval (30 s), as a user's pipeline has it.
            d.remove("pollInterval");
            d.insert("secretRef".into(), json!({"name": "store-credentials"}));
        }
        async move {
            let obj: DynamicObject =
                serde_json::from_value(m).map_err(|source| ClusterError::Serialize {
                    what: "ModelPipeline",
                    source,
                })?;
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(ClusterError::kube(format!("create ModelPipeline {name}")))?;
            Ok(())
        }
    })
    .await?;
    let deadline = Duration::from_secs(cli.steady_deadline);
    let shown = wait_for(
        "every failing pipeline to show SecretUnavailable",
        deadline,
        || async {
            let list = stage
                .pipelines()
                .list(&ListParams::default())
                .await
                .map_err(ClusterError::kube("list ModelPipelines"))?;
            let failing = list
                .items
                .iter()
                .filter(|p| {
                    let status = p.data.get("status").cloned().unwrap_or_default();
                    condition(&status, "DataAvailable").is_some_and(|c| {
                        c["status"] == "False" && c["reason"] == "SecretUnavailable"
                    })
                })
                .count();
            Ok((failing == n).then_some(created_at.elapsed()))
        },
    )
    .await?;
    push(
        rows,
        Row::new(
            format!(
                "{n} pipelines with a missing Secret show DataAvailable=False/SecretUnavailable"
            ),
            format!("all {n} after {:.1} s", shown.as_secs_f64()),
            "all",
            Some(true),
        ),
    );
    // Past the first announcement of each failure: from here on only polls.
    eprintln!("{n} failing pipelines, {w} s");
    let fail = request_window(stage, w).await?;
    let total: f64 = fail.values().sum();
    let secrets = rate_of(&fail, "secrets", &["GET"]) - rate_of(&baseline, "secrets", &["GET"]);
    let writes = rate_of(&fail, "modelpipelines/status", &["PATCH", "APPLY", "PUT"])
        + rate_of(&fail, "events", &["POST", "CREATE"]);
    let per_poll = n as f64 / 30.0;
    push(
        rows,
        Row::new(
            "API requests, operator with no pipeline (baseline)",
            format!("{base_total:.1}/s in all ({})", rate_text(&baseline)),
            "–",
            None,
        ),
    );
    push(
        rows,
        Row::new(
            format!("API requests, {n} pipelines failing on a missing Secret, pollInterval 30s"),
            format!(
                "{total:.1}/s in all, {:.1}/s over the baseline; Secret GETs {secrets:.1}/s; status writes + Events {writes:.2}/s ({})",
                total - base_total,
                rate_text(&fail)
            ),
            &format!("one Secret read per pipeline per poll ({per_poll:.0}/s), no write per poll"),
            Some(secrets <= per_poll * 1.2 && writes < 0.5),
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_are_summed_by_resource_and_verb() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 7
apiserver_request_total{code="403",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="champion.dev",resource="modelpipelines",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 2
"#;
        let c = parse_request_counts(text);
        assert_eq!(c.get(&("secrets".into(), "GET".into())), Some(&10.0));
        assert_eq!(
            c.get(&("modelpipelines/status".into(), "APPLY".into())),
            Some(&2.0)
        );
        let later = parse_request_counts(&text.replace("} 7", "} 27"));
        let r = rates(&c, &later, 10.0);
        assert_eq!(rate_of(&r, "secrets", &["GET"]), 2.0);
        assert_eq!(r.len(), 1, "unchanged counters are left out: {r:?}");
    }
}
