//! `maas-engine`: the built-in OpenAI-compatible inference server. It serves a llama-family
//! GGUF chat model and a BERT embedding model on CPU, so the platform runs end to end on a
//! machine without accelerators; the node agent launches it as the `builtin` engine.

pub mod api;
pub mod chat;
pub mod embed;
pub mod error;
pub mod gate;
pub mod params;
pub mod text;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::chat::ChatModel;
use crate::embed::EmbeddingModel;
use crate::gate::Gate;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// GGUF chat model file.
    pub chat_model: Option<PathBuf>,
    /// Name to serve it under (default: the file name up to the first dot, lower-cased).
    pub chat_name: Option<String>,
    /// Directory with `config.json`, `model.safetensors`, `tokenizer.json`.
    pub embedding_model: Option<PathBuf>,
    /// Name to serve it under (default: the directory name, lower-cased).
    pub embedding_name: Option<String>,
    /// Re-encode 4/5-bit weights as Q8_0 at load (faster on CPU, about twice the memory).
    pub requantize: bool,
    /// Requests computing at once.
    pub concurrency: usize,
    /// Requests waiting at most; more are refused with 503.
    pub queue: usize,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Bearer key required on `/v1` and `/generate` when set.
    pub api_key: Option<String>,
}

/// The loaded engine, shared by all requests.
#[derive(Debug)]
pub struct Engine {
    /// The chat model.
    pub chat: Option<ChatModel>,
    /// The embedding model.
    pub embedding: Option<EmbeddingModel>,
    /// Admission.
    pub gate: Gate,
    /// `max_tokens` default.
    pub default_max_tokens: usize,
    /// Required bearer key.
    pub api_key: Option<String>,
    /// Unix time it started.
    pub started: u64,
}

fn default_name(path: &std::path::Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("model")
        .to_lowercase()
}

impl Engine {
    /// Loads the configured models (blocking; seconds).
    ///
    /// # Errors
    /// No model configured, or one fails to load.
    pub fn load(config: &EngineConfig) -> anyhow::Result<Self> {
        if config.chat_model.is_none() && config.embedding_model.is_none() {
            anyhow::bail!("no model to serve: give a chat model, an embedding model or both");
        }
        let chat = config
            .chat_model
            .as_ref()
            .map(|path| {
                let name = config
                    .chat_name
                    .clone()
                    .unwrap_or_else(|| default_name(path));
                ChatModel::load(path, name, config.requantize)
                    .with_context(|| format!("loading the chat model {}", path.display()))
            })
            .transpose()?;
        let embedding = config
            .embedding_model
            .as_ref()
            .map(|dir| {
                let name = config
                    .embedding_name
                    .clone()
                    .unwrap_or_else(|| default_name(dir));
                EmbeddingModel::load(dir, name)
                    .with_context(|| format!("loading the embedding model {}", dir.display()))
            })
            .transpose()?;
        Ok(Self {
            chat,
            embedding,
            gate: Gate::new(config.concurrency, config.queue, config.queue_timeout),
            default_max_tokens: config.default_max_tokens,
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// Names of the served models.
    #[must_use]
    pub fn model_names(&self) -> Vec<String> {
        self.chat
            .iter()
            .map(|c| c.name().to_owned())
            .chain(self.embedding.iter().map(|e| e.name().to_owned()))
            .collect()
    }
}

/// Serves the engine on a bound listener until SIGINT/SIGTERM.
///
/// # Errors
/// The server cannot start.
pub async fn serve(engine: Engine, listener: TcpListener) -> anyhow::Result<()> {
    let engine = actix_web::web::Data::new(engine);
    actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(engine.clone())
            .configure(api::configure)
    })
    .on_connect(|conn, _| {
        // Nagle + delayed ACK would hold back streamed tokens (and delay noticing a client
        // that left).
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
            && let Err(err) = tcp.set_nodelay(true)
        {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    })
    // A client that closes its socket is gone, also while waiting for a whole answer: its
    // handler is dropped and its generation stops.
    .h1_allow_half_closed(false)
    .listen(listener)?
    .shutdown_timeout(10)
    .run()
    .await?;
    Ok(())
}
