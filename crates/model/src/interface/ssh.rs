//! Servers over SSH (admin): access, host-key re-pin, checks, resources, terminal tickets, the
//! terminal WebSocket and its console page.
//!
//! The WebSocket's bridge runs for as long as its socket is open, on the request's own actix
//! worker (`actix_web::rt::spawn`, as actix-ws requires): it is request-scoped, not a
//! background task, and it ends (and is audited) when either side hangs up or it idles out.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use maas_shared::http::{ApiError, ValidatedJson};
use maas_user::contract::Caller;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

use crate::app::ssh::{AccessView, SshService, Terminal, TerminalTotals, Ticket, origin_allowed};
use crate::domain::errors::ModelError;
use crate::domain::server::ServerId;
use crate::domain::ssh::{
    CheckStatus, HostKey, Metric, Probe, PtyOutput, PtySize, Resources, ServerCheck, SshAccessDraft,
};

/// A server's SSH access. Give exactly one of `password` and `private_key`; neither is ever
/// returned or logged, and both are stored sealed with the platform key.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct SshAccessRequest {
    /// sshd's port (default 22).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// The login user: 1 to 64 of letters, digits, `-`, `_`, `.`, `@`, not starting with `-`.
    #[schema(min_length = 1, max_length = 64)]
    pub username: String,
    /// A password (1 to 1024 bytes; any characters, quotes and spaces included).
    #[schema(max_length = 1024)]
    pub password: Option<String>,
    /// A private key in OpenSSH or PEM format (at most 16 KiB).
    #[schema(max_length = 16384)]
    pub private_key: Option<String>,
    /// The private key's passphrase.
    #[schema(max_length = 1024)]
    pub passphrase: Option<String>,
}

/// A host key.
#[derive(Serialize, ToSchema)]
pub struct HostKeyDto {
    /// Its algorithm.
    pub algorithm: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl From<&HostKey> for HostKeyDto {
    fn from(k: &HostKey) -> Self {
        Self {
            algorithm: k.algorithm.clone(),
            fingerprint: k.fingerprint.clone(),
        }
    }
}

/// A server's SSH access, as shown (the credential never is).
#[derive(Serialize, ToSchema)]
pub struct SshAccessResponse {
    /// sshd's port.
    pub port: u16,
    /// The login user.
    pub username: String,
    /// `password` or `private_key`.
    pub auth: String,
    /// The host key pinned at the first successful connection (absent until then). A server
    /// that presents another key is refused (`ssh_host_key_changed`) until re-pinned.
    pub host_key: Option<HostKeyDto>,
    /// When it was pinned.
    pub host_key_pinned_at: Option<DateTime<Utc>>,
    /// When the access was set.
    pub updated_at: DateTime<Utc>,
}

impl From<AccessView> for SshAccessResponse {
    fn from(v: AccessView) -> Self {
        Self {
            port: v.port,
            username: v.username,
            auth: v.auth.to_owned(),
            host_key: v.host_key.as_ref().map(HostKeyDto::from),
            host_key_pinned_at: v.pinned_at,
            updated_at: v.updated_at,
        }
    }
}

/// How one probe of a check went.
#[derive(Serialize, ToSchema)]
pub struct ProbeDto {
    /// Whether it answered.
    pub ok: bool,
    /// How long it took, ms.
    pub latency_ms: Option<u64>,
    /// Why it failed: a stable code (`tcp_unreachable`, `ssh_auth_failed`,
    /// `ssh_host_key_changed`, `ssh_timeout`, `agent_not_ready`, …).
    pub error_code: Option<String>,
    /// Why it failed, for people.
    pub error: Option<String>,
}

impl From<&Probe> for ProbeDto {
    fn from(p: &Probe) -> Self {
        Self {
            ok: p.ok,
            latency_ms: p.latency_ms,
            error_code: p.error.as_ref().map(|e| e.code.clone()),
            error: p.error.as_ref().map(|e| e.message.clone()),
        }
    }
}

/// A check's grade.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatusDto {
    /// Every probe answered.
    Online,
    /// Some did.
    Degraded,
    /// None did.
    Offline,
}

