//! Knowledge bases end to end: real files (a PDF and a DOCX made here) through the real
//! `maas-api` and `maas-worker`, embedded by the built-in engine's MiniLM through the metered
//! gateway; search by vector, full text (Chinese too) and both; tenant isolation; refusals;
//! a worker killed mid-ingest; retrieval quality on the labelled set in `tests/data/knowledge`.

use std::collections::BTreeMap;
use std::time::Duration;

use maas_knowledge::domain::base::{Chunking, ChunkingStrategy};
use maas_knowledge::domain::text::{CharEstimate, split};
use maas_tests::cluster::{Cluster, kill9};
use maas_tests::engine::{EMBEDDING_MODEL, EngineProcess};
use maas_tests::{TestApp, docs, eventually};
use reqwest::{Method, StatusCode, multipart};
use serde_json::{Value, json};
use uuid::Uuid;

/// Fast sweeps and short leases, so a killed worker's documents are picked up in seconds; no
/// hourly request limit (every embedding batch is a request of the owner).
const ENV: [(&str, &str); 6] = [
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_HOUR", "0"),
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_DAY", "0"),
    ("MAAS__KNOWLEDGE__SWEEP_SCHEDULE", "* * * * * *"),
    ("MAAS__KNOWLEDGE__STALLED_AFTER_SECS", "2"),
    ("MAAS__KNOWLEDGE__LEASE_SECS", "5"),
    ("MAAS__KNOWLEDGE__EMBED_BATCH", "8"),
];

const WAIT: Duration = Duration::from_secs(90);

struct Kb {
    c: Cluster,
    _engine: EngineProcess,
    user: Uuid,
    token: String,
}

