//! The data the repository's tests, benchmarks and demo train on, taken from a registry
//! dependency so that a clone needs nothing beside it: the red "Wine Quality" set (P. Cortez et
//! al., 2009, UCI Machine Learning Repository, CC BY 4.0; 1,599 rows) as `linfa-datasets`
//! embeds it.
//!
//! It is cut the way the original system received its data: the rows in file order, the first
//! two thirds cut into arriving slots (`data_1.csv`, `data_2.csv`, …), the last third the fixed
//! test set (`test_data.csv`) that is never trained on. The columns are the original system's:
//! the 11 features in snake_case, `quality` (3-8) and `Id` (the row number in the full set).
//! The same call always gives the same bytes.

use std::fs;
use std::path::{Path, PathBuf};

use linfa::Dataset;
use linfa::dataset::Records;
use ndarray::Ix1;

/// The header of every wine CSV this crate writes.
pub const WINE_COLUMNS: [&str; 13] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "free_sulfur_dioxide",
    "total_sulfur_dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
    "quality",
    "Id",
];

/// Rows in the full red-wine set.
pub const WINE_ROWS: usize = 1599;

/// Why the data could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("the number of slots must be at least 1")]
    NoSlots,
    #[error("the wine set from linfa-datasets has the columns {found:?}; expected {expected:?}")]
    Columns {
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The wine set as CSV texts: the arriving slots in order, and the fixed test set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WineSplit {
    /// `slots[0]` is `data_1.csv`, `slots[1]` is `data_2.csv`, …
    pub slots: Vec<String>,
    /// `test_data.csv`.
    pub test: String,
}

impl WineSplit {
    /// The file name of slot `i` (0-based): `data_{i+1}.csv`.
    pub fn slot_name(i: usize) -> String {
        format!("data_{}.csv", i + 1)
    }

    /// The CSV text of a file by its name (`data_1.csv`, …, `test_data.csv`).
    pub fn file(&self, name: &str) -> Option<&str> {
        if name == "test_data.csv" {
            return Some(&self.test);
        }
        let n: usize = name
            .strip_prefix("data_")?
            .strip_suffix(".csv")?
            .parse()
            .ok()?;
        self.slots.get(n.checked_sub(1)?).map(String::as_str)
    }
}

/// The wine set cut into `slots` arriving slots plus the test set (see the crate docs).
pub fn wine(slots: usize) -> Result<WineSplit, DatasetError> {
    if slots == 0 {
        return Err(DatasetError::NoSlots);
    }
    let data: Dataset<f64, usize, Ix1> = linfa_datasets::winequality();
    let mut found: Vec<String> = data
        .feature_names()
        .iter()
        .map(|n| n.replace(' ', "_"))
        .collect();
    found.extend(["quality".to_string(), "Id".to_string()]);
    if found != WINE_COLUMNS {
        return Err(DatasetError::Columns {
            found,
            expected: WINE_COLUMNS.iter().map(|s| s.to_string()).collect(),
        });
    }
    let header = WINE_COLUMNS.join(",");
    let records = data.records();
    let targets = data.targets();
    let csv = |rows: std::ops::Range<usize>| {
        let mut text = String::with_capacity(rows.len() * 64 + header.len() + 1);
        text.push_str(&header);
        text.push('\n');
        for i in rows {
            for v in records.row(i) {
                text.push_str(&v.to_string());
                text.push(',');
            }
            text.push_str(&targets[i].to_string());
            text.push(',');
            text.push_str(&i.to_string());
            text.push('\n');
        }
        text
    };
    let n = data.nsamples();
    let test_start = n - n / 3;
    let per_slot = test_start.div_ceil(slots);
    let slots = (0..slots)
        .map(|s| csv((s * per_slot).min(test_start)..((s + 1) * per_slot).min(test_start)))
        .collect();
    Ok(WineSplit {
        slots,
        test: csv(test_start..n),
    })
}

/// Writes `data_1.csv` … `data_N.csv` and `test_data.csv` of [`wine`] into `out` (created if
/// needed) and returns their paths. Each file is written beside its name and renamed into
/// place, so a watcher of `out` never sees half a file.
pub fn write_wine(slots: usize, out: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let split = wine(slots)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DatasetError::Write { path, source }
    };
    fs::create_dir_all(out).map_err(write_err(out))?;
    let mut files = Vec::with_capacity(split.slots.len() + 1);
    let named = split
        .slots
        .iter()
        .enumerate()
        .map(|(i, text)| (WineSplit::slot_name(i), text))
        .chain([("test_data.csv".to_string(), &split.test)]);
    for (name, text) in named {
        let path = out.join(&name);
        let tmp = out.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).map_err(write_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(write_err(&path))?;
        files.push(path);
    }
    Ok(files)
}

