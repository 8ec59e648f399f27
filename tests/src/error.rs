//! The one error type of this crate: every variant names the step that failed and the object
//! (file, command, component) it failed on, so a red CI run says what to look at.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "component binary {path} is missing; build it with tests/cluster/scripts/build-components.sh"
    )]
    MissingBinary { path: PathBuf },
    #[error("image archive {path} is missing; {hint}")]
    MissingImage { path: PathBuf, hint: &'static str },
    #[error("generating the {what} certificate: {source}")]
    Pki {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{component} exited during start-up ({status}); its log is {log}")]
    ComponentExited {
        component: &'static str,
        status: String,
        log: PathBuf,
    },
    #[error("timed out after {after:?} waiting for {what}{detail}")]
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a Kubernetes client for {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("Kubernetes API call `{what}` failed: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: Box<champion_store::StoreError>,
    },
    #[error("the host is not as it was before the cluster started:\n{0}")]
    HostChanged(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

impl ClusterError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ClusterError::Io { what, path, source }
    }

    pub fn store(what: impl Into<String>) -> impl FnOnce(champion_store::StoreError) -> Self {
        let what = what.into();
        move |source| ClusterError::Store {
            what,
            source: Box::new(source),
        }
    }

    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| ClusterError::Kube { what, source }
    }
}
