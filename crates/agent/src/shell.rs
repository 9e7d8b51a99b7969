//! The agent as a remote shell for servers without SSH access (platform only, with the
//! agent's secret): `POST /exec` runs one command as `bash -lc <command>` (argv, never a
//! built string) in its own process group, killed as a group at its timeout; `GET /pty` is a
//! WebSocket bridged to a login shell on a pty.

use std::process::Stdio;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use futures_util::StreamExt as _;
use maas_model::contract::{AgentExecRequest, AgentExecResponse, append_capped};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// The agent's secret, as the platform presents it.
pub struct Secret(pub String);

/// Whether `req` carries the agent's secret (compared in constant time).
pub fn authorized(req: &HttpRequest, secret: &str) -> bool {
    use sha2::Digest as _;
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a = sha2::Sha256::digest(presented.as_bytes());
    let b = sha2::Sha256::digest(secret.as_bytes());
    let equal = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0;
    !secret.is_empty() && equal
}

/// Reads `stream` to its end, keeping at most `limit` bytes (the rest is read and dropped, so
/// the command never blocks on a full pipe).
async fn capped(mut stream: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => cut |= append_capped(&mut kept, &buf[..n], limit),
        }
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        crate::supervisor::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// `POST /exec`: runs one command and answers with its exit code and capped output.
pub async fn exec(
    req: HttpRequest,
    secret: web::Data<Secret>,
    body: web::Json<AgentExecRequest>,
) -> HttpResponse {
    if !authorized(&req, &secret.0) {
        return HttpResponse::Unauthorized().finish();
    }
    let body = body.into_inner();
    if body.script.contains('\0') || body.script.len() > 64 * 1024 {
        return HttpResponse::BadRequest().body("the command must be at most 64 KiB, without NUL");
    }
    let limit = body.output_limit.min(16 * 1024 * 1024);
    let timeout = Duration::from_secs(body.timeout_secs.clamp(1, 86_400));
    let started = Instant::now();
    let spawned = tokio::process::Command::new("bash")
        .arg("-lc")
        .arg(&body.script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return HttpResponse::InternalServerError().body(format!("cannot start bash: {e}"));
        }
    };
    let pid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group(pid);
        return HttpResponse::InternalServerError().body("no pipes to the command");
    };
    let readers =
        async { tokio::join!(capped(stdout, limit), capped(stderr, limit), child.wait()) };
    let (timed_out, exit_code, (out, out_cut), (err, err_cut)) =
        match tokio::time::timeout(timeout, readers).await {
            Ok(((out, out_cut), (err, err_cut), status)) => (
                false,
                status.ok().and_then(|s| s.code()),
                (out, out_cut),
                (err, err_cut),
            ),
            Err(_) => {
                // The whole group: the command and everything it started.
                kill_group(pid);
                let _ = child.wait().await;
                (true, None, (Vec::new(), false), (Vec::new(), false))
            }
        };
    let b64 = base64::engine::general_purpose::STANDARD;
    HttpResponse::Ok().json(AgentExecResponse {
        exit_code,
        stdout: b64.encode(out),
        stderr: b64.encode(err),
        stdout_truncated: out_cut,
        stderr_truncated: err_cut,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The pty's size.
#[derive(serde::Deserialize)]
pub struct PtyQuery {
    cols: Option<u16>,
    rows: Option<u16>,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    Resize { cols: u16, rows: u16 },
}

/// `GET /pty`: a WebSocket bridged to `bash -l` on a new pty (binary frames both ways; a JSON
/// text frame `{"type":"resize","cols","rows"}` resizes; `{"type":"exit","status"}` ends).
pub async fn pty(
    req: HttpRequest,
    body: web::Payload,
    secret: web::Data<Secret>,
    query: web::Query<PtyQuery>,
) -> HttpResponse {
    if !authorized(&req, &secret.0) {
        return HttpResponse::Unauthorized().finish();
    }
    let size = pty_process::Size::new(
        query.rows.unwrap_or(24).clamp(1, 1000),
        query.cols.unwrap_or(80).clamp(1, 1000),
    );
    let opened = pty_process::open().and_then(|(pty, pts)| {
        pty.resize(size)?;
        let child = pty_process::Command::new("bash")
            .arg("-l")
            .env("TERM", "xterm-256color")
            .kill_on_drop(true)
            .spawn(pts)?;
        Ok((pty, child))
    });
    let (pty, child) = match opened {
        Ok(parts) => parts,
        Err(e) => return HttpResponse::InternalServerError().body(format!("no pty: {e}")),
    };
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    let stream = stream.max_frame_size(64 * 1024).aggregate_continuations();
    // Request-scoped: it ends with the socket or the shell.
    actix_web::rt::spawn(bridge(pty, child, session, stream));
    response
}

async fn bridge(
    pty: pty_process::Pty,
    mut child: tokio::process::Child,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let (mut read, mut write) = pty.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let pid = child.id();
    loop {
        tokio::select! {
            n = read.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let status = child.wait().await.ok().and_then(|s| s.code());
                    let _ = session.text(serde_json::json!({"type": "exit", "status": status}).to_string()).await;
                    break;
                }
                Ok(n) => {
                    if session.binary(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(actix_ws::AggregatedMessage::Binary(data))) => {
                    if write.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Text(text))) => {
                    if let Ok(Frame::Resize { cols, rows }) = serde_json::from_str::<Frame>(&text) {
                        let _ = write.resize(pty_process::Size::new(rows.clamp(1, 1000), cols.clamp(1, 1000)));
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Ping(bytes))) => {
                    let _ = session.pong(&bytes).await;
                }
                Some(Ok(actix_ws::AggregatedMessage::Pong(_))) => {}
                Some(Ok(actix_ws::AggregatedMessage::Close(_)) | Err(_)) | None => break,
            },
        }
    }
    // The shell leads its own session: hang it up and end what it started.
    if let Some(pid) = pid {
        crate::supervisor::signal_group(pid, nix::sys::signal::Signal::SIGHUP);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    kill_group(pid);
    let _ = child.wait().await;
    let _ = session.close(None).await;
}
