//! Knowledge bases: documents uploaded by their owners, turned by `maas-worker` into chunks and
//! vectors (embedded through the metered gateway), searched by vector, full text or both.
//!
//! Layers (DESIGN §2): `domain` (entities, value objects, errors, ports; no framework types),
//! `app` (use cases over the ports), `infra` (adapters, feature `infra`) and `interface` (HTTP
//! handlers, DTOs and OpenAPI, feature `http`). Other contexts use only what this file exports.

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::{KnowledgeApi, KnowledgeOpenAiApi, configure, configure_openai};

/// What other contexts (apps) depend on: searching a base as a principal.
pub mod contract {
    pub use crate::app::knowledge::{Hit, Retriever};
    pub use crate::domain::base::{BaseId, Retrieval, SearchMode};
    pub use crate::domain::errors::KnowledgeError;
    pub use crate::domain::ports::ChunkView;
}

/// Job payloads of this context (produced and consumed through apalis).
#[cfg(feature = "infra")]
pub mod jobs {
    use serde::{Deserialize, Serialize};

    /// Brings one document to searchable (or failed). Idempotent and resumable: it does only
    /// the steps still due, and chunk ids come from the document and position.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IngestJob {
        /// The document.
        pub document_id: uuid::Uuid,
        /// Runs so far that ended in a retry.
        #[serde(default)]
        pub attempt: u32,
    }

    impl maas_shared::jobs::Job for IngestJob {
        const QUEUE: &'static str = "knowledge.ingest";
    }

    /// Queues again the documents whose ingestion stopped (their worker died). Idempotent.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IngestSweepJob {
        /// The schedule's tick it was pushed for (Unix seconds).
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for IngestSweepJob {
        const QUEUE: &'static str = "knowledge.ingest_sweep";
    }

    impl maas_shared::jobs::Scheduled for IngestSweepJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }
}
