//! Changes between processes over Redis pub/sub: `node:<id>` when what a node should run
//! changed (wakes its agent's long-poll in whichever replica holds it) and `routes` when
//! readiness changed (every replica refreshes its deployment directory). Pub/sub is lossy, so
//! the listener also refreshes on a timer and after every reconnect.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::StreamExt as _;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::tasks::Tasks;
use tokio::sync::watch;

use crate::app::directory::Directory;
use crate::domain::deploy_ports::{ComputeEvents, NodeWatch, NodeWatches};
use crate::domain::server::ServerId;

fn channel(keys: &Keyspace) -> String {
    keys.key("compute:changes")
}

/// Publishes changes.
#[derive(Clone)]
pub struct RedisComputeEvents {
    redis: Multiplexed,
    channel: String,
}

impl RedisComputeEvents {
    /// Publishes on this deployment's channel.
    #[must_use]
    pub fn new(redis: Multiplexed, keys: &Keyspace) -> Self {
        Self {
            redis,
            channel: channel(keys),
        }
    }

    async fn publish(&self, message: String) {
        let result: anyhow::Result<i64> = async {
            let mut conn = self.redis.get().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&message)
                .query_async(&mut conn)
                .await
                .context("publishing a compute change")
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(
                error = format!("{err:#}"),
                message,
                "could not announce a change; readers refresh on their own schedule"
            );
        }
    }
}

#[async_trait]
impl ComputeEvents for RedisComputeEvents {
    async fn node_changed(&self, server: ServerId) {
        self.publish(format!("node:{server}")).await;
    }

    async fn routes_changed(&self) {
        self.publish("routes".to_owned()).await;
    }
}

/// Wakes this process's long-polls.
#[derive(Clone)]
pub struct LocalHub {
    nodes: watch::Sender<u64>,
}

impl Default for LocalHub {
    fn default() -> Self {
        Self {
            nodes: watch::channel(0).0,
        }
    }
}

impl LocalHub {
    /// Announces a node change to every waiting long-poll of this process.
    pub fn bump(&self) {
        self.nodes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct HubWatch(watch::Receiver<u64>);

#[async_trait]
impl NodeWatch for HubWatch {
    async fn changed(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0.changed()).await;
    }
}

impl NodeWatches for LocalHub {
    fn watch(&self) -> Box<dyn NodeWatch> {
        let mut receiver = self.nodes.subscribe();
        receiver.mark_unchanged();
        Box::new(HubWatch(receiver))
    }
}

/// Registers the change listener with `tasks`: applies announced changes to `hub` and
/// `directory`, refreshes the directory every `refresh_every` and after every reconnect, and
/// stops on shutdown.
pub fn listen(
    client: redis::Client,
    keys: &Keyspace,
    hub: LocalHub,
    directory: Directory,
    refresh_every: Duration,
    tasks: &Tasks,
) {
    let channel = channel(keys);
    tasks.spawn_loop("compute.change_listener", move |shutdown| async move {
        let mut delay = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            tokio::select! {
                result = subscribe(&client, &channel, &hub, &directory, refresh_every) => {
                    if let Err(err) = result {
                        tracing::warn!(error = format!("{err:#}"), "compute change listener lost Redis; reconnecting");
                    }
                }
                () = shutdown.requested() => return,
            }
            // A subscription that lived a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                delay = Duration::from_millis(100);
            }
            delay = (delay * 2).min(Duration::from_secs(10));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.requested() => return,
            }
        }
    });
}

async fn refresh(directory: &Directory) {
    if let Err(err) = directory.refresh().await {
        tracing::warn!(error = %err, "could not refresh the deployment directory; keeping the last one");
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    hub: &LocalHub,
    directory: &Directory,
    refresh_every: Duration,
) -> anyhow::Result<()> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("opening the pub/sub connection")?;
    pubsub.subscribe(channel).await.context("subscribing")?;
    // Whatever was announced while not listening is unknown: refresh and wake everyone.
    refresh(directory).await;
    hub.bump();
    let mut messages = pubsub.on_message();
    let mut timer = tokio::time::interval(refresh_every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { anyhow::bail!("pub/sub stream ended") };
                match message.get_payload::<String>() {
                    Ok(payload) if payload.starts_with("node:") => hub.bump(),
                    Ok(payload) if payload == "routes" => refresh(directory).await,
                    _ => {
                        refresh(directory).await;
                        hub.bump();
                    }
                }
            }
            _ = timer.tick() => refresh(directory).await,
        }
    }
}
