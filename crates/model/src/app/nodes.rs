//! The node side: agents join with a one-time token and get their own credential, then
//! heartbeat and report resources; the worker's sweep grades silent nodes. A heartbeat costs
//! one indexed read and one Redis write: it writes a PostgreSQL row only when the node's status
//! changes.

use std::sync::Arc;

use maas_shared::audit::{ActionContext, NewAuditEvent};
use maas_shared::clock::Clock;
use serde_json::json;

use crate::domain::errors::{Entity, ModelError};
use crate::domain::ports::{Heartbeats, NodeSecrets, NodeSession, ServerRepository};
use crate::domain::server::{AgentInfo, Grade, Liveness, NodeReport, NodeStatus, ServerId};

/// What a joining agent gets: its identity and credential (shown once), and the intervals.
#[derive(Clone, Debug)]
pub struct Joined {
    /// The server it is.
    pub server: ServerId,
    /// Its node credential.
    pub credential: String,
    /// The intervals to keep.
    pub liveness: Liveness,
}

/// What a heartbeat answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat {
    /// The node's status after this heartbeat.
    pub status: NodeStatus,
    /// The intervals to keep.
    pub liveness: Liveness,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Nodes graded.
    pub checked: usize,
    /// Nodes whose status changed.
    pub changed: usize,
}

/// The ports [`NodeService`] uses.
#[derive(Clone)]
pub struct NodePorts {
    /// Servers.
    pub servers: Arc<dyn ServerRepository>,
    /// Last heartbeats.
    pub heartbeats: Arc<dyn Heartbeats>,
    /// Credentials.
    pub secrets: Arc<dyn NodeSecrets>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Agents' use cases and the liveness sweep.
#[derive(Clone)]
pub struct NodeService {
    ports: NodePorts,
    liveness: Liveness,
    events: Option<Arc<dyn crate::domain::deploy_ports::ComputeEvents>>,
}

impl NodeService {
    /// The service under `liveness`.
    #[must_use]
    pub fn new(ports: NodePorts, liveness: Liveness) -> Self {
        Self {
            ports,
            liveness,
            events: None,
        }
    }

    /// Announces status changes (the instances of a node that is not ready leave routing).
    #[must_use]
    pub fn with_events(
        mut self,
        events: Arc<dyn crate::domain::deploy_ports::ComputeEvents>,
    ) -> Self {
        self.events = Some(events);
        self
    }

    async fn routes_changed(&self) {
        if let Some(events) = &self.events {
            events.routes_changed().await;
        }
    }

    /// Spends a join token: the agent gets its node credential.
    ///
    /// # Errors
    /// Every bad field of `info`; [`ModelError::InvalidJoinToken`] for an unknown, expired or
    /// spent token.
    #[tracing::instrument(name = "nodes.join", skip_all)]
    pub async fn join(&self, token: &str, info: AgentInfo) -> Result<Joined, ModelError> {
        let digest = self.ports.secrets.digest(token);
        let credential = self.ports.secrets.mint_credential();
        let now = self.ports.clock.now();
        let audit = node_event(
            "server.agent_join",
            None,
            json!({"hostname": info.hostname, "agent_version": info.version, "agent_url": info.url}),
        );
        let server = self
            .ports
            .servers
            .join(digest, credential.digest, &info, now, audit)
            .await?
            .ok_or(ModelError::InvalidJoinToken)?;
        self.ports.heartbeats.beat(server, now).await?;
        tracing::info!(server.id = %server, hostname = %info.hostname, "agent joined");
        Ok(Joined {
            server,
            credential: credential.plaintext,
            liveness: self.liveness,
        })
    }

    /// The node presenting `credential`.
    ///
    /// # Errors
    /// [`ModelError::InvalidNodeCredential`].
    pub async fn authenticate(&self, credential: &str) -> Result<NodeSession, ModelError> {
        if credential.is_empty() || credential.len() > 256 {
            return Err(ModelError::InvalidNodeCredential);
        }
        self.ports
            .servers
            .authenticate(self.ports.secrets.digest(credential))
            .await?
            .ok_or(ModelError::InvalidNodeCredential)
    }

    /// A node speaks only for itself: another server's id is not found.
    fn own(session: NodeSession, id: ServerId) -> Result<(), ModelError> {
        if session.server == id {
            Ok(())
        } else {
            Err(ModelError::NotFound(Entity::Server))
        }
    }

    /// A heartbeat of `id`: recorded in the heartbeat store; a node that was not ready is
    /// ready again.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for another node's id; store failures.
    pub async fn heartbeat(&self, session: NodeSession, id: ServerId) -> Result<Beat, ModelError> {
        Self::own(session, id)?;
        let now = self.ports.clock.now();
        self.ports.heartbeats.beat(id, now).await?;
        if session.status != NodeStatus::Ready {
            let ready = Grade {
                status: NodeStatus::Ready,
                reason: None,
            };
            let audit = node_event(
                "server.status",
                Some(id),
                json!({"from": session.status.as_str(), "to": "ready", "reason": "heartbeat received"}),
            );
            if self
                .ports
                .servers
                .set_status(id, session.status, &ready, now, audit)
                .await?
            {
                self.routes_changed().await;
            }
        }
        Ok(Beat {
            status: NodeStatus::Ready,
            liveness: self.liveness,
        })
    }

