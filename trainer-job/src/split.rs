//! The holdout: which rows score the models and never train them.

use sha2::{Digest, Sha256};

use crate::data::Table;

/// Whether row `i` belongs to the holdout. The side is a function of the row's content
/// (feature names and values, target) and the seed only, so adding data never moves an old
/// row across, and neither does reordering the objects or their columns.
pub fn in_holdout(table: &Table, i: usize, order: &[usize], seed: u64, fraction: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    let row = table.row(i);
    for &f in order {
        h.update(table.feature_names[f].as_bytes());
        h.update([0]);
        h.update(row[f].to_bits().to_le_bytes());
    }
    h.update(table.targets[i].as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits as a uniform number in [0, 1).
    let u = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// Feature indices in name order, the order [`in_holdout`] hashes in.
pub fn name_order(table: &Table) -> Vec<usize> {
    let mut order: Vec<usize> = (0..table.n_features()).collect();
    order.sort_by(|a, b| table.feature_names[*a].cmp(&table.feature_names[*b]));
    order
}
