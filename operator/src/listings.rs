//! Data listings run beside the reconcile, not inside it. A pipeline whose store is slow or
//! never answers must not hold one of the controller's reconcile slots for the whole store
//! timeout, or a handful of such pipelines (one author can create many) would stall every other
//! team's runs and rollbacks. So the listing runs as its own task: a reconcile waits for it at
//! most [`WAIT`], and when it is not done yet the reconcile ends, comes back after
//! [`RECHECK`] and picks up the result then. The task itself is bounded by the store timeout.
//!
//! A finished listing is kept until a reconcile has recorded it ([`Listings::recorded`]): a
//! reconcile that fails after its listing finished (a status write that lost a race, an API
//! server hiccup) hands the same result to the next one instead of losing it, which for a store
//! that never answers would cost another whole store timeout before the status could say so.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::views::{DataListing, ReadFailure};

/// How long a reconcile waits for its pipeline's listing.
pub const WAIT: Duration = Duration::from_secs(1);
/// When a reconcile whose listing was still running comes back.
pub const RECHECK: Duration = Duration::from_secs(2);
/// How long a finished listing that no reconcile recorded yet is handed out again; after
/// that, the next reconcile lists anew.
pub const KEEP: Duration = Duration::from_secs(30);

type Key = (String, String);

enum State {
    Running(JoinHandle<Result<DataListing, ReadFailure>>),
    /// Finished at the instant, not yet recorded by a reconcile.
    Finished(Result<DataListing, ReadFailure>, Instant),
}

struct Inflight {
    /// What is being listed (URI and Secret name): a changed spec starts a new listing.
    what: String,
    state: State,
}

impl Inflight {
    fn abort(&self) {
        if let State::Running(handle) = &self.state {
            handle.abort();
        }
    }
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
        let mut handle = match previous {
            Some(Inflight {
                what: w,
                state: State::Finished(result, at),
            }) if w == what && at.elapsed() < KEEP => {
                self.lock().insert(
                    key,
                    Inflight {
                        what: w,
                        state: State::Finished(result.clone(), at),
                    },
                );
                return Listed::Done(result);
            }
            Some(Inflight {
                what: w,
                state: State::Running(handle),
            }) if w == what => handle,
            other => {
                if let Some(stale) = other {
                    stale.abort();
                }
                tokio::spawn(start())
            }
        };
        let result = match tokio::time::timeout(wait, &mut handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ReadFailure::List(format!(
                "the listing stopped unexpectedly: {e}"
            ))),
            Err(_) => {
                self.lock().insert(
                    key,
                    Inflight {
                        what: what.to_string(),
                        state: State::Running(handle),
                    },
                );
                return Listed::Pending;
            }
        };
        self.lock().insert(
            key,
            Inflight {
                what: what.to_string(),
                state: State::Finished(result.clone(), Instant::now()),
            },
        );
        Listed::Done(result)
    }

    /// A reconcile recorded the listing it was handed: the next one lists anew. A listing
    /// still running is left alone.
    pub fn recorded(&self, key: &Key) {
        let mut inflight = self.lock();
        if matches!(
            inflight.get(key),
            Some(Inflight {
                state: State::Finished(..),
                ..
            })
        ) {
            inflight.remove(key);
        }
    }

    /// Stops and forgets the listings of pipelines that no longer exist.
    pub fn retain(&self, keep: &HashSet<Key>) {
        self.lock().retain(|k, i| {
            let kept = keep.contains(k);
            if !kept {
                i.abort();
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
        listings.recorded(&key());
        assert_eq!(listings.len(), 0);
    }

    #[tokio::test]
    async fn a_finished_listing_is_handed_out_again_until_a_reconcile_records_it() {
        let listings = Listings::default();
        let failed =
            || async { Err::<DataListing, _>(ReadFailure::List("timed out after 10 s".into())) };
        let first = listings
            .list(key(), "uri-a", Duration::from_secs(5), failed)
            .await;
        assert!(matches!(first, Listed::Done(Err(_))));
        // The reconcile failed before its status write: the next one gets the same result at
        // once, without waiting for another listing.
        let again = listings
            .list(key(), "uri-a", Duration::from_millis(1), || {
                std::future::pending::<Result<DataListing, ReadFailure>>()
            })
            .await;
        assert!(
            matches!(&again, Listed::Done(Err(ReadFailure::List(m))) if m.contains("timed out")),
            "{again:?}"
        );
        // Recorded: the next reconcile lists anew.
        listings.recorded(&key());
        let fresh = listings
            .list(key(), "uri-a", Duration::from_secs(5), || async {
                Ok(listing("fp-new"))
            })
            .await;
        assert!(matches!(fresh, Listed::Done(Ok(l)) if l.fingerprint == "fp-new"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrecorded_listing_is_not_handed_out_forever() {
        let listings = Listings::default();
        let first = listings
            .list(key(), "uri-a", Duration::from_secs(5), || async {
                Ok(listing("fp-old"))
            })
            .await;
        assert!(matches!(first, Listed::Done(Ok(_))));
        tokio::time::advance(KEEP + Duration::from_secs(1)).await;
        let later = listings
            .list(key(), "uri-a", Duration::from_secs(5), || async {
                Ok(listing("fp-new"))
            })
            .await;
        assert!(matches!(later, Listed::Done(Ok(l)) if l.fingerprint == "fp-new"));
    }

    #[tokio::test]
    async fn recording_leaves_a_running_listing_alone() {
        let listings = Listings::default();
        let pending = listings
            .list(key(), "uri-a", Duration::from_millis(10), || {
                std::future::pending::<Result<DataListing, ReadFailure>>()
            })
            .await;
        assert!(matches!(pending, Listed::Pending));
        listings.recorded(&key());
        assert_eq!(listings.len(), 1);
        listings.retain(&HashSet::new());
    }
}
