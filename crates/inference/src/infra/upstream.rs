//! The upstream HTTP client (reqwest): connect, first-byte, idle and total timeouts; the body
//! streams through; dropping it cancels the upstream call.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::StreamExt as _;

use crate::domain::ports::{Upstream, UpstreamFailure, UpstreamRequest, UpstreamResponse};

/// Time limits of upstream calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To connect.
    pub connect: Duration,
    /// Until the response headers.
    pub first_byte: Duration,
    /// Between body chunks.
    pub idle: Duration,
    /// For the whole call.
    pub total: Duration,
}

/// reqwest-based [`Upstream`].
pub struct HttpUpstream {
    client: reqwest::Client,
    timeouts: Timeouts,
}

impl HttpUpstream {
    /// A client with these limits (keep-alive pool, `TCP_NODELAY`).
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new(timeouts: Timeouts) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(RefusingResolver))
            // An upstream API answers; it does not send the call elsewhere (a redirect could
            // point at an address the resolver would have refused).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .context("building the upstream HTTP client")?;
        Ok(Self { client, timeouts })
    }
}

/// Resolves upstream host names with the system resolver, dropping link-local and
/// cloud-metadata addresses (`maas_shared::net`): a name that resolves only to those is not
/// called. IP literals never reach a resolver; `BaseUrl` refuses those.
struct RefusingResolver;

impl reqwest::dns::Resolve for RefusingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if maas_shared::net::is_forbidden_host(&host) {
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
fn allowed_addrs(found: Vec<std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
    found
        .into_iter()
        .filter(|addr| !maas_shared::net::is_forbidden_ip(addr.ip()))
        .collect()
}

fn refused(host: &str) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{host} resolves only to link-local or cloud-metadata addresses: refused").into()
}

fn failure(err: &reqwest::Error) -> UpstreamFailure {
    if err.is_timeout() {
        UpstreamFailure::Timeout
    } else {
        UpstreamFailure::Connect(err.to_string())
    }
}

#[async_trait]
impl Upstream for HttpUpstream {
    async fn post(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamFailure> {
        let mut builder = self
            .client
            .post(&request.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body);
        if let Some(key) = &request.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = tokio::time::timeout(self.timeouts.first_byte, builder.send())
            .await
            .map_err(|_| UpstreamFailure::Timeout)?
            .map_err(|e| failure(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let idle = self.timeouts.idle;
        let stream = Box::pin(response.bytes_stream());
        let body =
            futures_util::stream::unfold((stream, false), move |(mut stream, failed)| async move {
                if failed {
                    return None;
                }
                match tokio::time::timeout(idle, stream.next()).await {
                    Err(_) => Some((Err(UpstreamFailure::Timeout), (stream, true))),
                    Ok(None) => None,
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), (stream, false))),
                    Ok(Some(Err(e))) => {
                        let fail = if e.is_timeout() {
                            UpstreamFailure::Timeout
                        } else {
                            UpstreamFailure::Body(e.to_string())
                        };
                        Some((Err(fail), (stream, true)))
                    }
                }
            })
            .boxed();
        Ok(UpstreamResponse {
            status,
            content_type,
            body,
        })
    }
}

#[cfg(test)]
mod resolver_tests {
    use super::*;

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

    #[tokio::test]
    async fn a_metadata_host_name_is_not_resolved() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "metadata.google.internal".parse().unwrap();
        let err = RefusingResolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
