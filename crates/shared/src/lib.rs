//! The shared kernel every bounded context may use.
//!
//! The modules at the top (`id`, `error`, `clock`, `paging`, `audit`, `text`) hold no framework types and
//! no business rules, so a context's `domain` layer can depend on them. Framework-facing adapters sit
//! behind features: `http` (actix-web error mapping, request ids, OpenAPI helpers) and `infra`
//! (Redis key namespacing and the multiplexed connection, apalis job wiring, background tasks,
//! retry policies, the audit log adapter). Settings, telemetry and the building of pools belong
//! to the composition root, `maas-platform`.

pub mod audit;
pub mod clock;
pub mod error;
pub mod id;
pub mod net;
pub mod paging;
pub mod storage;
pub mod text;
pub mod whole;

#[cfg(feature = "infra")]
pub mod audit_pg;
#[cfg(feature = "infra")]
pub mod batch;
#[cfg(feature = "infra")]
pub mod db;
#[cfg(feature = "infra")]
pub mod jobs;
#[cfg(feature = "infra")]
pub mod kv;
#[cfg(feature = "infra")]
pub mod retry;
#[cfg(feature = "infra")]
pub mod seal;
#[cfg(feature = "infra")]
pub mod tasks;

#[cfg(feature = "http")]
pub mod http;
