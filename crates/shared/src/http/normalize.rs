//! Trailing-slash normalisation: `/x/` serves `/x` and `//` collapses to `/`. The Swagger UI
//! under `/docs/` is left alone, since it needs its trailing slash to resolve its assets.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use actix_web::http::uri::PathAndQuery;
use actix_web::middleware::Next;

/// Path prefix exempt from normalisation.
const EXEMPT_PREFIX: &str = "/docs/";

/// Middleware (use with `actix_web::middleware::from_fn`) that rewrites the path before routing.
///
/// # Errors
/// Passes on errors of inner services unchanged.
pub async fn normalize_path(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(path) = normalized(req.path()) {
        let path_and_query = match req.query_string() {
            "" => path,
            query => format!("{path}?{query}"),
        };
        let mut parts = req.head().uri.clone().into_parts();
        if let Ok(pq) = path_and_query.parse::<PathAndQuery>() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                req.match_info_mut().get_mut().update(&uri);
                req.head_mut().uri = uri;
            }
        }
    }
    next.call(req).await
}

/// The normalised path, or `None` when `path` is already normal (the common case: no allocation).
fn normalized(path: &str) -> Option<String> {
    if path.starts_with(EXEMPT_PREFIX)
        || (!path.contains("//") && (path.len() <= 1 || !path.ends_with('/')))
    {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn trailing_and_double_slashes_go() {
        assert_eq!(normalized("/health/").as_deref(), Some("/health"));
        assert_eq!(
            normalized("/api//v1/users/").as_deref(),
            Some("/api/v1/users")
        );
        assert_eq!(normalized("//").as_deref(), Some("/"));
    }

    #[test]
    fn normal_paths_and_docs_are_untouched() {
        assert_eq!(normalized("/health"), None);
        assert_eq!(normalized("/"), None);
        assert_eq!(normalized("/docs/"), None);
        assert_eq!(normalized("/docs/swagger-ui.css"), None);
    }
}
