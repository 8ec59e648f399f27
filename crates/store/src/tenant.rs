//! Store options that a pipeline author may set through the Secret their pipeline references.
//!
//! The operator opens stores with options taken from a tenant's Secret. object_store also
//! accepts options that name URLs, files and switches (container-credential and metadata
//! endpoints, web-identity and federated token files, proxies, `allow_invalid_certificates`):
//! passed through, a Secret could make the operator read its own ServiceAccount token and send
//! it anywhere. So only the options a real user of each backend needs are accepted: static
//! keys, session tokens, region, endpoint and request flags. Any other key is refused by name,
//! never echoing its value.

use std::path::PathBuf;

use crate::egress::EgressPolicy;
use crate::{Store, StoreError};

/// Allowed option names per backend, without their `aws_` / `google_` / `azure_` prefixes.
const S3: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "region",
    "default_region",
    "endpoint",
    "endpoint_url",
    "virtual_hosted_style_request",
    "allow_http",
    "skip_signature",
    "unsigned_payload",
    "checksum_algorithm",
    "request_payer",
    "s3_express",
    "server_side_encryption",
    "sse_kms_key_id",
    "sse_bucket_key_enabled",
    "sse_customer_key_base64",
    "conditional_put",
    "copy_if_not_exists",
    "disable_tagging",
];
const GCS: &[&str] = &[
    "service_account_key",
    "bearer_token",
    "base_url",
    "skip_signature",
    "allow_http",
];
const AZURE: &[&str] = &[
    "account_name",
    "account_key",
    "access_key",
    "master_key",
    "sas_key",
    "sas_token",
    "token",
    "bearer_token",
    "client_id",
    "client_secret",
    "tenant_id",
    "authority_id",
    "endpoint",
    "container_name",
    "skip_signature",
    "disable_tagging",
    "allow_http",
];

/// The backend of `uri`'s scheme and its allowed option names; http(s):// takes none.
fn backend(uri: &str) -> (&'static str, &'static [&'static str]) {
    let scheme = uri
        .trim()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "s3" | "s3a" => ("s3", S3),
        "gs" => ("gs", GCS),
        "az" | "adl" | "azure" | "abfs" | "abfss" => ("az", AZURE),
        "http" | "https" => ("http(s)", &[]),
        "file" => ("file", &[]),
        _ => ("this", &[]),
    }
}

