//! Routes that exist only in tests, mounted inside the real middleware stack through
//! `ExtraRoutes`, to exercise request parsing the product's routes will rely on.

use std::time::Duration;

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

async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
