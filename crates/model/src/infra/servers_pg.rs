//! Servers in PostgreSQL: the admin's description, the agent's side, the last report. Join
//! tokens and node credentials are stored as digests only.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, FromQueryResult, TransactionTrait as _};
use uuid::Uuid;

use super::pg::{commit, corrupt, exec, page_values, stmt};
use crate::domain::errors::{Entity, ModelError};
use crate::domain::ports::{Digest, LiveNode, NodeSession, ServerRepository};
use crate::domain::registry::{BrandId, CardId};
use crate::domain::server::{
    Agent, AgentInfo, Grade, NodeReport, NodeStatus, Server, ServerId, ServerSpec,
};

/// Servers in PostgreSQL.
#[derive(Clone)]
pub struct PgServers {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgServers {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

const COLUMNS: &str = "id, name, address, labels, brand_id, card_id, expected_gpus, status, status_reason, status_changed_at, \
    CASE WHEN join_token_digest IS NULL THEN NULL ELSE join_token_expires_at END AS join_token_expires_at, \
    hostname, agent_version, agent_url, approved_agent_url, registered_at, last_report, reported_at, created_at, updated_at";

#[derive(Debug, FromQueryResult)]
struct ServerRow {
    id: Uuid,
    name: String,
    address: String,
    labels: serde_json::Value,
    brand_id: Option<Uuid>,
    card_id: Option<Uuid>,
    expected_gpus: i32,
    status: String,
    status_reason: Option<String>,
    status_changed_at: DateTime<Utc>,
    join_token_expires_at: Option<DateTime<Utc>>,
    hostname: Option<String>,
    agent_version: Option<String>,
    agent_url: Option<String>,
    approved_agent_url: Option<String>,
    registered_at: Option<DateTime<Utc>>,
    last_report: Option<serde_json::Value>,
    reported_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ServerRow> for Server {
    type Error = ModelError;

    fn try_from(r: ServerRow) -> Result<Self, ModelError> {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(r.labels).map_err(|_| corrupt("servers", r.id, "label map"))?;
        let status =
            NodeStatus::from_name(&r.status).ok_or_else(|| corrupt("servers", r.id, "status"))?;
        let agent = match (r.hostname, r.agent_version, r.agent_url, r.registered_at) {
            (Some(hostname), Some(version), Some(url), Some(registered_at)) => Some(Agent {
                info: AgentInfo {
                    hostname,
                    version,
                    url,
                },
                approved_url: r.approved_agent_url,
                registered_at,
            }),
            _ => None,
        };
        let report = match (r.last_report, r.reported_at) {
            (Some(report), Some(at)) => {
                let report: NodeReport = serde_json::from_value(report)
                    .map_err(|_| corrupt("servers", r.id, "report"))?;
                Some((report, at))
            }
            _ => None,
        };
        Ok(Self {
            id: ServerId::from_uuid(r.id),
            spec: ServerSpec {
                name: r.name,
                address: r.address,
                labels,
                brand_id: r.brand_id.map(BrandId::from_uuid),
                card_id: r.card_id.map(CardId::from_uuid),
                expected_gpus: r.expected_gpus,
            },
            status,
            status_reason: r.status_reason,
            status_changed_at: r.status_changed_at,
            join_token_expires_at: r.join_token_expires_at,
            agent,
            report,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn labels(spec: &ServerSpec) -> serde_json::Value {
    serde_json::json!(spec.labels)
}

#[async_trait]
impl ServerRepository for PgServers {
    async fn insert(
        &self,
        server: &Server,
        join_token: Digest,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let s = &server.spec;
        let txn = self.db.begin().await.context("starting a transaction")?;
        exec(
            &txn,
            stmt(
                "INSERT INTO servers (id, name, address, labels, brand_id, card_id, expected_gpus, status, status_reason, \
                 status_changed_at, join_token_digest, join_token_expires_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $10, $10)",
                [
                    server.id.as_uuid().into(),
                    s.name.clone().into(),
                    s.address.clone().into(),
                    labels(s).into(),
                    s.brand_id.map(|b| b.as_uuid()).into(),
                    s.card_id.map(|c| c.as_uuid()).into(),
                    s.expected_gpus.into(),
                    server.status.as_str().into(),
                    server.status_reason.clone().into(),
                    server.created_at.into(),
                    join_token.0.to_vec().into(),
                    server.join_token_expires_at.into(),
                ],
            ),
            Entity::Server,
            Entity::Card,
            "",
        )
        .await?;
        commit(txn, audit, server.created_at).await
    }

    async fn get(&self, id: ServerId) -> Result<Option<Server>, ModelError> {
        let row = ServerRow::find_by_statement(stmt(
            &format!("SELECT {COLUMNS} FROM servers WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a server")?;
        row.map(Server::try_from).transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<Server>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = ServerRow::find_by_statement(stmt(
            &format!("SELECT {COLUMNS} FROM servers WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"),
            [after, limit],
        ))
        .all(&self.db)
        .await
        .context("listing servers")?;
        let servers = rows
            .into_iter()
            .map(Server::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(servers, page, |s| s.id.as_uuid()))
    }

    async fn update(&self, server: &Server, audit: NewAuditEvent) -> Result<(), ModelError> {
        let s = &server.spec;
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "UPDATE servers SET name = $2, address = $3, labels = $4, brand_id = $5, card_id = $6, expected_gpus = $7, \
                 updated_at = $8 WHERE id = $1",
                [
                    server.id.as_uuid().into(),
                    s.name.clone().into(),
                    s.address.clone().into(),
                    labels(s).into(),
                    s.brand_id.map(|b| b.as_uuid()).into(),
                    s.card_id.map(|c| c.as_uuid()).into(),
                    s.expected_gpus.into(),
                    server.updated_at.into(),
                ],
            ),
            Entity::Server,
            Entity::Card,
            "",
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Server));
        }
        commit(txn, audit, server.updated_at).await
    }

    async fn delete(&self, id: ServerId, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "DELETE FROM servers WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .context("deleting a server")?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Server));
        }
        commit(txn, audit, self.clock.now()).await
    }

    async fn set_join_token(
        &self,
        id: ServerId,
        token: Digest,
        expires_at: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "UPDATE servers SET join_token_digest = $2, join_token_expires_at = $3 WHERE id = $1",
                [id.as_uuid().into(), token.0.to_vec().into(), expires_at.into()],
            ))
            .await
            .context("storing a join token")?;
        if done.rows_affected() == 0 {
            return Err(ModelError::NotFound(Entity::Server));
        }
        commit(txn, audit, self.clock.now()).await
    }

