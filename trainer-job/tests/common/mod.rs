//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The wine-seed data in the workspace (`<workspace>/../shared/data/wine-seed`); tests read
/// it from there and never copy it into the repository.
pub fn wine_seed() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine-seed");
    assert!(
        dir.join("data_1.csv").is_file(),
        "the wine-seed data is missing: expected {} (the workspace's ../shared/data/wine-seed)",
        dir.display()
    );
    dir
}

/// A directory holding copies of the named wine-seed slots, as a data URI would.
pub fn data_dir(root: &Path, name: &str, slots: &[&str]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for slot in slots {
        std::fs::copy(wine_seed().join(slot), dir.join(slot)).unwrap();
    }
    format!("file://{}/", dir.display())
}

pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}
