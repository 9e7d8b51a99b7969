//! A server's SSH access (credential sealed, host key pinned at the first connection), what a
//! connection does for the platform (run a command, open a terminal), and the ports it goes
//! through.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::errors::{InvalidValue, ModelError};
use super::server::ServerId;

/// The longest password accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The largest private key accepted (an RSA-8192 key in PEM is under 7 KiB).
pub const MAX_PRIVATE_KEY_BYTES: usize = 16 * 1024;

/// How the platform proves itself to the server's sshd.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SshCredential {
    /// A password.
    Password {
        /// The password.
        password: String,
    },
    /// An OpenSSH or PEM private key, optionally encrypted.
    PrivateKey {
        /// The key's text.
        key: String,
        /// Its passphrase.
        passphrase: Option<String>,
    },
}

impl fmt::Debug for SshCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())
    }
}

impl SshCredential {
    /// Which kind it is.
    #[must_use]
    pub const fn kind(&self) -> AuthKind {
        match self {
            Self::Password { .. } => AuthKind::Password,
            Self::PrivateKey { .. } => AuthKind::PrivateKey,
        }
    }
}

/// The kind of a credential (what is shown; the secret never is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Password authentication.
    Password,
    /// Public-key authentication.
    PrivateKey,
}

impl AuthKind {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::PrivateKey => "private_key",
        }
    }

    /// The kind of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Password, Self::PrivateKey]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// What an admin gives for a server's SSH access.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SshAccessDraft {
    /// sshd's port (22 when absent).
    pub port: Option<i64>,
    /// The login user.
    pub username: String,
    /// A password (exactly one of `password` and `private_key`).
    pub password: Option<String>,
    /// A private key's text.
    pub private_key: Option<String>,
    /// The private key's passphrase.
    pub passphrase: Option<String>,
}

impl fmt::Debug for SshAccessDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshAccessDraft")
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Validated SSH access, not stored yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshAccessSpec {
    /// sshd's port.
    pub port: u16,
    /// The login user.
    pub username: String,
    /// The credential.
    pub credential: SshCredential,
}

fn no_control(s: &str) -> bool {
    !s.chars().any(|c| c == '\0')
}

impl SshAccessDraft {
    /// Validates every field (the key's format is checked by the SSH client).
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self) -> Result<SshAccessSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let port = match self.port {
            None => Some(22),
            Some(p) => u16::try_from(p).ok().filter(|p| *p > 0),
        };
        if port.is_none() {
            errors.push(InvalidValue::new("port", "a port from 1 to 65535"));
        }
        let username = self.username.trim();
        let user_ok = (1..=64).contains(&username.len())
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            && !username.starts_with('-');
        if !user_ok {
            errors.push(InvalidValue::new(
                "username",
                "1 to 64 characters of letters, digits, '-', '_', '.' or '@', not starting with '-'",
            ));
        }
        let credential = match (&self.password, &self.private_key) {
            (Some(password), None) => {
                if password.is_empty()
                    || password.len() > MAX_PASSWORD_BYTES
                    || !no_control(password)
                {
                    errors.push(InvalidValue::new(
                        "password",
                        "1 to 1024 bytes, without NUL",
                    ));
                }
                if self.passphrase.is_some() {
                    errors.push(InvalidValue::new("passphrase", "only with a private_key"));
                }
                Some(SshCredential::Password {
                    password: password.clone(),
                })
            }
            (None, Some(key)) => {
                if key.trim().is_empty() || key.len() > MAX_PRIVATE_KEY_BYTES || !no_control(key) {
                    errors.push(InvalidValue::new(
                        "private_key",
                        "a private key in OpenSSH or PEM format, at most 16 KiB",
                    ));
                }
                if self
                    .passphrase
                    .as_ref()
                    .is_some_and(|p| p.len() > MAX_PASSWORD_BYTES || !no_control(p))
                {
                    errors.push(InvalidValue::new(
                        "passphrase",
                        "at most 1024 bytes, without NUL",
                    ));
                }
                Some(SshCredential::PrivateKey {
                    key: key.clone(),
                    passphrase: self.passphrase.clone(),
                })
            }
            (Some(_), Some(_)) | (None, None) => {
                errors.push(InvalidValue::new(
                    "password",
                    "give exactly one of password and private_key",
                ));
                None
            }
        };
        match (port, credential) {
            (Some(port), Some(credential)) if errors.is_empty() => Ok(SshAccessSpec {
                port,
                username: username.to_owned(),
                credential,
            }),
            _ => Err(errors),
        }
    }
}

