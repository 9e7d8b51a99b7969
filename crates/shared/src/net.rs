//! Where the platform's outbound calls may not go: link-local addresses (among them every
//! cloud's instance-metadata endpoint, 169.254.169.254) and the other metadata endpoints clouds
//! publish. Loopback and private networks stay allowed: GPU servers and self-hosted engines
//! live there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services (compared without a trailing dot, ASCII
/// case-insensitively).
const METADATA_HOSTS: [&str; 5] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
];

/// Whether an outbound call to `ip` must be refused.
#[must_use]
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    // 169.254.0.0/16 (link-local; AWS, GCP, Azure, OpenStack metadata), 0.0.0.0/8, and
    // Alibaba Cloud's metadata address.
    ip.is_link_local() || ip.octets()[0] == 0 || ip == Ipv4Addr::new(100, 100, 100, 200)
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
    // AWS's IPv6 metadata address.
    let aws = ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    link_local || aws || ip.is_unspecified()
}

/// Whether `host` (a name or an IP literal, IPv6 with or without brackets) names a place an
/// outbound call must not go.
#[must_use]
pub fn is_forbidden_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_forbidden_ip(ip);
    }
    let name = host.trim_end_matches('.');
    METADATA_HOSTS
        .iter()
        .any(|known| name.eq_ignore_ascii_case(known))
}

/// Why a URL the platform would call is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundUrlError {
    /// Not an `http(s)://` URL with a host and without credentials, or longer than allowed.
    Malformed,
    /// Its host is a link-local or cloud-metadata address.
    Forbidden,
}

/// The checks every URL the platform calls passes (upstreams, model downloads, agents): at most
/// `max_chars` characters once trimmed, `http` or `https`, a host, no credentials, and a host
/// that [`is_forbidden_host`] allows. Callers add their own rules (path, query) on the result.
///
/// # Errors
/// [`OutboundUrlError`].
pub fn outbound_url(raw: &str, max_chars: usize) -> Result<url::Url, OutboundUrlError> {
    let raw = raw.trim();
    if raw.chars().count() > max_chars {
        return Err(OutboundUrlError::Malformed);
    }
    let url = url::Url::parse(raw).map_err(|_| OutboundUrlError::Malformed)?;
    let acceptable = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none();
    let host = url
        .host_str()
        .filter(|_| acceptable)
        .ok_or(OutboundUrlError::Malformed)?;
    if is_forbidden_host(host) {
        return Err(OutboundUrlError::Forbidden);
    }
    Ok(url)
}

/// A reqwest resolver that uses the system's, dropping link-local and cloud-metadata addresses:
/// a name that resolves only to those is not called (checked on the resolved IP, at connect
/// time). IP literals never reach a resolver: check them with [`is_forbidden_host`] first.
#[cfg(feature = "infra")]
#[derive(Clone, Copy, Debug, Default)]
pub struct RefusingResolver;

#[cfg(feature = "infra")]
impl reqwest::dns::Resolve for RefusingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if is_forbidden_host(&host) {
                return Err(refused(&host));
            }
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_addrs(found);
            if allowed.is_empty() {
                return Err(refused(&host));
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses an outbound call may use.
#[cfg(feature = "infra")]
fn allowed_addrs(found: Vec<std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
    found
        .into_iter()
        .filter(|addr| !is_forbidden_ip(addr.ip()))
        .collect()
}

#[cfg(feature = "infra")]
fn refused(host: &str) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{host} resolves only to link-local or cloud-metadata addresses: refused").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_refused_and_private_networks_are_not() {
        for host in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "100.100.100.200",
            "[fe80::1]",
            "fe80::1%eth0".split('%').next().unwrap(),
            "[fd00:ec2::254]",
            "[::ffff:169.254.169.254]",
            "[::]",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
        ] {
            assert!(is_forbidden_host(host), "{host}");
        }
        for host in [
            "127.0.0.1",
            "10.0.0.5",
            "192.168.1.10",
            "172.16.0.1",
            "100.64.0.1",
            "[::1]",
            "[fd00::1]",
            "gpu.local",
            "api.openai.com",
            "metadata.example.com",
        ] {
            assert!(!is_forbidden_host(host), "{host}");
        }
    }

    #[test]
    fn outbound_urls_are_http_with_a_host_no_credentials_and_no_metadata() {
        assert!(outbound_url(" https://api.example.com/v1 ", 100).is_ok());
        for bad in [
            "ftp://x",
            "http://u:p@x",
            "not a url",
            "http://x/".repeat(30).as_str(),
        ] {
            assert_eq!(
                outbound_url(bad, 100).err(),
                Some(OutboundUrlError::Malformed),
                "{bad}"
            );
        }
        for bad in [
            "http://169.254.169.254/",
            "http://[fe80::1]:80",
            "http://metadata.google.internal",
        ] {
            assert_eq!(
                outbound_url(bad, 100).err(),
                Some(OutboundUrlError::Forbidden),
                "{bad}"
            );
        }
    }

    #[cfg(feature = "infra")]
    #[test]
    fn link_local_and_metadata_addresses_are_dropped_from_what_a_name_resolves_to() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let found = vec![
            addr("169.254.169.254:0"),
            addr("10.0.0.7:0"),
            addr("[fe80::1]:0"),
            addr("[::1]:0"),
        ];
        assert_eq!(
            allowed_addrs(found),
            vec![addr("10.0.0.7:0"), addr("[::1]:0")]
        );
        assert!(allowed_addrs(vec![addr("169.254.1.1:0")]).is_empty());
    }

    #[cfg(feature = "infra")]
    #[tokio::test]
    async fn a_metadata_host_name_is_not_resolved() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "metadata.google.internal".parse().unwrap();
        let err = RefusingResolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
