//! `maas-agent`: the node agent that runs on every GPU server.
//!
//! This first cut only answers `GET /health` so that deployments can probe it; starting and
//! stopping engines, logs, resources and the per-server token arrive with the deploy issue.

use clap::Parser;
use serde::Serialize;

/// The MaaS node agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MAAS_AGENT_LISTEN", default_value = "127.0.0.1:9090")]
    listen: String,
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
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tracing::info!(listen = %args.listen, "maas-agent listening");
    actix_web::HttpServer::new(|| actix_web::App::new().service(health))
        .bind(&args.listen)?
        .run()
        .await?;
    Ok(())
}
