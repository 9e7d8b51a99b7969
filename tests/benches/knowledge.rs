//! Knowledge bases, measured over real processes (release `maas-api`, `maas-worker`,
//! `maas-engine` with MiniLM) on loopback with real PostgreSQL and Redis:
//! 1. ingestion end to end: `BENCH_DOCS` (200) text documents uploaded, until every one is
//!    ready: documents/s and chunks/s;
//! 2. search at 100,000 chunks of 384 dimensions (the embedded index): the first search (which
//!    loads the base), then p50/p99 of vector, full-text and hybrid searches through the API
//!    (the query embedded by the engine each time);
//! 3. `maas-api`'s RSS before and after the 100,000 vectors are loaded: memory per 100k.
//!
//! Run with `just bench` (it builds the release binaries first).

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::time::{Duration, Instant};

use maas_tests::cluster::Cluster;
use maas_tests::engine::{EMBEDDING_MODEL, EngineProcess};
use maas_tests::eventually;
use reqwest::{Method, StatusCode, multipart};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as Db};
use serde_json::{Value, json};

const ENV: [(&str, &str); 3] = [
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_MINUTE", "0"),
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_HOUR", "0"),
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_DAY", "0"),
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[i])
}

#[expect(clippy::cast_precision_loss, reason = "MiB for a report")]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn call(c: &Cluster, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = c.client.request(method, c.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// A deterministic pseudo-random vector (xorshift), the shape of an embedding.
fn vector(seed: u64, dims: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(dims * 4);
    for _ in 0..dims {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        #[expect(clippy::cast_precision_loss, reason = "a pseudo-random float")]
        let f = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(engine) = EngineProcess::start(&[]).await else {
        println!("knowledge bench skipped: no models (scripts/fetch-models.sh)");
        return;
    };
    let c = Cluster::start(&ENV, 1).await;
    let created = c
        .send(
            Method::POST,
            "/providers",
            Some(
                json!({"name": "builtin", "base_url": format!("{}/v1", engine.base_url),
                "models": [{"model": "minilm", "upstream_model": EMBEDDING_MODEL}]}),
            ),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED);
    let (owner, token) = c.app.user_with_token("bench", &["developer"]).await;

    // 1. Ingestion end to end.
    let docs: usize = std::env::var("BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let base = call(
        &c,
        &token,
        Method::POST,
        "/knowledge-bases",
        Some(json!({"name": "ingest", "embedding_model": "minilm",
        "chunking": {"strategy": "custom", "size": 100, "overlap": 10}})),
    )
    .await;
    let base = base["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    for i in 0..docs {
        let text = (0..12)
            .map(|s| format!("Document {i}, sentence {s}: the team recorded decision {} about component {} and its reasons.", i * 12 + s, s % 5))
            .collect::<Vec<_>>()
            .join(" ");
        let form = multipart::Form::new().part(
            "file",
            multipart::Part::bytes(text.into_bytes()).file_name(format!("doc-{i}.txt")),
        );
        let r = c
            .client
            .post(c.url(&format!("/knowledge-bases/{base}/documents")))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let uploaded = started.elapsed();
    let ready_sql = format!(
        "SELECT count(*) FROM knowledge_documents WHERE base_id = '{base}' AND status = 'ready'"
    );
    let docs_i64 = i64::try_from(docs).unwrap();
    let done = eventually(Duration::from_secs(600), || async {
        (c.app.count(&ready_sql).await == docs_i64).then_some(())
    })
    .await;
    assert!(done.is_some(), "ingestion did not finish:\n{}", c.logs());
    let took = started.elapsed();
    let chunks = c
        .app
        .count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await;
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let (dps, cps) = (
        docs as f64 / took.as_secs_f64(),
        chunks as f64 / took.as_secs_f64(),
    );
    println!(
        "ingestion: {docs} documents, {chunks} chunks in {:.1} s (uploads {:.1} s): {dps:.1} documents/s, {cps:.1} chunks/s",
        took.as_secs_f64(),
        uploaded.as_secs_f64()
    );

    // 2. Search at 100,000 chunks: rows written straight into the record.
    const N: i64 = 100_000;
    const DIMS: usize = 384;
    let big = call(
        &c,
        &token,
        Method::POST,
        "/knowledge-bases",
        Some(json!({"name": "big", "embedding_model": "minilm"})),
    )
    .await;
    let big = big["id"].as_str().unwrap().to_owned();
    let db = c.app.db().await;
    let stmt = |sql: &str, values: Vec<Db>| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    };
    let doc = uuid::Uuid::now_v7();
    let big_id = uuid::Uuid::parse_str(&big).unwrap();
    db.execute(stmt(
        "INSERT INTO knowledge_documents (id, base_id, owner_id, file_name, kind, bytes, content_hash, storage_key, status, chunks, tokens, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, 'synthetic.txt', 'txt', 0, 'synthetic', 'none', 'ready', $4, 0, '{}', now(), now())",
        vec![doc.into(), big_id.into(), owner.into(), i32::try_from(N).unwrap().into()],
    ))
    .await
    .unwrap();
    db.execute(stmt(
        "INSERT INTO knowledge_chunks (id, document_id, base_id, owner_id, position, content, tokens, terms)
         SELECT gen_random_uuid(), $1, $2, $3, g, 'chunk ' || g || ' about topic ' || (g % 977), 8,
                to_tsvector('simple', 'chunk ' || g || ' about topic ' || (g % 977))
         FROM generate_series(0, $4 - 1) g",
        vec![doc.into(), big_id.into(), owner.into(), N.into()],
    ))
    .await
    .unwrap();
    #[derive(sea_orm::FromQueryResult)]
    struct Id {
        id: uuid::Uuid,
    }
    use sea_orm::FromQueryResult as _;
    let ids = Id::find_by_statement(stmt(
        "SELECT id FROM knowledge_chunks WHERE base_id = $1 ORDER BY position",
        vec![big_id.into()],
    ))
    .all(&db)
    .await
    .unwrap();
    for (n, batch) in ids.chunks(500).enumerate() {
        let mut sql = String::from(
            "INSERT INTO knowledge_vectors (chunk_id, generation, base_id, owner_id, document_id, vector) VALUES ",
        );
        let mut values: Vec<Db> = vec![big_id.into(), owner.into(), doc.into()];
        for (i, row) in batch.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let k = 4 + i * 2;
            sql.push_str(&format!("(${k}, 1, $1, $2, $3, ${})", k + 1));
            values.push(row.id.into());
            values.push(vector(u64::try_from(n * 500 + i).unwrap(), DIMS).into());
        }
        db.execute(stmt(&sql, values)).await.unwrap();
    }
    db.execute(stmt(
        "UPDATE knowledge_bases SET dims = $2, index_version = index_version + 1 WHERE id = $1",
        vec![big_id.into(), i32::try_from(DIMS).unwrap().into()],
    ))
    .await
    .unwrap();
    // Settle the tables after the bulk insert (autovacuum and analyze would otherwise run
    // during the measurements, and the planner would not know the new rows).
    db.execute_unprepared(
        "VACUUM ANALYZE knowledge_documents, knowledge_chunks, knowledge_vectors",
    )
    .await
    .unwrap();
    let api_pid = c.api.id();
    let before = rss_kib(api_pid);
    let search = |body: Value| {
        let c = &c;
        let token = &token;
        let big = &big;
        async move {
            let t = Instant::now();
            let hits = call(
                c,
                token,
                Method::POST,
                &format!("/knowledge-bases/{big}/search"),
                Some(body),
            )
            .await;
            assert!(!hits["hits"].as_array().unwrap().is_empty());
            t.elapsed()
        }
    };
    let cold =
        search(json!({"query": "decision about a component", "mode": "vector", "top_k": 5})).await;
    let after = rss_kib(api_pid);
    println!(
        "search at {N} chunks × {DIMS} dims: first vector search (loads the base) {:.1} ms; maas-api RSS {} → {} MiB ({:.0} MiB per 100k vectors)",
        ms(cold),
        before / 1024,
        after / 1024,
        mib(after.saturating_sub(before))
    );
    for mode in ["vector", "fulltext", "hybrid"] {
        let mut times = Vec::new();
        for q in 0..60 {
            times.push(search(json!({"query": format!("chunk about topic {}", q * 7), "mode": mode, "top_k": 5})).await);
        }
        times.sort();
        println!(
            "search {mode:<8} at {N} chunks: p50 {:.2} ms, p99 {:.2} ms (60 queries, through the API{})",
            pct(&times, 0.5),
            pct(&times, 0.99),
            if mode == "fulltext" {
                ""
            } else {
                ", the query embedded by the engine"
            }
        );
    }
    // The same base searched by a replica holding vectors at half precision.
    let (mut half, half_base) = c
        .spawn_api_with("api-f16", &[("MAAS__KNOWLEDGE__EMBEDDED_PRECISION", "f16")])
        .await;
    let half_pid = half.id();
    let before = rss_kib(half_pid);
    let half_search = |q: String| {
        let c = &c;
        let token = &token;
        let big = &big;
        let half_base = &half_base;
        async move {
            let t = Instant::now();
            let r = c
                .client
                .post(format!("{half_base}/api/v1/knowledge-bases/{big}/search"))
                .bearer_auth(token)
                .json(&json!({"query": q, "mode": "vector", "top_k": 5}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            t.elapsed()
        }
    };
    let cold = half_search("decision about a component".to_owned()).await;
    let after = rss_kib(half_pid);
    let mut times = Vec::new();
    for q in 0..60 {
        times.push(half_search(format!("chunk about topic {}", q * 7)).await);
    }
    times.sort();
    println!(
        "f16 replica: first vector search {:.1} ms; RSS {} → {} MiB ({:.0} MiB per 100k vectors); vector p50 {:.2} ms, p99 {:.2} ms",
        ms(cold),
        before / 1024,
        after / 1024,
        mib(after.saturating_sub(before)),
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
    let _ = half.kill();
    let _ = half.wait();

    let mut embed = Vec::new();
    for q in 0..60 {
        let t = Instant::now();
        let r = c
            .client
            .post(format!("{}/v1/embeddings", c.base))
            .bearer_auth(&token)
            .json(&json!({"model": "minilm", "input": format!("chunk about topic {}", q * 7)}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        embed.push(t.elapsed());
    }
    embed.sort();
    println!(
        "reference: the query's embedding alone through /v1/embeddings: p50 {:.2} ms, p99 {:.2} ms",
        pct(&embed, 0.5),
        pct(&embed, 0.99)
    );
}
