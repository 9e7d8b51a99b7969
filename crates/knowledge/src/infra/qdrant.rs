//! The Qdrant vector index (`[vector_store] kind = "qdrant"`): for bases past a few hundred
//! thousand chunks and for scale-out (Qdrant's own replication and sharding).
//!
//! One collection per embedding model and dimension (`{prefix}_{model}_{dims}`, cosine), shared
//! by every tenant: each point carries `tenant`, `base`, `generation`, `document` and `chunk`
//! as payload, the first four indexed (`tenant` as Qdrant's tenant key), and every query and
//! delete is filtered by tenant, base and generation on the server. A point's id is derived
//! from its chunk and generation, so an upsert run again overwrites instead of duplicating.
//! Writes wait for Qdrant to apply them, so a search after `upsert` returns sees them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, KeywordIndexParamsBuilder, PointStruct, QueryPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, value::Kind,
};

use crate::domain::document::DocumentId;
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::{Point, Space, VectorHit, VectorIndex};

/// Vectors in Qdrant.
#[derive(Clone)]
pub struct QdrantIndex {
    client: Arc<Qdrant>,
    prefix: String,
    /// Collections known to exist (created by this process or found).
    ready: Arc<Mutex<HashSet<String>>>,
}

fn unavailable(err: impl std::fmt::Display) -> KnowledgeError {
    KnowledgeError::IndexUnavailable(err.to_string())
}

const POINT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d61_6173_2d71_6472_616e_7470_6f69_6e74);

/// The point id of a chunk's vector of one generation.
fn point_id(chunk: uuid::Uuid, generation: i32) -> uuid::Uuid {
    let mut name = chunk.as_bytes().to_vec();
    name.extend_from_slice(&generation.to_be_bytes());
    uuid::Uuid::new_v5(&POINT_NAMESPACE, &name)
}

/// `tenant`, `base` and `generation` of a space: the filter of every call.
fn scope(space: &Space) -> Vec<Condition> {
    vec![
        Condition::matches("tenant", space.owner.as_uuid().to_string()),
        Condition::matches("base", space.base.as_uuid().to_string()),
        Condition::matches("generation", i64::from(space.generation)),
    ]
}

fn text(
    payload: &std::collections::HashMap<String, qdrant_client::qdrant::Value>,
    key: &str,
) -> Option<uuid::Uuid> {
    match payload.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => uuid::Uuid::parse_str(s).ok(),
        Kind::NullValue(_)
        | Kind::DoubleValue(_)
        | Kind::IntegerValue(_)
        | Kind::BoolValue(_)
        | Kind::StructValue(_)
        | Kind::ListValue(_) => None,
    }
}

