//! Scoring a model on the holdout: the challenger and the champion go through the same code,
//! on the same rows, through the same compiled inference (`ModelFile::compile`) the predictor
//! serves with.

use champion_model::ModelFile;

use crate::data::Table;

/// Predicts every holdout row with `model` and returns the predicted labels as indices into
/// `labels`, appending any label the model knows that `labels` lacks (so both models are
/// scored over one label list). The model's features are looked up by name, so a champion
/// trained on differently ordered columns still scores correctly.
pub fn predict_labels(
    model: &ModelFile,
    holdout: &Table,
    labels: &mut Vec<String>,
) -> Result<Vec<usize>, String> {
    let columns: Vec<usize> = model
        .feature_names
        .iter()
        .map(|name| {
            holdout
                .feature_names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| {
                    format!(
                        "it needs feature {name:?}, which the data does not have (data features: {})",
                        holdout.feature_names.join(", ")
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let label_index: Vec<usize> = model
        .class_labels
        .iter()
        .map(|l| match labels.iter().position(|x| x == l) {
            Some(i) => i,
            None => {
                labels.push(l.clone());
                labels.len() - 1
            }
        })
        .collect();
    let compiled = model.compile().map_err(|e| e.to_string())?;
    let mut row = vec![0.0; columns.len()];
    let mut proba = vec![0.0; model.n_classes()];
    let mut out = Vec::with_capacity(holdout.n_rows());
    for i in 0..holdout.n_rows() {
        let raw = holdout.row(i);
        for (slot, &c) in row.iter_mut().zip(&columns) {
            *slot = raw[c];
        }
        compiled
            .predict_proba_into(&row, &mut proba)
            .map_err(|e| e.to_string())?;
        let mut best = 0;
        for (c, p) in proba.iter().enumerate() {
            if *p > proba[best] {
                best = c;
            }
        }
        out.push(label_index[best]);
    }
    Ok(out)
}
