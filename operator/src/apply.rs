//! Writes the objects a step wants: server-side apply with the operator's field manager, so
//! repeated applies of the same desired state are no-ops on the server. A trainer Job first
//! takes one of the operator-wide run slots.

use std::fmt::Debug;

use champion_api::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::effects::{Desired, Effects};
use crate::error::Error;

/// How applying a step's objects went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every object was applied.
    All,
    /// The step's trainer Job found no free run slot (another pipeline took the last one
    /// since `observe` counted them): nothing was applied.
    NoRunSlot,
}

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

/// Applies the objects of `effects` in `ns`, in order.
pub async fn apply_objects(ctx: &Context, ns: &str, effects: &Effects) -> Result<Applied, Error> {
    for object in &effects.objects {
        ctx.may_write(|| object.describe())?;
        match object {
            Desired::Job(job) => {
                let name = job.name_any();
                if !ctx.runs.take(&ctx.jobs, ns, &name) {
                    return Ok(Applied::NoRunSlot);
                }
                if let Err(source) = apply(&ctx.client, ns, job.as_ref()).await {
                    ctx.runs.release(ns, &name);
                    return Err(Error::ApplyJob {
                        name,
                        source: Box::new(source),
                    });
                }
            }
            Desired::Deployment(d) => {
                apply(&ctx.client, ns, d.as_ref()).await.map_err(|source| {
                    Error::ApplyDeployment {
                        name: d.name_any(),
                        source: Box::new(source),
                    }
                })?;
            }
            Desired::Service(s) => {
                apply(&ctx.client, ns, s.as_ref())
                    .await
                    .map_err(|source| Error::ApplyService {
                        name: s.name_any(),
                        source: Box::new(source),
                    })?;
            }
        }
    }
    Ok(Applied::All)
}
