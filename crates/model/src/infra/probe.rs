//! Calls from the platform to an agent: refused on link-local and metadata addresses at connect
//! time (the shared resolver), no redirects, short timeouts.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use serde::Deserialize;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use crate::domain::deploy_ports::AgentLogs;
use crate::domain::deployment::InstanceId;
use crate::domain::errors::{Entity, ModelError};
use crate::domain::ports::{AgentHealth, AgentProbe};

/// [`AgentProbe`] over reqwest.
pub struct HttpAgentProbe {
    client: reqwest::Client,
    /// For log streams: the same rules, but no total timeout (a followed log lasts).
    streams: reqwest::Client,
}

impl HttpAgentProbe {
    /// A client that gives up after `timeout`.
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(maas_shared::net::RefusingResolver))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .context("building the agent HTTP client")?;
        let streams = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(maas_shared::net::RefusingResolver))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .read_timeout(Duration::from_secs(300))
            .build()
            .context("building the agent HTTP client")?;
        Ok(Self { client, streams })
    }
}

#[derive(Deserialize)]
struct Health {
    status: String,
    version: String,
}

#[async_trait]
impl AgentProbe for HttpAgentProbe {
    async fn health(&self, url: &str) -> Result<AgentHealth, ModelError> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{url}/health"))
            .send()
            .await
            .map_err(|e| ModelError::AgentUnreachable(without_url(&e)))?;
        if !response.status().is_success() {
            return Err(ModelError::AgentUnreachable(format!(
                "it answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let health: Health = response.json().await.map_err(|_| {
            ModelError::AgentUnreachable("its answer is not an agent's health document".into())
        })?;
        Ok(AgentHealth {
            status: health.status.chars().take(64).collect(),
            version: health.version.chars().take(64).collect(),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

#[async_trait]
impl AgentLogs for HttpAgentProbe {
    async fn logs(
        &self,
        url: &str,
        secret: &str,
        instance: InstanceId,
        tail: u32,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ModelError> {
        let response = self
            .streams
            .get(format!("{url}/instances/{instance}/logs"))
            .query(&[("tail", tail.to_string()), ("follow", follow.to_string())])
            .bearer_auth(secret)
            .send()
            .await
            .map_err(|e| ModelError::AgentUnreachable(without_url(&e)))?;
        match response.status().as_u16() {
            200 => Ok(response
                .bytes_stream()
                .map(|chunk| chunk.map_err(std::io::Error::other))
                .boxed()),
            404 => Err(ModelError::NotFound(Entity::Instance)),
            401 | 403 => Err(ModelError::AgentUnreachable(
                "the agent refused the platform's secret (it joined again?)".into(),
            )),
            status => Err(ModelError::AgentUnreachable(format!(
                "it answered HTTP {status}"
            ))),
        }
    }
}

/// The error's kind without echoing what reqwest adds.
fn without_url(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection refused or address not allowed".into()
    } else {
        "request failed".into()
    }
}
