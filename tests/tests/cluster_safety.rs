//! The cluster's own guarantees: the kubelet accepts no anonymous request, every component
//! listens on the node address or loopback only, pods cannot route off the machine, and cluster
//! DNS answers cluster names only.

use std::collections::BTreeSet;
use std::time::Duration;

use champion_tests::cluster::{config, health, layout, sys};
use champion_tests::testing::{one_shot_pod, run_pod};
use champion_tests::{ClusterError, Result, TestNamespace, shared};
use serde_json::json;

const PROBE: &str = "champion/probe:dev";

#[tokio::test]
async fn the_kubelet_rejects_anonymous_requests_and_serves_the_api_servers_identity() -> Result<()>
{
    let c = shared().await?;
    let url = format!("https://{}:{}", layout::NODE_IP, layout::KUBELET_PORT);

    // No client certificate: webhook authentication has nothing to check and anonymous is off.
    let ca = std::fs::read(c.layout.pki_file("ca.crt"))
        .map_err(ClusterError::io("reading", c.layout.pki_file("ca.crt")))?;
    let ca_der = pem_to_der(&String::from_utf8_lossy(&ca));
    let mut anon = kube::Config::new(
        url.parse()
            .map_err(|e| ClusterError::Invalid(format!("{url}: {e}")))?,
    );
    anon.root_cert = Some(vec![ca_der]);
    let anon = kube::Client::try_from(anon).map_err(|source| ClusterError::Client {
        what: "anonymous kubelet client".into(),
        source,
    })?;
    let req = http::Request::get("/pods")
        .body(Vec::new())
        .map_err(|e| ClusterError::Invalid(e.to_string()))?;
    let resp = anon
        .send(req.map(kube::client::Body::from))
        .await
        .map_err(ClusterError::kube("anonymous GET kubelet /pods"))?;
    assert_eq!(
        resp.status().as_u16(),
        401,
        "anonymous request to the kubelet"
    );

    // The API server's kubelet-client identity (system:masters) is authorised by the webhook.
    let dir = std::env::temp_dir().join(format!("champion-kubelet-client-{}", std::process::id()));
    let kc = dir.join("kubeconfig");
    sys::write_file(
        &kc,
        config::kubeconfig(&c.layout, &url, "apiserver-kubelet-client"),
        0o600,
    )?;
    let client = health::client_from(&kc, None).await;
    let _ = std::fs::remove_dir_all(&dir);
    let text = client?
        .request_text(
            http::Request::get("/pods")
                .body(Vec::new())
                .map_err(|e| ClusterError::Invalid(e.to_string()))?,
        )
        .await
        .map_err(ClusterError::kube("GET kubelet /pods as the API server"))?;
    assert!(
        text.contains("\"kind\":\"PodList\""),
        "kubelet /pods: {}",
        &text[..text.len().min(200)]
    );
    Ok(())
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    decode_base64(&b64)
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Listening TCP sockets as (address, port) from /proc/net/tcp and tcp6.
fn listening() -> Vec<(String, u16)> {
    let mut v = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&"0A") {
                continue; // not LISTEN
            }
            let Some((addr, port)) = cols.get(1).and_then(|a| a.split_once(':')) else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let addr = if addr.len() == 8 {
                let n = u32::from_str_radix(addr, 16).unwrap_or_default();
                std::net::Ipv4Addr::from(n.swap_bytes()).to_string()
            } else {
                format!("ipv6:{addr}")
            };
            v.push((addr, port));
        }
    }
    v
}

#[tokio::test]
async fn every_component_listens_on_the_node_address_or_loopback_only() -> Result<()> {
    let _c = shared().await?;
    let ports: BTreeSet<u16> = [
        layout::API_PORT,
        layout::ETCD_CLIENT_PORT,
        layout::ETCD_PEER_PORT,
        2381,
        layout::CONTROLLER_MANAGER_PORT,
        layout::SCHEDULER_PORT,
        layout::KUBELET_PORT,
        layout::KUBELET_HEALTHZ_PORT,
        layout::KUBE_PROXY_HEALTHZ_PORT,
        10249,
    ]
    .into();
    let found: Vec<(String, u16)> = listening()
        .into_iter()
        .filter(|(_, p)| ports.contains(p))
        .collect();
    let seen: BTreeSet<u16> = found.iter().map(|(_, p)| *p).collect();
    assert_eq!(seen, ports, "every component port is listening: {found:?}");
    for (addr, port) in &found {
        assert!(
            addr == "127.0.0.1" || addr == layout::NODE_IP,
            "port {port} listens on {addr}"
        );
    }
    let api: Vec<&String> = found
        .iter()
        .filter(|(_, p)| *p == layout::API_PORT)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        api,
        vec![layout::NODE_IP],
        "the API server is bound to the node address only"
    );
    Ok(())
}

