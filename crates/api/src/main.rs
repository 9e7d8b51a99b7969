//! `maas-api` binary: load settings → init telemetry → build → serve.

use clap::Parser;
use maas_shared::config::Settings;

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
    maas_shared::telemetry::init(&settings.telemetry)?;
    let app = maas_api::Application::build(&settings).await?;
    tracing::info!(
        environment = settings.environment.as_str(),
        address = %format!("{}:{}", settings.server.host, app.port()),
        "maas-api listening; docs at /docs"
    );
    app.run_until_stopped().await?;
    tracing::info!("maas-api stopped");
    Ok(())
}
