//! What this context needs from outside: storage of the registry and the servers, the
//! heartbeat store, secrets for join tokens and node credentials, and a way to call an agent.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::paging::{Page, PageRequest};

use super::errors::ModelError;
use super::registry::{Brand, BrandId, Card, CardId, Model, ModelId};
use super::server::{AgentInfo, Grade, NodeReport, NodeStatus, Server, ServerId};

/// Which entity a logo belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoOwner {
    /// A brand.
    Brand(BrandId),
    /// A model.
    Model(ModelId),
}

/// Brands, cards and models. Every write commits its audit event with it.
#[async_trait]
pub trait RegistryRepository: Send + Sync {
    /// Stores a new brand at the end of the order.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`]; storage failures.
    async fn insert_brand(&self, brand: &Brand, audit: NewAuditEvent) -> Result<Brand, ModelError>;
    /// Stores a changed brand.
    ///
    /// # Errors
    /// [`ModelError::NotFound`], [`ModelError::NameTaken`]; storage failures.
    async fn update_brand(&self, brand: &Brand, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Deletes a brand; returns it.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::InUse`] while cards or servers refer to it.
    async fn delete_brand(&self, id: BrandId, audit: NewAuditEvent) -> Result<Brand, ModelError>;
    /// One brand.
    ///
    /// # Errors
    /// Storage failures.
    async fn brand(&self, id: BrandId) -> Result<Option<Brand>, ModelError>;
    /// Every brand in display order.
    ///
    /// # Errors
    /// Storage failures.
    async fn brands(&self) -> Result<Vec<Brand>, ModelError>;
    /// Puts the brands in the order of `ids` (which names every brand once).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when `ids` is not exactly the set of brands; storage failures.
    async fn reorder_brands(&self, ids: &[BrandId], audit: NewAuditEvent)
    -> Result<(), ModelError>;
    /// Stores a new card.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`] for a model already listed under the brand;
    /// [`ModelError::NotFound`] for a brand deleted meanwhile; storage failures.
    async fn insert_card(&self, card: &Card, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Stores a changed card.
    ///
    /// # Errors
    /// [`ModelError::NotFound`], [`ModelError::NameTaken`]; storage failures.
    async fn update_card(&self, card: &Card, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Deletes a card.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::InUse`] while servers refer to it.
    async fn delete_card(&self, id: CardId, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// One card.
    ///
    /// # Errors
    /// Storage failures.
    async fn card(&self, id: CardId) -> Result<Option<Card>, ModelError>;
    /// A page of cards (of one brand, or all), by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn cards(
        &self,
        brand: Option<BrandId>,
        page: &PageRequest,
    ) -> Result<Page<Card>, ModelError>;
    /// Stores a new model.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`]; storage failures.
    async fn insert_model(&self, model: &Model, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Stores a changed model.
    ///
    /// # Errors
    /// [`ModelError::NotFound`], [`ModelError::NameTaken`]; storage failures.
    async fn update_model(&self, model: &Model, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Deletes a model; returns it.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; storage failures.
    async fn delete_model(&self, id: ModelId, audit: NewAuditEvent) -> Result<Model, ModelError>;
    /// One model.
    ///
    /// # Errors
    /// Storage failures.
    async fn model(&self, id: ModelId) -> Result<Option<Model>, ModelError>;
    /// A page of models, by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn models(&self, page: &PageRequest) -> Result<Page<Model>, ModelError>;
    /// How many models are registered.
    ///
    /// # Errors
    /// Storage failures.
    async fn count_models(&self) -> Result<u64, ModelError>;
    /// Points `owner` at the logo `name` (or none); returns the logo it had.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; storage failures.
    async fn set_logo(
        &self,
        owner: LogoOwner,
        name: Option<&str>,
        audit: NewAuditEvent,
    ) -> Result<Option<String>, ModelError>;
    /// Whether any brand or model shows the logo `name`.
    ///
    /// # Errors
    /// Storage failures.
    async fn logo_in_use(&self, name: &str) -> Result<bool, ModelError>;
}

/// A node credential or join token's keyed digest (what is stored; never the secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

/// A node that presented a valid credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSession {
    /// The server it is.
    pub server: ServerId,
    /// Its stored status.
    pub status: NodeStatus,
}

/// A node to grade: joined, and not yet offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveNode {
    /// The server.
    pub server: ServerId,
    /// Stored status.
    pub status: NodeStatus,
    /// When its agent joined (the last sign of life when it never heartbeat).
    pub registered_at: DateTime<Utc>,
}

/// Servers and the agent side of each.
#[async_trait]
pub trait ServerRepository: Send + Sync {
    /// Stores a new server with the digest of its join token.
    ///
    /// # Errors
    /// [`ModelError::NameTaken`]; [`ModelError::NotFound`] for a brand or card deleted meanwhile.
    async fn insert(
        &self,
        server: &Server,
        join_token: Digest,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// One server.
    ///
    /// # Errors
    /// Storage failures.
    async fn get(&self, id: ServerId) -> Result<Option<Server>, ModelError>;
    /// A page of servers, by id.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(&self, page: &PageRequest) -> Result<Page<Server>, ModelError>;
    /// Stores an admin's change of a server's description.
    ///
    /// # Errors
    /// [`ModelError::NotFound`], [`ModelError::NameTaken`]; storage failures.
    async fn update(&self, server: &Server, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Deletes a server (its credential stops working at once).
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; storage failures.
    async fn delete(&self, id: ServerId, audit: NewAuditEvent) -> Result<(), ModelError>;
    /// Replaces the server's join token (an unspent one stops working).
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; storage failures.
    async fn set_join_token(
        &self,
        id: ServerId,
        token: Digest,
        expires_at: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// Approves `url` for calls from the platform, when it is the address the agent reports.
    ///
    /// # Errors
    /// [`ModelError::NotFound`]; [`ModelError::AgentNotApproved`] when the agent reports
    /// another address (or none); storage failures.
    async fn approve_agent(
        &self,
        id: ServerId,
        url: &str,
        audit: NewAuditEvent,
    ) -> Result<(), ModelError>;
    /// Spends a join token: the server it belongs to (unexpired at `now`) gets the node
    /// credential's digest and the agent's description, and is `ready`. Atomic: a token joins
    /// one agent once. `audit` (its target filled in) is stored with the change.
    ///
    /// # Errors
    /// Storage failures.
    async fn join(
        &self,
        token: Digest,
        credential: Digest,
        info: &AgentInfo,
        now: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<Option<ServerId>, ModelError>;
    /// The node whose credential has this digest.
    ///
    /// # Errors
    /// Storage failures.
    async fn authenticate(&self, credential: Digest) -> Result<Option<NodeSession>, ModelError>;
    /// Moves a node from `from` to `to` (a no-op when its status changed meanwhile), storing
    /// `audit` with the change; whether it moved.
    ///
    /// # Errors
    /// Storage failures.
    async fn set_status(
        &self,
        id: ServerId,
        from: NodeStatus,
        to: &Grade,
        now: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> Result<bool, ModelError>;
    /// Stores an agent's latest report (and what it says about itself).
    ///
    /// # Errors
    /// Storage failures.
    async fn record_report(
        &self,
        id: ServerId,
        info: &AgentInfo,
        report: &NodeReport,
        now: DateTime<Utc>,
    ) -> Result<(), ModelError>;
    /// Every joined node that is not offline.
    ///
    /// # Errors
    /// Storage failures.
    async fn live_nodes(&self) -> Result<Vec<LiveNode>, ModelError>;
    /// Servers per stored status.
    ///
    /// # Errors
    /// Storage failures.
    async fn count_by_status(&self) -> Result<BTreeMap<&'static str, u64>, ModelError>;
}

/// The last heartbeat of every node, kept out of PostgreSQL: a heartbeat writes no row.
#[async_trait]
pub trait Heartbeats: Send + Sync {
    /// Records a heartbeat of `id` at `at`.
    ///
    /// # Errors
    /// Store failures.
    async fn beat(&self, id: ServerId, at: DateTime<Utc>) -> Result<(), ModelError>;
    /// The last heartbeat of each of `ids` (in order).
    ///
    /// # Errors
    /// Store failures.
    async fn last_seen(&self, ids: &[ServerId]) -> Result<Vec<Option<DateTime<Utc>>>, ModelError>;
    /// Drops a deleted server's entry.
    ///
    /// # Errors
    /// Store failures.
    async fn forget(&self, id: ServerId) -> Result<(), ModelError>;
}

/// A secret just made: shown once, stored as its digest.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The secret.
    pub plaintext: String,
    /// Its digest.
    pub digest: Digest,
}

/// Join tokens and node credentials.
pub trait NodeSecrets: Send + Sync {
    /// A new join token (`mjt_…`).
    fn mint_join_token(&self) -> Minted;
    /// A new node credential (`mnc_…`).
    fn mint_credential(&self) -> Minted;
    /// The digest of a presented secret.
    fn digest(&self, presented: &str) -> Digest;
}

/// What an agent's `/health` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentHealth {
    /// Its `status` field.
    pub status: String,
    /// Its version.
    pub version: String,
    /// Round trip, milliseconds.
    pub latency_ms: u64,
}

/// Calls a node's agent (only at an approved address).
#[async_trait]
pub trait AgentProbe: Send + Sync {
    /// `GET {url}/health`.
    ///
    /// # Errors
    /// [`ModelError::AgentUnreachable`] with the reason.
    async fn health(&self, url: &str) -> Result<AgentHealth, ModelError>;
}
