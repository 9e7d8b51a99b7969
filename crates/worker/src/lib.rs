//! `maas-worker`: every apalis worker and schedule of the platform, over the one composition
//! root. It registers one worker per queue (concurrency, retries, tracing, panic catching) and
//! one cron worker per schedule; on SIGTERM/SIGINT it stops taking jobs, lets running ones
//! finish within `worker.shutdown_timeout_secs`, then flushes and stops the background tasks.
//!
//! Jobs are delivered at least once: every handler reloads its aggregate and does only the step
//! that is still due. A schedule fires in every replica, but its job is pushed with the tick as
//! idempotency key, so it runs once per tick across any number of replicas.

mod conversations;
mod deploy;
mod diagnostics;
mod knowledge;
mod nodes;
mod quotas;
mod schedule;
mod tasks;

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use apalis::layers::retry::RetryPolicy;
use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt as _};
use maas_inference::jobs::ConversationExpiryJob;
use maas_knowledge::jobs::{IngestJob, IngestSweepJob};
use maas_model::jobs::{DeployJob, NodeLivenessJob, RemoteTaskJob, StatusSyncJob, TaskTickJob};
use maas_platform::{Platform, Role, Settings};
use maas_shared::jobs::{self, DiagnosticPing, Job, JobProducer};
use maas_user::jobs::ReservationSweepJob;

/// How often a failed job is retried in process before it is left dead.
pub const RETRIES: usize = 5;

