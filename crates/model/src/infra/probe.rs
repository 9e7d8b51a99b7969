//! Calls from the platform to an agent: refused on link-local and metadata addresses at connect
//! time (the shared resolver), no redirects, short timeouts.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use serde::Deserialize;

use crate::domain::errors::ModelError;
use crate::domain::ports::{AgentHealth, AgentProbe};

/// [`AgentProbe`] over reqwest.
pub struct HttpAgentProbe {
    client: reqwest::Client,
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
        Ok(Self { client })
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
