//! Data listings run beside the reconcile, not inside it. A pipeline whose store is slow or
//! never answers must not hold one of the controller's reconcile slots for the whole store
//! timeout, or a handful of such pipelines (one author can create many) would stall every other
//! team's runs and rollbacks. So the listing runs as its own task: a reconcile waits for it at
//! most [`WAIT`], and when it is not done yet the reconcile ends, comes back after
//! [`RECHECK`] and picks up the result then. The task itself is bounded by the store timeout.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::views::{DataListing, ReadFailure};

/// How long a reconcile waits for its pipeline's listing.
pub const WAIT: Duration = Duration::from_secs(1);
/// When a reconcile whose listing was still running comes back.
pub const RECHECK: Duration = Duration::from_secs(2);

type Key = (String, String);

struct Inflight {
    /// What is being listed (URI and Secret name): a changed spec starts a new listing.
    what: String,
    handle: JoinHandle<Result<DataListing, ReadFailure>>,
}

/// What a reconcile got of its pipeline's listing.
#[derive(Debug)]
pub enum Listed {
    Done(Result<DataListing, ReadFailure>),
    /// Still running; ask again after [`RECHECK`].
    Pending,
}

/// The listings in flight, per pipeline.
#[derive(Default)]
pub struct Listings {
    inflight: Mutex<HashMap<Key, Inflight>>,
}

impl Listings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Inflight>> {
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The listing of pipeline `key` of `what`: the one in flight, or a new one from `start`,
    /// waited for at most `wait`. (The controller never reconciles one pipeline twice at
    /// once, so taking the entry out while waiting is safe.)
    pub async fn list<F>(
        &self,
        key: Key,
        what: &str,
        wait: Duration,
        start: impl FnOnce() -> F,
    ) -> Listed
    where
        F: Future<Output = Result<DataListing, ReadFailure>> + Send + 'static,
    {
        let previous = self.lock().remove(&key);
        let mut inflight = match previous {
            Some(i) if i.what == what => i,
            other => {
                if let Some(stale) = other {
                    stale.handle.abort();
                }
                Inflight {
                    what: what.to_string(),
                    handle: tokio::spawn(start()),
                }
            }
        };
        match tokio::time::timeout(wait, &mut inflight.handle).await {
            Ok(Ok(result)) => Listed::Done(result),
            Ok(Err(e)) => Listed::Done(Err(ReadFailure::List(format!(
                "the listing stopped unexpectedly: {e}"
            )))),
            Err(_) => {
                self.lock().insert(key, inflight);
                Listed::Pending
            }
        }
    }

    /// Stops and forgets the listings of pipelines that no longer exist.
    pub fn retain(&self, keep: &HashSet<Key>) {
        self.lock().retain(|k, i| {
            let kept = keep.contains(k);
            if !kept {
                i.handle.abort();
            }
            kept
        });
    }

    /// Listings in flight now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("team-a".into(), "wine".into())
    }

    fn listing(fp: &str) -> DataListing {
        DataListing {
            fingerprint: fp.into(),
            objects: 1,
        }
    }

    #[tokio::test]
    async fn a_listing_that_never_answers_costs_a_reconcile_only_the_wait() {
        let listings = Listings::default();
        let started = tokio::time::Instant::now();
        let first = listings
            .list(key(), "uri-a", Duration::from_millis(50), || {
                std::future::pending::<Result<DataListing, ReadFailure>>()
            })
            .await;
        assert!(matches!(first, Listed::Pending));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(listings.len(), 1, "the listing keeps running");
        // The next reconcile finds the same listing, not a second one.
        let second = listings
            .list(key(), "uri-a", Duration::from_millis(50), || async {
                Ok(listing("must-not-start"))
            })
            .await;
        assert!(matches!(second, Listed::Pending));
        listings.retain(&HashSet::new());
        assert_eq!(listings.len(), 0, "a deleted pipeline's listing is stopped");
    }

    #[tokio::test]
    async fn a_finished_listing_is_picked_up_and_a_changed_spec_starts_anew() {
        let listings = Listings::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = listings
            .list(key(), "uri-a", Duration::from_millis(20), || async move {
                let _ = rx.await;
                Ok(listing("fp-a"))
            })
            .await;
        assert!(matches!(first, Listed::Pending));
        let _ = tx.send(());
        let done = listings
            .list(key(), "uri-a", Duration::from_secs(5), || async {
                Ok(listing("not-this"))
            })
            .await;
        assert!(matches!(done, Listed::Done(Ok(l)) if l.fingerprint == "fp-a"));
        let changed = listings
            .list(key(), "uri-b", Duration::from_secs(5), || async {
                Ok(listing("fp-b"))
            })
            .await;
        assert!(matches!(changed, Listed::Done(Ok(l)) if l.fingerprint == "fp-b"));
        assert_eq!(listings.len(), 0);
    }
}
