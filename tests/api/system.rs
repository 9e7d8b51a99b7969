//! Liveness, readiness, metrics, request ids, OpenAPI and the Swagger UI.

use maas_api::ExtraRoutes;
use maas_tests::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn health_answers_ok_with_version() {
    let app = TestApp::spawn().await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn ready_is_200_when_postgres_and_redis_answer() {
    let app = TestApp::spawn().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test]
async fn ready_is_503_naming_redis_when_redis_is_down() {
    // Nothing listens on port 1 of loopback.
    let app = TestApp::spawn_with(
        |s| s.sections.redis.url = "redis://127.0.0.1:1/".to_owned().into(),
        ExtraRoutes::default(),
    )
    .await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
}

#[tokio::test]
async fn ready_is_503_naming_postgres_when_its_database_is_gone() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    app.db.drop_now().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = TestApp::spawn().await;
    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app
        .request(reqwest::Method::GET, "/health")
        .header("x-request-id", "client-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-abc.123");

    let hostile = app
        .request(reqwest::Method::GET, "/health")
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(hostile.headers()["x-request-id"], "a b<script>");

    // Errors carry it too.
    let missing = app.get("/nope").await;
    assert!(missing.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn trailing_slashes_are_normalised() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/health/").await.status(), StatusCode::OK);
    assert_eq!(app.get("/ready//").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.get("/health").await;
    }
    app.get("/no/such/route").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"maas_http_requests_total{endpoint="/health",method="GET",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"maas_http_requests_duration_seconds_bucket{endpoint="/health",method="GET",status="200",le="0.005"}"#));
    // Unknown paths are folded into one label, so scanners cannot blow up cardinality.
    assert!(text.contains(r#"endpoint="UNMATCHED""#), "{text}");
    assert!(!text.contains("/no/such/route"));
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_binary() {
    let app = TestApp::spawn().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let generated: Value =
        serde_json::from_str(&maas_api::openapi::to_pretty_json().unwrap()).unwrap();
    assert_eq!(served, generated);
    assert!(served["paths"]["/health"]["get"].is_object());
    assert!(served["paths"]["/ready"]["get"].is_object());
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_without_internet() {
    let app = TestApp::spawn().await;
    let redirect = app.get("/docs").await;
    assert!(redirect.status().is_redirection(), "{}", redirect.status());
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let app = TestApp::spawn().await;
    let resp = app
        .request(reqwest::Method::GET, "/health")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    let preflight = app
        .request(reqwest::Method::OPTIONS, "/health")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn cors_admits_only_configured_origins() {
    let app = TestApp::spawn_with(
        |s| s.sections.server.cors_allowed_origins = vec!["https://console.example".to_owned()],
        ExtraRoutes::default(),
    )
    .await;
    let preflight = app
        .request(reqwest::Method::OPTIONS, "/health")
        .header("origin", "https://console.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let other = app
        .request(reqwest::Method::GET, "/health")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn graceful_stop_lets_in_flight_requests_finish() {
    let app = TestApp::spawn_with(|_| {}, crate::routes::extra()).await;
    let client = app.client.clone();
    let url = format!("{}/api/v1/_test/slow", app.address);
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(app.handle.stop(true));
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "finished");
    stopping.await.unwrap();
    assert!(
        app.client
            .get(format!("{}/health", app.address))
            .send()
            .await
            .is_err(),
        "server still accepts"
    );
}
