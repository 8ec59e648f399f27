//! Live data drift: per model feature a fixed set of atomic bin counters, cut by the reference
//! edges the trainer stored in `model.json` (`driftReference`). Counting a row is one binary
//! search and one relaxed atomic add per feature: no lock, no allocation. The population
//! stability index of each feature against its training shares is computed only when
//! `/metrics` is scraped (`predictor_feature_psi{feature}`, `predictor_drift_max_psi`,
//! `predictor_drift_rows_total`).
//!
//! Settings: `DRIFT_TRACKING` (`on`, the default, or `off`: no counting and no series) and
//! `DRIFT_MIN_ROWS` (default 100: PSI is exported once this many rows were counted). A model
//! without `driftReference` has no drift series and no cost.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use champion_model::DriftReference;
use champion_model::drift::{bin_index, psi_of_counts};

use crate::config::ConfigError;

/// Above this many features only `predictor_drift_max_psi` is exported, not one series each.
pub const MAX_PSI_SERIES: usize = 256;

/// `DRIFT_TRACKING` and `DRIFT_MIN_ROWS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftSettings {
    pub enabled: bool,
    pub min_rows: u64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            enabled: true,
            min_rows: 100,
        }
    }
}

impl DriftSettings {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = DriftSettings::default();
        if let Some(v) = get("DRIFT_TRACKING").filter(|v| !v.trim().is_empty()) {
            s.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "DRIFT_TRACKING",
                        value: v,
                        expected: "on or off",
                    });
                }
            };
        }
        if let Some(v) = get("DRIFT_MIN_ROWS").filter(|v| !v.trim().is_empty()) {
            s.min_rows = match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "DRIFT_MIN_ROWS",
                        value: v,
                        expected: "a positive row count",
                    });
                }
            };
        }
        Ok(s)
    }
}

/// One feature's reference and live counts.
struct FeatureHistogram {
    /// `name="…"` label value, escaped once.
    label: String,
    edges: Box<[f64]>,
    shares: Box<[f64]>,
    /// Offset of this feature's first bin in the tracker's counter array.
    offset: usize,
}

/// The live histograms of every feature of the served model.
pub struct DriftTracker {
    features: Vec<FeatureHistogram>,
    /// Every feature's bins, one after the other, once per shard (fixed at load). Worker
    /// threads count into different shards, so they do not contend for the same cache lines;
    /// a scrape sums the shards.
    counts: Box<[AtomicU64]>,
    /// Bins of one shard (every feature's), rounded up to whole 64-byte cache lines.
    stride: usize,
    /// Bins actually used in a shard.
    bins: usize,
    shards: usize,
    rows: AtomicU64,
    min_rows: u64,
}

/// Shards at most (one per worker thread up to this).
const MAX_SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number, handed out round robin on first use.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

/// A batch is first counted here (per thread, reused), then added with one atomic add per
/// non-empty bin; models with more bins than this count every row straight into the atomics.
const LOCAL_BINS_MAX: usize = 16 * 1024;

