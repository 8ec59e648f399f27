//! The operator-wide cap on running trainer Jobs.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::caches::Caches;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::ObjectRef;

use crate::views::{JobState, job_view};

/// The operator-wide cap on running trainer Jobs. The Job cache lags behind a create, so the
/// Jobs this process launched that the cache does not show yet count too, and a launch takes its
/// slot under a lock: reconciles running at the same moment cannot both take the last one.
#[derive(Debug, Default)]
pub struct RunSlots {
    max: Option<usize>,
    launched: Mutex<HashSet<(String, String)>>,
}

impl RunSlots {
    /// At most `max` runs at once; `None` for no limit.
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            launched: Mutex::default(),
        }
    }

    fn used(&self, cache: &Caches<Job>, launched: &mut HashSet<(String, String)>) -> usize {
        launched.retain(|(ns, name)| cache.get(&ObjectRef::new(name).within(ns)).is_none());
        running_runs(cache) + launched.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        // Plain strings: a panic elsewhere cannot leave the set inconsistent.
        self.launched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Free slots now (`None`: no limit); what `plan` sees.
    pub fn free(&self, cache: &Caches<Job>) -> Option<usize> {
        let max = self.max?;
        Some(max.saturating_sub(self.used(cache, &mut self.lock())))
    }

    /// Takes a slot for Job `ns/name`; false when none is left.
    pub fn take(&self, cache: &Caches<Job>, ns: &str, name: &str) -> bool {
        let Some(max) = self.max else {
            return true;
        };
        let mut launched = self.lock();
        if cache.get(&ObjectRef::new(name).within(ns)).is_some() {
            return true;
        }
        if self.used(cache, &mut launched) >= max {
            return false;
        }
        launched.insert((ns.to_string(), name.to_string()));
        true
    }

    /// Gives back the slot of a Job whose create failed.
    pub fn release(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_string(), name.to_string()));
    }
}

/// Trainer Jobs of every pipeline that are still running, from the controller's cache.
/// Only a Job a ModelPipeline controls is a run: a Job that merely carries the labels and
/// annotations (made by anyone who may create Jobs) takes no slot from the pipelines.
fn running_runs(cache: &Caches<Job>) -> usize {
    cache
        .state()
        .iter()
        .filter(|j| {
            j.metadata.owner_references.iter().flatten().any(|o| {
                o.controller == Some(true)
                    && o.kind == "ModelPipeline"
                    && o.api_version.starts_with("champion.dev/")
            })
        })
        .filter(|j| job_view(j).is_some_and(|v| v.state == JobState::Running))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn the_run_cap_counts_launches_the_cache_has_not_seen_yet() {
        use kube::runtime::{reflector, watcher};
        let mp = crate::fixtures::pipeline();
        let (store, mut writer) = reflector::store::<Job>();
        let cache = Caches::new(vec![store]);
        let slots = RunSlots::new(Some(2));
        assert_eq!(slots.free(&cache), Some(2));
        assert!(slots.take(&cache, "default", "a"));
        assert_eq!(
            slots.free(&cache),
            Some(1),
            "a launch counts before the watch shows it"
        );
        assert!(slots.take(&cache, "default", "b"));
        assert!(!slots.take(&cache, "default", "c"), "no third run");
        slots.release("default", "b");
        assert!(
            slots.take(&cache, "default", "c"),
            "a failed create gives its slot back"
        );
        // Once the watch delivers a running Job it is counted from the cache instead, once.
        let running = crate::build::build_job(&mp, "v1", "fp1", None);
        let (ns, name) = (running.namespace().unwrap_or_default(), running.name_any());
        assert!(!slots.take(&cache, &ns, &name), "the cap is reached");
        writer.apply_watcher_event(&watcher::Event::Apply(running));
        assert_eq!(
            slots.free(&cache),
            Some(0),
            "a, c launched and one running Job in the cache: over the cap, none free"
        );
        assert!(
            slots.take(&cache, &ns, &name),
            "re-applying a Job that exists takes no new slot"
        );
        // A Job with the labels and annotations but no ModelPipeline owner takes no slot.
        let mut forged = crate::build::build_job(&mp, "v2", "fp2", None);
        forged.metadata.name = Some("forged".into());
        forged.metadata.owner_references = None;
        writer.apply_watcher_event(&watcher::Event::Apply(forged));
        assert_eq!(
            slots.free(&cache),
            Some(0),
            "still a, c and the one real run"
        );
        slots.release("default", "a");
        slots.release("default", "c");
        assert_eq!(
            slots.free(&cache),
            Some(1),
            "the forged Job counts for nothing"
        );
        assert!(RunSlots::new(None).take(&cache, "default", "x"));
        assert_eq!(RunSlots::new(None).free(&cache), None);
    }
}
