//! Which copy of each pipeline is the newest this operator has seen.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use champion_api::ModelPipeline;
use kube::ResourceExt;

/// The resourceVersion of the newest copy of each pipeline this operator has seen from the API
/// server: the answer to its own status writes, or a read.
///
/// The controller's cache lags behind a status write, and the write's own watch event, or an
/// owned Job or Deployment changing, can start the next reconcile before the cache has the new
/// status. Reconciling on the old status would take a step twice (a promotion judged again, or
/// the previous champion's Deployment applied in the middle of a rollout), so a cached copy
/// whose resourceVersion is not the one last seen is read again from the API server first. The
/// cache catches up within milliseconds, so this costs one GET per status write at most.
#[derive(Debug, Default)]
pub struct Freshness(Mutex<HashMap<(String, String), String>>);

/// A pipeline's (namespace, name): how the operator's per-pipeline records are keyed.
pub fn pipeline_key(mp: &ModelPipeline) -> (String, String) {
    (mp.namespace().unwrap_or_default(), mp.name_any())
}

impl Freshness {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        // The map holds plain strings: a panic elsewhere cannot leave it inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers `mp`'s resourceVersion as the newest seen.
    pub fn saw(&self, mp: &ModelPipeline) {
        if let Some(rv) = mp.resource_version() {
            self.map().insert(pipeline_key(mp), rv);
        }
    }

    /// Forgets a pipeline that no longer exists.
    pub fn forget(&self, mp: &ModelPipeline) {
        self.map().remove(&pipeline_key(mp));
    }

    /// Forgets every pipeline not in `keep` (namespace, name).
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        self.map().retain(|k, _| keep.contains(k));
    }

    /// Whether `mp` is older or newer than the copy last seen, so it must be read again.
    pub fn is_stale(&self, mp: &ModelPipeline) -> bool {
        match self.map().get(&pipeline_key(mp)) {
            None => false,
            Some(rv) => mp.resource_version().as_ref() != Some(rv),
        }
    }
}
