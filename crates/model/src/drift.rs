//! Live data drift: the per-feature reference bins the trainer stores in `model.json`
//! (`driftReference`) and the population stability index (PSI) the predictor computes from its
//! live bin counts against them.
//!
//! A feature's bins are cut by its inner edges `e_0 < e_1 < … < e_{m-1}`: bin 0 holds
//! `x <= e_0`, bin `i` holds `e_{i-1} < x <= e_i`, bin `m` holds `x > e_{m-1}` (see
//! [`bin_index`]). The trainer and the predictor both bin through that one function, so a live
//! sample drawn from the training rows has the training shares.

use serde::{Deserialize, Serialize};

/// Deciles: at most this many inner edges per feature are written by the trainer.
pub const DRIFT_DECILE_EDGES: usize = 9;
/// A reader refuses more inner edges per feature than this (bounded memory per feature).
pub const MAX_DRIFT_EDGES: usize = 64;
/// Shares below this are raised to it before PSI, so an empty bin contributes a large but
/// finite term (the common convention, and the contract's).
pub const PSI_SHARE_FLOOR: f64 = 1e-4;
/// How far the shares of a feature may sum from 1 (they are rounded decimals in JSON).
const SHARE_SUM_TOLERANCE: f64 = 1e-6;

/// The training distribution of every feature, in `featureNames` order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReference {
    /// Number of training rows the bins were computed from.
    pub rows: u64,
    /// One entry per model feature, in `featureNames` order.
    pub features: Vec<FeatureBins>,
}

/// The reference bins of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureBins {
    /// The feature's name, equal to `featureNames[i]`.
    pub name: String,
    /// Inner bin edges, strictly increasing and finite (at most 9 from the trainer).
    pub edges: Vec<f64>,
    /// The training share of each bin: `edges.len() + 1` numbers in [0, 1] summing to 1.
    pub shares: Vec<f64>,
}

/// The bin of `x` among `edges` (sorted ascending): the number of edges strictly below `x`.
/// A binary search, no allocation. NaN lands in bin 0.
#[inline]
pub fn bin_index(edges: &[f64], x: f64) -> usize {
    if edges.len() <= 16 {
        // The decile case: a branch-free count beats a binary search's unpredictable branches.
        edges.iter().map(|&e| usize::from(e < x)).sum()
    } else {
        edges.partition_point(|&e| e < x)
    }
}

