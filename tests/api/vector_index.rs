//! The `VectorIndex` contract, one suite for every adapter: the embedded index always, Qdrant
//! when `QDRANT_URL` is set (CI has no Qdrant server). Each step changes the record in
//! PostgreSQL first, as the knowledge context does, then calls the index through one process's
//! adapter and reads through another's, as the worker writes and the API searches.

use std::sync::Arc;

use maas_knowledge::domain::base::BaseId;
use maas_knowledge::domain::document::DocumentId;
use maas_knowledge::domain::ports::{Point, Space, VectorHit, VectorIndex};
use maas_knowledge::infra::embedded::{EmbeddedIndex, Precision};
use maas_knowledge::infra::qdrant::QdrantIndex;
use maas_tests::TestApp;
use sea_orm::{ConnectionTrait as _, DatabaseConnection};
use uuid::Uuid;

/// The record side of the contract: rows in PostgreSQL, as the knowledge context writes them.
struct Record {
    db: DatabaseConnection,
}

impl Record {
    async fn run(&self, sql: &str) {
        self.db.execute_unprepared(sql).await.unwrap();
    }

    async fn base(&self, space: &Space) {
        let (b, o) = (space.base.as_uuid(), space.owner.as_uuid());
        self.run(&format!(
            "INSERT INTO knowledge_bases (id, owner_id, name, description, embedding_model, generation, dims, chunking, retrieval, created_at, updated_at)
             VALUES ('{b}', '{o}', 'contract {b}', '', '{m}', {g}, {d}, '{{}}', '{{}}', now(), now())",
            m = space.model,
            g = space.generation,
            d = space.dims,
        ))
        .await;
    }

    async fn points(&self, space: &Space, document: DocumentId, points: &[Point]) {
        let (b, o, d) = (
            space.base.as_uuid(),
            space.owner.as_uuid(),
            document.as_uuid(),
        );
        self.run(&format!(
            "INSERT INTO knowledge_documents (id, base_id, owner_id, file_name, kind, bytes, content_hash, storage_key, status, metadata, created_at, updated_at)
             VALUES ('{d}', '{b}', '{o}', 'f.txt', 'txt', 1, '{d}', '{d}', 'ready', '{{}}', now(), now()) ON CONFLICT DO NOTHING"
        ))
        .await;
        for (i, p) in points.iter().enumerate() {
            let bytes: String = p
                .vector
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .map(|b| format!("{b:02x}"))
                .collect();
            let c = p.chunk;
            self.run(&format!(
                "INSERT INTO knowledge_chunks (id, document_id, base_id, owner_id, position, content, tokens, terms)
                 VALUES ('{c}', '{d}', '{b}', '{o}', {i}, 'chunk', 1, ''::tsvector) ON CONFLICT DO NOTHING;
                 INSERT INTO knowledge_vectors (chunk_id, generation, base_id, owner_id, document_id, vector)
                 VALUES ('{c}', {g}, '{b}', '{o}', '{d}', '\\x{bytes}') ON CONFLICT DO NOTHING",
                g = space.generation,
            ))
            .await;
        }
    }

    async fn delete_document(&self, document: DocumentId) {
        self.run(&format!(
            "DELETE FROM knowledge_documents WHERE id = '{}'",
            document.as_uuid()
        ))
        .await;
    }

    async fn drop_space(&self, space: &Space) {
        self.run(&format!(
            "DELETE FROM knowledge_vectors WHERE base_id = '{}' AND generation = {}",
            space.base.as_uuid(),
            space.generation
        ))
        .await;
    }
}

fn point(document: DocumentId, vector: [f32; 4]) -> Point {
    Point {
        chunk: Uuid::now_v7(),
        document,
        vector: vector.to_vec(),
    }
}

fn chunks(hits: &[VectorHit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.chunk).collect()
}

