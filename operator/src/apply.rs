//! Server-side apply with the operator's field manager: every object the operator owns and the
//! pipeline's status are written the same way, so repeated applies of the same desired state
//! are no-ops on the server.

use std::fmt::Debug;

use champion_api::{FIELD_MANAGER, ModelPipeline, ModelPipelineStatus};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Applies `obj` in `ns`, taking ownership of conflicting fields.
pub async fn apply<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await
}

/// Applies the whole status of `mp` (the status subresource; the spec is never written).
pub async fn apply_status(
    client: &kube::Client,
    mp: &ModelPipeline,
    status: &ModelPipelineStatus,
) -> Result<ModelPipeline, kube::Error> {
    let ns = mp.namespace().unwrap_or_default();
    let api: Api<ModelPipeline> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": "champion.dev/v1alpha1",
        "kind": "ModelPipeline",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&mp.name_any(), &params, &Patch::Apply(&body))
        .await
}
