//! Adapters: PostgreSQL (the record and full text), the embedded vector index, text
//! extraction, tokenizers, the ingestion queue; [`Knowledge::build`] wires them for a
//! composition root.

pub mod embedded;
pub mod extract;
pub mod pg;
pub mod qdrant;
pub mod queue;
pub mod stores;
pub mod tokens;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use maas_inference::contract::Embedder;
use maas_shared::clock::Clock;
use maas_shared::kv::{Keyspace, Multiplexed};
use maas_shared::storage::BlobStore;
use maas_user::contract::Principals;
use sea_orm::DatabaseConnection;

use crate::app::ingest::{IngestConfig, Ingestor};
use crate::app::knowledge::{KnowledgeConfig, KnowledgePorts, KnowledgeService};
use crate::app::stores::VectorStores;
use crate::domain::ports::{Extractor, VectorIndex};

/// What [`Knowledge::build`] needs.
pub struct KnowledgeParams {
    /// PostgreSQL.
    pub db: DatabaseConnection,
    /// Redis (the ingestion queue).
    pub redis: Multiplexed,
    /// This deployment's Redis keys.
    pub keys: Keyspace,
    /// Uploaded bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Embeddings through the gateway.
    pub embedder: Arc<dyn Embedder>,
    /// Owners' principals.
    pub principals: Arc<dyn Principals>,
    /// The vector index (the embedded one when `None`).
    pub index: Option<Arc<dyn VectorIndex>>,
    /// Memory the embedded index may hold, in bytes.
    pub embedded_cache_bytes: u64,
    /// How the embedded index holds vectors.
    pub embedded_precision: embedded::Precision,
    /// Tokenizers by embedding model.
    pub tokenizers: HashMap<String, PathBuf>,
    /// Tunables.
    pub config: KnowledgeConfig,
    /// Ingestion tunables.
    pub ingest: IngestConfig,
    /// The embedding model of vector stores created without one.
    pub store_embedding_model: String,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// This context's services.
#[derive(Clone)]
pub struct Knowledge {
    /// Bases, documents, search.
    pub service: KnowledgeService,
    /// The ingestion (run by `maas-worker`).
    pub ingestor: Ingestor,
    /// OpenAI's files and vector stores over the bases.
    pub stores: VectorStores,
}

impl Knowledge {
    /// Builds the adapters and services.
    ///
    /// # Errors
    /// When a configured tokenizer cannot be loaded.
    pub fn build(p: KnowledgeParams) -> anyhow::Result<Self> {
        let index = p.index.unwrap_or_else(|| {
            Arc::new(
                embedded::EmbeddedIndex::new(p.db.clone(), p.embedded_cache_bytes)
                    .with_precision(p.embedded_precision),
            )
        });
        let ports = KnowledgePorts {
            bases: Arc::new(pg::PgBases::new(p.db.clone(), Arc::clone(&p.clock))),
            documents: Arc::new(pg::PgDocuments::new(p.db.clone(), Arc::clone(&p.clock))),
            index,
            blobs: p.blobs,
            queue: Arc::new(queue::ApalisIngestQueue::new(p.redis, p.keys)),
            stores: Arc::new(stores::PgStores::new(p.db.clone())),
            embedder: p.embedder,
            principals: p.principals,
            clock: p.clock,
        };
        let tokenizers = Arc::new(tokens::ModelTokenizers::load(&p.tokenizers)?);
        let service = KnowledgeService::new(ports.clone(), p.config);
        let extractor: Arc<dyn Extractor> = Arc::new(extract::FileExtractor);
        Ok(Self {
            stores: VectorStores::new(
                service.clone(),
                Arc::clone(&extractor),
                p.store_embedding_model,
            ),
            service,
            ingestor: Ingestor::new(ports, extractor, tokenizers, p.ingest),
        })
    }
}