impl From<CheckStatus> for CheckStatusDto {
    fn from(s: CheckStatus) -> Self {
        match s {
            CheckStatus::Online => Self::Online,
            CheckStatus::Degraded => Self::Degraded,
            CheckStatus::Offline => Self::Offline,
        }
    }
}

/// A server's check: TCP to sshd, an SSH login, the agent's heartbeat.
#[derive(Serialize, ToSchema)]
pub struct ServerCheckResponse {
    /// The server.
    pub server_id: Uuid,
    /// The grade.
    pub status: CheckStatusDto,
    /// When.
    pub checked_at: DateTime<Utc>,
    /// The SSH login's latency (else the TCP connect's), ms.
    pub latency_ms: Option<u64>,
    /// TCP to sshd's port.
    pub tcp: ProbeDto,
    /// The SSH login (absent without SSH access).
    pub ssh: Option<ProbeDto>,
    /// The agent's heartbeat (absent when no agent joined).
    pub agent: Option<ProbeDto>,
}

impl From<&ServerCheck> for ServerCheckResponse {
    fn from(c: &ServerCheck) -> Self {
        Self {
            server_id: c.server_id.as_uuid(),
            status: c.status.into(),
            checked_at: c.checked_at,
            latency_ms: c.latency_ms,
            tcp: ProbeDto::from(&c.detail.tcp),
            ssh: c.detail.ssh.as_ref().map(ProbeDto::from),
            agent: c.detail.agent.as_ref().map(ProbeDto::from),
        }
    }
}

/// One figure of a resources reading: its value, or why it could not be read
/// (`{"error": {"code", "message"}}`); each figure fails on its own.
#[derive(Serialize, ToSchema)]
pub struct MetricDto {
    /// The figure (absent when it failed): an object for `cpu` and `memory`, a list for
    /// `disks` and `gpus`.
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<serde_json::Value>,
    /// Why it failed: a stable code (`command_failed`, `unparsable`, `ssh_auth_failed`,
    /// `no_remote_access`, …).
    pub error_code: Option<String>,
    /// Why it failed, for people.
    pub error: Option<String>,
}

fn metric<T: Serialize>(m: &Metric<T>) -> MetricDto {
    match m {
        Metric::Value(v) => MetricDto {
            value: serde_json::to_value(v).ok(),
            error_code: None,
            error: None,
        },
        Metric::Failed { error } => MetricDto {
            value: None,
            error_code: Some(error.code.clone()),
            error: Some(error.message.clone()),
        },
    }
}

/// A server's CPU (`cores`, `usage_percent`), memory (`total_bytes`, `used_bytes`), disks
/// (`mount`, `total_bytes`, `available_bytes` each) and GPUs (`index`, `name`,
/// `memory_total_mib`, `memory_used_mib`, `utilization_percent` each).
#[derive(Serialize, ToSchema)]
pub struct ResourcesResponse {
    /// The server.
    pub server_id: Uuid,
    /// `agent` (its last report), `ssh` (read just now) or `none`.
    pub source: String,
    /// When the figures were read.
    pub read_at: Option<DateTime<Utc>>,
    /// CPU.
    pub cpu: MetricDto,
    /// Memory.
    pub memory: MetricDto,
    /// Filesystems.
    pub disks: MetricDto,
    /// GPUs (an empty list on a server without NVIDIA GPUs).
    pub gpus: MetricDto,
}

impl From<&Resources> for ResourcesResponse {
    fn from(r: &Resources) -> Self {
        Self {
            server_id: r.server_id.as_uuid(),
            source: serde_json::to_value(r.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            read_at: r.read_at,
            cpu: metric(&r.cpu),
            memory: metric(&r.memory),
            disks: metric(&r.disks),
            gpus: metric(&r.gpus),
        }
    }
}

/// Which servers' resources to read.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ResourcesRequest {
    /// The servers (every server when absent or empty; at most 100).
    #[serde(default)]
    #[validate(length(max = 100))]
    #[schema(max_items = 100)]
    pub server_ids: Vec<Uuid>,
}

