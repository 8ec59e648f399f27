//! The committed CRDs must be exactly what the Rust types generate: edit the types, then run
//! `make crds` (which writes crds/ and the Helm chart's copy).

fn assert_matches_generated(relative: &str) {
    let path = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
    .join(relative);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e} (run `make crds`)", path.display()));
    let generated = champion_api::crd_yaml().expect("the CRD serialises to YAML");
    assert!(
        committed == generated,
        "{relative} differs from what the types in crates/api generate; run `make crds`"
    );
}

#[test]
fn committed_crd_matches_the_generated_one() {
    assert_matches_generated("crds/modelpipelines.champion.dev.yaml");
}

#[test]
fn helm_chart_crd_matches_the_generated_one() {
    assert_matches_generated("charts/champion-operator/crds/modelpipelines.champion.dev.yaml");
}
