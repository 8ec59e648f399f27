//! The chart grants the operator exactly the API calls it makes: the rules bound to the
//! operator's ServiceAccount, per namespace, equal the list kept next to the code
//! (`operator/rbac.txt`), nothing more and nothing less — in namespaced mode (the default: one
//! Role per watched namespace) and in cluster-wide mode (one ClusterRole). The Lease rules go to
//! the release namespace only. Also: the aggregate view/edit ClusterRoles for namespace users,
//! and cluster-scoped names that do not collide between releases in two namespaces.
//! Needs helm from `make components`; no cluster.

mod chart_common;

use std::collections::{BTreeMap, BTreeSet};

use champion_tests::operator::workspace;
use champion_tests::{ClusterError, Result};
use chart_common::{RELEASE, RELEASE_NAMESPACE, of_kind, render, render_in};
use serde_json::Value;

/// (group, resource, verb) triples; the core group is spelled "core".
type Grants = BTreeSet<(String, String, String)>;

/// Where a grant holds: a namespace, or the whole cluster.
const CLUSTER: &str = "<cluster>";

/// operator/rbac.txt, split into what the operator needs where it watches and what it needs in
/// its own namespace (the leader Lease).
fn listed() -> Result<(Grants, Grants)> {
    let path = workspace().join("operator/rbac.txt");
    let text = std::fs::read_to_string(&path).map_err(ClusterError::io("reading", &path))?;
    let (mut watched, mut own) = (Grants::new(), Grants::new());
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
        let grant = (group.to_string(), resource.to_string(), verb.to_string());
        if group == "coordination.k8s.io" {
            own.insert(grant);
        } else {
            watched.insert(grant);
        }
    }
    Ok((watched, own))
}

fn rule_grants(role: &Value) -> Grants {
    let mut grants = Grants::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
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
    grants
}

/// What the rendered bindings give the operator's ServiceAccount, per namespace (or
/// [`CLUSTER`]). Every binding must name a role the chart renders.
fn bound_to_operator(docs: &[Value]) -> BTreeMap<String, Grants> {
    let role = |kind: &str, ns: Option<&str>, name: &str| -> &Value {
        docs.iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && d["metadata"]["namespace"].as_str() == ns
            })
            .unwrap_or_else(|| panic!("the chart renders the {kind} {ns:?}/{name} it binds"))
    };
    let mut out: BTreeMap<String, Grants> = BTreeMap::new();
    for b in docs.iter().filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("RoleBinding" | "ClusterRoleBinding")
        )
    }) {
        let to_operator = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == RELEASE
                && s["namespace"] == RELEASE_NAMESPACE
        });
        assert!(
            to_operator,
            "every binding the chart renders is the operator's: {b}"
        );
        let ns = b["metadata"]["namespace"].as_str();
        let ref_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let ref_name = b["roleRef"]["name"].as_str().unwrap_or_default();
        let grants = match ref_kind {
            "Role" => rule_grants(role("Role", ns, ref_name)),
            _ => rule_grants(role("ClusterRole", None, ref_name)),
        };
        let scope = ns.unwrap_or(CLUSTER).to_string();
        out.entry(scope).or_default().extend(grants);
    }
    out
}

fn without_secrets(g: &Grants) -> Grants {
    g.iter()
        .filter(|(_, r, _)| r != "secrets")
        .cloned()
        .collect()
}

fn union(a: &Grants, b: &Grants) -> Grants {
    a.union(b).cloned().collect()
}

fn assert_grants(values: &[&str], want: BTreeMap<&str, Grants>) -> Result<()> {
    let got = bound_to_operator(&render(values)?);
    let want: BTreeMap<String, Grants> =
        want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for scope in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        let (g, w) = (
            got.get(scope).cloned().unwrap_or_default(),
            want.get(scope).cloned().unwrap_or_default(),
        );
        let extra: Vec<_> = g.difference(&w).collect();
        let missing: Vec<_> = w.difference(&g).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "values {values:?}, scope {scope}: granted but never called: {extra:?}; called but not granted: {missing:?}"
        );
    }
    Ok(())
}

#[test]
fn namespaced_by_default_the_release_namespace_gets_exactly_the_listed_calls() -> Result<()> {
    let (watched, own) = listed()?;
    assert_grants(
        &[],
        BTreeMap::from([(RELEASE_NAMESPACE, union(&watched, &own))]),
    )?;
    // No ClusterRole is bound to the operator in namespaced mode.
    let docs = render(&[])?;
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    Ok(())
}

