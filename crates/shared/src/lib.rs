//! The shared kernel every bounded context may use.
//!
//! The modules at the top (`id`, `error`, `clock`, `paging`, `audit`) hold no framework types and
//! no business rules, so a context's `domain` layer can depend on them. Framework-facing adapters sit
//! behind features: `http` (actix-web error mapping, request ids, OpenAPI helpers) and `infra`
//! (settings, telemetry, PostgreSQL and Redis pools, apalis job wiring, the audit log adapter).

pub mod audit;
pub mod clock;
pub mod error;
pub mod id;
pub mod paging;

#[cfg(feature = "infra")]
pub mod audit_pg;
#[cfg(feature = "infra")]
pub mod batch;
#[cfg(feature = "infra")]
pub mod config;
#[cfg(feature = "infra")]
pub mod db;
#[cfg(feature = "infra")]
pub mod jobs;
#[cfg(feature = "infra")]
pub mod kv;
#[cfg(feature = "infra")]
pub mod seal;
#[cfg(feature = "infra")]
pub mod telemetry;

#[cfg(feature = "http")]
pub mod http;
