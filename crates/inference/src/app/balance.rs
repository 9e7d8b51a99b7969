//! Choosing among the upstreams of a model: least outstanding requests among healthy ones;
//! an upstream that fails several times in a row is ejected for a while, then probed again
//! with live traffic (passive health checking).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::domain::provider::ProviderId;

/// Consecutive failures that eject an upstream.
pub const EJECT_AFTER: u32 = 3;
/// How long an ejected upstream is skipped before it is tried again.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Health {
    outstanding: AtomicUsize,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

/// Per-upstream load and health of this replica.
#[derive(Clone, Default)]
pub struct Balancer {
    states: Arc<RwLock<HashMap<ProviderId, Arc<Health>>>>,
}

/// Counts one request as outstanding until dropped.
pub struct InFlight(Arc<Health>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    fn state(&self, id: ProviderId) -> Arc<Health> {
        if let Some(state) = self
            .states
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Arc::clone(state);
        }
        let mut states = self.states.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(states.entry(id).or_default())
    }

    /// Orders candidates: healthy ones by fewest outstanding requests (ties keep their given
    /// order), ejected ones last (still tried when nothing else answers).
    #[must_use]
    pub fn order<T>(&self, candidates: Vec<T>, id: impl Fn(&T) -> ProviderId) -> Vec<T> {
        let now = Instant::now();
        let mut keyed: Vec<(bool, usize, usize, T)> = candidates
            .into_iter()
            .enumerate()
            .map(|(position, candidate)| {
                let state = self.state(id(&candidate));
                let ejected = state
                    .ejected_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some_and(|until| until > now);
                (
                    ejected,
                    state.outstanding.load(Ordering::Relaxed),
                    position,
                    candidate,
                )
            })
            .collect();
        keyed
            .sort_by_key(|(ejected, outstanding, position, _)| (*ejected, *outstanding, *position));
        keyed
            .into_iter()
            .map(|(_, _, _, candidate)| candidate)
            .collect()
    }

    /// Marks a request as started on `id`.
    #[must_use]
    pub fn start(&self, id: ProviderId) -> InFlight {
        let state = self.state(id);
        state.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }

    /// Records that `id` answered.
    pub fn succeeded(&self, id: ProviderId) {
        let state = self.state(id);
        state.failures.store(0, Ordering::Relaxed);
        *state
            .ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Records that `id` failed; ejects it after [`EJECT_AFTER`] failures in a row.
    pub fn failed(&self, id: ProviderId) {
        let state = self.state(id);
        let failures = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= EJECT_AFTER {
            *state
                .ejected_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + EJECT_FOR);
            tracing::warn!(provider = %id, failures, "upstream ejected after consecutive failures");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_outstanding_first_and_ejected_last() {
        let balancer = Balancer::default();
        let (a, b, c) = (ProviderId::new(), ProviderId::new(), ProviderId::new());
        let busy = balancer.start(a);
        assert_eq!(balancer.order(vec![a, b, c], |p| *p), vec![b, c, a]);
        drop(busy);
        assert_eq!(balancer.order(vec![a, b, c], |p| *p), vec![a, b, c]);
        for _ in 0..EJECT_AFTER {
            balancer.failed(b);
        }
        assert_eq!(balancer.order(vec![a, b, c], |p| *p), vec![a, c, b]);
        balancer.succeeded(b);
        assert_eq!(balancer.order(vec![b, a], |p| *p), vec![b, a]);
    }
}
