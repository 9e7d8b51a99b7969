//! OpenAPI pieces every API document shares.

use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Adds the ways to authenticate: `bearer` (a JWT or an API key), `api_key` (`x-api-key`) and
/// `node_credential` (node agents).
#[derive(Debug)]
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A login JWT, or an API key (`sk-...`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key (`sk-...`)",
            ))),
        );
        components.add_security_scheme(
            "node_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A node agent's credential (`mnc_...`), received when it joined",
                    ))
                    .build(),
            ),
        );
    }
}

/// The schema of a list of strings drawn from `values`, `min_items` to `max_items` long (for
/// `#[schema(schema_with = ...)]` on a field whose values are checked against a fixed set).
#[must_use]
pub fn enum_list(
    values: &[&str],
    min_items: usize,
    max_items: usize,
) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values.iter().copied())),
        )
        .min_items(Some(min_items))
        .max_items(Some(max_items))
        .build()
}

/// A pattern for text without the NUL character (PostgreSQL cannot store it).
pub const NO_NUL: &str = r"^[^\x00]*$";