/// Population stability index of `actual` shares against `expected` shares:
/// `sum((a - e) * ln(a / e))`, each share floored at [`PSI_SHARE_FLOOR`]. Pairs beyond the
/// shorter slice are ignored (callers pass equal lengths).
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let e = e.max(PSI_SHARE_FLOOR);
            let a = a.max(PSI_SHARE_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// PSI of live bin counts against reference shares; `None` when no row was counted.
pub fn psi_of_counts(expected: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let n = total as f64;
    Some(
        expected
            .iter()
            .zip(counts)
            .map(|(&e, &c)| {
                let e = e.max(PSI_SHARE_FLOOR);
                let a = (c as f64 / n).max(PSI_SHARE_FLOOR);
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

/// Linear-interpolation quantile (numpy's default) of sorted, non-empty `sorted` at `q`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

impl DriftReference {
    /// Computes the reference of a row-major matrix of raw feature values (`values.len()` is a
    /// multiple of `feature_names.len()`): per feature the deciles of its finite values,
    /// de-duplicated (at most 9 inner edges), and the share of the rows in each bin.
    pub fn from_rows(feature_names: &[String], values: &[f64]) -> Result<DriftReference, String> {
        let nf = feature_names.len();
        if nf == 0 {
            return Err("no features to compute drift bins for".into());
        }
        if !values.len().is_multiple_of(nf) {
            return Err(format!(
                "{} values are not whole rows of {nf} features",
                values.len()
            ));
        }
        let rows = values.len() / nf;
        if rows == 0 {
            return Err("no rows to compute drift bins from".into());
        }
        let mut column = Vec::with_capacity(rows);
        let mut features = Vec::with_capacity(nf);
        for (f, name) in feature_names.iter().enumerate() {
            column.clear();
            column.extend(
                values
                    .iter()
                    .skip(f)
                    .step_by(nf)
                    .copied()
                    .filter(|v| v.is_finite()),
            );
            column.sort_by(f64::total_cmp);
            let mut edges: Vec<f64> = Vec::with_capacity(DRIFT_DECILE_EDGES);
            if !column.is_empty() {
                for k in 1..=DRIFT_DECILE_EDGES {
                    let q = quantile(&column, k as f64 / (DRIFT_DECILE_EDGES + 1) as f64);
                    if edges.last().is_none_or(|&last| q > last) {
                        edges.push(q);
                    }
                }
            }
            let mut counts = vec![0u64; edges.len() + 1];
            for v in values.iter().skip(f).step_by(nf) {
                counts[bin_index(&edges, *v)] += 1;
            }
            let shares = counts.iter().map(|&c| c as f64 / rows as f64).collect();
            features.push(FeatureBins {
                name: name.clone(),
                edges,
                shares,
            });
        }
        Ok(DriftReference {
            rows: rows as u64,
            features,
        })
    }

    /// Checks the reference against the model's feature names; the message says what is wrong.
    pub fn validate(&self, feature_names: &[String]) -> Result<(), String> {
        if self.features.len() != feature_names.len() {
            return Err(format!(
                "driftReference has {} features, the model has {}",
                self.features.len(),
                feature_names.len()
            ));
        }
        for (i, (bins, name)) in self.features.iter().zip(feature_names).enumerate() {
            let what = format!("driftReference feature {i} ({name:?})");
            if bins.name != *name {
                return Err(format!(
                    "{what} is named {:?}; expected the model's feature name",
                    bins.name
                ));
            }
            if bins.edges.len() > MAX_DRIFT_EDGES {
                return Err(format!(
                    "{what} has {} edges, at most {MAX_DRIFT_EDGES} are accepted",
                    bins.edges.len()
                ));
            }
            if bins.edges.iter().any(|e| !e.is_finite()) {
                return Err(format!("{what} has a non-finite edge"));
            }
            if bins.edges.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{what}: edges must be strictly increasing"));
            }
            if bins.shares.len() != bins.edges.len() + 1 {
                return Err(format!(
                    "{what} has {} shares for {} edges; expected edges + 1",
                    bins.shares.len(),
                    bins.edges.len()
                ));
            }
            if bins
                .shares
                .iter()
                .any(|s| !s.is_finite() || !(0.0..=1.0).contains(s))
            {
                return Err(format!("{what} has a share outside [0, 1]"));
            }
            let sum: f64 = bins.shares.iter().sum();
            if (sum - 1.0).abs() > SHARE_SUM_TOLERANCE {
                return Err(format!("{what}: shares sum to {sum}, expected 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn bins_follow_the_edges() {
        let edges = [1.0, 2.0, 3.0];
        assert_eq!(bin_index(&edges, 0.5), 0);
        assert_eq!(
            bin_index(&edges, 1.0),
            0,
            "an edge value belongs to the bin below"
        );
        assert_eq!(bin_index(&edges, 1.5), 1);
        assert_eq!(bin_index(&edges, 3.0), 2);
        assert_eq!(bin_index(&edges, 3.5), 3);
        assert_eq!(bin_index(&edges, f64::NAN), 0);
        assert_eq!(bin_index(&[], 7.0), 0);
        // The binary search for long edge lists agrees with the count.
        let long: Vec<f64> = (0..40).map(f64::from).collect();
        for x in [-1.0, 0.0, 0.5, 17.0, 17.5, 39.0, 40.0, f64::NAN] {
            let count = long.iter().filter(|&&e| e < x).count();
            assert_eq!(bin_index(&long, x), count, "{x}");
        }
    }

    #[test]
    fn psi_of_known_values() {
        // Identical distributions: 0.
        close(psi(&[0.25; 4], &[0.25; 4]), 0.0);
        // By hand: (0.4-0.5)ln(0.8) + (0.6-0.5)ln(1.2).
        let want = -0.1 * 0.8f64.ln() + 0.1 * 1.2f64.ln();
        close(psi(&[0.5, 0.5], &[0.4, 0.6]), want);
        // A textbook example (deciles, shares 0.1 against a shifted sample).
        let expected = [0.1; 10];
        let actual = [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15];
        let want = 2.0 * (-0.05 * 0.5f64.ln()) + 2.0 * (0.05 * 1.5f64.ln());
        close(psi(&expected, &actual), want);
        // An empty bin is floored at 1e-4, not infinite.
        let p = psi(&[0.5, 0.5], &[1.0, 0.0]);
        let want = 0.5 * 2.0f64.ln() + (1e-4 - 0.5) * (1e-4f64 / 0.5).ln();
        close(p, want);
        assert!(p.is_finite() && p > 4.0, "{p}");
        // Counts give the same as their shares.
        close(
            psi_of_counts(&[0.5, 0.5], &[4, 6]).unwrap(),
            psi(&[0.5, 0.5], &[0.4, 0.6]),
        );
        assert_eq!(psi_of_counts(&[0.5, 0.5], &[0, 0]), None);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn deciles_of_a_uniform_column_and_a_constant_one() {
        // Column 0: 1..=100; column 1: always 5.
        let values: Vec<f64> = (1..=100).flat_map(|i| [i as f64, 5.0]).collect();
        let r = DriftReference::from_rows(&names(2), &values).unwrap();
        assert_eq!(r.rows, 100);
        let f0 = &r.features[0];
        // numpy.quantile(range(1, 101), [0.1, …, 0.9]) = 10.9, 20.8, …, 90.1
        let want: Vec<f64> = (1..=9).map(|k| 1.0 + 99.0 * k as f64 / 10.0).collect();
        assert_eq!(f0.edges.len(), 9);
        for (a, b) in f0.edges.iter().zip(&want) {
            close(*a, *b);
        }
        assert_eq!(f0.shares.len(), 10);
        for s in &f0.shares {
            close(*s, 0.1);
        }
        let f1 = &r.features[1];
        assert_eq!(f1.edges, vec![5.0], "de-duplicated");
        assert_eq!(f1.shares, vec![1.0, 0.0]);
        r.validate(&names(2)).unwrap();
        // The training rows themselves have PSI 0 against their reference.
        let mut counts = vec![0u64; f0.shares.len()];
        for i in 1..=100 {
            counts[bin_index(&f0.edges, i as f64)] += 1;
        }
        close(psi_of_counts(&f0.shares, &counts).unwrap(), 0.0);
    }

    #[test]
    fn from_rows_refuses_bad_shapes() {
        assert!(DriftReference::from_rows(&names(2), &[1.0, 2.0, 3.0]).is_err());
        assert!(DriftReference::from_rows(&names(2), &[]).is_err());
        assert!(DriftReference::from_rows(&[], &[1.0]).is_err());
    }

    #[test]
    fn validate_names_each_problem() {
        let good = || DriftReference {
            rows: 10,
            features: vec![FeatureBins {
                name: "f0".into(),
                edges: vec![1.0, 2.0],
                shares: vec![0.2, 0.3, 0.5],
            }],
        };
        good().validate(&names(1)).unwrap();
        type Change = Box<dyn Fn(&mut DriftReference)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.features[0].edges = vec![2.0, 1.0]),
                "strictly increasing",
            ),
            (
                Box::new(|r| r.features[0].edges = vec![1.0, 1.0]),
                "strictly increasing",
            ),
            (
                Box::new(|r| r.features[0].edges[1] = f64::INFINITY),
                "non-finite edge",
            ),
            (
                Box::new(|r| r.features[0].shares = vec![0.5, 0.5]),
                "expected edges + 1",
            ),
            (
                Box::new(|r| r.features[0].shares[0] = -0.1),
                "outside [0, 1]",
            ),
            (
                Box::new(|r| r.features[0].shares[0] = f64::NAN),
                "outside [0, 1]",
            ),
            (Box::new(|r| r.features[0].shares[0] = 0.3), "sum to"),
            (
                Box::new(|r| r.features[0].name = "x".into()),
                "is named \"x\"",
            ),
            (
                Box::new(|r| r.features.push(r.features[0].clone())),
                "2 features, the model has 1",
            ),
            (
                Box::new(|r| {
                    r.features[0].edges = (0..65).map(f64::from).collect();
                    r.features[0].shares = vec![0.0; 66];
                    r.features[0].shares[0] = 1.0;
                }),
                "at most 64",
            ),
        ];
        for (change, want) in cases {
            let mut r = good();
            change(&mut r);
            let err = r.validate(&names(1)).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