/// A server's host key as pinned (or as just presented).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// Its algorithm (`ssh-ed25519`, `rsa-sha2-512`, …).
    pub algorithm: String,
    /// `SHA256:` and the unpadded base64 of its SHA-256, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// A server's stored SSH access (the credential stays sealed here).
#[derive(Clone, PartialEq, Eq)]
pub struct SshAccess {
    /// The server.
    pub server_id: ServerId,
    /// sshd's port.
    pub port: u16,
    /// The login user.
    pub username: String,
    /// The credential's kind.
    pub auth: AuthKind,
    /// The credential, sealed with the platform key.
    pub sealed: Vec<u8>,
    /// The pinned host key, once a connection succeeded.
    pub host_key: Option<HostKey>,
    /// When it was pinned.
    pub pinned_at: Option<DateTime<Utc>>,
    /// When the access was set.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for SshAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshAccess")
            .field("server_id", &self.server_id)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("auth", &self.auth)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

/// Where and as whom to connect, with the key the server must present.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub username: String,
    /// The opened credential.
    pub credential: SshCredential,
    /// The pinned key; `None` accepts the first key presented (which is then pinned).
    pub pinned: Option<HostKey>,
    /// How long connecting and authenticating may take.
    pub timeout: Duration,
}

/// Why an SSH connection or command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SshFailure {
    /// No TCP connection (refused, no route, DNS).
    #[error("cannot reach sshd: {0}")]
    Unreachable(String),
    /// Connecting or authenticating took too long.
    #[error("sshd did not answer in time")]
    Timeout,
    /// The server refused the credential.
    #[error("the server refused the credential")]
    AuthFailed,
    /// The server presented another host key than the pinned one.
    #[error(
        "the server's host key changed (pinned {pinned}, presented {presented}): re-pin it after checking the server"
    )]
    HostKeyChanged {
        /// The pinned fingerprint.
        pinned: String,
        /// The presented fingerprint.
        presented: String,
    },
    /// The stored key does not parse (or its passphrase is wrong).
    #[error("the private key cannot be read: {0}")]
    BadKey(String),
    /// Anything else on the wire.
    #[error("ssh: {0}")]
    Protocol(String),
}

impl SshFailure {
    /// A stable code for the API.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "ssh_unreachable",
            Self::Timeout => "ssh_timeout",
            Self::AuthFailed => "ssh_auth_failed",
            Self::HostKeyChanged { .. } => "ssh_host_key_changed",
            Self::BadKey(_) => "ssh_bad_key",
            Self::Protocol(_) => "ssh_error",
        }
    }
}

/// One command to run, as its argv (the adapter quotes it as one word for the remote shell).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCommand {
    /// The command line for `bash -lc`.
    pub script: String,
    /// Killed (its whole process group) after this long.
    pub timeout: Duration,
    /// At most this many bytes of stdout and of stderr are kept.
    pub output_limit: usize,
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Its exit code (`None` when it was killed or the connection dropped).
    pub exit_code: Option<i32>,
    /// Its output, up to the limit.
    pub stdout: Vec<u8>,
    /// Its error output, up to the limit.
    pub stderr: Vec<u8>,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// Whether it was killed at its timeout.
    pub timed_out: bool,
    /// How long it ran.
    pub duration: Duration,
}

/// Appends `data` to `buf` up to `limit` bytes; says whether anything was cut.
pub fn append_capped(buf: &mut Vec<u8>, data: &[u8], limit: usize) -> bool {
    let room = limit.saturating_sub(buf.len());
    let take = room.min(data.len());
    buf.extend_from_slice(&data[..take]);
    take < data.len()
}

