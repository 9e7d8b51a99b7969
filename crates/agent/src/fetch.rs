//! Model files named by URL: downloaded into the agent's cache (resumed where a partial file
//! stopped), checked against their SHA-256, and kept under their digest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

/// Why a model file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file is not the one the registry names: retrying cannot help.
    #[error("sha256 mismatch: the registry says {expected}, the file is {actual}")]
    Mismatch {
        /// Registered digest.
        expected: String,
        /// Digest of what was downloaded.
        actual: String,
    },
    /// The URL may not be called (link-local, metadata, malformed).
    #[error("the model URL is not allowed: {0}")]
    Refused(&'static str),
    /// The server or the network failed (worth another try).
    #[error("download failed: {0}")]
    Failed(String),
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(maas_shared::net::RefusingResolver))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .context("building the download client")
}

async fn digest_of(path: &Path) -> std::io::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The cached file of `url` with digest `sha256`, downloading (or resuming) it when missing.
///
/// # Errors
/// [`FetchError`].
pub async fn fetch(cache: &Path, url: &str, sha256: &str) -> Result<PathBuf, FetchError> {
    let expected = sha256.to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FetchError::Refused("its sha256 is not 64 hex digits"));
    }
    let url = maas_shared::net::outbound_url(url, 2048).map_err(|e| match e {
        maas_shared::net::OutboundUrlError::Malformed => FetchError::Refused("malformed"),
        maas_shared::net::OutboundUrlError::Forbidden => {
            FetchError::Refused("link-local and cloud-metadata addresses are refused")
        }
    })?;
    let done = cache.join(&expected);
    if done.is_file() {
        return Ok(done);
    }
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(|e| FetchError::Failed(format!("creating {}: {e}", cache.display())))?;
    let partial = cache.join(format!("{expected}.partial"));
    let have = tokio::fs::metadata(&partial).await.map_or(0, |m| m.len());
    let client = client().map_err(|e| FetchError::Failed(format!("{e:#}")))?;
    let mut request = client.get(url.clone());
    if have > 0 {
        request = request.header("range", format!("bytes={have}-"));
    }
    let response = request.send().await.map_err(|e| {
        FetchError::Failed(if e.is_connect() {
            "connection refused or address not allowed".into()
        } else {
            "request failed".into()
        })
    })?;
    let status = response.status().as_u16();
    let append = match status {
        206 => true,
        200 => false,
        // The partial file is already whole.
        416 if have > 0 => true,
        _ => {
            return Err(FetchError::Failed(format!(
                "the server answered HTTP {status}"
            )));
        }
    };
    if status != 416 {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&partial)
            .await
            .map_err(|e| FetchError::Failed(format!("writing {}: {e}", partial.display())))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| FetchError::Failed("the download broke off".into()))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| FetchError::Failed(format!("writing the model file: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| FetchError::Failed(format!("writing the model file: {e}")))?;
    }
    let actual = digest_of(&partial)
        .await
        .map_err(|e| FetchError::Failed(format!("reading the model file: {e}")))?;
    if actual != expected {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(FetchError::Mismatch { expected, actual });
    }
    tokio::fs::rename(&partial, &done)
        .await
        .map_err(|e| FetchError::Failed(format!("keeping the model file: {e}")))?;
    Ok(done)
}