/// A terminal ticket request.
#[derive(Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// Typed into the shell once it opens (at most 4096 characters, without NUL).
    #[schema(max_length = 4096)]
    pub auto_command: Option<String>,
    /// Initial columns (1–1000, default 80).
    #[schema(minimum = 1, maximum = 1000)]
    pub cols: Option<u32>,
    /// Initial rows (1–1000, default 24).
    #[schema(minimum = 1, maximum = 1000)]
    pub rows: Option<u32>,
}

/// A ticket: open `websocket_url` with it within its lifetime, once.
#[derive(Serialize, ToSchema)]
pub struct TicketResponse {
    /// The single-use ticket.
    pub ticket: String,
    /// Until when it opens a terminal.
    pub expires_at: DateTime<Utc>,
    /// How the terminal reaches the server: `ssh`, or `agent` (its pty) without SSH access.
    pub via: String,
    /// The WebSocket's path and query (relative to the API's origin).
    pub websocket_url: String,
}

/// The terminal's ticket.
#[derive(Deserialize, IntoParams)]
pub struct TerminalQuery {
    /// The ticket from `POST /api/v1/servers/{id}/terminal-ticket`.
    pub ticket: String,
}

fn server_id(path: web::Path<Uuid>) -> ServerId {
    ServerId::from_uuid(path.into_inner())
}

/// Set a server's SSH access (admin)
///
/// Replaces any earlier access. The host key is pinned at the first successful connection;
/// it survives a new user or credential but not a new port.
#[utoipa::path(put, path = "/servers/{server_id}/ssh", tag = "servers", params(("server_id" = Uuid, Path)), request_body = SshAccessRequest,
    responses((status = 200, body = SshAccessResponse), (status = 404, description = "`server_not_found`"),
        (status = 422, description = "`validation_failed` (every bad field; a private key that does not open with the passphrase given is refused here)")),
    security(("bearer" = [])))]
pub async fn set_ssh(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<SshAccessRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let draft = SshAccessDraft {
        port: b.port,
        username: b.username,
        password: b.password,
        private_key: b.private_key,
        passphrase: b.passphrase,
    };
    let view = ssh.set_access(&actor, server_id(path), &draft).await?;
    Ok(HttpResponse::Ok().json(SshAccessResponse::from(view)))
}

/// Get a server's SSH access (admin)
#[utoipa::path(get, path = "/servers/{server_id}/ssh", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = SshAccessResponse), (status = 404, description = "`server_not_found`"), (status = 409, description = "`no_remote_access`: none is set")),
    security(("bearer" = [])))]
pub async fn get_ssh(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let view = ssh.access(&actor, server_id(path)).await?;
    Ok(HttpResponse::Ok().json(SshAccessResponse::from(view)))
}

/// Remove a server's SSH access (admin)
#[utoipa::path(delete, path = "/servers/{server_id}/ssh", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 404, description = "`server_not_found`"), (status = 409, description = "`no_remote_access`: none is set")),
    security(("bearer" = [])))]
pub async fn delete_ssh(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    ssh.delete_access(&actor, server_id(path)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Re-pin a server's host key (admin)
///
/// Connects, logs in, and pins the key the server presents now. Do this only after checking
/// why the key changed.
#[utoipa::path(post, path = "/servers/{server_id}/ssh/repin", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = SshAccessResponse), (status = 404, description = "`server_not_found`"),
        (status = 409, description = "`no_remote_access`"),
        (status = 503, description = "`ssh_unreachable`, `ssh_timeout`, `ssh_auth_failed`, `ssh_bad_key`, `ssh_error`")),
    security(("bearer" = [])))]
pub async fn repin_ssh(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let view = ssh.repin(&actor, server_id(path)).await?;
    Ok(HttpResponse::Ok().json(SshAccessResponse::from(view)))
}

/// Check a server (admin)
///
/// TCP to sshd's port, an SSH login (with SSH access), the agent's heartbeat (once joined).
/// A failed probe is part of the answer, not an error.
#[utoipa::path(post, path = "/servers/{server_id}/check", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = ServerCheckResponse), (status = 404, description = "`server_not_found`")),
    security(("bearer" = [])))]