thread_local! {
    static LOCAL: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
pub(crate) fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as the Prometheus text format writes it.
pub(crate) fn prom_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl DriftTracker {
    /// The tracker for a model's reference, or `None` when tracking is off or the model has no
    /// reference (then nothing is counted and no series exported). The reference was validated
    /// against the model's features when model.json was loaded.
    pub fn new(reference: Option<&DriftReference>, settings: DriftSettings) -> Option<Self> {
        let reference = reference.filter(|_| settings.enabled)?;
        let mut offset = 0;
        let features: Vec<FeatureHistogram> = reference
            .features
            .iter()
            .map(|f| {
                let h = FeatureHistogram {
                    label: escape_label(&f.name),
                    edges: f.edges.clone().into_boxed_slice(),
                    shares: f.shares.clone().into_boxed_slice(),
                    offset,
                };
                offset += f.edges.len() + 1;
                h
            })
            .collect();
        let stride = offset.div_ceil(8) * 8;
        let shards = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_SHARDS);
        Some(DriftTracker {
            features,
            // One extra cache line so that a shard can start on a line boundary.
            counts: (0..stride * shards + 8)
                .map(|_| AtomicU64::new(0))
                .collect(),
            stride,
            bins: offset,
            shards,
            rows: AtomicU64::new(0),
            min_rows: settings.min_rows,
        })
    }

    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    /// Counts every row of `values` (row-major, one value per model feature per row).
    pub fn observe(&self, values: &[f64]) {
        let nf = self.features.len();
        if nf == 0 || values.len() < nf {
            return;
        }
        let rows = values.len() / nf;
        let shard = self.shard(SHARD.with(|s| *s) % self.shards);
        if rows == 1 || self.bins > LOCAL_BINS_MAX {
            for row in values.chunks_exact(nf) {
                for (h, &x) in self.features.iter().zip(row) {
                    shard[h.offset + bin_index(&h.edges, x)].fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            LOCAL.with(|cell| {
                let Ok(mut local) = cell.try_borrow_mut() else {
                    return;
                };
                local.clear();
                local.resize(self.bins, 0);
                for row in values.chunks_exact(nf) {
                    for (h, &x) in self.features.iter().zip(row) {
                        local[h.offset + bin_index(&h.edges, x)] += 1;
                    }
                }
                for (counter, &n) in shard.iter().zip(local.iter()) {
                    if n > 0 {
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                }
            });
        }
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The counters of shard `i`, starting on a cache-line boundary.
    fn shard(&self, i: usize) -> &[AtomicU64] {
        // The array's start is 8-byte aligned; skip to the next 64-byte boundary.
        let skew = (self.counts.as_ptr() as usize / 8) % 8;
        let start = (8 - skew) % 8 + i * self.stride;
        &self.counts[start..start + self.bins]
    }

    /// Rows counted so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// PSI of every feature against its reference (`None` for a feature with no row yet).
    pub fn psi(&self) -> Vec<Option<f64>> {
        let mut counts = Vec::new();
        self.features
            .iter()
            .map(|h| {
                counts.clear();
                counts.resize(h.shares.len(), 0);
                for i in 0..self.shards {
                    let shard = &self.shard(i)[h.offset..h.offset + h.shares.len()];
                    for (sum, c) in counts.iter_mut().zip(shard) {
                        *sum += c.load(Ordering::Relaxed);
                    }
                }
                psi_of_counts(&h.shares, &counts)
            })
            .collect()
    }

    /// Appends the drift series in the Prometheus text format.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        let rows = self.rows();
        let mut s = String::with_capacity(256 + 64 * self.features.len().min(MAX_PSI_SERIES));
        s.push_str("# HELP predictor_drift_rows_total Rows counted in the live per-feature drift histograms.\n");
        s.push_str("# TYPE predictor_drift_rows_total counter\n");
        let _ = writeln!(s, "predictor_drift_rows_total {rows}");
        if rows >= self.min_rows {
            let psi = self.psi();
            if self.features.len() <= MAX_PSI_SERIES {
                s.push_str("# HELP predictor_feature_psi Population stability index of the live values of a feature against its training bins (driftReference).\n");
                s.push_str("# TYPE predictor_feature_psi gauge\n");
                for (h, p) in self.features.iter().zip(&psi) {
                    if let Some(p) = p {
                        let _ = writeln!(
                            s,
                            "predictor_feature_psi{{feature=\"{}\"}} {}",
                            h.label,
                            prom_f64(*p)
                        );
                    }
                }
            }
            let max = psi.iter().flatten().copied().fold(0.0_f64, f64::max);
            s.push_str("# HELP predictor_drift_max_psi The largest population stability index of the served model's features.\n");
            s.push_str("# TYPE predictor_drift_max_psi gauge\n");
            let _ = writeln!(s, "predictor_drift_max_psi {}", prom_f64(max));
        }
        out.extend_from_slice(s.as_bytes());
    }
}

/// Every drift family with a series, for the metrics tests (promtool, the chart's names).
#[cfg(test)]
pub(crate) fn sample_exposition() -> Vec<u8> {
    let reference = DriftReference {
        rows: 1,
        features: vec![champion_model::FeatureBins {
            name: "alcohol".into(),
            edges: vec![10.0],
            shares: vec![0.5, 0.5],
        }],
    };
    let settings = DriftSettings {
        enabled: true,
        min_rows: 1,
    };
    let mut out = Vec::new();
    if let Some(t) = DriftTracker::new(Some(&reference), settings) {
        t.observe(&[9.0]);
        t.render_into(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use champion_model::FeatureBins;

    fn reference() -> DriftReference {
        DriftReference {
            rows: 100,
            features: vec![
                FeatureBins {
                    name: "a".into(),
                    edges: vec![0.0],
                    shares: vec![0.5, 0.5],
                },
                FeatureBins {
                    name: "b\"q".into(),
                    edges: vec![1.0, 2.0],
                    shares: vec![0.25, 0.5, 0.25],
                },
            ],
        }
    }

    fn text(t: &DriftTracker) -> String {
        let mut out = Vec::new();
        t.render_into(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_reference_or_tracking_off_means_no_tracker() {
        assert!(DriftTracker::new(None, DriftSettings::default()).is_none());
        let off = DriftSettings {
            enabled: false,
            ..DriftSettings::default()
        };
        assert!(DriftTracker::new(Some(&reference()), off).is_none());
    }

    #[test]
    fn counts_rows_and_renders_psi_once_enough_rows_were_seen() {
        let settings = DriftSettings {
            enabled: true,
            min_rows: 4,
        };
        let t = DriftTracker::new(Some(&reference()), settings).unwrap();
        // Three single rows: not enough for PSI yet.
        for row in [[-1.0, 0.5], [1.0, 1.5], [-2.0, 1.5]] {
            t.observe(&row);
        }
        let s = text(&t);
        assert!(s.contains("predictor_drift_rows_total 3\n"), "{s}");
        assert!(!s.contains("predictor_feature_psi"), "{s}");
        assert!(!s.contains("predictor_drift_max_psi"), "{s}");
        // A batch of two rows (counted through the per-thread buffer).
        t.observe(&[5.0, 3.0, 6.0, 3.0]);
        assert_eq!(t.rows(), 5);
        // a: bins [2 (<= 0), 3 (> 0)] of 5; b: [1, 2, 2].
        let psi = t.psi();
        let want_a = champion_model::drift::psi(&[0.5, 0.5], &[0.4, 0.6]);
        let want_b = champion_model::drift::psi(&[0.25, 0.5, 0.25], &[0.2, 0.4, 0.4]);
        assert!((psi[0].unwrap() - want_a).abs() < 1e-12);
        assert!((psi[1].unwrap() - want_b).abs() < 1e-12);
        let s = text(&t);
        assert!(
            s.contains(&format!(
                "predictor_feature_psi{{feature=\"a\"}} {}\n",
                prom_f64(want_a)
            )),
            "{s}"
        );
        assert!(
            s.contains("predictor_feature_psi{feature=\"b\\\"q\"}"),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "predictor_drift_max_psi {}\n",
                prom_f64(want_a.max(want_b))
            )),
            "{s}"
        );
    }

    #[test]
    fn rows_counted_on_many_threads_are_all_summed() {
        let settings = DriftSettings {
            enabled: true,
            min_rows: 1,
        };
        let t = DriftTracker::new(Some(&reference()), settings).unwrap();
        std::thread::scope(|s| {
            for k in 0..6 {
                let t = &t;
                s.spawn(move || {
                    for _ in 0..1000 {
                        // Threads 0-2 below every edge, 3-5 above every edge.
                        let x = if k < 3 { -10.0 } else { 10.0 };
                        t.observe(&[x, x]);
                    }
                    t.observe(&[0.5, 1.5, 0.5, 1.5]);
                });
            }
        });
        assert_eq!(t.rows(), 6 * 1002);
        let psi = t.psi();
        // a: 3000 + 0 in bin 0, 3000 + 12 in bin 1.
        let n = 6012.0;
        let want_a = champion_model::drift::psi(&[0.5, 0.5], &[3000.0 / n, 3012.0 / n]);
        assert!((psi[0].unwrap() - want_a).abs() < 1e-12, "{psi:?}");
        let want_b =
            champion_model::drift::psi(&[0.25, 0.5, 0.25], &[3000.0 / n, 12.0 / n, 3000.0 / n]);
        assert!((psi[1].unwrap() - want_b).abs() < 1e-12, "{psi:?}");
    }

    #[test]
    fn beyond_the_series_cap_only_the_maximum_is_exported() {
        let n = MAX_PSI_SERIES + 1;
        let r = DriftReference {
            rows: 1,
            features: (0..n)
                .map(|i| FeatureBins {
                    name: format!("f{i}"),
                    edges: vec![0.0],
                    shares: vec![0.5, 0.5],
                })
                .collect(),
        };
        let t = DriftTracker::new(
            Some(&r),
            DriftSettings {
                enabled: true,
                min_rows: 1,
            },
        )
        .unwrap();
        t.observe(&vec![1.0; n]);
        let s = text(&t);
        assert!(!s.contains("predictor_feature_psi"), "{s}");
        assert!(s.contains("predictor_drift_max_psi "), "{s}");
    }

    #[test]
    fn settings_from_the_environment() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            DriftSettings::from_lookup(&get(&[])).unwrap(),
            DriftSettings::default()
        );
        let s =
            DriftSettings::from_lookup(&get(&[("DRIFT_TRACKING", "off"), ("DRIFT_MIN_ROWS", "7")]))
                .unwrap();
        assert_eq!(
            s,
            DriftSettings {
                enabled: false,
                min_rows: 7
            }
        );
        for (k, v) in [
            ("DRIFT_TRACKING", "maybe"),
            ("DRIFT_MIN_ROWS", "0"),
            ("DRIFT_MIN_ROWS", "x"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![(k, v)].into_boxed_slice());
            match DriftSettings::from_lookup(&get(pairs)) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }
}
