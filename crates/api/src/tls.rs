//! HTTPS: the server's rustls configuration from a PEM certificate chain and key (HTTP/2 and
//! HTTP/1.1 by ALPN), and the redirect of a plain-HTTP listener to HTTPS.

use std::path::Path;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HOST, LOCATION};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The rustls server configuration for `cert` (PEM chain, leaf first) and `key` (PEM).
///
/// # Errors
/// When a file cannot be read, holds no certificate or key, or they do not match.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not belong together")
}

/// The HTTPS port plain-HTTP requests are sent to (`None`: no plain listener redirects).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpsPort(pub(crate) Option<u16>);

/// The host of a `Host` header value, without its port (`[::1]:8443` → `[::1]`).
fn host_only(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split(':').next().unwrap_or(host)
}

/// Answers a request that came in over plain HTTP with 308 to the same path over HTTPS, when a
/// redirect listener is configured; everything else passes.
pub(crate) async fn redirect_plain_http(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let https = req
        .app_data::<web::Data<HttpsPort>>()
        .and_then(|port| port.0);
    if let Some(port) = https
        && !req.app_config().secure()
    {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(
                || req.app_config().host().to_owned(),
                |h| host_only(h).to_owned(),
            );
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", actix_web::http::uri::PathAndQuery::as_str);
        let location = format!("https://{host}:{port}{target}");
        let response = HttpResponse::PermanentRedirect()
            .insert_header((LOCATION, location))
            .finish();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_keeps_the_host_and_drops_its_port() {
        assert_eq!(host_only("gpu.local:8080"), "gpu.local");
        assert_eq!(host_only("192.168.1.10"), "192.168.1.10");
        assert_eq!(host_only("[::1]:8080"), "[::1]");
        assert_eq!(host_only("[::1"), "[::1");
    }
}
