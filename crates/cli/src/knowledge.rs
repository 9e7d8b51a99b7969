//! `maas kb ...`: knowledge bases (the worker ingests what is uploaded).

use anyhow::Context as _;
use clap::Subcommand;
use maas_knowledge::app::knowledge::{BaseDraft, KnowledgeService, SearchDraft, Upload};
use maas_knowledge::domain::base::{BaseId, ChunkingDraft, RetrievalDraft};
use maas_platform::Platform;
use maas_shared::paging::PageRequest;
use maas_user::contract::{Actor, UserId};

/// `maas kb ...`
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Create a knowledge base for a user.
    Create {
        /// Name (unique per owner).
        name: String,
        /// The owner's login name or id.
        #[arg(long)]
        owner: String,
        /// An embedding model the platform serves the owner.
        #[arg(long)]
        model: String,
        /// `auto` (800/400 tokens), `paragraph` (500/50) or `custom`.
        #[arg(long, default_value = "auto")]
        chunking: String,
        /// Custom chunk size, tokens.
        #[arg(long)]
        chunk_size: Option<i64>,
        /// Custom overlap, tokens.
        #[arg(long)]
        chunk_overlap: Option<i64>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// A user's knowledge bases.
    List {
        /// The owner's login name or id.
        #[arg(long)]
        owner: String,
    },
    /// Upload files into a base (queued for the worker).
    Upload {
        /// Base id.
        base: BaseId,
        /// Files (their type from the extension, checked against the bytes).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Search a base (the query is embedded as the base's owner).
    Search {
        /// Base id.
        base: BaseId,
        /// The query.
        query: String,
        /// `vector`, `fulltext` or `hybrid` (default: the base's).
        #[arg(long)]
        mode: Option<String>,
        /// Hits.
        #[arg(long)]
        top_k: Option<i64>,
    },
    /// Rebuild a base's vector index from PostgreSQL.
    Reindex {
        /// Base id.
        base: BaseId,
    },
}

async fn owner(platform: &Platform, key: &str) -> anyhow::Result<UserId> {
    let identity = platform.identity()?;
    Ok(identity.accounts.resolve(Actor::System, key).await?.id())
}

fn service(platform: &Platform) -> anyhow::Result<KnowledgeService> {
    let identity = platform.identity()?;
    let compute = platform.compute()?;
    let quota: std::sync::Arc<dyn maas_user::contract::QuotaGate> =
        std::sync::Arc::new(identity.quotas.clone());
    let gateway = platform.gateway(quota, Some(std::sync::Arc::new(compute.directory.clone())))?;
    Ok(platform.knowledge(&identity, &gateway)?.service)
}

pub async fn kb(platform: &Platform, command: KbCommand) -> anyhow::Result<()> {
    let kb = service(platform)?;
    let system = Actor::System;
    match command {
        KbCommand::Create {
            name,
            owner: who,
            model,
            chunking,
            chunk_size,
            chunk_overlap,
            description,
        } => {
            let owner = owner(platform, &who).await?;
            let base = kb
                .create(
                    &system,
                    Some(owner),
                    &BaseDraft {
                        name,
                        description,
                        embedding_model: model,
                        chunking: ChunkingDraft {
                            strategy: Some(chunking),
                            size: chunk_size,
                            overlap: chunk_overlap,
                            separators: None,
                        },
                        retrieval: RetrievalDraft::default(),
                    },
                )
                .await?;
            println!("created knowledge base `{}` ({})", base.name, base.id);
        }
        KbCommand::List { owner: who } => {
            let owner = owner(platform, &who).await?;
            let mut page = PageRequest::parse(Some(200), None)?;
            println!("{:<36}  {:<24}  model", "id", "name");
            loop {
                let found = kb.list(&system, Some(owner), &page).await?;
                for b in &found.items {
                    println!("{:<36}  {:<24}  {}", b.id, b.name, b.embedding.model);
                }
                let Some(next) = found.next else { break };
                page = PageRequest::parse(Some(200), Some(&next.encode()))?;
            }
        }
        KbCommand::Upload { base, files } => {
            for path in files {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (doc, duplicate) = kb
                    .upload(
                        &system,
                        base,
                        Upload {
                            file_name,
                            media_type: None,
                            bytes,
                            metadata: None,
                        },
                    )
                    .await
                    .with_context(|| format!("uploading {}", path.display()))?;
                let note = if duplicate { " (already there)" } else { "" };
                println!(
                    "{}  {}  {}{note}",
                    doc.id,
                    doc.status.as_str(),
                    doc.file_name
                );
            }
        }
        KbCommand::Search {
            base,
            query,
            mode,
            top_k,
        } => {
            let hits = kb
                .search(
                    &system,
                    base,
                    &SearchDraft {
                        query,
                        retrieval: RetrievalDraft {
                            mode,
                            top_k,
                            ..RetrievalDraft::default()
                        },
                        filter: None,
                    },
                )
                .await?;
            for h in hits {
                let quote: String = h.chunk.content.chars().take(160).collect();
                println!(
                    "{:.3}  {}#{}  {}",
                    h.score,
                    h.chunk.file_name,
                    h.chunk.position,
                    quote.replace('\n', " ")
                );
            }
        }
        KbCommand::Reindex { base } => {
            let points = kb.reindex(&system, base).await?;
            println!("reindexed {base}: {points} points");
        }
    }
    Ok(())
}
