//! What each chart value renders to, read from `helm template` output: the schema refuses bad
//! values naming them, the operator's environment (watched namespaces, store policy, log level),
//! the PodDisruptionBudget and anti-affinity of two or more replicas, the prometheus-operator
//! monitors, the NetworkPolicy, the OpenShift securityContext toggle and the pod metadata values.
//! Needs helm from `make components`; no cluster.

mod chart_common;

use champion_tests::Result;
use chart_common::{
    RELEASE_NAMESPACE, helm_template, of_kind, one, operator_container, operator_env, render,
};
use serde_json::{Value, json};

fn refused(values: &[&str]) -> Result<String> {
    match helm_template(RELEASE_NAMESPACE, values)? {
        Ok(_) => panic!("helm template accepted {values:?}"),
        Err(e) => Ok(e),
    }
}

#[test]
fn the_schema_refuses_a_bad_value_and_names_it() -> Result<()> {
    let e = refused(&["replicaCount=two"])?;
    assert!(
        e.contains("/replicaCount") && e.contains("want integer"),
        "{e}"
    );
    // The key of the older chart, and a misspelling, are refused by name.
    let e = refused(&["watchNamespace=team-a"])?;
    assert!(e.contains("'watchNamespace' not allowed"), "{e}");
    let e = refused(&["storePolicy.deniedCIDRs={10.0.0.0/8}"])?;
    assert!(e.contains("'deniedCIDRs' not allowed"), "{e}");
    for (value, field) in [
        ("image.digest=latest", "/image/digest"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "storePolicy.deniedCidrs={10.0.0.0}",
            "/storePolicy/deniedCidrs/0",
        ),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        (
            "networkPolicy.apiServer.ports={0}",
            "/networkPolicy/apiServer/ports/0",
        ),
        ("concurrency=0", "/concurrency"),
        ("serviceMonitor.interval=often", "/serviceMonitor/interval"),
        ("openshift=yes", "/openshift"),
        ("env[0].name=A,env[0].value=1", "/env/0/value"),
    ] {
        let e = refused(&[value])?;
        assert!(e.contains(field), "{value}: {e}");
    }
    // An extra env var may not shadow one the chart sets from its own value.
    let e = refused(&["env[0].name=RUST_LOG", "env[0].value=trace"])?;
    assert!(e.contains("env: RUST_LOG is set by the chart"), "{e}");
    // The monitoring templates' own values are free-form here.
    render(&[
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
    ])?;
    Ok(())
}

#[test]
fn the_operator_watches_the_release_namespace_unless_told_otherwise() -> Result<()> {
    let env = operator_env(&render(&[])?);
    assert_eq!(
        env.get("WATCH_NAMESPACES").map(String::as_str),
        Some(RELEASE_NAMESPACE)
    );
    // The old single-namespace variable is not set; the operator reads WATCH_NAMESPACES.
    assert_eq!(env.get("WATCH_NAMESPACE"), None);

    let env = operator_env(&render(&["watchNamespaces={team-a,team-b}"])?);
    assert_eq!(
        env.get("WATCH_NAMESPACES").map(String::as_str),
        Some("team-a,team-b")
    );
    assert_eq!(env.get("WATCH_NAMESPACE"), None);

    let env = operator_env(&render(&["clusterWide=true", "watchNamespaces={team-a}"])?);
    assert_eq!(env.get("WATCH_NAMESPACES"), None, "all namespaces");
    assert_eq!(env.get("WATCH_NAMESPACE"), None, "all namespaces");
    Ok(())
}