    async fn approve_agent(
        &self,
        id: ServerId,
        url: &str,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let now = self.clock.now();
        let done = txn
            .execute(stmt(
                "UPDATE servers SET approved_agent_url = $2, updated_at = $3 WHERE id = $1 AND agent_url = $2",
                [id.as_uuid().into(), url.into(), now.into()],
            ))
            .await
            .context("approving an agent address")?;
        if done.rows_affected() == 0 {
            drop(txn);
            return Err(if self.get(id).await?.is_some() {
                ModelError::AgentNotApproved(
                    "the agent does not report this address (GET the server to see the one it reports)",
                )
            } else {
                ModelError::NotFound(Entity::Server)
            });
        }
        commit(txn, audit, now).await
    }

    async fn join(
        &self,
        token: Digest,
        credential: Digest,
        info: &AgentInfo,
        now: DateTime<Utc>,
        mut audit: NewAuditEvent,
    ) -> Result<Option<ServerId>, ModelError> {
        #[derive(FromQueryResult)]
        struct Joined {
            id: Uuid,
        }
        let txn = self.db.begin().await.context("starting a transaction")?;
        // The approval survives a re-join only when the agent keeps its address.
        let joined = Joined::find_by_statement(stmt(
            "UPDATE servers SET join_token_digest = NULL, join_token_expires_at = NULL, node_credential_digest = $2, \
             approved_agent_url = CASE WHEN agent_url = $5 THEN approved_agent_url ELSE NULL END, \
             hostname = $3, agent_version = $4, agent_url = $5, registered_at = $6, \
             status = 'ready', status_reason = NULL, status_changed_at = $6 \
             WHERE join_token_digest = $1 AND join_token_expires_at > $6 RETURNING id",
            [
                token.0.to_vec().into(),
                credential.0.to_vec().into(),
                info.hostname.clone().into(),
                info.version.clone().into(),
                info.url.clone().into(),
                now.into(),
            ],
        ))
        .one(&txn)
        .await
        .context("spending a join token")?;
        let Some(joined) = joined else {
            return Ok(None);
        };
        audit.target_id = Some(joined.id.to_string());
        commit(txn, audit, now).await?;
        Ok(Some(ServerId::from_uuid(joined.id)))
    }

