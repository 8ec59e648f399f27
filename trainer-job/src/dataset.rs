//! `trainer-job dataset wine`: the red-wine quality set that linfa-datasets ships, written as
//! CSV slots that arrive one by one in the demo, plus a fixed test CSV.

use std::fs;
use std::path::{Path, PathBuf};

use linfa::Dataset;
use linfa::dataset::Records;
use ndarray::Ix1;

use crate::error::TrainError;

/// Every fourth row goes to the test file; the rest are cut, in order, into `slots` files.
const TEST_EVERY: usize = 4;

/// Writes `data_1.csv` … `data_N.csv` and `test_data.csv` into `out` and returns their paths.
/// Columns: the 11 features (original names), `quality`, and an `Id` (the row number).
pub fn write_wine_slots(slots: usize, out: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if slots == 0 {
        return Err(TrainError::Config("--slots must be at least 1".into()));
    }
    let wine: Dataset<f64, usize, Ix1> = linfa_datasets::winequality();
    write_slots(&wine, slots, out)
}

fn write_slots(
    data: &Dataset<f64, usize, Ix1>,
    slots: usize,
    out: &Path,
) -> Result<Vec<PathBuf>, TrainError> {
    let write_err = |path: &Path, e: std::io::Error| TrainError::WriteFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    fs::create_dir_all(out).map_err(|e| write_err(out, e))?;
    let mut header: Vec<String> = data.feature_names().to_vec();
    header.push("quality".into());
    header.push("Id".into());
    let header = header.join(",");
    let n = data.nsamples();
    let records = data.records();
    let targets = data.targets();
    let line = |i: usize| {
        let mut fields: Vec<String> = records.row(i).iter().map(|v| v.to_string()).collect();
        fields.push(targets[i].to_string());
        fields.push(i.to_string());
        fields.join(",")
    };
    let (test, train): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|i| i % TEST_EVERY == TEST_EVERY - 1);
    let per_slot = train.len().div_ceil(slots);
    let mut files = Vec::with_capacity(slots + 1);
    let mut write = |name: String, rows: &[usize]| -> Result<(), TrainError> {
        let path = out.join(name);
        let mut text = String::with_capacity(rows.len() * 80 + header.len());
        text.push_str(&header);
        text.push('\n');
        for &i in rows {
            text.push_str(&line(i));
            text.push('\n');
        }
        // Write-then-rename: a watcher of this directory never sees half a slot.
        let tmp = path.with_extension("csv.tmp");
        fs::write(&tmp, text).map_err(|e| write_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| write_err(&path, e))?;
        files.push(path);
        Ok(())
    };
    for (s, rows) in train.chunks(per_slot.max(1)).enumerate() {
        write(format!("data_{}.csv", s + 1), rows)?;
    }
    write("test_data.csv".to_string(), &test)?;
    Ok(files)
}
