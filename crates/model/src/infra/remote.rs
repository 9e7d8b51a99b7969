//! The rest of remote access: terminal tickets in Redis (single use: `GETDEL`), the run queue
//! on apalis, and agents as remote shells (`POST /exec`, the `/pty` WebSocket).

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use maas_shared::kv::{Keyspace, Multiplexed};
use rand::Rng as _;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::domain::errors::ModelError;
use crate::domain::ssh::{
    AgentEndpoint, AgentExecRequest, AgentExecResponse, AgentShell, CommandOutcome, Pty, PtyOutput,
    PtyReader, PtySize, PtyWriter, RemoteCommand, SshFailure, TerminalGrant, TerminalTickets,
};
use crate::domain::task::{RunId, RunQueue};

/// [`TerminalTickets`] in Redis: the key holds the grant for its lifetime, `GETDEL` takes it.
pub struct RedisTickets {
    redis: Multiplexed,
    keys: Keyspace,
}

impl RedisTickets {
    /// Tickets under this deployment's prefix.
    #[must_use]
    pub fn new(redis: Multiplexed, keys: &Keyspace) -> Self {
        Self {
            redis,
            keys: keys.clone(),
        }
    }

    fn key(&self, ticket: &str) -> String {
        // The ticket's digest names the key: a leaked key list reveals no usable ticket.
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(ticket.as_bytes());
        self.keys
            .key(&format!("compute:terminal-ticket:{}", hex::encode(digest)))
    }
}

#[async_trait]
impl TerminalTickets for RedisTickets {
    async fn issue(&self, grant: &TerminalGrant, ttl: Duration) -> Result<String, ModelError> {
        let random: String = rand::rngs::OsRng
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let ticket = format!("mtt_{random}");
        let value = serde_json::to_string(grant).context("encoding a ticket")?;
        let mut conn = self.redis.get().await?;
        let () = redis::cmd("SET")
            .arg(self.key(&ticket))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .context("storing a terminal ticket")?;
        Ok(ticket)
    }

    async fn take(&self, ticket: &str) -> Result<Option<TerminalGrant>, ModelError> {
        let mut conn = self.redis.get().await?;
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.key(ticket))
            .query_async(&mut conn)
            .await
            .context("taking a terminal ticket")?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }
}

/// [`RunQueue`] on the apalis queue of [`crate::jobs::RemoteTaskJob`]; a run is pushed once per
/// key, so a run queued again by the tick's safety net is not run twice (and the run job is
/// idempotent anyway).
pub struct ApalisRunQueue {
    redis: Multiplexed,
    keys: Keyspace,
}

impl ApalisRunQueue {
    /// The queue under this deployment's prefix.
    #[must_use]
    pub fn new(redis: Multiplexed, keys: &Keyspace) -> Self {
        Self {
            redis,
            keys: keys.clone(),
        }
    }
}

#[async_trait]
impl RunQueue for ApalisRunQueue {
    async fn enqueue(&self, run: RunId) -> Result<(), ModelError> {
        let conn = self.redis.get().await?;
        maas_shared::jobs::JobProducer::<crate::jobs::RemoteTaskJob>::new(conn, &self.keys)
            .push(crate::jobs::RemoteTaskJob {
                run_id: run.as_uuid(),
            })
            .await?;
        Ok(())
    }
}

/// [`AgentShell`] over HTTP and WebSocket; refuses link-local and metadata addresses.
pub struct HttpAgentShell {
    client: reqwest::Client,
    connect_timeout: Duration,
}

impl HttpAgentShell {
    /// A client that gives up connecting after `connect_timeout`.
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new(connect_timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(maas_shared::net::RefusingResolver))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .build()
            .context("building the agent shell client")?;
        Ok(Self {
            client,
            connect_timeout,
        })
    }
}

fn unreachable(e: impl std::fmt::Display) -> ModelError {
    ModelError::AgentUnreachable(e.to_string())
}

