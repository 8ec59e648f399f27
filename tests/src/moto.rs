//! A local S3-compatible server for the end-to-end suites: moto's server mode (`moto_server`,
//! installed by `make test-deps`), bound to the node address so that pods — the operator, the
//! trainer Jobs, the predictor — reach it the way they would reach a real S3 endpoint, and so
//! does the test process on the node itself. Nothing leaves the machine: the server binds a
//! bridge address that only the host and its pods can route to.
//!
//! [`Moto`] owns the server process (its own process group) and kills it on drop, also when a
//! test fails. Objects are written and read with the workspace's own `champion-store` — the same
//! code the operator, trainer and predictor use — so a test needs no second S3 client; only the
//! bucket is created with one plain unsigned HTTP PUT, which moto accepts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use champion_store::Store;

use crate::cluster::layout;
use crate::error::{ClusterError, Result};
pub use crate::testing::token;

/// How long moto may take to import and start answering (it is Python; a loaded two-core
/// machine needs a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports taken between choosing a free one and moto binding it are retried this many times.
const START_ATTEMPTS: usize = 3;
/// The region every store option set names; moto accepts any.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`, killed (with its whole process group) on drop.
pub struct Moto {
    child: Child,
    /// `ip:port` the server listens on.
    pub host_port: String,
    /// `http://ip:port`: the S3 endpoint URL for store options and Secrets.
    pub endpoint: String,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on the node address ([`layout::NODE_IP`]), where pods reach it.
    pub async fn start() -> Result<Moto> {
        Moto::start_on(layout::NODE_IP).await
    }

    /// Starts moto on `ip` (a free port chosen there) and waits until it answers.
    pub async fn start_on(ip: &str) -> Result<Moto> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Moto::try_start(ip).await {
                Ok(m) => return Ok(m),
                // Another process took the port first: choose another one.
                Err(e @ ClusterError::ComponentExited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Invalid("moto did not start".into())))
    }

    async fn try_start(ip: &str) -> Result<Moto> {
        let port = free_port(ip)?;
        let host_port = format!("{ip}:{port}");
        let log = std::env::temp_dir().join(format!("champion-moto-{}-{port}.log", token(8)));
        let out = std::fs::File::create(&log).map_err(ClusterError::io("creating", &log))?;
        let err = out
            .try_clone()
            .map_err(ClusterError::io("duplicating the handle of", &log))?;
        let (program, args) = moto_command();
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .args(["-H", ip, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so drop can take down anything it spawns with it.
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            command: format!(
                "{program} {} (install it with `make test-deps`)",
                args.join(" ")
            ),
            source,
        })?;
        // From here on the server is owned: any early return kills it.
        let mut moto = Moto {
            child,
            endpoint: format!("http://{host_port}"),
            host_port,
            log,
        };
        moto.wait_ready().await?;
        Ok(moto)
    }

    /// Polls `GET /` until moto answers 200, failing early when the process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ClusterError::ComponentExited {
                    component: "moto_server",
                    status: status.to_string(),
                    log: self.log.clone(),
                });
            }
            if let Ok((200, _)) = request(&self.host_port, "GET", "/").await {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(ClusterError::Timeout {
                    what: format!("moto_server on {} to answer", self.host_port),
                    after: START_TIMEOUT,
                    detail: format!(" (its log: {})", self.log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates `bucket` (an unsigned CreateBucket, which moto accepts).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = request(&self.host_port, "PUT", &format!("/{bucket}")).await?;
        if status != 200 {
            return Err(ClusterError::Invalid(format!(
                "creating bucket {bucket} on moto {}: HTTP {status}: {body}",
                self.host_port
            )));
        }
        Ok(())
    }

    /// Store options (the keys a Secret carries, as in `spec.data.secretRef`) that reach this
    /// server with the given credentials.
    pub fn options(&self, access_key_id: &str, secret_access_key: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", access_key_id),
            ("AWS_SECRET_ACCESS_KEY", secret_access_key),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The store at `uri` (`s3://bucket/prefix/`) on this server.
    pub fn store(&self, uri: &str, access_key_id: &str, secret_access_key: &str) -> Result<Store> {
        Store::from_uri_with_options(uri, self.options(access_key_id, secret_access_key)).map_err(
            ClusterError::store(format!("opening {uri} on moto {}", self.host_port)),
        )
    }

    /// The last lines of moto's own log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: killpg only sends a signal; the group is the one this child leads.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Writes one object with the store (a single PUT: readers never see part of it).
pub async fn put(store: &Store, key: &str, content: impl Into<Bytes>) -> Result<()> {
    store
        .put(key, content.into())
        .await
        .map_err(ClusterError::store(format!("uploading {key}")))
}

/// Whether an object exists under the store.
pub async fn exists(store: &Store, key: &str) -> Result<bool> {
    store
        .exists(key)
        .await
        .map_err(ClusterError::store(format!("checking {key}")))
}

/// The bytes of one object.
pub async fn get(store: &Store, key: &str) -> Result<Bytes> {
    store
        .get(key)
        .await
        .map_err(ClusterError::store(format!("reading {key}")))
}

/// `moto_server` when it is on PATH, else the module form of the same package.
fn moto_command() -> (String, Vec<String>) {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("moto_server").is_file())
    });
    if on_path {
        ("moto_server".into(), Vec::new())
    } else {
        ("python3".into(), vec!["-m".into(), "moto.server".into()])
    }
}

/// A port that was free on `ip` a moment ago.
fn free_port(ip: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| {
        ClusterError::Invalid(format!(
            "binding a free port on {ip} for moto (is the cluster's bridge up?): {e}"
        ))
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Invalid(format!("local address of a socket on {ip}: {e}")))
}

/// One HTTP/1.1 request without a body; returns the status and the body.
async fn request(host_port: &str, method: &str, path: &str) -> Result<(u16, String)> {
    let reply = crate::testing::http_request(host_port, method, path, None).await?;
    Ok((reply.status, reply.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs moto (`make test-deps`); runs on loopback, no cluster needed.
    #[tokio::test]
    async fn moto_serves_a_bucket_through_the_store_and_dies_on_drop() -> Result<()> {
        let moto = Moto::start_on("127.0.0.1").await?;
        moto.create_bucket("bucket").await?;
        let store = moto.store("s3://bucket/p/", "AKIATEST", "secret")?;
        put(&store, "x/y.csv", "a\n1\n").await?;
        assert!(exists(&store, "x/y.csv").await?);
        assert!(!exists(&store, "x/z.csv").await?);
        assert_eq!(&get(&store, "x/y.csv").await?[..], b"a\n1\n");
        let keys: Vec<String> = store
            .list()
            .await
            .map_err(ClusterError::store("listing"))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["x/y.csv"]);
        let host_port = moto.host_port.clone();
        drop(moto);
        assert!(
            std::net::TcpStream::connect(&host_port).is_err(),
            "nothing listens on {host_port} once moto is dropped"
        );
        Ok(())
    }
}