/// Connects and runs every worker until `shutdown` resolves, then drains.
///
/// # Errors
/// When a dependency cannot be reached, a schedule does not parse or a worker fails.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let expiry_schedule = schedule(
        "conversations.expiry_schedule",
        &settings.conversations.expiry_schedule,
    )?;
    let sweep_schedule = schedule(
        "identity.reservation_sweep_schedule",
        &settings.identity.reservation_sweep_schedule,
    )?;
    let liveness_schedule = schedule(
        "compute.liveness_schedule",
        &settings.compute.liveness_schedule,
    )?;
    let sync_schedule = schedule(
        "compute.status_sync_schedule",
        &settings.compute.status_sync_schedule,
    )?;
    let task_schedule = schedule("compute.task_schedule", &settings.compute.task_schedule)?;
    let ingest_sweep_schedule = schedule(
        "knowledge.sweep_schedule",
        &settings.knowledge.sweep_schedule,
    )?;
    let platform = Platform::connect(settings, Role::Server).await?;
    let identity = platform.identity()?;
    platform.start_ledger_drain(&identity);
    let conn = platform.multiplexed().get().await?;
    let keyspace = platform.keyspace().clone();
    let concurrency = platform.settings().worker.concurrency;
    let drain_timeout = Duration::from_secs(platform.settings().worker.shutdown_timeout_secs);

    let conversations = platform.conversations();
    let ping_ctx = diagnostics::PingContext {
        redis: platform.redis().clone(),
        keyspace: keyspace.clone(),
    };
    let ping_storage = jobs::storage::<DiagnosticPing>(conn.clone(), &keyspace);
    let expiry_storage = jobs::storage::<ConversationExpiryJob>(conn.clone(), &keyspace);
    let expiry_producer = JobProducer::<ConversationExpiryJob>::new(conn.clone(), &keyspace);
    let sweep_storage = jobs::storage::<ReservationSweepJob>(conn.clone(), &keyspace);
    let sweep_producer = JobProducer::<ReservationSweepJob>::new(conn.clone(), &keyspace);
    let quotas = identity.quotas.clone();
    let compute = platform.compute()?;
    let nodes = compute.nodes.clone();
    let deployer = compute.deployer.clone();
    let sync_deployer = compute.deployer.clone();
    platform.listen_for_compute_changes(&compute)?;
    let quota: std::sync::Arc<dyn maas_user::contract::QuotaGate> =
        std::sync::Arc::new(identity.quotas.clone());
    let gateway = platform.gateway(quota, Some(std::sync::Arc::new(compute.directory.clone())))?;
    let kb = platform.knowledge(&identity, &gateway)?;
    let ingestor = kb.ingestor.clone();
    let sweeper = kb.ingestor;
    let stalled = knowledge::StalledAfter(Duration::from_secs(
        platform.settings().knowledge.stalled_after_secs.max(1),
    ));
    let ingest_storage = jobs::storage::<IngestJob>(conn.clone(), &keyspace);
    let ingest_name = jobs::worker_name(IngestJob::QUEUE);
    let ingest_sweep_storage = jobs::storage::<IngestSweepJob>(conn.clone(), &keyspace);
    let ingest_sweep_producer = JobProducer::<IngestSweepJob>::new(conn.clone(), &keyspace);
    let ingest_sweep_name = jobs::worker_name(IngestSweepJob::QUEUE);
    let ingest_schedule_name = jobs::worker_name("schedule.ingest_sweep");
    let tick_tasks = compute.tasks.clone();
    let run_tasks = compute.tasks;
    let tick_storage = jobs::storage::<TaskTickJob>(conn.clone(), &keyspace);
    let tick_producer = JobProducer::<TaskTickJob>::new(conn.clone(), &keyspace);
    let tick_name = jobs::worker_name(TaskTickJob::QUEUE);
    let tick_schedule_name = jobs::worker_name("schedule.task_tick");
    let run_storage = jobs::storage::<RemoteTaskJob>(conn.clone(), &keyspace);
    let run_name = jobs::worker_name(RemoteTaskJob::QUEUE);
    let deploy_storage = jobs::storage::<DeployJob>(conn.clone(), &keyspace);
    let deploy_name = jobs::worker_name(DeployJob::QUEUE);
    let sync_storage = jobs::storage::<StatusSyncJob>(conn.clone(), &keyspace);
    let sync_producer = JobProducer::<StatusSyncJob>::new(conn.clone(), &keyspace);
    let sync_name = jobs::worker_name(StatusSyncJob::QUEUE);
    let sync_schedule_name = jobs::worker_name("schedule.status_sync");
    let liveness_storage = jobs::storage::<NodeLivenessJob>(conn.clone(), &keyspace);
    let liveness_producer = JobProducer::<NodeLivenessJob>::new(conn.clone(), &keyspace);
    let liveness_name = jobs::worker_name(NodeLivenessJob::QUEUE);
    let liveness_schedule_name = jobs::worker_name("schedule.node_liveness");

    let ping_name = jobs::worker_name(DiagnosticPing::QUEUE);
    let expiry_name = jobs::worker_name(ConversationExpiryJob::QUEUE);
    let schedule_name = jobs::worker_name("schedule.conversation_expiry");
    let sweep_name = jobs::worker_name(ReservationSweepJob::QUEUE);
    let sweep_schedule_name = jobs::worker_name("schedule.reservation_sweep");
    let monitor = Monitor::new()
        .register(move |_| {
            WorkerBuilder::new(ping_name.clone())
                .backend(jobs::polled(ping_storage.clone()))
                .data(ping_ctx.clone())
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(diagnostics::answer_ping)
        })
        .register(move |_| {
            WorkerBuilder::new(expiry_name.clone())
                .backend(jobs::polled(expiry_storage.clone()))
                .data(conversations.clone())
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(conversations::expire)
        })
        .register(move |_| {
            WorkerBuilder::new(schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(expiry_schedule.clone()))
                .data(expiry_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<ConversationExpiryJob>)
        })
        .register(move |_| {
            WorkerBuilder::new(sweep_name.clone())
                .backend(jobs::polled(sweep_storage.clone()))
                .data(quotas.clone())
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(quotas::sweep)
        })
        .register(move |_| {
            WorkerBuilder::new(sweep_schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(sweep_schedule.clone()))
                .data(sweep_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<ReservationSweepJob>)
        })
        .register(move |_| {
            WorkerBuilder::new(liveness_name.clone())
                .backend(jobs::polled(liveness_storage.clone()))
                .data(nodes.clone())
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(nodes::sweep)
        })
        .register(move |_| {
            WorkerBuilder::new(liveness_schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(liveness_schedule.clone()))
                .data(liveness_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<NodeLivenessJob>)
        })
        .register(move |_| {
            WorkerBuilder::new(deploy_name.clone())
                .backend(jobs::polled(deploy_storage.clone()))
                .data(deployer.clone())
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(deploy::deploy)
        })
        .register(move |_| {
            WorkerBuilder::new(sync_name.clone())
                .backend(jobs::polled(sync_storage.clone()))
                .data(sync_deployer.clone())
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(deploy::sync)
        })
        .register(move |_| {
            WorkerBuilder::new(sync_schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(sync_schedule.clone()))
                .data(sync_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<StatusSyncJob>)
        })
        .register(move |_| {
            WorkerBuilder::new(tick_name.clone())
                .backend(jobs::polled(tick_storage.clone()))
                .data(tick_tasks.clone())
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(tasks::tick)
        })
        .register(move |_| {
            WorkerBuilder::new(tick_schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(task_schedule.clone()))
                .data(tick_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<TaskTickJob>)
        })
        .register(move |_| {
            // Not retried in process: a run that failed to store its result is left running
            // and its redelivery marks it lost rather than running the command twice.
            WorkerBuilder::new(run_name.clone())
                .backend(jobs::polled(run_storage.clone()))
                .data(run_tasks.clone())
                .concurrency(concurrency)
                .enable_tracing()
                .catch_panic()
                .build(tasks::run)
        })
        .register(move |_| {
            WorkerBuilder::new(ingest_name.clone())
                .backend(jobs::polled(ingest_storage.clone()))
                .data(ingestor.clone())
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(knowledge::ingest)
        })
        .register(move |_| {
            WorkerBuilder::new(ingest_sweep_name.clone())
                .backend(jobs::polled(ingest_sweep_storage.clone()))
                .data(sweeper.clone())
                .data(stalled)
                .concurrency(1)
                .retry(RetryPolicy::retries(RETRIES))
                .enable_tracing()
                .catch_panic()
                .build(knowledge::sweep)
        })
        .register(move |_| {
            WorkerBuilder::new(ingest_schedule_name.clone())
                .backend(apalis_cron::CronScheduler::new(
                    ingest_sweep_schedule.clone(),
                ))
                .data(ingest_sweep_producer.clone())
                .enable_tracing()
                .build(schedule::push_tick::<IngestSweepJob>)
        })
        .shutdown_timeout(drain_timeout);
    tracing::info!(
        queues = ?[DiagnosticPing::QUEUE, ConversationExpiryJob::QUEUE, ReservationSweepJob::QUEUE, NodeLivenessJob::QUEUE, DeployJob::QUEUE, StatusSyncJob::QUEUE, TaskTickJob::QUEUE, RemoteTaskJob::QUEUE, IngestJob::QUEUE, IngestSweepJob::QUEUE],
        concurrency,
        "maas-worker running"
    );
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutdown requested; finishing in-flight jobs");
            Ok(())
        })
        .await;
    let report = platform.shutdown(drain_timeout).await;
    result.context("running the workers")?;
    anyhow::ensure!(
        report.clean,
        "background tasks still running at the shutdown deadline: {report:?}"
    );
    Ok(())
}

/// The cron schedule of setting `name`.
fn schedule(name: &str, expression: &str) -> anyhow::Result<cron::Schedule> {
    cron::Schedule::from_str(expression).with_context(|| {
        format!("{name} `{expression}` is not a cron expression (sec min hour day month weekday)")
    })
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
