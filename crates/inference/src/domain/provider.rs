//! An upstream provider: any OpenAI-compatible base URL, its key (sealed at rest) and the
//! models it serves under public names.

use chrono::{DateTime, Utc};

use super::errors::InvalidValue;

maas_shared::define_id!(
    /// Identifies a provider.
    ProviderId
);

/// A provider's unique slug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderName(String);

impl ProviderName {
    /// 1–64 characters of `a-z 0-9 - _ .`.
    ///
    /// # Errors
    /// [`InvalidValue`] naming `name`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim().to_ascii_lowercase();
        if (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            Ok(Self(value))
        } else {
            Err(InvalidValue::new(
                "name",
                "1 to 64 characters of a-z, 0-9, '-', '_' or '.'",
            ))
        }
    }

    /// The slug.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The base URL of an OpenAI-compatible API (e.g. `https://api.openai.com/v1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// An `http(s)://` URL with a host, without credentials, query or fragment, at most 2048
    /// characters; stored as `url` normalises it, without a trailing slash.
    ///
    /// # Errors
    /// [`InvalidValue`] naming `base_url`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = || {
            InvalidValue::new(
                "base_url",
                "an http(s) URL with a host, without credentials, query or fragment",
            )
        };
        let url = maas_shared::net::outbound_url(raw, 2048).map_err(|e| match e {
            maas_shared::net::OutboundUrlError::Malformed => invalid(),
            maas_shared::net::OutboundUrlError::Forbidden => InvalidValue::new(
                "base_url",
                "must not be a link-local or cloud-metadata address",
            ),
        })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid());
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// The URL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base + path` (path starts with `/`).
    #[must_use]
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// A model as clients name it, and as the provider names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRoute {
    /// The public name clients send in `model`.
    pub model: String,
    /// The name sent upstream.
    pub upstream_model: String,
}

impl ModelRoute {
    /// Validates both names (1–200 printable characters).
    ///
    /// # Errors
    /// [`InvalidValue`] naming `models`.
    pub fn parse(model: &str, upstream_model: Option<&str>) -> Result<Self, InvalidValue> {
        let model = model.trim();
        let upstream = upstream_model.map_or(model, str::trim);
        let ok = |s: &str| {
            (1..=200).contains(&s.chars().count())
                && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        };
        if ok(model) && ok(upstream) {
            Ok(Self {
                model: model.to_owned(),
                upstream_model: upstream.to_owned(),
            })
        } else {
            Err(InvalidValue::new(
                "models",
                "model names are 1 to 200 characters without spaces",
            ))
        }
    }
}

/// A registered upstream.
#[derive(Clone, Debug)]
pub struct Provider {
    id: ProviderId,
    name: ProviderName,
    base_url: BaseUrl,
    sealed_key: Option<Vec<u8>>,
    models: Vec<ModelRoute>,
    enabled: bool,
    created_at: DateTime<Utc>,
}

impl Provider {
    /// A new provider, enabled, serving `models` (its key already sealed).
    #[must_use]
    pub fn register(
        name: ProviderName,
        base_url: BaseUrl,
        sealed_key: Option<Vec<u8>>,
        models: Vec<ModelRoute>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ProviderId::new(),
            name,
            base_url,
            sealed_key,
            models,
            enabled: true,
            created_at: at,
        }
    }

    /// A provider as stored (repositories only).
    #[must_use]
    pub fn restore(
        id: ProviderId,
        name: ProviderName,
        base_url: BaseUrl,
        sealed_key: Option<Vec<u8>>,
        models: Vec<ModelRoute>,
        enabled: bool,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            name,
            base_url,
            sealed_key,
            models,
            enabled,
            created_at,
        }
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> ProviderId {
        self.id
    }

    /// Slug.
    #[must_use]
    pub fn name(&self) -> &ProviderName {
        &self.name
    }

    /// Base URL.
    #[must_use]
    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The upstream key, sealed; `None` for upstreams without auth.
    #[must_use]
    pub fn sealed_key(&self) -> Option<&[u8]> {
        self.sealed_key.as_deref()
    }

    /// Served models.
    #[must_use]
    pub fn models(&self) -> &[ModelRoute] {
        &self.models
    }

    /// Disabled providers are not routed to.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

/// Where one call goes: resolved, with the key opened.
#[derive(Clone)]
pub struct Target {
    /// Provider id.
    pub provider_id: ProviderId,
    /// Provider slug (recorded with usage).
    pub provider: String,
    /// Base URL.
    pub base_url: BaseUrl,
    /// Plain upstream key (never logged), opened once per route-table load.
    pub api_key: Option<std::sync::Arc<str>>,
    /// Model name to send upstream.
    pub upstream_model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider)
            .field("upstream_model", &self.upstream_model)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_without_query() {
        assert_eq!(
            BaseUrl::parse("https://api.example.com/v1/")
                .unwrap()
                .as_str(),
            "https://api.example.com/v1"
        );
        for bad in [
            "ftp://x",
            "https://",
            "http://a/b?c=1",
            "http://a/b#c",
            "https://user:secret@api.example.com/v1",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_and_link_local_base_urls_are_refused_whatever_their_spelling() {
        for bad in [
            "http://169.254.169.254/latest",
            "http://2852039166/v1",
            "http://0xa9fea9fe/v1",
            "http://[fe80::1]:8000/v1",
            "http://[::ffff:a9fe:a9fe]/v1",
            "http://metadata.google.internal/computeMetadata",
        ] {
            let err = BaseUrl::parse(bad).expect_err(bad);
            assert_eq!(err.field, "base_url", "{bad}");
            assert!(err.message.contains("metadata"), "{bad}: {}", err.message);
        }
        for good in [
            "http://127.0.0.1:8000/v1",
            "http://192.168.1.10:8000/v1",
            "http://[::1]:9/v1",
        ] {
            assert!(BaseUrl::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn routes_default_the_upstream_name() {
        let route = ModelRoute::parse("gpt-mini", None).unwrap();
        assert_eq!(route.upstream_model, "gpt-mini");
        assert!(ModelRoute::parse("has space", None).is_err());
    }
}