#[test]
fn each_watched_namespace_gets_one_role_and_the_lease_stays_home() -> Result<()> {
    let (watched, own) = listed()?;
    assert_grants(
        &["watchNamespaces={team-a,team-b}"],
        BTreeMap::from([
            ("team-a", watched.clone()),
            ("team-b", watched.clone()),
            (RELEASE_NAMESPACE, own.clone()),
        ]),
    )?;
    // Watching the release namespace among others: its Role and the Lease Role both there.
    assert_grants(
        &["watchNamespaces={team-a,champion-system}"],
        BTreeMap::from([
            ("team-a", watched.clone()),
            (RELEASE_NAMESPACE, union(&watched, &own)),
        ]),
    )?;
    // Without Secret access the one Secret rule goes, and nothing else.
    assert_grants(
        &["watchNamespaces={team-a}", "readSecrets=false"],
        BTreeMap::from([
            ("team-a", without_secrets(&watched)),
            (RELEASE_NAMESPACE, own),
        ]),
    )?;
    assert_eq!(
        watched
            .difference(&without_secrets(&watched))
            .collect::<Vec<_>>(),
        vec![&("core".to_string(), "secrets".to_string(), "get".to_string())]
    );
    Ok(())
}

#[test]
fn cluster_wide_mode_binds_one_cluster_role_with_exactly_the_listed_calls() -> Result<()> {
    let (watched, own) = listed()?;
    for values in [
        &["clusterWide=true"][..],
        &["clusterWide=true", "watchNamespaces={team-a}"][..],
    ] {
        assert_grants(
            values,
            BTreeMap::from([(CLUSTER, watched.clone()), (RELEASE_NAMESPACE, own.clone())]),
        )?;
    }
    assert_grants(
        &[
            "clusterWide=true",
            "readSecrets=false",
            "leaderElection.enabled=false",
        ],
        BTreeMap::from([(CLUSTER, without_secrets(&watched))]),
    )?;
    Ok(())
}

#[test]
fn namespace_users_get_modelpipelines_through_the_default_view_and_edit_roles() -> Result<()> {
    let docs = render(&[])?;
    let aggregated: Vec<&Value> = of_kind(&docs, "ClusterRole");
    assert_eq!(
        aggregated.len(),
        2,
        "a view and an edit role: {aggregated:?}"
    );
    let label =
        |role: &Value, key: &str| role["metadata"]["labels"][key].as_str().map(str::to_string);
    let pipelines = |verbs: &[&str]| -> Grants {
        verbs
            .iter()
            .map(|v| {
                (
                    "champion.dev".to_string(),
                    "modelpipelines".to_string(),
                    v.to_string(),
                )
            })
            .collect()
    };
    let view = aggregated
        .iter()
        .find(|r| {
            label(r, "rbac.authorization.k8s.io/aggregate-to-view").as_deref() == Some("true")
        })
        .expect("a ClusterRole aggregated to view");
    assert_eq!(rule_grants(view), pipelines(&["get", "list", "watch"]));
    let edit = aggregated
        .iter()
        .find(|r| {
            label(r, "rbac.authorization.k8s.io/aggregate-to-edit").as_deref() == Some("true")
        })
        .expect("a ClusterRole aggregated to edit");
    assert_eq!(
        label(edit, "rbac.authorization.k8s.io/aggregate-to-admin").as_deref(),
        Some("true")
    );
    assert_eq!(
        rule_grants(edit),
        pipelines(&[
            "get", "list", "watch", "create", "update", "patch", "delete"
        ])
    );
    // Neither is bound to anyone by the chart; off, they are gone.
    assert!(
        of_kind(
            &render(&["rbac.aggregateToDefaultRoles=false"])?,
            "ClusterRole"
        )
        .is_empty()
    );
    Ok(())
}

#[test]
fn cluster_scoped_names_differ_between_releases_in_two_namespaces() -> Result<()> {
    let cluster_names = |ns: &str| -> Result<BTreeSet<String>> {
        Ok(render_in(ns, &["clusterWide=true"])?
            .iter()
            .filter(|d| d["metadata"]["namespace"].is_null())
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect())
    };
    let (a, b) = (cluster_names("team-a")?, cluster_names("team-b")?);
    assert_eq!(a.len(), 4, "ClusterRole + binding, view, edit: {a:?}");
    assert!(a.is_disjoint(&b), "{a:?} and {b:?} collide");
    assert!(
        a.iter().all(|n| n.contains("team-a")),
        "{a:?} carry the release namespace"
    );
    Ok(())
}
