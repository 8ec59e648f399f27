use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::metrics::{MetricName, Metrics};

/// Version of the `report.json` layout; readers refuse other versions.
pub const REPORT_FORMAT_VERSION: u32 = 2;

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
    /// Hex SHA-256 of model.json's bytes as written: the predictor is started with it and
    /// refuses any other bytes.
    pub model_sha256: String,
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
        if !is_sha256_hex(&self.model_sha256) {
            return Err(ModelError::ReportDigest(self.model_sha256.clone()));
        }
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

/// Whether `s` is a hex SHA-256 digest as champion writes them: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let metrics =
            Metrics::compute(&[0, 1, 1], &[0, 1, 0], &["0".into(), "1".into()], Some(1)).unwrap();
        Report {
            format_version: REPORT_FORMAT_VERSION,
            model_version: "v2".into(),
            metric: MetricName::F1Macro,
            challenger_score: metrics.f1_macro,
            champion_score: Some(0.5),
            champion_version: Some("v1".into()),
            challenger_metrics: metrics.clone(),
            champion_metrics: Some(metrics),
            rows: RowCounts {
                train: 10,
                holdout: 3,
                dropped_duplicates: 1,
                skipped: 0,
            },
            class_labels: vec!["0".into(), "1".into()],
            positive_label: Some("1".into()),
            data_fingerprint: "fp".into(),
            model_sha256: crate::sha256_hex(b"model"),
            algorithm: "adaboost".into(),
            params: BTreeMap::new(),
            durations: Durations::default(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_report_round_trips_with_camel_case_fields() {
        let r = report();
        let bytes = r.to_json_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        for field in [
            "\"challengerScore\"",
            "\"championScore\"",
            "\"droppedDuplicates\"",
            "\"metric\": \"f1Macro\"",
            "\"confusionMatrix\"",
        ] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        assert_eq!(Report::from_json(&bytes).unwrap(), r);
    }

    #[test]
    fn scores_outside_zero_one_or_another_version_are_refused() {
        let mut v: serde_json::Value = serde_json::to_value(report()).unwrap();
        v["championScore"] = 1.5.into();
        let err = Report::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "report.json field championScore is 1.5, expected a finite number in [0, 1]"
        );
        v["championScore"] = serde_json::Value::Null;
        assert!(Report::from_json(&serde_json::to_vec(&v).unwrap()).is_ok());
        v["modelSha256"] = "not-a-digest".into();
        assert_eq!(
            Report::from_json(&serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .to_string(),
            "report.json field modelSha256 is \"not-a-digest\", expected the hex SHA-256 of model.json (64 lowercase hex digits)"
        );
        v["formatVersion"] = 1.into();
        assert!(matches!(
            Report::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err(),
            ModelError::ReportFormatVersion { found: 1, .. }
        ));
        let mut r = report();
        r.challenger_score = f64::NAN;
        assert!(r.to_json_bytes().is_err());
    }
}
