//! The root OpenAPI document: the only place that knows every context's prefix.

use maas_shared::error::FieldError;
use maas_shared::http::{OpenAiErrorBody, OpenAiErrorDetail, ProblemBody, SecuritySchemes};
use utoipa::OpenApi;

use crate::system;

/// The platform's HTTP API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "MaaS platform API",
        description = "Model-as-a-Service: identity, model registry and compute, an OpenAI-compatible \
            inference gateway, fine-tuning, knowledge bases and apps.\n\n\
            Management endpoints live under `/api/v1` and answer errors as `application/problem+json` \
            with a stable `code`. OpenAI-compatible endpoints live under `/v1` and answer errors in \
            OpenAI's `{\"error\": {...}}` shape."
    ),
    paths(system::health, system::ready),
    components(schemas(ProblemBody, FieldError, OpenAiErrorBody, OpenAiErrorDetail, system::HealthResponse, system::ReadyResponse, system::CheckResult)),
    nest(
        (path = "/api/v1", api = maas_user::UserApi),
        (path = "/api/v1", api = maas_model::ModelApi),
        (path = "/api/v1", api = maas_finetune::FinetuneApi),
        (path = "/api/v1", api = maas_knowledge::KnowledgeApi),
        (path = "/api/v1", api = maas_apps::AppsApi),
        (path = "/api/v1", api = maas_inference::ProvidersApi),
        (path = "/v1", api = maas_inference::InferenceApi),
    ),
    modifiers(&SecuritySchemes),
    tags((name = "system", description = "Liveness, readiness and metrics")),
)]
pub struct ApiDoc;

/// The whole document: the nested context APIs plus the legacy routes at the root.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi().merge_from(maas_inference::LegacyApi::openapi())
}

/// The document as pretty JSON (what `openapi/openapi.json` holds).
///
/// # Errors
/// Only if serialisation fails, which would be a bug.
pub fn to_pretty_json() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&document())?;
    text.push('\n');
    Ok(text)
}
