//! Approval (`spec.promotion.approval`) end to end on the real local cluster: the operator from
//! the chart in the test's namespace, the wine pipeline on a hostPath store (see
//! `operator_e2e.rs` for the setup), and the user's answers given with `kubectl annotate`, as a
//! person would. Each test asserts on the objects the operator produced: status (challenger,
//! conditions, history with who asked), Events, and the predictor Deployment and its answers.
//!
//! Needs `make images` and the cluster (`champion-cluster up`, which imports build/images).
//! Run: `cargo test -p champion-tests --test approval_e2e -- --test-threads=2`.

use std::time::Duration;

use champion_tests::Result;
use champion_tests::operator::{
    Stage, condition, contradicting_rows, csv_row_as_request, history, http_post_json, str_at,
    wine_file,
};
use serde_json::{Value, json};

/// Deadline of each wait: training, rollout and GC take seconds here; this is the bound for a
/// loaded two-core machine.
const WAIT: Duration = Duration::from_secs(180);

/// The weak first dataset: 60 rows of data_1.csv, every label contradicted.
fn weak_data() -> Result<String> {
    let data_1 = wine_file("data_1.csv")?;
    let few: String = data_1.lines().take(61).map(|l| format!("{l}\n")).collect();
    contradicting_rows(&few)
}

/// Waits until a challenger other than `not` waits for approval; returns the status.
async fn wait_waiting(stage: &Stage, pipeline: &str, not: &[&str]) -> Result<Value> {
    stage
        .wait_status(pipeline, "a challenger awaiting approval", WAIT, |s| {
            let waiting = str_at(s, "/challenger/state") == Some("AwaitingApproval");
            let version = str_at(s, "/challenger/version")?;
            (waiting && !not.contains(&version)).then(|| s.clone())
        })
        .await
}

fn f64_at(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// `kubectl annotate --overwrite modelpipeline/<pipeline> <key>=<value>` with extra flags.
fn annotate(stage: &Stage, pipeline: &str, pair: &str, flags: &[&str]) -> Result<()> {
    let target = format!("modelpipeline/{pipeline}");
    let mut args = vec!["annotate", "--overwrite", target.as_str()];
    args.extend_from_slice(flags);
    args.push(pair);
    stage.kubectl(&args).map(|_| ())
}

/// The last history entry.
fn last_entry(status: &Value) -> Value {
    history(status).last().cloned().unwrap_or_default()
}

/// The AwaitingApproval condition names the waiting version, both scores as the status has
/// them and the exact commands that answer.
fn assert_waiting_condition(status: &Value, pipeline: &str, ns: &str) {
    let version = str_at(status, "/challenger/version").unwrap_or_default();
    let cond = condition(status, "AwaitingApproval")
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["status"], "True", "{status}");
    assert_eq!(cond["reason"], "AwaitingApproval", "{status}");
    let msg = cond["message"].as_str().unwrap_or_default();
    let score = f64_at(status, "/challenger/score").unwrap_or(-1.0);
    assert!(
        msg.contains(&format!(
            "version {version} (f1Macro {score:.4}) waits for approval"
        )),
        "{msg}"
    );
    if let Some(cs) = f64_at(status, "/challenger/championScore") {
        let champion = str_at(status, "/champion/version").unwrap_or_default();
        assert!(
            msg.contains(&format!("champion {champion} f1Macro {cs:.4}")),
            "{msg}"
        );
    }
    for key in ["approve", "reject"] {
        let cmd = format!(
            "kubectl annotate modelpipeline/{pipeline} -n {ns} --overwrite champion.dev/{key}={version}"
        );
        assert!(msg.contains(&cmd), "{cmd:?} in {msg}");
    }
}

/// POSTs the first test row to every ready predictor pod of `version` and checks the answer
/// comes from that version.
async fn assert_served_by(stage: &Stage, pipeline: &str, version: &str) -> Result<()> {
    let ips = stage.predictor_ips(pipeline, version).await?;
    assert!(!ips.is_empty(), "no ready predictor pod serves {version}");
    let request = csv_row_as_request(&wine_file("test_data.csv")?, 0, &["quality", "Id"])?;
    for ip in ips {
        let reply = http_post_json(&format!("{ip}:8080"), "/predict", &request).await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.headers.get("x-model-version").map(String::as_str),
            Some(version),
            "{reply:?}"
        );
    }
    Ok(())
}