pub async fn check_server(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let check = ssh.check(&actor, server_id(path)).await?;
    Ok(HttpResponse::Ok().json(ServerCheckResponse::from(&check)))
}

/// A server's last check (admin)
#[utoipa::path(get, path = "/servers/{server_id}/check", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = ServerCheckResponse), (status = 404, description = "`server_not_found`, `check_not_found` (never checked)")),
    security(("bearer" = [])))]
pub async fn last_check(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let check = ssh.last_check(&actor, server_id(path)).await?;
    Ok(HttpResponse::Ok().json(ServerCheckResponse::from(&check)))
}

/// Check every server (admin)
#[utoipa::path(post, path = "/servers/check-all", tag = "servers",
    responses((status = 200, body = Vec<ServerCheckResponse>)),
    security(("bearer" = [])))]
pub async fn check_all(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let checks = ssh.check_all(&actor).await?;
    Ok(HttpResponse::Ok().json(
        checks
            .iter()
            .map(ServerCheckResponse::from)
            .collect::<Vec<_>>(),
    ))
}

/// A server's resources (admin)
///
/// From the agent's last report while it is live, else read over SSH now; each figure fails
/// on its own.
#[utoipa::path(get, path = "/servers/{server_id}/resources", tag = "servers", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = ResourcesResponse), (status = 404, description = "`server_not_found`")),
    security(("bearer" = [])))]
pub async fn server_resources(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let r = ssh.resources(&actor, server_id(path)).await?;
    Ok(HttpResponse::Ok().json(ResourcesResponse::from(&r)))
}

/// Many servers' resources (admin)
#[utoipa::path(post, path = "/servers/resources", tag = "servers", request_body = ResourcesRequest,
    responses((status = 200, body = Vec<ResourcesResponse>), (status = 404, description = "`server_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn many_resources(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    body: ValidatedJson<ResourcesRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let ids: Vec<ServerId> = body
        .into_inner()
        .server_ids
        .into_iter()
        .map(ServerId::from_uuid)
        .collect();
    let list = ssh.resources_many(&actor, &ids).await?;
    Ok(HttpResponse::Ok().json(list.iter().map(ResourcesResponse::from).collect::<Vec<_>>()))
}

/// Issue a terminal ticket (admin)
///
/// Browsers cannot set headers on a WebSocket: open
/// `GET /api/v1/servers/{id}/terminal?ticket=…` with this single-use ticket before it
/// expires.
#[utoipa::path(post, path = "/servers/{server_id}/terminal-ticket", tag = "servers", params(("server_id" = Uuid, Path)), request_body = TicketRequest,
    responses((status = 201, body = TicketResponse), (status = 404, description = "`server_not_found`"),
        (status = 409, description = "`no_remote_access`: no SSH access and no agent to reach"), (status = 422, description = "`validation_failed`")),
    security(("bearer" = [])))]
pub async fn terminal_ticket(
    req: HttpRequest,
    caller: Caller,
    ssh: web::Data<SshService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<TicketRequest>,
) -> Result<HttpResponse, ApiError> {
    actor!(req, caller, ctx, actor);
    let b = body.into_inner();
    let size = PtySize::new(b.cols.unwrap_or(80), b.rows.unwrap_or(24))
        .map_err(|e| ModelError::Invalid(vec![e]))?;
    let id = server_id(path);
    let Ticket {
        ticket,
        expires_at,
        via,
    } = ssh
        .issue_ticket(&actor, id, b.auto_command, size, ctx.ip.clone())
        .await?;
    Ok(HttpResponse::Created().json(TicketResponse {
        websocket_url: format!("/api/v1/servers/{id}/terminal?ticket={ticket}"),
        ticket,
        expires_at,
        via: via.as_str().to_owned(),
    }))
}

