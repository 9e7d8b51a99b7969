//! OpenAI-compatible gateway: routing, streaming, usage metering, conversations, response cache.
//!
//! Layers (DESIGN §2): `domain` (entities, value objects, errors, ports; no framework types),
//! `app` (use cases over the ports), `infra` (adapters, feature `infra`) and `interface` (HTTP
//! handlers, DTOs and OpenAPI, feature `http`). Other contexts use only what this file exports.
//! This context has no features yet: its routes and tables arrive with its issue.

pub mod domain {
    //! Entities, value objects, domain errors and the ports this context needs.
}

pub mod app {
    //! Use cases: one service per aggregate, orchestrating the domain and its ports.
}

#[cfg(feature = "infra")]
pub mod infra {
    //! Adapters implementing the domain ports: sea-orm repositories, Redis, job producers.
}

#[cfg(feature = "http")]
pub mod interface {
    //! HTTP handlers, DTOs and the context's OpenAPI document.

    use actix_web::web;

    /// The OpenAPI document of this context, nested by `maas-api`.
    #[derive(Debug, utoipa::OpenApi)]
    #[openapi()]
    pub struct InferenceApi;

    /// Registers this context's routes.
    pub fn configure(_cfg: &mut web::ServiceConfig) {}
}

#[cfg(feature = "http")]
pub use interface::{InferenceApi, configure};
