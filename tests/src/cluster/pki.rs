//! The cluster's PKI, shaped like kubeadm's and generated fresh at every cold start: one CA that
//! every component trusts, a serving certificate per TLS endpoint (each valid only for the
//! addresses it is reached on), one client certificate per identity (its CN is the user and its
//! O the groups, which is what the API server's Node and RBAC authorizers read), and the
//! service-account signing key pair.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::layout::{self, Layout};
use super::sys::{create_dir, write_file};
use crate::error::{ClusterError, Result};

/// The identity the API server presents to aggregated API servers (and the only name they
/// accept request headers from).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// One certificate to issue: file stem, subject, groups, SANs and what it is used for.
struct Leaf {
    stem: &'static str,
    common_name: String,
    groups: &'static [&'static str],
    sans: Vec<String>,
    server: bool,
    client: bool,
}

fn leaves() -> Vec<Leaf> {
    let loopback = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let mut apiserver_sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        layout::NODE_IP.to_string(),
        layout::NODE_NAME.to_string(),
        layout::KUBERNETES_SERVICE_IP.to_string(),
    ];
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        apiserver_sans.push(name.to_string());
    }
    apiserver_sans.push(format!("kubernetes.default.svc.{}", layout::CLUSTER_DOMAIN));
    vec![
        Leaf {
            stem: "apiserver",
            common_name: "kube-apiserver".into(),
            groups: &[],
            sans: apiserver_sans,
            server: true,
            client: false,
        },
        Leaf {
            stem: "apiserver-kubelet-client",
            common_name: "kube-apiserver-kubelet-client".into(),
            groups: &["system:masters"],
            sans: vec![],
            server: false,
            client: true,
        },
        Leaf {
            stem: "apiserver-etcd-client",
            common_name: "kube-apiserver-etcd-client".into(),
            groups: &[],
            sans: vec![],
            server: false,
            client: true,
        },
        Leaf {
            stem: "etcd-server",
            common_name: "etcd".into(),
            groups: &[],
            sans: loopback.clone(),
            server: true,
            client: true,
        },
        Leaf {
            stem: "admin",
            common_name: "kubernetes-admin".into(),
            groups: &["system:masters"],
            sans: vec![],
            server: false,
            client: true,
        },
        Leaf {
            stem: "controller-manager",
            common_name: "system:kube-controller-manager".into(),
            groups: &[],
            sans: loopback.clone(),
            server: true,
            client: true,
        },
        Leaf {
            stem: "scheduler",
            common_name: "system:kube-scheduler".into(),
            groups: &[],
            sans: loopback,
            server: true,
            client: true,
        },
        Leaf {
            stem: "kubelet",
            common_name: format!("system:node:{}", layout::NODE_NAME),
            groups: &["system:nodes"],
            sans: vec![layout::NODE_IP.to_string(), layout::NODE_NAME.to_string()],
            server: true,
            client: true,
        },
        Leaf {
            stem: "kube-proxy",
            common_name: "system:kube-proxy".into(),
            groups: &[],
            sans: vec![],
            server: false,
            client: true,
        },
    ]
}

fn pki_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> ClusterError {
    move |source| ClusterError::Pki { what, source }
}

