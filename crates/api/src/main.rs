//! `maas-api` binary: load settings → init telemetry → build → serve.

use std::time::Duration;

use clap::Parser;
use maas_platform::{Platform, Role, Settings};

/// The MaaS platform HTTP API server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Print the OpenAPI document as JSON and exit (needs no database or Redis).
    #[arg(long)]
    print_openapi: bool,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", maas_api::openapi::to_pretty_json()?);
        return Ok(());
    }
    let settings = Settings::load()?;
    maas_platform::telemetry::init(&settings.telemetry)?;
    let platform = Platform::connect(settings, Role::Server).await?;
    let settings = platform.settings();
    let app = maas_api::Application::build(&platform)?;
    tracing::info!(
        environment = settings.environment.as_str(),
        address = %format!("{}:{}", settings.server.host, app.port()),
        "maas-api listening; docs at /docs"
    );
    // SIGTERM: the server stops accepting, lets in-flight requests finish, and returns; then the
    // background work (settlements, batch writers) is flushed within the same timeout.
    app.run_until_stopped().await?;
    let timeout = Duration::from_secs(settings.server.shutdown_timeout_secs);
    let report = platform.shutdown(timeout).await;
    anyhow::ensure!(
        report.clean,
        "background tasks still running at the shutdown deadline: {report:?}"
    );
    tracing::info!("maas-api stopped");
    Ok(())
}
