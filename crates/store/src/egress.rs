//! Where a reader may send requests for a pipeline author: the hosts of data and model URIs
//! and of custom endpoints pass an [`EgressPolicy`] before any request is made.
//!
//! By default loopback, link-local (which holds the cloud metadata address 169.254.169.254),
//! the other known metadata addresses and names, and the ranges the operator is configured
//! to deny (the cluster's service and pod ranges) are refused; hosts and ranges on the allow
//! list pass even inside a denied range. Host names are resolved and every address they
//! resolve to is checked.
//!
//! Known limit: the store client resolves the name again when it connects, so a name whose
//! answer changes between the check and the connection (DNS rebinding) is not caught here; the
//! operator's NetworkPolicy is the second line for that.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::StoreError;

/// An address range, `10.96.0.0/12`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range (like 10.96.0.0/12)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Always refused unless allowed: "this" network, loopback, link-local (cloud metadata
/// 169.254.169.254 included), Alibaba's metadata address, IPv6 loopback, unspecified,
/// link-local and AWS's IPv6 metadata address.
const BUILT_IN_DENIED: [&str; 8] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.100.100.200/32",
    "::1/128",
    "::/128",
    "fe80::/10",
    "fd00:ec2::254/128",
];

/// Metadata services by name.
const METADATA_NAMES: [&str; 5] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// How long resolving one host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One allow-list entry: a host name, or an address range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Name(String),
    Range(Cidr),
}

/// The outbound-host policy for tenant URIs and endpoints.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    allowed: Vec<Allowed>,
    denied: Vec<Cidr>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allowed: Vec::new(),
            denied: BUILT_IN_DENIED
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
        }
    }
}

fn normal_name(host: &str) -> String {
    host.trim()
        .trim_end_matches('.')
        .trim_matches(['[', ']'])
        .to_ascii_lowercase()
}

impl EgressPolicy {
    /// The built-in denials plus `denied` ranges, with `allowed` entries (host names, addresses
    /// or ranges) let through even inside a denied range.
    pub fn new(allowed: &[String], denied: &[String]) -> Result<EgressPolicy, String> {
        let mut policy = EgressPolicy::default();
        for d in denied.iter().filter(|d| !d.trim().is_empty()) {
            policy.denied.push(d.parse()?);
        }
        for a in allowed.iter().filter(|a| !a.trim().is_empty()) {
            policy.allowed.push(match a.parse::<Cidr>() {
                Ok(range) => Allowed::Range(range),
                Err(_) if a.contains('/') => {
                    return Err(a.parse::<Cidr>().err().unwrap_or_default());
                }
                Err(_) => Allowed::Name(normal_name(a)),
            });
        }
        Ok(policy)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allowed
            .iter()
            .any(|a| matches!(a, Allowed::Range(r) if r.contains(ip)))
    }

    fn denied_range(&self, ip: IpAddr) -> Option<&Cidr> {
        self.denied.iter().find(|d| d.contains(ip))
    }

    /// Checks one host (a name or an address literal) and the addresses it resolves to;
    /// `what` says where the host came from, for the message.
    pub async fn check_host(&self, host: &str, port: u16, what: &str) -> Result<(), StoreError> {
        let name = normal_name(host);
        let refused = |reason: String| StoreError::HostRefused {
            host: name.clone(),
            what: what.to_string(),
            reason,
        };
        if self
            .allowed
            .iter()
            .any(|a| matches!(a, Allowed::Name(n) if *n == name))
        {
            return Ok(());
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return match self.denied_range(ip) {
                Some(range) if !self.allows_ip(ip) => {
                    Err(refused(format!("{ip} is in the denied range {range}")))
                }
                _ => Ok(()),
            };
        }
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(refused("it names a cloud metadata service".into()));
        }
        let lookup = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((name.as_str(), port)),
        )
        .await
        .map_err(|_| {
            refused(format!(
                "resolving it took longer than {}s",
                RESOLVE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| refused(format!("it does not resolve ({e})")))?;
        for addr in lookup {
            let ip = addr.ip();
            if let Some(range) = self.denied_range(ip)
                && !self.allows_ip(ip)
            {
                return Err(refused(format!(
                    "it resolves to {ip}, in the denied range {range}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], denied: &[&str]) -> EgressPolicy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        EgressPolicy::new(&s(allowed), &s(denied)).expect("valid policy")
    }

    #[test]
    fn ranges_parse_and_contain() {
        let r: Cidr = "10.96.0.0/12".parse().expect("cidr");
        assert!(r.contains("10.100.1.2".parse().expect("ip")));
        assert!(!r.contains("10.112.0.1".parse().expect("ip")));
        let mapped: IpAddr = "::ffff:169.254.169.254".parse().expect("ip");
        let link_local: Cidr = "169.254.0.0/16".parse().expect("cidr");
        assert!(
            link_local.contains(mapped),
            "IPv4-mapped IPv6 counts as IPv4"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().map(|c| c.to_string()),
            Ok("0.0.0.0/0".into())
        );
    }

    #[tokio::test]
    async fn metadata_loopback_and_configured_ranges_are_refused_by_default() {
        let p = policy(&[], &["10.96.0.0/12", "10.244.0.0/16"]);
        for host in [
            "169.254.169.254",
            "[fd00:ec2::254]",
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.96.0.1",
            "10.244.0.1",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "localhost",
        ] {
            let err = p
                .check_host(host, 80, "spec.data.uri")
                .await
                .expect_err(host);
            let text = err.to_string();
            assert!(text.contains("spec.data.uri"), "{text}");
            assert!(text.contains("not allowed"), "{text}");
        }
        assert!(p.check_host("192.0.2.10", 443, "x").await.is_ok());
        assert!(p.check_host("10.1.2.3", 443, "x").await.is_ok());
    }

    #[tokio::test]
    async fn allowed_hosts_and_ranges_pass_inside_denied_ranges() {
        let p = policy(&["10.244.0.1", "minio.storage.svc"], &["10.244.0.0/16"]);
        assert!(p.check_host("10.244.0.1", 9000, "x").await.is_ok());
        assert!(p.check_host("10.244.0.2", 9000, "x").await.is_err());
        assert!(
            p.check_host("minio.storage.svc", 9000, "x").await.is_ok(),
            "an allowed name is not resolved"
        );
        let p = policy(&["127.0.0.0/8"], &[]);
        assert!(p.check_host("localhost", 80, "x").await.is_ok());
        assert!(EgressPolicy::new(&["10.0.0.0/99".into()], &[]).is_err());
        assert!(EgressPolicy::new(&[], &["not-a-range".into()]).is_err());
    }
}
