//! What a pipeline may ask of its pods, as the platform team configured the operator: hostPath
//! volumes only under allowed directories (none by default), and optionally images only from
//! allowed prefixes. A pipeline that asks for more gets `Degraded=PolicyViolation` and no Job
//! or Deployment: the author gains nothing on the node through the operator.

use champion_api::ModelPipeline;

/// The operator's pod policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodPolicy {
    /// Directories under which hostPath volumes may be mounted; empty: no hostPath at all.
    pub host_path_prefixes: Vec<String>,
    /// Image prefixes trainer and predictor images must start with; empty: any image.
    pub image_prefixes: Vec<String>,
}

/// Whether `path` is `prefix` or below it, by whole path segments and without `..`.
fn under(path: &str, prefix: &str) -> bool {
    let segments = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_string)
            .collect()
    };
    if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
        return false;
    }
    let (path, prefix) = (segments(path), segments(prefix));
    path.len() >= prefix.len() && path[..prefix.len()] == prefix[..]
}

impl PodPolicy {
    /// `Err` says which field asks for what, and what is allowed.
    pub fn check(&self, mp: &ModelPipeline) -> Result<(), String> {
        for v in &mp.spec.volumes {
            if let Some(h) = &v.host_path
                && !self.host_path_prefixes.iter().any(|p| under(&h.path, p))
            {
                return Err(match self.host_path_prefixes.is_empty() {
                    true => format!(
                        "spec.volumes[{}].hostPath {:?}: this operator allows no hostPath volumes (use a persistentVolumeClaim, or ask the platform team to allow a directory)",
                        v.name, h.path
                    ),
                    false => format!(
                        "spec.volumes[{}].hostPath {:?} is not under an allowed directory ({})",
                        v.name,
                        h.path,
                        self.host_path_prefixes.join(", ")
                    ),
                });
            }
        }
        if !self.image_prefixes.is_empty() {
            for (field, image) in [
                ("spec.trainer.image", &mp.spec.trainer.image),
                ("spec.predictor.image", &mp.spec.predictor.image),
            ] {
                if !self.image_prefixes.iter().any(|p| image.starts_with(p)) {
                    return Err(format!(
                        "{field} {image:?} does not start with an allowed image prefix ({})",
                        self.image_prefixes.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pipeline;

    #[test]
    fn host_paths_only_under_allowed_directories() {
        // The fixture mounts hostPath /var/champion.
        let mp = pipeline();
        let none = PodPolicy::default();
        assert!(
            none.check(&mp)
                .is_err_and(|e| e.contains("allows no hostPath") && e.contains("/var/champion"))
        );
        let allowed = PodPolicy {
            host_path_prefixes: vec!["/var/champion".into()],
            ..PodPolicy::default()
        };
        assert_eq!(allowed.check(&mp), Ok(()));
        let parent = PodPolicy {
            host_path_prefixes: vec!["/var/".into()],
            ..PodPolicy::default()
        };
        assert_eq!(parent.check(&mp), Ok(()));
        let sibling = PodPolicy {
            host_path_prefixes: vec!["/var/champ".into()],
            ..PodPolicy::default()
        };
        assert!(sibling.check(&mp).is_err(), "prefixes match whole segments");
        let mut escape = pipeline();
        if let Some(h) = escape.spec.volumes[0].host_path.as_mut() {
            h.path = "/var/champion/../../etc".into();
        }
        assert!(allowed.check(&escape).is_err(), "no way out with ..");
        let mut pvc = pipeline();
        pvc.spec.volumes[0].host_path = None;
        assert_eq!(none.check(&pvc), Ok(()), "claims are always allowed");
    }

    #[test]
    fn images_only_from_allowed_prefixes_when_configured() {
        let mut mp = pipeline();
        mp.spec.volumes.clear();
        assert_eq!(PodPolicy::default().check(&mp), Ok(()));
        let policy = PodPolicy {
            image_prefixes: vec!["champion/".into()],
            ..PodPolicy::default()
        };
        assert_eq!(policy.check(&mp), Ok(()));
        mp.spec.predictor.image = "evil.example/miner:1".into();
        assert!(
            policy
                .check(&mp)
                .is_err_and(|e| e.starts_with("spec.predictor.image"))
        );
    }
}
