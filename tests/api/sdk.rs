//! The official OpenAI Python SDK against the gateway. CI installs the SDK from PyPI into a
//! virtualenv and names its interpreter in `MAAS_OPENAI_PYTHON`; without it the test says so
//! and does nothing (`.ci/run` always sets it).

use std::process::Command;

use maas_tests::TestApp;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn openai_python_sdk_works_against_the_gateway() {
    let Ok(python) = std::env::var("MAAS_OPENAI_PYTHON") else {
        eprintln!("MAAS_OPENAI_PYTHON is not set: skipping the OpenAI SDK check (CI sets it)");
        return;
    };
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("sdk", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "sdk"})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let body =
        json!({"name": "fake", "base_url": upstream.base_url, "models": [{"model": "tiny"}]});
    let resp = app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_sdk.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("MAAS_BASE_URL", &app.address)
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
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