/// A terminal's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for PtySize {
    fn default() -> Self {
        Self { cols: 80, rows: 24 }
    }
}

impl PtySize {
    /// A size from 1×1 to 1000×1000.
    ///
    /// # Errors
    /// When out of range.
    pub fn new(cols: u32, rows: u32) -> Result<Self, InvalidValue> {
        match (u16::try_from(cols), u16::try_from(rows)) {
            (Ok(cols), Ok(rows)) if (1..=1000).contains(&cols) && (1..=1000).contains(&rows) => {
                Ok(Self { cols, rows })
            }
            _ => Err(InvalidValue::new("size", "cols and rows from 1 to 1000")),
        }
    }
}

/// What a terminal's remote side sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PtyOutput {
    /// Bytes for the screen.
    Data(Vec<u8>),
    /// The shell exited.
    Exit(Option<i32>),
}

/// The write side of an open terminal.
#[async_trait]
pub trait PtyWriter: Send + Sync {
    /// Sends keystrokes.
    async fn write(&self, data: &[u8]) -> Result<(), SshFailure>;
    /// Changes the window size.
    async fn resize(&self, size: PtySize) -> Result<(), SshFailure>;
    /// Hangs up (the remote shell gets SIGHUP).
    async fn close(&self);
}

/// The read side of an open terminal.
#[async_trait]
pub trait PtyReader: Send {
    /// The next output; `None` once the terminal is closed.
    async fn next(&mut self) -> Option<PtyOutput>;
}

/// An open terminal: its two halves.
pub struct Pty {
    /// Keystrokes and resizes.
    pub writer: Box<dyn PtyWriter>,
    /// Output.
    pub reader: Box<dyn PtyReader>,
}

/// An authenticated SSH connection.
#[async_trait]
pub trait SshSession: Send + Sync {
    /// The host key the server presented.
    fn host_key(&self) -> &HostKey;
    /// Runs `command` with `bash -lc` under `timeout` (the remote process group is killed at
    /// the deadline), keeping its output up to the limit.
    async fn exec(&self, command: &RemoteCommand) -> Result<CommandOutcome, SshFailure>;
    /// Opens an interactive login shell on a pty (`xterm-256color`).
    async fn shell(&self, size: PtySize) -> Result<Pty, SshFailure>;
    /// Disconnects.
    async fn close(&self);
}

/// Opens SSH connections.
#[async_trait]
pub trait SshConnector: Send + Sync {
    /// Connects and authenticates; refuses a server whose key differs from `target.pinned`.
    async fn connect(&self, target: &SshTarget) -> Result<Box<dyn SshSession>, SshFailure>;
    /// Checks that a private key parses (with its passphrase).
    fn check_key(&self, key: &str, passphrase: Option<&str>) -> Result<(), SshFailure>;
    /// How long a TCP connection to `host:port` takes to open.
    async fn tcp_probe(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Duration, SshFailure>;
}

/// Where a server's agent takes the platform's calls, with the secret it gave.
#[derive(Clone)]
pub struct AgentEndpoint {
    /// The approved base URL.
    pub url: String,
    /// The agent's secret (a bearer token on each call).
    pub secret: String,
}

impl fmt::Debug for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentEndpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What `POST /exec` of an agent takes.
#[derive(Debug, Serialize, Deserialize)]
pub struct AgentExecRequest {
    /// The command line for `bash -lc`.
    pub script: String,
    /// Seconds until its process group is killed.
    pub timeout_secs: u64,
    /// Bytes of stdout and of stderr kept.
    pub output_limit: usize,
}

/// What `POST /exec` of an agent answers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AgentExecResponse {
    /// Exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// stdout, base64.
    pub stdout: String,
    /// stderr, base64.
    pub stderr: String,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Whether it was killed at its timeout.
    pub timed_out: bool,
    /// How long it ran, ms.
    pub duration_ms: u64,
}

