//! The embedded vector index (the default, no extra server): exact nearest-neighbour search
//! over the vectors in PostgreSQL, loaded per base and generation into this process's memory
//! and kept fresh by the base's `index_version` (bumped by every write, read by every search),
//! so the API and any number of replicas see what any worker wrote.
//!
//! Exact search has recall 1.0; one query costs one pass over the base's vectors (about 10 ms
//! per 100,000 vectors of 384 dimensions on one core) and `4 × dims` bytes per vector of memory
//! (`2 × dims` with [`Precision::F16`]).
//! Past a few hundred thousand chunks per base, use Qdrant.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement};

use super::pg::decode_vector;
use crate::domain::base::BaseId;
use crate::domain::document::DocumentId;
use crate::domain::errors::KnowledgeError;
use crate::domain::ports::{Point, Space, VectorHit, VectorIndex};

/// How vectors are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 4 bytes a dimension, as stored.
    #[default]
    F32,
    /// 2 bytes a dimension (half the memory; scores differ from f32 by about 1e-3).
    F16,
}

/// A base's vectors, row after row.
enum Rows {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

/// One base's vectors of one generation, normalized, in one contiguous buffer.
struct Loaded {
    version: i64,
    dims: usize,
    chunks: Vec<uuid::Uuid>,
    documents: Vec<DocumentId>,
    vectors: Rows,
}

impl Loaded {
    fn bytes(&self) -> usize {
        let vectors = match &self.vectors {
            Rows::F32(v) => v.len() * 4,
            Rows::F16(v) => v.len() * 2,
        };
        vectors + self.chunks.len() * 32
    }
}

/// Rows read per query while loading a base.
const LOAD_PAGE: i64 = 5000;

/// Exact search over PostgreSQL's vectors, cached in memory.
#[derive(Clone)]
pub struct EmbeddedIndex {
    db: DatabaseConnection,
    cache: moka::sync::Cache<(BaseId, i32), Arc<Loaded>>,
    precision: Precision,
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

impl EmbeddedIndex {
    /// The index over `db`, keeping at most `cache_bytes` of vectors in memory (the least
    /// recently searched bases are dropped first and reloaded when searched again).
    #[must_use]
    pub fn new(db: DatabaseConnection, cache_bytes: u64) -> Self {
        Self {
            db,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_bytes)
                .weigher(|_, v: &Arc<Loaded>| u32::try_from(v.bytes()).unwrap_or(u32::MAX))
                .build(),
            precision: Precision::F32,
        }
    }

    /// The same index holding vectors at `precision`.
    #[must_use]
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    async fn bump(&self, base: BaseId) -> Result<(), KnowledgeError> {
        self.db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE knowledge_bases SET index_version = index_version + 1 WHERE id = $1",
                [base.as_uuid().into()],
            ))
            .await
            .context("bumping the index version")?;
        Ok(())
    }

    async fn version(&self, space: &Space) -> Result<Option<i64>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Version {
            index_version: i64,
        }
        Ok(Version::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT index_version FROM knowledge_bases WHERE id = $1 AND owner_id = $2",
            [space.base.as_uuid().into(), space.owner.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading the index version")?
        .map(|v| v.index_version))
    }

    async fn load(&self, space: &Space, version: i64) -> Result<Arc<Loaded>, KnowledgeError> {
        #[derive(FromQueryResult)]
        struct Row {
            chunk_id: uuid::Uuid,
            document_id: uuid::Uuid,
            vector: Vec<u8>,
        }
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let dims = usize::try_from(space.dims).unwrap_or(0);
        let scope = [
            space.base.as_uuid().into(),
            space.owner.as_uuid().into(),
            space.generation.into(),
        ];
        let expected = Count::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM knowledge_vectors WHERE base_id = $1 AND owner_id = $2 AND generation = $3",
            scope.clone(),
        ))
        .one(&self.db)
        .await
        .context("counting a base's vectors")?
        .map_or(0, |c| usize::try_from(c.n).unwrap_or(0));
        let mut loaded = Loaded {
            version,
            dims,
            chunks: Vec::with_capacity(expected),
            documents: Vec::with_capacity(expected),
            vectors: match self.precision {
                Precision::F32 => Rows::F32(Vec::with_capacity(expected * dims)),
                Precision::F16 => Rows::F16(Vec::with_capacity(expected * dims)),
            },
        };
        // Read in pages, so the rows in flight stay small next to the vectors kept.
        let mut after: Option<uuid::Uuid> = None;
        loop {
            let mut values = scope.to_vec();
            values.push(after.into());
            values.push(LOAD_PAGE.into());
            let rows = Row::find_by_statement(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT chunk_id, document_id, vector FROM knowledge_vectors
                 WHERE base_id = $1 AND owner_id = $2 AND generation = $3
                   AND ($4::uuid IS NULL OR chunk_id > $4)
                 ORDER BY chunk_id LIMIT $5",
                values,
            ))
            .all(&self.db)
            .await
            .context("loading a base's vectors")?;
            let Some(last) = rows.last() else { break };
            after = Some(last.chunk_id);
            let full = rows.len() == usize::try_from(LOAD_PAGE).unwrap_or(usize::MAX);
            for row in rows {
                let Some(mut v) = decode_vector(&row.vector).filter(|v| v.len() == dims) else {
                    tracing::warn!(chunk = %row.chunk_id, "a stored vector has the wrong dimension; skipped");
                    continue;
                };
                normalize(&mut v);
                loaded.chunks.push(row.chunk_id);
                loaded
                    .documents
                    .push(DocumentId::from_uuid(row.document_id));
                match &mut loaded.vectors {
                    Rows::F32(all) => all.extend_from_slice(&v),
                    Rows::F16(all) => all.extend(v.iter().map(|x| half::f16::from_f32(*x))),
                }
            }
            if !full {
                break;
            }
        }
        Ok(Arc::new(loaded))
    }

    /// The cached vectors of `space` at the base's current version (loaded when stale).
    async fn current(&self, space: &Space) -> Result<Option<Arc<Loaded>>, KnowledgeError> {
        let Some(version) = self.version(space).await? else {
            return Ok(None);
        };
        let key = (space.base, space.generation);
        if let Some(hit) = self.cache.get(&key).filter(|l| l.version == version) {
            return Ok(Some(hit));
        }
        // The version read before loading: a write during the load makes the next search
        // load again.
        let loaded = self.load(space, version).await?;
        self.cache.insert(key, Arc::clone(&loaded));
        Ok(Some(loaded))
    }
}

