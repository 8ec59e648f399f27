//! Health endpoints of the components, polled with a deadline while watching that the
//! components started by this process are still alive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::process::Started;
use crate::error::{ClusterError, Result};

/// A kube client from a kubeconfig, optionally pointed at another URL with the same TLS
/// identity (how the controller-manager, scheduler and etcd health endpoints are reached).
pub async fn client_from(kubeconfig: &Path, url: Option<&str>) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|source| ClusterError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClusterError::Kubeconfig {
            path: kubeconfig.to_path_buf(),
            source,
        })?;
    if let Some(url) = url {
        config.cluster_url = url
            .parse()
            .map_err(|e| ClusterError::Invalid(format!("health URL {url}: {e}")))?;
    }
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(config).map_err(|source| ClusterError::Client {
        what: kubeconfig.display().to_string(),
        source,
    })
}

/// GET `path` through a kube client; true on a 2xx answer.
pub async fn https_ok(client: &kube::Client, path: &str) -> bool {
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    client.request_text(req).await.is_ok()
}

/// A plain-HTTP GET on a loopback port (kubelet's and kube-proxy's healthz); true on 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Polls `check` every 100 ms until it returns true, failing after `timeout` or as soon as one
/// of `watched` has exited.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    watched: &mut [Started],
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(());
        }
        for s in watched.iter_mut() {
            s.check_alive()?;
        }
        if start.elapsed() > timeout {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                after: timeout,
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
