//! The chart grants the operator exactly the API calls it makes: the rules `helm template`
//! renders equal the list kept next to the code (`operator/rbac.txt`), nothing more and
//! nothing less. Needs helm from `make components`; no cluster.

use std::collections::BTreeSet;

use champion_tests::cluster::Layout;
use champion_tests::operator::workspace;
use champion_tests::{ClusterError, Result};
use serde_json::Value;

/// (group, resource, verb) triples; the core group is spelled "core".
type Grants = BTreeSet<(String, String, String)>;

fn listed() -> Result<Grants> {
    let path = workspace().join("operator/rbac.txt");
    let text = std::fs::read_to_string(&path).map_err(ClusterError::io("reading", &path))?;
    let mut out = Grants::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [group, resource, verb] = f[..] else {
            return Err(ClusterError::Invalid(format!(
                "operator/rbac.txt: expected \"group resource verb\", got {line:?}"
            )));
        };
        out.insert((group.into(), resource.into(), verb.into()));
    }
    Ok(out)
}

fn rendered(values: &[&str]) -> Result<Grants> {
    let helm = Layout::from_env().bin("helm");
    let chart = workspace()
        .join("charts/champion-operator")
        .display()
        .to_string();
    let mut args = vec![
        "template",
        "champion",
        chart.as_str(),
        "--namespace",
        "champion-system",
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    let out = std::process::Command::new(&helm)
        .args(&args)
        .output()
        .map_err(ClusterError::io("running", &helm))?;
    if !out.status.success() {
        return Err(ClusterError::Invalid(format!(
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut grants = Grants::new();
    for doc in text.split("\n---") {
        let Ok(v) = serde_yaml::from_str::<Value>(doc) else {
            continue;
        };
        if !matches!(v["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in v["rules"].as_array().into_iter().flatten() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for verb in strings("verbs") {
                        let g = if g.is_empty() {
                            "core".to_string()
                        } else {
                            g.clone()
                        };
                        grants.insert((g, r.clone(), verb));
                    }
                }
            }
        }
    }
    Ok(grants)
}

#[test]
fn the_chart_grants_exactly_what_the_operator_calls() -> Result<()> {
    let want = listed()?;
    for values in [&[][..], &["watchNamespace=team-a"][..]] {
        let got = rendered(values)?;
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "values {values:?}: granted but never called: {extra:?}; called but not granted: {missing:?}"
        );
    }
    // Without Secret access the one Secret rule goes, and nothing else.
    let no_secrets = rendered(&["readSecrets=false"])?;
    let gone: Vec<_> = want.difference(&no_secrets).collect();
    assert_eq!(
        gone,
        vec![&("core".to_string(), "secrets".to_string(), "get".to_string())]
    );
    Ok(())
}
