//! The ModelPipeline reconcile, top to bottom:
//!
//! 1. [`observe`]: every read (a fresh copy of the pipeline, its Jobs and Deployment, the data
//!    listing, Secrets, the finished run's report, a failed pod's termination message).
//! 2. [`decide`]: one pure function picks the one step, with its reasons.
//! 3. [`transition`]: one pure function turns the step into the next status and its effects.
//! 4. [`apply_objects`]: writes the objects the step wants.
//! 5. [`record`]: writes the status, then sends Events and counts metrics.
//!
//! Every step that changes something writes the status, and the status write itself triggers
//! the next reconcile, so a run flows launch → judge → rollout without waiting for the poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use champion_api::ModelPipeline;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{Span, field, instrument, warn};

use crate::apply::{Applied, apply_objects};
use crate::context::Context;
use crate::decide::{Step, decide};
use crate::error::Error;
use crate::events::{EventSpec, Reason, Related, publish};
use crate::freshness::pipeline_key;
use crate::observe::observe;
use crate::record::record;
use crate::transition::transition;

/// Tells the log lines of one reconcile from those of the next: a process-wide counter,
/// started at a time-derived value so that two operator processes rarely share ids.
fn next_reconcile_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    format!(
        "{:016x}",
        start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
    )
}

/// Reconciles one ModelPipeline.
#[instrument(skip(mp, ctx), fields(namespace, pipeline, reconcile_id, step))]
pub async fn reconcile(mp: Arc<ModelPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    Span::current()
        .record(
            "namespace",
            field::display(mp.namespace().unwrap_or_default()),
        )
        .record("pipeline", field::display(mp.name_any()))
        .record("reconcile_id", next_reconcile_id());
    if !ctx.caches_ready.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some((mp, observed)) = observe(&ctx, mp.clone()).await? else {
        // Deleted: no reconcile follows, so its series go now.
        ctx.metrics
            .forget_pipeline(&mp.namespace().unwrap_or_default(), &mp.name_any());
        return Ok(Action::await_change());
    };
    let step = decide(&mp, &observed);
    Span::current().record("step", field::debug(&step));
    let mut next = transition(&mp, &observed, &step);
    let ns = mp.namespace().unwrap_or_default();
    if apply_objects(&ctx, &ns, &next.effects).await? == Applied::NoRunSlot {
        // Another pipeline took the last trainer slot since `observe` counted them.
        next = transition(&mp, &observed, &Step::Queued);
    }
    record(&ctx, &mp, &next).await?;
    ctx.listings.recorded(&pipeline_key(&mp));
    ctx.errors.succeeded(&pipeline_key(&mp));
    ctx.metrics.reconciled();
    Ok(Action::requeue(next.effects.requeue))
}

/// Forgets what the operator keeps per pipeline (metric series, freshness records) for
/// pipelines that no longer exist: deletion has no reconcile of its own.
pub fn forget_deleted(ctx: &Context, existing: &[Arc<ModelPipeline>]) {
    let keep: HashSet<(String, String)> = existing.iter().map(|mp| pipeline_key(mp)).collect();
    ctx.fresh.retain(&keep);
    ctx.errors.retain(&keep);
    ctx.listings.retain(&keep);
    ctx.live.retain(&keep);
    ctx.drift.retain(&keep);
    ctx.metrics.retain_pipelines(&keep);
}

/// The Warning Event for a failed reconcile the pipeline's author can act on (an object the
/// API server refused, a Secret it could not read), naming that object; `None` for failures
/// that are the operator's own (lost leadership, a status write that lost a race).
pub fn failure_event(error: &Error) -> Option<EventSpec> {
    let related = match error {
        Error::ApplyJob { name, .. } | Error::ReadJob { name, .. } => {
            Some(Related::Job(name.clone()))
        }
        Error::ApplyDeployment { name, .. } => Some(Related::Deployment(name.clone())),
        Error::ApplyService { name, .. } => Some(Related::Service(name.clone())),
        Error::ReadSecret { .. } => None,
        Error::MissingNamespace(_)
        | Error::ReadPipeline { .. }
        | Error::NotLeader { .. }
        | Error::PatchStatus { .. } => return None,
    };
    Some(EventSpec {
        reason: Reason::ReconcileFailed,
        note: format!("{error}; retrying with back-off"),
        related,
    })
}

/// Requeues a failed reconcile after a delay that grows with its failures in a row
/// ([`crate::retry`]), and counts it by category. The first failure of a streak the author
/// can act on is also a Warning Event on the pipeline, so it shows in `kubectl describe`, not
/// only in the operator's log.
pub fn error_policy(mp: Arc<ModelPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = pipeline_key(&mp);
    let delay = ctx.errors.failed(key.clone());
    if ctx.errors.in_a_row(&key) == 1
        && let Some(spec) = failure_event(error)
        && ctx
            .may_write(|| format!("Event {}", spec.reason.as_str()))
            .is_ok()
    {
        let ctx = ctx.clone();
        let mp = mp.clone();
        tokio::spawn(async move { publish(&ctx.events, &mp, &spec).await });
    }
    warn!(
        namespace = %mp.namespace().unwrap_or_default(),
        pipeline = %mp.name_any(),
        category = error.category(),
        retry_in_seconds = delay.as_secs(),
        %error,
        "reconcile failed"
    );
    ctx.metrics.reconcile_failed(error.category());
    Action::requeue(delay)
}

#[cfg(test)]
mod tests;
