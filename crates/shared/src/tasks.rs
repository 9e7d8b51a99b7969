//! Background work of a process, owned by one [`Tasks`] handle that the composition root creates
//! and the binary shuts down (DESIGN §3: no adapter spawns on its own).
//!
//! Two kinds of work are tracked:
//! - **loops** ([`Tasks::spawn_loop`]): batch writers, listeners, maintenance. Each receives a
//!   [`Shutdown`] signal and must flush and return once it fires.
//! - **work** ([`Background::spawn`]): short jobs that outlive the request that started them
//!   (settling a call after its answer went out, storing a conversation exchange).
//!
//! [`Tasks::shutdown`] first lets the work finish (it may still feed the loops), then signals the
//! loops and waits for them, all within one deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A boxed future that runs to completion in the background.
pub type BackgroundFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The port app services use to finish work after they answered (framework-free, so app layers
/// can take it; [`Tasks`] implements it).
pub trait Background: Send + Sync {
    /// Runs `work` to completion; a shutting-down process waits for it.
    fn spawn(&self, work: BackgroundFuture);
}

/// The signal a loop watches: it fires once, when the process is shutting down.
#[derive(Clone, Debug)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Resolves when shutdown has begun.
    pub async fn requested(&self) {
        self.0.cancelled().await;
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }
}

struct Inner {
    loops: TaskTracker,
    work: TaskTracker,
    stop: CancellationToken,
    names: Mutex<Vec<&'static str>>,
}

/// The background work of one process (cheap to clone; clones share it).
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("loops", &self.inner.loops.len())
            .field("work", &self.inner.work.len())
            .finish()
    }
}

/// What [`Tasks::shutdown`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every task ended within the deadline.
    pub clean: bool,
    /// Background work still running at the deadline.
    pub work_left: usize,
    /// Loops still running at the deadline.
    pub loops_left: usize,
}

impl Tasks {
    /// An empty set. Must be used inside a Tokio runtime.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                loops: TaskTracker::new(),
                work: TaskTracker::new(),
                stop: CancellationToken::new(),
                names: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts a long-running loop named `name`; `make` receives the shutdown signal, on which the
    /// loop must flush what it holds and return.
    pub fn spawn_loop<F, Fut>(&self, name: &'static str, make: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
        let future = make(Shutdown(self.inner.stop.clone()));
        self.inner.loops.spawn(async move {
            future.await;
            tracing::debug!(task = name, "background loop ended");
        });
    }

    /// The shutdown signal (for loops owned by the binary itself, such as an apalis monitor).
    #[must_use]
    pub fn shutdown_signal(&self) -> Shutdown {
        Shutdown(self.inner.stop.clone())
    }

    /// Names of the loops started so far, in order.
    #[must_use]
    pub fn loop_names(&self) -> Vec<&'static str> {
        self.inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets running work finish, then signals every loop and waits for them, all within `timeout`.
    /// Work started after this call still runs, but is not waited for once the deadline passed.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + timeout;
        self.inner.work.close();
        let work_done = tokio::time::timeout_at(deadline, self.inner.work.wait())
            .await
            .is_ok();
        self.inner.stop.cancel();
        self.inner.loops.close();
        let loops_done = tokio::time::timeout_at(deadline, self.inner.loops.wait())
            .await
            .is_ok();
        let report = ShutdownReport {
            clean: work_done && loops_done,
            work_left: self.inner.work.len(),
            loops_left: self.inner.loops.len(),
        };
        if report.clean {
            tracing::info!("background tasks flushed and stopped");
        } else {
            tracing::warn!(
                work_left = report.work_left,
                loops_left = report.loops_left,
                "background tasks still running at the shutdown deadline"
            );
        }
        report
    }
}

impl Background for Tasks {
    fn spawn(&self, work: BackgroundFuture) {
        self.inner.work.spawn(work);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_work_before_stopping_loops() {
        let tasks = Tasks::new();
        let fed = Arc::new(AtomicUsize::new(0));
        let flushed = Arc::new(AtomicUsize::new(0));
        let (fed_in_loop, flushed_in_loop) = (Arc::clone(&fed), Arc::clone(&flushed));
        tasks.spawn_loop("writer", move |shutdown| async move {
            shutdown.requested().await;
            // What the work fed before the signal is flushed now.
            flushed_in_loop.store(fed_in_loop.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        for _ in 0..3 {
            let fed = Arc::clone(&fed);
            Background::spawn(
                &tasks,
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    fed.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        let report = tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            report,
            ShutdownReport {
                clean: true,
                work_left: 0,
                loops_left: 0
            }
        );
        assert_eq!(flushed.load(Ordering::SeqCst), 3);
        assert_eq!(tasks.loop_names(), vec!["writer"]);
    }

    #[tokio::test]
    async fn a_loop_that_ignores_the_signal_is_reported_at_the_deadline() {
        let tasks = Tasks::new();
        tasks.spawn_loop("stubborn", |_| std::future::pending::<()>());
        let report = tasks.shutdown(Duration::from_millis(50)).await;
        assert_eq!(
            report,
            ShutdownReport {
                clean: false,
                work_left: 0,
                loops_left: 1
            }
        );
    }
}
