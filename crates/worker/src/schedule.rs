//! Scheduled jobs: every replica's cron worker pushes the job on every tick, keyed by the tick's
//! scheduled time, so the queue receives it once per tick however many replicas run.

use apalis::prelude::{BoxDynError, Data};
use apalis_cron::Tick;
use maas_shared::jobs::{Job, JobProducer, Scheduled};

/// The idempotency key of `J`'s job for the tick scheduled at `timestamp` (Unix seconds).
#[must_use]
pub(crate) fn tick_key<J: Job>(timestamp: u64) -> String {
    format!("schedule:{}:{timestamp}", J::QUEUE)
}

/// Pushes `J` once for this tick.
pub(crate) async fn push_tick<J: Scheduled>(
    tick: Tick,
    producer: Data<JobProducer<J>>,
) -> Result<(), BoxDynError> {
    let timestamp = tick.get_timestamp();
    producer
        .push_once(J::at_tick(timestamp), &tick_key::<J>(timestamp))
        .await?;
    tracing::debug!(
        queue = J::QUEUE,
        timestamp,
        "scheduled job pushed for this tick"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_queue_and_the_tick() {
        assert_eq!(
            tick_key::<maas_inference::jobs::ConversationExpiryJob>(1_700_000_000),
            "schedule:inference.conversation_expiry:1700000000"
        );
    }
}
