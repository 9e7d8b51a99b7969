//! `maas-agent`: the node agent that runs on every GPU server.
//!
//! It joins the platform once with its server's one-time join token and keeps the node
//! credential it receives in its data directory (mode 0600), so a restarted agent is the same
//! node. Then it heartbeats and reports the node's CPU, memory, disks and GPUs (from
//! `nvidia-smi` when it exists) at the intervals the platform gives it, and answers `GET
//! /health` for the platform.
//!
//! It watches the instances assigned to its node (a long-poll with its node credential) and
//! reconciles them: starts engines from argv templates, stops the extra ones, restarts
//! crashed ones with backoff, and reports their state; engines outlive the agent, and a
//! restarted agent adopts them. `GET /instances/{id}/logs` serves an engine's log to the
//! platform (with the agent's secret); `POST /exec` and the `/pty` WebSocket serve remote
//! tasks and terminals of a server without SSH access.

mod fetch;
mod launch;
mod node;
mod resources;
mod shell;
mod supervisor;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

/// The MaaS node agent.
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
pub struct Args {
    /// The platform's base URL (`https://maas.example.com`).
    #[arg(long, env = "MAAS_AGENT_SERVER")]
    server: url::Url,
    /// The server's one-time join token (needed only until the agent has joined).
    #[arg(long, env = "MAAS_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the agent keeps its node credential.
    #[arg(
        long,
        env = "MAAS_AGENT_DATA_DIR",
        default_value = "/var/lib/maas-agent"
    )]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "MAAS_AGENT_LISTEN", default_value = "127.0.0.1:9090")]
    listen: String,
    /// The URL the platform should call this agent at (default: `http://<listen address>`).
    #[arg(long, env = "MAAS_AGENT_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The address engines listen on (the platform reaches them at the server's address).
    #[arg(long, env = "MAAS_AGENT_ENGINE_HOST", default_value = "0.0.0.0")]
    engine_host: String,
    /// Ports engines may get, `FIRST-LAST` (each probed before use).
    #[arg(long, env = "MAAS_AGENT_PORT_RANGE", default_value = "41000-41999")]
    port_range: String,
    /// First restart delay after an engine crashed, seconds (doubles per crash).
    #[arg(long, env = "MAAS_AGENT_RESTART_BACKOFF_SECS", default_value_t = 10.0)]
    restart_backoff_secs: f64,
    /// Longest restart delay, seconds.
    #[arg(
        long,
        env = "MAAS_AGENT_RESTART_BACKOFF_MAX_SECS",
        default_value_t = 300.0
    )]
    restart_backoff_max_secs: f64,
    /// Seconds between SIGTERM and SIGKILL when an engine is stopped.
    #[arg(long, env = "MAAS_AGENT_STOP_GRACE_SECS", default_value_t = 10.0)]
    stop_grace_secs: f64,
    /// Largest engine log before it is truncated, bytes.
    #[arg(long, env = "MAAS_AGENT_LOG_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    log_max_bytes: u64,
    /// `maas-engine` (default: beside this binary, else on `PATH`).
    #[arg(long, env = "MAAS_AGENT_MAAS_ENGINE")]
    maas_engine: Option<PathBuf>,
    /// Python with `xllamacpp`, for llama.cpp when `llama-server` is not on `PATH`.
    #[arg(long, env = "MAAS_AGENT_LLAMA_PYTHON", default_value = "python3")]
    llama_python: String,
    /// The launcher over `xllamacpp` (default: `xllamacpp-server.py` beside this binary).
    #[arg(long, env = "MAAS_AGENT_LLAMA_LAUNCHER")]
    llama_launcher: Option<PathBuf>,
}

impl Args {
    fn supervisor(&self) -> anyhow::Result<supervisor::Config> {
        let (first, last) = self
            .port_range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| a <= b && *a > 0)
            .with_context(|| format!("--port-range `{}` is not FIRST-LAST", self.port_range))?;
        let secs = |v: f64, name: &str| {
            anyhow::ensure!(
                v.is_finite() && (0.0..=86_400.0).contains(&v),
                "{name} must be 0 to 86400 seconds"
            );
            Ok(Duration::from_secs_f64(v))
        };
        let beside = |name: &str| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join(name)))
                .filter(|p| p.exists())
        };
        Ok(supervisor::Config {
            host: self.engine_host.clone(),
            ports: first..=last,
            backoff_base: secs(self.restart_backoff_secs, "--restart-backoff-secs")?,
            backoff_max: secs(self.restart_backoff_max_secs, "--restart-backoff-max-secs")?,
            grace: secs(self.stop_grace_secs, "--stop-grace-secs")?,
            log_max_bytes: self.log_max_bytes.max(4096),
            data_dir: self.data_dir.clone(),
            tools: launch::Tools {
                maas_engine: self
                    .maas_engine
                    .clone()
                    .or_else(|| beside("maas-engine"))
                    .or_else(|| launch::on_path("maas-engine"))
                    .unwrap_or_else(|| PathBuf::from("maas-engine")),
                llama_server: launch::on_path("llama-server"),
                llama_python: self.llama_python.clone(),
                llama_launcher: self
                    .llama_launcher
                    .clone()
                    .or_else(|| beside("xllamacpp-server.py"))
                    .unwrap_or_else(|| PathBuf::from("xllamacpp-server.py")),
            },
        })
    }
}

/// What the logs endpoint needs.
struct Logs {
    dir: PathBuf,
    secret: String,
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    tail: Option<usize>,
    follow: Option<bool>,
}

