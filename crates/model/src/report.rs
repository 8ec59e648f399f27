use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::metrics::{MetricName, Metrics};

/// Version of the `report.json` layout; readers refuse other versions.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// The content of `report.json`: how the challenger and the current champion scored on the
/// same holdout, and what the run consumed. The operator decides promotion from it alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub format_version: u32,
    pub model_version: String,
    /// The metric both scores are in.
    pub metric: MetricName,
    pub challenger_score: f64,
    /// The champion's score on the same holdout; null when there was no champion.
    pub champion_score: Option<f64>,
    pub champion_version: Option<String>,
    pub challenger_metrics: Metrics,
    pub champion_metrics: Option<Metrics>,
    pub rows: RowCounts,
    pub class_labels: Vec<String>,
    pub positive_label: Option<String>,
    /// Fingerprint of the data listing the run read.
    pub data_fingerprint: String,
    pub algorithm: String,
    pub params: BTreeMap<String, String>,
    pub durations: Durations,
    /// RFC 3339 time the report was written.
    pub created_at: String,
}

/// Row counts of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowCounts {
    pub train: u64,
    pub holdout: u64,
    /// Rows dropped because an identical row was already read (across all objects).
    pub dropped_duplicates: u64,
    /// Bad rows skipped (only when the run was asked to skip them).
    pub skipped: u64,
}

/// Wall-clock durations of the run's steps, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    pub load_seconds: f64,
    pub fit_seconds: f64,
    pub evaluate_seconds: f64,
    pub total_seconds: f64,
}

impl Report {
    /// Parses `report.json`, refusing another format version and scores that are not finite
    /// numbers in [0, 1].
    pub fn from_json(bytes: &[u8]) -> Result<Report, ModelError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ModelError::ParseReport)?;
        let found = value
            .get("formatVersion")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if found != u64::from(REPORT_FORMAT_VERSION) {
            return Err(ModelError::ReportFormatVersion {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                expected: REPORT_FORMAT_VERSION,
            });
        }
        let report: Report = serde_json::from_value(value).map_err(ModelError::ParseReport)?;
        report.validate()?;
        Ok(report)
    }

    /// The JSON to store (validated first, so a writer cannot produce a report readers refuse).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.validate()?;
        serde_json::to_vec_pretty(self).map_err(|source| ModelError::Serialize {
            what: "report.json",
            source,
        })
    }

    fn validate(&self) -> Result<(), ModelError> {
        let check = |field: &str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ModelError::ReportScore {
                    field: field.to_string(),
                    value,
                })
            }
        };
        check("challengerScore", self.challenger_score)?;
        if let Some(s) = self.champion_score {
            check("championScore", s)?;
        }
        for (name, metrics) in [
            ("challengerMetrics", Some(&self.challenger_metrics)),
            ("championMetrics", self.champion_metrics.as_ref()),
        ] {
            let Some(m) = metrics else { continue };
            check(&format!("{name}.accuracy"), m.accuracy)?;
            check(&format!("{name}.f1Macro"), m.f1_macro)?;
            check(&format!("{name}.f1Weighted"), m.f1_weighted)?;
            if let Some(b) = m.f1_binary {
                check(&format!("{name}.f1Binary"), b)?;
            }
        }
        Ok(())
    }
}
