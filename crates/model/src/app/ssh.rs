//! Servers over SSH (or through their agent when they have no SSH access): the access admins
//! set, host-key pinning, checks, resources, terminal tickets and terminals, and the one way
//! remote commands are run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use maas_shared::clock::Clock;
use maas_shared::paging::PageRequest;
use maas_user::contract::{Actor, Permission};
use serde_json::json;

use crate::domain::deploy_ports::{DeploymentRepository, SecretSealer};
use crate::domain::errors::{Entity, ModelError};
use crate::domain::ports::{Heartbeats, ServerRepository};
use crate::domain::server::{Liveness, NodeStatus, Server, ServerId};
use crate::domain::ssh::{
    AgentEndpoint, AgentShell, CheckDetail, CommandOutcome, CpuFigures, DiskFigures, GpuFigures,
    HostKey, Metric, Probe, Pty, PtySize, RemoteCommand, ResourceSource, Resources, ServerCheck,
    SshAccess, SshAccessDraft, SshConnector, SshCredential, SshFailure, SshRepository, SshSession,
    SshTarget, TerminalGrant, TerminalTickets, parse_df, parse_meminfo, parse_nvidia_smi,
    parse_proc_stat,
};
use crate::domain::task::Via;

/// Tunables of [`SshService`].
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// How long connecting and logging in may take.
    pub connect_timeout: Duration,
    /// How long a terminal ticket stays valid.
    pub ticket_ttl: Duration,
    /// A terminal with no input for this long is closed.
    pub idle_timeout: Duration,
    /// Origins (besides the API's own) a browser may open a terminal from.
    pub allowed_origins: Vec<String>,
    /// How many servers `check-all` and `resources` probe at once.
    pub parallelism: usize,
}

/// The ports [`SshService`] uses.
#[derive(Clone)]
pub struct SshPorts {
    /// Servers (address, agent, last report).
    pub servers: Arc<dyn ServerRepository>,
    /// SSH access and checks.
    pub ssh: Arc<dyn SshRepository>,
    /// The SSH client.
    pub connector: Arc<dyn SshConnector>,
    /// Agents as remote shells.
    pub agents: Arc<dyn AgentShell>,
    /// The agents' sealed secrets.
    pub deployments: Arc<dyn DeploymentRepository>,
    /// Agents' heartbeats.
    pub heartbeats: Arc<dyn Heartbeats>,
    /// Terminal tickets.
    pub tickets: Arc<dyn TerminalTickets>,
    /// Seals credentials.
    pub sealer: Arc<dyn SecretSealer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// A server's SSH access as shown (never the credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessView {
    /// The stored access.
    pub port: u16,
    /// Login user.
    pub username: String,
    /// `password` or `private_key`.
    pub auth: &'static str,
    /// The pinned host key.
    pub host_key: Option<HostKey>,
    /// When it was pinned.
    pub pinned_at: Option<DateTime<Utc>>,
    /// When the access was set.
    pub updated_at: DateTime<Utc>,
}

impl From<&SshAccess> for AccessView {
    fn from(a: &SshAccess) -> Self {
        Self {
            port: a.port,
            username: a.username.clone(),
            auth: a.auth.as_str(),
            host_key: a.host_key.clone(),
            pinned_at: a.pinned_at,
            updated_at: a.updated_at,
        }
    }
}

/// A ticket just issued.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// The ticket (`?ticket=` of the WebSocket URL).
    pub ticket: String,
    /// Until when it can be used.
    pub expires_at: DateTime<Utc>,
    /// How the terminal will reach the server.
    pub via: Via,
}

/// An open terminal and what its audit row needs.
pub struct Terminal {
    /// The grant it was opened with.
    pub grant: TerminalGrant,
    /// How it reached the server.
    pub via: Via,
    /// The pty.
    pub pty: Pty,
    /// The SSH connection it runs in (kept open while the terminal is).
    pub session: Option<Box<dyn SshSession>>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
}

