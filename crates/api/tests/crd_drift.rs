//! The committed CRD must be exactly what the Rust types generate: edit the types, then run
//! `make crds`.

use std::path::Path;

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/modelpipelines.champion.dev.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e} (run `make crds`)", path.display()));
    let generated = champion_api::crd_yaml().expect("the CRD serialises to YAML");
    assert!(
        committed == generated,
        "{} differs from what the types in crates/api generate; run `make crds`",
        path.display()
    );
}
