//! The port this context publishes for routing: served model name → ready instance endpoints.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A ready instance's OpenAI-compatible base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedEndpoint {
    /// The instance (its id keys the gateway's per-upstream health).
    pub instance: uuid::Uuid,
    /// `http://host:port/v1`.
    pub base_url: Arc<str>,
}

/// A served name and where it is served now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedModel {
    /// The name callers use.
    pub name: String,
    /// The name to send upstream (the one the engines were started with).
    pub upstream_model: String,
    /// Its deployment.
    pub deployment_id: uuid::Uuid,
    /// When the deployment was created.
    pub created_at: DateTime<Utc>,
    /// Ready instances (empty: deployed, but nothing can answer now).
    pub endpoints: Vec<ServedEndpoint>,
}

/// Served names of deployments and their ready endpoints, from memory (no I/O): what the
/// gateway routes with. Changes reach every replica within a second (Redis pub/sub).
pub trait DeploymentDirectory: Send + Sync {
    /// The deployment serving `served_name`, if one should run.
    fn lookup(&self, served_name: &str) -> Option<Arc<ServedModel>>;
    /// Every served name.
    fn models(&self) -> Vec<Arc<ServedModel>>;
    /// A deployment by id (under its first served name).
    fn deployment(&self, id: uuid::Uuid) -> Option<Arc<ServedModel>>;
}
