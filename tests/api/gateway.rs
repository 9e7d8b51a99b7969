//! The OpenAI-compatible gateway against a fake upstream: passthrough, streaming, exact
//! settling at every failure point, retries before the first byte, cancellation, refusals in
//! OpenAI's shape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt as _;
use maas_tests::TestApp;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

struct Setup {
    app: TestApp,
    admin: String,
    user_id: uuid::Uuid,
    key: String,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut maas_tests::Settings)) -> Setup {
    let app = TestApp::spawn_with(tweak, maas_api::ExtraRoutes::default()).await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (user_id, token) = app.user_with_token("dana", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    Setup {
        app,
        admin,
        user_id,
        key,
    }
}

async fn register(s: &Setup, name: &str, upstream: &FakeUpstream, model: &str) -> Value {
    let body = json!({"name": name, "base_url": upstream.base_url, "api_key": format!("upstream-secret-{name}"),
        "models": [{"model": model, "upstream_model": format!("{model}-upstream")}]});
    let resp = s
        .app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

async fn chat(s: &Setup, body: Value) -> reqwest::Response {
    s.app
        .request(Method::POST, "/v1/chat/completions")
        .bearer_auth(&s.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn set_quota(s: &Setup, policy: Value) {
    let resp = s
        .app
        .request(Method::PUT, &format!("/api/v1/users/{}/quota", s.user_id))
        .bearer_auth(&s.admin)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The gateway admits with the key's principal: wait until it carries the new policy.
    s.app.wait_for_user_policy(&s.key, &policy).await;
}

async fn tokens_used(s: &Setup) -> u64 {
    let body: Value = s
        .app
        .get_as(&s.key, "/api/v1/me/quota")
        .await
        .json()
        .await
        .unwrap();
    body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "user.tokens_per_month_quota")
        .map_or(0, |l| l["used"].as_u64().unwrap())
}

/// Settling runs after the answer went out: wait for it.
async fn tokens_settle_to(s: &Setup, expected: u64) {
    let settled = maas_tests::eventually(Duration::from_secs(2), || async {
        (tokens_used(s).await == expected).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "tokens used: {} != {expected}",
        tokens_used(s).await
    );
}

/// The usage records once `expect` of them are written; exactly `expect`, no more.
async fn usage_rows(s: &Setup, expect: usize) -> Vec<(i64, i64, bool, i32, bool)> {
    let db = s.app.db().await;
    let rows = maas_tests::eventually(Duration::from_secs(3), || async {
        let rows = db
            .query_all(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT prompt_tokens, completion_tokens, estimated, status, stream FROM usage_records ORDER BY at, id",
            ))
            .await
            .unwrap();
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get::<i64>("", "prompt_tokens").unwrap(),
                    r.try_get::<i64>("", "completion_tokens").unwrap(),
                    r.try_get::<bool>("", "estimated").unwrap(),
                    r.try_get::<i32>("", "status").unwrap(),
                    r.try_get::<bool>("", "stream").unwrap(),
                )
            })
            .collect();
        (rows.len() >= expect).then_some(rows)
    })
    .await
    .unwrap_or_else(|| panic!("{expect} usage rows not written"));
    assert_eq!(rows.len(), expect, "one usage record per call: {rows:?}");
    rows
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Say hello"}])
}

