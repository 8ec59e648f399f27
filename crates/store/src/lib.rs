//! One storage abstraction for every URI champion reads or writes — `file:///abs/dir/`,
//! `s3://bucket/prefix/`, `gs://`, `az://`, `http(s)://` — built on `object_store`.
//!
//! A [`Store`] is rooted at a URI prefix; keys are relative to it. Credentials come from the
//! process environment ([`Store::from_uri`]) or from explicit key/value pairs
//! ([`Store::from_uri_with_options`], which the operator fills from a Secret); they never
//! appear in errors, `Debug` output or logs, because the store only ever prints its redacted
//! URI.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use sha2::{Digest, Sha256};
use url::Url;

pub mod egress;
mod local;
pub mod tenant;

pub use egress::{Cidr, EgressPolicy};
pub use tenant::TenantStores;

/// Environment variable prefixes whose values configure a cloud store
/// (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, GOOGLE_SERVICE_ACCOUNT, AZURE_…).
const ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// Everything that can go wrong talking to a store; every message names the (redacted) URI.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{uri:?} is not a valid URI: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error(
        "cannot open a store for {uri}: {source} (supported: file:///abs/path/, s3://bucket/prefix/, gs://, az://, http(s)://)"
    )]
    Open {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("listing {uri} failed: {source}")]
    List {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading {uri} failed: {source}")]
    Get {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {uri} failed: {source}")]
    Put {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{uri} already exists; it is written once and never overwritten")]
    AlreadyExists { uri: String },
    #[error("checking whether {uri} exists failed: {source}")]
    Head {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "store option {key:?} is not allowed from a pipeline's Secret for {scheme} URIs (credential-provider URLs, token files, metadata endpoints, proxies and TLS switches are refused); allowed: {allowed}"
    )]
    OptionNotAllowed {
        key: String,
        scheme: &'static str,
        allowed: String,
    },
    #[error(
        "host {host:?} of {what} is not allowed: {reason} (the operator's store policy refuses metadata, loopback, link-local and cluster-internal addresses unless the platform team allows them: chart value storePolicy.allowedHosts)"
    )]
    HostRefused {
        host: String,
        what: String,
        reason: String,
    },
    #[error("{uri} is {size} bytes, more than the {max} bytes a reader accepts")]
    TooLarge { uri: String, size: u64, max: u64 },
    #[error("{uri} holds more than {max} objects; a listing reads at most {max}")]
    TooManyObjects { uri: String, max: usize },
    #[error(
        "{uri} leads outside the directories this reader may read (a symbolic link out of the store, or a store outside the allowed local roots {roots})"
    )]
    OutsideRoot { uri: String, roots: String },
    #[error("reading {uri} failed: {source}")]
    Local {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key:?} is not a valid object key under {uri}: {reason}")]
    InvalidKey {
        uri: String,
        key: String,
        reason: String,
    },
}

/// One object under a store's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix, `/`-separated, no leading `/`.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: DateTime<Utc>,
}

