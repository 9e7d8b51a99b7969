//! Every rejection is problem+json on /api/v1 and OpenAI-shaped on /v1, never plain text or 500.

use std::sync::atomic::Ordering;

use maas_api::ExtraRoutes;
use maas_tests::TestApp;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::routes::extra;

async fn problem(resp: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], format!("https://docs.maas.dev/errors#{code}"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

async fn openai(
    resp: reqwest::Response,
    status: StatusCode,
    code: &str,
    error_type: &str,
) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["type"], error_type);
    assert!(body["error"]["message"].is_string());
    body
}

#[tokio::test]
async fn unknown_routes_are_404_in_each_api_shape() {
    let app = TestApp::spawn().await;
    problem(
        app.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        app.get("/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    openai(
        app.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
        "invalid_request_error",
    )
    .await;
}

#[tokio::test]
async fn wrong_method_is_an_error_in_our_format() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    let resp = app
        .request(Method::GET, "/api/v1/_test/echo")
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let resp = app
        .request(Method::GET, "/v1/_test/echo")
        .send()
        .await
        .unwrap();
    openai(
        resp,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "invalid_request_error",
    )
    .await;
}

#[tokio::test]
async fn wrong_method_on_a_system_route_is_405() {
    let app = TestApp::spawn().await;
    let resp = app.request(Method::POST, "/health").send().await.unwrap();
    problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn valid_json_passes_through() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    let resp = app
        .request(Method::POST, "/api/v1/_test/echo")
        .json(&json!({"name": "ok", "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"name": "ok", "count": 2})
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    let send = |path: &'static str| {
        app.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(r#"{"name": "#)
            .send()
    };
    problem(
        send("/api/v1/_test/echo").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    openai(
        send("/v1/_test/echo").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "invalid_request_error",
    )
    .await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    for path in ["/api/v1/_test/echo", "/v1/_test/echo"] {
        let resp = app
            .request(Method::POST, path)
            .header("content-type", "text/plain")
            .body(r#"{"name":"a","count":1}"#)
            .send()
            .await
            .unwrap();
        if path.starts_with("/v1") {
            openai(
                resp,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "invalid_request_error",
            )
            .await;
        } else {
            problem(
                resp,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
        }
    }
    let missing = app
        .request(Method::POST, "/api/v1/_test/echo")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(
        missing,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::spawn_with(
        |s| {
            s.sections.server.json_limit_bytes = 64;
            s.sections.gateway.max_request_bytes = 64;
        },
        extra(),
    )
    .await;
    let big = json!({"name": "x".repeat(1024), "count": 1});
    let resp = app
        .request(Method::POST, "/api/v1/_test/echo")
        .json(&big)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let resp = app
        .request(Method::POST, "/v1/_test/echo")
        .json(&big)
        .send()
        .await
        .unwrap();
    openai(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "invalid_request_error",
    )
    .await;
}

#[tokio::test]
async fn wrong_types_and_unknown_fields_are_422() {
    let app = TestApp::spawn_with(
        |_| {},
        ExtraRoutes {
            management: extra().management,
            openai: None,
        },
    )
    .await;
    for body in [
        json!({"name": 5, "count": 1}),
        json!({"name": "a", "count": 1, "admin": true}),
    ] {
        let resp = app
            .request(Method::POST, "/api/v1/_test/echo")
            .json(&body)
            .send()
            .await
            .unwrap();
        problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

#[tokio::test]
async fn validation_lists_every_bad_field() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    let bad = json!({"name": "", "count": 9});
    let resp = app
        .request(Method::POST, "/api/v1/_test/echo")
        .json(&bad)
        .send()
        .await
        .unwrap();
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["count", "name"]);

    let resp = app
        .request(Method::POST, "/v1/_test/echo")
        .json(&bad)
        .send()
        .await
        .unwrap();
    let body = openai(
        resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "invalid_request_error",
    )
    .await;
    assert_eq!(body["error"]["param"], "count");
}

/// The management writes that take a JSON body, as (method, path) for `admin` acting on the
/// user `user`, the key `key` and the conversation `conversation`.
fn management_writes(user: &str, key: &str, conversation: &str) -> Vec<(Method, String)> {
    [
        (Method::POST, "/api/v1/auth/login".to_owned()),
        (Method::POST, "/api/v1/auth/refresh".to_owned()),
        (Method::POST, "/api/v1/auth/logout".to_owned()),
        (Method::POST, "/api/v1/auth/register".to_owned()),
        (Method::POST, "/api/v1/me/password".to_owned()),
        (Method::POST, "/api/v1/me/keys".to_owned()),
        (Method::POST, "/api/v1/users".to_owned()),
        (Method::PUT, format!("/api/v1/users/{user}/roles")),
        (Method::PUT, format!("/api/v1/users/{user}/quota")),
        (Method::POST, format!("/api/v1/users/{user}/keys")),
        (
            Method::PUT,
            format!("/api/v1/users/{user}/keys/{key}/quota"),
        ),
        (Method::POST, "/api/v1/providers".to_owned()),
        (Method::POST, "/api/v1/conversations".to_owned()),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{conversation}"),
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{conversation}/messages"),
        ),
    ]
    .into_iter()
    .collect()
}

#[tokio::test]
async fn non_object_bodies_are_422_on_every_management_write() {
    let app = TestApp::spawn_with(|_| {}, extra()).await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (user, token) = app.user_with_token("vera", &["developer"]).await;
    let (key, _) = app.create_key(&token, json!({"name": "k"})).await;
    let conversation: Value = app
        .post_as(&admin, "/api/v1/conversations", &json!({"title": "t"}))
        .await
        .json()
        .await
        .unwrap();
    let conversation = conversation["id"].as_str().unwrap().to_owned();
    let writes = management_writes(&user.to_string(), &key.to_string(), &conversation);
    for (method, path) in &writes {
        for body in [
            json!(["x", null]),
            json!([]),
            json!("text"),
            json!(7),
            json!(true),
            Value::Null,
        ] {
            let resp = app
                .request(method.clone(), path)
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            let problem =
                problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert_eq!(
                problem["errors"],
                json!([{"field": "body", "code": "type", "message": "the request body must be a JSON object"}]),
                "{method} {path} with {body}"
            );
        }
    }
    // Nothing was written by the refusals: the admin's only conversation is still the one above.
    let list: Value = app
        .get_as(&admin, "/api/v1/conversations")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    let resp = app
        .request(Method::POST, "/v1/_test/echo")
        .json(&json!(["ok", 2]))
        .send()
        .await
        .unwrap();
    let body = openai(
        resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "invalid_request_error",
    )
    .await;
    assert_eq!(body["error"]["param"], "body");
}

/// The fields a 422 names, in order.
fn fields(problem: &Value) -> Vec<(&str, &str)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect()
}

/// A request with NUL characters: method, path, credential, body, and the (field, code) pairs the
/// 422 names.
type NulCase<'a> = (Method, String, &'a str, Value, Vec<(&'a str, &'a str)>);

#[tokio::test]
async fn nul_characters_are_422_naming_the_field_never_500() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("nina", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let provider =
        json!({"name": "fake", "base_url": upstream.base_url, "models": [{"model": "tiny"}]});
    let created = app.post_as(&admin, "/api/v1/providers", &provider).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let conversation: Value = app
        .post_as(&token, "/api/v1/conversations", &json!({"title": "chat"}))
        .await
        .json()
        .await
        .unwrap();
    let conversation = conversation["id"].as_str().unwrap().to_owned();

    let nul = "nul_character";
    let cases: Vec<NulCase<'_>> = vec![
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            &admin,
            json!({"login": "a\u{0}", "password": "x"}),
            vec![("login", nul)],
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            &admin,
            json!({"username": "nu\u{0}ll", "email": "a\u{0}@example.com", "password": "long enough password"}),
            vec![("email", nul), ("username", nul)],
        ),
        (
            Method::POST,
            "/api/v1/me/keys".into(),
            &token,
            json!({"name": "k\u{0}", "allowed_models": ["tiny", "m\u{0}"]}),
            vec![("allowed_models[1]", nul), ("name", nul)],
        ),
        (
            Method::POST,
            "/api/v1/providers".into(),
            &admin,
            json!({"name": "p\u{0}", "base_url": "http://127.0.0.1:1/v1", "models": [{"model": "m\u{0}"}]}),
            vec![("models[0].model", nul), ("name", nul)],
        ),
        (
            Method::POST,
            "/api/v1/conversations".into(),
            &token,
            json!({"title": "t\u{0}"}),
            vec![("title", nul)],
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{conversation}"),
            &token,
            json!({"title": "\u{0}"}),
            vec![("title", nul)],
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{conversation}/messages"),
            &token,
            json!({"role": "user", "content": "c\u{0}"}),
            vec![("content", nul)],
        ),
    ];
    for (method, path, credential, body, expected) in &cases {
        let resp = app
            .request(method.clone(), path)
            .bearer_auth(credential)
            .json(body)
            .send()
            .await
            .unwrap();
        let problem = problem(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(&fields(&problem), expected, "{method} {path}: {problem}");
        assert_eq!(
            problem["errors"][0]["message"],
            "must not contain the NUL character (U+0000)"
        );
    }

    // On /v1, a chat call that continues a conversation would store its messages: refused in
    // OpenAI's shape, before anything is admitted or sent upstream.
    let with_nul = json!([{"role": "user", "content": "hi\u{0}there"}]);
    let resp = app
        .post_as(
            &key,
            "/v1/chat/completions",
            &json!({"model": "tiny", "conversation_id": conversation, "messages": with_nul}),
        )
        .await;
    let body = openai(
        resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "invalid_request_error",
    )
    .await;
    assert_eq!(body["error"]["param"], "messages");
    assert_eq!(upstream.seen.requests.load(Ordering::SeqCst), 0);
    // Without a conversation nothing is stored: the call passes through as sent.
    let resp = app
        .post_as(
            &key,
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": with_nul}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        upstream.seen.bodies.lock().unwrap()[0]["messages"],
        with_nul
    );

    // Nothing was stored by the refusals.
    let messages: Value = app
        .get_as(
            &token,
            &format!("/api/v1/conversations/{conversation}/messages"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(messages["data"], json!([]), "{messages}");
    let keys: Value = app
        .get_as(&token, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
}
