//! Background job wiring on apalis + Redis (DESIGN §5).
//!
//! Each job type names its queue; producers (the API, the CLI) push through a [`JobProducer`],
//! `maas-worker` consumes from [`storage`] on the same queue. Delivery is at least once, so every
//! handler must be idempotent. A scheduled job is pushed by every worker replica on every tick
//! with [`JobProducer::push_once`] and the tick as its idempotency key, so it runs once per tick
//! however many replicas there are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::{
    BackendExt as _, PollSnapshot, PollStrategy, PollWith, TaskBuilder, TaskSink as _,
};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kv::Keyspace;

/// How long an idempotency key is remembered: longer than any schedule's period.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often an idle worker looks for new jobs (apalis-redis otherwise waits for its heartbeat).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How an idle worker polls its queue: every `period`, its timer re-armed (and registered with
/// the waker) in the same poll that fires it.
///
/// apalis-core 1.0's `IntervalStrategy` replaces a fired timer without polling the new one, so
/// when the fetch that the tick starts also completes in that poll, nothing is left to wake the
/// worker and it sleeps until its next heartbeat, 30 s later: seen as scheduled jobs that ran
/// once and then not again for half a minute under load.
#[derive(Debug)]
pub struct Polling {
    period: Duration,
    timer: tokio::time::Interval,
}

impl Polling {
    /// Polls every `period` (the first time one `period` from now).
    #[must_use]
    pub fn every(period: Duration) -> Self {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { period, timer }
    }
}

impl Clone for Polling {
    fn clone(&self) -> Self {
        Self::every(self.period)
    }
}

impl PollStrategy for Polling {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _snapshot: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        // Ticks until the timer is pending again, which registers the waker for the next one.
        let mut fired = false;
        while self.timer.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// The storage of queue `J::QUEUE`, polled every [`POLL_INTERVAL`] while idle: what a worker
/// of `J` consumes.
#[must_use]
pub fn polled<J: Job>(storage: JobStorage<J>) -> PollWith<JobStorage<J>, Polling> {
    storage.poll_with_strategy(Polling::every(POLL_INTERVAL))
}

/// A job payload type and the queue it travels on.
pub trait Job: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    /// Queue name, stable across releases (`context.job`).
    const QUEUE: &'static str;
}

/// A job pushed on a schedule: made for one tick (Unix seconds of its scheduled time).
pub trait Scheduled: Job {
    /// The job of the tick scheduled at `timestamp`.
    fn at_tick(timestamp: u64) -> Self;
}

/// The apalis storage for job type `J`.
pub type JobStorage<J> = RedisStorage<J>;

/// The storage of queue `J::QUEUE` inside this deployment's keyspace, over the process's
/// multiplexed connection.
#[must_use]
pub fn storage<J: Job>(conn: ConnectionManager, keyspace: &Keyspace) -> JobStorage<J> {
    let queue = keyspace.key(&format!("jobs:{}", J::QUEUE));
    RedisStorage::new(conn).with_config(
        Config::default()
            .queue(&queue)
            .idempotency_ttl(Some(IDEMPOTENCY_TTL)),
    )
}

/// A unique worker name for this process: apalis tracks liveness per worker id, so two
/// processes must never share one.
#[must_use]
pub fn worker_name(queue: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    format!(
        "{queue}@{host}:{}:{}:{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    )
}

/// Pushes jobs of type `J`.
pub struct JobProducer<J: Job> {
    storage: JobStorage<J>,
}

impl<J: Job> Clone for JobProducer<J> {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
        }
    }
}

impl<J: Job> JobProducer<J> {
    /// A producer on `J::QUEUE`.
    #[must_use]
    pub fn new(conn: ConnectionManager, keyspace: &Keyspace) -> Self {
        Self {
            storage: storage::<J>(conn, keyspace),
        }
    }

    /// Enqueues `job`.
    ///
    /// # Errors
    /// When Redis rejects the push.
    pub async fn push(&self, job: J) -> anyhow::Result<()> {
        let mut storage = self.storage.clone();
        storage
            .push(job)
            .await
            .with_context(|| format!("enqueueing a {} job", J::QUEUE))
    }

    /// Enqueues `job` unless a job with the same `key` was pushed within [`IDEMPOTENCY_TTL`]
    /// (by any process): the key of a scheduled job is its tick.
    ///
    /// # Errors
    /// When Redis rejects the push.
    pub async fn push_once(&self, job: J, key: &str) -> anyhow::Result<()> {
        let mut storage = self.storage.clone();
        let task = TaskBuilder::new(job).idempotency_key(key).build();
        storage
            .push_task(task)
            .await
            .with_context(|| format!("enqueueing a {} job", J::QUEUE))
    }
}

impl<J: Job> JobProducer<J> {
    /// Enqueues `job` to run after `delay` (whole seconds: apalis schedules by the second),
    /// unless a job with the same `key` was pushed within [`IDEMPOTENCY_TTL`].
    ///
    /// # Errors
    /// When Redis rejects the push.
    pub async fn push_once_after(&self, job: J, key: &str, delay: Duration) -> anyhow::Result<()> {
        let mut storage = self.storage.clone();
        let mut builder = TaskBuilder::new(job).idempotency_key(key);
        if !delay.is_zero() {
            builder = builder.run_after(delay);
        }
        storage
            .push_task(builder.build())
            .await
            .with_context(|| format!("enqueueing a {} job", J::QUEUE))
    }
}

/// Proves the API → Redis → worker path end to end: the worker answers by storing a pong.
/// Used by `maas diagnostics ping-worker` and the worker integration test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticPing {
    /// Correlates the pong with this ping.
    pub id: uuid::Uuid,
    /// Simulated work before answering, in milliseconds (capped at [`DiagnosticPing::MAX_DELAY_MS`]);
    /// lets operators and tests watch a job that is in flight, e.g. across a worker shutdown.
    #[serde(default)]
    pub delay_ms: u64,
}

impl Job for DiagnosticPing {
    const QUEUE: &'static str = "diagnostics.ping";
}

impl DiagnosticPing {
    /// The longest simulated work a ping may ask for.
    pub const MAX_DELAY_MS: u64 = 30_000;

    /// The key where the worker notes that it started on this ping.
    #[must_use]
    pub fn started_key(&self, keyspace: &Keyspace) -> String {
        keyspace.key(&format!("diagnostics:started:{}", self.id))
    }

    /// The key where the worker stores its answer (the worker's name).
    #[must_use]
    pub fn pong_key(&self, keyspace: &Keyspace) -> String {
        keyspace.key(&format!("diagnostics:pong:{}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller that, like apalis's worker, only looks at the strategy when woken and returns
    /// pending after each tick: it must be woken again for every later tick.
    #[tokio::test]
    async fn a_fired_poll_timer_wakes_the_worker_again() {
        let mut polling = Polling::every(Duration::from_millis(10));
        let mut ticks = 0;
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| {
                if polling.poll_drive(cx, &PollSnapshot::default()).is_ready() {
                    ticks += 1;
                }
                if ticks == 5 {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            }),
        )
        .await;
        assert!(waited.is_ok(), "woken for only {ticks} of 5 ticks");
    }
}
