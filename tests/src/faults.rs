//! Fault injection for the end-to-end suites (`tests/tests/faults_e2e.rs`): signals to a
//! container's process, the API server restarted in place, a model file altered in the store
//! the moment the trainer has written it, and a steady client of the predictor Service that
//! records every answer while a fault is going on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::Value;

use crate::cluster::{Cluster, health, manifest, process};
use crate::error::{ClusterError, Result};
use crate::operator::http_post_json;

/// The host pid of the first container of pod `name`: the process whose cgroup names the
/// container's id (containerd names each container's cgroup after it).
pub async fn container_pid(pods: &Api<Pod>, name: &str) -> Result<i32> {
    let pod = pods
        .get(name)
        .await
        .map_err(ClusterError::kube(format!("get pod {name}")))?;
    let id = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().and_then(|c| c.container_id.clone()))
        .and_then(|id| id.rsplit("://").next().map(str::to_string))
        .ok_or_else(|| ClusterError::Invalid(format!("pod {name} has no container id")))?;
    let entries = std::fs::read_dir("/proc").map_err(ClusterError::io("list /proc", "/proc"))?;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(&id) {
            return Ok(pid);
        }
    }
    Err(ClusterError::Invalid(format!(
        "no process of container {id} (pod {name})"
    )))
}

