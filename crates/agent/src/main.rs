//! `maas-agent`: the node agent that runs on every GPU server.
//!
//! It joins the platform once with its server's one-time join token and keeps the node
//! credential it receives in its data directory (mode 0600), so a restarted agent is the same
//! node. Then it heartbeats and reports the node's CPU, memory, disks and GPUs (from
//! `nvidia-smi` when it exists) at the intervals the platform gives it, and answers `GET
//! /health` for the platform. Starting engines arrives with deployments.

mod node;
mod resources;

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

/// The MaaS node agent.
#[derive(Debug, Parser)]
#[command(version, about)]
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
    let server = actix_web::HttpServer::new(|| actix_web::App::new().service(health))
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
    let handle = server.handle();
    let http = tokio::spawn(server);
    tracing::info!(listen = %bound, advertise = %advertise, "maas-agent listening");

    let mut agent = node::Agent::start(&args, advertise).await?;
    tokio::select! {
        result = agent.run() => result?,
        () = shutdown_signal() => tracing::info!("shutdown requested"),
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
