//! Background batch writers: producers push into an unbounded channel without ever waking the
//! writer; the writer wakes on a timer, drains what accumulated and writes it in batches.
//! (A writer parked on `recv` would be woken, on another thread, by every single item.)

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::MissedTickBehavior;

use crate::tasks::Shutdown;

/// The writer loop: drains `rx` every `every` in batches of at most `max` items, handing each
/// batch to `write`. When shutdown is requested or every sender is gone, it writes what is left
/// and returns. Register it with [`crate::tasks::Tasks::spawn_loop`].
pub async fn drain<T, F, Fut>(
    mut rx: UnboundedReceiver<T>,
    every: Duration,
    max: usize,
    mut write: F,
    shutdown: Shutdown,
) where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = shutdown.requested() => true,
            };
            loop {
                let mut batch = Vec::new();
                let mut closed = false;
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let full = batch.len() == max;
                if !batch.is_empty() {
                    write(batch).await;
                }
                if closed {
                    return;
                }
                if !full {
                    break;
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tasks::Tasks;

    fn writer(
        rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
        every: Duration,
        tasks: &Tasks,
    ) -> Arc<Mutex<Vec<usize>>> {
        let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
        let sink = Arc::clone(&seen);
        tasks.spawn_loop("test writer", move |shutdown| {
            drain(
                rx,
                every,
                3,
                move |batch: Vec<u32>| {
                    let sink = Arc::clone(&sink);
                    async move { sink.lock().unwrap().push(batch.len()) }
                },
                shutdown,
            )
        });
        seen
    }

    #[tokio::test]
    async fn everything_sent_is_written_in_bounded_batches_and_the_rest_on_close() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = Tasks::new();
        let seen = writer(rx, Duration::from_millis(10), &tasks);
        for i in 0..8 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert!(tasks.shutdown(Duration::from_secs(5)).await.clean);
        assert_eq!(*seen.lock().unwrap(), vec![3, 3, 2]);
    }

    #[tokio::test]
    async fn shutdown_flushes_what_is_pending_even_before_the_next_tick() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = Tasks::new();
        // A tick far away: only the shutdown can make it write.
        let seen = writer(rx, Duration::from_secs(3600), &tasks);
        // The first tick fires at once; wait until it has passed with nothing to write.
        tokio::task::yield_now().await;
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        assert!(tasks.shutdown(Duration::from_secs(5)).await.clean);
        assert_eq!(*seen.lock().unwrap(), vec![3, 1]);
        drop(tx);
    }
}
