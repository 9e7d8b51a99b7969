//! The PostgreSQL pool: one per process, built by the composition root (`maas-platform`) and
//! cloned into adapters.

use anyhow::Context as _;
use sea_orm::{ConnectionTrait, DatabaseConnection};

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
