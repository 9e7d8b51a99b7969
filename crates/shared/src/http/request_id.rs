//! `x-request-id`: taken from the caller when it is sane, generated otherwise, returned on every
//! response and recorded on the request's tracing span so every log line of the request carries it.

use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest};
use tracing::Instrument;

/// The header that carries the request id in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

/// The id of the current request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_header(value: Option<&HeaderValue>) -> Self {
        let incoming = value
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_LEN)
            .filter(|v| {
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            });
        Self(incoming.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned))
    }
}

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req.extensions().get::<Self>().cloned();
        ready(Ok(id.unwrap_or_else(|| {
            Self::from_header(req.headers().get(REQUEST_ID_HEADER))
        })))
    }
}

/// Middleware (use with `actix_web::middleware::from_fn`): assigns the request id, runs the
/// request inside a span that carries it, logs one line per request and echoes the id back.
///
/// # Errors
/// Passes on errors of inner services unchanged.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = RequestId::from_header(req.headers().get(REQUEST_ID_HEADER));
    let span = tracing::info_span!(
        "request",
        request_id = %id.as_str(),
        method = %req.method(),
        path = %req.path(),
    );
    req.extensions_mut().insert(id.clone());
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "-".to_owned());
    span.in_scope(|| {
        tracing::info!(
            status,
            route,
            latency_us = started.elapsed().as_micros() as u64,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_incoming_ids_are_kept() {
        let id = RequestId::from_header(Some(&HeaderValue::from_static("abc-123_x.y:z")));
        assert_eq!(id.as_str(), "abc-123_x.y:z");
    }

    #[test]
    fn hostile_or_missing_ids_are_replaced() {
        for bad in ["", "has space", "new\tline", &"x".repeat(MAX_LEN + 1)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = RequestId::from_header(Some(&value));
            assert_ne!(id.as_str(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
        }
        assert!(uuid::Uuid::parse_str(RequestId::from_header(None).as_str()).is_ok());
    }
}
