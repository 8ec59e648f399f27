//! `drift_cost [ROWS]`: the in-process cost of drift tracking per row, without HTTP or load
//! generator noise: times `DriftTracker::observe` on single rows of the benchmark model's
//! reference (11 features, 10 bins each) and prints `RESULT ns_per_row=… rows=…`.

#[path = "../tests/common/model.rs"]
mod model;

use std::time::Instant;

use predictor::drift::{DriftSettings, DriftTracker};

fn main() -> Result<(), String> {
    let rows: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("ROWS {n:?}: {e}"))?,
        None => 2_000_000,
    };
    let reference = model::normal_drift_reference();
    let tracker = DriftTracker::new(Some(&reference), DriftSettings::default())
        .ok_or("the reference gives no tracker")?;
    // Rows spread over every bin (deterministic, no allocation in the timed loop).
    let base = [
        7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4,
    ];
    let variants: Vec<[f64; 11]> = (0..64)
        .map(|r| {
            let mut row = base;
            for (f, v) in row.iter_mut().enumerate() {
                *v *= 0.7 + ((r * 7 + f * 13) % 61) as f64 / 100.0;
            }
            row
        })
        .collect();
    for row in variants.iter().cycle().take(rows / 10) {
        tracker.observe(row); // warm up
    }
    let start = Instant::now();
    for row in variants.iter().cycle().take(rows) {
        tracker.observe(std::hint::black_box(row));
    }
    let ns = start.elapsed().as_nanos() as f64 / rows as f64;
    println!("RESULT ns_per_row={ns:.1} rows={}", tracker.rows());
    Ok(())
}