#[tokio::test]
async fn pod_traffic_can_only_reach_pods_services_and_the_node() -> Result<()> {
    let _c = shared().await?;
    let raw = sys::run("iptables", &["-t", "raw", "-S"])?;
    let prerouting: Vec<&str> = raw
        .lines()
        .filter(|l| l.starts_with("-A PREROUTING"))
        .take(2)
        .collect();
    assert_eq!(
        prerouting,
        vec![
            "-A PREROUTING -j CHAMPION-GUARD".to_string(),
            format!("-A PREROUTING -i {} -j CHAMPION-EGRESS", layout::BRIDGE),
        ],
        "the guards come first:\n{raw}"
    );
    // Nothing for the pod or service range is accepted from any interface but the bridge and
    // loopback: a LAN neighbour routing 10.244.0.0/16 via this host reaches neither the API
    // server, the kubelet nor a NodePort (the cleanup self-test connects from such a netns).
    let lan: Vec<&str> = raw
        .lines()
        .filter(|l| l.starts_with("-A CHAMPION-GUARD"))
        .collect();
    assert_eq!(
        lan,
        vec![
            format!("-A CHAMPION-GUARD -i {} -j RETURN", layout::BRIDGE),
            "-A CHAMPION-GUARD -i lo -j RETURN".to_string(),
            "-A CHAMPION-GUARD -d 10.244.0.0/16 -j DROP".to_string(),
            "-A CHAMPION-GUARD -d 10.96.0.0/16 -j DROP".to_string(),
        ]
    );
    let guard: Vec<&str> = raw
        .lines()
        .filter(|l| l.starts_with("-A CHAMPION-EGRESS"))
        .collect();
    assert_eq!(
        guard,
        vec![
            "-A CHAMPION-EGRESS -d 10.244.0.0/16 -j RETURN",
            "-A CHAMPION-EGRESS -d 10.96.0.0/16 -j RETURN",
            "-A CHAMPION-EGRESS -j DROP",
        ]
    );
    let routes = sys::run("ip", &["route", "show", layout::SERVICE_CIDR])?;
    assert!(
        routes.contains(&format!("dev {}", layout::BRIDGE)),
        "the service range is routed onto the bridge, not the default route: {routes}"
    );
    Ok(())
}

#[tokio::test]
async fn cluster_dns_answers_cluster_names_only() -> Result<()> {
    let c = shared().await?;
    assert!(
        c.has_image(PROBE)?,
        "{PROBE} is not in the cluster: run `make images` and `champion-cluster load-images`"
    );
    let ns = TestNamespace::create(&c, "dns").await?;
    let spec = json!({"automountServiceAccountToken": false});
    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "inside",
            PROBE,
            &["resolve", "kubernetes.default"],
            spec.clone(),
            json!({}),
        )?,
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(phase, "Succeeded", "a cluster name must resolve: {logs}");
    assert_eq!(logs.trim(), layout::KUBERNETES_SERVICE_IP);
    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "outside",
            PROBE,
            &["resolve", "example.com"],
            spec,
            json!({}),
        )?,
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(phase, "Failed", "an outside name must not resolve: {logs}");
    assert!(
        logs.contains("resolving example.com"),
        "failed at name resolution: {logs}"
    );
    Ok(())
}

#[tokio::test]
async fn the_controller_manager_allocates_the_bridge_subnet_to_the_node() -> Result<()> {
    let c = shared().await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c.client.clone());
    let node = nodes
        .get(layout::NODE_NAME)
        .await
        .map_err(ClusterError::kube("get node"))?;
    let spec = node.spec.unwrap_or_default();
    assert_eq!(spec.pod_cidr.as_deref(), Some(layout::POD_SUBNET));
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == layout::NODE_IP),
        "node addresses: {addresses:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_api_server_refuses_privileged_containers() -> Result<()> {
    let c = shared().await?;
    let ns = TestNamespace::create(&c, "privileged").await?;
    let pod = one_shot_pod(
        "privileged",
        PROBE,
        &["sandbox"],
        json!({}),
        json!({"securityContext": {"privileged": true, "allowPrivilegeEscalation": true}}),
    )?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(c.client.clone(), &ns.name);
    let created = pods.create(&kube::api::PostParams::default(), &pod).await;
    assert!(
        matches!(&created, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("disallowed by cluster policy")),
        "a privileged container was admitted: {created:?}"
    );
    Ok(())
}

/// The bridge has a MAC address of its own (`addr_assign_type` 3: set), so pods coming and
/// going never change it; a bridge that borrows its lowest port's MAC changes it whenever such a
/// pod's veth leaves, and the pods' answers to the node go to the old address until they learn
/// the new one.
#[tokio::test]
async fn the_bridge_keeps_its_own_mac_address() -> Result<()> {
    let _c = shared().await?;
    let dir = std::path::Path::new("/sys/class/net").join(layout::BRIDGE);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(ClusterError::io("reading", &path))
    };
    assert_eq!(read("address")?, layout::BRIDGE_MAC);
    assert_eq!(
        read("addr_assign_type")?,
        "3",
        "the MAC is set, not borrowed"
    );
    Ok(())
}