/// A server's agent as a remote shell: commands and terminals when a server has no SSH access.
#[async_trait]
pub trait AgentShell: Send + Sync {
    /// Runs `command` with `bash -lc` on the agent's host (`POST {url}/exec`).
    async fn exec(
        &self,
        agent: &AgentEndpoint,
        command: &RemoteCommand,
    ) -> Result<CommandOutcome, ModelError>;
    /// Opens a login shell on a pty of the agent's host (`GET {url}/pty`, a WebSocket).
    async fn pty(&self, agent: &AgentEndpoint, size: PtySize) -> Result<Pty, ModelError>;
}

/// The stored SSH access of servers.
#[async_trait]
pub trait SshRepository: Send + Sync {
    /// The access of `server`, if set.
    async fn get(&self, server: ServerId) -> Result<Option<SshAccess>, ModelError>;
    /// The access of many servers.
    async fn many(&self, servers: &[ServerId]) -> Result<Vec<SshAccess>, ModelError>;
    /// Sets (or replaces) the access; a replaced access keeps its pinned key only when the
    /// port is unchanged.
    async fn put(
        &self,
        access: &SshAccess,
        audit: maas_shared::audit::NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// Removes the access.
    async fn delete(
        &self,
        server: ServerId,
        audit: maas_shared::audit::NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// Pins `key` if nothing is pinned yet (the first connection); says what is pinned after.
    async fn pin_first(
        &self,
        server: ServerId,
        key: &HostKey,
        at: DateTime<Utc>,
    ) -> Result<Option<HostKey>, ModelError>;
    /// Replaces the pinned key (an admin's re-pin).
    async fn repin(
        &self,
        server: ServerId,
        key: &HostKey,
        at: DateTime<Utc>,
        audit: maas_shared::audit::NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// Stores a server's last check.
    async fn save_check(&self, check: &ServerCheck) -> Result<(), ModelError>;
    /// The last checks of `servers`.
    async fn checks(&self, servers: &[ServerId]) -> Result<Vec<ServerCheck>, ModelError>;
    /// Records an audit event on its own (a terminal session that ended).
    async fn record(&self, audit: maas_shared::audit::NewAuditEvent) -> Result<(), ModelError>;
}

/// Single-use, short-lived tickets that open a terminal WebSocket.
#[async_trait]
pub trait TerminalTickets: Send + Sync {
    /// Stores `grant` under a new random ticket for `ttl`; returns the ticket.
    async fn issue(&self, grant: &TerminalGrant, ttl: Duration) -> Result<String, ModelError>;
    /// Takes the grant of `ticket` (it cannot be taken again).
    async fn take(&self, ticket: &str) -> Result<Option<TerminalGrant>, ModelError>;
}

/// What a terminal ticket allows: one admin, one server, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalGrant {
    /// The server.
    pub server_id: ServerId,
    /// The admin it was issued to.
    pub user_id: uuid::Uuid,
    /// The admin's request id and address, for the audit row.
    pub ip: Option<String>,
    /// A command typed into the shell once it is open.
    pub auto_command: Option<String>,
    /// The initial size.
    pub size: PtySize,
}

/// How a check graded a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Everything configured answered.
    Online,
    /// Something answered, something did not.
    Degraded,
    /// Nothing answered.
    Offline,
}

impl CheckStatus {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Degraded => "degraded",
            Self::Offline => "offline",
        }
    }

    /// The status of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Online, Self::Degraded, Self::Offline]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// One probe of a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Whether it answered.
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub latency_ms: Option<u64>,
    /// What went wrong (a stable code and a message), or `None`.
    pub error: Option<ProbeError>,
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeError {
    /// Stable code (`ssh_auth_failed`, `tcp_unreachable`, `not_configured`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

impl Probe {
    /// A probe that answered after `latency`.
    #[must_use]
    pub fn ok(latency: Duration) -> Self {
        Self {
            ok: true,
            latency_ms: Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
            error: None,
        }
    }

    /// A probe that failed.
    #[must_use]
    pub fn failed(code: &str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            latency_ms: None,
            error: Some(ProbeError {
                code: code.to_owned(),
                message: message.into(),
            }),
        }
    }
}