/// Manual approval: the first model waits (phase Pending, no predictor) and is approved; a
/// better candidate waits with both scores while the champion serves; an answer naming another
/// version is ignored with a Warning naming the waiting one; reject keeps the champion and its
/// predictor untouched; approve (by another field manager) promotes and serves. The history
/// says who asked, from the pipeline's managedFields.
#[tokio::test]
async fn manual_approval_waits_with_both_scores_and_records_who_approved_or_rejected() -> Result<()>
{
    const P: &str = "wine";
    let stage = Stage::deploy("e2e-approval").await?;
    let ns = stage.ns.name.clone();
    stage.put_data("a_weak.csv", &weak_data()?)?;
    stage
        .create_pipeline(P, json!({"promotion": {"approval": "Manual"}}))
        .await?;

    // 1. The first model waits: nothing serves yet.
    let first = wait_waiting(&stage, P, &[]).await?;
    let v1 = str_at(&first, "/challenger/version")
        .unwrap_or_default()
        .to_string();
    assert_eq!(str_at(&first, "/phase"), Some("Pending"), "{first}");
    assert!(first.get("champion").is_none(), "{first}");
    assert!(f64_at(&first, "/challenger/score").is_some(), "{first}");
    assert_waiting_condition(&first, P, &ns);
    assert!(
        condition(&first, "AwaitingApproval")
            .and_then(|c| c["message"].as_str())
            .is_some_and(|m| m.contains("no champion yet")),
        "{first}"
    );
    assert!(
        stage.predictor(P).await?.is_none(),
        "no predictor before approval"
    );
    let events = stage.events(P, "AwaitingApproval").await?;
    assert!(
        events
            .iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains(&v1)),
        "an AwaitingApproval Event names {v1}: {events:?}"
    );

    // 2. Approved with kubectl annotate: promoted and served; who asked is kubectl's manager.
    annotate(&stage, P, &format!("champion.dev/approve={v1}"), &[])?;
    let (served, _) = stage.wait_champion(P, None, WAIT).await?;
    assert_eq!(str_at(&served, "/champion/version"), Some(v1.as_str()));
    let h = last_entry(&served);
    assert_eq!(
        (
            h["version"].as_str(),
            h["outcome"].as_str(),
            h["cause"].as_str()
        ),
        (Some(v1.as_str()), Some("Promoted"), Some("Approved")),
        "{h}"
    );
    assert_eq!(h["by"], "kubectl-annotate", "{h}");
    assert_eq!(str_at(&served, "/lastApprove"), Some(v1.as_str()));
    assert_eq!(
        condition(&served, "AwaitingApproval").map(|c| c["status"].clone()),
        Some(json!("False"))
    );
    assert_served_by(&stage, P, &v1).await?;

    // 3. Better data: the candidate waits with both scores while v1 serves.
    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let second = wait_waiting(&stage, P, &[&v1]).await?;
    let v2 = str_at(&second, "/challenger/version")
        .unwrap_or_default()
        .to_string();
    let (s2, c2) = (
        f64_at(&second, "/challenger/score").unwrap_or(-1.0),
        f64_at(&second, "/challenger/championScore").unwrap_or(-1.0),
    );
    assert!(s2 > c2 && c2 >= 0.0, "it passed the offline gate: {second}");
    assert_eq!(str_at(&second, "/phase"), Some("Serving"), "{second}");
    assert_eq!(str_at(&second, "/champion/version"), Some(v1.as_str()));
    assert_waiting_condition(&second, P, &ns);

    // 4. A reject naming another version: ignored, with a Warning naming the waiting one.
    annotate(&stage, P, &format!("champion.dev/reject={v1}"), &[])?;
    let ignored = stage
        .wait_status(P, "the misdirected reject acknowledged", WAIT, |s| {
            (str_at(s, "/lastReject") == Some(v1.as_str())).then(|| s.clone())
        })
        .await?;
    assert_eq!(
        str_at(&ignored, "/challenger/state"),
        Some("AwaitingApproval")
    );
    assert_eq!(str_at(&ignored, "/challenger/version"), Some(v2.as_str()));
    let warnings = stage.events(P, "ApprovalIgnored").await?;
    assert!(
        warnings.iter().any(|e| {
            let note = e.note.as_deref().unwrap_or_default();
            e.type_.as_deref() == Some("Warning")
                && note.contains(&format!("champion.dev/reject={v1} ignored"))
                && note.contains(&format!("version {v2} is the one waiting"))
        }),
        "a Warning names the waiting version: {warnings:?}"
    );

    // 5. Rejected: history says who, the champion and its predictor are untouched.
    let before = stage.predictor(P).await?;
    annotate(&stage, P, &format!("champion.dev/reject={v2}"), &[])?;
    let rejected = stage
        .wait_status(P, "the candidate rejected", WAIT, |s| {
            (str_at(s, "/lastReject") == Some(v2.as_str())).then(|| s.clone())
        })
        .await?;
    let h = last_entry(&rejected);
    assert_eq!(
        (
            h["version"].as_str(),
            h["outcome"].as_str(),
            h["cause"].as_str()
        ),
        (Some(v2.as_str()), Some("Rejected"), Some("RejectedByUser")),
        "{h}"
    );
    assert_eq!(h["by"], "kubectl-annotate", "{h}");
    assert_eq!(
        (f64_at(&h, "/score"), f64_at(&h, "/championScore")),
        (Some(s2), Some(c2))
    );
    assert_eq!(str_at(&rejected, "/champion/version"), Some(v1.as_str()));
    assert_eq!(str_at(&rejected, "/lastOutcome"), Some("Rejected"));
    assert!(rejected.get("rollout").is_none(), "{rejected}");
    let after = stage.predictor(P).await?;
    assert_eq!(
        after.as_ref().and_then(|d| d.metadata.generation),
        before.as_ref().and_then(|d| d.metadata.generation),
        "the predictor Deployment was not changed"
    );
    assert_served_by(&stage, P, &v1).await?;

    // 6. More data: a third candidate waits; approved under another field manager, it serves.
    stage.put_data("data_2.csv", &wine_file("data_2.csv")?)?;
    let third = wait_waiting(&stage, P, &[&v1, &v2]).await?;
    let v3 = str_at(&third, "/challenger/version")
        .unwrap_or_default()
        .to_string();
    annotate(
        &stage,
        P,
        &format!("champion.dev/approve={v3}"),
        &["--field-manager=release-manager"],
    )?;
    let (promoted, _) = stage.wait_champion(P, Some(&v1), WAIT).await?;
    assert_eq!(str_at(&promoted, "/champion/version"), Some(v3.as_str()));
    let h = last_entry(&promoted);
    assert_eq!(
        (h["outcome"].as_str(), h["cause"].as_str(), h["by"].as_str()),
        (Some("Promoted"), Some("Approved"), Some("release-manager")),
        "{h}"
    );
    assert_served_by(&stage, P, &v3).await?;
    let promoted_events = stage.events(P, "ModelPromoted").await?;
    assert!(
        promoted_events.iter().any(|e| {
            let note = e.note.as_deref().unwrap_or_default();
            note.contains(&v3) && note.contains("on approval by release-manager")
        }),
        "{promoted_events:?}"
    );
    stage.passed();
    Ok(())
}

