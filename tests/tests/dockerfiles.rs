//! The Dockerfiles (operator/, trainer-job/, predictor/Dockerfile) build what `make images`
//! builds, so the two paths cannot drift: the same `cargo build` packages, `--bins` and profile
//! as the Makefile's `images` target, the binary that `tests/cluster/scripts/image.sh` packages
//! for the same tag, that binary as the entrypoint under /usr/local/bin, user 65532:65532, a
//! distroless final stage, one identical build stage in all three, and a Rust no older than the
//! workspace's rust-version. Reads files only: no Docker here.

use std::collections::{BTreeMap, BTreeSet};

use champion_tests::operator::workspace;
use champion_tests::{ClusterError, Result};

const IMAGES: [&str; 3] = ["operator", "trainer-job", "predictor"];
/// Flags a Dockerfile may add to the Makefile's cargo command (the build uses Cargo.lock as is).
const EXTRA_FLAGS: [&str; 1] = ["--locked"];

fn read(rel: &str) -> Result<String> {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).map_err(ClusterError::io("reading", path))
}

/// A `cargo build` command line: its profile, packages, whether `--bins`, and other flags.
#[derive(Debug, PartialEq)]
struct CargoBuild {
    profile: String,
    packages: BTreeSet<String>,
    bins: bool,
    other: BTreeSet<String>,
}

/// Parses the words after `cargo build`; `resolve` turns a profile reference into its value.
fn cargo_build(line: &str, resolve: impl Fn(&str) -> String) -> CargoBuild {
    let (_, rest) = line
        .split_once("cargo build")
        .unwrap_or_else(|| panic!("no `cargo build` in {line:?}"));
    let words: Vec<&str> = rest
        .split("&&")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut build = CargoBuild {
        profile: String::new(),
        packages: BTreeSet::new(),
        bins: false,
        other: BTreeSet::new(),
    };
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "--profile" => {
                build.profile = resolve(words[i + 1].trim_matches('"'));
                i += 1;
            }
            "-p" | "--package" => {
                build.packages.insert(words[i + 1].to_string());
                i += 1;
            }
            "--bins" => build.bins = true,
            w => {
                build.other.insert(w.to_string());
            }
        }
        i += 1;
    }
    build
}