/// The last `tail` lines of `path` (reading at most its last 4 MiB).
fn tail_of(path: &std::path::Path, tail: usize) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(4 * 1024 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let mut cut = buf.len();
    let mut lines = 0;
    if buf.last() == Some(&b'\n') {
        cut -= 1;
    }
    while cut > 0 {
        if buf[cut - 1] == b'\n' {
            lines += 1;
            if lines == tail {
                break;
            }
        }
        cut -= 1;
    }
    let skip = if tail == 0 { buf.len() } else { cut };
    Ok((buf.split_off(skip), len))
}

/// `GET /instances/{id}/logs?tail=&follow=` (platform only: `Authorization: Bearer <agent secret>`).
async fn instance_logs(
    req: actix_web::HttpRequest,
    logs: actix_web::web::Data<Logs>,
    path: actix_web::web::Path<uuid::Uuid>,
    query: actix_web::web::Query<LogsQuery>,
) -> actix_web::HttpResponse {
    if !shell::authorized(&req, &logs.secret) {
        return actix_web::HttpResponse::Unauthorized().finish();
    }
    let (current, _) = supervisor::log_paths(&logs.dir, path.into_inner());
    let tail = query.tail.unwrap_or(200).min(10_000);
    let Ok((first, offset)) = tail_of(&current, tail) else {
        return actix_web::HttpResponse::NotFound().finish();
    };
    let head = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(actix_web::web::Bytes::from(first))
    });
    if !query.follow.unwrap_or(false) {
        return actix_web::HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .streaming(head);
    }
    // Follow: new bytes every 250 ms; a truncated or rotated file starts over; the stream
    // ends when the log is gone (the instance was removed).
    let follow = futures_util::stream::unfold((current, offset), |(path, offset)| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(meta) = std::fs::metadata(&path) else {
                return None;
            };
            let len = meta.len();
            let from = if len < offset { 0 } else { offset };
            if len == from {
                continue;
            }
            let read = (|| {
                use std::io::{Read as _, Seek as _, SeekFrom};
                let mut file = std::fs::File::open(&path)?;
                file.seek(SeekFrom::Start(from))?;
                let mut buf = Vec::new();
                file.take(1024 * 1024).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>(buf)
            })();
            match read {
                Ok(buf) => {
                    let next = from + buf.len() as u64;
                    return Some((Ok(actix_web::web::Bytes::from(buf)), (path, next)));
                }
                Err(err) => return Some((Err(err), (path, offset))),
            }
        }
    });
    use futures_util::StreamExt as _;
    actix_web::HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(head.chain(follow))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

#[actix_web::get("/health")]
async fn health() -> actix_web::web::Json<Health> {
    actix_web::web::Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "maas-agent stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr()?;
    let advertise = match &args.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if bound.ip().is_unspecified() => {
            anyhow::bail!(
                "listening on {bound}: pass --advertise-url with the address the platform can reach"
            )
        }
        None => format!("http://{bound}"),
    };
    let config = args.supervisor()?;
    let mut agent = node::Agent::start(&args, advertise.clone()).await?;
    let logs = actix_web::web::Data::new(Logs {
        dir: config.data_dir.join("logs"),
        secret: agent.agent_secret(),
    });
    let secret = actix_web::web::Data::new(shell::Secret(agent.agent_secret()));
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(logs.clone())
            .app_data(secret.clone())
            .app_data(actix_web::web::JsonConfig::default().limit(128 * 1024))
            .service(health)
            .route(
                "/instances/{instance_id}/logs",
                actix_web::web::get().to(instance_logs),
            )
            .route("/exec", actix_web::web::post().to(shell::exec))
            .route("/pty", actix_web::web::get().to(shell::pty))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    let http = tokio::spawn(server);
    tracing::info!(listen = %bound, advertise = %advertise, "maas-agent listening");

    let supervisor = supervisor::Supervisor::load(config)?;
    let platform = agent.platform();
    let (desired_tx, desired_rx) = tokio::sync::watch::channel(None);
    let watcher = {
        let platform = platform.clone();
        async move {
            let mut version: Option<String> = None;
            let mut delay = Duration::from_millis(200);
            loop {
                match platform
                    .assignments(version.as_deref(), Duration::from_secs(20))
                    .await
                {
                    Ok((next, instances)) => {
                        delay = Duration::from_millis(200);
                        if version.as_deref() != Some(next.as_str()) {
                            tracing::info!(instances = instances.len(), "assignments changed");
                            version = Some(next);
                            if desired_tx.send(Some(instances)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = format!("{err:#}"), retry_in = ?delay, "could not read assignments; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    };
    let secret = agent.agent_secret();
    let reconciler = async move {
        // The secret travels until one report carrying it was accepted.
        let secret_sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        supervisor
            .run(desired_rx, Duration::from_secs(10), |reports| {
                let platform = platform.clone();
                let secret_sent = std::sync::Arc::clone(&secret_sent);
                let secret = (!secret_sent.load(std::sync::atomic::Ordering::Relaxed))
                    .then(|| secret.clone());
                async move {
                    match platform.report(&reports, secret.as_deref()).await {
                        Ok(()) => {
                            secret_sent.store(true, std::sync::atomic::Ordering::Relaxed);
                            true
                        }
                        Err(err) => {
                            tracing::warn!(
                                error = format!("{err:#}"),
                                "could not report instances; retrying"
                            );
                            false
                        }
                    }
                }
            })
            .await;
    };
    tokio::select! {
        result = agent.run() => result?,
        () = watcher => {},
        () = reconciler => {},
        () = shutdown_signal() => tracing::info!("shutdown requested; engines keep running"),
    }
    handle.stop(true).await;
    let _ = http.await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {},
                _ = terminate.recv() => {},
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}
