//! The root OpenAPI document: the only place that knows every context's prefix.

use maas_shared::error::FieldError;
use maas_shared::http::{OpenAiErrorBody, OpenAiErrorDetail, ProblemBody, SecuritySchemes};
use utoipa::OpenApi;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

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
        (path = "/v1", api = maas_knowledge::KnowledgeOpenAiApi),
        (path = "/v1", api = maas_apps::AppsEndpointApi),
    ),
    modifiers(&SecuritySchemes),
    tags((name = "system", description = "Liveness, readiness and metrics")),
)]
pub struct ApiDoc;

/// The whole document: the nested context APIs plus the legacy routes at the root, with every
/// error answer each operation can give.
#[must_use]
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi().merge_from(maas_inference::LegacyApi::openapi());
    document_openai_bodies(&mut doc);
    document_errors(&mut doc);
    forbid_nul_in_request_text(&mut doc);
    doc
}

/// The OpenAI endpoints take their body as raw JSON (it passes through); their schema says
/// which fields the gateway reads and checks.
fn document_openai_bodies(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in &mut doc.paths.paths {
        let Some(schema) = path
            .strip_prefix("/v1")
            .and_then(maas_inference::openai_request_schema)
        else {
            continue;
        };
        if let Some(body) = item.post.as_mut().and_then(|op| op.request_body.as_mut()) {
            for content in body.content.values_mut() {
                content.schema = Some(RefOr::T(schema.clone()));
            }
        }
    }
}

/// Every string a management request body carries is refused when it holds NUL (PostgreSQL
/// cannot store it): the request schemas say so with a pattern on each string that has none.
fn forbid_nul_in_request_text(doc: &mut utoipa::openapi::OpenApi) {
    let mut names: Vec<String> = Vec::new();
    for (path, item) in &mut doc.paths.paths {
        if path.starts_with("/v1/") {
            continue;
        }
        for operation in [item.put.as_mut(), item.post.as_mut(), item.patch.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(body) = operation.request_body.as_mut() {
                for content in body.content.values_mut() {
                    if let Some(schema) = content.schema.as_mut() {
                        forbid_nul(schema, &mut names);
                    }
                }
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let mut done = std::collections::HashSet::new();
    while let Some(name) = names.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = components.schemas.get_mut(&name) {
            forbid_nul(schema, &mut names);
        }
    }
}

/// Adds the no-NUL pattern to every plain string in `schema` (through arrays, objects and
/// compositions), collecting the component schemas it refers to in `refs`.
fn forbid_nul(schema: &mut RefOr<utoipa::openapi::schema::Schema>, refs: &mut Vec<String>) {
    use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
    match schema {
        RefOr::Ref(r) => {
            if let Some(name) = r.ref_location.strip_prefix("#/components/schemas/") {
                refs.push(name.to_owned());
            }
        }
        RefOr::T(Schema::Object(object)) => {
            let is_text = match &object.schema_type {
                SchemaType::Type(t) => *t == Type::String,
                SchemaType::Array(types) => types.contains(&Type::String),
                SchemaType::AnyValue => false,
            };
            if is_text
                && object.pattern.is_none()
                && object.format.is_none()
                && object.enum_values.is_none()
            {
                object.pattern = Some(maas_shared::http::NO_NUL.to_owned());
            }
            for property in object.properties.values_mut() {
                forbid_nul(property, refs);
            }
        }
        RefOr::T(Schema::Array(array)) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                forbid_nul(items, refs);
            }
        }
        RefOr::T(Schema::OneOf(one)) => one.items.iter_mut().for_each(|s| forbid_nul(s, refs)),
        RefOr::T(Schema::AllOf(all)) => all.items.iter_mut().for_each(|s| forbid_nul(s, refs)),
        RefOr::T(Schema::AnyOf(any)) => any.items.iter_mut().for_each(|s| forbid_nul(s, refs)),
        RefOr::T(_) => {}
    }
}

