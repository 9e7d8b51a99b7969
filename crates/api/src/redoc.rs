//! ReDoc beside the Swagger UI, served from the binary (no CDN): `/redoc` renders
//! `/openapi.json` with the ReDoc bundle vendored from npm (`redoc@2.5.4`, MIT, see
//! `assets/redoc/LICENSE`).

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{HttpResponse, web};

const BUNDLE: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <title>MaaS API reference</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(PAGE)
}

async fn bundle() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(86_400),
        ]))
        .body(BUNDLE)
}

/// Mounts `/redoc` and its bundle.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/redoc", web::get().to(page))
        .route("/redoc/", web::get().to(page))
        .route("/redoc/redoc.standalone.js", web::get().to(bundle));
}
