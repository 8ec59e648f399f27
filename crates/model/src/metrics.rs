//! Classification metrics, defined exactly as scikit-learn defines them with
//! `zero_division=0`: a precision, recall or F1 whose denominator is zero is 0, never NaN.
//! linfa's `ConfusionMatrix` returns NaN when a class is never predicted and has no weighted
//! F1, so the trainer uses these instead.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The metric a pipeline ranks models by: the same names in the CRD (`spec.evaluation.metric`),
/// the trainer's `--metric` and report.json's `metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum MetricName {
    /// Unweighted mean of the per-class F1 over the classes present in the holdout's truth or
    /// predictions (scikit-learn `average="macro"`).
    #[default]
    F1Macro,
    /// Per-class F1 weighted by support (scikit-learn `average="weighted"`).
    F1Weighted,
    /// F1 of the positive label; only defined for a binarised target.
    F1Binary,
    /// Share of holdout rows predicted right.
    Accuracy,
}

impl MetricName {
    /// Every metric, in the order documentation lists them.
    pub const ALL: [MetricName; 4] = [
        MetricName::F1Macro,
        MetricName::F1Weighted,
        MetricName::F1Binary,
        MetricName::Accuracy,
    ];

    /// The name used in flags, the CRD and report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::F1Macro => "f1Macro",
            MetricName::F1Weighted => "f1Weighted",
            MetricName::F1Binary => "f1Binary",
            MetricName::Accuracy => "accuracy",
        }
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricName {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MetricName::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ModelError::UnknownMetric(s.to_string()))
    }
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of holdout rows whose true class is this one.
    pub support: u64,
}

