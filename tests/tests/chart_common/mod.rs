//! `helm template` of the chart for the chart_* suites, and small readers of what it renders.
//! Needs helm from `make components`; no cluster.

#![allow(dead_code)] // each suite uses a part

use std::collections::BTreeMap;

use champion_tests::cluster::Layout;
use champion_tests::operator::workspace;
use champion_tests::{ClusterError, Result};
use serde_json::Value;

pub const RELEASE: &str = "champion";
pub const RELEASE_NAMESPACE: &str = "champion-system";

/// `helm template champion <chart> --namespace <namespace> --set <v>...`: the manifest, or
/// helm's error text when it refuses the values.
pub fn helm_template(
    namespace: &str,
    values: &[&str],
) -> Result<std::result::Result<String, String>> {
    let helm = Layout::from_env().bin("helm");
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    let out = std::process::Command::new(&helm)
        .args(&args)
        .output()
        .map_err(ClusterError::io("running", &helm))?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

pub fn chart_dir() -> std::path::PathBuf {
    workspace().join("charts/champion-operator")
}

/// The chart rendered into [`RELEASE_NAMESPACE`] with `values`, as parsed documents; an error
/// when helm refuses the values.
pub fn render(values: &[&str]) -> Result<Vec<Value>> {
    render_in(RELEASE_NAMESPACE, values)
}

pub fn render_in(namespace: &str, values: &[&str]) -> Result<Vec<Value>> {
    let manifest = helm_template(namespace, values)?
        .map_err(|e| ClusterError::Invalid(format!("helm template {values:?}: {e}")))?;
    documents(&manifest)
}

/// The YAML documents of a manifest (empty ones dropped).
pub fn documents(manifest: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in manifest.split("\n---") {
        let v: Value = serde_yaml::from_str(doc).map_err(|e| {
            ClusterError::Invalid(format!("rendered YAML does not parse: {e}\n{doc}"))
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of `kind`; panics naming the kind when there is none or several.
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} is rendered: {found:?}");
    found[0]
}

/// The operator container of the rendered Deployment.
pub fn operator_container(docs: &[Value]) -> Value {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The operator container's environment: name → value (valueFrom entries as "<from>").
pub fn operator_env(docs: &[Value]) -> BTreeMap<String, String> {
    let container = operator_container(docs);
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let value = e["value"].as_str().unwrap_or("<from>").to_string();
        assert!(
            env.insert(name.clone(), value).is_none(),
            "env {name} is set once"
        );
    }
    env
}
