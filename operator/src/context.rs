//! What every reconcile shares: the client, the watch caches and the operator-wide records.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::caches::Caches;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;

use crate::events::Publisher;
use crate::freshness::Freshness;
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::policy::PodPolicy;
use crate::retry::ErrorBackoff;
use crate::run_slots::RunSlots;

/// Shared state of every reconcile.
pub struct Context {
    pub client: kube::Client,
    /// The operator's trainer Jobs (label managed-by=champion), kept by a watch.
    pub jobs: Caches<Job>,
    /// The operator's predictor Deployments, kept by a watch.
    pub deployments: Caches<Deployment>,
    /// Set once both caches hold a complete listing: before that a missing Job could be
    /// mistaken for a vanished one.
    pub caches_ready: Arc<AtomicBool>,
    /// Operator-wide limit of concurrently running trainer Jobs, so that hundreds of pipelines
    /// seeing data at once do not flood the cluster.
    pub runs: RunSlots,
    pub events: Publisher,
    pub metrics: Metrics,
    /// Which copy of each pipeline is the newest the operator has seen.
    pub fresh: Freshness,
    /// Failed reconciles in a row, per pipeline: how long the error policy waits.
    pub errors: ErrorBackoff,
    /// Whether this replica may write now; checked before every write.
    pub fence: Fence,
    /// What pipelines may ask of their pods.
    pub policy: PodPolicy,
    /// How pipelines' stores are opened: Secret options allow-list, outbound-host policy,
    /// ambient identity, local roots.
    pub stores: champion_store::TenantStores,
    /// Data listings in flight, per pipeline (they run beside the reconciles).
    pub listings: crate::listings::Listings,
    /// Live analysis: each pipeline's counters at the start of its current step.
    pub live: crate::live::Baselines,
    /// When each pipeline's predictor pods were last read for drift.
    pub drift: crate::drift::DriftReads,
}

impl Context {
    /// Refuses a write of `what` unless this replica holds the leader Lease now.
    pub fn may_write(&self, what: impl FnOnce() -> String) -> Result<(), crate::error::Error> {
        if self.fence.holds() {
            Ok(())
        } else {
            Err(crate::error::Error::NotLeader { what: what() })
        }
    }
}