/// Everything a report says about one model on one holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub accuracy: f64,
    /// F1 of the positive label, present only when the target was binarised.
    pub f1_binary: Option<f64>,
    pub f1_macro: f64,
    pub f1_weighted: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion_matrix[true][predicted]` counts, in class-label order.
    pub confusion_matrix: Vec<Vec<u64>>,
}

impl Metrics {
    /// Computes every metric from true and predicted class indices into `labels`.
    /// `positive` is the index of the positive label for the binary F1.
    pub fn compute(
        y_true: &[usize],
        y_pred: &[usize],
        labels: &[String],
        positive: Option<usize>,
    ) -> Result<Metrics, String> {
        let k = labels.len();
        if y_true.len() != y_pred.len() {
            return Err(format!(
                "{} true labels but {} predictions",
                y_true.len(),
                y_pred.len()
            ));
        }
        if let Some(bad) = y_true.iter().chain(y_pred).find(|&&c| c >= k) {
            return Err(format!("class index {bad} is out of range for {k} labels"));
        }
        if let Some(p) = positive
            && p >= k
        {
            return Err(format!(
                "positive class index {p} is out of range for {k} labels"
            ));
        }
        let mut cm = vec![vec![0u64; k]; k];
        for (&t, &p) in y_true.iter().zip(y_pred) {
            cm[t][p] += 1;
        }
        Ok(Self::from_confusion_checked(cm, labels, positive))
    }

    /// Computes every metric from a confusion matrix `cm[true][predicted]` over `labels`, with
    /// the same arithmetic as [`Metrics::compute`] (which counts the matrix and calls this):
    /// the predictor's online F1 over its feedback window is computed here too, so online and
    /// offline figures mean the same thing.
    pub fn from_confusion(
        cm: Vec<Vec<u64>>,
        labels: &[String],
        positive: Option<usize>,
    ) -> Result<Metrics, String> {
        let k = labels.len();
        if cm.len() != k || cm.iter().any(|row| row.len() != k) {
            return Err(format!(
                "the confusion matrix must be {k} rows of {k} counts"
            ));
        }
        if let Some(p) = positive
            && p >= k
        {
            return Err(format!(
                "positive class index {p} is out of range for {k} labels"
            ));
        }
        Ok(Self::from_confusion_checked(cm, labels, positive))
    }

    fn from_confusion_checked(
        cm: Vec<Vec<u64>>,
        labels: &[String],
        positive: Option<usize>,
    ) -> Metrics {
        let k = labels.len();
        let n: u64 = cm.iter().flatten().sum();
        let correct: u64 = (0..k).map(|c| cm[c][c]).sum();
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };

        let mut per_class = Vec::with_capacity(k);
        let mut f1s = Vec::with_capacity(k);
        for (c, label) in labels.iter().enumerate() {
            let tp = cm[c][c];
            let support: u64 = cm[c].iter().sum();
            let predicted: u64 = cm.iter().map(|row| row[c]).sum();
            let (fn_, fp) = (support - tp, predicted - tp);
            // scikit-learn >= 1.3 computes F1 as 2TP / (2TP + FP + FN), not from P and R.
            let f1 = ratio(2 * tp, 2 * tp + fp + fn_);
            f1s.push((f1, support, predicted));
            per_class.push(ClassMetrics {
                label: label.clone(),
                precision: ratio(tp, predicted),
                recall: ratio(tp, support),
                f1,
                support,
            });
        }
        // scikit-learn averages over the labels that occur in y_true or y_pred.
        let present: Vec<f64> = f1s
            .iter()
            .filter(|(_, s, p)| *s > 0 || *p > 0)
            .map(|(f, _, _)| *f)
            .collect();
        let f1_macro = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        let f1_weighted = if n == 0 {
            0.0
        } else {
            f1s.iter().map(|(f, s, _)| f * *s as f64).sum::<f64>() / n as f64
        };
        Metrics {
            accuracy: ratio(correct, n),
            f1_binary: positive.map(|p| per_class[p].f1),
            f1_macro,
            f1_weighted,
            per_class,
            confusion_matrix: cm,
        }
    }

    /// The value of one metric; `None` for `f1Binary` when there is no positive label.
    pub fn score(&self, metric: MetricName) -> Option<f64> {
        match metric {
            MetricName::F1Macro => Some(self.f1_macro),
            MetricName::F1Weighted => Some(self.f1_weighted),
            MetricName::F1Binary => self.f1_binary,
            MetricName::Accuracy => Some(self.accuracy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(k: usize) -> Vec<String> {
        (0..k).map(|c| c.to_string()).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    // Expected values below were computed once with scikit-learn 1.9.1 (f1_score,
    // precision_recall_fscore_support, accuracy_score, confusion_matrix, zero_division=0) on
    // exactly these vectors; see trainer-job/bench/sklearn_metrics_reference.py.
    const BIN_TRUE: [usize; 12] = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1];
    const BIN_PRED: [usize; 12] = [0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1];

    #[test]
    fn binary_metrics_match_scikit_learn() {
        let m = Metrics::compute(&BIN_TRUE, &BIN_PRED, &labels(2), Some(1)).unwrap();
        close(m.f1_binary.unwrap(), SK_BIN_F1);
        close(m.f1_macro, SK_BIN_F1_MACRO);
        close(m.f1_weighted, SK_BIN_F1_WEIGHTED);
        close(m.accuracy, SK_BIN_ACCURACY);
        for c in 0..2 {
            close(m.per_class[c].precision, SK_BIN_PRECISION[c]);
            close(m.per_class[c].recall, SK_BIN_RECALL[c]);
            close(m.per_class[c].f1, SK_BIN_F1_PER_CLASS[c]);
        }
        assert_eq!(m.confusion_matrix, vec![vec![3, 2], vec![2, 5]]);
    }

    const MC_TRUE: [usize; 15] = [0, 1, 2, 2, 1, 0, 3, 3, 1, 2, 0, 0, 1, 2, 3];
    const MC_PRED: [usize; 15] = [0, 2, 2, 2, 1, 1, 2, 2, 1, 0, 0, 0, 1, 2, 2];

    #[test]
    fn multiclass_metrics_match_scikit_learn_when_a_class_is_never_predicted() {
        // Class 3 is never predicted: linfa would give NaN, scikit-learn (zero_division=0) 0.
        let m = Metrics::compute(&MC_TRUE, &MC_PRED, &labels(4), None).unwrap();
        assert_eq!(m.f1_binary, None);
        close(m.f1_macro, SK_MC_F1_MACRO);
        close(m.f1_weighted, SK_MC_F1_WEIGHTED);
        close(m.accuracy, SK_MC_ACCURACY);
        for c in 0..4 {
            close(m.per_class[c].precision, SK_MC_PRECISION[c]);
            close(m.per_class[c].recall, SK_MC_RECALL[c]);
            close(m.per_class[c].f1, SK_MC_F1_PER_CLASS[c]);
            assert_eq!(m.per_class[c].support, SK_MC_SUPPORT[c]);
        }
        assert_eq!(m.per_class[3].precision, 0.0);
    }

    #[test]
    fn macro_average_skips_labels_absent_from_truth_and_predictions() {
        // Label 2 never occurs: scikit-learn's default labels leave it out of the average.
        let m = Metrics::compute(&[0, 1, 1, 0], &[0, 1, 0, 0], &labels(3), None).unwrap();
        let f1_0 = 2.0 * 2.0 / (2.0 * 2.0 + 1.0);
        let f1_1 = 2.0 / (2.0 + 1.0);
        close(m.f1_macro, (f1_0 + f1_1) / 2.0);
        assert_eq!(m.per_class[2].f1, 0.0);
    }

    #[test]
    fn from_confusion_equals_compute() {
        let m = Metrics::compute(&MC_TRUE, &MC_PRED, &labels(4), None).unwrap();
        let again = Metrics::from_confusion(m.confusion_matrix.clone(), &labels(4), None).unwrap();
        assert_eq!(again, m);
        let b = Metrics::compute(&BIN_TRUE, &BIN_PRED, &labels(2), Some(1)).unwrap();
        let again =
            Metrics::from_confusion(vec![vec![3, 2], vec![2, 5]], &labels(2), Some(1)).unwrap();
        assert_eq!(again, b);
        assert!(Metrics::from_confusion(vec![vec![1]], &labels(2), None).is_err());
        assert!(Metrics::from_confusion(vec![vec![0; 2]; 2], &labels(2), Some(2)).is_err());
        let empty = Metrics::from_confusion(vec![vec![0; 2]; 2], &labels(2), None).unwrap();
        assert_eq!((empty.accuracy, empty.f1_macro), (0.0, 0.0));
    }

    #[test]
    fn mismatched_or_out_of_range_input_is_an_error() {
        assert!(Metrics::compute(&[0, 1], &[0], &labels(2), None).is_err());
        assert!(Metrics::compute(&[0, 2], &[0, 1], &labels(2), None).is_err());
        assert!(Metrics::compute(&[0, 1], &[0, 1], &labels(2), Some(2)).is_err());
    }

    #[test]
    fn metric_names_round_trip() {
        for m in MetricName::ALL {
            assert_eq!(m.as_str().parse::<MetricName>().unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        assert!("f1".parse::<MetricName>().is_err());
        assert_eq!(MetricName::default(), MetricName::F1Macro);
    }

    include!("metrics_sklearn_reference.rs");
}