#[tokio::test]
async fn providers_are_admin_only_and_their_keys_are_sealed() {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let provider = register(&s, "fake", &upstream, "tiny").await;
    assert_eq!(provider["has_api_key"], true);
    assert!(!provider.to_string().contains("upstream-secret"));
    let list: Value = s
        .app
        .get_as(&s.admin, "/api/v1/providers")
        .await
        .json()
        .await
        .unwrap();
    assert!(!list.to_string().contains("upstream-secret"));
    let db = s.app.db().await;
    let row = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT encode(api_key_sealed, 'escape') AS k FROM providers",
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: String = row.try_get("", "k").unwrap();
    assert!(!stored.contains("upstream-secret"), "stored in clear");

    let forbidden = s.app.request(Method::POST, "/api/v1/providers").bearer_auth(&s.key)
        .json(&json!({"name": "evil", "base_url": "http://127.0.0.1:1/v1", "models": [{"model": "tiny"}]})).send().await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let body: Value = forbidden.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    let dup = s
        .app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&s.admin)
        .json(&json!({"name": "fake", "base_url": upstream.base_url, "models": [{"model": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let body: Value = dup.json().await.unwrap();
    assert_eq!(body["code"], "provider_name_taken", "{body}");
    let bad = s
        .app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&s.admin)
        .json(&json!({"name": "bad one", "base_url": "ftp://x", "models": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["base_url", "models", "name"], "{body}");
}

#[tokio::test]
async fn models_lists_what_the_key_may_use() {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "a", &upstream, "alpha").await;
    register(&s, "b", &upstream, "beta").await;
    let list: Value = s
        .app
        .get_as(&s.key, "/v1/models")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(list["object"], "list");

    let (_, token) = s.app.user_with_token("restricted", &["developer"]).await;
    let (_, narrow) = s
        .app
        .create_key(&token, json!({"name": "n", "allowed_models": ["beta"]}))
        .await;
    let list: Value = s
        .app
        .get_as(&narrow, "/v1/models")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["beta"]);
    let refused = s
        .app
        .request(Method::POST, "/v1/chat/completions")
        .bearer_auth(&narrow)
        .json(&json!({"model": "alpha", "messages": messages()}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn non_streamed_chat_passes_through_and_settles_the_reported_usage() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    let resp = chat(&s, json!({"model": "tiny", "messages": messages(), "temperature": 0.2, "max_tokens": 50, "seed": 3})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The tightest rule is the default 50 requests an hour (the 100000 tokens are far off).
    assert_eq!(resp.headers()["x-ratelimit-limit"], "50");
    assert_eq!(
        resp.headers()["x-ratelimit-policy"],
        "user.requests_per_hour"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello there");
    assert_eq!(body["usage"]["total_tokens"], 10);
    // Upstream got its own model name, every parameter, and its key (opened from storage).
    let sent = upstream.seen.bodies.lock().unwrap()[0].clone();
    assert_eq!(sent["model"], "tiny-upstream");
    assert_eq!(
        (sent["temperature"].as_f64(), sent["seed"].as_u64()),
        (Some(0.2), Some(3))
    );
    assert_eq!(
        upstream.seen.auth.lock().unwrap()[0].as_deref(),
        Some("Bearer upstream-secret-fake")
    );
    // Settled to exactly the reported 7 + 3 tokens, not the reservation estimate.
    tokens_settle_to(&s, 10).await;
    assert_eq!(usage_rows(&s, 1).await, vec![(7, 3, false, 200, false)]);
}

async fn read_stream(resp: reqwest::Response) -> String {
    let mut body = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    body
}

#[tokio::test]
async fn streams_pass_through_and_the_usage_chunk_is_stripped_unless_asked_for() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 5,
        ..Behaviour::default()
    });
    register(&s, "fake", &upstream, "tiny").await;

    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = read_stream(resp).await;
    assert_eq!(text.matches("\"content\":\"tok").count(), 5);
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(
        !text.contains("\"usage\""),
        "the client did not ask for usage: {text}"
    );
    let sent = upstream.seen.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway always asks upstream for usage"
    );

    let resp = chat(&s, json!({"model": "tiny", "messages": messages(), "stream": true, "stream_options": {"include_usage": true}})).await;
    let text = read_stream(resp).await;
    assert!(text.contains("\"usage\""), "asked for usage: {text}");

    // Both settled exactly: 2 x (7 + 5).
    let used = maas_tests::eventually(Duration::from_secs(2), || async {
        let u = tokens_used(&s).await;
        (u == 24).then_some(u)
    })
    .await;
    assert_eq!(used, Some(24));
    assert_eq!(
        usage_rows(&s, 2).await,
        vec![(7, 5, false, 200, true), (7, 5, false, 200, true)]
    );
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_error_event_and_is_settled_by_estimate() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 5,
        break_after: Some(2),
        ..Behaviour::default()
    });
    register(&s, "fake", &upstream, "tiny").await;
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "stream": true, "max_tokens": 1000}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = read_stream(resp).await;
    assert_eq!(
        text.matches("\"content\":\"tok").count(),
        2,
        "no text repeated or invented: {text}"
    );
    assert!(text.contains("\"code\":\"upstream_unavailable\""), "{text}");
    assert!(!text.contains("[DONE]"));
    let rows = usage_rows(&s, 1).await;
    let (prompt, completion, estimated, status, stream) = rows[0];
    assert_eq!((estimated, status, stream), (true, 502, true), "{rows:?}");
    // Settled by estimate (prompt estimate + the text that went out), far below the reservation.
    let expected = u64::try_from(prompt + completion).unwrap();
    tokens_settle_to(&s, expected).await;
    assert!(expected < 100, "{expected}");
}

