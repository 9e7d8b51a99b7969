//! Routes that exist only in tests, mounted inside the real middleware stack through
//! `ExtraRoutes`, to exercise request parsing the product's routes will rely on.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{HttpResponse, web};
use maas_api::ExtraRoutes;
use maas_shared::http::ValidatedJson;
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Debug, Deserialize, Serialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    #[validate(length(min = 1, max = 10))]
    pub name: String,
    #[validate(range(min = 1, max = 5))]
    pub count: u32,
}

async fn echo(body: ValidatedJson<Echo>) -> HttpResponse {
    HttpResponse::Ok().json(body.into_inner())
}

/// `/_test/slow` requests that have started (the server runs in the test's process).
static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);
/// Each permit lets one `/_test/slow` request finish.
static SLOW_RELEASE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// How many `/_test/slow` requests have reached the handler.
pub fn slow_started() -> usize {
    SLOW_STARTED.load(Ordering::SeqCst)
}

/// Lets one `/_test/slow` request answer.
pub fn release_slow() {
    SLOW_RELEASE.add_permits(1);
}

/// Holds the request until the test releases it: in flight for exactly as long as a test needs.
async fn slow() -> HttpResponse {
    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
    SLOW_RELEASE
        .acquire()
        .await
        .expect("the semaphore is never closed")
        .forget();
    HttpResponse::Ok().body("finished")
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/_test/echo").route(web::post().to(echo)))
        .service(web::resource("/_test/slow").route(web::get().to(slow)));
}

pub fn extra() -> ExtraRoutes {
    ExtraRoutes {
        management: Some(routes),
        openai: Some(routes),
    }
}