/// The `k` best of `loaded` for a normalized `query`, restricted to `documents`.
fn nearest(
    loaded: &Loaded,
    query: &[f32],
    k: usize,
    documents: Option<&[DocumentId]>,
) -> Vec<VectorHit> {
    let allowed: Option<std::collections::HashSet<DocumentId>> =
        documents.map(|d| d.iter().copied().collect());
    let dims = loaded.dims.max(1);
    let keep = |i: &usize| {
        allowed
            .as_ref()
            .is_none_or(|a| a.contains(&loaded.documents[*i]))
    };
    let dot = |v: &[f32]| v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
    let mut scored: Vec<(f32, usize)> = match &loaded.vectors {
        Rows::F32(all) => all
            .chunks_exact(dims)
            .enumerate()
            .filter(|(i, _)| keep(i))
            .map(|(i, v)| (dot(v), i))
            .collect(),
        Rows::F16(all) => {
            use half::slice::HalfFloatSliceExt as _;
            let mut row = vec![0.0_f32; dims];
            all.chunks_exact(dims)
                .enumerate()
                .filter(|(i, _)| keep(i))
                .map(|(i, v)| {
                    v.convert_to_f32_slice(&mut row);
                    (dot(&row), i)
                })
                .collect()
        }
    };
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(k);
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
        .into_iter()
        .map(|(score, i)| VectorHit {
            chunk: loaded.chunks[i],
            document: loaded.documents[i],
            score,
        })
        .collect()
}

#[async_trait]
impl VectorIndex for EmbeddedIndex {
    async fn upsert(&self, space: &Space, points: &[Point]) -> Result<(), KnowledgeError> {
        // The points are already in the record, which is what this index reads.
        if !points.is_empty() {
            self.bump(space.base).await?;
        }
        Ok(())
    }

    async fn delete_document(
        &self,
        space: &Space,
        _document: DocumentId,
    ) -> Result<(), KnowledgeError> {
        self.bump(space.base).await
    }

    async fn drop_space(&self, space: &Space) -> Result<(), KnowledgeError> {
        // Every process's cached copy goes stale with the version, not only this one's.
        self.cache.invalidate(&(space.base, space.generation));
        self.bump(space.base).await
    }

    async fn search(
        &self,
        space: &Space,
        query: &[f32],
        top_k: usize,
        documents: Option<&[DocumentId]>,
    ) -> Result<Vec<VectorHit>, KnowledgeError> {
        let Some(loaded) = self.current(space).await? else {
            return Ok(Vec::new());
        };
        if query.len() != loaded.dims || loaded.chunks.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = query.to_vec();
        normalize(&mut query);
        let documents = documents.map(<[DocumentId]>::to_vec);
        tokio::task::spawn_blocking(move || nearest(&loaded, &query, top_k, documents.as_deref()))
            .await
            .context("searching vectors")
            .map_err(KnowledgeError::Unexpected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_is_exact_and_filtered() {
        let d1 = DocumentId::new();
        let d2 = DocumentId::new();
        let mut vectors = vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        for v in vectors.chunks_exact_mut(2) {
            normalize(v);
        }
        let loaded = Loaded {
            version: 0,
            dims: 2,
            chunks: vec![
                uuid::Uuid::from_u128(1),
                uuid::Uuid::from_u128(2),
                uuid::Uuid::from_u128(3),
            ],
            documents: vec![d1, d1, d2],
            vectors: Rows::F32(vectors.clone()),
        };
        let half = Loaded {
            vectors: Rows::F16(vectors.iter().map(|x| half::f16::from_f32(*x)).collect()),
            chunks: loaded.chunks.clone(),
            documents: loaded.documents.clone(),
            ..loaded
        };
        assert_eq!(half.bytes() * 2 - 3 * 32 * 2, loaded.bytes() - 3 * 32);
        for (l, tolerance) in [(&loaded, 1e-6), (&half, 1e-3)] {
            let hits = nearest(l, &[1.0, 0.0], 2, None);
            let ids: Vec<u128> = hits.iter().map(|h| h.chunk.as_u128()).collect();
            assert_eq!(ids, [1, 2]);
            assert!((hits[0].score - 1.0).abs() < tolerance);
            assert!((hits[1].score - 0.6).abs() < tolerance);
            let only_d2 = nearest(l, &[1.0, 0.0], 2, Some(&[d2]));
            assert_eq!(only_d2.len(), 1);
            assert_eq!(only_d2[0].chunk.as_u128(), 3);
        }
    }
}
