//! The registry over HTTP: brands, cards and models with every bad field listed, reorder,
//! conflicts, logos judged by their bytes, and who may write.

use maas_tests::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A 1×1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xff\xff?\0\x05\xfe\x02\xfe\xa7\x35\x81\x84\0\0\0\0IEND\xaeB`\x82";

async fn send(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect()
}

async fn upload(
    app: &TestApp,
    token: &str,
    path: &str,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap();
    app.request(reqwest::Method::PUT, path)
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn brands_cards_and_models_are_validated_field_by_field_and_kept_in_order() {
    use reqwest::Method as M;
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;

    let (status, body) = send(
        &app,
        &admin,
        M::POST,
        "/api/v1/brands",
        Some(json!({"name": " ", "description": "x".repeat(501)})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(fields(&body), ["name", "description"]);

    let mut ids = Vec::new();
    for name in ["NVIDIA", "AMD", "Ascend"] {
        let (status, body) = send(
            &app,
            &admin,
            M::POST,
            "/api/v1/brands",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["sort_order"], ids.len());
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = send(
        &app,
        &admin,
        M::POST,
        "/api/v1/brands",
        Some(json!({"name": "NVIDIA"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("brand_name_taken"))
    );

    // Reorder: every brand once, else 422.
    let reversed: Vec<&String> = ids.iter().rev().collect();
    let (status, body) = send(
        &app,
        &admin,
        M::PUT,
        "/api/v1/brands/order",
        Some(json!({"brand_ids": reversed})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ascend", "AMD", "NVIDIA"]);
    let (status, body) = send(
        &app,
        &admin,
        M::PUT,
        "/api/v1/brands/order",
        Some(json!({"brand_ids": [ids[0], ids[1]]})),
    )
    .await;
    assert_eq!(
        (status, fields(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["brand_ids"])
    );

    // Cards: every bad figure listed; then a good one; a second with the same model is 409.
    let cards = format!("/api/v1/brands/{}/cards", ids[0]);
    let (status, body) = send(
        &app,
        &admin,
        M::POST,
        &cards,
        Some(json!({"model": "", "memory_gib": 0, "fp16_tflops": -1, "bf16_tflops": 200_000})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        fields(&body),
        ["model", "memory_gib", "bf16_tflops", "fp16_tflops"]
    );
    let h100 = json!({"model": "H100 SXM5 80GB", "memory_gib": 80, "fp8_tflops": 1979, "bf16_tflops": 989.5, "fp16_tflops": 989.5, "fp32_tflops": 67, "int8_tops": 1979, "interconnect_gbps": 900});
    let (status, card) = send(&app, &admin, M::POST, &cards, Some(h100.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{card}");
    assert_eq!(
        (card["memory_gib"].as_i64(), card["bf16_tflops"].as_f64()),
        (Some(80), Some(989.5))
    );
    let (status, body) = send(&app, &admin, M::POST, &cards, Some(h100)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("card_model_taken"))
    );
    let card_id = card["id"].as_str().unwrap();
    let (status, body) = send(
        &app,
        &admin,
        M::PATCH,
        &format!("/api/v1/cards/{card_id}"),
        Some(json!({"fp8_tflops": null, "memory_gib": 94})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["memory_gib"].as_i64(), &body["fp8_tflops"]),
        (Some(94), &Value::Null)
    );
    let (status, body) = send(
        &app,
        &admin,
        M::GET,
        &format!("/api/v1/cards?brand_id={}", ids[0]),
        None,
    )
    .await;
    assert_eq!(
        (status, body["data"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );

    // A brand with cards cannot go.
    let (status, body) = send(
        &app,
        &admin,
        M::DELETE,
        &format!("/api/v1/brands/{}", ids[0]),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("in_use"))
    );

    // Models.
    let bad = json!({"name": "has space", "family": "", "parameters_b": 0, "context_length": 0, "capabilities": [],
                     "quantization": "q".repeat(33), "source": {"kind": "url", "url": "http://169.254.169.254/x.gguf", "sha256": "abc"},
                     "licence": ""});
    let (status, body) = send(&app, &admin, M::POST, "/api/v1/models", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        fields(&body),
        [
            "name",
            "family",
            "parameters_b",
            "context_length",
            "capabilities",
            "quantization",
            "licence",
            "source.url",
            "source.sha256"
        ]
    );
    let good = json!({"name": "qwen2.5-0.5b-instruct", "family": "qwen2.5", "parameters_b": 0.5, "context_length": 32768,
                      "capabilities": ["chat", "completion"], "quantization": "Q4_K_M",
                      "source": {"kind": "hugging_face", "repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF"}, "default_engine": "llama.cpp", "licence": "apache-2.0"});
    let (status, model) = send(&app, &admin, M::POST, "/api/v1/models", Some(good.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    assert_eq!(model["quantization"], "q4_k_m");
    assert_eq!(model["default_engine"], "llama.cpp");
    assert_eq!(
        model["source"],
        json!({"kind": "hugging_face", "repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF"})
    );
    let (status, body) = send(&app, &admin, M::POST, "/api/v1/models", Some(good)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("model_name_taken"))
    );
    let id = model["id"].as_str().unwrap();
    let (status, body) = send(
        &app,
        &admin,
        M::PATCH,
        &format!("/api/v1/models/{id}"),
        Some(json!({"context_length": 8192, "licence": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["context_length"].as_i64(), &body["licence"]),
        (Some(8192), &Value::Null)
    );
    let (status, body) = send(
        &app,
        &admin,
        M::PATCH,
        &format!("/api/v1/models/{id}"),
        Some(json!({"unknown": 1})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
        "{body}"
    );

    // Every signed-in user reads; only admins write.
    let (_, user) = app.user_with_token("reader", &["user"]).await;
    let (status, body) = send(&app, &user, M::GET, "/api/v1/models", None).await;
    assert_eq!(
        (status, body["data"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (status, body) = send(&app, &user, M::GET, "/api/v1/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["models"].as_u64(), body["servers"].as_u64()),
        (Some(1), Some(0))
    );
    let writes = [
        (M::POST, "/api/v1/brands".to_owned(), json!({"name": "x"})),
        (
            M::PATCH,
            format!("/api/v1/brands/{}", ids[1]),
            json!({"name": "x"}),
        ),
        (M::DELETE, format!("/api/v1/brands/{}", ids[1]), Value::Null),
        (
            M::PUT,
            "/api/v1/brands/order".to_owned(),
            json!({"brand_ids": ids}),
        ),
        (
            M::POST,
            cards.clone(),
            json!({"model": "x", "memory_gib": 1}),
        ),
        (M::PATCH, format!("/api/v1/cards/{card_id}"), json!({})),
        (M::DELETE, format!("/api/v1/cards/{card_id}"), Value::Null),
        (
            M::POST,
            "/api/v1/models".to_owned(),
            json!({"name": "x", "family": "x", "context_length": 1, "capabilities": ["chat"], "source": {"kind": "local", "path": "/m"}}),
        ),
        (M::PATCH, format!("/api/v1/models/{id}"), json!({})),
        (M::DELETE, format!("/api/v1/models/{id}"), Value::Null),
        (M::DELETE, format!("/api/v1/models/{id}/logo"), Value::Null),
        (
            M::POST,
            "/api/v1/servers".to_owned(),
            json!({"name": "x", "address": "10.0.0.1"}),
        ),
        (M::GET, "/api/v1/servers".to_owned(), Value::Null),
        (M::GET, format!("/api/v1/servers/{id}"), Value::Null),
        (M::PATCH, format!("/api/v1/servers/{id}"), json!({})),
        (M::DELETE, format!("/api/v1/servers/{id}"), Value::Null),
        (
            M::POST,
            format!("/api/v1/servers/{id}/join-token"),
            Value::Null,
        ),
        (
            M::POST,
            format!("/api/v1/servers/{id}/agent/approve"),
            json!({"agent_url": "http://10.0.0.1:9090"}),
        ),
        (
            M::GET,
            format!("/api/v1/servers/{id}/agent/health"),
            Value::Null,
        ),
    ];
    for (method, path, body) in writes {
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = send(&app, &user, method.clone(), &path, body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{method} {path}"
        );
    }
    let response = upload(
        &app,
        &user,
        &format!("/api/v1/models/{id}/logo"),
        "a.png",
        "image/png",
        PNG.to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, _) = send(
        &app,
        &admin,
        M::DELETE,
        &format!("/api/v1/models/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(&app, &user, M::GET, &format!("/api/v1/models/{id}"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"))
    );
}

#[tokio::test]
async fn logos_are_judged_by_their_bytes_and_served_with_their_type() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let brand: Value = app
        .post_as(&admin, "/api/v1/brands", &json!({"name": "NVIDIA"}))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/brands/{}/logo", brand["id"].as_str().unwrap());

    // A PNG named and declared as a GIF is stored as the PNG it is.
    let response = upload(&app, &admin, &path, "logo.gif", "image/gif", PNG.to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let url = body["logo_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("/api/v1/logos/") && url.ends_with(".png"),
        "{url}"
    );
    let served = app.get_as(&admin, &url).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);
    assert_eq!(app.get(&url).await.status(), StatusCode::UNAUTHORIZED);

    let refused = [
        (
            "logo.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "logo.png",
            "image/png",
            b"<!DOCTYPE html><html><body>hi</body></html>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "big.png",
            "image/png",
            [PNG, &vec![0_u8; 3 * 1024 * 1024]].concat(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (name, mime, bytes, status, code) in refused {
        let response = upload(&app, &admin, &path, name, mime, bytes).await;
        assert_eq!(response.status(), status, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{name}");
    }
    // Not multipart at all.
    let response = app
        .request(reqwest::Method::PUT, &path)
        .bearer_auth(&admin)
        .body(PNG.to_vec())
        .header("content-type", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The refused uploads left the stored logo as it was.
    let again: Value = app
        .get_as(
            &admin,
            &format!("/api/v1/brands/{}", brand["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["logo_url"].as_str(), Some(url.as_str()));
    for bad in [
        "/api/v1/logos/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/logos/x.png",
        "/api/v1/logos/0190e0e0-0000-7000-8000-000000000000.png",
    ] {
        let response = app.get_as(&admin, bad).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{bad}");
    }
    // Replacing the logo deletes the old file.
    let response = upload(&app, &admin, &path, "new.png", "image/png", PNG.to_vec()).await;
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["logo_url"].as_str(), Some(url.as_str()));
    assert_eq!(
        app.get_as(&admin, &url).await.status(),
        StatusCode::NOT_FOUND
    );
}