    /// Stores a node's resource report (it counts as a heartbeat too).
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for another node's id; every bad field.
    pub async fn report(
        &self,
        session: NodeSession,
        id: ServerId,
        info: AgentInfo,
        report: NodeReport,
    ) -> Result<Beat, ModelError> {
        Self::own(session, id)?;
        report.validate().map_err(ModelError::Invalid)?;
        let now = self.ports.clock.now();
        self.ports
            .servers
            .record_report(id, &info, &report, now)
            .await?;
        self.heartbeat(session, id).await
    }

    /// Grades every joined node by its last heartbeat and stores the statuses that changed
    /// (with the reason). Idempotent: running it twice changes nothing more.
    ///
    /// # Errors
    /// Storage failures.
    #[tracing::instrument(name = "nodes.sweep", skip_all)]
    pub async fn sweep(&self) -> Result<Swept, ModelError> {
        let nodes = self.ports.servers.live_nodes().await?;
        let ids: Vec<ServerId> = nodes.iter().map(|n| n.server).collect();
        let seen = self.ports.heartbeats.last_seen(&ids).await?;
        let now = self.ports.clock.now();
        let mut swept = Swept {
            checked: nodes.len(),
            changed: 0,
        };
        for (node, seen) in nodes.iter().zip(seen) {
            let grade = self.liveness.grade(seen.unwrap_or(node.registered_at), now);
            if grade.status == node.status {
                continue;
            }
            let audit = node_event(
                "server.status",
                Some(node.server),
                json!({"from": node.status.as_str(), "to": grade.status.as_str(), "reason": grade.reason}),
            );
            if self
                .ports
                .servers
                .set_status(node.server, node.status, &grade, now, audit)
                .await?
            {
                swept.changed += 1;
                tracing::warn!(server.id = %node.server, from = node.status.as_str(), to = grade.status.as_str(), reason = grade.reason.as_deref().unwrap_or(""), "node status changed");
            }
        }
        if swept.changed > 0 {
            self.routes_changed().await;
        }
        Ok(swept)
    }
}

/// A node event, audited as the system (in the transaction of the change it records).
fn node_event(action: &str, server: Option<ServerId>, details: serde_json::Value) -> NewAuditEvent {
    NewAuditEvent {
        context: ActionContext::default(),
        action: action.to_owned(),
        target_type: "server".into(),
        target_id: server.map(|s| s.to_string()),
        details,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use maas_shared::clock::ManualClock;
    use maas_shared::paging::{Page, PageRequest};

    use super::*;
    use crate::domain::ports::{Digest, LiveNode, Minted};
    use crate::domain::server::Server;

    /// Servers in memory, counting writes.
    #[derive(Default)]
    struct Servers {
        nodes: Mutex<HashMap<ServerId, (NodeStatus, DateTime<Utc>)>>,
        writes: Mutex<usize>,
    }

    fn unused<T>() -> Result<T, ModelError> {
        Err(ModelError::Unexpected(anyhow::anyhow!(
            "not used by these tests"
        )))
    }

    #[async_trait]
    impl ServerRepository for Servers {
        async fn insert(&self, _: &Server, _: Digest, _: NewAuditEvent) -> Result<(), ModelError> {
            unused()
        }
        async fn get(&self, _: ServerId) -> Result<Option<Server>, ModelError> {
            unused()
        }
        async fn list(&self, _: &PageRequest) -> Result<Page<Server>, ModelError> {
            unused()
        }
        async fn update(&self, _: &Server, _: NewAuditEvent) -> Result<(), ModelError> {
            unused()
        }
        async fn delete(&self, _: ServerId, _: NewAuditEvent) -> Result<(), ModelError> {
            unused()
        }
        async fn set_join_token(
            &self,
            _: ServerId,
            _: Digest,
            _: DateTime<Utc>,
            _: NewAuditEvent,
        ) -> Result<(), ModelError> {
            unused()
        }
        async fn approve_agent(
            &self,
            _: ServerId,
            _: &str,
            _: NewAuditEvent,
        ) -> Result<(), ModelError> {
            unused()
        }
        async fn join(
            &self,
            _: Digest,
            _: Digest,
            _: &AgentInfo,
            _: DateTime<Utc>,
            _: NewAuditEvent,
        ) -> Result<Option<ServerId>, ModelError> {
            unused()
        }
        async fn authenticate(&self, _: Digest) -> Result<Option<NodeSession>, ModelError> {
            unused()
        }
        async fn set_status(
            &self,
            id: ServerId,
            from: NodeStatus,
            to: &Grade,
            _: DateTime<Utc>,
            _: NewAuditEvent,
        ) -> Result<bool, ModelError> {
            let mut nodes = self.nodes.lock().unwrap();
            let node = nodes.get_mut(&id).unwrap();
            if node.0 != from {
                return Ok(false);
            }
            node.0 = to.status;
            *self.writes.lock().unwrap() += 1;
            Ok(true)
        }
        async fn record_report(
            &self,
            _: ServerId,
            _: &AgentInfo,
            _: &NodeReport,
            _: DateTime<Utc>,
        ) -> Result<(), ModelError> {
            *self.writes.lock().unwrap() += 1;
            Ok(())
        }
        async fn live_nodes(&self) -> Result<Vec<LiveNode>, ModelError> {
            let nodes = self.nodes.lock().unwrap();
            Ok(nodes
                .iter()
                .filter(|(_, (s, _))| matches!(s, NodeStatus::Ready | NodeStatus::NotReady))
                .map(|(id, (status, registered_at))| LiveNode {
                    server: *id,
                    status: *status,
                    registered_at: *registered_at,
                })
                .collect())
        }
        async fn count_by_status(&self) -> Result<BTreeMap<&'static str, u64>, ModelError> {
            unused()
        }
    }

    #[derive(Default)]
    struct Beats(Mutex<HashMap<ServerId, DateTime<Utc>>>);

    #[async_trait]
    impl Heartbeats for Beats {
        async fn beat(&self, id: ServerId, at: DateTime<Utc>) -> Result<(), ModelError> {
            self.0.lock().unwrap().insert(id, at);
            Ok(())
        }
        async fn last_seen(
            &self,
            ids: &[ServerId],
        ) -> Result<Vec<Option<DateTime<Utc>>>, ModelError> {
            let beats = self.0.lock().unwrap();
            Ok(ids.iter().map(|id| beats.get(id).copied()).collect())
        }
        async fn forget(&self, id: ServerId) -> Result<(), ModelError> {
            self.0.lock().unwrap().remove(&id);
            Ok(())
        }
    }

    struct Secrets;

    impl NodeSecrets for Secrets {
        fn mint_join_token(&self) -> Minted {
            Minted {
                plaintext: "mjt_x".into(),
                digest: Digest([1; 32]),
            }
        }
        fn mint_credential(&self) -> Minted {
            Minted {
                plaintext: "mnc_x".into(),
                digest: Digest([2; 32]),
            }
        }
        fn digest(&self, _: &str) -> Digest {
            Digest([3; 32])
        }
    }

    fn service() -> (NodeService, Arc<Servers>, Arc<ManualClock>, ServerId) {
        let clock = Arc::new(ManualClock::new(
            DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap(),
        ));
        let servers = Arc::new(Servers::default());
        let id = ServerId::new();
        servers
            .nodes
            .lock()
            .unwrap()
            .insert(id, (NodeStatus::Ready, clock.now()));
        let liveness = Liveness {
            heartbeat: std::time::Duration::from_secs(10),
            report: std::time::Duration::from_secs(30),
            missed_before_not_ready: 3,
            offline_after: std::time::Duration::from_secs(120),
        };
        let ports = NodePorts {
            servers: servers.clone(),
            heartbeats: Arc::new(Beats::default()),
            secrets: Arc::new(Secrets),
            clock: clock.clone(),
        };
        (NodeService::new(ports, liveness), servers, clock, id)
    }

    #[tokio::test]
    async fn heartbeats_write_nothing_until_the_status_changes() {
        let (nodes, servers, clock, id) = service();
        let session = NodeSession {
            server: id,
            status: NodeStatus::Ready,
        };
        for _ in 0..100 {
            clock.advance(chrono::Duration::seconds(10));
            nodes.heartbeat(session, id).await.unwrap();
            assert_eq!(nodes.sweep().await.unwrap().changed, 0);
        }
        assert_eq!(*servers.writes.lock().unwrap(), 0);
        // Silence: not ready after 3 missed, offline later; each change written once.
        clock.advance(chrono::Duration::seconds(31));
        assert_eq!(
            nodes.sweep().await.unwrap(),
            Swept {
                checked: 1,
                changed: 1
            }
        );
        assert_eq!(nodes.sweep().await.unwrap().changed, 0);
        clock.advance(chrono::Duration::seconds(90));
        assert_eq!(nodes.sweep().await.unwrap().changed, 1);
        assert_eq!(servers.nodes.lock().unwrap()[&id].0, NodeStatus::Offline);
        assert_eq!(nodes.sweep().await.unwrap().checked, 0);
        // A heartbeat brings it back (one write).
        let session = NodeSession {
            server: id,
            status: NodeStatus::Offline,
        };
        assert_eq!(
            nodes.heartbeat(session, id).await.unwrap().status,
            NodeStatus::Ready
        );
        assert_eq!(*servers.writes.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_node_speaks_only_for_itself() {
        let (nodes, _, _, id) = service();
        let session = NodeSession {
            server: id,
            status: NodeStatus::Ready,
        };
        let err = nodes.heartbeat(session, ServerId::new()).await.unwrap_err();
        assert!(matches!(
            err,
            ModelError::NotFound(crate::domain::errors::Entity::Server)
        ));
    }
}
