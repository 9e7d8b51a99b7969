//! Servers, as admins (`ManageServers`) register and watch them: each gets a one-time join
//! token for its agent; its status is graded from the agent's heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::{Actor, Permission};
use serde_json::json;

use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::ports::{
    AgentHealth, AgentProbe, Heartbeats, NodeSecrets, RegistryRepository, ServerRepository,
};
use crate::domain::server::{
    Grade, Liveness, Server, ServerDraft, ServerId, ServerSpec, agent_url,
};

/// A server as shown: what is stored, with the status graded now.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerView {
    /// The server.
    pub server: Server,
    /// Its status now (never better than the stored one).
    pub grade: Grade,
    /// Its agent's last heartbeat.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// A join token just issued: shown once.
#[derive(Clone, Debug)]
pub struct JoinToken {
    /// The token for `maas-agent --token`.
    pub token: String,
    /// Until when it can be used.
    pub expires_at: DateTime<Utc>,
}

/// The platform's figures for `GET /api/v1/stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Registered servers.
    pub servers: u64,
    /// Servers whose agent heartbeats (`ready`).
    pub online_servers: u64,
    /// Servers per status.
    pub servers_by_status: BTreeMap<&'static str, u64>,
    /// Registered models.
    pub models: u64,
    /// Deployments per state.
    pub deployments_by_state: BTreeMap<&'static str, u64>,
    /// Instances ready to serve.
    pub ready_instances: u64,
}

/// The ports [`ServerService`] uses.
#[derive(Clone)]
pub struct ServerPorts {
    /// Servers.
    pub servers: Arc<dyn ServerRepository>,
    /// Brands and cards a server may name.
    pub registry: Arc<dyn RegistryRepository>,
    /// Last heartbeats.
    pub heartbeats: Arc<dyn Heartbeats>,
    /// Join tokens.
    pub secrets: Arc<dyn NodeSecrets>,
    /// Calls to agents.
    pub probe: Arc<dyn AgentProbe>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Server administration.
#[derive(Clone)]
pub struct ServerService {
    ports: ServerPorts,
    liveness: Liveness,
    join_ttl: chrono::Duration,
}

impl ServerService {
    /// The service; join tokens live `join_ttl`.
    #[must_use]
    pub fn new(ports: ServerPorts, liveness: Liveness, join_ttl: chrono::Duration) -> Self {
        Self {
            ports,
            liveness,
            join_ttl,
        }
    }

    fn admin(actor: &Actor<'_>) -> Result<(), ModelError> {
        Ok(actor.require(Permission::ManageServers)?)
    }

    /// Checks the brand and card a server names; fills the brand in from the card.
    async fn placed(&self, mut spec: ServerSpec) -> Result<ServerSpec, ModelError> {
        let mut errors = Vec::new();
        if let Some(card_id) = spec.card_id {
            match self.ports.registry.card(card_id).await? {
                None => errors.push(InvalidValue::new("card_id", "no such accelerator card")),
                Some(card) if spec.brand_id.is_some_and(|b| b != card.brand_id()) => {
                    errors.push(InvalidValue::new(
                        "card_id",
                        "the card belongs to another brand",
                    ));
                }
                Some(card) => spec.brand_id = Some(card.brand_id()),
            }
        } else if let Some(brand_id) = spec.brand_id
            && self.ports.registry.brand(brand_id).await?.is_none()
        {
            errors.push(InvalidValue::new("brand_id", "no such brand"));
        }
        ModelError::check(errors)?;
        Ok(spec)
    }

    /// Registers a server and issues its first join token.
    ///
    /// # Errors
    /// Forbidden; every bad field; [`ModelError::NameTaken`].
    #[tracing::instrument(name = "servers.create", skip_all)]
    pub async fn create(
        &self,
        actor: &Actor<'_>,
        draft: ServerDraft,
    ) -> Result<(ServerView, JoinToken), ModelError> {
        Self::admin(actor)?;
        let spec = self
            .placed(draft.parse().map_err(ModelError::Invalid)?)
            .await?;
        let now = self.ports.clock.now();
        let token = self.ports.secrets.mint_join_token();
        let expires_at = now + self.join_ttl;
        let server = Server::register(spec, expires_at, now);
        let audit = actor.event(
            "server.create",
            "server",
            Some(server.id().to_string()),
            json!({"name": server.spec().name(), "address": server.spec().address()}),
        );
        self.ports
            .servers
            .insert(&server, token.digest, audit)
            .await?;
        let view = self.view(server, None, now);
        Ok((
            view,
            JoinToken {
                token: token.plaintext,
                expires_at,
            },
        ))
    }

    fn view(
        &self,
        server: Server,
        last_heartbeat: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> ServerView {
        let grade = server.effective(last_heartbeat, &self.liveness, now);
        ServerView {
            server,
            grade,
            last_heartbeat,
        }
    }

    async fn views(&self, servers: Vec<Server>) -> Result<Vec<ServerView>, ModelError> {
        let ids: Vec<ServerId> = servers.iter().map(Server::id).collect();
        let seen = self.ports.heartbeats.last_seen(&ids).await?;
        let now = self.ports.clock.now();
        Ok(servers
            .into_iter()
            .zip(seen)
            .map(|(s, seen)| self.view(s, seen, now))
            .collect())
    }

    async fn load(&self, id: ServerId) -> Result<Server, ModelError> {
        self.ports
            .servers
            .get(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Server))
    }