/// The probes of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDetail {
    /// A TCP connection to sshd's port.
    pub tcp: Probe,
    /// An SSH login (skipped without SSH access).
    pub ssh: Option<Probe>,
    /// The agent's heartbeat (skipped when no agent joined).
    pub agent: Option<Probe>,
}

/// A server's last check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCheck {
    /// The server.
    pub server_id: ServerId,
    /// The grade.
    pub status: CheckStatus,
    /// When.
    pub checked_at: DateTime<Utc>,
    /// The SSH login's latency (else the TCP connect's).
    pub latency_ms: Option<u64>,
    /// Each probe.
    pub detail: CheckDetail,
}

impl CheckDetail {
    /// The grade of these probes.
    #[must_use]
    pub fn status(&self) -> CheckStatus {
        let probes: Vec<bool> = [Some(&self.tcp), self.ssh.as_ref(), self.agent.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.ok)
            .collect();
        if probes.iter().all(|ok| *ok) {
            CheckStatus::Online
        } else if probes.iter().any(|ok| *ok) {
            CheckStatus::Degraded
        } else {
            CheckStatus::Offline
        }
    }
}

/// One figure of a resources reading, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metric<T> {
    /// The figure.
    Value(T),
    /// Why it is missing.
    Failed {
        /// Why.
        error: ProbeError,
    },
}

impl<T> Metric<T> {
    /// A failed figure.
    #[must_use]
    pub fn failed(code: &str, message: impl Into<String>) -> Self {
        Self::Failed {
            error: ProbeError {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// CPU figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuFigures {
    /// Logical CPUs.
    pub cores: u32,
    /// Use, percent of all cores.
    pub usage_percent: f64,
}

/// Memory figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
}

/// One filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskFigures {
    /// Where it is mounted.
    pub mount: String,
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes available.
    pub available_bytes: u64,
}

/// One GPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuFigures {
    /// Index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// Memory in use, MiB.
    pub memory_used_mib: u64,
    /// Utilization, percent.
    pub utilization_percent: Option<f64>,
}

/// Where a resources reading came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceSource {
    /// The agent's last report.
    Agent,
    /// Commands run over SSH just now.
    Ssh,
    /// Neither is available.
    None,
}

/// A server's CPU, memory, disks and GPUs: each figure on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// The server.
    pub server_id: ServerId,
    /// Where the figures came from.
    pub source: ResourceSource,
    /// When they were read.
    pub read_at: Option<DateTime<Utc>>,
    /// CPU.
    pub cpu: Metric<CpuFigures>,
    /// Memory.
    pub memory: Metric<MemoryFigures>,
    /// Filesystems.
    pub disks: Metric<Vec<DiskFigures>>,
    /// GPUs (empty on a server without NVIDIA GPUs).
    pub gpus: Metric<Vec<GpuFigures>>,
}

impl Resources {
    /// A reading in which every figure failed for the same reason.
    #[must_use]
    pub fn all_failed(
        server_id: ServerId,
        source: ResourceSource,
        read_at: Option<DateTime<Utc>>,
        code: &str,
        message: &str,
    ) -> Self {
        Self {
            server_id,
            source,
            read_at,
            cpu: Metric::failed(code, message),
            memory: Metric::failed(code, message),
            disks: Metric::failed(code, message),
            gpus: Metric::failed(code, message),
        }
    }
}

/// Parses `/proc/meminfo`.
#[must_use]
pub fn parse_meminfo(text: &str) -> Option<MemoryFigures> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some(MemoryFigures {
        total_bytes: total,
        used_bytes: total.saturating_sub(available),
    })
}