#[tokio::test]
async fn a_failing_upstream_is_retried_on_another_before_the_first_byte() {
    let s = setup().await;
    let broken = FakeUpstream::spawn(Behaviour {
        fail_first: 100,
        fail_status: 503,
        ..Behaviour::default()
    });
    let healthy = FakeUpstream::spawn(Behaviour::default());
    register(&s, "broken", &broken, "tiny").await;
    register(&s, "healthy", &healthy, "tiny").await;
    for _ in 0..10 {
        let resp = chat(&s, json!({"model": "tiny", "messages": messages()})).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(healthy.seen.requests.load(Ordering::SeqCst), 10);
    // Tried until it failed three times in a row, then ejected (passive health).
    assert_eq!(broken.seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_upstream_with_fewest_outstanding_requests_is_chosen() {
    let s = setup().await;
    let slow = Behaviour {
        chunks: 20,
        chunk_delay: Duration::from_millis(50),
        ..Behaviour::default()
    };
    let a = FakeUpstream::spawn(slow.clone());
    let b = FakeUpstream::spawn(slow);
    register(&s, "a", &a, "tiny").await;
    register(&s, "b", &b, "tiny").await;
    let streaming = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "stream": true}),
    )
    .await;
    let mut stream = streaming.bytes_stream();
    stream.next().await.unwrap().unwrap();
    // One upstream is busy with the stream: the next calls go to the other one.
    for _ in 0..3 {
        assert_eq!(
            chat(&s, json!({"model": "tiny", "messages": messages()}))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let counts = (
        a.seen.requests.load(Ordering::SeqCst),
        b.seen.requests.load(Ordering::SeqCst),
    );
    assert!(counts == (1, 3) || counts == (3, 1), "{counts:?}");
    drop(stream);
}

#[tokio::test]
async fn when_every_upstream_is_down_the_call_is_refused_and_nothing_is_charged() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let body =
        json!({"name": "gone", "base_url": "http://127.0.0.1:1/v1", "models": [{"model": "tiny"}]});
    let created = s
        .app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let resp = chat(&s, json!({"model": "tiny", "messages": messages()})).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(tokens_used(&s).await, 0, "the reservation was released");
}

#[tokio::test]
async fn quota_and_input_refusals_use_openais_error_shape() {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    set_quota(&s, json!({"tokens_per_month_quota": 100})).await;
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "max_tokens": 500}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "100");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "100");
    assert_eq!(
        resp.headers()["x-ratelimit-policy"],
        "user.tokens_per_month_quota"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["type"].as_str(),
            body["error"]["code"].as_str()
        ),
        (Some("insufficient_quota"), Some("quota_exceeded"))
    );
    assert_eq!(
        upstream.seen.requests.load(Ordering::SeqCst),
        0,
        "refused before any upstream call"
    );

    let resp = chat(&s, json!({"model": "tiny"})).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["param"], "messages");
    let resp = chat(&s, json!({"model": "nope", "messages": messages()})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let anonymous = s
        .app
        .request(Method::POST, "/v1/chat/completions")
        .json(&json!({"model": "tiny", "messages": messages()}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call_within_a_second() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 50,
        chunk_delay: Duration::from_millis(100),
        ..Behaviour::default()
    });
    register(&s, "slow", &upstream, "tiny").await;
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "stream": true}),
    )
    .await;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("tok0"));
    drop(stream);
    let gone_at = std::time::Instant::now();
    let cancelled = maas_tests::eventually(Duration::from_secs(1), || async {
        upstream.seen.cancelled.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert!(
        cancelled.is_some(),
        "upstream still streaming {:?} after the client left",
        gone_at.elapsed()
    );
    let rows = usage_rows(&s, 1).await;
    assert_eq!(rows[0].3, 499, "recorded as client closed");
    assert!(rows[0].2, "settled by estimate");
    assert!(rows[0].4, "a stream");
}

#[tokio::test]
async fn embeddings_are_proxied_and_metered() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "embed").await;
    let resp = s
        .app
        .request(Method::POST, "/v1/embeddings")
        .bearer_auth(&s.key)
        .json(&json!({"model": "embed", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 3);
    tokens_settle_to(&s, 4).await;
}

#[tokio::test]
async fn usage_reports_are_per_tenant_and_admins_see_everyone() {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    register(&s, "other", &upstream, "small").await;
    let (_, eve_token) = s.app.user_with_token("eve", &["developer"]).await;
    let (_, eve_key) = s.app.create_key(&eve_token, json!({"name": "e"})).await;
    for model in ["tiny", "small"] {
        assert_eq!(
            chat(&s, json!({"model": model, "messages": messages()}))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let eve_call = s
        .app
        .request(Method::POST, "/v1/chat/completions")
        .bearer_auth(&eve_key)
        .json(&json!({"model": "tiny", "messages": messages()}))
        .send()
        .await
        .unwrap();
    assert_eq!(eve_call.status(), StatusCode::OK);
    usage_rows(&s, 3).await;

    let mine: Value = s
        .app
        .get_as(&s.key, "/api/v1/usage?group_by=model")
        .await
        .json()
        .await
        .unwrap();
    let rows = mine["rows"].as_array().unwrap_or_else(|| panic!("{mine}"));
    assert_eq!(
        rows.iter()
            .map(|r| (
                r["group"].as_str().unwrap(),
                r["requests"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("small", 1), ("tiny", 1)]
    );
    assert_eq!(rows[0]["total_tokens"], 10);
    let eve: Value = s
        .app
        .get_as(&eve_key, "/api/v1/usage")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        eve["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    let peek = s
        .app
        .get_as(&eve_key, &format!("/api/v1/usage?user_id={}", s.user_id))
        .await;
    assert_eq!(peek.status(), StatusCode::FORBIDDEN);
    let body: Value = peek.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    let all: Value = s
        .app
        .get_as(&s.admin, "/api/v1/usage?all=true&group_by=key")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    assert_eq!(all["rows"].as_array().unwrap().len(), 2, "one row per key");
    let bad = s.app.get_as(&s.key, "/api/v1/usage?group_by=planet").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["field"], "group_by", "{body}");
    let backwards = s
        .app
        .get_as(
            &s.key,
            "/api/v1/usage?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(backwards.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = backwards.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["field"], "from", "{body}");
}

#[tokio::test]
async fn deterministic_answers_are_cached_per_user() {
    let s = setup_with(|s| s.sections.gateway.cache_ttl_secs = 60).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    let request = json!({"model": "tiny", "messages": messages(), "temperature": 0});

    let first = chat(&s, request.clone()).await;
    assert_eq!(first.headers()["x-cache"], "miss");
    let first_body = first.text().await.unwrap();
    let second = chat(&s, request.clone()).await;
    assert_eq!(second.headers()["x-cache"], "hit");
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(upstream.seen.requests.load(Ordering::SeqCst), 1);

    // Another user never sees this user's cache.
    let (_, other) = s.app.user_with_token("olga", &["developer"]).await;
    let (_, other_key) = s.app.create_key(&other, json!({"name": "o"})).await;
    let theirs = s
        .app
        .request(Method::POST, "/v1/chat/completions")
        .bearer_auth(&other_key)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.headers()["x-cache"], "miss");
    // Sampling at a temperature, or streaming, is never cached.
    let warm = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "temperature": 0.7}),
    )
    .await;
    assert!(warm.headers().get("x-cache").is_none());
    assert_eq!(upstream.seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_after_the_idle_timeout() {
    let s = setup_with(|s| s.sections.gateway.idle_timeout_ms = 300).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 5,
        chunk_delay: Duration::from_millis(800),
        ..Behaviour::default()
    });
    register(&s, "stalling", &upstream, "tiny").await;
    let started = std::time::Instant::now();
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "stream": true}),
    )
    .await;
    let text = read_stream(resp).await;
    assert!(
        text.contains("\"code\":\"upstream_unavailable\"") && text.contains("timed out"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn image_parts_fit_in_the_larger_v1_body_limit_but_not_beyond_it() {
    let s = setup_with(|s| s.sections.gateway.max_request_bytes = 2 * 1024 * 1024).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    let image = |bytes: usize| {
        json!({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(bytes))}}]}]})
    };
    // 1.5 MB: above the management API's 1 MiB, within /v1's 2 MiB.
    let ok = chat(&s, image(1_500_000)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        upstream.seen.bodies.lock().unwrap()[0]["messages"][0]["content"][1]["type"],
        "image_url"
    );
    let too_big = chat(&s, image(3_000_000)).await;
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn an_upstream_refusal_passes_through_and_charges_nothing() {
    let s = setup().await;
    set_quota(&s, json!({"tokens_per_month_quota": 100000})).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        fail_first: 1,
        fail_status: 400,
        ..Behaviour::default()
    });
    register(&s, "picky", &upstream, "tiny").await;
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "logit_bias": "nonsense"}),
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "the client's mistake is reported as is"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "fake failure");
    assert_eq!(
        upstream.seen.requests.load(Ordering::SeqCst),
        1,
        "a 4xx is not retried elsewhere"
    );
    assert_eq!(tokens_used(&s).await, 0);
    let rows = usage_rows(&s, 1).await;
    assert_eq!((rows[0].0, rows[0].1, rows[0].3), (0, 0, 400));
}