#[test]
fn store_policy_and_log_values_reach_the_operator_environment() -> Result<()> {
    let env = operator_env(&render(&[])?);
    assert_eq!(
        env.get("LOCAL_STORE_ROOTS"),
        None,
        "no store volumes: no file:// stores"
    );
    let with_store = operator_env(&render(&[
        "storeVolumes[0].name=store",
        "storeVolumes[0].mountPath=/var/champion",
        "storeVolumes[0].hostPath.path=/var/champion",
    ])?);
    assert_eq!(with_store["LOCAL_STORE_ROOTS"], "/var/champion");
    assert_eq!(env["STORE_DENIED_CIDRS"], "10.96.0.0/12,10.244.0.0/16");
    assert_eq!(env["AMBIENT_CREDENTIALS"], "false");
    assert_eq!(
        env.get("STORE_ALLOWED_HOSTS"),
        None,
        "set only when non-empty"
    );
    assert_eq!(env["RUST_LOG"], "info,kube=warn");

    let env = operator_env(&render(&[
        "storePolicy.allowedHosts={minio.storage.svc,10.244.0.1,10.96.5.0/24}",
        "storePolicy.deniedCidrs=null",
        "storePolicy.ambientCredentials=true",
        "logLevel=debug\\,kube=info",
        "env[0].name=EXTRA",
        "env[0].value=x1",
    ])?);
    assert_eq!(
        env["STORE_ALLOWED_HOSTS"],
        "minio.storage.svc,10.244.0.1,10.96.5.0/24"
    );
    assert_eq!(
        env.get("STORE_DENIED_CIDRS"),
        None,
        "set only when non-empty"
    );
    assert_eq!(env["AMBIENT_CREDENTIALS"], "true");
    assert_eq!(env["RUST_LOG"], "debug,kube=info");
    assert_eq!(env["EXTRA"], "x1");
    Ok(())
}

#[test]
fn two_replicas_get_a_disruption_budget_and_spread_over_nodes() -> Result<()> {
    let docs = render(&[])?;
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    let pod = &one(&docs, "Deployment")["spec"]["template"];
    assert!(pod["spec"]["affinity"].is_null(), "{pod}");

    let docs = render(&["replicaCount=2"])?;
    let deployment = one(&docs, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(&pod_labels[k], v, "the budget selects the operator pods");
    }
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    // Preferred, not required: a one-node cluster still runs both replicas.
    let term = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null());

    // An affinity of the user's replaces the default; the budget can be turned off.
    let docs = render(&[
        "replicaCount=3",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "podDisruptionBudget.enabled=false",
    ])?;
    let affinity = &one(&docs, "Deployment")["spec"]["template"]["spec"]["affinity"];
    assert!(
        affinity["podAntiAffinity"].is_null() && !affinity["nodeAffinity"].is_null(),
        "{affinity}"
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    Ok(())
}

#[test]
fn monitors_select_the_operator_service_and_the_predictor_pods() -> Result<()> {
    let docs = render(&[])?;
    assert!(of_kind(&docs, "ServiceMonitor").is_empty() && of_kind(&docs, "PodMonitor").is_empty());

    let docs = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=kube-prometheus",
        "podMonitor.enabled=true",
        "watchNamespaces={team-a,team-b}",
    ])?;
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");
    let service = one(&docs, "Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([RELEASE_NAMESPACE])
    );
    let port = sm["spec"]["endpoints"][0]["port"]
        .as_str()
        .unwrap_or_default();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == port),
        "the Service has the port {port:?}"
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // The operator's per-pipeline series keep their own namespace label.
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);

    let pm = one(&docs, "PodMonitor");
    // The labels operator/src/build.rs puts on every predictor pod, and its container port name.
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/managed-by": "champion", "app.kubernetes.io/component": "predictor"})
    );
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "http");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    assert_eq!(
        pm["spec"]["namespaceSelector"],
        json!({"matchNames": ["team-a", "team-b"]})
    );

    let docs = render(&["podMonitor.enabled=true", "clusterWide=true"])?;
    assert_eq!(
        one(&docs, "PodMonitor")["spec"]["namespaceSelector"],
        json!({"any": true})
    );
    Ok(())
}