/// A server's terminal (WebSocket; admin, by ticket)
///
/// Upgrades to a WebSocket bridged to a login shell on a pty (`xterm-256color`): over SSH,
/// or on the server's agent when it has no SSH access. Frames:
///
/// - client → server: **binary** frames are keystrokes; **text** frames are JSON:
///   `{"type":"input","data":"ls\r"}`, `{"type":"resize","cols":120,"rows":40}`
///   (1–1000 each), `{"type":"ping"}`.
/// - server → client: **binary** frames are terminal output; **text** frames are JSON:
///   `{"type":"exit","status":0}` (the shell ended), `{"type":"idle_timeout"}` (no input
///   for `compute.terminal_idle_secs`), `{"type":"error","code":"bad_frame","message":…}`,
///   `{"type":"pong"}`.
///
/// The socket closes after `exit` and `idle_timeout`. The Origin header, when sent, must be
/// the API's own or one of `compute.terminal_allowed_origins`. Every session is audited
/// (`server.terminal`: who, when, how long, bytes in and out; never the content).
#[utoipa::path(get, path = "/servers/{server_id}/terminal", tag = "servers", params(("server_id" = Uuid, Path), TerminalQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "`bad_request`: not a WebSocket upgrade"),
        (status = 401, description = "`terminal_ticket_invalid`: unknown, expired or spent"),
        (status = 403, description = "`origin_not_allowed`"),
        (status = 404, description = "`server_not_found`"),
        (status = 409, description = "`ssh_host_key_changed`, `no_remote_access`"),
        (status = 503, description = "`ssh_unreachable`, `ssh_timeout`, `ssh_auth_failed`, `ssh_error`, `agent_unreachable`")))]
pub async fn terminal(
    req: HttpRequest,
    body: web::Payload,
    ssh: web::Data<SshService>,
    query: web::Query<TerminalQuery>,
) -> Result<HttpResponse, ApiError> {
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = req.connection_info().host().to_owned();
    if !origin_allowed(origin, &host, &ssh.config().allowed_origins) {
        return Err(ModelError::OriginNotAllowed.into());
    }
    if !is_upgrade(&req) {
        return Err(ApiError::new(
            maas_shared::error::ErrorKind::BadRequest,
            "this endpoint is a WebSocket: send an Upgrade request",
        )
        .with_code("bad_request"));
    }
    let terminal = ssh.open_terminal(&query.ticket).await?;
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => {
            close_terminal(terminal).await;
            return Err(
                ApiError::new(maas_shared::error::ErrorKind::BadRequest, e.to_string())
                    .with_code("bad_request"),
            );
        }
    };
    let stream = stream.max_frame_size(64 * 1024).aggregate_continuations();
    let service = ssh.get_ref().clone();
    actix_web::rt::spawn(bridge(terminal, session, stream, service));
    Ok(response)
}

fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn close_terminal(terminal: Terminal) {
    terminal.pty.writer.close().await;
    if let Some(session) = terminal.session {
        session.close().await;
    }
}

/// A client's JSON frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Input { data: String },
    Resize { cols: u32, rows: u32 },
    Ping,
}

fn event(value: &serde_json::Value) -> String {
    value.to_string()
}

