//! Admission: a fixed number of requests compute at once, a bounded number wait, the rest
//! are refused at once (the caller retries elsewhere or later).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The wait queue is full.
    #[error("the engine is at capacity and its queue is full")]
    QueueFull,
    /// The request waited longer than the queue timeout.
    #[error("the request waited too long for a free slot")]
    TimedOut,
}

/// The admission gate.
#[derive(Debug, Clone)]
pub struct Gate {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    concurrency: usize,
    queue: usize,
    queue_timeout: Duration,
}

/// Held while a request computes; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// `concurrency` requests at once (at least 1), `queue` more waiting at most
    /// `queue_timeout` each.
    #[must_use]
    pub fn new(concurrency: usize, queue: usize, queue_timeout: Duration) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            concurrency,
            queue,
            queue_timeout,
        }
    }

    /// Waits for a slot, or refuses when the queue is full or the wait is too long. A caller
    /// that goes away while waiting leaves the queue.
    ///
    /// # Errors
    /// [`Refused`].
    pub async fn enter(&self) -> Result<Slot, Refused> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::QueueFull);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Refused::TimedOut),
        }
    }

    /// Requests computing now.
    #[must_use]
    pub fn busy(&self) -> usize {
        self.concurrency - self.slots.available_permits()
    }

    /// Requests waiting now.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_concurrency_and_queue_requests_are_refused() {
        let gate = Gate::new(1, 1, Duration::from_secs(5));
        let first = gate.enter().await;
        assert!(first.is_ok());
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter().await.map(|_| ()) })
        };
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.enter().await.err(), Some(Refused::QueueFull));
        drop(first);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_the_queue_timeout() {
        let gate = Gate::new(1, 4, Duration::from_millis(20));
        let _busy = gate.enter().await;
        assert_eq!(gate.enter().await.err(), Some(Refused::TimedOut));
        assert_eq!(gate.queued(), 0);
        assert_eq!(gate.busy(), 1);
    }
}
