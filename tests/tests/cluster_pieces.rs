//! Each piece of the local cluster, proven against the real thing: Jobs to Complete and to
//! Failed, a Deployment that becomes Available and answers on its pod IPs and through its
//! Service name from another pod (cluster DNS + kube-proxy), the restricted security context
//! enforced by the kubelet, garbage collection, RBAC through in-cluster config, and hostPath.
//!
//! They need the cluster: `champion-cluster up` first, or they start it through
//! `champion_tests::shared()`. Images: build/images/{probe,trainer-job}.tar imported by `up`.
//! Every test works in its own namespace, deleted when the test ends.

use std::time::Duration;

use champion_tests::testing::{
    http_get, one_shot_pod, pod_ips, restricted_security_context, run_pod, wait_deleted, wait_for,
};
use champion_tests::{Cluster, Result, TestNamespace, shared};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const PROBE: &str = "champion/probe:dev";
const TRAINER: &str = "champion/trainer-job:dev";
const TIMEOUT: Duration = Duration::from_secs(90);

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    // Test fixtures written in this file: a mistake here is a bug in the test itself.
    serde_json::from_value(v).expect("fixture JSON matches the Kubernetes type")
}

/// Every test but the trainer one runs the probe image; fail at once with the fix if it is absent.
fn need_probe(c: &Cluster) -> Result<()> {
    assert!(
        c.has_image(PROBE)?,
        "{PROBE} is not in the cluster: run `make images` and `champion-cluster load-images`"
    );
    Ok(())
}

async fn create<K>(c: &Cluster, ns: &str, obj: &K) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(c.client.clone(), ns);
    api.create(&PostParams::default(), obj)
        .await
        .map_err(champion_tests::ClusterError::kube(format!(
            "create {} {ns}/{}",
            K::kind(&Default::default()),
            obj.name_any()
        )))
}

fn job(name: &str, image: &str, args: &[&str], backoff_limit: i32) -> Job {
    from_json(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": args,
                    "securityContext": restricted_security_context(),
                }]
            }}
        }
    }))
}

#[tokio::test]
async fn a_job_running_trainer_job_help_completes() -> Result<()> {
    let c = shared().await?;
    assert!(
        c.has_image(TRAINER)?,
        "{TRAINER} is not in the cluster: run `make images` and `champion-cluster load-images`"
    );
    let ns = TestNamespace::create(&c, "job-complete").await?;
    create(&c, &ns.name, &job("trainer-help", TRAINER, &["--help"], 0)).await?;
    let out = c.kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=complete",
        "job/trainer-help",
        "--timeout=90s",
    ])?;
    assert!(out.contains("condition met"), "kubectl wait said: {out}");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("job-name=trainer-help"))
        .await
        .map_err(champion_tests::ClusterError::kube("list job pods"))?;
    let pod = list.items.first().map(|p| p.name_any()).unwrap_or_default();
    let logs = champion_tests::testing::pod_logs(&c, &ns.name, &pod).await?;
    assert!(
        logs.to_lowercase().contains("usage"),
        "trainer-job --help printed no usage: {logs}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_job_reaches_failed_after_its_backoff_limit_with_the_termination_message()
-> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "job-failed").await?;
    let message = "deliberate failure: bad input at data.csv line 7";
    create(
        &c,
        &ns.name,
        &job(
            "fails",
            PROBE,
            &["fail", "--message", message, "--code", "3"],
            1,
        ),
    )
    .await?;
    let out = c.kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=failed",
        "job/fails",
        "--timeout=90s",
    ])?;
    assert!(out.contains("condition met"), "kubectl wait said: {out}");

    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &ns.name);
    let j = jobs
        .get("fails")
        .await
        .map_err(champion_tests::ClusterError::kube("get job fails"))?;
    let status = j.status.unwrap_or_default();
    assert_eq!(
        status.failed,
        Some(2),
        "backoffLimit 1 means two attempts: {status:?}"
    );
    let reason = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason);
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("job-name=fails"))
        .await
        .map_err(champion_tests::ClusterError::kube("list job pods"))?;
    assert_eq!(list.items.len(), 2);
    for p in list.items {
        let terminated = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|cs| cs.state)
            .and_then(|s| s.terminated)
            .expect("a failed job pod has a terminated container");
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(terminated.message.as_deref(), Some(message));
    }
    Ok(())
}

