//! How soon a pipeline whose reconcile failed is tried again: exponentially later for each
//! failure in a row (5 s, 10 s, 20 s, … capped at 5 minutes), per pipeline, so a persistent
//! error (a forbidden Secret, an unreachable API) in hundreds of pipelines does not turn into a
//! steady stream of requests to the API server. A success resets the count.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// The first retry delay.
const FIRST: Duration = Duration::from_secs(5);
/// The longest retry delay.
const CAP: Duration = Duration::from_secs(300);

/// Failures in a row, per pipeline (namespace, name).
#[derive(Debug, Default)]
pub struct ErrorBackoff(Mutex<HashMap<(String, String), u32>>);

impl ErrorBackoff {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a failed reconcile of `key`; returns how long to wait before the next one.
    pub fn failed(&self, key: (String, String)) -> Duration {
        let mut map = self.map();
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32 << (*n - 1).min(16);
        FIRST.saturating_mul(factor).min(CAP)
    }

    /// Failed reconciles of `key` in a row so far.
    pub fn in_a_row(&self, key: &(String, String)) -> u32 {
        self.map().get(key).copied().unwrap_or(0)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &(String, String)) {
        self.map().remove(key);
    }

    /// Forgets every pipeline not in `keep`.
    pub fn retain(&self, keep: &HashSet<(String, String)>) {
        self.map().retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_pipeline_up_to_the_cap_and_reset_on_success() {
        let b = ErrorBackoff::default();
        let a = ("ns".to_string(), "a".to_string());
        let other = ("ns".to_string(), "b".to_string());
        let delays: Vec<u64> = (0..9).map(|_| b.failed(a.clone()).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.in_a_row(&a), 9);
        assert_eq!(b.failed(other.clone()).as_secs(), 5, "counted per pipeline");
        b.succeeded(&a);
        assert_eq!(b.in_a_row(&a), 0);
        assert_eq!(
            b.failed(a.clone()).as_secs(),
            5,
            "a success resets the count"
        );
        for _ in 0..100 {
            b.failed(other.clone());
        }
        assert_eq!(b.failed(other).as_secs(), 300, "no overflow");
    }
}