/// The contract: `writer` is one process's adapter, `reader` another's; scores are cosine
/// similarities within `tolerance`.
async fn contract(
    app: &TestApp,
    writer: Arc<dyn VectorIndex>,
    reader: Arc<dyn VectorIndex>,
    tolerance: f32,
) {
    let record = Record { db: app.db().await };
    let model = format!("contract-{}", Uuid::now_v7().simple());
    let mut spaces = Vec::new();
    for name in ["ann", "bob"] {
        let owner = app.create_user(name, &["developer"]).await;
        spaces.push(Space {
            owner: maas_user::contract::UserId::from_uuid(owner),
            base: BaseId::new(),
            model: model.clone(),
            generation: 1,
            dims: 4,
        });
    }
    let (a, b) = (&spaces[0], &spaces[1]);
    for s in &spaces {
        record.base(s).await;
    }
    let (doc1, doc2, doc3) = (DocumentId::new(), DocumentId::new(), DocumentId::new());
    let p1 = point(doc1, [1.0, 0.0, 0.0, 0.0]);
    let p2 = point(doc1, [0.9, 0.1, 0.0, 0.0]);
    let p3 = point(doc2, [0.0, 2.0, 0.0, 0.0]);
    let p4 = point(doc3, [1.0, 0.0, 0.0, 0.0]);
    let query = [3.0, 0.0, 0.0, 0.0];

    // Nothing written yet: nothing found.
    assert!(reader.search(a, &query, 10, None).await.unwrap().is_empty());

    record.points(a, doc1, &[p1.clone(), p2.clone()]).await;
    record.points(a, doc2, std::slice::from_ref(&p3)).await;
    record.points(b, doc3, std::slice::from_ref(&p4)).await;
    writer
        .upsert(a, &[p1.clone(), p2.clone(), p3.clone()])
        .await
        .unwrap();
    writer.upsert(b, std::slice::from_ref(&p4)).await.unwrap();

    // Exact order and cosine scores; another tenant's identical vector never appears.
    let hits = reader.search(a, &query, 10, None).await.unwrap();
    assert_eq!(chunks(&hits), vec![p1.chunk, p2.chunk, p3.chunk]);
    let expected = [1.0, 0.9 / 0.82_f32.sqrt(), 0.0];
    for (hit, want) in hits.iter().zip(expected) {
        assert!(
            (hit.score - want).abs() < tolerance,
            "score {} for {want}",
            hit.score
        );
    }
    assert_eq!(hits[0].document, doc1);
    assert_eq!(
        chunks(&reader.search(a, &query, 1, None).await.unwrap()),
        vec![p1.chunk]
    );
    assert_eq!(
        chunks(&reader.search(b, &query, 10, None).await.unwrap()),
        vec![p4.chunk]
    );
    // Restricted to documents.
    assert_eq!(
        chunks(&reader.search(a, &query, 10, Some(&[doc2])).await.unwrap()),
        vec![p3.chunk]
    );
    assert!(
        reader
            .search(a, &query, 10, Some(&[]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        reader
            .search(a, &query, 10, Some(&[doc3]))
            .await
            .unwrap()
            .is_empty(),
        "another tenant's document id finds nothing"
    );

    // Upserting again (a resumed ingestion) duplicates nothing.
    writer
        .upsert(a, &[p1.clone(), p2.clone(), p3.clone()])
        .await
        .unwrap();
    assert_eq!(reader.search(a, &query, 10, None).await.unwrap().len(), 3);

    // A deleted document is gone; the other tenant is untouched.
    record.delete_document(doc1).await;
    writer.delete_document(a, doc1).await.unwrap();
    assert_eq!(
        chunks(&reader.search(a, &query, 10, None).await.unwrap()),
        vec![p3.chunk]
    );
    assert_eq!(
        chunks(&reader.search(b, &query, 10, None).await.unwrap()),
        vec![p4.chunk]
    );

    // A dropped space is empty; the other tenant is untouched.
    record.drop_space(a).await;
    writer.drop_space(a).await.unwrap();
    assert!(reader.search(a, &query, 10, None).await.unwrap().is_empty());
    assert_eq!(
        chunks(&reader.search(b, &query, 10, None).await.unwrap()),
        vec![p4.chunk]
    );
    // Dropping or deleting in a space with nothing is a no-op.
    writer.drop_space(a).await.unwrap();
    writer.delete_document(a, doc2).await.unwrap();
}

#[tokio::test]
async fn the_embedded_index_keeps_the_contract() {
    let app = TestApp::spawn().await;
    let writer = Arc::new(EmbeddedIndex::new(app.db().await, 64 << 20));
    let reader = Arc::new(EmbeddedIndex::new(app.db().await, 64 << 20));
    contract(&app, writer, reader, 1e-5).await;
}

#[tokio::test]
async fn the_embedded_index_at_half_precision_keeps_the_contract() {
    let app = TestApp::spawn().await;
    let half = |db| Arc::new(EmbeddedIndex::new(db, 64 << 20).with_precision(Precision::F16));
    contract(&app, half(app.db().await), half(app.db().await), 2e-3).await;
}

#[tokio::test]
async fn the_qdrant_index_keeps_the_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "QDRANT_URL is not set: skipping the Qdrant contract run (CI has no Qdrant server)"
        );
        return;
    };
    let app = TestApp::spawn().await;
    let prefix = format!("contract_{}", &Uuid::now_v7().simple().to_string()[20..]);
    let key = std::env::var("QDRANT_API_KEY").ok();
    let writer = Arc::new(QdrantIndex::connect(&url, key.clone(), &prefix).unwrap());
    let reader = Arc::new(QdrantIndex::connect(&url, key, &prefix).unwrap());
    contract(&app, writer, reader, 1e-4).await;
}