    /// One server.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn get(&self, actor: &Actor<'_>, id: ServerId) -> Result<ServerView, ModelError> {
        Self::admin(actor)?;
        let server = self.load(id).await?;
        let mut views = self.views(vec![server]).await?;
        views.pop().ok_or(ModelError::NotFound(Entity::Server))
    }

    /// A page of servers.
    ///
    /// # Errors
    /// Forbidden.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        page: &PageRequest,
    ) -> Result<Page<ServerView>, ModelError> {
        Self::admin(actor)?;
        let page = self.ports.servers.list(page).await?;
        let views = self.views(page.items).await?;
        Ok(Page {
            items: views,
            next: page.next,
        })
    }

    /// Changes a server's description through `change` on its current draft.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; [`ModelError::NameTaken`].
    pub async fn update(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
        change: impl FnOnce(&mut ServerDraft) + Send,
    ) -> Result<ServerView, ModelError> {
        Self::admin(actor)?;
        let mut server = self.load(id).await?;
        let mut draft = server.draft();
        let had_card = draft.card_id;
        change(&mut draft);
        if draft.card_id != had_card
            && draft.card_id.is_some()
            && draft.brand_id == server.spec().brand_id()
        {
            // A new card decides the brand unless the change named one.
            draft.brand_id = None;
        }
        let spec = self
            .placed(draft.parse().map_err(ModelError::Invalid)?)
            .await?;
        server.revise(spec, self.ports.clock.now());
        let audit = actor.event(
            "server.update",
            "server",
            Some(id.to_string()),
            json!({"name": server.spec().name(), "address": server.spec().address()}),
        );
        self.ports.servers.update(&server, audit).await?;
        self.get(actor, id).await
    }

    /// Deletes a server; its agent's credential stops working at once.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn delete(&self, actor: &Actor<'_>, id: ServerId) -> Result<(), ModelError> {
        Self::admin(actor)?;
        let audit = actor.event("server.delete", "server", Some(id.to_string()), json!({}));
        self.ports.servers.delete(id, audit).await?;
        self.ports.heartbeats.forget(id).await
    }

    /// Issues a new join token (an unspent earlier one stops working). An agent that joins with
    /// it gets a new credential; the old one stops working.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn issue_join_token(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
    ) -> Result<JoinToken, ModelError> {
        Self::admin(actor)?;
        let token = self.ports.secrets.mint_join_token();
        let expires_at = self.ports.clock.now() + self.join_ttl;
        let audit = actor.event(
            "server.join_token",
            "server",
            Some(id.to_string()),
            json!({"expires_at": expires_at}),
        );
        self.ports
            .servers
            .set_join_token(id, token.digest, expires_at, audit)
            .await?;
        Ok(JoinToken {
            token: token.plaintext,
            expires_at,
        })
    }

    /// Approves the address the server's agent reports for calls from the platform.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; a malformed URL; [`ModelError::AgentNotApproved`]
    /// when the agent reports another address.
    pub async fn approve_agent(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
        url: &str,
    ) -> Result<ServerView, ModelError> {
        Self::admin(actor)?;
        let url = agent_url(url)?;
        let audit = actor.event(
            "server.approve_agent",
            "server",
            Some(id.to_string()),
            json!({"agent_url": url}),
        );
        self.ports.servers.approve_agent(id, &url, audit).await?;
        self.get(actor, id).await
    }

    /// Calls the agent's `/health` at its approved address.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; [`ModelError::AgentNotApproved`];
    /// [`ModelError::AgentUnreachable`].
    pub async fn agent_health(
        &self,
        actor: &Actor<'_>,
        id: ServerId,
    ) -> Result<AgentHealth, ModelError> {
        Self::admin(actor)?;
        let server = self.load(id).await?;
        let agent = server.agent().ok_or(ModelError::AgentNotApproved(
            "the server's agent has not joined yet",
        ))?;
        let url = agent.callable_url().ok_or(ModelError::AgentNotApproved(
            "approve the address the agent reports first (POST /api/v1/servers/{id}/agent/approve)",
        ))?;
        self.ports.probe.health(url).await
    }

    /// Servers, online servers and models.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn stats(&self) -> Result<Stats, ModelError> {
        let by_status = self.ports.servers.count_by_status().await?;
        let models = self.ports.registry.count_models().await?;
        let online = by_status.get("ready").copied().unwrap_or(0);
        Ok(Stats {
            servers: by_status.values().sum(),
            online_servers: online,
            servers_by_status: by_status,
            models,
            deployments_by_state: BTreeMap::new(),
            ready_instances: 0,
        })
    }

    /// The liveness rules in force.
    #[must_use]
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }
}
