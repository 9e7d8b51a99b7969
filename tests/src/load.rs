//! A bounded closed-loop load on `/v1/chat/completions`: each client calls in turn with its own
//! key (half stream, half not) and counts the calls it saw answered, until told to stop, until
//! `max_calls` calls started in all, or for at most a minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;

/// A running load.
pub struct Load {
    answered: Arc<Vec<AtomicUsize>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

/// What a load saw once stopped.
#[derive(Debug)]
pub struct Seen {
    /// Calls answered in full (status 200 and the whole body; a stream up to `[DONE]`), per
    /// client.
    pub answered: Vec<i64>,
    /// Calls that got an answer with another status or an incomplete body.
    pub refused: usize,
}

impl Seen {
    /// Calls answered by all clients.
    #[must_use]
    pub fn total(&self) -> i64 {
        self.answered.iter().sum()
    }
}

impl Load {
    /// Starts one client per key against `base` (model `m`).
    #[must_use]
    pub fn start(base: &str, keys: &[String], max_calls: usize) -> Self {
        let answered: Arc<Vec<AtomicUsize>> =
            Arc::new(keys.iter().map(|_| AtomicUsize::new(0)).collect());
        let refused = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::new();
        let url = format!("{base}/v1/chat/completions");
        let clients = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let (answered, refused, started, stop) = (
                    Arc::clone(&answered),
                    Arc::clone(&refused),
                    Arc::clone(&started),
                    Arc::clone(&stop),
                );
                let (client, key, url) = (client.clone(), key.clone(), url.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::SeqCst)
                        && Instant::now() < deadline
                        && started.fetch_add(1, Ordering::SeqCst) < max_calls
                    {
                        let stream = i % 2 == 0;
                        let body = json!({"model": "m", "stream": stream,
                                          "messages": [{"role": "user", "content": "hi"}]});
                        let Ok(resp) = client.post(&url).bearer_auth(&key).json(&body).send().await
                        else {
                            // Intake has stopped: the connection was refused or closed.
                            continue;
                        };
                        let status = resp.status();
                        let Ok(text) = resp.text().await else {
                            continue;
                        };
                        if status == StatusCode::OK && (!stream || text.contains("[DONE]")) {
                            answered[i].fetch_add(1, Ordering::SeqCst);
                        } else {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Self {
            answered,
            refused,
            stop,
            clients,
        }
    }

    /// Calls answered so far, all clients together.
    #[must_use]
    pub fn answered(&self) -> usize {
        self.answered.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }

    /// Stops every client after its current call and reports what they saw.
    ///
    /// # Panics
    /// When a client panicked.
    pub async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("a load client panicked");
        }
        Seen {
            answered: self
                .answered
                .iter()
                .map(|a| i64::try_from(a.load(Ordering::SeqCst)).unwrap_or(i64::MAX))
                .collect(),
            refused: self.refused.load(Ordering::SeqCst),
        }
    }
}