#[tokio::test]
async fn rate_limits_refuse_in_openais_shape_before_the_upstream() {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    set_quota(&s, json!({"tokens_per_minute": 50})).await;
    let resp = chat(
        &s,
        json!({"model": "tiny", "messages": messages(), "max_tokens": 100}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "a minute window: {retry}");
    assert_eq!(resp.headers()["x-ratelimit-limit"], "50");
    assert_eq!(
        resp.headers()["x-ratelimit-policy"],
        "user.tokens_per_minute"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["type"].as_str(),
            body["error"]["code"].as_str()
        ),
        (Some("rate_limit_error"), Some("rate_limited"))
    );
    assert_eq!(upstream.seen.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn providers_at_link_local_or_metadata_addresses_are_refused() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    for (i, base_url) in [
        "http://169.254.169.254/latest",
        "http://2852039166/v1",
        "http://[fe80::1]:8000/v1",
        "http://metadata.google.internal/v1",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = app
            .post_as(
                &admin,
                "/api/v1/providers",
                &json!({"name": format!("meta{i}"), "base_url": base_url, "models": [{"model": "m"}]}),
            )
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{base_url}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "base_url", "{base_url}: {body}");
    }
    let listed: Value = app
        .get_as(&admin, "/api/v1/providers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

#[tokio::test]
async fn a_route_listed_twice_is_kept_once_and_two_upstreams_for_one_name_are_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let resp = app
        .post_as(
            &admin,
            "/api/v1/providers",
            &json!({"name": "twice", "base_url": "http://127.0.0.1:9/v1",
                    "models": [{"model": "m"}, {"model": "m", "upstream_model": "m"}, {"model": "n"}]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["models"],
        json!([{"model": "m", "upstream_model": "m"}, {"model": "n", "upstream_model": "n"}]),
        "{body}"
    );

    let resp = app
        .post_as(
            &admin,
            "/api/v1/providers",
            &json!({"name": "clash", "base_url": "http://127.0.0.1:9/v1",
                    "models": [{"model": "m"}, {"model": "m", "upstream_model": "other"}]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "models", "{body}");
}

#[tokio::test]
async fn every_proxied_call_says_its_gateway_and_upstream_time_and_is_counted_in_the_overhead_histogram()
 {
    let s = setup().await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    register(&s, "fake", &upstream, "tiny").await;
    let parse = |header: &str| -> (f64, f64) {
        let part = |name: &str| {
            header
                .split(", ")
                .find_map(|p| p.strip_prefix(&format!("{name};dur=")))
                .unwrap_or_else(|| panic!("no {name} in {header}"))
                .parse::<f64>()
                .unwrap()
        };
        (part("gateway"), part("upstream"))
    };
    let plain = chat(
        &s,
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(plain.status(), StatusCode::OK);
    let (gateway, upstream_ms) = parse(plain.headers()["server-timing"].to_str().unwrap());
    assert!(
        gateway > 0.0 && upstream_ms > 0.0,
        "{gateway} {upstream_ms}"
    );
    plain.bytes().await.unwrap();
    let streamed = chat(
        &s,
        json!({"model": "tiny", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(streamed.status(), StatusCode::OK);
    parse(streamed.headers()["server-timing"].to_str().unwrap());
    streamed.bytes().await.unwrap();
    // A refused call (unknown model) never reached an upstream: no timing, not counted.
    let refused = chat(
        &s,
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert!(refused.headers().get("server-timing").is_none());
    let metrics = s.app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "maas_gateway_overhead_seconds_count 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("overhead"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