async fn call(
    c: &Cluster,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = c.client.request(method, c.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload(
    c: &Cluster,
    token: &str,
    base: &str,
    name: &str,
    mime: Option<&str>,
    bytes: Vec<u8>,
    metadata: Option<Value>,
) -> (StatusCode, Value) {
    let mut part = multipart::Part::bytes(bytes).file_name(name.to_owned());
    if let Some(m) = mime {
        part = part.mime_str(m).unwrap();
    }
    let mut form = multipart::Form::new().part("file", part);
    if let Some(m) = metadata {
        form = form.text("metadata", m.to_string());
    }
    let response = c
        .client
        .post(c.url(&format!("/knowledge-bases/{base}/documents")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

impl Kb {
    async fn start(workers: usize) -> Option<Self> {
        Self::start_with(&[], workers).await
    }

    /// [`Self::start`] with more settings (after [`ENV`], so they win).
    async fn start_with(extra: &[(&str, &str)], workers: usize) -> Option<Self> {
        let engine = EngineProcess::start(&[]).await?;
        let env: Vec<(&str, &str)> = ENV.iter().chain(extra).copied().collect();
        let c = Cluster::start(&env, workers).await;
        let (status, body) = c
            .send(
                Method::POST,
                "/providers",
                Some(
                    json!({"name": "builtin", "base_url": format!("{}/v1", engine.base_url),
                    "models": [{"model": "minilm", "upstream_model": EMBEDDING_MODEL}]}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (user, token) = c.app.user_with_token("kate", &["developer"]).await;
        Some(Self {
            c,
            _engine: engine,
            user,
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(&self.c, &self.token, method, path, body).await
    }

    async fn base(&self, token: &str, body: Value) -> String {
        let (status, base) =
            call(&self.c, token, Method::POST, "/knowledge-bases", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{base}");
        base["id"].as_str().unwrap().to_owned()
    }

    async fn upload(
        &self,
        base: &str,
        name: &str,
        mime: Option<&str>,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        upload(&self.c, &self.token, base, name, mime, bytes, None).await
    }

    /// Waits until the document has ended; answers it.
    async fn ended(&self, token: &str, base: &str, doc: &str) -> Value {
        let path = format!("/knowledge-bases/{base}/documents/{doc}");
        eventually(WAIT, || async {
            let (_, d) = call(&self.c, token, Method::GET, &path, None).await;
            matches!(d["status"].as_str(), Some("ready" | "failed")).then_some(d)
        })
        .await
        .unwrap_or_else(|| panic!("document {doc} never ended:\n{}", self.c.logs()))
    }

    async fn search(&self, token: &str, base: &str, body: Value) -> Value {
        let (status, hits) = call(
            &self.c,
            token,
            Method::POST,
            &format!("/knowledge-bases/{base}/search"),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{hits}");
        hits
    }

    /// A document's chunks' text, joined.
    async fn text_of(&self, base: &str, id: &str) -> String {
        let (_, chunks) = self
            .call(
                Method::GET,
                &format!("/knowledge-bases/{base}/documents/{id}/chunks"),
                None,
            )
            .await;
        chunks["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["content"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    async fn count(&self, sql: &str) -> i64 {
        self.c.app.count(sql).await
    }
}

fn files(hits: &Value) -> Vec<String> {
    hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["chunk"]["file_name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_document_type_is_ingested_metered_and_found() {
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    let base = kb
        .base(
            &kb.token,
            json!({"name": "Handbook", "embedding_model": "minilm",
                "chunking": {"strategy": "custom", "size": 60, "overlap": 10}}),
        )
        .await;
    let pdf = docs::pdf(&[
        "Quarterly report of the Contoso company.",
        "The quarterly revenue of Contoso grew by 42 percent.",
    ]);
    let uploads: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("../../etc/notes.txt", None, b"Mount Etna in Sicily is one of the most active volcanoes in Europe.".to_vec()),
        ("guide.md", Some("text/markdown"), b"# Guide\n\n## Parking\n\nVisitors park in the north garage on level two.\n".to_vec()),
        ("page.html", None, b"<html><body><h1>Lunch</h1><p>The canteen serves <b>lunch</b> from noon to two.</p><script>alert(1)</script></body></html>".to_vec()),
        ("report.pdf", None, pdf.clone()),
        ("memo.docx", None, docs::docx(&["The office moves to Building Seven on Monday.", "Bring your badge & laptop."])),
        ("staff.csv", Some("text/csv"), b"name,role\nAda,engineer\nLin,designer\n".to_vec()),
        ("faq.jsonl", None, b"{\"q\":\"What is the wifi password?\",\"a\":\"It is printed on the fridge.\"}\n".to_vec()),
        ("中文.txt", None, "知识库检索系统支持中文全文搜索。向量数据库保存文本的嵌入。".as_bytes().to_vec()),
    ];
    let mut ids = BTreeMap::new();
    for (name, mime, bytes) in uploads {
        let meta = (name == "report.pdf").then(|| json!({"team": "finance", "year": 2026}));
        let (status, body) = upload(&kb.c, &kb.token, &base, name, mime, bytes, meta).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["duplicate"], false);
        assert_eq!(body["document"]["status"], "queued");
        ids.insert(
            body["document"]["file_name"].as_str().unwrap().to_owned(),
            body["document"]["id"].as_str().unwrap().to_owned(),
        );
    }
    assert!(
        ids.contains_key("notes.txt"),
        "the path was dropped from the name: {ids:?}"
    );
    let mut tokens = 0;
    for (name, id) in &ids {
        let doc = kb.ended(&kb.token, &base, id).await;
        assert_eq!(doc["status"], "ready", "{name}: {doc}");
        assert!(doc["chunks"].as_u64().unwrap() >= 1, "{name}: {doc}");
        assert!(doc["tokens"].as_u64().unwrap() > 0, "{name}: {doc}");
        tokens += doc["tokens"].as_i64().unwrap();
    }
    // The record: every chunk has exactly one vector of the live generation.
    let chunks = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await;
    let vectors = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}' AND generation = 1"
        ))
        .await;
    assert_eq!(chunks, vectors);
    let listed: i64 = {
        let (_, list) = kb
            .call(
                Method::GET,
                &format!("/knowledge-bases/{base}/documents"),
                None,
            )
            .await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["chunks"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(listed, chunks);
    // Metered to the owner: the usage rows of the embedding calls add up to the documents'.
    let charged = eventually(WAIT, || async {
        let sum = kb
            .count(&format!("SELECT coalesce(sum(prompt_tokens), 0)::bigint FROM usage_records WHERE user_id = '{}' AND endpoint = 'embeddings'", kb.user))
            .await;
        (sum == tokens).then_some(sum)
    })
    .await;
    assert_eq!(
        charged,
        Some(tokens),
        "usage rows never matched the documents' tokens"
    );

    // What extraction made of each type.
    assert!(
        kb.text_of(&base, &ids["report.pdf"])
            .await
            .contains("revenue of Contoso grew by 42 percent")
    );
    let memo = kb.text_of(&base, &ids["memo.docx"]).await;
    assert!(
        memo.contains("Building Seven") && memo.contains("badge & laptop"),
        "{memo}"
    );
    let page = kb.text_of(&base, &ids["page.html"]).await;
    assert!(
        page.contains("canteen serves") && !page.contains("<p>") && !page.contains("alert"),
        "{page}"
    );
    assert!(
        kb.text_of(&base, &ids["staff.csv"])
            .await
            .contains("name: Ada; role: engineer")
    );
    assert!(
        kb.text_of(&base, &ids["faq.jsonl"])
            .await
            .contains("q: What is the wifi password?")
    );

    // The same bytes again: the same document, no new chunk.
    let (status, again) = upload(
        &kb.c,
        &kb.token,
        &base,
        "copy-of-report.pdf",
        None,
        pdf,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["document"]["id"].as_str().unwrap(), ids["report.pdf"]);
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await,
        chunks
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_documents WHERE base_id = '{base}'"
        ))
        .await,
        8
    );

    // Vector search ranks the answer first, with its scores.
    let hits = kb.search(&kb.token, &base, json!({"query": "How much did Contoso's revenue increase?", "mode": "vector", "top_k": 3})).await;
    assert_eq!(files(&hits)[0], "report.pdf", "{hits}");
    let first = &hits["hits"][0];
    assert!(first["vector_score"].as_f64().unwrap() > 0.3);
    assert!(first["text_score"].is_null());
    assert_eq!(first["metadata"]["team"], "finance");
    assert_eq!(hits["hits"].as_array().unwrap().len(), 3);
    // Full text, words and Chinese.
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "Building Seven", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(files(&hits), ["memo.docx"], "{hits}");
    assert!(hits["hits"][0]["vector_score"].is_null());
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "中文全文", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(files(&hits), ["中文.txt"], "{hits}");
    // Hybrid (the default) finds by meaning and by word.
    let hits = kb
        .search(&kb.token, &base, json!({"query": "wifi password"}))
        .await;
    assert_eq!(files(&hits)[0], "faq.jsonl", "{hits}");
    assert!(
        hits["hits"][0]["vector_score"].is_number() && hits["hits"][0]["text_score"].is_number()
    );
    // A metadata filter narrows to the documents that hold it.
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "office moves", "filter": {"team": "finance"}}),
        )
        .await;
    assert!(
        !files(&hits).is_empty() && files(&hits).iter().all(|f| f == "report.pdf"),
        "{hits}"
    );
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "office", "filter": {"file_name": "memo.docx"}}),
        )
        .await;
    assert!(
        files(&hits).iter().all(|f| f == "memo.docx") && !files(&hits).is_empty(),
        "{hits}"
    );
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "office", "mode": "vector", "score_threshold": 0.99}),
        )
        .await;
    assert!(
        hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["score"].as_f64().unwrap() >= 0.99)
    );

    // Deleting a document removes its chunks and vectors from every search.
    let memo_id = ids["memo.docx"].clone();
    let (status, _) = kb
        .call(
            Method::DELETE,
            &format!("/knowledge-bases/{base}/documents/{memo_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "Building Seven", "mode": "fulltext"}),
        )
        .await;
    assert!(files(&hits).is_empty(), "{hits}");
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "office moves to Building Seven", "mode": "vector", "top_k": 10}),
        )
        .await;
    assert!(!files(&hits).iter().any(|f| f == "memo.docx"), "{hits}");
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE document_id = '{memo_id}'"
        ))
        .await,
        0
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE document_id = '{memo_id}'"
        ))
        .await,
        0
    );

    // A PDF that sniffs as one but cannot be read fails with the reason; nothing is indexed.
    let (status, broken) = kb
        .upload(
            &base,
            "broken.pdf",
            None,
            b"%PDF-1.7\n1 0 obj << /Type /Catalog".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{broken}");
    let doc = kb
        .ended(&kb.token, &base, broken["document"]["id"].as_str().unwrap())
        .await;
    assert_eq!(doc["status"], "failed");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .starts_with("extraction_failed: "),
        "{doc}"
    );
    assert_eq!(doc["chunks"], 0);

    // Rebuilding the index from the record answers the same hits.
    let before = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "volcano in Sicily", "mode": "vector", "top_k": 2}),
        )
        .await;
    let (status, rebuilt) = kb
        .call(
            Method::POST,
            &format!("/knowledge-bases/{base}/reindex"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}'"
        ))
        .await;
    assert_eq!(rebuilt["points"].as_i64().unwrap(), stored);
    let after = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "volcano in Sicily", "mode": "vector", "top_k": 2}),
        )
        .await;
    assert_eq!(files(&before), files(&after));
    assert_eq!(files(&after)[0], "notes.txt");
}