impl QdrantIndex {
    /// A client of the Qdrant at `url` (gRPC, usually port 6334); collections are named
    /// `{prefix}_{model}_{dims}`.
    ///
    /// # Errors
    /// When the URL is not usable.
    pub fn connect(url: &str, api_key: Option<String>, prefix: &str) -> anyhow::Result<Self> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .skip_compatibility_check()
            .build()?;
        Ok(Self {
            client: Arc::new(client),
            prefix: prefix.to_owned(),
            ready: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The collection of a space's model and dimension.
    #[must_use]
    pub fn collection(&self, space: &Space) -> String {
        let model: String = space
            .model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}_{model}_{}", self.prefix, space.dims)
    }

    fn known(&self, name: &str) -> bool {
        self.ready.lock().is_ok_and(|r| r.contains(name))
    }

    fn remember(&self, name: &str) {
        if let Ok(mut r) = self.ready.lock() {
            r.insert(name.to_owned());
        }
    }

    /// Whether the collection exists (creating it, with its payload indexes, when `create`).
    async fn collection_ready(
        &self,
        space: &Space,
        create: bool,
    ) -> Result<Option<String>, KnowledgeError> {
        let name = self.collection(space);
        if self.known(&name) {
            return Ok(Some(name));
        }
        if self
            .client
            .collection_exists(&name)
            .await
            .map_err(unavailable)?
        {
            self.remember(&name);
            return Ok(Some(name));
        }
        if !create {
            return Ok(None);
        }
        let created = self
            .client
            .create_collection(CreateCollectionBuilder::new(&name).vectors_config(
                VectorParamsBuilder::new(u64::from(space.dims), Distance::Cosine),
            ))
            .await;
        if let Err(err) = created {
            // Another process may have created it meanwhile.
            if !self
                .client
                .collection_exists(&name)
                .await
                .map_err(unavailable)?
            {
                return Err(unavailable(err));
            }
        }
        let indexes = [
            ("tenant", FieldType::Keyword, true),
            ("base", FieldType::Keyword, false),
            ("document", FieldType::Keyword, false),
            ("generation", FieldType::Integer, false),
        ];
        for (field, kind, tenant) in indexes {
            let mut request = CreateFieldIndexCollectionBuilder::new(&name, field, kind).wait(true);
            if tenant {
                request = request
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true));
            }
            self.client
                .create_field_index(request)
                .await
                .map_err(unavailable)?;
        }
        self.remember(&name);
        Ok(Some(name))
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn upsert(&self, space: &Space, points: &[Point]) -> Result<(), KnowledgeError> {
        if points.is_empty() {
            return Ok(());
        }
        let Some(collection) = self.collection_ready(space, true).await? else {
            return Ok(());
        };
        let structs: Vec<PointStruct> = points
            .iter()
            .map(|p| {
                PointStruct::new(
                    point_id(p.chunk, space.generation),
                    p.vector.clone(),
                    [
                        ("tenant", space.owner.as_uuid().to_string().into()),
                        ("base", space.base.as_uuid().to_string().into()),
                        ("generation", i64::from(space.generation).into()),
                        ("document", p.document.as_uuid().to_string().into()),
                        ("chunk", p.chunk.to_string().into()),
                    ],
                )
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(collection, structs).wait(true))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_document(
        &self,
        space: &Space,
        document: DocumentId,
    ) -> Result<(), KnowledgeError> {
        let Some(collection) = self.collection_ready(space, false).await? else {
            return Ok(());
        };
        let mut conditions = scope(space);
        conditions.push(Condition::matches(
            "document",
            document.as_uuid().to_string(),
        ));
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(Filter::must(conditions))
                    .wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn drop_space(&self, space: &Space) -> Result<(), KnowledgeError> {
        let Some(collection) = self.collection_ready(space, false).await? else {
            return Ok(());
        };
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(Filter::must(scope(space)))
                    .wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn search(
        &self,
        space: &Space,
        query: &[f32],
        top_k: usize,
        documents: Option<&[DocumentId]>,
    ) -> Result<Vec<VectorHit>, KnowledgeError> {
        if top_k == 0 || documents.is_some_and(<[DocumentId]>::is_empty) {
            return Ok(Vec::new());
        }
        let Some(collection) = self.collection_ready(space, false).await? else {
            return Ok(Vec::new());
        };
        let mut conditions = scope(space);
        if let Some(docs) = documents {
            conditions.push(Condition::matches(
                "document",
                docs.iter()
                    .map(|d| d.as_uuid().to_string())
                    .collect::<Vec<_>>(),
            ));
        }
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(collection)
                    .query(query.to_vec())
                    .limit(u64::try_from(top_k).unwrap_or(u64::MAX))
                    .filter(Filter::must(conditions))
                    .with_payload(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                Some(VectorHit {
                    chunk: text(&p.payload, "chunk")?,
                    document: DocumentId::from_uuid(text(&p.payload, "document")?),
                    score: p.score,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_stable_per_chunk_and_generation() {
        let c = uuid::Uuid::now_v7();
        assert_eq!(point_id(c, 1), point_id(c, 1));
        assert_ne!(point_id(c, 1), point_id(c, 2));
    }
}