/// Borderline approval: two pipelines on the same data, one with borderlineBand 1 (every
/// candidate is within it) and one with borderlineBand 0 (none is). Their first models do not
/// wait (nothing to be borderline against); on the same better data, with the same scores, the
/// first candidate waits and the second is promoted at once. The waiting one is then approved.
#[tokio::test]
async fn borderline_approval_holds_a_candidate_inside_the_band_and_not_one_outside() -> Result<()> {
    const INSIDE: &str = "inside";
    const OUTSIDE: &str = "outside";
    let stage = Stage::deploy("e2e-borderline").await?;
    stage.put_data("a_weak.csv", &weak_data()?)?;
    for (name, band) in [(INSIDE, 1.0), (OUTSIDE, 0.0)] {
        stage
            .create_pipeline(
                name,
                json!({"promotion": {"approval": "Borderline", "borderlineBand": band}}),
            )
            .await?;
    }
    let (first_in, _) = stage.wait_champion(INSIDE, None, WAIT).await?;
    let (first_out, _) = stage.wait_champion(OUTSIDE, None, WAIT).await?;
    for first in [&first_in, &first_out] {
        assert_eq!(last_entry(first)["cause"], "FirstModel", "{first}");
    }
    let old_in = str_at(&first_in, "/champion/version")
        .unwrap_or_default()
        .to_string();
    let old_out = str_at(&first_out, "/champion/version")
        .unwrap_or_default()
        .to_string();

    stage.put_data("data_1.csv", &wine_file("data_1.csv")?)?;
    let (promoted, _) = stage.wait_champion(OUTSIDE, Some(&old_out), WAIT).await?;
    let h = last_entry(&promoted);
    assert_eq!(
        (h["outcome"].as_str(), h["cause"].as_str()),
        (Some("Promoted"), Some("BeatChampion")),
        "outside the band (0): promoted without waiting: {h}"
    );
    assert!(h.get("by").is_none(), "{h}");

    let waiting = wait_waiting(&stage, INSIDE, &[&old_in]).await?;
    assert_waiting_condition(&waiting, INSIDE, &stage.ns.name);
    let reason = str_at(&waiting, "/challenger/reason").unwrap_or_default();
    assert!(
        reason.contains("Borderline") && reason.contains("less than borderlineBand 1"),
        "{reason}"
    );
    assert_eq!(
        (
            f64_at(&waiting, "/challenger/score"),
            f64_at(&waiting, "/challenger/championScore")
        ),
        (f64_at(&h, "/score"), f64_at(&h, "/championScore")),
        "the same data and seed: the same scores, judged differently only by the band"
    );
    assert_eq!(str_at(&waiting, "/champion/version"), Some(old_in.as_str()));
    assert_served_by(&stage, INSIDE, &old_in).await?;

    let v = str_at(&waiting, "/challenger/version")
        .unwrap_or_default()
        .to_string();
    annotate(&stage, INSIDE, &format!("champion.dev/approve={v}"), &[])?;
    let (approved, _) = stage.wait_champion(INSIDE, Some(&old_in), WAIT).await?;
    assert_eq!(str_at(&approved, "/champion/version"), Some(v.as_str()));
    assert_eq!(last_entry(&approved)["cause"], "Approved");
    assert_served_by(&stage, INSIDE, &v).await?;
    stage.passed();
    Ok(())
}
