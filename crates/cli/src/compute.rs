//! `maas brand`, `maas model`, `maas server`: the registry and compute use cases, run as the
//! system.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Subcommand;
use maas_model::domain::registry::{BrandDraft, Capability, Engine, ModelDraft, ModelSource};
use maas_model::domain::server::ServerDraft;
use maas_platform::Platform;
use maas_shared::paging::PageRequest;
use maas_user::contract::Actor;

/// `maas brand ...`
#[derive(Debug, Subcommand)]
pub enum BrandCommand {
    /// Register an accelerator brand (placed last).
    Add {
        /// Display name.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List brands in display order.
    List,
}

/// `maas model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a model.
    Add {
        /// Unique name, as callers send it in `model`.
        name: String,
        /// Family (`qwen2.5`).
        #[arg(long)]
        family: String,
        /// Context length, tokens.
        #[arg(long)]
        context_length: i64,
        /// Capabilities (chat, completion, embedding, rerank); repeat or comma-separate.
        #[arg(long = "capability", value_delimiter = ',', default_value = "chat")]
        capabilities: Vec<String>,
        /// Parameters, billions.
        #[arg(long)]
        parameters_b: Option<f64>,
        /// Quantization (`q4_k_m`).
        #[arg(long)]
        quantization: Option<String>,
        /// Weights: `local:/path`, `hf:owner/name`, `modelscope:owner/name` or
        /// `url:https://...#sha256`.
        #[arg(long)]
        source: String,
        /// Default engine (builtin, llama.cpp, vllm, sglang, custom).
        #[arg(long, default_value = "builtin")]
        engine: String,
        /// Licence (`apache-2.0`).
        #[arg(long)]
        licence: Option<String>,
    },
    /// List models.
    List {
        /// How many (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `maas server ...`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Register a GPU server and print its agent's one-time join token.
    Add {
        /// Unique name.
        name: String,
        /// Host name or IP address.
        #[arg(long)]
        address: String,
        /// Labels `key=value`; repeat or comma-separate.
        #[arg(long = "label", value_delimiter = ',')]
        labels: Vec<String>,
        /// GPUs it should have.
        #[arg(long, default_value_t = 0)]
        gpus: i64,
    },
    /// List servers.
    List {
        /// How many (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Issue a new join token for a server (id or name).
    Token {
        /// Server id or name.
        server: String,
    },
}

fn source(raw: &str) -> anyhow::Result<ModelSource> {
    let (kind, rest) = raw
        .split_once(':')
        .context("--source is kind:value (local:, hf:, modelscope:, url:)")?;
    Ok(match kind {
        "local" => ModelSource::Local {
            path: rest.to_owned(),
        },
        "hf" | "huggingface" => ModelSource::HuggingFace {
            repo: rest.to_owned(),
        },
        "modelscope" => ModelSource::ModelScope {
            repo: rest.to_owned(),
        },
        "url" => {
            let (url, sha256) = rest
                .rsplit_once('#')
                .context("a url: source ends with #<sha256>")?;
            ModelSource::Url {
                url: url.to_owned(),
                sha256: sha256.to_owned(),
            }
        }
        other => anyhow::bail!("unknown source kind `{other}` (local, hf, modelscope, url)"),
    })
}

pub async fn brand(platform: &Platform, command: BrandCommand) -> anyhow::Result<()> {
    let registry = platform.compute()?.registry;
    match command {
        BrandCommand::Add { name, description } => {
            let brand = registry
                .create_brand(&Actor::System, BrandDraft { name, description })
                .await?;
            println!("registered brand `{}` ({})", brand.name(), brand.id());
        }
        BrandCommand::List => {
            println!("{:<36}  {:<5}  name", "id", "order");
            for brand in registry.brands().await? {
                println!(
                    "{:<36}  {:<5}  {}",
                    brand.id(),
                    brand.sort_order(),
                    brand.name()
                );
            }
        }
    }
    Ok(())
}

pub async fn model(platform: &Platform, command: ModelCommand) -> anyhow::Result<()> {
    let registry = platform.compute()?.registry;
    match command {
        ModelCommand::Add {
            name,
            family,
            context_length,
            capabilities,
            parameters_b,
            quantization,
            source: raw,
            engine,
            licence,
        } => {
            let capabilities = capabilities
                .iter()
                .map(|c| {
                    Capability::from_name(c.trim())
                        .with_context(|| format!("unknown capability `{c}`"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let default_engine =
                Engine::from_name(&engine).with_context(|| format!("unknown engine `{engine}`"))?;
            let draft = ModelDraft {
                name,
                family,
                parameters_b,
                context_length,
                capabilities,
                quantization,
                source: source(&raw)?,
                default_engine,
                licence,
            };
            let model = registry.create_model(&Actor::System, draft).await?;
            println!(
                "registered model `{}` ({})",
                model.spec().name(),
                model.id()
            );
        }
        ModelCommand::List { limit } => {
            let page = registry
                .models(&PageRequest::parse(Some(limit), None)?)
                .await?;
            println!("{:<36}  {:<32}  {:<9}  context", "id", "name", "engine");
            for m in page.items {
                println!(
                    "{:<36}  {:<32}  {:<9}  {}",
                    m.id(),
                    m.spec().name(),
                    m.spec().default_engine().as_str(),
                    m.spec().context_length()
                );
            }
        }
    }
    Ok(())
}

pub async fn server(platform: &Platform, command: ServerCommand) -> anyhow::Result<()> {
    let servers = platform.compute()?.servers;
    match command {
        ServerCommand::Add {
            name,
            address,
            labels,
            gpus,
        } => {
            let labels = labels
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("label `{l}` is not key=value"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let draft = ServerDraft {
                name,
                address,
                labels,
                expected_gpus: gpus,
                ..ServerDraft::default()
            };
            let (view, token) = servers.create(&Actor::System, draft).await?;
            println!(
                "registered server `{}` ({})",
                view.server.spec().name(),
                view.server.id()
            );
            println!(
                "join token (shown once, valid until {}): {}",
                token.expires_at, token.token
            );
        }
        ServerCommand::List { limit } => {
            let page = servers
                .list(&Actor::System, &PageRequest::parse(Some(limit), None)?)
                .await?;
            println!("{:<36}  {:<20}  {:<9}  address", "id", "name", "status");
            for v in page.items {
                println!(
                    "{:<36}  {:<20}  {:<9}  {}",
                    v.server.id(),
                    v.server.spec().name(),
                    v.grade.status.as_str(),
                    v.server.spec().address()
                );
            }
        }
        ServerCommand::Token { server } => {
            let id = resolve(&servers, &server).await?;
            let token = servers.issue_join_token(&Actor::System, id).await?;
            println!(
                "join token (shown once, valid until {}): {}",
                token.expires_at, token.token
            );
        }
    }
    Ok(())
}

/// A server by id or name.
async fn resolve(
    servers: &maas_model::app::servers::ServerService,
    key: &str,
) -> anyhow::Result<maas_model::domain::server::ServerId> {
    if let Ok(id) = key.parse() {
        return Ok(id);
    }
    let mut page = PageRequest::parse(Some(200), None)?;
    loop {
        let found = servers.list(&Actor::System, &page).await?;
        if let Some(v) = found.items.iter().find(|v| v.server.spec().name() == key) {
            return Ok(v.server.id());
        }
        let Some(next) = found.next else {
            anyhow::bail!("no server `{key}`");
        };
        page = PageRequest::parse(Some(200), Some(&next.encode()))?;
    }
}
