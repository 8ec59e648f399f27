//! Helpers for the end-to-end suites: a namespace per test that is deleted when the test ends
//! (also when it fails), waits on conditions with deadlines, pod IPs and logs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::cluster::Cluster;
use crate::error::{ClusterError, Result};

/// A namespace named `<prefix>-<random>`, created on construction and deleted on drop. The
/// deletion runs kubectl synchronously so it happens even while a failed test unwinds and its
/// runtime is shutting down.
pub struct TestNamespace {
    pub name: String,
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl TestNamespace {
    pub async fn create(cluster: &Cluster, prefix: &str) -> Result<TestNamespace> {
        let suffix = token(8);
        let name = format!("{prefix}-{suffix}");
        let api: Api<Namespace> = Api::all(cluster.client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.labels_mut()
            .insert("champion.dev/test".into(), prefix.into());
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(ClusterError::kube(format!("create namespace {name}")))?;
        // Pods need the namespace's default ServiceAccount, which the controller-manager adds a
        // moment after the namespace exists.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(cluster.client.clone(), &name);
        wait_for(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(30),
            || {
                let sas = sas.clone();
                async move { Ok(sas.get_opt("default").await.ok().flatten().map(|_| ())) }
            },
        )
        .await?;
        Ok(TestNamespace {
            name,
            kubectl: cluster.layout.bin("kubectl"),
            kubeconfig: cluster.kubeconfig.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `len` lowercase hex characters that differ between calls and processes (not cryptographic:
/// namespace and bucket names, throw-away credentials).
pub fn token(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Polls `check` every 100 ms until it yields `Some`, failing after `timeout` with the last
/// error it returned (if any) in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!(" (last error: {e})"),
        }
        if start.elapsed() > timeout {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                after: timeout,
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches one object until `cond` holds for it, with a deadline; returns the object. Uses a
/// watch, so it reacts to the change itself rather than to a polling tick.
pub async fn wait_object<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    cond: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut stream = watcher::watch_object(api.clone(), name).boxed();
    let what = format!("{} {name}", K::kind(&Default::default()));
    let fut = async {
        let mut last: Option<K> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Some(obj)) => {
                    if cond(&obj) {
                        return Ok(obj);
                    }
                    last = Some(obj);
                }
                Ok(None) => {}
                Err(e) => return Err(ClusterError::Invalid(format!("watching {what}: {e}"))),
            }
        }
        Err(ClusterError::Invalid(format!(
            "watch on {what} ended; last seen: {last:?}"
        )))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClusterError::Timeout {
            what,
            after: timeout,
            detail: String::new(),
        }),
    }
}

/// Waits until `name` is gone (deleted and no longer returned by the API server).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("deletion of {name}"), timeout, || async {
        Ok(api
            .get_opt(name)
            .await
            .map_err(ClusterError::kube(format!("get {name}")))?
            .is_none()
            .then_some(()))
    })
    .await
}

/// The IPs of the pods matching `selector` that have one.
pub async fn pod_ips(cluster: &Cluster, ns: &str, selector: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(ClusterError::kube(format!("list pods {selector} in {ns}")))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| p.status.and_then(|s| s.pod_ip))
        .collect())
}

/// A pod's log (its only container's).
pub async fn pod_logs(cluster: &Cluster, ns: &str, pod: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    pods.logs(pod, &LogParams::default())
        .await
        .map_err(ClusterError::kube(format!("logs of pod {ns}/{pod}")))
}

/// The pod's phase, "" while it has none.
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// True once a condition of `type_` is "True" in a list of (type, status) conditions.
pub fn has_condition<'a>(
    conditions: impl IntoIterator<Item = (&'a str, &'a str)>,
    type_: &str,
) -> bool {
    conditions
        .into_iter()
        .any(|(t, s)| t == type_ && s == "True")
}

/// The security context every test container runs with: what the `restricted` Pod Security
/// Standard demands, and what our images are built for (uid/gid 65532, no shell, nothing to
/// write on the root filesystem).
pub fn restricted_security_context() -> serde_json::Value {
    serde_json::json!({
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// A pod that runs `image` with `args` once (restartPolicy Never), as a restricted container.
/// `extra_spec` is merged into the pod spec (volumes, serviceAccountName, ...); `container` into
/// the container (volumeMounts, ...).
pub fn one_shot_pod(
    name: &str,
    image: &str,
    args: &[&str],
    extra_spec: serde_json::Value,
    container: serde_json::Value,
) -> Result<Pod> {
    let mut c = serde_json::json!({
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "args": args,
        "securityContext": restricted_security_context(),
    });
    merge(&mut c, container);
    let mut spec = serde_json::json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [c],
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))
    .map_err(|source| ClusterError::Serialize {
        what: "pod",
        source,
    })
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// Creates `pod`, waits until it has Succeeded or Failed, and returns its phase and log.
pub async fn run_pod(
    cluster: &Cluster,
    ns: &str,
    pod: &Pod,
    timeout: Duration,
) -> Result<(String, String)> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let name = pod.name_any();
    api.create(&PostParams::default(), pod)
        .await
        .map_err(ClusterError::kube(format!("create pod {ns}/{name}")))?;
    let done = wait_object(&api, &name, timeout, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await?;
    let logs = pod_logs(cluster, ns, &name).await?;
    Ok((phase(&done).to_string(), logs))
}

/// An HTTP answer: status, lower-cased header names, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// One HTTP/1.1 request from the test process (the host is the node, so pod and Service IPs
/// are local addresses), with an optional body and its content type; the connection closes
/// after the answer.
pub async fn http_request(
    host_port: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<Reply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("{method} http://{host_port}{path}");
    let io_err = |e: std::io::Error| ClusterError::Invalid(format!("{what}: {e}"));
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(host_port),
    )
    .await
    .map_err(|_| ClusterError::Invalid(format!("{what}: connect timed out")))?
    .map_err(io_err)?;
    let (content_type, payload) = body.unwrap_or(("", b""));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host_port}\r\n");
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    ));
    let mut request = head.into_bytes();
    request.extend_from_slice(payload);
    s.write_all(&request).await.map_err(io_err)?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| ClusterError::Invalid(format!("{what}: read timed out")))?
        .map_err(io_err)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, raw_body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClusterError::Invalid(format!("{what}: no header end in {text:?}")))?;
    let mut head_lines = head.lines();
    let status = head_lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClusterError::Invalid(format!("{what}: no status line in {head:?}")))?;
    let headers: BTreeMap<String, String> = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(raw_body)
    } else {
        raw_body.to_string()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One GET; returns the status code and the body.
pub async fn http_get(host_port: &str, path: &str) -> Result<(u16, String)> {
    let reply = http_request(host_port, "GET", path, None).await?;
    Ok((reply.status, reply.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn tokens_have_the_asked_length_and_differ() {
        let (a, b) = (token(40), token(40));
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(token(3).len(), 3);
    }
}
