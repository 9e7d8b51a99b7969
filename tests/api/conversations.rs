//! Conversations: ownership, context on chat calls, exports (JSON, CSV, 100k rows in bounded
//! memory, formula-safe), and the worker's expiry job.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use maas_tests::{TestApp, platform_command};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

async fn create(app: &TestApp, token: &str, title: &str) -> String {
    let resp = app
        .request(Method::POST, "/api/v1/conversations")
        .bearer_auth(token)
        .json(&json!({"title": title}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn conversations_belong_to_their_owner() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.user_with_token("alice", &["user"]).await;
    let (_, bob) = app.user_with_token("bob", &["user"]).await;
    let id = create(&app, &alice, "Trip planning").await;
    let add = app
        .request(
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
        )
        .bearer_auth(&alice)
        .json(&json!({"role": "user", "content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), StatusCode::CREATED);

    let list: Value = app
        .get_as(&alice, "/api/v1/conversations")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["title"], "Trip planning");
    let messages: Value = app
        .get_as(&alice, &format!("/api/v1/conversations/{id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(messages["data"].as_array().unwrap().len(), 1, "{messages}");
    assert_eq!(messages["data"][0]["content"], "hello");

    for path in [
        format!("/api/v1/conversations/{id}"),
        format!("/api/v1/conversations/{id}/messages"),
        format!("/api/v1/conversations/{id}/export"),
    ] {
        let resp = app.get_as(&bob, &path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "conversation_not_found");
    }
    let theirs: Value = app
        .get_as(&bob, "/api/v1/conversations")
        .await
        .json()
        .await
        .unwrap();
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let export: Value = app
        .get_as(&bob, "/api/v1/conversations/export")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(export, json!([]));
    let delete = app
        .request(Method::DELETE, &format!("/api/v1/conversations/{id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NOT_FOUND);
    let body: Value = delete.json().await.unwrap();
    assert_eq!(body["code"], "conversation_not_found");

    let rename = app
        .request(Method::PATCH, &format!("/api/v1/conversations/{id}"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rename.json::<Value>().await.unwrap()["title"], "Renamed");
    let bad = app
        .request(
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
        )
        .bearer_auth(&alice)
        .json(&json!({"role": "wizard", "content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["field"], "role", "{body}");
    let delete = app
        .request(Method::DELETE, &format!("/api/v1/conversations/{id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let gone = app
        .get_as(&alice, &format!("/api/v1/conversations/{id}"))
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn chat_calls_with_a_conversation_get_its_history_and_extend_it() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("carl", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let provider =
        json!({"name": "fake", "base_url": upstream.base_url, "models": [{"model": "tiny"}]});
    app.request(Method::POST, "/api/v1/providers")
        .bearer_auth(&admin)
        .json(&provider)
        .send()
        .await
        .unwrap();
    let id = create(&app, &token, "chat").await;
    let call = |body: Value| {
        app.request(Method::POST, "/v1/chat/completions")
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let first = call(json!({"model": "tiny", "conversation_id": id, "messages": [{"role": "user", "content": "first question"}]})).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let stored = maas_tests::eventually(Duration::from_secs(3), || async {
        let m: Value = app
            .get_as(&token, &format!("/api/v1/conversations/{id}/messages"))
            .await
            .json()
            .await
            .unwrap();
        (m["data"].as_array().unwrap().len() == 2).then_some(m)
    })
    .await
    .expect("exchange stored");
    assert_eq!(stored["data"][0]["content"], "first question");
    assert_eq!(
        (
            stored["data"][1]["role"].as_str(),
            stored["data"][1]["content"].as_str()
        ),
        (Some("assistant"), Some("hello there"))
    );

    let second = call(json!({"model": "tiny", "conversation_id": id, "stream": true, "messages": [{"role": "user", "content": "second"}]})).await.unwrap();
    let mut body = second.bytes_stream();
    while body.next().await.is_some() {}
    let sent = upstream.seen.bodies.lock().unwrap()[1].clone();
    assert!(
        sent.get("conversation_id").is_none(),
        "our parameter never goes upstream"
    );
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["first question", "hello there", "second"]);
    let all = maas_tests::eventually(Duration::from_secs(3), || async {
        let m: Value = app
            .get_as(&token, &format!("/api/v1/conversations/{id}/messages"))
            .await
            .json()
            .await
            .unwrap();
        (m["data"].as_array().unwrap().len() == 4).then_some(m)
    })
    .await
    .expect("streamed exchange stored");
    assert_eq!(all["data"][3]["content"], "tok0 tok1 tok2 ");

    let (_, other) = app.user_with_token("mallory", &["developer"]).await;
    let (_, other_key) = app.create_key(&other, json!({"name": "m"})).await;
    let hijack = app.request(Method::POST, "/v1/chat/completions").bearer_auth(&other_key)
        .json(&json!({"model": "tiny", "conversation_id": id, "messages": [{"role": "user", "content": "x"}]})).send().await.unwrap();
    assert_eq!(hijack.status(), StatusCode::NOT_FOUND);
    let body: Value = hijack.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conversation_not_found", "{body}");
    assert_eq!(
        upstream
            .seen
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "refused before any upstream call"
    );
}

async fn seed_messages(
    app: &TestApp,
    user: uuid::Uuid,
    conversation: &str,
    n: u32,
    content: &str,
    day: &str,
) {
    let db = app.db().await;
    db.execute_unprepared(&format!(
        "INSERT INTO conversation_messages (id, conversation_id, user_id, role, content, created_at) \
         SELECT gen_random_uuid(), '{conversation}', '{user}', 'user', '{content}', TIMESTAMPTZ '{day}' + (g || ' milliseconds')::interval \
         FROM generate_series(1, {n}) g"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn exports_filter_by_date_and_defuse_formulas() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user_with_token("erin", &["user"]).await;
    let id = create(&app, &token, "=cmd|' /C calc'!A0").await;
    seed_messages(
        &app,
        user,
        &id,
        3,
        "=HYPERLINK(\"http://evil\")",
        "2026-01-10T00:00:00Z",
    )
    .await;
    seed_messages(
        &app,
        user,
        &id,
        2,
        "plain, with \"quotes\"",
        "2026-02-10T00:00:00Z",
    )
    .await;

    let json_export: Value = app
        .get_as(
            &token,
            "/api/v1/conversations/export?from=2026-02-01T00:00:00Z",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json_export.as_array().unwrap().len(), 2);
    assert_eq!(json_export[0]["content"], "plain, with \"quotes\"");
    assert_eq!(json_export[1]["content"], "plain, with \"quotes\"");

    let resp = app
        .get_as(
            &token,
            &format!("/api/v1/conversations/{id}/export?format=csv&to=2026-02-01T00:00:00Z"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header + 3 rows: {csv}");
    assert_eq!(
        lines[0],
        "conversation_id,conversation_title,message_id,role,content,created_at"
    );
    assert!(lines[1].contains(",'=cmd|' /C calc'!A0,"), "{}", lines[1]);
    assert!(
        lines[1].contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "{}",
        lines[1]
    );
    assert!(!csv.contains(",=H"), "no cell starts with a formula");

    let bad = app
        .get_as(&token, "/api/v1/conversations/export?format=xml")
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["field"], "format", "{body}");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn exporting_100k_messages_streams_in_bounded_memory() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user_with_token("bulk", &["user"]).await;
    let id = create(&app, &token, "bulk").await;
    let content = "x".repeat(500);
    seed_messages(&app, user, &id, 100_000, &content, "2026-03-01T00:00:00Z").await;

    let before = rss_kib();
    let resp = app
        .get_as(&token, "/api/v1/conversations/export?format=csv")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let (mut bytes, mut newlines, mut peak) = (0usize, 0usize, before);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        peak = peak.max(rss_kib());
    }
    assert_eq!(newlines, 100_001, "header + every row");
    assert!(bytes > 50_000_000, "{bytes}");
    // The ~55 MB export passes through the server (in this process) without being held.
    assert!(
        peak - before < 40 * 1024,
        "RSS grew by {} KiB",
        peak - before
    );
}

#[tokio::test]
async fn the_worker_expires_idle_conversations() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_with_token("ivy", &["user"]).await;
    let old = create(&app, &token, "old").await;
    let fresh = create(&app, &token, "fresh").await;
    let db = app.db().await;
    db.execute_unprepared(&format!(
        "UPDATE conversations SET last_activity_at = now() - interval '25 hours' WHERE id = '{old}'"
    ))
    .await
    .unwrap();

    let mut worker = platform_command("maas-worker", &app.db.url, app.keyspace.prefix())
        .env("MAAS__CONVERSATIONS__EXPIRY_SCHEDULE", "* * * * * *")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let gone = maas_tests::eventually(Duration::from_secs(15), || async {
        (app.get_as(&token, &format!("/api/v1/conversations/{old}"))
            .await
            .status()
            == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(gone.is_some(), "idle conversation not expired");
    assert_eq!(
        app.get_as(&token, &format!("/api/v1/conversations/{fresh}"))
            .await
            .status(),
        StatusCode::OK
    );
}