/// Writes `pki/{ca,<leaf>}.{crt,key}` and `pki/sa.{key,pub}` under the state dir.
pub fn generate(layout: &Layout) -> Result<()> {
    create_dir(&layout.pki())?;
    let ca_key = KeyPair::generate().map_err(pki_err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "champion-cluster-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err("CA"))?;
    write_file(&layout.pki_file("ca.crt"), ca_cert.pem(), 0o644)?;
    write_file(&layout.pki_file("ca.key"), ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params, ca_key);

    for leaf in leaves() {
        let key = KeyPair::generate().map_err(pki_err(leaf.stem))?;
        let mut params = CertificateParams::new(leaf.sans.clone()).map_err(pki_err(leaf.stem))?;
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        for group in leaf.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(pki_err(leaf.stem))?;
        write_file(
            &layout.pki_file(&format!("{}.crt", leaf.stem)),
            cert.pem(),
            0o644,
        )?;
        write_file(
            &layout.pki_file(&format!("{}.key", leaf.stem)),
            key.serialize_pem(),
            0o600,
        )?;
    }

    // The front-proxy CA, as kubeadm makes it: a separate trust root for the request-header
    // authentication of aggregated API servers, so a client certificate of the cluster CA can
    // never pose as the aggregator.
    let fp_key = KeyPair::generate().map_err(pki_err("front-proxy CA key"))?;
    let mut fp_params =
        CertificateParams::new(Vec::<String>::new()).map_err(pki_err("front-proxy CA"))?;
    fp_params
        .distinguished_name
        .push(DnType::CommonName, "champion-front-proxy-ca");
    fp_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    fp_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let fp_cert = fp_params
        .self_signed(&fp_key)
        .map_err(pki_err("front-proxy CA"))?;
    write_file(&layout.pki_file("front-proxy-ca.crt"), fp_cert.pem(), 0o644)?;
    write_file(
        &layout.pki_file("front-proxy-ca.key"),
        fp_key.serialize_pem(),
        0o600,
    )?;
    let fp_issuer = Issuer::new(fp_params, fp_key);
    let client_key = KeyPair::generate().map_err(pki_err("front-proxy-client"))?;
    let mut client_params =
        CertificateParams::new(Vec::<String>::new()).map_err(pki_err("front-proxy-client"))?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, FRONT_PROXY_CLIENT);
    client_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &fp_issuer)
        .map_err(pki_err("front-proxy-client"))?;
    write_file(
        &layout.pki_file("front-proxy-client.crt"),
        client_cert.pem(),
        0o644,
    )?;
    write_file(
        &layout.pki_file("front-proxy-client.key"),
        client_key.serialize_pem(),
        0o600,
    )?;

    let sa_key = KeyPair::generate().map_err(pki_err("service-account signing key"))?;
    write_file(&layout.pki_file("sa.key"), sa_key.serialize_pem(), 0o600)?;
    write_file(&layout.pki_file("sa.pub"), sa_key.public_key_pem(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn openssl(args: &[&str]) -> String {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn every_certificate_chains_to_the_ca_with_the_identity_and_names_it_is_used_with() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            cache: PathBuf::new(),
            state: dir.path().to_path_buf(),
            run: dir.path().join("run"),
            images_dir: PathBuf::new(),
        };
        generate(&layout).expect("PKI generates");
        let ca = layout.pki_file("ca.crt").display().to_string();
        for leaf in leaves() {
            let crt = layout
                .pki_file(&format!("{}.crt", leaf.stem))
                .display()
                .to_string();
            let purpose = if leaf.server {
                "sslserver"
            } else {
                "sslclient"
            };
            let verified = openssl(&["verify", "-purpose", purpose, "-CAfile", &ca, &crt]);
            assert!(verified.contains(": OK"), "{}: {verified}", leaf.stem);
            let subject = openssl(&[
                "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", &crt,
            ]);
            assert!(
                subject.contains(&format!("CN={}", leaf.common_name)),
                "{}: {subject}",
                leaf.stem
            );
            for g in leaf.groups {
                assert!(
                    subject.contains(&format!("O={g}")),
                    "{}: {subject}",
                    leaf.stem
                );
            }
        }
        let sans = openssl(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            &layout.pki_file("apiserver.crt").display().to_string(),
        ]);
        for want in [
            "IP Address:127.0.0.1",
            "IP Address:10.244.0.1",
            "IP Address:10.96.0.1",
            "DNS:kubernetes.default.svc.cluster.local",
        ] {
            assert!(sans.contains(want), "apiserver SANs lack {want}: {sans}");
        }
        let fp = openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            &layout.pki_file("front-proxy-ca.crt").display().to_string(),
            &layout
                .pki_file("front-proxy-client.crt")
                .display()
                .to_string(),
        ]);
        assert!(fp.contains(": OK"), "front-proxy-client: {fp}");
        let key = openssl(&[
            "pkey",
            "-pubin",
            "-in",
            &layout.pki_file("sa.pub").display().to_string(),
            "-noout",
            "-text",
        ]);
        assert!(key.contains("Public-Key"), "{key}");
    }
}