#[tokio::test]
async fn a_two_replica_deployment_becomes_available_and_answers_on_pod_ips_and_its_service_name()
-> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "deploy").await?;
    let deploy: Deployment = from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "web",
                        "image": PROBE,
                        "imagePullPolicy": "Never",
                        "args": ["serve", "--port", "8080", "--body", "hello"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        "securityContext": restricted_security_context(),
                    }]
                }
            }
        }
    }));
    create(&c, &ns.name, &deploy).await?;
    let svc: Service = from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    create(&c, &ns.name, &svc).await?;
    let out = c.kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=available",
        "deployment/web",
        "--timeout=90s",
    ])?;
    assert!(out.contains("condition met"), "kubectl wait said: {out}");
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns.name);
    let d = wait_for("2 ready replicas of web", TIMEOUT, || async {
        let d = deployments
            .get("web")
            .await
            .map_err(champion_tests::ClusterError::kube("get deployment web"))?;
        Ok((d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)).then_some(d))
    })
    .await?;
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(2));

    // Both pods answer on their own IPs, each naming itself.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .map_err(champion_tests::ClusterError::kube("list web pods"))?;
    let ips = pod_ips(&c, &ns.name, "app=web").await?;
    assert_eq!(ips.len(), 2, "two pod IPs: {ips:?}");
    let mut answered = Vec::new();
    for ip in &ips {
        let (code, body) = http_get(&format!("{ip}:8080"), "/").await?;
        assert_eq!(code, 200, "pod {ip} answered {code}: {body}");
        answered.push(body.trim().to_string());
    }
    let mut expected: Vec<String> = list
        .items
        .iter()
        .map(|p| format!("hello from {}", p.name_any()))
        .collect();
    expected.sort();
    answered.sort();
    assert_eq!(answered, expected);

    // kube-proxy programs the new Service asynchronously; wait until its ClusterIP answers from
    // the node (nat OUTPUT goes through the same KUBE-SERVICES rules as pod traffic).
    let services: Api<Service> = Api::namespaced(c.client.clone(), &ns.name);
    let svc = services
        .get("web")
        .await
        .map_err(champion_tests::ClusterError::kube("get service web"))?;
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    let via_service = wait_for(
        "Service web to answer on its ClusterIP",
        TIMEOUT,
        || async {
            Ok(http_get(&format!("{cluster_ip}:80"), "/")
                .await
                .ok()
                .filter(|(code, _)| *code == 200))
        },
    )
    .await?;
    assert!(
        expected.contains(&via_service.1.trim().to_string()),
        "ClusterIP answer: {via_service:?}"
    );

    // Another pod reaches the Service by name: CoreDNS resolves it, kube-proxy routes it.
    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "client",
            PROBE,
            &["get", "http://web/"],
            json!({"automountServiceAccountToken": false}),
            json!({}),
        )?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "client pod log: {logs}");
    assert!(logs.starts_with("HTTP/1.1 200"), "client pod log: {logs}");
    assert!(
        expected.iter().any(|e| logs.contains(e.as_str())),
        "answer from neither web pod: {logs}"
    );
    Ok(())
}

