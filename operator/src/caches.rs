//! The watch caches of every namespace the operator watches, read as one. In namespaced mode
//! the operator runs one watch per namespace (it has no cluster-wide list or watch right), so
//! a Job or Deployment lookup asks each namespace's cache.

use std::hash::Hash;
use std::sync::Arc;

use kube::runtime::reflector::{Lookup, ObjectRef, Store};

/// One cache per watched namespace (or one for all namespaces).
pub struct Caches<K>(Vec<Store<K>>)
where
    K: 'static + Lookup + Clone,
    K::DynamicType: Eq + Hash + Clone;

impl<K> Caches<K>
where
    K: 'static + Lookup + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    pub fn new(stores: Vec<Store<K>>) -> Self {
        Caches(stores)
    }

    /// Every cached object, of every namespace.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    /// The cached object `key`, from whichever namespace's cache holds it.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        self.0.iter().find_map(|s| s.get(key))
    }

    /// Waits until every cache holds a complete listing; false when a watch ended first.
    pub async fn wait_until_ready(&self) -> bool {
        for store in &self.0 {
            if store.wait_until_ready().await.is_err() {
                return false;
            }
        }
        true
    }
}

impl<K> Clone for Caches<K>
where
    K: 'static + Lookup + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Caches(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use kube::runtime::{reflector, watcher};

    fn job(ns: &str, name: &str) -> Job {
        let mut j = Job::default();
        j.metadata.namespace = Some(ns.into());
        j.metadata.name = Some(name.into());
        j
    }

    #[test]
    fn lookups_span_every_namespace_cache() {
        let (a, mut wa) = reflector::store::<Job>();
        let (b, mut wb) = reflector::store::<Job>();
        wa.apply_watcher_event(&watcher::Event::Apply(job("team-a", "x")));
        wb.apply_watcher_event(&watcher::Event::Apply(job("team-b", "y")));
        let caches = Caches::new(vec![a, b]);
        assert_eq!(caches.state().len(), 2);
        assert!(caches.get(&ObjectRef::new("y").within("team-b")).is_some());
        assert!(caches.get(&ObjectRef::new("y").within("team-a")).is_none());
    }
}
