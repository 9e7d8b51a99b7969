//! Adapters: PostgreSQL (apps, versions, end users, the call log), and the wiring of the
//! context's services from the other contexts' contracts.

pub mod pg;

use std::sync::Arc;

use maas_inference::contract::{ChatPort, Conversations};
use maas_knowledge::contract::Retriever;
use maas_shared::clock::Clock;
use maas_shared::tasks::Background;
use maas_user::contract::{AppKeys, Principals};
use sea_orm::DatabaseConnection;

use crate::app::apps::{AppService, AppServicePorts};
use crate::app::endpoint::{EndpointPorts, EndpointService};

/// What the apps context is built from.
pub struct AppsParams {
    /// PostgreSQL.
    pub db: DatabaseConnection,
    /// The model call.
    pub chat: Arc<dyn ChatPort>,
    /// End users' conversations.
    pub conversations: Arc<dyn Conversations>,
    /// Retrieval.
    pub retriever: Arc<dyn Retriever>,
    /// App keys.
    pub keys: Arc<dyn AppKeys>,
    /// Owners' principals.
    pub principals: Arc<dyn Principals>,
    /// The process's background work.
    pub background: Arc<dyn Background>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The apps context's services.
#[derive(Clone)]
pub struct Apps {
    /// Management.
    pub apps: AppService,
    /// The endpoint.
    pub endpoint: EndpointService,
}

impl Apps {
    /// Builds the adapters and services.
    #[must_use]
    pub fn build(p: AppsParams) -> Self {
        let repo = Arc::new(pg::PgApps::new(p.db.clone()));
        let messages = Arc::new(pg::PgMessages::new(p.db));
        let apps = AppService::new(AppServicePorts {
            apps: repo.clone(),
            messages: messages.clone(),
            retriever: Arc::clone(&p.retriever),
            chat: Arc::clone(&p.chat),
            keys: p.keys,
            principals: Arc::clone(&p.principals),
            clock: Arc::clone(&p.clock),
        });
        let endpoint = EndpointService::new(
            EndpointPorts {
                apps: repo.clone(),
                end_users: repo,
                messages,
                retriever: p.retriever,
                chat: p.chat,
                conversations: p.conversations,
                principals: p.principals,
                background: p.background,
                clock: p.clock,
            },
            apps.clone(),
        );
        Self { apps, endpoint }
    }
}
