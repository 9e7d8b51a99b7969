//! The diagnostics queue: answers a ping by storing the worker's name under the ping's pong key.

use anyhow::Context as _;
use apalis::prelude::{BoxDynError, Data, WorkerContext};
use maas_shared::jobs::DiagnosticPing;
use maas_shared::kv::{Keyspace, RedisPool};

/// How long a pong stays readable.
const PONG_TTL_SECS: u64 = 3600;

/// What the ping handler needs.
#[derive(Clone)]
pub(crate) struct PingContext {
    pub(crate) redis: RedisPool,
    pub(crate) keyspace: Keyspace,
}

/// Idempotent: answering the same ping twice writes the same key again.
pub(crate) async fn answer_ping(
    job: DiagnosticPing,
    ctx: Data<PingContext>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    Ok(store_pong(&job, &ctx, worker.name()).await?)
}

async fn store_pong(job: &DiagnosticPing, ctx: &PingContext, worker: &str) -> anyhow::Result<()> {
    if job.delay_ms > 0 {
        set(ctx, &job.started_key(&ctx.keyspace), worker).await?;
        let delay = job.delay_ms.min(DiagnosticPing::MAX_DELAY_MS);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    set(ctx, &job.pong_key(&ctx.keyspace), worker).await?;
    tracing::info!(ping = %job.id, "answered diagnostic ping");
    Ok(())
}

async fn set(ctx: &PingContext, key: &str, worker: &str) -> anyhow::Result<()> {
    let mut conn = ctx.redis.get().await.context("Redis connection")?;
    let () = redis::cmd("SET")
        .arg(key)
        .arg(worker)
        .arg("EX")
        .arg(PONG_TTL_SECS)
        .query_async(&mut conn)
        .await
        .with_context(|| format!("writing {key}"))?;
    Ok(())
}