/// The busy and total jiffies of the `cpu` line of `/proc/stat`.
#[must_use]
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Parses `df -P -B1` (POSIX format, sizes in bytes).
#[must_use]
pub fn parse_df(text: &str) -> Option<Vec<DiskFigures>> {
    let mut disks = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 {
            continue;
        }
        let total: u64 = cols[1].parse().ok()?;
        let available: u64 = cols[3].parse().ok()?;
        if total == 0 {
            continue;
        }
        disks.push(DiskFigures {
            mount: cols[5..].join(" "),
            total_bytes: total,
            available_bytes: available,
        });
    }
    (!disks.is_empty()).then_some(disks)
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu
/// --format=csv,noheader,nounits`.
#[must_use]
pub fn parse_nvidia_smi(text: &str) -> Option<Vec<GpuFigures>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            match cols.as_slice() {
                [index, name, total, used, util] => Some(GpuFigures {
                    index: index.parse().ok()?,
                    name: (*name).to_owned(),
                    memory_total_mib: total.parse().ok()?,
                    memory_used_mib: used.parse().ok()?,
                    utilization_percent: util.parse().ok(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> SshAccessDraft {
        SshAccessDraft {
            port: Some(2222),
            username: "ops".into(),
            password: Some("it's a \"pass\" word".into()),
            ..SshAccessDraft::default()
        }
    }

    #[test]
    fn access_needs_exactly_one_credential_and_sane_fields() {
        let spec = draft().parse().expect("valid");
        assert_eq!(spec.port, 2222);
        assert_eq!(spec.credential.kind(), AuthKind::Password);
        let both = SshAccessDraft {
            private_key: Some("k".into()),
            ..draft()
        };
        assert_eq!(both.parse().expect_err("both")[0].field, "password");
        let bad = SshAccessDraft {
            port: Some(70_000),
            username: "-oProxyCommand=x".into(),
            password: None,
            ..draft()
        };
        let fields: Vec<&str> = bad
            .parse()
            .expect_err("bad")
            .iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["port", "username", "password"]);
    }

    #[test]
    fn a_credential_never_prints() {
        let spec = draft().parse().expect("valid");
        let shown = format!("{spec:?} {:?}", draft());
        assert!(!shown.contains("pass\""), "{shown}");
    }

    #[test]
    fn capped_output_says_when_it_cut() {
        let mut buf = Vec::new();
        assert!(!append_capped(&mut buf, b"abc", 5));
        assert!(append_capped(&mut buf, b"defg", 5));
        assert_eq!(buf, b"abcde");
        assert!(append_capped(&mut buf, b"h", 5));
    }

    #[test]
    fn proc_and_tool_output_parse() {
        let mem =
            parse_meminfo("MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    4096 kB\n")
                .expect("meminfo");
        assert_eq!(mem.total_bytes, 16384 * 1024);
        assert_eq!(mem.used_bytes, 12288 * 1024);
        assert_eq!(
            parse_proc_stat("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3 4\n"),
            Some((20, 100))
        );
        let disks = parse_df(
            "Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/sda1 1000 400 600 40% /\ntmpfs 0 0 0 - /dev/x\n",
        )
        .expect("df");
        assert_eq!(disks[0].mount, "/");
        assert_eq!(disks[0].available_bytes, 600);
        let gpus = parse_nvidia_smi("0, NVIDIA H100, 81559, 1024, 37\n").expect("gpus");
        assert_eq!(gpus[0].memory_total_mib, 81559);
        assert_eq!(gpus[0].utilization_percent, Some(37.0));
        assert!(parse_nvidia_smi("garbage").is_none());
    }

    #[test]
    fn a_check_is_graded_by_its_probes() {
        let ok = Probe::ok(Duration::from_millis(3));
        let bad = Probe::failed("tcp_unreachable", "refused");
        let detail = |tcp: &Probe, ssh: Option<&Probe>| CheckDetail {
            tcp: tcp.clone(),
            ssh: ssh.cloned(),
            agent: None,
        };
        assert_eq!(detail(&ok, Some(&ok)).status(), CheckStatus::Online);
        assert_eq!(detail(&ok, Some(&bad)).status(), CheckStatus::Degraded);
        assert_eq!(detail(&bad, Some(&bad)).status(), CheckStatus::Offline);
    }
}
