//! champion's pure-Rust inference against scikit-learn's own `predict_proba`, on small models
//! that scikit-learn fitted and fixtures/make_sklearn_reference.py exported in model.json's
//! layout. Each model also goes through `to_json_bytes` / `from_json_verified` first, so the
//! test covers the file format as well as the arithmetic.

use std::collections::BTreeMap;

use champion_model::{MODEL_FORMAT_VERSION, Model, ModelFile, Scaler};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    classes: usize,
    scaler: Scaler,
    model: Model,
    inputs: Vec<Vec<f64>>,
    expected_proba: Vec<Vec<f64>>,
    expected_class: Vec<usize>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn model_file(case: &Case) -> ModelFile {
    ModelFile {
        format_version: MODEL_FORMAT_VERSION,
        model_version: case.name.clone(),
        created_at: "2026-01-01T00:00:00Z".into(),
        feature_names: vec!["a".into(), "b".into(), "c".into()],
        class_labels: (0..case.classes).map(|c| format!("class{c}")).collect(),
        positive_label: None,
        scaler: case.scaler.clone(),
        model: case.model.clone(),
        algorithm: case.name.clone(),
        params: BTreeMap::new(),
        training_fingerprint: "fixture".into(),
        drift_reference: None,
        sha256: String::new(),
    }
}

#[test]
fn every_model_kind_predicts_what_scikit_learn_predicts() {
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/sklearn_reference.json")).unwrap();
    assert_eq!(fixture.cases.len(), 8);
    for case in &fixture.cases {
        let mut model = model_file(case);
        let bytes = model.to_json_bytes().unwrap();
        let loaded = ModelFile::from_json_verified(&bytes).unwrap();
        assert_eq!(
            loaded, model,
            "{}: the model changed on its way through JSON",
            case.name
        );
        let compiled = loaded.compile().unwrap();
        let mut out = vec![0.0; case.classes];
        let mut served = vec![0.0; case.classes];
        for (i, row) in case.inputs.iter().enumerate() {
            loaded.predict_proba_into(row, &mut out).unwrap();
            for (c, (got, want)) in out.iter().zip(&case.expected_proba[i]).enumerate() {
                assert!(
                    (got - want).abs() < 1e-12,
                    "{} row {i} class {c}: champion {got}, scikit-learn {want}",
                    case.name
                );
            }
            assert_eq!(
                loaded.predict(row).unwrap(),
                case.expected_class[i],
                "{} row {i}",
                case.name
            );
            // The serving form the predictor uses answers with the very same bits.
            compiled.predict_proba_into(row, &mut served).unwrap();
            assert_eq!(
                served.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
                out.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
                "{} ({}) row {i}",
                case.name,
                compiled.form()
            );
        }
    }
}
