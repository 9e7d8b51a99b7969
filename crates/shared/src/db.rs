//! The PostgreSQL pool: one per process, built by the composition root, cloned into adapters.

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use secrecy::ExposeSecret;

use crate::config::DatabaseSettings;

/// Connects with the configured pool size and timeouts, retrying while the server comes up
/// (1 s between attempts, growing to 5 s).
///
/// # Errors
/// The last connection error once `connect_retries` attempts have failed.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(settings.url.expose_secret().to_owned());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .sqlx_logging(false);
    let attempts = settings.connect_retries.max(1);
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=attempts {
        match Database::connect(options.clone()).await {
            Ok(db) => return Ok(db),
            Err(err) if attempt < attempts => {
                tracing::warn!(attempt, attempts, error = %err, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("connecting to PostgreSQL"),
        }
    }
    anyhow::bail!("connecting to PostgreSQL: no attempt made")
}

/// `SELECT 1` through the pool.
///
/// # Errors
/// When no connection can be had or the query fails.
pub async fn ping(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared("SELECT 1")
        .await
        .context("PostgreSQL ping")?;
    Ok(())
}