/// An object store rooted at a URI prefix.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URI without user info, query or fragment: safe to print.
    uri: String,
    is_local: bool,
    /// Plain HTTP(S) servers cannot list; there a URI names one object.
    is_http: bool,
    /// `file://` only: canonical directories every listed or read file must lie in, besides
    /// the store's own prefix (see [`Store::confine`]).
    confine: Arc<Vec<std::path::PathBuf>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the inner store: some builders keep credentials in their Debug.
        f.debug_struct("Store").field("uri", &self.uri).finish()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl Store {
    /// Opens the store for `uri`, configured from the process environment (every variable
    /// starting with AWS_, GOOGLE_ or AZURE_, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP).
    pub fn from_uri(uri: &str) -> Result<Store, StoreError> {
        let env = std::env::vars().filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)));
        Store::from_uri_with_options(uri, env)
    }

    /// Opens the store for `uri` with explicit options, using the same keys as the environment
    /// (`AWS_ACCESS_KEY_ID`, `aws_endpoint`, …; case does not matter, unknown keys are ignored).
    pub fn from_uri_with_options(
        uri: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Store, StoreError> {
        let url = Url::parse(uri.trim()).map_err(|e| StoreError::InvalidUri {
            uri: redact_str(uri),
            reason: e.to_string(),
        })?;
        let redacted = redact(&url);
        // object_store's own message repeats the URL with any user info, so it is not used.
        let (scheme, _) = ObjectStoreScheme::parse(&url).map_err(|_| StoreError::InvalidUri {
            uri: redacted.clone(),
            reason: format!(
                "unsupported scheme {:?} (expected file:///abs/path/, s3://, gs://, az://, http(s)://)",
                url.scheme()
            ),
        })?;
        let is_local = scheme == ObjectStoreScheme::Local;
        let is_http = scheme == ObjectStoreScheme::Http;
        let mut options: Vec<(String, String)> = options
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if url.scheme() == "http" {
            // object_store refuses plain HTTP unless told; an http:// URI is that request.
            options.push(("allow_http".into(), "true".into()));
        }
        let (inner, prefix) =
            object_store::parse_url_opts(&url, options).map_err(|source| StoreError::Open {
                uri: redacted.clone(),
                source,
            })?;
        tracing::debug!(uri = %redacted, "opened object store");
        Ok(Store {
            inner: Arc::from(inner),
            prefix,
            uri: redacted,
            is_local,
            is_http,
            confine: Arc::new(Vec::new()),
        })
    }

    /// Confines a `file://` store to `roots`: its prefix, and every file it lists or reads,
    /// must resolve (symbolic links followed) inside one of them. The operator confines
    /// pipelines' stores to the volumes it mounts for them, so a URI or a link cannot make it
    /// read its own files. Other stores are returned unchanged.
    pub fn confine(mut self, roots: &[std::path::PathBuf]) -> Result<Store, StoreError> {
        if !self.is_local {
            return Ok(self);
        }
        let canonical: Vec<std::path::PathBuf> = roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let shown = if roots.is_empty() {
            "(none configured)".to_string()
        } else {
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let inside = self.local_path().ancestors().any(|a| {
            std::fs::canonicalize(a).is_ok_and(|a| canonical.iter().any(|r| a.starts_with(r)))
        });
        if canonical.is_empty() || !inside {
            return Err(StoreError::OutsideRoot {
                uri: self.uri.clone(),
                roots: shown,
            });
        }
        self.confine = Arc::new(canonical);
        Ok(self)
    }

    /// The filesystem path of a `file://` store's prefix.
    fn local_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/{}", self.prefix.as_ref()))
    }

    /// Runs a blocking local-filesystem step off the async threads and maps its failure.
    async fn local<T: Send + 'static>(
        &self,
        uri: String,
        step: impl FnOnce(std::path::PathBuf, Vec<std::path::PathBuf>) -> Result<T, local::LocalError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let prefix = self.local_path();
        let confine = self.confine.as_ref().clone();
        let roots = if confine.is_empty() {
            prefix.display().to_string()
        } else {
            confine
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let result = tokio::task::spawn_blocking(move || step(prefix, confine))
            .await
            .map_err(|e| local::LocalError::Io(std::io::Error::other(e.to_string())))
            .and_then(|r| r);
        result.map_err(|e| match e {
            local::LocalError::NotFound => StoreError::NotFound { uri: uri.clone() },
            local::LocalError::Escapes => StoreError::OutsideRoot {
                uri: uri.clone(),
                roots,
            },
            local::LocalError::TooMany => StoreError::TooManyObjects {
                uri: uri.clone(),
                max: 0,
            },
            local::LocalError::TooLarge(size) => StoreError::TooLarge {
                uri: uri.clone(),
                size,
                max: 0,
            },
            local::LocalError::Io(source) => StoreError::Local {
                uri: uri.clone(),
                source,
            },
        })
    }

    /// Opens the store for `uri` with options from a pipeline author's Secret: only the options
    /// [`tenant::tenant_options`] allows for the backend are accepted, any other key refuses
    /// the store (by its name, never its value).
    pub fn from_tenant_uri(
        uri: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Store, StoreError> {
        let options = tenant::tenant_options(uri, options)?;
        Store::from_uri_with_options(uri, options)
    }

    /// The store's URI, with any user info or query removed.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The (redacted) URI of one key, for messages.
    pub fn uri_of(&self, key: &str) -> String {
        if key.is_empty() {
            self.uri.clone()
        } else if self.uri.ends_with('/') {
            format!("{}{key}", self.uri)
        } else {
            format!("{}/{key}", self.uri)
        }
    }

    /// A store rooted at `key` below this one (e.g. a model version directory).
    pub fn child(&self, key: &str) -> Result<Store, StoreError> {
        let prefix = self.path_of(key)?;
        Ok(Store {
            inner: Arc::clone(&self.inner),
            prefix,
            uri: self.uri_of(key.trim_matches('/')),
            is_local: self.is_local,
            is_http: self.is_http,
            confine: Arc::clone(&self.confine),
        })
    }

    /// The path of `key` below the prefix; the empty key is the prefix itself, which is how a
    /// URI that names a single object (".../test_data.csv") is read.
    fn path_of(&self, key: &str) -> Result<Path, StoreError> {
        let key = key.trim_matches('/');
        if key.is_empty() {
            if self.prefix.as_ref().is_empty() {
                return Err(StoreError::InvalidKey {
                    uri: self.uri.clone(),
                    key: key.to_string(),
                    reason: "empty key at the root of a store".into(),
                });
            }
            return Ok(self.prefix.clone());
        }
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(StoreError::InvalidKey {
                    uri: self.uri.clone(),
                    key: key.to_string(),
                    reason: "keys must not contain empty, '.' or '..' segments".into(),
                });
            }
            parts.push(part.to_string());
        }
        Path::parse(parts.join("/")).map_err(|e| StoreError::InvalidKey {
            uri: self.uri.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// The prefix itself as a single object, if it is one.
    async fn single_object(&self) -> Result<Option<ObjectInfo>, StoreError> {
        if self.prefix.as_ref().is_empty() {
            return Ok(None);
        }
        match self.inner.head(&self.prefix).await {
            Ok(m) => Ok(Some(ObjectInfo {
                key: String::new(),
                size: m.size,
                etag: m.e_tag,
                last_modified: m.last_modified,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Head {
                uri: self.uri.clone(),
                source,
            }),
        }
    }

    /// Every object under the prefix, recursively, sorted by key. When the URI names a single
    /// object rather than a prefix, the listing is that object with the empty key. A `file://`
    /// path that does not exist is an error rather than an empty listing, so a typo is not
    /// mistaken for "no data yet"; so is any URI under which nothing exists.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        self.list_limited(None).await
    }

    async fn list_limited(&self, max: Option<usize>) -> Result<Vec<ObjectInfo>, StoreError> {
        if self.is_local {
            let listed = self
                .local(self.uri.clone(), move |prefix, confine| {
                    local::list(&prefix, &confine, max)
                })
                .await;
            return match listed {
                Err(StoreError::TooManyObjects { uri, .. }) => Err(StoreError::TooManyObjects {
                    uri,
                    max: max.unwrap_or_default(),
                }),
                other => other,
            };
        } else if !self.uri.ends_with('/') {
            // A URI without a trailing slash may name one object (the only way to read plain
            // HTTP servers, which cannot list).
            match self.single_object().await? {
                Some(object) => return Ok(vec![object]),
                None if self.is_http => {
                    return Err(StoreError::NotFound {
                        uri: self.uri.clone(),
                    });
                }
                None => {}
            }
        }
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut stream = self.inner.list(prefix);
        let mut metas: Vec<object_store::ObjectMeta> = Vec::new();
        while let Some(meta) = stream.try_next().await.map_err(|source| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                uri: self.uri.clone(),
            },
            source => StoreError::List {
                uri: self.uri.clone(),
                source,
            },
        })? {
            if max.is_some_and(|max| metas.len() >= max) {
                return Err(StoreError::TooManyObjects {
                    uri: self.uri.clone(),
                    max: max.unwrap_or_default(),
                });
            }
            metas.push(meta);
        }
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let key = match m.location.prefix_match(&self.prefix) {
                    Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>(),
                    None => return None,
                };
                if key.is_empty() {
                    return None;
                }
                Some(ObjectInfo {
                    key: key.join("/"),
                    size: m.size,
                    etag: m.e_tag,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Starts reading one object: its metadata and body stream, and its URI for messages.
    async fn open_object(
        &self,
        key: &str,
    ) -> Result<(object_store::GetResult, String), StoreError> {
        let path = self.path_of(key)?;
        let uri = self.uri_of(key);
        match self.inner.get(&path).await {
            Ok(result) => Ok((result, uri)),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound { uri }),
            Err(source) => Err(StoreError::Get { uri, source }),
        }
    }

    /// Reads one object of a `file://` store, at most `max` bytes.
    async fn get_local(&self, key: &str, max: Option<u64>) -> Result<Bytes, StoreError> {
        let path = std::path::PathBuf::from(format!("/{}", self.path_of(key)?.as_ref()));
        let read = self
            .local(self.uri_of(key), move |prefix, confine| {
                local::read(&prefix, &confine, &path, max)
            })
            .await;
        match read {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(StoreError::TooLarge { uri, size, .. }) => Err(StoreError::TooLarge {
                uri,
                size,
                max: max.unwrap_or_default(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The bytes of one object.
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        if self.is_local {
            return self.get_local(key, None).await;
        }
        let (result, uri) = self.open_object(key).await?;
        result
            .bytes()
            .await
            .map_err(|source| StoreError::Get { uri, source })
    }

    /// The bytes of one object of at most `max` bytes: a larger object is refused from its
    /// size before its body is read, and a body that outgrows its announced size is cut off at
    /// `max`, so a hostile object cannot exhaust the reader's memory.
    pub async fn get_capped(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        if self.is_local {
            return self.get_local(key, Some(max)).await;
        }
        let (result, uri) = self.open_object(key).await?;
        if result.meta.size > max {
            return Err(StoreError::TooLarge {
                uri,
                size: result.meta.size,
                max,
            });
        }
        let mut stream = result.into_stream();
        let mut out = Vec::with_capacity(usize::try_from(result_size_hint(max)).unwrap_or(0));
        while let Some(chunk) = stream.try_next().await.map_err(|source| StoreError::Get {
            uri: uri.clone(),
            source,
        })? {
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(StoreError::TooLarge {
                    uri,
                    size: out.len() as u64 + chunk.len() as u64,
                    max,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Like [`Store::list`], but refuses a prefix that holds more than `max` objects, without
    /// collecting more than that.
    pub async fn list_at_most(&self, max: usize) -> Result<Vec<ObjectInfo>, StoreError> {
        let objects = self.list_limited(Some(max)).await?;
        Ok(objects)
    }

    /// Writes one object atomically: a reader sees the old object or the whole new one, never
    /// a part (a single PUT on object stores, write-then-rename on `file://`).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        self.inner
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| StoreError::Put {
                uri: self.uri_of(key),
                source,
            })?;
        Ok(())
    }

    /// Writes one object that must not exist yet, atomically and create-only: when it exists
    /// (also when another writer created it a moment ago) nothing is written and the error is
    /// [`StoreError::AlreadyExists`]. `O_EXCL`-like on `file://` (a hard link), a conditional
    /// put (`If-None-Match: *`) on object stores.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        match self
            .inner
            .put_opts(&path, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::AlreadyExists {
                uri: self.uri_of(key),
            }),
            Err(source) => Err(StoreError::Put {
                uri: self.uri_of(key),
                source,
            }),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        match self.inner.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StoreError::Head {
                uri: self.uri_of(key),
                source,
            }),
        }
    }
}

/// How much to reserve for a capped read: small objects are the rule, so at most 64 KiB up
/// front.
fn result_size_hint(max: u64) -> u64 {
    max.min(64 * 1024)
}

/// Hex sha256 over the listing, sorted by key, of (key, size, e-tag — or last-modified when
/// the store has no e-tag). The operator and the trainer both call this on the same listing;
/// a different result means the data changed.
pub fn fingerprint(objects: &[ObjectInfo]) -> String {
    let mut sorted: Vec<&ObjectInfo> = objects.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut hasher = Sha256::new();
    for o in sorted {
        let version = match &o.etag {
            Some(etag) => format!("etag:{etag}"),
            None => format!(
                "mtime:{}",
                o.last_modified.to_rfc3339_opts(SecondsFormat::Nanos, true)
            ),
        };
        // Keys cannot contain a newline or a NUL in any store we support, so this encoding is
        // unambiguous.
        hasher.update(o.key.as_bytes());
        hasher.update(b"\0");
        hasher.update(o.size.to_string().as_bytes());
        hasher.update(b"\0");
        hasher.update(version.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

fn redact(url: &Url) -> String {
    let mut clean = url.clone();
    // Setting these cannot fail for URLs that have a host; for the others there is nothing to
    // remove.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.to_string()
}

pub(crate) fn redact_str(uri: &str) -> String {
    // An unparsable URI may still carry "user:secret@"; keep only scheme and what follows '@'.
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &uri[..s], &uri[at + 1..]),
        _ => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_uri(dir: &std::path::Path) -> String {
        format!("file://{}/", dir.display())
    }

    #[tokio::test]
    async fn capped_reads_refuse_what_is_too_large_or_too_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("{i}.csv")), vec![b'x'; 100]).expect("write");
        }
        let store = Store::from_uri(&file_uri(dir.path())).expect("store");
        assert_eq!(
            store.get_capped("0.csv", 100).await.expect("fits").len(),
            100
        );
        let err = store.get_capped("0.csv", 99).await.expect_err("too large");
        assert!(
            err.to_string()
                .contains("100 bytes, more than the 99 bytes"),
            "{err}"
        );
        assert_eq!(store.list_at_most(5).await.expect("fits").len(), 5);
        let err = store.list_at_most(4).await.expect_err("too many");
        assert!(err.to_string().contains("more than 4 objects"), "{err}");
    }

    #[tokio::test]
    async fn a_version_written_once_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::from_uri(&file_uri(dir.path())).expect("store");
        store
            .put_new("v1/model.json", Bytes::from_static(b"first"))
            .await
            .expect("created");
        let err = store
            .put_new("v1/model.json", Bytes::from_static(b"second"))
            .await
            .expect_err("exists");
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(
            &store.get("v1/model.json").await.expect("read")[..],
            b"first"
        );
    }

    #[tokio::test]
    async fn a_confined_store_reads_only_inside_its_roots() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let secret = tempfile::tempdir().expect("tempdir");
        std::fs::write(secret.path().join("token"), "canary-51c").expect("write");
        let data = allowed.path().join("team-a");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("a.csv"), "x\n1\n").expect("write");
        std::os::unix::fs::symlink(secret.path().join("token"), data.join("report.json"))
            .expect("link");
        let roots = [allowed.path().to_path_buf()];
        let store = Store::from_uri(&file_uri(&data))
            .and_then(|s| s.confine(&roots))
            .expect("inside");
        let keys: Vec<String> = store
            .list()
            .await
            .expect("lists")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a.csv"]);
        let err = store
            .get_capped("report.json", 1024)
            .await
            .expect_err("a link out of the store is refused");
        assert!(matches!(err, StoreError::OutsideRoot { .. }), "{err}");
        assert!(!err.to_string().contains("canary"), "{err}");
        let err = Store::from_uri(&file_uri(secret.path()))
            .and_then(|s| s.confine(&roots))
            .expect_err("a store outside the roots is refused");
        assert!(matches!(err, StoreError::OutsideRoot { .. }), "{err}");
        assert!(
            Store::from_uri(&file_uri(&data))
                .and_then(|s| s.confine(&[]))
                .is_err(),
            "no roots configured: no local store"
        );
    }

    #[tokio::test]
    async fn put_get_list_and_exists_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_uri(&file_uri(dir.path())).unwrap();
        store
            .put("b/2.csv", Bytes::from_static(b"x,y\n"))
            .await
            .unwrap();
        store
            .put("a.csv", Bytes::from_static(b"x\n1\n"))
            .await
            .unwrap();
        assert_eq!(&store.get("a.csv").await.unwrap()[..], b"x\n1\n");
        assert!(store.exists("b/2.csv").await.unwrap());
        assert!(!store.exists("c.csv").await.unwrap());
        let keys: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a.csv", "b/2.csv"]);
        // A written file leaves no temporary file beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn a_missing_directory_and_a_missing_object_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let store = Store::from_uri(&file_uri(&missing)).unwrap();
        let err = store.list().await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let store = Store::from_uri(&file_uri(dir.path())).unwrap();
        let err = store.get("model.json").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(
            err.to_string().ends_with("model.json does not exist"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_uri_naming_one_object_lists_and_reads_that_object() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.csv"), b"a\n1\n").unwrap();
        let uri = format!("file://{}/test.csv", dir.path().display());
        let store = Store::from_uri(&uri).unwrap();
        let listing = store.list().await.unwrap();
        assert_eq!(listing.len(), 1);
        assert_eq!(listing[0].key, "");
        assert_eq!(listing[0].size, 4);
        assert_eq!(&store.get("").await.unwrap()[..], b"a\n1\n");
        assert_eq!(store.uri_of(""), uri);
    }

    #[tokio::test]
    async fn child_stores_share_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let root = Store::from_uri(&file_uri(dir.path())).unwrap();
        let version = root.child("pipeline/v1").unwrap();
        version
            .put("model.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(root.exists("pipeline/v1/model.json").await.unwrap());
        assert!(version.uri().ends_with("/pipeline/v1"), "{}", version.uri());
        assert!(root.child("../escape").is_err());
    }

    #[test]
    fn fingerprint_depends_on_content_not_order() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = ObjectInfo {
            key: "a.csv".into(),
            size: 10,
            etag: Some("e1".into()),
            last_modified: t,
        };
        let b = ObjectInfo {
            key: "b.csv".into(),
            size: 20,
            etag: None,
            last_modified: t,
        };
        let fp = fingerprint(&[a.clone(), b.clone()]);
        assert_eq!(fp, fingerprint(&[b.clone(), a.clone()]));
        assert_eq!(fp.len(), 64);
        let mut grown = b.clone();
        grown.size = 21;
        assert_ne!(fp, fingerprint(&[a.clone(), grown]));
        let mut touched = b.clone();
        touched.last_modified = t + chrono::Duration::seconds(1);
        assert_ne!(fp, fingerprint(&[a.clone(), touched]));
        assert_ne!(fp, fingerprint(&[a]));
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let store = Store::from_uri_with_options(
            "s3://bucket/prefix/",
            [
                (
                    "AWS_ACCESS_KEY_ID".to_string(),
                    "AKIDSECRETKEYID".to_string(),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    "verysecretvalue".to_string(),
                ),
                ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ],
        )
        .unwrap();
        let shown = format!("{store:?} {store}");
        assert!(
            !shown.contains("verysecretvalue") && !shown.contains("AKIDSECRETKEYID"),
            "{shown}"
        );
        let err = Store::from_uri("http://user:hunter2@127.0.0.1:1/x?token=abc")
            .map(|s| s.uri().to_string());
        let shown = format!("{err:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        let err = Store::from_uri("notascheme://user:hunter2@x/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn unsupported_and_relative_uris_are_refused() {
        assert!(matches!(
            Store::from_uri("ftp://host/x").unwrap_err(),
            StoreError::InvalidUri { .. }
        ));
        assert!(matches!(
            Store::from_uri("data/x").unwrap_err(),
            StoreError::InvalidUri { .. }
        ));
    }
}
