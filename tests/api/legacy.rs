//! The seeds' request shapes served by the gateway.

use futures_util::StreamExt as _;
use maas_tests::TestApp;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn setup() -> (TestApp, String, FakeUpstream) {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("lena", &["developer"]).await;
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
    (app, key, upstream)
}

#[tokio::test]
async fn generate_answers_each_prompt_with_the_sampling_parameters() {
    let (app, key, upstream) = setup().await;
    let body = json!({"model": "tiny", "prompts": ["one", "two"], "sampling_params": {"temperature": 0.3, "max_tokens": 16}});
    let resp = app
        .request(Method::POST, "/generate")
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["outputs"].as_array().unwrap().len(), 2);
    assert_eq!(out["outputs"][1]["text"], "hello there");
    assert_eq!(out["outputs"][0]["usage"]["total_tokens"], 10);
    let sent = upstream.seen.bodies.lock().unwrap().clone();
    assert_eq!(sent[1]["messages"][0]["content"], "two");
    assert_eq!(sent[0]["temperature"], 0.3);

    let unknown = json!({"model": "tiny", "prompts": ["x"], "sampling_params": {"warp": 9}});
    let resp = app
        .request(Method::POST, "/generate")
        .bearer_auth(&key)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(
        upstream
            .seen
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let anonymous = app
        .request(Method::POST, "/generate")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated", "{body}");
}

#[tokio::test]
async fn api_chat_keeps_a_conversation() {
    let (app, key, upstream) = setup().await;
    let first: Value = app
        .request(Method::POST, "/api/chat")
        .bearer_auth(&key)
        .json(&json!({"model": "tiny", "message": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["reply"], "hello there");
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    maas_tests::eventually(std::time::Duration::from_secs(3), || async {
        let m: Value = app
            .get_as(&key, &format!("/api/v1/conversations/{id}/messages"))
            .await
            .json()
            .await
            .unwrap();
        (m["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await
    .expect("first exchange stored");

    let resp = app
        .request(Method::POST, "/api/chat-stream")
        .bearer_auth(&key)
        .json(&json!({"model": "tiny", "message": "again", "conversation_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-conversation-id"], id.as_str());
    let mut text = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(text.matches("\"content\":\"tok").count(), 3, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let sent = upstream.seen.bodies.lock().unwrap()[1].clone();
    assert_eq!(
        sent["messages"].as_array().unwrap().len(),
        3,
        "history + the new message: {sent}"
    );
    let missing = app
        .request(Method::POST, "/api/chat")
        .bearer_auth(&key)
        .json(&json!({"model": "tiny", "message": "x", "conversation_id": uuid::Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "conversation_not_found", "{body}");
}