async fn bridge(
    mut terminal: Terminal,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    ssh: SshService,
) {
    let idle = ssh.config().idle_timeout;
    let mut totals = TerminalTotals::default();
    let mut deadline = tokio::time::Instant::now() + idle;
    if let Some(command) = &terminal.grant.auto_command {
        let line = format!("{command}\r");
        totals.bytes_in += line.len() as u64;
        let _ = terminal.pty.writer.write(line.as_bytes()).await;
    }
    let ended_by = loop {
        tokio::select! {
            out = terminal.pty.reader.next() => match out {
                Some(PtyOutput::Data(data)) => {
                    totals.bytes_out += data.len() as u64;
                    if session.binary(data).await.is_err() {
                        break "client";
                    }
                }
                Some(PtyOutput::Exit(status)) => {
                    let _ = session.text(event(&serde_json::json!({"type": "exit", "status": status}))).await;
                    break "exit";
                }
                None => break "server",
            },
            msg = stream.next() => match msg {
                Some(Ok(actix_ws::AggregatedMessage::Binary(data))) => {
                    deadline = tokio::time::Instant::now() + idle;
                    totals.bytes_in += data.len() as u64;
                    if terminal.pty.writer.write(&data).await.is_err() {
                        break "server";
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Text(text))) => {
                    deadline = tokio::time::Instant::now() + idle;
                    match serde_json::from_str::<ClientFrame>(&text) {
                        Ok(ClientFrame::Input { data }) => {
                            totals.bytes_in += data.len() as u64;
                            if terminal.pty.writer.write(data.as_bytes()).await.is_err() {
                                break "server";
                            }
                        }
                        Ok(ClientFrame::Resize { cols, rows }) => match PtySize::new(cols, rows) {
                            Ok(size) => {
                                let _ = terminal.pty.writer.resize(size).await;
                            }
                            Err(e) => {
                                let _ = session.text(event(&serde_json::json!({"type": "error", "code": "bad_frame", "message": e.message}))).await;
                            }
                        },
                        Ok(ClientFrame::Ping) => {
                            let _ = session.text(event(&serde_json::json!({"type": "pong"}))).await;
                        }
                        Err(e) => {
                            let _ = session.text(event(&serde_json::json!({"type": "error", "code": "bad_frame", "message": e.to_string()}))).await;
                        }
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Ping(bytes))) => {
                    let _ = session.pong(&bytes).await;
                }
                Some(Ok(actix_ws::AggregatedMessage::Pong(_))) => {}
                Some(Ok(actix_ws::AggregatedMessage::Close(_)) | Err(_)) | None => break "client",
            },
            () = tokio::time::sleep_until(deadline) => {
                let _ = session.text(event(&serde_json::json!({"type": "idle_timeout"}))).await;
                break "idle_timeout";
            }
        }
    };
    let Terminal {
        grant,
        via,
        pty,
        session: ssh_session,
        opened_at,
    } = terminal;
    pty.writer.close().await;
    if let Some(s) = ssh_session {
        s.close().await;
    }
    let _ = session
        .close(Some(actix_ws::CloseReason {
            code: if ended_by == "idle_timeout" {
                actix_ws::CloseCode::Policy
            } else {
                actix_ws::CloseCode::Normal
            },
            description: Some(ended_by.to_owned()),
        }))
        .await;
    if let Err(e) = ssh
        .audit_terminal(&grant, via, opened_at, totals, ended_by)
        .await
    {
        tracing::error!(error = %e, server.id = %grant.server_id, "a terminal session could not be audited");
    }
}

/// The console page of a server's terminal (xterm.js).
pub async fn console_page(path: web::Path<Uuid>) -> HttpResponse {
    let id = path.into_inner();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("cache-control", "no-store"))
        .body(CONSOLE_PAGE.replace("{{SERVER_ID}}", &id.to_string()))
}

/// Where the console's third-party assets (xterm.js, fetched by
/// `scripts/fetch-console-assets.sh`) are read from.
#[derive(Clone, Debug)]
pub struct ConsoleAssets(pub std::path::PathBuf);

/// The console's own script and the fetched xterm.js files.
pub async fn console_asset(
    path: web::Path<String>,
    assets: web::Data<ConsoleAssets>,
) -> HttpResponse {
    let name = path.into_inner();
    let (body, kind): (Option<Vec<u8>>, &str) = match name.as_str() {
        "terminal.js" => (Some(CONSOLE_SCRIPT.as_bytes().to_vec()), "text/javascript"),
        "xterm.js" => (
            tokio::fs::read(assets.0.join("xterm.js")).await.ok(),
            "text/javascript",
        ),
        "xterm.css" => (
            tokio::fs::read(assets.0.join("xterm.css")).await.ok(),
            "text/css",
        ),
        _ => (None, "text/plain"),
    };
    match body {
        Some(body) => HttpResponse::Ok()
            .content_type(kind)
            .insert_header(("x-content-type-options", "nosniff"))
            .insert_header(("cache-control", "public, max-age=3600"))
            .body(body),
        None => HttpResponse::NotFound()
            .content_type("text/plain")
            .body("not found (xterm.js is fetched by scripts/fetch-console-assets.sh)"),
    }
}

const CONSOLE_PAGE: &str = include_str!("console/terminal.html");
const CONSOLE_SCRIPT: &str = include_str!("console/terminal.js");
