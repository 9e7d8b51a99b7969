//! The deployment directory: which served names exist and which ready instances serve each,
//! kept in memory in every process that routes (refreshed from PostgreSQL when a change is
//! announced, and on a timer), so that the gateway's hot path never queries the database.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::domain::deploy_ports::DeploymentRepository;
use crate::domain::directory::{DeploymentDirectory, ServedEndpoint, ServedModel};
use crate::domain::errors::ModelError;

#[derive(Default)]
struct Snapshot {
    by_name: HashMap<String, Arc<ServedModel>>,
    by_deployment: HashMap<uuid::Uuid, Arc<ServedModel>>,
    models: Vec<Arc<ServedModel>>,
}

/// The in-memory directory.
#[derive(Clone)]
pub struct Directory {
    repo: Arc<dyn DeploymentRepository>,
    current: Arc<RwLock<Arc<Snapshot>>>,
}

impl Directory {
    /// An empty directory over `repo` (call [`Directory::refresh`] to fill it).
    #[must_use]
    pub fn new(repo: Arc<dyn DeploymentRepository>) -> Self {
        Self {
            repo,
            current: Arc::default(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the routes again and swaps them in whole.
    ///
    /// # Errors
    /// Storage failures (the previous snapshot stays).
    pub async fn refresh(&self) -> Result<(), ModelError> {
        let rows = self.repo.routes().await?;
        let mut grouped: Vec<ServedModel> = Vec::new();
        for row in rows {
            let endpoint = row.instance.map(|(id, url)| ServedEndpoint {
                instance: id.as_uuid(),
                base_url: Arc::from(url),
            });
            match grouped.last_mut() {
                Some(last) if last.name == row.served_name => last.endpoints.extend(endpoint),
                _ => grouped.push(ServedModel {
                    name: row.served_name,
                    upstream_model: row.upstream_model,
                    deployment_id: row.deployment_id.as_uuid(),
                    created_at: row.created_at,
                    endpoints: endpoint.into_iter().collect(),
                }),
            }
        }
        let mut snapshot = Snapshot::default();
        for model in grouped {
            let model = Arc::new(model);
            snapshot
                .by_name
                .insert(model.name.clone(), Arc::clone(&model));
            if model.name == model.upstream_model {
                snapshot
                    .by_deployment
                    .insert(model.deployment_id, Arc::clone(&model));
            }
            snapshot.models.push(model);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        Ok(())
    }
}

impl DeploymentDirectory for Directory {
    fn lookup(&self, served_name: &str) -> Option<Arc<ServedModel>> {
        self.snapshot().by_name.get(served_name).cloned()
    }

    fn models(&self) -> Vec<Arc<ServedModel>> {
        self.snapshot().models.clone()
    }

    fn deployment(&self, id: uuid::Uuid) -> Option<Arc<ServedModel>> {
        self.snapshot().by_deployment.get(&id).cloned()
    }
}
