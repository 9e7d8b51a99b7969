//! `maas-worker` binary: load settings → init telemetry → run workers until SIGTERM/SIGINT.

use maas_platform::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    maas_platform::telemetry::init(&settings.telemetry)?;
    maas_worker::run(settings, maas_worker::shutdown_signal()).await?;
    tracing::info!("maas-worker stopped");
    Ok(())
}
