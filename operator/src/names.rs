//! The names of what the operator creates and the model versions it asks for: pure functions
//! of the pipeline's name, the data fingerprint and the run's attempt, so a restarted operator
//! computes the same names. Read by observe (to find its objects), decide (to name a new run)
//! and build (to create them).

use sha2::{Digest, Sha256};

/// Component label value of trainer Jobs and their pods.
pub const COMPONENT_TRAINER: &str = "trainer";
/// Component label value of predictor Deployments, their pods and Services.
pub const COMPONENT_PREDICTOR: &str = "predictor";
/// Kubernetes names that become pod labels or DNS labels are limited to 63 characters.
const MAX_NAME: usize = 63;

fn short_hash(s: &str, len: usize) -> String {
    let digest = hex::encode(Sha256::digest(s.as_bytes()));
    digest[..len].to_string()
}

/// `s` as a DNS label fragment: lowercase alphanumerics and '-', starting with a letter.
fn dns_fragment(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "mlp-");
    }
    out
}

/// `<pipeline><suffix>` as a valid DNS label of at most 63 characters. A pipeline name too long
/// to fit is cut and followed by a hash of the full name, so two long names sharing a prefix
/// still get distinct objects.
fn dns_name(pipeline: &str, suffix: &str) -> String {
    let base = dns_fragment(pipeline);
    if base.len() + suffix.len() <= MAX_NAME {
        return format!("{base}{suffix}");
    }
    let hash = short_hash(pipeline, 8);
    let keep = MAX_NAME - suffix.len() - hash.len() - 1;
    let cut: String = base.chars().take(keep).collect();
    format!("{}-{hash}{suffix}", cut.trim_end_matches('-'))
}

/// A label value for `s` (at most 63 characters, alphanumeric at both ends).
pub fn label_value(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_string();
    }
    let hash = short_hash(s, 8);
    let cut: String = s.chars().take(MAX_NAME - hash.len() - 1).collect();
    format!("{}-{hash}", cut.trim_end_matches(['-', '.', '_']))
}

/// Who a pipeline is, for its run versions: namespace, name and uid, so that two pipelines
/// (also one deleted and re-created under the same name) never compute the same version.
pub fn pipeline_identity(mp: &champion_api::ModelPipeline) -> String {
    format!(
        "{}/{}/{}",
        mp.metadata.namespace.as_deref().unwrap_or_default(),
        mp.metadata.name.as_deref().unwrap_or_default(),
        mp.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The model version a run writes: deterministic in the pipeline's identity, the data
/// fingerprint, the force-run token that requested it (if any), the retry attempt and a salt,
/// so a restarted operator computes the same version and Job name, while a forced run or a
/// retry after a failure gets a fresh one. `decide` raises the salt past versions the pipeline
/// already used (data that returns to an earlier fingerprint gets a new version).
pub fn run_version(
    identity: &str,
    fingerprint: &str,
    force_token: Option<&str>,
    attempt: i32,
    salt: u32,
) -> String {
    let mut key = format!("{identity}\0{fingerprint}");
    if let Some(token) = force_token {
        key.push_str("\0force=");
        key.push_str(token);
    }
    if attempt > 0 {
        key.push_str(&format!("\0attempt={attempt}"));
    }
    if salt > 0 {
        key.push_str(&format!("\0salt={salt}"));
    }
    short_hash(&key, 12)
}

/// Name of the trainer Job that writes `version`.
pub fn job_name(pipeline: &str, version: &str) -> String {
    dns_name(pipeline, &format!("-train-{version}"))
}

/// Name of the predictor Deployment and Service.
pub fn predictor_name(pipeline: &str) -> String {
    dns_name(pipeline, "-predictor")
}

/// Name of the challenger's Deployment during a canary.
pub fn canary_name(pipeline: &str) -> String {
    dns_name(pipeline, "-predictor-canary")
}

/// Name of the challenger's Deployment and Service during a shadow run.
pub fn shadow_name(pipeline: &str) -> String {
    dns_name(pipeline, "-predictor-shadow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_valid_and_at_most_63_chars() {
        let long = "a".repeat(60) + ".b-c";
        for name in ["wine", "9lives", long.as_str(), "x.y"] {
            for n in [job_name(name, "0123456789ab"), predictor_name(name)] {
                assert!(n.len() <= 63, "{n} is {} chars", n.len());
                assert!(n.starts_with(|c: char| c.is_ascii_lowercase()), "{n}");
                assert!(
                    n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{n}"
                );
                assert!(!n.ends_with('-'), "{n}");
            }
            assert_eq!(job_name(name, "v1"), job_name(name, "v1"));
        }
        assert_eq!(job_name("wine", "0123456789ab"), "wine-train-0123456789ab");
        assert_eq!(predictor_name("wine"), "wine-predictor");
        let other = "a".repeat(60) + ".b-d";
        assert_ne!(
            predictor_name(&long),
            predictor_name(&other),
            "long names keep a hash of the full name"
        );
    }

    #[test]
    fn label_values_fit_and_stay_distinct() {
        assert_eq!(label_value("wine"), "wine");
        let long_a = format!("{}.a", "p".repeat(70));
        let long_b = format!("{}.b", "p".repeat(70));
        for v in [label_value(&long_a), label_value(&long_b)] {
            assert!(v.len() <= 63, "{v}");
            assert!(v.ends_with(|c: char| c.is_ascii_alphanumeric()), "{v}");
        }
        assert_ne!(label_value(&long_a), label_value(&long_b));
    }

    #[test]
    fn run_version_depends_on_identity_fingerprint_force_token_attempt_and_salt() {
        let id = "team-a/wine/uid-1";
        let v = run_version(id, "fp1", None, 0, 0);
        assert_eq!(v.len(), 12);
        assert_eq!(v, run_version(id, "fp1", None, 0, 0));
        assert_ne!(v, run_version(id, "fp2", None, 0, 0));
        assert_ne!(v, run_version(id, "fp1", Some("now"), 0, 0));
        assert_ne!(v, run_version(id, "fp1", None, 1, 0));
        assert_ne!(v, run_version(id, "fp1", None, 0, 1));
        assert_ne!(v, run_version("team-b/wine/uid-2", "fp1", None, 0, 0));
        assert_ne!(v, run_version("team-a/wine/uid-3", "fp1", None, 0, 0));
    }
}
