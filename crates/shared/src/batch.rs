//! Background batch writers: producers push into an unbounded channel without ever waking the
//! writer; the writer wakes on a timer, drains what accumulated and writes it in batches.
//! (A writer parked on `recv` would be woken, on another thread, by every single item.)

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Drains `rx` every `every` in batches of at most `max` items, handing each batch to `write`.
/// When every sender is gone, writes what is left and stops.
pub fn spawn_drainer<T, F, Fut>(
    mut rx: UnboundedReceiver<T>,
    every: Duration,
    max: usize,
    mut write: F,
) -> JoinHandle<()>
where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
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
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn everything_sent_is_written_in_bounded_batches_and_the_rest_on_close() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let handle = spawn_drainer(rx, Duration::from_millis(10), 3, move |batch: Vec<u32>| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().unwrap().push(batch.len()) }
        });
        for i in 0..8 {
            tx.send(i).unwrap();
        }
        drop(tx);
        handle.await.unwrap();
        let sizes = seen.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|s| *s <= 3), "{sizes:?}");
    }
}