    async fn authenticate(&self, credential: Digest) -> Result<Option<NodeSession>, ModelError> {
        #[derive(FromQueryResult)]
        struct Session {
            id: Uuid,
            status: String,
        }
        let row = Session::find_by_statement(stmt(
            "SELECT id, status FROM servers WHERE node_credential_digest = $1",
            [credential.0.to_vec().into()],
        ))
        .one(&self.db)
        .await
        .context("checking a node credential")?;
        row.map(|r| {
            let status = NodeStatus::from_name(&r.status)
                .ok_or_else(|| corrupt("servers", r.id, "status"))?;
            Ok(NodeSession {
                server: ServerId::from_uuid(r.id),
                status,
            })
        })
        .transpose()
    }

    async fn set_status(
        &self,
        id: ServerId,
        from: NodeStatus,
        to: &Grade,
        now: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<bool, ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = txn
            .execute(stmt(
                "UPDATE servers SET status = $3, status_reason = $4, status_changed_at = $5 WHERE id = $1 AND status = $2",
                [id.as_uuid().into(), from.as_str().into(), to.status.as_str().into(), to.reason.clone().into(), now.into()],
            ))
            .await
            .context("changing a node's status")?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        commit(txn, audit, now).await?;
        Ok(true)
    }

    async fn record_report(
        &self,
        id: ServerId,
        info: &AgentInfo,
        report: &NodeReport,
        now: DateTime<Utc>,
    ) -> Result<(), ModelError> {
        let report = serde_json::to_value(report).context("encoding a report")?;
        self.db
            .execute(stmt(
                "UPDATE servers SET last_report = $2, reported_at = $3, hostname = $4, agent_version = $5, agent_url = $6 WHERE id = $1",
                [id.as_uuid().into(), report.into(), now.into(), info.hostname.clone().into(), info.version.clone().into(), info.url.clone().into()],
            ))
            .await
            .context("storing a report")?;
        Ok(())
    }

    async fn live_nodes(&self) -> Result<Vec<LiveNode>, ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            id: Uuid,
            status: String,
            registered_at: DateTime<Utc>,
        }
        let rows = Row::find_by_statement(stmt(
            "SELECT id, status, registered_at FROM servers WHERE status IN ('ready', 'not_ready') AND registered_at IS NOT NULL",
            [],
        ))
        .all(&self.db)
        .await
        .context("listing live nodes")?;
        rows.into_iter()
            .map(|r| {
                let status = NodeStatus::from_name(&r.status)
                    .ok_or_else(|| corrupt("servers", r.id, "status"))?;
                Ok(LiveNode {
                    server: ServerId::from_uuid(r.id),
                    status,
                    registered_at: r.registered_at,
                })
            })
            .collect()
    }

    async fn count_by_status(&self) -> Result<BTreeMap<&'static str, u64>, ModelError> {
        #[derive(FromQueryResult)]
        struct Row {
            status: String,
            n: i64,
        }
        let rows = Row::find_by_statement(stmt(
            "SELECT status, count(*) AS n FROM servers GROUP BY status",
            [],
        ))
        .all(&self.db)
        .await
        .context("counting servers")?;
        let mut counts: BTreeMap<&'static str, u64> =
            NodeStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for row in rows {
            let status = NodeStatus::from_name(&row.status).context("a stored server status")?;
            counts.insert(status.as_str(), u64::try_from(row.n).unwrap_or(0));
        }
        Ok(counts)
    }
}
