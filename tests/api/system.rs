//! Liveness, readiness, metrics, request ids, OpenAPI and the Swagger UI.

use std::time::Duration;

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
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = TestApp::spawn().await;
    let generated_id = |resp: &reqwest::Response| {
        let id = resp.headers()["x-request-id"].to_str().unwrap();
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("not a UUID: {id}"));
        assert_eq!(parsed.get_version_num(), 7, "{id}");
        parsed
    };
    let generated = app.get("/health").await;
    let first = generated_id(&generated);

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
    // A hostile id is replaced by a fresh one.
    assert_ne!(generated_id(&hostile), first);

    // Errors carry it too.
    let missing = app.get("/nope").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing_id = generated_id(&missing);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_ne!(missing_id, first);
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
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/docs/");
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
async fn redoc_is_served_without_internet() {
    let app = TestApp::spawn().await;
    let page = app.get("/redoc").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"spec-url="/openapi.json""#), "{html}");
    assert!(
        html.contains(r#"src="/redoc/redoc.standalone.js""#),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere: {html}"
    );
    let bundle = app.get("/redoc/redoc.standalone.js").await;
    assert_eq!(bundle.status(), StatusCode::OK);
    assert_eq!(
        bundle.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let vendored = include_bytes!("../../crates/api/assets/redoc/redoc.standalone.js");
    assert_eq!(bundle.bytes().await.unwrap().as_ref(), vendored.as_slice());
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
    use crate::routes::{release_slow, slow_started};
    let app = TestApp::spawn_with(|_| {}, crate::routes::extra()).await;
    let client = app.client.clone();
    let url = format!("{}/api/v1/_test/slow", app.address);
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    let started = maas_tests::eventually(Duration::from_secs(5), || async {
        (slow_started() == 1).then_some(())
    })
    .await;
    assert_eq!(
        started,
        Some(()),
        "the slow request never reached its handler"
    );

    let stopping = tokio::spawn(app.handle.stop(true));
    // New connections are refused at once, while the request is still being served.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let health = format!("{}/health", app.address);
    let refused = maas_tests::eventually(Duration::from_secs(2), || async {
        match probe.get(&health).send().await {
            Err(err) if err.is_connect() => Some(()),
            _ => None,
        }
    })
    .await;
    assert_eq!(refused, Some(()), "the stopping server still accepts");
    assert!(
        !in_flight.is_finished(),
        "the in-flight request was cut off"
    );
    assert!(
        !stopping.is_finished(),
        "stopped without waiting for the request"
    );

    release_slow();
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the server stops once the request is done")
        .unwrap();
    let after = probe.get(&health).send().await;
    assert!(
        after.as_ref().is_err_and(reqwest::Error::is_connect),
        "server still accepts: {after:?}"
    );
}