#[async_trait]
impl AgentShell for HttpAgentShell {
    async fn exec(
        &self,
        agent: &AgentEndpoint,
        command: &RemoteCommand,
    ) -> Result<CommandOutcome, ModelError> {
        let url = format!("{}/exec", agent.url.trim_end_matches('/'));
        let response = self
            .client
            .post(url)
            .bearer_auth(&agent.secret)
            .timeout(command.timeout + Duration::from_secs(15))
            .json(&AgentExecRequest {
                script: command.script.clone(),
                timeout_secs: command.timeout.as_secs().max(1),
                output_limit: command.output_limit,
            })
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(unreachable(format!(
                "the agent answered {} to /exec",
                response.status()
            )));
        }
        let body: AgentExecResponse = response.json().await.map_err(unreachable)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(CommandOutcome {
            exit_code: body.exit_code,
            stdout: b64.decode(body.stdout).map_err(unreachable)?,
            stderr: b64.decode(body.stderr).map_err(unreachable)?,
            stdout_truncated: body.stdout_truncated,
            stderr_truncated: body.stderr_truncated,
            timed_out: body.timed_out,
            duration: Duration::from_millis(body.duration_ms),
        })
    }

    async fn pty(&self, agent: &AgentEndpoint, size: PtySize) -> Result<Pty, ModelError> {
        let base = url::Url::parse(&agent.url).map_err(unreachable)?;
        if base.scheme() != "http" {
            return Err(unreachable(
                "agent terminals need an http:// agent address (no TLS WebSocket client)",
            ));
        }
        let host = base.host_str().unwrap_or_default().to_owned();
        let port = base.port_or_known_default().unwrap_or(80);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(unreachable)?
            .collect();
        let Some(addr) = addrs
            .into_iter()
            .find(|a| !maas_shared::net::is_forbidden_ip(a.ip()))
        else {
            return Err(unreachable("the agent's address is refused"));
        };
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connecting timed out"))?
            .map_err(unreachable)?;
        let ws_url = format!(
            "ws://{}:{port}{}/pty?cols={}&rows={}",
            host,
            base.path().trim_end_matches('/'),
            size.cols,
            size.rows
        );
        let mut request = ws_url.into_client_request().map_err(unreachable)?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", agent.secret)
                .parse()
                .map_err(|_| unreachable("the agent secret is not a header value"))?,
        );
        let (stream, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(unreachable)?;
        let (sink, source) = stream.split();
        Ok(Pty {
            writer: Box::new(AgentPtyWriter {
                sink: Mutex::new(sink),
            }),
            reader: Box::new(AgentPtyReader { source }),
        })
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct AgentPtyWriter {
    sink: Mutex<futures_util::stream::SplitSink<WsStream, Message>>,
}

fn ws_failure(e: impl std::fmt::Display) -> SshFailure {
    SshFailure::Protocol(format!("agent terminal: {e}"))
}

#[async_trait]
impl PtyWriter for AgentPtyWriter {
    async fn write(&self, data: &[u8]) -> Result<(), SshFailure> {
        self.sink
            .lock()
            .await
            .send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
            .await
            .map_err(ws_failure)
    }

    async fn resize(&self, size: PtySize) -> Result<(), SshFailure> {
        let text = serde_json::json!({"type": "resize", "cols": size.cols, "rows": size.rows});
        self.sink
            .lock()
            .await
            .send(Message::text(text.to_string()))
            .await
            .map_err(ws_failure)
    }

    async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }
}

struct AgentPtyReader {
    source: futures_util::stream::SplitStream<WsStream>,
}

#[derive(Deserialize)]
struct AgentEvent {
    r#type: String,
    status: Option<i32>,
}

#[async_trait]
impl PtyReader for AgentPtyReader {
    async fn next(&mut self) -> Option<PtyOutput> {
        loop {
            match self.source.next().await? {
                Ok(Message::Binary(data)) => return Some(PtyOutput::Data(data.to_vec())),
                Ok(Message::Text(text)) => {
                    if let Ok(event) = serde_json::from_str::<AgentEvent>(&text)
                        && event.r#type == "exit"
                    {
                        return Some(PtyOutput::Exit(event.status));
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            }
        }
    }
}
