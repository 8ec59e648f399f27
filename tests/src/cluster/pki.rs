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
        Leaf { stem: "apiserver", common_name: "kube-apiserver".into(), groups: &[], sans: apiserver_sans, server: true, client: false },
        Leaf {
            stem: "apiserver-kubelet-client",
            common_name: "kube-apiserver-kubelet-client".into(),
            groups: &["system:masters"],
            sans: vec![],
            server: false,
            client: true,
        },
        Leaf { stem: "apiserver-etcd-client", common_name: "kube-apiserver-etcd-client".into(), groups: &[], sans: vec![], server: false, client: true },
        Leaf { stem: "etcd-server", common_name: "etcd".into(), groups: &[], sans: loopback.clone(), server: true, client: true },
        Leaf { stem: "admin", common_name: "kubernetes-admin".into(), groups: &["system:masters"], sans: vec![], server: false, client: true },
        Leaf {
            stem: "controller-manager",
            common_name: "system:kube-controller-manager".into(),
            groups: &[],
            sans: loopback.clone(),
            server: true,
            client: true,
        },
        Leaf { stem: "scheduler", common_name: "system:kube-scheduler".into(), groups: &[], sans: loopback, server: true, client: true },
        Leaf {
            stem: "kubelet",
            common_name: format!("system:node:{}", layout::NODE_NAME),
            groups: &["system:nodes"],
            sans: vec![layout::NODE_IP.to_string(), layout::NODE_NAME.to_string()],
            server: true,
            client: true,
        },
        Leaf { stem: "kube-proxy", common_name: "system:kube-proxy".into(), groups: &[], sans: vec![], server: false, client: true },
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
    ca_params.distinguished_name.push(DnType::CommonName, "champion-cluster-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err("CA"))?;
    write_file(&layout.pki_file("ca.crt"), ca_cert.pem(), 0o644)?;
    write_file(&layout.pki_file("ca.key"), ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params, ca_key);

    for leaf in leaves() {
        let key = KeyPair::generate().map_err(pki_err(leaf.stem))?;
        let mut params = CertificateParams::new(leaf.sans.clone()).map_err(pki_err(leaf.stem))?;
        params.distinguished_name.push(DnType::CommonName, leaf.common_name.as_str());
        for group in leaf.groups {
            params.distinguished_name.push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if leaf.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = params.signed_by(&key, &issuer).map_err(pki_err(leaf.stem))?;
        write_file(&layout.pki_file(&format!("{}.crt", leaf.stem)), cert.pem(), 0o644)?;
        write_file(&layout.pki_file(&format!("{}.key", leaf.stem)), key.serialize_pem(), 0o600)?;
    }

    let sa_key = KeyPair::generate().map_err(pki_err("service-account signing key"))?;
    write_file(&layout.pki_file("sa.key"), sa_key.serialize_pem(), 0o600)?;
    write_file(&layout.pki_file("sa.pub"), sa_key.public_key_pem(), 0o644)?;
    Ok(())
}
