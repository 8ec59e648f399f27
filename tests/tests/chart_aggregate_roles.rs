//! The chart's aggregate ClusterRoles work on a live API server: a user bound to the default
//! `view` role in a namespace may read ModelPipelines there and not create them; a user bound to
//! `edit` may create and delete them; neither may do so in another namespace. The ClusterRoles
//! are applied from `helm template` output and removed again, also on failure.
//!
//! Needs the cluster (no images). Run: `cargo test -p champion-tests --test chart_aggregate_roles`.

mod chart_common;

use std::time::Duration;

use champion_tests::operator::apply_crd;
use champion_tests::testing::{TestNamespace, wait_for};
use champion_tests::{Cluster, ClusterError, Result, shared};
use chart_common::{documents, helm_template};

/// Deletes the applied ClusterRoles on drop.
struct Applied<'a> {
    cluster: &'a Cluster,
    names: Vec<String>,
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(self.names.iter().map(String::as_str));
        if let Err(e) = self.cluster.kubectl(&args) {
            eprintln!("cleanup: deleting {:?}: {e}", self.names);
        }
    }
}

fn can_i(cluster: &Cluster, user: &str, verb: &str, ns: &str) -> bool {
    // `auth can-i` exits 1 for "no": an Err here is a refusal (a failing call prints its reason
    // in the assertion's message through the waits below).
    cluster
        .kubectl(&[
            "auth",
            "can-i",
            verb,
            "modelpipelines.champion.dev",
            "-n",
            ns,
            &format!("--as={user}"),
        ])
        .is_ok_and(|out| out.trim() == "yes")
}

#[tokio::test]
async fn view_and_edit_users_get_modelpipelines_through_the_aggregated_roles() -> Result<()> {
    let cluster = shared().await?;
    apply_crd(&cluster)?;
    let ns = TestNamespace::create(&cluster, "chart-users").await?;
    let other = TestNamespace::create(&cluster, "chart-other").await?;
    let manifest = helm_template(&ns.name, &[])?
        .map_err(|e| ClusterError::Invalid(format!("helm template: {e}")))?;
    let roles: Vec<serde_json::Value> = documents(&manifest)?
        .into_iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .collect();
    assert_eq!(roles.len(), 2, "the view and edit roles: {roles:?}");
    let applied = Applied {
        cluster: &cluster,
        names: roles
            .iter()
            .map(|r| {
                format!(
                    "clusterrole/{}",
                    r["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect(),
    };
    let dir = tempfile::tempdir().map_err(ClusterError::io("creating", "a temporary directory"))?;
    let file = dir.path().join("roles.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": roles});
    std::fs::write(&file, list.to_string()).map_err(ClusterError::io("writing", &file))?;
    cluster.kubectl(&["apply", "-f", &file.display().to_string()])?;
    for (user, role) in [("alice-editor", "edit"), ("bob-viewer", "view")] {
        cluster.kubectl(&[
            "-n",
            &ns.name,
            "create",
            "rolebinding",
            user,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])?;
    }
    // The aggregation controller fills `edit`/`view` asynchronously.
    let (users, cluster_ref) = (&ns.name, &cluster);
    wait_for(
        "the edit and view roles to include ModelPipelines",
        Duration::from_secs(60),
        || async move {
            Ok((can_i(cluster_ref, "alice-editor", "create", users)
                && can_i(cluster_ref, "bob-viewer", "list", users))
            .then_some(()))
        },
    )
    .await?;
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            can_i(&cluster, "alice-editor", verb, &ns.name),
            "edit may {verb}"
        );
        assert!(
            !can_i(&cluster, "alice-editor", verb, &other.name),
            "not in another namespace: {verb}"
        );
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            can_i(&cluster, "bob-viewer", verb, &ns.name),
            "view may {verb}"
        );
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can_i(&cluster, "bob-viewer", verb, &ns.name),
            "view may not {verb}"
        );
    }
    drop(applied);
    Ok(())
}
