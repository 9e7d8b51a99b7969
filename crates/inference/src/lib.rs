//! The OpenAI-compatible inference gateway: upstream providers, routing, streaming passthrough,
//! exact metering through the identity context's quota gate, and usage records.
//!
//! Layers (DESIGN §2): `domain` (providers, usage, SSE reading, errors, ports; no framework
//! types), `app` (provider administration, the gateway), `infra` (PostgreSQL, the upstream
//! HTTP client; feature `infra`) and `interface` (handlers, DTOs, OpenAPI; feature `http`).

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::{InferenceApi, ProvidersApi, configure, configure_admin};
