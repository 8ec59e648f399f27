//! Records a step: writes the status when it changed (the status subresource, by server-side
//! apply with the operator's field manager), then sends the step's Events and counts its
//! metrics. Events and metrics follow the status write, so a step whose status could not be
//! written is neither announced nor counted; it is taken again by the next reconcile.

use std::sync::Arc;

use champion_api::{FIELD_MANAGER, ModelPipeline, ModelPipelineStatus};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::context::Context;
use crate::error::Error;
use crate::events::publish;
use crate::transition::Transition;

/// Writes `next.status` if it differs from `mp`'s, then publishes and counts `next.effects`.
pub async fn record(
    ctx: &Context,
    mp: &Arc<ModelPipeline>,
    next: &Transition,
) -> Result<(), Error> {
    let before = mp.status.clone().unwrap_or_default();
    if next.status != before {
        ctx.may_write(|| format!("the status of {}", mp.name_any()))?;
        let written = apply_status(&ctx.client, mp, &next.status)
            .await
            .map_err(|source| Error::PatchStatus {
                name: mp.name_any(),
                source: Box::new(source),
            })?;
        ctx.fresh.saw(&written);
    }
    for event in &next.effects.events {
        ctx.may_write(|| format!("Event {}", event.reason.as_str()))?;
        publish(&ctx.events, mp, event).await;
    }
    let ns = mp.namespace().unwrap_or_default();
    ctx.metrics.record_step(
        &ns,
        &mp.name_any(),
        mp.spec.evaluation.metric,
        &next.status,
        &next.effects.metrics,
    );
    Ok(())
}

/// Applies the whole status of `mp` (the status subresource; the spec is never written),
/// conditional on `mp`'s resourceVersion: a write based on a copy that someone else has
/// changed since (a newer leader) is refused by the API server with 409 Conflict.
pub async fn apply_status(
    client: &kube::Client,
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
) -> Result<ModelPipeline, kube::Error> {
    let ns = mp.namespace().unwrap_or_default();
    let api: Api<ModelPipeline> = Api::namespaced(client.clone(), &ns);
    let mut body = serde_json::json!({
        "apiVersion": "champion.dev/v1alpha1",
        "kind": "ModelPipeline",
        "status": status,
    });
    if let Some(rv) = mp.resource_version() {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&mp.name_any(), &params, &Patch::Apply(&body))
        .await
}