#[tokio::test]
async fn no_search_reaches_another_tenants_chunks() {
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    let (omar, omar_token) = kb.c.app.user_with_token("omar", &["developer"]).await;
    let mine = kb
        .base(
            &kb.token,
            json!({"name": "Secrets", "embedding_model": "minilm"}),
        )
        .await;
    let theirs = kb
        .base(
            &omar_token,
            json!({"name": "Secrets", "embedding_model": "minilm"}),
        )
        .await;
    let (_, a) = kb
        .upload(
            &mine,
            "a.txt",
            None,
            b"The launch code word is zebracorn.".to_vec(),
        )
        .await;
    let (_, b) = upload(
        &kb.c,
        &omar_token,
        &theirs,
        "b.txt",
        None,
        b"Omar's notes about the garden and tomatoes.".to_vec(),
        None,
    )
    .await;
    kb.ended(&kb.token, &mine, a["document"]["id"].as_str().unwrap())
        .await;
    kb.ended(&omar_token, &theirs, b["document"]["id"].as_str().unwrap())
        .await;

    // Someone else's base is not found, whatever is asked of it.
    for (method, path, body) in [
        (Method::GET, format!("/knowledge-bases/{mine}"), None),
        (
            Method::GET,
            format!("/knowledge-bases/{mine}/documents"),
            None,
        ),
        (
            Method::POST,
            format!("/knowledge-bases/{mine}/search"),
            Some(json!({"query": "launch code"})),
        ),
        (
            Method::PATCH,
            format!("/knowledge-bases/{mine}"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::DELETE, format!("/knowledge-bases/{mine}"), None),
        (
            Method::GET,
            format!(
                "/knowledge-bases/{mine}/documents/{}",
                a["document"]["id"].as_str().unwrap()
            ),
            None,
        ),
        (
            Method::POST,
            format!("/knowledge-bases/{mine}/reindex"),
            None,
        ),
    ] {
        let (status, body) = call(&kb.c, &omar_token, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(body["code"], "knowledge_base_not_found");
    }
    // A document of another base is not found through one's own base.
    let (status, _) = call(
        &kb.c,
        &omar_token,
        Method::GET,
        &format!(
            "/knowledge-bases/{theirs}/documents/{}",
            a["document"]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Omar's searches, however crafted, only ever see Omar's chunk.
    for body in [
        json!({"query": "launch code word zebracorn", "mode": "vector", "top_k": 100}),
        json!({"query": "zebracorn", "mode": "fulltext", "top_k": 100}),
        json!({"query": "zebracorn", "top_k": 100, "filter": {"owner_id": kb.user.to_string()}}),
        json!({"query": "zebracorn", "top_k": 100, "filter": {"file_name": "a.txt"}}),
    ] {
        let hits = kb.search(&omar_token, &theirs, body.clone()).await;
        assert!(files(&hits).iter().all(|f| f == "b.txt"), "{body}: {hits}");
        assert!(!hits.to_string().contains("zebracorn"), "{body}: {hits}");
    }
    let listed = kb.call(Method::GET, "/knowledge-bases", None).await.1;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_ne!(omar, kb.user);
    // An API key reaches knowledge bases with the `knowledge` scope only.
    let (_, key) =
        kb.c.app
            .create_key(&kb.token, json!({"name": "kb", "scopes": ["knowledge"]}))
            .await;
    let hits = kb
        .search(
            &key,
            &mine,
            json!({"query": "zebracorn", "mode": "fulltext"}),
        )
        .await;
    assert_eq!(files(&hits), ["a.txt"]);
    let (_, inference_only) =
        kb.c.app
            .create_key(&kb.token, json!({"name": "inf", "scopes": ["inference"]}))
            .await;
    let (status, body) = call(
        &kb.c,
        &inference_only,
        Method::GET,
        "/knowledge-bases",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn bad_bases_and_files_are_refused_with_clear_codes() {
    let app = TestApp::spawn_with(
        |s| s.sections.knowledge.max_document_bytes = 2000,
        maas_api::ExtraRoutes::default(),
    )
    .await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let provider = json!({"name": "emb", "base_url": "http://127.0.0.1:9/v1", "models": [{"model": "minilm", "upstream_model": "m"}]});
    assert_eq!(
        app.post_as(&admin, "/api/v1/providers", &provider)
            .await
            .status(),
        StatusCode::CREATED
    );
    let (_, token) = app.user_with_token("kate", &["developer"]).await;
    let post = |path: &str, body: Value| {
        let path = path.to_owned();
        let token = token.clone();
        let app = &app;
        async move {
            let r = app.post_as(&token, &path, &body).await;
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(
        "/api/v1/knowledge-bases",
        json!({"name": "x", "embedding_model": "gpt-nope"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("embedding_model_not_found")
        ),
        "{body}"
    );
    let (status, body) = post(
        "/api/v1/knowledge-bases",
        json!({"name": "", "embedding_model": "minilm", "chunking": {"strategy": "custom", "size": 10, "overlap": 9},
            "retrieval": {"mode": "magic", "top_k": 0}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["name", "chunking.size", "retrieval.mode", "retrieval.top_k"],
        "{body}"
    );
    let (status, body) = post(
        "/api/v1/knowledge-bases",
        json!({"name": "Docs", "embedding_model": "minilm", "extra": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, base) = post(
        "/api/v1/knowledge-bases",
        json!({"name": "Docs", "embedding_model": "minilm"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{base}");
    assert_eq!(
        base["chunking"],
        json!({"strategy": "auto", "size": 800, "overlap": 400, "separators": []})
    );
    assert_eq!(base["retrieval"]["mode"], "hybrid");
    let (status, body) = post(
        "/api/v1/knowledge-bases",
        json!({"name": "docs", "embedding_model": "minilm"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("knowledge_base_name_taken"))
    );
    let id = base["id"].as_str().unwrap();
    let docs_url = format!("{}/api/v1/knowledge-bases/{id}/documents", app.address);
    let send = |name: &str, mime: Option<&str>, bytes: Vec<u8>, metadata: Option<&str>| {
        let mut part = multipart::Part::bytes(bytes).file_name(name.to_owned());
        if let Some(m) = mime {
            part = part.mime_str(m).unwrap();
        }
        let mut form = multipart::Form::new().part("file", part);
        if let Some(m) = metadata {
            form = form.text("metadata", m.to_owned());
        }
        let request = app
            .client
            .post(&docs_url)
            .bearer_auth(&token)
            .multipart(form);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let png = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
    ];
    // (file name, part type, bytes, metadata, status, code)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Vec<u8>,
        Option<&'a str>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "photo.txt",
            None,
            png.clone(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "document_type_mismatch",
        ),
        (
            "report.pdf",
            None,
            b"just some text".to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "document_type_mismatch",
        ),
        (
            "notes.txt",
            Some("application/pdf"),
            b"just some text".to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "document_type_mismatch",
        ),
        (
            "word.docx",
            None,
            b"PK\x03\x04 not a docx".to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "document_type_mismatch",
        ),
        (
            "tool.exe",
            None,
            b"MZ".to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "photo.png",
            Some("image/png"),
            png,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "latin1.txt",
            None,
            vec![b'c', b'a', b'f', 0xe9],
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "document_type_mismatch",
        ),
        (
            "rows.jsonl",
            None,
            b"{\"a\":1}\n{broken\n".to_vec(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_document",
        ),
        (
            "big.txt",
            None,
            vec![b'a'; 2001],
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "ok.txt",
            None,
            b"fine".to_vec(),
            Some("[1, 2]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "ok.txt",
            None,
            b"fine".to_vec(),
            Some("{not json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (name, mime, bytes, metadata, want, code) in cases {
        let (status, body) = send(name, mime, bytes, metadata).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (want, Some(code)),
            "{name}: {body}"
        );
    }
    // Not multipart, or no `file` part.
    let r = app
        .client
        .post(&docs_url)
        .bearer_auth(&token)
        .body("hello")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .client
        .post(&docs_url)
        .bearer_auth(&token)
        .multipart(multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["field"],
        "form",
        "a part that is not expected is refused, not dropped"
    );
    let r = app
        .client
        .post(&docs_url)
        .bearer_auth(&token)
        .multipart(multipart::Form::new().text("metadata", "{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["field"],
        "file"
    );
    // Nothing refused was stored.
    assert_eq!(
        app.count("SELECT count(*) FROM knowledge_documents").await,
        0
    );
    // Bad searches name every bad field.
    let (status, body) = post(
        &format!("/api/v1/knowledge-bases/{id}/search"),
        json!({"query": " ", "mode": "x", "top_k": 101, "vector_weight": 2, "filter": {"a": [1]}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["query", "mode", "top_k", "vector_weight", "filter"],
        "{body}"
    );
    // A good upload is queued (no worker runs here).
    let (status, body) = send(
        "a/b/ok.txt",
        None,
        b"fine".to_vec(),
        Some("{\"team\":\"x\"}"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["document"]["file_name"], "ok.txt");
    assert_eq!(body["document"]["metadata"], json!({"team": "x"}));
}

/// The chunk count ingestion makes of `text` with `chunking` (no tokenizer configured).
fn expected_chunks(text: &str, chunking: &Chunking) -> i64 {
    i64::try_from(split(text, chunking, &CharEstimate).len()).unwrap()
}

#[tokio::test]
async fn a_thousand_documents_survive_a_killed_worker_exactly() {
    let Some(mut kb) = Kb::start(1).await else {
        return;
    };
    let chunking = Chunking {
        strategy: ChunkingStrategy::Custom,
        size: 50,
        overlap: 0,
        separators: Vec::new(),
    };
    let base = kb
        .base(&kb.token, json!({"name": "Many", "embedding_model": "minilm", "chunking": {"strategy": "custom", "size": 50, "overlap": 0}}))
        .await;
    let mut expected = 0;
    for i in 0..1000 {
        let text = format!(
            "Document {i} is about topic {}. It was written on day {} of the project, and it records decision number {i} with its reasons. {}",
            i % 37,
            i % 300,
            if i % 3 == 0 {
                "A longer note follows: the team reviewed the plan twice, asked for more tests and agreed to ship it after one more week of work."
            } else {
                ""
            }
        );
        expected += expected_chunks(&text, &chunking);
        let (status, body) = kb
            .upload(&base, &format!("doc-{i}.txt"), None, text.into_bytes())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let ready_sql = format!(
        "SELECT count(*) FROM knowledge_documents WHERE base_id = '{base}' AND status = 'ready'"
    );
    // Kill the worker once a part of the documents is in.
    let some = eventually(WAIT, || async {
        let n = kb.count(&ready_sql).await;
        (n >= 100).then_some(n)
    })
    .await;
    assert!(some.is_some(), "ingestion never started:\n{}", kb.c.logs());
    kill9(&mut kb.c.workers[0]);
    let at_kill = kb.count(&ready_sql).await;
    assert!(
        at_kill < 1000,
        "everything was in before the kill; nothing proven"
    );
    let worker = kb.c.spawn_worker();
    kb.c.workers.push(worker);
    let done = eventually(Duration::from_secs(150), || async {
        (kb.count(&ready_sql).await == 1000).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "not every document became ready:\n{}",
        kb.c.logs()
    );
    let chunks = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await;
    let vectors = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}'"
        ))
        .await;
    assert_eq!((chunks, vectors), (expected, expected));
    let recorded = kb.count(&format!("SELECT coalesce(sum(chunks), 0)::bigint FROM knowledge_documents WHERE base_id = '{base}'")).await;
    assert_eq!(recorded, expected);
    assert_eq!(
        kb.count("SELECT count(*) FROM knowledge_documents WHERE status = 'failed'")
            .await,
        0
    );
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "decision number 777", "mode": "fulltext", "top_k": 1}),
        )
        .await;
    assert_eq!(files(&hits), ["doc-777.txt"]);
}

#[derive(serde::Deserialize)]
struct Labelled {
    documents: Vec<LabelledDoc>,
    queries: Vec<LabelledQuery>,
}

#[derive(serde::Deserialize)]
struct LabelledDoc {
    name: String,
    text: String,
}

#[derive(serde::Deserialize)]
struct LabelledQuery {
    query: String,
    expect: String,
}

#[tokio::test]
async fn retrieval_recall_at_five_on_the_labelled_set() {
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    let set: Labelled =
        serde_json::from_str(include_str!("../data/knowledge/labelled.json")).unwrap();
    let base = kb
        .base(
            &kb.token,
            json!({"name": "Labelled", "embedding_model": "minilm"}),
        )
        .await;
    for d in &set.documents {
        let (status, body) = kb
            .upload(&base, &d.name, None, d.text.clone().into_bytes())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        kb.ended(&kb.token, &base, body["document"]["id"].as_str().unwrap())
            .await;
    }
    let mut found = BTreeMap::new();
    for mode in ["vector", "hybrid"] {
        let mut hit = 0;
        for q in &set.queries {
            let hits = kb
                .search(
                    &kb.token,
                    &base,
                    json!({"query": q.query, "mode": mode, "top_k": 5}),
                )
                .await;
            if files(&hits).contains(&q.expect) {
                hit += 1;
            }
        }
        found.insert(mode, hit);
    }
    let n = set.queries.len();
    eprintln!(
        "recall@5 on {n} labelled queries: vector {}/{n}, hybrid {}/{n}",
        found["vector"], found["hybrid"]
    );
    assert!(
        found["vector"] * 10 >= n * 9,
        "vector recall@5 below 0.9: {found:?}"
    );
    assert!(
        found["hybrid"] * 10 >= n * 9,
        "hybrid recall@5 below 0.9: {found:?}"
    );
}

#[tokio::test]
async fn a_new_embedding_model_is_filled_in_then_switched_to_at_once() {
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    // A second embedding model (the same engine under another provider and name).
    let (status, body) =
        kb.c.send(
            Method::POST,
            "/providers",
            Some(
                json!({"name": "builtin-b", "base_url": format!("{}/v1", kb._engine.base_url),
                "models": [{"model": "minilm-b", "upstream_model": EMBEDDING_MODEL}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let base = kb
        .base(
            &kb.token,
            json!({"name": "Moving", "embedding_model": "minilm"}),
        )
        .await;
    for (name, text) in [
        (
            "tides.txt",
            "Ocean tides rise and fall twice a day because of the Moon.",
        ),
        (
            "bread.txt",
            "Knead the dough, let it rise, then bake the loaf until golden.",
        ),
        (
            "chess.txt",
            "Checkmate ends a game of chess when the king cannot escape.",
        ),
    ] {
        let (_, up) = kb.upload(&base, name, None, text.as_bytes().to_vec()).await;
        kb.ended(&kb.token, &base, up["document"]["id"].as_str().unwrap())
            .await;
    }
    let chunks = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await;
    let (status, changed) = kb
        .call(
            Method::PATCH,
            &format!("/knowledge-bases/{base}"),
            Some(json!({"embedding_model": "minilm-b"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["embedding_model"], "minilm");
    assert_eq!(changed["pending_embedding_model"], "minilm-b");
    let (status, busy) = kb
        .call(
            Method::PATCH,
            &format!("/knowledge-bases/{base}"),
            Some(json!({"embedding_model": "nope"})),
        )
        .await;
    assert!(
        [StatusCode::CONFLICT, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
        "{busy}"
    );
    let switched = eventually(WAIT, || async {
        let (_, b) = kb
            .call(Method::GET, &format!("/knowledge-bases/{base}"), None)
            .await;
        (b["embedding_model"] == "minilm-b" && b["pending_embedding_model"].is_null()).then_some(b)
    })
    .await;
    assert!(
        switched.is_some(),
        "the base never switched:\n{}",
        kb.c.logs()
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}' AND generation = 2"
        ))
        .await,
        chunks
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}' AND generation <> 2"
        ))
        .await,
        0
    );
    let hits = kb
        .search(
            &kb.token,
            &base,
            json!({"query": "why does the sea go up and down", "mode": "vector", "top_k": 1}),
        )
        .await;
    assert_eq!(files(&hits), ["tides.txt"]);
    // The re-embedding was metered to the owner under the new model.
    let metered = eventually(WAIT, || async {
        let n = kb
            .count(&format!(
                "SELECT count(*) FROM usage_records WHERE model = 'minilm-b' AND user_id = '{}'",
                kb.user
            ))
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(metered.is_some(), "no usage row of the new model");
}

/// `/v1` calls with an API key.
async fn v1(
    c: &Cluster,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = c
        .client
        .request(method, format!("{}/v1{path}", c.base))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads a text file to `/v1/files`; answers its id.
async fn v1_file(c: &Cluster, key: &str, name: &str, text: &str) -> String {
    let part = multipart::Part::bytes(text.as_bytes().to_vec())
        .file_name(name.to_owned())
        .mime_str("text/plain")
        .unwrap();
    let form = multipart::Form::new()
        .text("purpose", "assistants")
        .part("file", part);
    let response = c
        .client
        .post(format!("{}/v1/files", c.base))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn openai_sdk_drives_files_and_vector_stores() {
    let Ok(python) = std::env::var("MAAS_OPENAI_PYTHON") else {
        eprintln!("MAAS_OPENAI_PYTHON is not set: skipping the OpenAI SDK check (CI sets it)");
        return;
    };
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    let (_, key) =
        kb.c.app
            .create_key(
                &kb.token,
                json!({"name": "sdk", "scopes": ["inference", "knowledge"]}),
            )
            .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_vector_stores.py");
    let base = kb.c.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("MAAS_BASE_URL", base)
            .env("MAAS_API_KEY", key)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\n{}",
        kb.c.logs()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // The script deleted its store and one file: three files stay, nothing of the store does.
    let user = kb.user;
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_files WHERE owner_id = '{user}'"
        ))
        .await,
        3
    );
    for table in [
        "knowledge_documents",
        "knowledge_chunks",
        "knowledge_vectors",
    ] {
        assert_eq!(
            kb.count(&format!(
                "SELECT count(*) FROM {table} WHERE owner_id = '{user}'"
            ))
            .await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn vector_store_batches_cancel_expire_and_stay_private() {
    // No worker at first: the batch's documents wait in the queue.
    let Some(mut kb) = Kb::start(0).await else {
        return;
    };
    let c = &kb.c;
    let (_, key) = c
        .app
        .create_key(
            &kb.token,
            json!({"name": "kate", "scopes": ["inference", "knowledge"]}),
        )
        .await;
    let (_, mallory) = c.app.user_with_token("mallory", &["developer"]).await;
    let (_, other) = c
        .app
        .create_key(
            &mallory,
            json!({"name": "mallory", "scopes": ["inference", "knowledge"]}),
        )
        .await;

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            v1_file(
                c,
                &key,
                &format!("n{i}.txt"),
                &format!("Note {i} about the harbour tide."),
            )
            .await,
        );
    }
    let (status, store) = v1(
        c,
        &key,
        Method::POST,
        "/vector_stores",
        Some(json!({"name": "notes"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{store}");
    let vs = store["id"].as_str().unwrap().to_owned();
    let (status, batch) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}/file_batches"),
        Some(json!({"file_ids": ids, "attributes": {"kind_of": "note"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["status"], "in_progress");
    assert_eq!(
        batch["file_counts"],
        json!({"in_progress": 3, "completed": 0, "failed": 0, "cancelled": 0, "total": 3})
    );
    let bid = batch["id"].as_str().unwrap().to_owned();

    // Someone else sees none of it, and cannot reach it through a crafted request.
    let (status, body) = v1(
        c,
        &other,
        Method::GET,
        &format!("/vector_stores/{vs}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("vector_store_not_found"))
    );
    let (status, body) = v1(c, &other, Method::GET, &format!("/files/{}", ids[0]), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("file_not_found"))
    );
    let (_, theirs) = v1(
        c,
        &other,
        Method::POST,
        "/vector_stores",
        Some(json!({"name": "mine"})),
    )
    .await;
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    let (status, body) = v1(
        c,
        &other,
        Method::POST,
        &format!("/vector_stores/{theirs}/files"),
        Some(json!({"file_id": ids[0]})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("file_not_found"))
    );
    for path in [
        format!("/vector_stores/{vs}/file_batches/{bid}"),
        format!("/vector_stores/{vs}/files"),
        format!("/vector_stores/{vs}/files/{}", ids[0]),
    ] {
        let (status, _) = v1(c, &other, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, listed) = v1(c, &other, Method::GET, "/files", None).await;
    assert_eq!(listed["data"], json!([]));
    let (_, stores) = v1(c, &other, Method::GET, "/vector_stores", None).await;
    assert_eq!(stores["data"].as_array().unwrap().len(), 1);
    assert_eq!(stores["data"][0]["id"], theirs.as_str());

    // Cancelled before any worker ran: every file cancelled, nothing ingested.
    let (status, cancelled) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}/file_batches/{bid}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["file_counts"]["cancelled"], 3);
    let (_, listed) = v1(
        c,
        &key,
        Method::GET,
        &format!("/vector_stores/{vs}/file_batches/{bid}/files?filter=cancelled"),
        None,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed["data"][0]["attributes"], json!({"kind_of": "note"}));

    // A worker comes: it skips the cancelled documents and ingests a file attached later.
    let worker = kb.c.spawn_worker();
    kb.c.workers.push(worker);
    let c = &kb.c;
    let late = v1_file(c, &key, "late.txt", "A late note about the lighthouse.").await;
    let (status, attached) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}/files"),
        Some(json!({"file_id": late})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{attached}");
    let path = format!("/vector_stores/{vs}/files/{late}");
    eventually(WAIT, || async {
        let (_, f) = v1(c, &key, Method::GET, &path, None).await;
        (f["status"] == "completed").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the late file never completed:\n{}", c.logs()));
    let (_, store) = v1(c, &key, Method::GET, &format!("/vector_stores/{vs}"), None).await;
    assert_eq!(
        store["file_counts"],
        json!({"in_progress": 0, "completed": 1, "failed": 0, "cancelled": 3, "total": 4})
    );
    assert_eq!(store["status"], "completed");
    let user = kb.user;
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
             WHERE d.owner_id = '{user}' AND d.status = 'cancelled'"
        ))
        .await,
        0,
        "a cancelled document is never chunked"
    );
    let (status, hits) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}/search"),
        Some(json!({"query": "harbour tide note"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{hits}");
    let found: Vec<&str> = hits["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["file_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        vec![late.as_str()],
        "only the ingested file is found"
    );
    // Another tenant's search never reaches this store's chunks, whatever its filter says.
    let (status, hits) = v1(
        c,
        &other,
        Method::POST,
        &format!("/vector_stores/{theirs}/search"),
        Some(
            json!({"query": "lighthouse", "filters": {"type": "or", "filters": [
            {"type": "eq", "key": "file_name", "value": "late.txt"},
            {"type": "ne", "key": "file_name", "value": "x"}]}}),
        ),
    )
    .await;
    assert_eq!((status, hits["data"].clone()), (StatusCode::OK, json!([])));

    // An expired store answers its state and refuses work until it is changed.
    let (status, _) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}"),
        Some(json!({"expires_after": {"anchor": "last_active_at", "days": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    {
        use sea_orm::ConnectionTrait as _;
        let sql = format!(
            "UPDATE knowledge_store_settings SET last_active_at = now() - interval '2 days' WHERE base_id = '{}'",
            vs.trim_start_matches("vs_").parse::<Uuid>().unwrap()
        );
        kb.c.app.db().await.execute_unprepared(&sql).await.unwrap();
    }
    let (_, store) = v1(c, &key, Method::GET, &format!("/vector_stores/{vs}"), None).await;
    assert_eq!(store["status"], "expired");
    let (status, body) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}/search"),
        Some(json!({"query": "lighthouse"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("vector_store_expired"))
    );
    let (status, store) = v1(
        c,
        &key,
        Method::POST,
        &format!("/vector_stores/{vs}"),
        Some(json!({"expires_after": null})),
    )
    .await;
    assert_eq!(
        (status, store["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
}

#[tokio::test]
async fn a_model_change_whose_jobs_died_with_their_worker_is_swept_up_and_finished() {
    let Some(mut kb) = Kb::start(1).await else {
        return;
    };
    let (status, body) =
        kb.c.send(
            Method::POST,
            "/providers",
            Some(
                json!({"name": "builtin-b", "base_url": format!("{}/v1", kb._engine.base_url),
                "models": [{"model": "minilm-b", "upstream_model": EMBEDDING_MODEL}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let base = kb
        .base(
            &kb.token,
            json!({"name": "Orphans", "embedding_model": "minilm"}),
        )
        .await;
    for i in 0..4 {
        let text = format!("Document {i} tells about lighthouse number {i} on the coast.");
        let (_, up) = kb
            .upload(&base, &format!("d{i}.txt"), None, text.into_bytes())
            .await;
        kb.ended(&kb.token, &base, up["document"]["id"].as_str().unwrap())
            .await;
    }
    let chunks = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_chunks WHERE base_id = '{base}'"
        ))
        .await;
    // The only worker dies; the model change's jobs are lost with it (its queue is emptied).
    for w in &mut kb.c.workers {
        kill9(w);
    }
    let (status, changed) = kb
        .call(
            Method::PATCH,
            &format!("/knowledge-bases/{base}"),
            Some(json!({"embedding_model": "minilm-b"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    {
        let client = redis::Client::open(maas_tests::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let pattern = format!("{}*", kb.c.app.keyspace.prefix());
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        let lost: Vec<&String> = keys
            .iter()
            .filter(|k| k.contains("knowledge.ingest") && !k.contains("sweep"))
            .collect();
        assert!(!lost.is_empty(), "no ingestion queue key among {keys:?}");
        for key in lost {
            let _: () = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    // A new worker has no job to run: only the sweep can find the documents left behind.
    let worker = kb.c.spawn_worker();
    kb.c.workers.push(worker);
    let switched = eventually(WAIT, || async {
        let (_, b) = kb
            .call(Method::GET, &format!("/knowledge-bases/{base}"), None)
            .await;
        (b["embedding_model"] == "minilm-b" && b["pending_embedding_model"].is_null()).then_some(b)
    })
    .await;
    assert!(
        switched.is_some(),
        "the base never switched:\n{}",
        kb.c.logs()
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}' AND generation = 2"
        ))
        .await,
        chunks,
        "every chunk embedded once under the new model"
    );
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{base}' AND generation <> 2"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn the_cli_creates_fills_searches_and_reindexes_a_base() {
    let Some(kb) = Kb::start(1).await else {
        return;
    };
    let c = &kb.c;
    let run = |args: &[&str]| {
        let out = maas_tests::platform_command("maas", &c.app.db.url, c.app.keyspace.prefix())
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "kb",
        "create",
        "Manuals",
        "--owner",
        "kate",
        "--model",
        "minilm",
        "--chunking",
        "custom",
        "--chunk-size",
        "60",
        "--chunk-overlap",
        "10",
    ]);
    assert!(ok, "{err}");
    let id = out
        .trim()
        .rsplit('(')
        .next()
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_owned();
    assert!(out.starts_with("created knowledge base `Manuals`"), "{out}");
    let (ok, _, err) = run(&[
        "kb", "create", "Manuals", "--owner", "kate", "--model", "minilm",
    ]);
    assert!(
        !ok && err.contains("knowledge base of that name exists"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "kb", "create", "Other", "--owner", "kate", "--model", "nope",
    ]);
    assert!(!ok && err.contains("nope"), "{err}");

    let dir = tempfile_dir();
    let files = [
        (
            "boiler.txt",
            "Bleed the radiator valve when the boiler pressure drops below one bar.",
        ),
        (
            "garden.md",
            "# Garden\n\nPrune the roses in late winter, before new growth starts.",
        ),
    ];
    let mut paths = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path.display().to_string());
    }
    let mut args = vec!["kb", "upload", id.as_str()];
    args.extend(paths.iter().map(String::as_str));
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.contains("queued")), "{out}");
    let (ok, again, _) = run(&args);
    assert!(
        ok && again.lines().all(|l| l.ends_with("(already there)")),
        "{again}"
    );
    for line in out.lines() {
        let doc = line.split_whitespace().next().unwrap();
        kb.ended(&kb.token, &id, doc).await;
    }

    let (ok, list, err) = run(&["kb", "list", "--owner", "kate"]);
    assert!(ok, "{err}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("Manuals") && l.contains("minilm")),
        "{list}"
    );
    let (ok, hits, err) = run(&[
        "kb",
        "search",
        &id,
        "the heating pressure is low",
        "--mode",
        "vector",
        "--top-k",
        "1",
    ]);
    assert!(ok, "{err}");
    assert_eq!(hits.lines().count(), 1, "{hits}");
    assert!(hits.contains("boiler.txt#0"), "{hits}");
    let chunks = kb
        .count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE base_id = '{id}'"
        ))
        .await;
    let (ok, out, err) = run(&["kb", "reindex", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("reindexed {id}: {chunks} points"));
    let (ok, _, err) = run(&["kb", "search", &Uuid::now_v7().to_string(), "x"]);
    assert!(!ok && err.contains("knowledge base not found"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("maas-kb-cli-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_rate_limited_owner_s_document_waits_for_its_window_and_is_ingested_exactly() {
    // Two requests a minute for every user, one chunk per embedding call: a document of three
    // chunks or more needs a second window.
    let Some(kb) = Kb::start_with(
        &[
            ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_MINUTE", "2"),
            ("MAAS__KNOWLEDGE__EMBED_BATCH", "1"),
        ],
        1,
    )
    .await
    else {
        return;
    };
    let base = kb
        .base(
            &kb.token,
            json!({"name": "Slow", "embedding_model": "minilm",
                "chunking": {"strategy": "custom", "size": 50, "overlap": 0}}),
        )
        .await;
    let text: String = (0..4)
        .map(|i| format!("Paragraph {i} is about harbour number {i}: its cranes, its ships, its tides, and the people who work there at night under the lamps.\n\n"))
        .collect();
    let (status, up) = kb.upload(&base, "slow.txt", None, text.into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    let doc = up["document"]["id"].as_str().unwrap().to_owned();
    let path = format!("/knowledge-bases/{base}/documents/{doc}");
    let ended = eventually(Duration::from_secs(200), || async {
        let (_, d) = kb.call(Method::GET, &path, None).await;
        matches!(d["status"].as_str(), Some("ready" | "failed")).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("the document never ended:\n{}", kb.c.logs()));
    assert_eq!(ended["status"], "ready", "{ended}");
    let chunks = ended["chunks"].as_i64().unwrap();
    assert!(chunks >= 3, "{ended}");
    assert_eq!(
        kb.count(&format!(
            "SELECT count(*) FROM knowledge_vectors WHERE document_id = '{doc}'"
        ))
        .await,
        chunks,
        "every chunk embedded once"
    );
    // One metered call per chunk: the refused calls cost nothing, no batch is embedded twice.
    let sql = format!(
        "SELECT count(*) FROM usage_records WHERE user_id = '{}' AND model = 'minilm' AND status = 200",
        kb.user
    );
    let metered = eventually(WAIT, || async {
        let n = kb.count(&sql).await;
        (n >= chunks).then_some(n)
    })
    .await;
    assert_eq!(metered, Some(chunks), "metered embedding calls");
    let all = format!(
        "SELECT count(*) FROM usage_records WHERE user_id = '{}'",
        kb.user
    );
    assert_eq!(kb.count(&all).await, chunks, "no other usage row");
    assert!(
        kb.c.logs().contains("document ingestion waits"),
        "the worker never waited for the owner's rate limit"
    );
}
