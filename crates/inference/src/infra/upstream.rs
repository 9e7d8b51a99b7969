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
            .dns_resolver(std::sync::Arc::new(maas_shared::net::RefusingResolver))
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