/// An error answer: its codes, and the body shape of its prefix.
fn error_response(openai: bool, description: &str) -> Response {
    let (content_type, schema) = if openai {
        ("application/json", "OpenAiErrorBody")
    } else {
        ("application/problem+json", "ProblemBody")
    };
    ResponseBuilder::new()
        .description(description)
        .content(
            content_type,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

/// Adds, to every operation, the error answers the shared HTTP stack and the contexts give for
/// what the operation takes (a body, a query, path ids, credentials), each with its stable codes
/// and body schema; answers an operation documents itself keep their description and get the
/// body schema when they have none.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in &mut doc.paths.paths {
        let openai = path.starts_with("/v1/");
        let system = path == "/health" || path == "/ready";
        for operation in [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            let params = operation.parameters.as_deref().unwrap_or_default();
            let has_path = params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Path));
            let has_query = params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Query));
            let has_body = operation.request_body.is_some();
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut add = |code: &str, description: &str| {
                let response = error_response(openai, description);
                match operation.responses.responses.get_mut(code) {
                    Some(RefOr::T(existing)) if existing.content.is_empty() => {
                        existing.content = response.content;
                    }
                    Some(_) => {}
                    None => {
                        operation
                            .responses
                            .responses
                            .insert(code.to_owned(), RefOr::T(response));
                    }
                }
            };
            if has_body || has_query {
                add(
                    "400",
                    "`malformed_json` (a body that is not JSON) or `invalid_query` (a query that does not parse)",
                );
            }
            if secured {
                add("401", "`unauthenticated`: no, or no valid, credentials");
                add(
                    "403",
                    "`forbidden`: the caller lacks the permission or the key's scope",
                );
                add(
                    "429",
                    "`rate_limited` or `quota_exceeded`, with `Retry-After` when a window resets",
                );
            }
            if has_path {
                add(
                    "404",
                    "`not_found`: no such resource, one that is not the caller's, or a path id that does not parse",
                );
            }
            if has_body {
                add("413", "`payload_too_large`: the body exceeds the limit");
                add(
                    "415",
                    "`unsupported_media_type`: the body is not `application/json`",
                );
                add(
                    "422",
                    "`validation_failed`: every field that breaks a rule, in `errors`",
                );
            } else if has_query {
                add(
                    "422",
                    "`validation_failed`: a query value outside its bounds, in `errors`",
                );
            }
            if !system {
                add(
                    "503",
                    "`dependency_unavailable` (PostgreSQL or Redis unreachable, with `Retry-After`) or `upstream_unavailable`",
                );
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use utoipa::OpenApi;

    /// utoipa merges components by name, so two contexts' schemas under one name would leave
    /// one context's operations documented with the other's schema.
    #[test]
    fn no_two_apis_define_one_schema_name_differently() {
        let apis = [
            ("user", maas_user::UserApi::openapi()),
            ("model", maas_model::ModelApi::openapi()),
            ("finetune", maas_finetune::FinetuneApi::openapi()),
            ("knowledge", maas_knowledge::KnowledgeApi::openapi()),
            ("apps", maas_apps::AppsApi::openapi()),
            ("providers", maas_inference::ProvidersApi::openapi()),
            ("inference", maas_inference::InferenceApi::openapi()),
            ("legacy", maas_inference::LegacyApi::openapi()),
            (
                "vector stores",
                maas_knowledge::KnowledgeOpenAiApi::openapi(),
            ),
            ("app endpoint", maas_apps::AppsEndpointApi::openapi()),
            ("root", super::ApiDoc::openapi()),
        ];
        let mut seen: BTreeMap<String, (&str, serde_json::Value)> = BTreeMap::new();
        let mut clashes = Vec::new();
        for (api, doc) in apis {
            let Some(components) = doc.components else {
                continue;
            };
            for (name, schema) in components.schemas {
                let value = serde_json::to_value(&schema).expect("a schema serialises");
                match seen.get(&name) {
                    Some((other, known)) if *known != value => {
                        clashes.push(format!("{name}: {other} and {api}"));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(name, (api, value));
                    }
                }
            }
        }
        assert!(clashes.is_empty(), "schemas defined twice: {clashes:?}");
    }
}