/// Sends `sig` to `pid` (a container process found by [`container_pid`]).
pub fn signal(pid: i32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) with a pid read from the container's cgroup and a valid signal number.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(ClusterError::Invalid(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Stops the cluster's kube-apiserver (SIGTERM, as a restart by a process supervisor would),
/// starts it again with the same flags, and waits until it answers `/readyz`. Returns how long
/// the API server was unavailable. Everything else (etcd, kubelet, the controllers, the pods)
/// keeps running.
pub async fn restart_api_server(cluster: &Cluster) -> Result<Duration> {
    let layout = cluster.layout.clone();
    let pid = process::recorded_pid(&layout, "kube-apiserver").ok_or_else(|| {
        ClusterError::Invalid("the cluster's kube-apiserver is not running".into())
    })?;
    let stopped = Instant::now();
    let spawn_layout = layout.clone();
    let mut started = tokio::task::spawn_blocking(move || {
        process::terminate(&[pid], Duration::from_secs(15));
        let manifest = manifest::Manifest::open(&spawn_layout);
        process::spawn(&spawn_layout, &manifest, "kube-apiserver")
    })
    .await
    .map_err(|e| ClusterError::Invalid(format!("restart task failed: {e}")))??;
    let admin = health::client_from(&layout.admin_kubeconfig(), None).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        started.check_alive()?;
        if health::https_ok(&admin, "/readyz").await {
            return Ok(stopped.elapsed());
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout {
                what: "the restarted kube-apiserver to be ready".into(),
                after: Duration::from_secs(90),
                detail: format!(" (log: {})", started.log.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How [`corrupt_next_model`] alters a model.json.
#[derive(Clone, Copy, Debug)]
pub enum Corruption {
    /// The first half of the file: not JSON any more.
    Truncate,
    /// Valid JSON with the same fields, one number of the model changed and the checksum kept:
    /// what a bit flip or a tampering leaves.
    Tamper,
}

impl Corruption {
    fn apply(self, bytes: &[u8]) -> Result<Vec<u8>> {
        match self {
            Corruption::Truncate => Ok(bytes[..bytes.len() / 2].to_vec()),
            Corruption::Tamper => {
                let mut v: Value = serde_json::from_slice(bytes).map_err(|e| {
                    ClusterError::Invalid(format!("model.json to tamper is not JSON: {e}"))
                })?;
                if !bump_first_number(&mut v, "sha256") {
                    return Err(ClusterError::Invalid(
                        "model.json has no number to tamper with".into(),
                    ));
                }
                serde_json::to_vec(&v).map_err(|source| ClusterError::Serialize {
                    what: "tampered model.json",
                    source,
                })
            }
        }
    }
}

/// Adds 1 to the first number found depth-first in `v` outside the field `skip`.
fn bump_first_number(v: &mut Value, skip: &str) -> bool {
    match v {
        Value::Number(n) => {
            let bumped = n.as_f64().map(|x| x + 1.0);
            match bumped.and_then(serde_json::Number::from_f64) {
                Some(b) => {
                    *n = b;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items.iter_mut().any(|i| bump_first_number(i, skip)),
        Value::Object(map) => map
            .iter_mut()
            .filter(|(k, _)| k.as_str() != skip && k.as_str() != "format_version")
            .filter(|(k, _)| k.as_str() != "formatVersion")
            .any(|(_, i)| bump_first_number(i, skip)),
        _ => false,
    }
}

/// A model version the trainer wrote and the test then altered.
#[derive(Clone, Debug)]
pub struct Corrupted {
    pub version: String,
    pub path: PathBuf,
    /// Time from the report appearing to the model being rewritten.
    pub after_report: Duration,
}

/// Watches `models_dir` (`<store>/models/<pipeline>/`) for a version directory other than
/// `known` whose report.json has been written (the trainer writes model.json first and the
/// report last), and rewrites its model.json with `how` at once: before any predictor pod can
/// start on it, after the trainer has finished with it. Fails after `timeout`.
pub fn corrupt_next_model(
    models_dir: PathBuf,
    known: Vec<String>,
    how: Corruption,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<Corrupted>> {
    tokio::spawn(async move {
        let start = Instant::now();
        loop {
            if let Some(found) = written_version(&models_dir, &known) {
                let seen = Instant::now();
                let model = found.join("model.json");
                let bytes = std::fs::read(&model).map_err(ClusterError::io("reading", &model))?;
                let altered = how.apply(&bytes)?;
                // Rewritten in place: same inode, owner and mode as the trainer left them.
                std::fs::write(&model, altered).map_err(ClusterError::io("rewriting", &model))?;
                let version = found
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(Corrupted {
                    version,
                    path: model,
                    after_report: seen.elapsed(),
                });
            }
            if start.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: format!("a new model version in {}", models_dir.display()),
                    after: timeout,
                    detail: String::new(),
                });
            }
            // A file-system poll, not a synchronisation: the model is rewritten within 5 ms of
            // its report, seconds before the operator can have started a pod on it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

fn written_version(models_dir: &Path, known: &[String]) -> Option<PathBuf> {
    std::fs::read_dir(models_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !known.iter().any(|k| n.to_string_lossy() == *k))
        })
        .find(|p| p.join("report.json").is_file() && p.join("model.json").is_file())
}

/// What a [`SteadyClient`] saw.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub sent: u32,
    /// The model versions that answered, each time the answering version changed.
    pub versions: Vec<String>,
    /// Every request that did not get a 200, with what it got instead.
    pub failures: Vec<String>,
}

/// POSTs `request` to `/predict` at `target` (a Service `ClusterIP:port`) every 10 ms until
/// stopped, recording every answer.
pub struct SteadyClient {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<ClientReport>,
}

impl SteadyClient {
    pub fn start(target: String, request: Value) -> SteadyClient {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut r = ClientReport::default();
            let began = Instant::now();
            // Paced, so the loop neither starves the node's two cores nor runs out of ports.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !*stop_rx.borrow() {
                tick.tick().await;
                r.sent += 1;
                match http_post_json(&target, "/predict", &request).await {
                    Ok(reply) if reply.status == 200 => {
                        let v = reply
                            .headers
                            .get("x-model-version")
                            .cloned()
                            .unwrap_or_default();
                        if r.versions.last() != Some(&v) {
                            r.versions.push(v);
                        }
                    }
                    Ok(reply) => r.failures.push(format!(
                        "at {:.1} s: {} {}",
                        began.elapsed().as_secs_f64(),
                        reply.status,
                        reply.body
                    )),
                    Err(e) => r
                        .failures
                        .push(format!("at {:.1} s: {e}", began.elapsed().as_secs_f64())),
                }
            }
            r
        });
        SteadyClient { stop, task }
    }

    /// Stops the client and returns what it saw.
    pub async fn finish(self) -> Result<ClientReport> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| ClusterError::Invalid(format!("the request loop panicked: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tampering_changes_a_number_but_not_the_checksum() {
        let model = json!({"format_version": 1, "sha256": "ab", "scaler": {"mean": [1.5, 2.0]}});
        let bytes = serde_json::to_vec(&model).expect("serialises");
        let out = Corruption::Tamper.apply(&bytes).expect("tampers");
        let v: Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(v["sha256"], "ab");
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["scaler"]["mean"][0], 2.5);
        assert_eq!(v["scaler"]["mean"][1], 2.0);
        let cut = Corruption::Truncate.apply(&bytes).expect("truncates");
        assert_eq!(cut.len(), bytes.len() / 2);
        assert!(serde_json::from_slice::<Value>(&cut).is_err());
    }

    #[test]
    fn only_a_new_version_with_its_report_is_picked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        for d in [&old, &new] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("model.json"), "{}").expect("write");
        }
        std::fs::write(old.join("report.json"), "{}").expect("write");
        let known = vec!["old".to_string()];
        assert_eq!(written_version(dir.path(), &known), None, "no report yet");
        std::fs::write(new.join("report.json"), "{}").expect("write");
        assert_eq!(written_version(dir.path(), &known), Some(new));
    }
}