#[test]
fn the_network_policy_lets_the_operator_reach_dns_the_api_server_and_stores_only() -> Result<()> {
    let docs = render(&[])?;
    let np = one(&docs, "NetworkPolicy");
    let spec = &np["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        spec["ingress"],
        json!([{"ports": [{"protocol": "TCP", "port": 8080}]}]),
        "ingress: the metrics port only"
    );
    let egress = spec["egress"].as_array().cloned().unwrap_or_default();
    assert_eq!(egress.len(), 4, "{egress:?}");
    assert_eq!(
        egress[0],
        json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        })
    );
    assert_eq!(
        egress[1],
        json!({"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}),
        "the API server: any address on its ports when no CIDRs are given"
    );
    assert_eq!(
        egress[2],
        json!({
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}],
            "ports": [{"protocol": "TCP", "port": 443}]
        }),
        "stores: HTTPS anywhere but link-local (the metadata address)"
    );
    assert_eq!(
        egress[3],
        json!({
            "to": [{
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/managed-by": "champion",
                    "app.kubernetes.io/component": "predictor"
                }}
            }],
            "ports": [{"protocol": "TCP", "port": 8080}]
        }),
        "live analysis: the predictor pods' /metrics only"
    );

    let docs = render(&[
        "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "networkPolicy.apiServer.ports={6443}",
        "networkPolicy.storeEgress[0].to[0].ipBlock.cidr=192.0.2.10/32",
        "metricsPort=9090",
    ])?;
    let spec = &one(&docs, "NetworkPolicy")["spec"];
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 9090);
    assert_eq!(
        spec["egress"][1],
        json!({"ports": [{"protocol": "TCP", "port": 6443}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]})
    );
    assert_eq!(
        spec["egress"][2],
        json!({"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}]})
    );

    assert!(of_kind(&render(&["networkPolicy.enabled=false"])?, "NetworkPolicy").is_empty());
    Ok(())
}

#[test]
fn openshift_leaves_the_uid_to_the_platform_and_keeps_the_rest_of_the_hardening() -> Result<()> {
    let pod_security = |docs: &[Value]| {
        one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"].clone()
    };
    let default = pod_security(&render(&[])?);
    assert_eq!(default["runAsUser"], 65532);
    assert_eq!(default["fsGroup"], 65532);
    let openshift = pod_security(&render(&["openshift=true"])?);
    for key in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert!(openshift[key].is_null(), "{key} is left out: {openshift}");
    }
    assert_eq!(openshift["runAsNonRoot"], true);
    assert_eq!(openshift["seccompProfile"]["type"], "RuntimeDefault");
    let container = operator_container(&render(&["openshift=true"])?);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    Ok(())
}

#[test]
fn image_pod_metadata_and_service_account_values_are_rendered() -> Result<()> {
    assert_eq!(
        operator_container(&render(&[])?)["image"],
        "champion/operator:dev"
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render(&[
        &format!("image.digest={digest}"),
        "image.repository=registry.example.com/champion/operator",
        "imagePullSecrets[0].name=regcred",
        "podAnnotations.team=ml",
        "podAnnotations.prometheus\\.io/path=/stats",
        "podLabels.cost-center=c42",
        "podLabels.app\\.kubernetes\\.io/name=other",
        "priorityClassName=system-cluster-critical",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/champion",
    ])?;
    assert_eq!(
        operator_container(&docs)["image"],
        format!("registry.example.com/champion/operator@{digest}"),
        "a digest pins the image; the tag is ignored"
    );
    let template = &one(&docs, "Deployment")["spec"]["template"];
    assert_eq!(
        template["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    assert_eq!(
        template["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    assert_eq!(template["metadata"]["annotations"]["team"], "ml");
    // podAnnotations may override the scrape annotations; podLabels cannot move the selector.
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/path"],
        "/stats"
    );
    assert_eq!(template["metadata"]["labels"]["cost-center"], "c42");
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/name"],
        "champion-operator"
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/champion"
    );
    Ok(())
}