/// An option name as the allow-lists spell it: lowercase, without the backend's prefix.
fn canonical(key: &str) -> String {
    let k = key.trim().to_ascii_lowercase();
    for prefix in ["aws_", "google_", "azure_storage_", "azure_"] {
        if let Some(rest) = k.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    k
}

/// The options from a tenant's Secret that may configure a store for `uri`, or the first key
/// that may not (by name only). A file:// store takes no options, so none are passed to it and
/// none is refused: a Secret that serves the trainer's environment may sit beside a local
/// store.
pub fn tenant_options(
    uri: &str,
    options: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, StoreError> {
    let (scheme, allowed) = backend(uri);
    if scheme == "file" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (key, value) in options {
        if !allowed.contains(&canonical(&key).as_str()) {
            return Err(StoreError::OptionNotAllowed {
                key,
                scheme,
                allowed: if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                },
            });
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Options that carry a credential of their own, per backend (canonical names): with one of
/// them the store signs with the author's credential, without any it would fall back to the
/// reader's ambient identity.
const CREDENTIALS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "service_account_key",
    "bearer_token",
    "account_key",
    "access_key",
    "master_key",
    "sas_key",
    "sas_token",
    "client_secret",
    "skip_signature",
];

/// Option names that point a backend at a custom endpoint (canonical names).
const ENDPOINTS: &[&str] = &["endpoint", "endpoint_url", "base_url"];

/// How the operator opens a store for a pipeline author: the Secret's options through the
/// allow-list, every host through the [`EgressPolicy`], `file://` stores confined to the
/// operator's store volumes, and the operator's own cloud identity (instance metadata, IRSA,
/// workload identity) used only where the platform team allowed it.
#[derive(Debug, Clone, Default)]
pub struct TenantStores {
    /// Outbound-host policy for URIs and endpoints.
    pub egress: EgressPolicy,
    /// Whether a store without credentials of its own may fall back to the operator's ambient
    /// identity. Off: such a store is read anonymously (public buckets only).
    pub ambient_credentials: bool,
    /// Directories `file://` stores must lie in (the operator's store volumes); none: no
    /// `file://` store may be opened.
    pub local_roots: Vec<PathBuf>,
}

impl TenantStores {
    /// Opens `uri` (named by `field`, e.g. `spec.data.uri`, for messages) with options from
    /// the author's Secret, or says which rule refused it. Nothing is sent before every check
    /// passed.
    pub async fn open(
        &self,
        uri: &str,
        options: Vec<(String, String)>,
        field: &str,
    ) -> Result<Store, StoreError> {
        let mut options = tenant_options(uri, options)?;
        let url = url::Url::parse(uri.trim()).map_err(|e| StoreError::InvalidUri {
            uri: crate::redact_str(uri),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "file" => {
                return Store::from_uri_with_options(uri, options)?.confine(&self.local_roots);
            }
            "http" | "https" => {
                let host = url.host_str().unwrap_or_default();
                let port = url.port_or_known_default().unwrap_or(443);
                self.egress.check_host(host, port, field).await?;
            }
            _ => {}
        }
        for (key, value) in &options {
            if !ENDPOINTS.contains(&canonical(key).as_str()) {
                continue;
            }
            let what = format!("the {key} option of {field}'s Secret");
            let endpoint = url::Url::parse(value.trim()).map_err(|e| StoreError::InvalidUri {
                uri: what.clone(),
                reason: format!("expected an http(s) URL: {e}"),
            })?;
            let host = endpoint.host_str().unwrap_or_default();
            let port = endpoint.port_or_known_default().unwrap_or(443);
            self.egress.check_host(host, port, &what).await?;
        }
        let signed = options
            .iter()
            .any(|(k, _)| CREDENTIALS.contains(&canonical(k).as_str()));
        if !self.ambient_credentials && !signed && url.scheme() != "http" && url.scheme() != "https"
        {
            // No credential of the author's own: read anonymously rather than as the operator.
            options.push(("skip_signature".into(), "true".into()));
        }
        Store::from_uri_with_options(uri, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn what_real_users_set_is_accepted_in_either_spelling() {
        let s3 = opts(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_SESSION_TOKEN", "c"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("aws_allow_http", "true"),
            ("virtual_hosted_style_request", "false"),
        ]);
        assert_eq!(tenant_options("s3://b/p/", s3.clone()).ok(), Some(s3));
        let gs = opts(&[("GOOGLE_SERVICE_ACCOUNT_KEY", "{}")]);
        assert!(tenant_options("gs://b/p/", gs).is_ok());
        let az = opts(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "a"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "k"),
            ("azure_storage_sas_token", "s"),
        ]);
        assert!(tenant_options("az://c/p/", az).is_ok());
        assert_eq!(
            tenant_options(
                "file:///data/",
                opts(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")])
            )
            .ok(),
            Some(Vec::new()),
            "a local store takes no options: none reaches it"
        );
    }

    #[test]
    fn credential_providers_token_files_proxies_and_tls_switches_are_refused_by_name() {
        for (uri, key) in [
            ("s3://b/p/", "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            ("s3://b/p/", "aws_container_credentials_relative_uri"),
            ("s3://b/p/", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            ("s3://b/p/", "AWS_WEB_IDENTITY_TOKEN_FILE"),
            ("s3://b/p/", "AWS_ROLE_ARN"),
            ("s3://b/p/", "aws_metadata_endpoint"),
            ("s3://b/p/", "aws_imdsv1_fallback"),
            ("s3://b/p/", "aws_endpoint_url_sts"),
            ("s3://b/p/", "proxy_url"),
            ("s3://b/p/", "aws_proxy_url"),
            ("s3://b/p/", "allow_invalid_certificates"),
            ("gs://b/p/", "GOOGLE_SERVICE_ACCOUNT"),
            ("gs://b/p/", "google_application_credentials"),
            ("az://c/p/", "AZURE_FEDERATED_TOKEN_FILE"),
            ("az://c/p/", "azure_authority_host"),
            ("az://c/p/", "azure_msi_endpoint"),
            ("az://c/p/", "azure_use_azure_cli"),
            ("https://h/d.csv", "proxy_url"),
        ] {
            let err = tenant_options(uri, opts(&[(key, "SECRET-VALUE")]))
                .expect_err("refused")
                .to_string();
            assert!(err.contains(key), "{uri} {key}: {err}");
            assert!(
                !err.contains("SECRET-VALUE"),
                "the value never shows: {err}"
            );
        }
    }

    /// The attack: a Secret that points the container-credentials provider at a listener and
    /// its token file at a canary. Passed through unfiltered, object_store reads the canary and
    /// sends it to the listener (shown first, so this test would fail if the filter were
    /// skipped); filtered, the store is refused and the listener receives nothing.
    #[test]
    fn a_secret_cannot_make_the_store_send_a_token_file_anywhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let canary = "canary-3f9a1c";
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, canary).expect("canary");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        listener.set_nonblocking(false).expect("blocking");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let _ =
                    s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let secret = opts(&[
            ("AWS_REGION", "eu-west-1"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("http://127.0.0.1:{port}/creds"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                &token_file.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");

        // Unfiltered, as before the allow-list: the canary reaches the listener.
        let store =
            crate::Store::from_uri_with_options("s3://bucket/data/", secret.clone()).expect("open");
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), store.list()).await;
        });
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the unfiltered store called the listener");
        assert!(first.contains(canary), "{first}");
        while rx.try_recv().is_ok() {}

        // Filtered: refused by key name, nothing sent.
        let err = crate::Store::from_tenant_uri("s3://bucket/data/", secret)
            .expect_err("the Secret is refused");
        assert!(
            err.to_string()
                .contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            "{err}"
        );
        assert!(!err.to_string().contains(canary));
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "the listener received nothing"
        );
    }

    /// A store without credentials of the author's own is read anonymously when ambient
    /// credentials are off: the request carries no signature, so no identity of the reader's
    /// is looked up or used. A refused endpoint gets no request at all.
    #[test]
    fn without_credentials_the_operator_reads_anonymously_and_refused_hosts_get_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let body = "<ListBucketResult></ListBucketResult>";
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stores = TenantStores {
            egress: EgressPolicy::new(&["127.0.0.1".into()], &[]).expect("policy"),
            ..TenantStores::default()
        };
        let secret = opts(&[
            ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        rt.block_on(async {
            let store = stores
                .open("s3://bucket/data/", secret, "spec.data.uri")
                .await
                .expect("opens");
            let _ = tokio::time::timeout(Duration::from_secs(5), store.list()).await;
        });
        let request = rx.recv_timeout(Duration::from_secs(5)).expect("a request");
        assert!(request.starts_with("GET /bucket"), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("authorization:"),
            "unsigned: {request}"
        );

        let denied = TenantStores::default();
        let err = rt
            .block_on(denied.open(
                "s3://bucket/data/",
                opts(&[("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))]),
                "spec.data.uri",
            ))
            .expect_err("loopback endpoint refused");
        assert!(matches!(err, StoreError::HostRefused { .. }), "{err}");
        assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
        let err = rt
            .block_on(denied.open(
                "http://169.254.169.254/latest/meta-data/",
                Vec::new(),
                "spec.data.uri",
            ))
            .expect_err("metadata refused");
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "refused stores sent nothing"
        );
        let err = rt
            .block_on(denied.open("file:///etc/", Vec::new(), "spec.data.uri"))
            .expect_err("no local roots: no file:// store");
        assert!(matches!(err, StoreError::OutsideRoot { .. }), "{err}");
    }
}
