//! Apps: a model, a prompt and knowledge published as an endpoint with its own keys. A
//! published version answers `POST /v1/apps/{id}/chat/completions` in OpenAI's shape, with
//! citations of the passages its prompt held; end users keep their conversations; every call is
//! logged with its tokens, latency and the end user's feedback.
//!
//! Layers (DESIGN §2): `domain` (entities, value objects, errors, ports; no framework types),
//! `app` (use cases over the ports), `infra` (adapters, feature `infra`) and `interface` (HTTP
//! handlers, DTOs and OpenAPI, feature `http`). It reaches the other contexts only through
//! their contracts: `inference::ChatPort` and `Conversations`, `knowledge::Retriever`,
//! `user::AppKeys` and `Principals`.

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::{AppsApi, AppsEndpointApi, configure, configure_endpoint};
