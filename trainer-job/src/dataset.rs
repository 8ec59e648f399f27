//! `trainer-job dataset wine`: the red-wine quality set that linfa-datasets ships, written as
//! CSV slots that arrive one by one in the demo, plus a fixed test CSV. The cut is
//! `champion_datasets::wine` (the one every test, benchmark and the demo use): the first two
//! thirds of the rows, in order, cut into the slots; the last third the test set.

use std::path::{Path, PathBuf};

use champion_datasets::DatasetError;

use crate::error::TrainError;

/// Writes `data_1.csv` … `data_N.csv` and `test_data.csv` into `out` and returns their paths.
/// Columns: the 11 features (`fixed_acidity`, …), `quality`, and `Id` (the row number).
pub fn write_wine_slots(slots: usize, out: &Path) -> Result<Vec<PathBuf>, TrainError> {
    champion_datasets::write_wine(slots, out).map_err(|e| match e {
        DatasetError::NoSlots => TrainError::Config("--slots must be at least 1".into()),
        DatasetError::Write { path, source } => TrainError::WriteFile {
            path: path.display().to_string(),
            reason: source.to_string(),
        },
        other => TrainError::Config(other.to_string()),
    })
}
