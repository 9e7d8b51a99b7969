//! `maas-engine`: the built-in OpenAI-compatible CPU inference server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use maas_engine::{Engine, EngineConfig};

/// Files the fetch script (`scripts/fetch-models.sh`) puts in `MAAS_MODELS_DIR`.
const DEFAULT_CHAT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_EMBEDDING_DIR: &str = "all-MiniLM-L6-v2";

/// The MaaS built-in inference engine (CPU).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MAAS_ENGINE_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// Directory with the fetched models; used for any model not given explicitly.
    #[arg(long, env = "MAAS_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// GGUF chat model file.
    #[arg(long, env = "MAAS_ENGINE_CHAT_MODEL")]
    chat_model: Option<PathBuf>,
    /// Name the chat model is served under.
    #[arg(long, env = "MAAS_ENGINE_CHAT_NAME")]
    chat_name: Option<String>,
    /// Embedding model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "MAAS_ENGINE_EMBEDDING_MODEL")]
    embedding_model: Option<PathBuf>,
    /// Name the embedding model is served under.
    #[arg(long, env = "MAAS_ENGINE_EMBEDDING_NAME")]
    embedding_name: Option<String>,
    /// Keep 4/5-bit weights as they are (less memory, slower) instead of Q8_0 in memory.
    #[arg(long, env = "MAAS_ENGINE_NO_REQUANTIZE")]
    no_requantize: bool,
    /// Requests computing at once.
    #[arg(long, env = "MAAS_ENGINE_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Requests waiting at most; beyond that, 503.
    #[arg(long, env = "MAAS_ENGINE_QUEUE", default_value_t = 64)]
    queue: usize,
    /// Longest wait in the queue, in seconds.
    #[arg(long, env = "MAAS_ENGINE_QUEUE_TIMEOUT_SECS", default_value_t = 120)]
    queue_timeout_secs: u64,
    /// `max_tokens` when a request gives none.
    #[arg(long, env = "MAAS_ENGINE_DEFAULT_MAX_TOKENS", default_value_t = 512)]
    default_max_tokens: usize,
    /// Bearer key required on /v1 and /generate (none: open, so listen on loopback only).
    #[arg(long, env = "MAAS_ENGINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl Args {
    fn config(self) -> EngineConfig {
        let in_dir = |name: &str| {
            self.models_dir
                .as_ref()
                .map(|d| d.join(name))
                .filter(|p| p.exists())
        };
        EngineConfig {
            chat_model: self
                .chat_model
                .clone()
                .or_else(|| in_dir(DEFAULT_CHAT_FILE)),
            chat_name: self.chat_name.clone(),
            embedding_model: self
                .embedding_model
                .clone()
                .or_else(|| in_dir(DEFAULT_EMBEDDING_DIR)),
            embedding_name: self.embedding_name.clone(),
            requantize: !self.no_requantize,
            concurrency: self.concurrency,
            queue: self.queue,
            queue_timeout: Duration::from_secs(self.queue_timeout_secs),
            default_max_tokens: self.default_max_tokens,
            api_key: self.api_key,
        }
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let listen = args.listen.clone();
    let config = args.config();
    let started = std::time::Instant::now();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&config))
        .await
        .context("loading the models")??;
    let listener = TcpListener::bind(&listen).with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        models = ?engine.model_names(),
        load_ms = started.elapsed().as_millis() as u64,
        "maas-engine ready"
    );
    maas_engine::serve(engine, listener).await
}
