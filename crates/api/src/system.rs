//! Operational endpoints: liveness, readiness (every dependency named) and metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use maas_shared::kv::RedisPool;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use utoipa::ToSchema;

/// How long a readiness probe waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies `/ready` checks.
#[derive(Clone)]
pub struct Dependencies {
    /// PostgreSQL pool.
    pub db: DatabaseConnection,
    /// Redis pool.
    pub redis: RedisPool,
}

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok` when the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Version of the running build.
    pub version: &'static str,
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    /// `up` or `down`.
    #[schema(example = "up")]
    pub status: &'static str,
    /// Round-trip time of the probe, in milliseconds.
    pub latency_ms: u64,
    /// Why it is down (no secrets or addresses; details are in the server log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// Readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`, or `unavailable` when any dependency is down.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Each dependency by name (`postgres`, `redis`).
    pub checks: BTreeMap<&'static str, CheckResult>,
}

/// Liveness
///
/// Answers 200 while the process runs; it checks no dependency.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> web::Json<HealthResponse> {
    web::Json(HealthResponse {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness
///
/// Answers 200 when PostgreSQL and Redis both answer within 2 s, else 503 naming what is down.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "system",
    responses(
        (status = 200, description = "Every dependency is up", body = ReadyResponse),
        (status = 503, description = "At least one dependency is down", body = ReadyResponse),
    )
)]
pub async fn ready(deps: web::Data<Dependencies>) -> HttpResponse {
    let (postgres, redis) = tokio::join!(
        probe("postgres", maas_shared::db::ping(&deps.db)),
        probe("redis", maas_shared::kv::ping(&deps.redis)),
    );
    let checks = BTreeMap::from([("postgres", postgres), ("redis", redis)]);
    let all_up = checks.values().all(|c| c.error.is_none());
    let body = ReadyResponse {
        status: if all_up { "ready" } else { "unavailable" },
        checks,
    };
    if all_up {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Registers `/health` and `/ready` (as resources, so a wrong method is a 405).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/ready").route(web::get().to(ready)));
}

async fn probe(name: &'static str, check: impl Future<Output = anyhow::Result<()>>) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, check).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => {
            tracing::warn!(dependency = name, error = ?err, "readiness check failed");
            Some("unreachable")
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out");
            Some("timed out")
        }
    };
    CheckResult {
        status: if error.is_none() { "up" } else { "down" },
        latency_ms,
        error,
    }
}