#[tokio::test]
async fn a_non_root_pod_with_a_read_only_root_filesystem_still_works() -> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "restricted").await?;
    // The namespace enforces the restricted Pod Security Standard: the API server itself
    // rejects any pod that is not non-root, capability-free and seccomp-confined.
    c.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
    ])?;
    let privileged = one_shot_pod(
        "as-root",
        PROBE,
        &["sandbox"],
        json!({}),
        json!({"securityContext": {"runAsUser": 0}}),
    )?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let rejected = pods.create(&PostParams::default(), &privileged).await;
    assert!(
        matches!(&rejected, Err(kube::Error::Api(s)) if s.code == 403),
        "a root pod was admitted: {rejected:?}"
    );

    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "sandbox",
            PROBE,
            &["sandbox"],
            json!({"automountServiceAccountToken": false}),
            json!({}),
        )?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "log: {logs}");
    assert_eq!(logs.trim(), "uid=65532 gid=65532 rootfs=read-only");
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_children() -> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "gc").await?;
    let deploy: Deployment = from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "owner"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "owner"}},
            "template": {
                "metadata": {"labels": {"app": "owner"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": PROBE, "imagePullPolicy": "Never", "args": ["serve"], "securityContext": restricted_security_context()}]
                }
            }
        }
    }));
    create(&c, &ns.name, &deploy).await?;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let lp = ListParams::default().labels("app=owner");
    let (rs_name, pod_name) = wait_for("a ReplicaSet and a pod of owner", TIMEOUT, || async {
        let rs = rss
            .list(&lp)
            .await
            .map_err(champion_tests::ClusterError::kube("list replicasets"))?;
        let ps = pods
            .list(&lp)
            .await
            .map_err(champion_tests::ClusterError::kube("list pods"))?;
        Ok(match (rs.items.first(), ps.items.first()) {
            (Some(r), Some(p)) => Some((r.name_any(), p.name_any())),
            _ => None,
        })
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns.name);
    deployments
        .delete("owner", &DeleteParams::background())
        .await
        .map_err(champion_tests::ClusterError::kube(
            "delete deployment owner",
        ))?;
    wait_deleted(&rss, &rs_name, TIMEOUT).await?;
    wait_deleted(&pods, &pod_name, TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn a_service_account_gets_403_until_a_role_grants_it_then_200() -> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "rbac").await?;
    let sa: ServiceAccount = from_json(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
    );
    create(&c, &ns.name, &sa).await?;
    let path = format!("/api/v1/namespaces/{}/configmaps", ns.name);
    let spec = json!({"serviceAccountName": "reader"});

    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "before",
            PROBE,
            &["kube-get", &path],
            spec.clone(),
            json!({}),
        )?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "log: {logs}");
    assert_eq!(logs.trim(), "status=403");

    let role: Role = from_json(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    }));
    create(&c, &ns.name, &role).await?;
    let binding: RoleBinding = from_json(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}]
    }));
    create(&c, &ns.name, &binding).await?;
    // The authorizer sees the binding through its informer; confirm that before the pod runs.
    let sar = wait_for(
        "RBAC to allow reader to list configmaps",
        TIMEOUT,
        || async {
            let out = c.kubectl(&[
                "auth",
                "can-i",
                "list",
                "configmaps",
                "-n",
                &ns.name,
                &format!("--as=system:serviceaccount:{}:reader", ns.name),
            ]);
            Ok(out.ok().filter(|o| o.trim() == "yes"))
        },
    )
    .await?;
    assert_eq!(sar.trim(), "yes");

    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod("after", PROBE, &["kube-get", &path], spec, json!({}))?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "log: {logs}");
    assert_eq!(logs.trim(), "status=200");
    Ok(())
}

#[tokio::test]
async fn a_host_path_volume_written_by_one_pod_is_read_by_another() -> Result<()> {
    let c = shared().await?;
    need_probe(&c)?;
    let ns = TestNamespace::create(&c, "hostpath").await?;
    let dir = c.layout.host_path_root().join(&ns.name);
    std::fs::create_dir_all(&dir).map_err(champion_tests::ClusterError::io(
        "creating hostPath dir",
        &dir,
    ))?;
    std::os::unix::fs::chown(&dir, Some(65532), Some(65532))
        .map_err(champion_tests::ClusterError::io("chown hostPath dir", &dir))?;
    let token = format!("written-by-writer-in-{}", ns.name);
    let spec = json!({
        "automountServiceAccountToken": false,
        "volumes": [{"name": "data", "hostPath": {"path": dir, "type": "Directory"}}]
    });
    let mount = json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]});

    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod(
            "writer",
            PROBE,
            &["write-file", "/data/token", &token],
            spec.clone(),
            mount.clone(),
        )?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "writer log: {logs}");
    let (phase, logs) = run_pod(
        &c,
        &ns.name,
        &one_shot_pod("reader", PROBE, &["cat", "/data/token"], spec, mount)?,
        TIMEOUT,
    )
    .await?;
    assert_eq!(phase, "Succeeded", "reader log: {logs}");
    assert_eq!(logs, token);
    let on_host = std::fs::read_to_string(dir.join("token")).map_err(
        champion_tests::ClusterError::io("reading", dir.join("token")),
    )?;
    assert_eq!(on_host, token);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
