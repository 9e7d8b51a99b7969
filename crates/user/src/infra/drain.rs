//! The ledger drain as a background loop of `maas-worker`: it reads the settlement stream as
//! one consumer of the group, claims what stopped readers left behind, and on shutdown ends
//! after the batch in hand (whatever is unacknowledged is claimed by the next reader).

use std::time::{Duration, Instant};

use maas_shared::tasks::Tasks;

use crate::app::ledger::LedgerDrain;

/// Tunables of the drain loop.
#[derive(Clone, Copy, Debug)]
pub struct DrainConfig {
    /// Entries per batch (one PostgreSQL statement per table).
    pub batch: usize,
    /// How long an entry may stay unacknowledged by its reader before another claims it.
    pub claim_idle: Duration,
    /// Wait between reads when the stream is empty.
    pub idle_wait: Duration,
}

/// A consumer name unique to this process (a restarted worker is a new consumer; what the old
/// one held is claimed once idle).
#[must_use]
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Registers the drain loop with `tasks`.
pub fn start(drain: LedgerDrain, config: DrainConfig, tasks: &Tasks) {
    let consumer = consumer_name();
    tasks.spawn_loop("identity.ledger_drain", move |shutdown| async move {
        tracing::info!(consumer = %consumer, "draining the settlement stream");
        let claim_every = (config.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim: Option<Instant> = None;
        let mut failures: u32 = 0;
        while !shutdown.is_requested() {
            let claim = last_claim.is_none_or(|at| at.elapsed() >= claim_every);
            let wait = match drain
                .step(&consumer, claim.then_some(config.claim_idle), config.batch)
                .await
            {
                Ok(done) => {
                    failures = 0;
                    if claim {
                        last_claim = Some(Instant::now());
                    }
                    if done.entries > 0 {
                        tracing::debug!(entries = done.entries, claimed = done.claimed, "drained settlements");
                        continue;
                    }
                    config.idle_wait
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tracing::warn!(error = %err, retry_in = ?wait, "ledger drain failed; the batch stays pending and is retried");
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.requested() => {}
            }
        }
        tracing::info!(consumer = %consumer, "ledger drain stopped");
    });
}