/// The Makefile's `images` recipe (tab-indented lines after `images:`).
fn makefile_images_recipe(makefile: &str) -> Vec<String> {
    makefile
        .lines()
        .skip_while(|l| !l.starts_with("images:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .flat_map(|l| expand_call(makefile, l.trim()))
        .collect()
}

/// A recipe line `$(call NAME,ARG)` as the lines of `define NAME`, `$(1)` replaced by ARG;
/// any other line as it is.
fn expand_call(makefile: &str, line: &str) -> Vec<String> {
    let Some((name, arg)) = line
        .strip_prefix("$(call ")
        .and_then(|c| c.strip_suffix(')'))
        .and_then(|c| c.split_once(','))
    else {
        return vec![line.to_string()];
    };
    let body: Vec<String> = makefile
        .lines()
        .skip_while(|l| l.trim() != format!("define {name}"))
        .skip(1)
        .take_while(|l| l.trim() != "endef")
        .map(|l| l.trim().trim_start_matches('@').replace("$(1)", arg))
        .collect();
    assert!(!body.is_empty(), "the Makefile defines {name}");
    body
}

/// `NAME ?= value` of the Makefile.
fn make_default(makefile: &str, name: &str) -> String {
    makefile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ?= ")))
        .unwrap_or_else(|| panic!("the Makefile sets a default {name}"))
        .trim()
        .to_string()
}

/// image tag (`champion/operator:dev`) → the binary image.sh packages for it.
fn make_image_binaries(recipe: &[String]) -> BTreeMap<String, String> {
    recipe
        .iter()
        .filter(|l| l.contains("$(IMAGE)"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let tag = words
                .iter()
                .position(|w| *w == "--tag")
                .map(|i| words[i + 1].to_string())
                .unwrap_or_else(|| panic!("{l:?} has --tag"));
            let bin = words
                .last()
                .and_then(|w| w.strip_prefix("$(BIN)/"))
                .unwrap_or_else(|| panic!("{l:?} ends with $(BIN)/<binary>"))
                .to_string();
            (tag, bin)
        })
        .collect()
}

/// Dockerfile instructions with `\` continuations joined (comments dropped).
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    out
}

fn version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn each_dockerfile_builds_what_make_images_builds() -> Result<()> {
    let makefile = read("Makefile")?;
    let recipe = makefile_images_recipe(&makefile);
    let default_profile = make_default(&makefile, "IMAGE_PROFILE");
    let make_build = cargo_build(
        recipe
            .iter()
            .find(|l| l.starts_with("cargo build"))
            .expect("the images recipe runs cargo build"),
        |p| {
            assert_eq!(p, "$(IMAGE_PROFILE)", "the Makefile's profile variable");
            default_profile.clone()
        },
    );
    assert_eq!(make_build.profile, "release");
    let binaries = make_image_binaries(&recipe);
    let rust_version = read("Cargo.toml")?
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the workspace sets rust-version");

    let mut build_stages = BTreeSet::new();
    for image in IMAGES {
        let file = format!("{image}/Dockerfile");
        let steps = instructions(&read(&file)?);
        let arg_default = steps
            .iter()
            .find_map(|s| s.strip_prefix("ARG PROFILE="))
            .unwrap_or_else(|| panic!("{file}: ARG PROFILE=<default>"))
            .to_string();
        let run = steps
            .iter()
            .find(|s| s.starts_with("RUN") && s.contains("cargo build"))
            .unwrap_or_else(|| panic!("{file}: a RUN with cargo build"));
        let build = cargo_build(run, |p| {
            assert_eq!(p, "$PROFILE", "{file}: the profile comes from ARG PROFILE");
            arg_default.clone()
        });
        assert_eq!(build.profile, make_build.profile, "{file}: profile");
        assert_eq!(build.packages, make_build.packages, "{file}: packages");
        assert_eq!(build.bins, make_build.bins, "{file}: --bins");
        let extra: BTreeSet<String> = build.other.difference(&make_build.other).cloned().collect();
        assert!(
            extra.iter().all(|f| EXTRA_FLAGS.contains(&f.as_str()))
                && make_build.other.is_subset(&build.other),
            "{file}: flags differ from the Makefile's: {:?} vs {:?}",
            build.other,
            make_build.other
        );

        let tag = format!("champion/{image}:dev");
        let bin = binaries
            .get(&tag)
            .unwrap_or_else(|| panic!("make images packages {tag}"));
        assert!(
            run.contains(&format!("target/$PROFILE/{bin}")),
            "{file}: the build stage keeps target/$PROFILE/{bin}"
        );
        let froms: Vec<&String> = steps.iter().filter(|s| s.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{file}: a build stage and a final stage");
        let builder = froms[0];
        let rust = builder
            .split_whitespace()
            .nth(1)
            .and_then(|img| img.split(":").nth(1))
            .and_then(|tag| tag.split('-').next())
            .unwrap_or_else(|| panic!("{file}: the build stage is FROM rust:<version>-…"));
        assert!(
            builder.contains("/rust:") && version(rust) >= version(&rust_version),
            "{file}: Rust {rust} in {builder:?} is at least rust-version {rust_version}"
        );
        assert!(
            froms[1].contains("distroless") && froms[1].ends_with(":nonroot"),
            "{file}: a distroless nonroot final stage: {}",
            froms[1]
        );
        let final_stage: Vec<&String> = steps.iter().skip_while(|s| *s != froms[1]).collect();
        let has = |want: &str| final_stage.iter().any(|s| s.as_str() == want);
        assert!(
            has(&format!(
                "COPY --from=build /out/{bin} /usr/local/bin/{bin}"
            )),
            "{file}: copies {bin} into /usr/local/bin: {final_stage:?}"
        );
        // image.sh: default entrypoint /usr/local/bin/<binary>, user 65532:65532.
        assert!(
            has(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}: entrypoint"
        );
        assert!(has("USER 65532:65532"), "{file}: user 65532");
        let stage: Vec<String> = steps
            .iter()
            .skip_while(|s| !s.starts_with("ARG PROFILE="))
            .take_while(|s| *s != froms[1])
            .cloned()
            .collect();
        build_stages.insert(stage);
    }
    assert_eq!(
        build_stages.len(),
        1,
        "the build stage is the same in every Dockerfile (Docker builds it once)"
    );
    Ok(())
}

#[test]
fn the_parser_sees_a_drifted_dockerfile() {
    let make = cargo_build(
        "cargo build --profile $(IMAGE_PROFILE) -p operator -p predictor --bins",
        |_| "release".into(),
    );
    let same = cargo_build(
        "RUN cargo build --locked --profile \"$PROFILE\" -p operator -p predictor --bins && cp x y",
        |_| "release".into(),
    );
    assert_eq!(
        (&same.profile, &same.packages, same.bins),
        (&make.profile, &make.packages, make.bins)
    );
    let drifted = cargo_build(
        "RUN cargo build --profile \"$PROFILE\" -p operator --bin operator",
        |_| "dev".into(),
    );
    assert_ne!(drifted.profile, make.profile);
    assert_ne!(drifted.packages, make.packages);
    assert!(!drifted.bins);
    assert_eq!(
        instructions("FROM a\n# c\nRUN x \\\n    y\n"),
        vec!["FROM a".to_string(), "RUN x  y".to_string()]
    );
}