/// A directory under `base` holding the files of [`wine`]`(slots)`, written on the first call and
/// shared by every later one, also from other processes (tests and benchmarks of several
/// checkouts share a target directory). Its name carries a digest of the contents; it is
/// assembled in a private directory and renamed into place, so no reader sees part of it.
pub fn wine_dir_in(base: &Path, slots: usize) -> Result<PathBuf, DatasetError> {
    let split = wine(slots)?;
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for text in split.slots.iter().chain([&split.test]) {
        for b in text.bytes().chain([0]) {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let dir = base.join(format!("wine-{slots}-slots-{digest:016x}"));
    if dir.join("test_data.csv").is_file() {
        return Ok(dir);
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DatasetError::Write { path, source }
    };
    fs::create_dir_all(base).map_err(write_err(base))?;
    let staging = base.join(format!(
        ".wine-{slots}-slots-{digest:016x}.{}.tmp",
        std::process::id()
    ));
    write_wine(slots, &staging)?;
    if let Err(e) = fs::rename(&staging, &dir) {
        let _ = fs::remove_dir_all(&staging);
        // Another process put the same contents there first.
        if !dir.join("test_data.csv").is_file() {
            return Err(DatasetError::Write {
                path: dir,
                source: e,
            });
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(csv: &str) -> Vec<&str> {
        csv.lines().skip(1).collect()
    }

    #[test]
    fn two_slots_and_a_test_set_are_the_thirds_of_the_set_in_order() {
        let split = wine(2).expect("the wine set");
        assert_eq!(split.slots.len(), 2);
        let (a, b, t) = (
            rows(&split.slots[0]),
            rows(&split.slots[1]),
            rows(&split.test),
        );
        assert_eq!((a.len(), b.len(), t.len()), (533, 533, 533));
        for text in [&split.slots[0], &split.slots[1], &split.test] {
            assert_eq!(text.lines().next(), Some(WINE_COLUMNS.join(",").as_str()));
        }
        // The Id is the row number; the parts follow each other without gap or overlap.
        let id = |line: &str| line.rsplit(',').next().map(str::to_string);
        assert_eq!(id(a[0]).as_deref(), Some("0"));
        assert_eq!(id(b[0]).as_deref(), Some("533"));
        assert_eq!(id(t[0]).as_deref(), Some("1066"));
        assert_eq!(id(t[532]).as_deref(), Some("1598"));
        // The first row of the UCI file.
        assert_eq!(a[0], "7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4,5,0");
        let qualities: std::collections::BTreeSet<&str> = a
            .iter()
            .chain(&b)
            .chain(&t)
            .filter_map(|l| l.split(',').nth(11))
            .collect();
        assert_eq!(
            qualities.into_iter().collect::<Vec<_>>(),
            ["3", "4", "5", "6", "7", "8"]
        );
        assert_eq!(
            wine(2).expect("again"),
            split,
            "the same call gives the same data"
        );
    }

    #[test]
    fn more_slots_cut_the_same_training_rows_finer() {
        let two = wine(2).expect("two slots");
        let three = wine(3).expect("three slots");
        assert_eq!(three.test, two.test);
        let all = |s: &WineSplit| -> Vec<String> {
            s.slots
                .iter()
                .flat_map(|t| rows(t).into_iter().map(str::to_string))
                .collect()
        };
        assert_eq!(all(&three), all(&two));
        assert_eq!(three.file("data_3.csv"), Some(three.slots[2].as_str()));
        assert_eq!(three.file("test_data.csv"), Some(three.test.as_str()));
        assert_eq!(three.file("data_4.csv"), None);
        assert_eq!(three.file("data_0.csv"), None);
        assert!(matches!(wine(0), Err(DatasetError::NoSlots)));
    }

    #[test]
    fn the_files_written_are_the_texts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("wine");
        let files = write_wine(2, &out).expect("written");
        let names: Vec<String> = files
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["data_1.csv", "data_2.csv", "test_data.csv"]);
        let split = wine(2).expect("the wine set");
        for (path, name) in files.iter().zip(&names) {
            let on_disk = fs::read_to_string(path).expect("readable");
            assert_eq!(Some(on_disk.as_str()), split.file(name), "{name}");
        }
        let mut listed: Vec<String> = fs::read_dir(&out)
            .expect("listing")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        listed.sort();
        assert_eq!(listed, names, "no temporary file is left behind");
    }
    #[test]
    fn the_shared_directory_is_written_once_and_reused() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = wine_dir_in(base.path(), 2).expect("written");
        let split = wine(2).expect("the wine set");
        for name in ["data_1.csv", "data_2.csv", "test_data.csv"] {
            let on_disk = fs::read_to_string(dir.join(name)).expect("readable");
            assert_eq!(Some(on_disk.as_str()), split.file(name), "{name}");
        }
        let marker = dir.join("data_1.csv");
        let before = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(wine_dir_in(base.path(), 2).expect("again"), dir);
        let after = fs::metadata(&marker)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after, "the second call reuses the files");
        let other = wine_dir_in(base.path(), 3).expect("three slots");
        assert_ne!(other, dir);
        let entries = fs::read_dir(base.path()).expect("listing").count();
        assert_eq!(entries, 2, "no staging directory is left behind");
    }
}
