//! The platform's retry policies, on `backon`: one place says how hard each kind of operation
//! tries again, instead of a hand-written loop per adapter.

use std::time::Duration;

use backon::ExponentialBuilder;

/// Batched background writes: 200 ms, doubling, 5 attempts in all (about 3 s), with jitter so
/// replicas do not retry in step.
#[must_use]
pub fn write_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_max_times(4)
        .with_jitter()
}

/// Connecting at start-up while a dependency comes up: 1 s, doubling to at most 5 s, `attempts`
/// attempts in all.
#[must_use]
pub fn startup_backoff(attempts: u32) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_max_times(usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX))
}

/// Long-lived connections (pub/sub listeners) that must come back after an outage: 500 ms,
/// doubling to at most 10 s, without end.
#[must_use]
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .without_max_times()
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder as _;

    use super::*;

    #[test]
    fn startup_backoff_makes_exactly_the_configured_attempts() {
        // One first try plus one delay per retry.
        let delays: Vec<Duration> = startup_backoff(4).build().collect();
        assert_eq!(
            delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ]
        );
        assert_eq!(startup_backoff(1).build().count(), 0);
    }

    #[test]
    fn write_backoff_retries_four_times() {
        assert_eq!(write_backoff().build().count(), 4);
    }
}
