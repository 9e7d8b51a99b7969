//! `maas-worker`: the composition root of background work. It registers one apalis worker per
//! queue (each with tracing, panic catching and retries), and on SIGTERM/SIGINT stops taking new
//! jobs and lets running ones finish within `worker.shutdown_timeout_secs`.
//!
//! Jobs are delivered at least once: every handler reloads its aggregate and does only the step
//! that is still due.

mod conversations;
mod diagnostics;

use std::time::Duration;

use apalis::layers::retry::RetryPolicy;
use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt, WorkerFactoryFn};
use maas_inference::jobs::ConversationExpiryJob;
use maas_shared::clock::{Clock, SystemClock};
use maas_shared::config::Settings;
use maas_shared::jobs::{self, DiagnosticPing, Job, JobProducer};
use maas_shared::kv::Keyspace;

/// How often a failed job is retried before it is left dead.
const RETRIES: usize = 5;

/// Connects to Redis and runs every worker until `shutdown` resolves, then drains.
///
/// # Errors
/// When Redis cannot be reached or a worker fails to start.
pub async fn run(
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let conn = jobs::connection(&settings.redis).await?;
    let redis = maas_shared::kv::pool(&settings.redis)?;
    let keyspace = Keyspace::new(&settings.redis.key_prefix);
    let concurrency = settings.worker.concurrency;

    let db = maas_shared::db::connect(&settings.database).await?;
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(SystemClock);
    let conversations = maas_inference::infra::conversation_service(settings, db, clock);
    conversations::schedule(
        JobProducer::<ConversationExpiryJob>::new(conn.clone(), &keyspace),
        Duration::from_secs(settings.conversations.expiry_interval_secs.max(1)),
    );

    let ping_worker = jobs::worker_name(DiagnosticPing::QUEUE);
    let ping_ctx = diagnostics::PingContext {
        redis,
        keyspace: keyspace.clone(),
        worker: ping_worker.clone(),
    };
    let monitor = Monitor::new()
        .register(
            WorkerBuilder::new(&ping_worker)
                .enable_tracing()
                .catch_panic()
                .retry(RetryPolicy::retries(RETRIES))
                .concurrency(concurrency)
                .data(ping_ctx)
                .backend(jobs::storage::<DiagnosticPing>(conn.clone(), &keyspace))
                .build_fn(diagnostics::answer_ping),
        )
        .register(
            WorkerBuilder::new(jobs::worker_name(ConversationExpiryJob::QUEUE))
                .enable_tracing()
                .catch_panic()
                .retry(RetryPolicy::retries(RETRIES))
                .concurrency(1)
                .data(conversations)
                .backend(jobs::storage::<ConversationExpiryJob>(
                    conn.clone(),
                    &keyspace,
                ))
                .build_fn(conversations::expire),
        )
        .shutdown_timeout(Duration::from_secs(settings.worker.shutdown_timeout_secs));
    tracing::info!(queues = ?[DiagnosticPing::QUEUE, ConversationExpiryJob::QUEUE], concurrency, "maas-worker running");
    monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutdown requested; finishing in-flight jobs");
            Ok(())
        })
        .await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the worker");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