/// What a terminal session amounted to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalTotals {
    /// Bytes typed.
    pub bytes_in: u64,
    /// Bytes shown.
    pub bytes_out: u64,
}

/// SSH access, checks, resources, terminals and remote commands.
#[derive(Clone)]
pub struct SshService {
    ports: SshPorts,
    config: SshConfig,
    liveness: Liveness,
}

/// Whether a browser at `origin` may open a terminal on an API reached as `host`.
#[must_use]
pub fn origin_allowed(origin: Option<&str>, host: &str, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        // Not a browser: nothing can ride on a user's session, and the ticket is required.
        return true;
    };
    let same_host = origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host);
    same_host
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

impl SshService {
    /// The service.
    #[must_use]
    pub fn new(ports: SshPorts, config: SshConfig, liveness: Liveness) -> Self {
        Self {
            ports,
            config,
            liveness,
        }
    }

    /// The tunables.
    #[must_use]
    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    fn admin(actor: &Actor<'_>) -> Result<(), ModelError> {
        Ok(actor.require(Permission::ManageServers)?)
    }

    async fn server(&self, id: ServerId) -> Result<Server, ModelError> {
        self.ports
            .servers
            .get(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Server))
    }

    /// Sets (or replaces) a server's SSH access; the credential is sealed.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; an unreadable key.
    #[tracing::instrument(name = "ssh.set_access", skip_all, fields(server.id = %id))]
    pub async fn set_access(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
        draft: &SshAccessDraft,
    ) -> Result<AccessView, ModelError> {
        Self::admin(actor)?;
        self.server(id).await?;
        let spec = draft.parse().map_err(ModelError::Invalid)?;
        if let SshCredential::PrivateKey { key, passphrase } = &spec.credential {
            self.ports
                .connector
                .check_key(key, passphrase.as_deref())
                .map_err(|_| {
                    ModelError::Invalid(vec![crate::domain::errors::InvalidValue::new(
                        "private_key",
                        "a private key in OpenSSH or PEM format that opens with the passphrase given",
                    )])
                })?;
        }
        let sealed = self.ports.sealer.seal(
            &serde_json::to_string(&spec.credential)
                .map_err(|e| ModelError::Unexpected(e.into()))?,
        );
        let now = self.ports.clock.now();
        let access = SshAccess {
            server_id: id,
            port: spec.port,
            username: spec.username,
            auth: spec.credential.kind(),
            sealed,
            host_key: None,
            pinned_at: None,
            updated_at: now,
        };
        let audit = actor.event(
            "server.ssh.set",
            "server",
            Some(id.to_string()),
            json!({"port": access.port, "username": access.username, "auth": access.auth.as_str()}),
        );
        self.ports.ssh.put(&access, audit).await?;
        self.access(actor, id).await
    }

    /// A server's SSH access.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`] (also when none is set).
    pub async fn access(&self, actor: &Actor<'_>, id: ServerId) -> Result<AccessView, ModelError> {
        Self::admin(actor)?;
        self.server(id).await?;
        let access = self
            .ports
            .ssh
            .get(id)
            .await?
            .ok_or(ModelError::NoRemoteAccess)?;
        Ok(AccessView::from(&access))
    }

    /// Removes a server's SSH access.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn delete_access(&self, actor: &Actor<'_>, id: ServerId) -> Result<(), ModelError> {
        Self::admin(actor)?;
        self.server(id).await?;
        let audit = actor.event(
            "server.ssh.delete",
            "server",
            Some(id.to_string()),
            json!({}),
        );
        self.ports.ssh.delete(id, audit).await
    }

    /// Pins the host key the server presents now (after an admin checked the change).
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; [`ModelError::NoRemoteAccess`]; SSH failures.
    #[tracing::instrument(name = "ssh.repin", skip_all, fields(server.id = %id))]
    pub async fn repin(&self, actor: &Actor<'_>, id: ServerId) -> Result<AccessView, ModelError> {
        Self::admin(actor)?;
        let server = self.server(id).await?;
        let access = self
            .ports
            .ssh
            .get(id)
            .await?
            .ok_or(ModelError::NoRemoteAccess)?;
        let mut target = self.target(&server, &access)?;
        target.pinned = None;
        let session = self.ports.connector.connect(&target).await?;
        let key = session.host_key().clone();
        session.close().await;
        let audit = actor.event(
            "server.ssh.repin",
            "server",
            Some(id.to_string()),
            json!({
                "previous": access.host_key.as_ref().map(|k| &k.fingerprint),
                "fingerprint": key.fingerprint,
            }),
        );
        self.ports
            .ssh
            .repin(id, &key, self.ports.clock.now(), audit)
            .await?;
        self.access(actor, id).await
    }

    fn target(&self, server: &Server, access: &SshAccess) -> Result<SshTarget, ModelError> {
        let opened = self.ports.sealer.open(&access.sealed)?;
        let credential: SshCredential = serde_json::from_str(&opened).map_err(|_| {
            ModelError::Unexpected(anyhow::anyhow!("a stored SSH credential does not parse"))
        })?;
        Ok(SshTarget {
            host: server.spec().address().to_owned(),
            port: access.port,
            username: access.username.clone(),
            credential,
            pinned: access.host_key.clone(),
            timeout: self.config.connect_timeout,
        })
    }

    /// Connects to a server with its stored access, pinning the key on the first success.
    async fn connect(
        &self,
        server: &Server,
        access: &SshAccess,
    ) -> Result<Box<dyn SshSession>, ModelError> {
        let target = self.target(server, access)?;
        let session = self.ports.connector.connect(&target).await?;
        if access.host_key.is_none() {
            let presented = session.host_key().clone();
            let pinned = self
                .ports
                .ssh
                .pin_first(server.id(), &presented, self.ports.clock.now())
                .await?;
            if let Some(pinned) = pinned
                && pinned != presented
            {
                // Another connection pinned a different key in between: trust neither.
                session.close().await;
                return Err(SshFailure::HostKeyChanged {
                    pinned: pinned.fingerprint,
                    presented: presented.fingerprint,
                }
                .into());
            }
            tracing::info!(server.id = %server.id(), fingerprint = %presented.fingerprint, "host key pinned at the first connection");
        }
        Ok(session)
    }

    async fn agent_endpoint(&self, server: &Server) -> Result<Option<AgentEndpoint>, ModelError> {
        let Some(url) = server.agent().and_then(|a| a.callable_url()) else {
            return Ok(None);
        };
        let Some(sealed) = self.ports.deployments.agent_secret(server.id()).await? else {
            return Ok(None);
        };
        Ok(Some(AgentEndpoint {
            url: url.to_owned(),
            secret: self.ports.sealer.open(&sealed)?,
        }))
    }

    /// Runs `command` on a server: over SSH when it has access, else through its agent.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::NoRemoteAccess`]; SSH and agent failures.
    pub async fn exec(
        &self,
        id: ServerId,
        command: &RemoteCommand,
    ) -> Result<(Via, CommandOutcome), ModelError> {
        let server = self.server(id).await?;
        if let Some(access) = self.ports.ssh.get(id).await? {
            let session = self.connect(&server, &access).await?;
            let outcome = session.exec(command).await;
            session.close().await;
            return Ok((Via::Ssh, outcome?));
        }
        let agent = self
            .agent_endpoint(&server)
            .await?
            .ok_or(ModelError::NoRemoteAccess)?;
        Ok((Via::Agent, self.ports.agents.exec(&agent, command).await?))
    }

    /// Checks one server: TCP to sshd, an SSH login, the agent's heartbeat.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn check(&self, actor: &Actor<'_>, id: ServerId) -> Result<ServerCheck, ModelError> {
        Self::admin(actor)?;
        let server = self.server(id).await?;
        self.check_one(&server).await
    }

    /// Checks every server (a few at a time).
    ///
    /// # Errors
    /// Forbidden; storage failures.
    pub async fn check_all(&self, actor: &Actor<'_>) -> Result<Vec<ServerCheck>, ModelError> {
        Self::admin(actor)?;
        let servers = self.all_servers().await?;
        self.each(servers, |s| async move { self.check_one(&s).await })
            .await
    }

    /// The agent's grade now (its last heartbeat against the liveness rules).
    async fn grade(&self, server: &Server) -> Result<crate::domain::server::Grade, ModelError> {
        let seen = self
            .ports
            .heartbeats
            .last_seen(&[server.id()])
            .await?
            .pop()
            .flatten();
        Ok(server.effective(seen, &self.liveness, self.ports.clock.now()))
    }

    /// `probe` on every server, `parallelism` at a time, in the servers' order.
    async fn each<T, F, Fut>(&self, servers: Vec<Server>, probe: F) -> Result<Vec<T>, ModelError>
    where
        F: Fn(Server) -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let results: Vec<Result<T, ModelError>> = futures_util::stream::iter(servers)
            .map(probe)
            .buffered(self.config.parallelism.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn all_servers(&self) -> Result<Vec<Server>, ModelError> {
        let mut out = Vec::new();
        let mut page = PageRequest::parse(Some(100), None)
            .map_err(|e| ModelError::Unexpected(anyhow::anyhow!("{e}")))?;
        loop {
            let batch = self.ports.servers.list(&page).await?;
            out.extend(batch.items);
            match batch.next {
                Some(next) => {
                    page = PageRequest::parse(Some(100), Some(&next.encode()))
                        .map_err(|e| ModelError::Unexpected(anyhow::anyhow!("{e}")))?;
                }
                None => return Ok(out),
            }
        }
    }

    async fn check_one(&self, server: &Server) -> Result<ServerCheck, ModelError> {
        let access = self.ports.ssh.get(server.id()).await?;
        let port = access.as_ref().map_or(22, |a| a.port);
        let tcp = match self
            .ports
            .connector
            .tcp_probe(server.spec().address(), port, self.config.connect_timeout)
            .await
        {
            Ok(latency) => Probe::ok(latency),
            Err(e) => Probe::failed("tcp_unreachable", e.to_string()),
        };
        let ssh = match &access {
            None => None,
            Some(access) => {
                let started = Instant::now();
                Some(match self.connect(server, access).await {
                    Ok(session) => {
                        session.close().await;
                        Probe::ok(started.elapsed())
                    }
                    Err(ModelError::Ssh(failure)) => {
                        Probe::failed(failure.code(), failure.to_string())
                    }
                    // Anything else (a credential sealed under another platform key, the store
                    // failing) fails this probe only; the other servers are still checked.
                    Err(other) => {
                        tracing::warn!(server.id = %server.id(), error = %other, "an SSH probe could not run");
                        Probe::failed(
                            maas_shared::error::Classify::code(&other),
                            "the platform could not open this server's SSH access",
                        )
                    }
                })
            }
        };
        let agent = if server.agent().is_some() {
            let grade = self.grade(server).await?;
            Some(if grade.status == NodeStatus::Ready {
                Probe {
                    ok: true,
                    latency_ms: None,
                    error: None,
                }
            } else {
                Probe::failed(
                    "agent_not_ready",
                    grade
                        .reason
                        .unwrap_or_else(|| format!("the agent is {}", grade.status.as_str())),
                )
            })
        } else {
            None
        };
        let detail = CheckDetail { tcp, ssh, agent };
        let check = ServerCheck {
            server_id: server.id(),
            status: detail.status(),
            checked_at: self.ports.clock.now(),
            latency_ms: detail
                .ssh
                .as_ref()
                .and_then(|p| p.latency_ms)
                .or(detail.tcp.latency_ms),
            detail,
        };
        self.ports.ssh.save_check(&check).await?;
        Ok(check)
    }

    /// A server's last stored check.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`] (the server, or a check).
    pub async fn last_check(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
    ) -> Result<ServerCheck, ModelError> {
        Self::admin(actor)?;
        self.server(id).await?;
        self.ports
            .ssh
            .checks(&[id])
            .await?
            .pop()
            .ok_or(ModelError::NotFound(Entity::Check))
    }

    /// The last check of each of `servers`.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn last_checks(&self, servers: &[ServerId]) -> Result<Vec<ServerCheck>, ModelError> {
        self.ports.ssh.checks(servers).await
    }

    /// A server's CPU, memory, disks and GPUs.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn resources(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
    ) -> Result<Resources, ModelError> {
        Self::admin(actor)?;
        let server = self.server(id).await?;
        self.resources_of(&server).await
    }

    /// The resources of `ids` (every server when empty).
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`] for an unknown id.
    pub async fn resources_many(
        &self,
        actor: &Actor<'_>,
        ids: &[ServerId],
    ) -> Result<Vec<Resources>, ModelError> {
        Self::admin(actor)?;
        let servers = if ids.is_empty() {
            self.all_servers().await?
        } else {
            let mut servers = Vec::with_capacity(ids.len());
            for id in ids {
                servers.push(self.server(*id).await?);
            }
            servers
        };
        self.each(servers, |s| async move { self.resources_of(&s).await })
            .await
    }

    async fn resources_of(&self, server: &Server) -> Result<Resources, ModelError> {
        let now = self.ports.clock.now();
        let live = self.grade(server).await?.status == NodeStatus::Ready;
        if live && let Some((report, at)) = server.report() {
            return Ok(Resources {
                server_id: server.id(),
                source: ResourceSource::Agent,
                read_at: Some(*at),
                cpu: Metric::Value(CpuFigures {
                    cores: report.cpu_cores,
                    usage_percent: report.cpu_usage_percent,
                }),
                memory: Metric::Value(crate::domain::ssh::MemoryFigures {
                    total_bytes: report.memory_total_bytes,
                    used_bytes: report.memory_used_bytes,
                }),
                disks: Metric::Value(
                    report
                        .disks
                        .iter()
                        .map(|d| DiskFigures {
                            mount: d.mount.clone(),
                            total_bytes: d.total_bytes,
                            available_bytes: d.available_bytes,
                        })
                        .collect(),
                ),
                gpus: Metric::Value(
                    report
                        .gpus
                        .iter()
                        .map(|g| GpuFigures {
                            index: g.index,
                            name: g.name.clone(),
                            memory_total_mib: g.memory_total_mib,
                            memory_used_mib: g.memory_used_mib,
                            utilization_percent: g.utilization_percent,
                        })
                        .collect(),
                ),
            });
        }
        let Some(access) = self.ports.ssh.get(server.id()).await? else {
            return Ok(Resources::all_failed(
                server.id(),
                ResourceSource::None,
                None,
                "no_remote_access",
                "no SSH access and no report from a live agent",
            ));
        };
        let session = match self.connect(server, &access).await {
            Ok(session) => session,
            Err(e) => {
                let (code, message) = if let ModelError::Ssh(failure) = &e {
                    (failure.code(), failure.to_string())
                } else {
                    tracing::warn!(server.id = %server.id(), error = %e, "SSH access could not be opened");
                    (
                        maas_shared::error::Classify::code(&e),
                        "the platform could not open this server's SSH access".to_owned(),
                    )
                };
                return Ok(Resources::all_failed(
                    server.id(),
                    ResourceSource::Ssh,
                    Some(now),
                    code,
                    &message,
                ));
            }
        };
        let run = |script: &str| RemoteCommand {
            script: script.to_owned(),
            timeout: Duration::from_secs(10),
            output_limit: 256 * 1024,
        };
        let cpu = read(
            session.as_ref(),
            &run("nproc; cat /proc/stat; sleep 0.25; cat /proc/stat"),
            |out| {
                let cores: u32 = out.lines().next()?.trim().parse().ok()?;
                let (first, second) = out.split_once("\ncpu ")?.1.split_once("\ncpu ")?;
                let (busy1, total1) = parse_proc_stat(&format!("cpu {first}"))?;
                let (busy2, total2) = parse_proc_stat(&format!("cpu {second}"))?;
                let total = total2.saturating_sub(total1).max(1);
                #[expect(clippy::cast_precision_loss, reason = "jiffies stay far below 2^52")]
                let usage = busy2.saturating_sub(busy1) as f64 * 100.0 / total as f64;
                Some(CpuFigures {
                    cores,
                    usage_percent: usage.clamp(0.0, 100.0),
                })
            },
        )
        .await;
        let memory = read(session.as_ref(), &run("cat /proc/meminfo"), parse_meminfo).await;
        let disks = read(
            session.as_ref(),
            &run("df -P -B1 -l -x tmpfs -x devtmpfs -x squashfs -x overlay"),
            parse_df,
        )
        .await;
        let gpus = match session
            .exec(&run(
                "command -v nvidia-smi >/dev/null || exit 127; nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits",
            ))
            .await
        {
            // No nvidia-smi: a server without NVIDIA GPUs.
            Ok(out) if out.exit_code == Some(127) => Metric::Value(Vec::new()),
            Ok(out) => parsed(&out, parse_nvidia_smi),
            Err(e) => Metric::failed(e.code(), e.to_string()),
        };
        session.close().await;
        Ok(Resources {
            server_id: server.id(),
            source: ResourceSource::Ssh,
            read_at: Some(now),
            cpu,
            memory,
            disks,
            gpus,
        })
    }

    /// Issues a single-use ticket that opens a terminal on the server.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; [`ModelError::NoRemoteAccess`]; a bad
    /// `auto_command` or size.
    pub async fn issue_ticket(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
        auto_command: Option<String>,
        size: PtySize,
        ip: Option<String>,
    ) -> Result<Ticket, ModelError> {
        Self::admin(actor)?;
        let server = self.server(id).await?;
        if auto_command
            .as_ref()
            .is_some_and(|c| c.chars().count() > 4096 || c.contains('\0'))
        {
            return Err(ModelError::Invalid(vec![
                crate::domain::errors::InvalidValue::new(
                    "auto_command",
                    "at most 4096 characters, without NUL",
                ),
            ]));
        }
        let via = if self.ports.ssh.get(id).await?.is_some() {
            Via::Ssh
        } else if self.agent_endpoint(&server).await?.is_some() {
            Via::Agent
        } else {
            return Err(ModelError::NoRemoteAccess);
        };
        let user_id = actor
            .user_id()
            .map(|u| u.as_uuid())
            .ok_or(ModelError::Identity(
                maas_user::contract::IdentityError::Forbidden(Permission::ManageServers),
            ))?;
        let grant = TerminalGrant {
            server_id: id,
            user_id,
            ip,
            auto_command: auto_command.filter(|c| !c.trim().is_empty()),
            size,
        };
        let ticket = self
            .ports
            .tickets
            .issue(&grant, self.config.ticket_ttl)
            .await?;
        let expires_at = self.ports.clock.now()
            + chrono::Duration::from_std(self.config.ticket_ttl).unwrap_or_default();
        Ok(Ticket {
            ticket,
            expires_at,
            via,
        })
    }

    /// Takes a ticket and opens the terminal it grants.
    ///
    /// # Errors
    /// [`ModelError::InvalidTicket`]; [`ModelError::NotFound`]; [`ModelError::NoRemoteAccess`];
    /// SSH and agent failures.
    #[tracing::instrument(name = "ssh.open_terminal", skip_all)]
    pub async fn open_terminal(&self, ticket: &str) -> Result<Terminal, ModelError> {
        if ticket.is_empty() || ticket.len() > 128 {
            return Err(ModelError::InvalidTicket);
        }
        let grant = self
            .ports
            .tickets
            .take(ticket)
            .await?
            .ok_or(ModelError::InvalidTicket)?;
        let server = self.server(grant.server_id).await?;
        let opened_at = self.ports.clock.now();
        if let Some(access) = self.ports.ssh.get(server.id()).await? {
            let session = self.connect(&server, &access).await?;
            let pty = match session.shell(grant.size).await {
                Ok(pty) => pty,
                Err(e) => {
                    session.close().await;
                    return Err(e.into());
                }
            };
            return Ok(Terminal {
                grant,
                via: Via::Ssh,
                pty,
                session: Some(session),
                opened_at,
            });
        }
        let agent = self
            .agent_endpoint(&server)
            .await?
            .ok_or(ModelError::NoRemoteAccess)?;
        let pty = self.ports.agents.pty(&agent, grant.size).await?;
        Ok(Terminal {
            grant,
            via: Via::Agent,
            pty,
            session: None,
            opened_at,
        })
    }

    /// Records a terminal session that ended (who, when, how long, bytes; never its content).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn audit_terminal(
        &self,
        grant: &TerminalGrant,
        via: Via,
        opened_at: DateTime<Utc>,
        totals: TerminalTotals,
        ended_by: &str,
    ) -> Result<(), ModelError> {
        let ended_at = self.ports.clock.now();
        let event = maas_shared::audit::NewAuditEvent {
            context: maas_shared::audit::ActionContext {
                actor: Some(grant.user_id),
                request_id: None,
                ip: grant.ip.clone(),
            },
            action: "server.terminal".to_owned(),
            target_type: "server".to_owned(),
            target_id: Some(grant.server_id.to_string()),
            details: json!({
                "via": via.as_str(),
                "opened_at": opened_at,
                "ended_at": ended_at,
                "duration_ms": (ended_at - opened_at).num_milliseconds().max(0),
                "bytes_in": totals.bytes_in,
                "bytes_out": totals.bytes_out,
                "auto_command": grant.auto_command.is_some(),
                "ended_by": ended_by,
            }),
        };
        self.ports.ssh.record(event).await
    }
}

/// Runs `command` and parses its output with `parse`; any failure is that figure's own.
async fn read<T>(
    session: &dyn SshSession,
    command: &RemoteCommand,
    parse: impl Fn(&str) -> Option<T>,
) -> Metric<T> {
    match session.exec(command).await {
        Ok(out) => parsed(&out, parse),
        Err(e) => Metric::failed(e.code(), e.to_string()),
    }
}

fn parsed<T>(out: &CommandOutcome, parse: impl Fn(&str) -> Option<T>) -> Metric<T> {
    if out.exit_code != Some(0) {
        return Metric::failed(
            "command_failed",
            format!(
                "exited {}: {}",
                out.exit_code
                    .map_or_else(|| "by a signal".to_owned(), |c| c.to_string()),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout)).map_or_else(
        || Metric::failed("unparsable", "the output did not parse"),
        Metric::Value,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_itself_and_configured_origins_open_terminals() {
        let allowed = vec!["https://console.example.com".to_owned()];
        assert!(origin_allowed(None, "api:8080", &allowed));
        assert!(origin_allowed(
            Some("http://api:8080"),
            "api:8080",
            &allowed
        ));
        assert!(origin_allowed(
            Some("https://console.example.com"),
            "api:8080",
            &allowed
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            "api:8080",
            &allowed
        ));
        assert!(!origin_allowed(
            Some("http://api:8080.evil"),
            "api:8080",
            &allowed
        ));
        assert!(!origin_allowed(Some("null"), "api:8080", &[]));
    }
}
