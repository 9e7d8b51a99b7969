//! `maas-api`: the composition root of the HTTP server. It builds the adapters from settings,
//! mounts every context's routes under `/api/v1` (management, problem+json errors) and `/v1`
//! (OpenAI-compatible, OpenAI error shape), and serves the OpenAPI document and Swagger UI.

pub mod openapi;
mod redoc;
pub mod startup;
pub mod system;
pub mod tls;

pub use openapi::ApiDoc;
pub use startup::{Application, ExtraRoutes};
