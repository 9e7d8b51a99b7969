//! `maas app ...`: apps (a model, a prompt and knowledge published as an endpoint).

use anyhow::Context as _;
use clap::Subcommand;
use maas_apps::app::apps::{AppService, NewApp};
use maas_apps::domain::app::AppId;
use maas_apps::domain::config::{ConfigDraft, KnowledgeDraft};
use maas_platform::Platform;
use maas_shared::paging::PageRequest;
use maas_user::contract::{Actor, ApiKeyId, KeyLimits, UserId};

/// `maas app ...`
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app (a draft) for a user.
    Create {
        /// Name (unique per owner).
        name: String,
        /// The owner's login name or id.
        #[arg(long)]
        owner: String,
        /// A chat model served to the owner.
        #[arg(long)]
        model: String,
        /// The system prompt (`{{context}}` marks where retrieved passages go).
        #[arg(long, conflicts_with = "prompt_file")]
        prompt: Option<String>,
        /// Read the system prompt from a file.
        #[arg(long)]
        prompt_file: Option<std::path::PathBuf>,
        /// A knowledge base of the owner to retrieve from (repeat for more).
        #[arg(long = "base")]
        bases: Vec<uuid::Uuid>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// A user's apps.
    List {
        /// The owner's login name or id.
        #[arg(long)]
        owner: String,
    },
    /// Publish an app's draft as its next version.
    Publish {
        /// App id.
        app: AppId,
        /// What changed.
        #[arg(long)]
        note: Option<String>,
    },
    /// Publish an earlier version's configuration again.
    Rollback {
        /// App id.
        app: AppId,
        /// The version to restore.
        version: u32,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// An app's versions.
    Versions {
        /// App id.
        app: AppId,
    },
    /// An app's keys.
    #[command(subcommand)]
    Key(AppKeyCommand),
}

/// `maas app key ...`
#[derive(Debug, Subcommand)]
pub enum AppKeyCommand {
    /// Issue an app key (the secret is printed once).
    Create {
        /// App id.
        app: AppId,
        /// Label.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Requests per minute.
        #[arg(long)]
        requests_per_minute: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tokens_per_minute: Option<u64>,
    },
    /// An app's keys.
    List {
        /// App id.
        app: AppId,
    },
    /// Revoke an app key.
    Revoke {
        /// App id.
        app: AppId,
        /// Key id.
        key: ApiKeyId,
    },
}

async fn owner(platform: &Platform, key: &str) -> anyhow::Result<UserId> {
    let identity = platform.identity()?;
    Ok(identity.accounts.resolve(Actor::System, key).await?.id())
}

fn service(platform: &Platform) -> anyhow::Result<AppService> {
    let identity = platform.identity()?;
    let compute = platform.compute()?;
    let quota: std::sync::Arc<dyn maas_user::contract::QuotaGate> =
        std::sync::Arc::new(identity.quotas.clone());
    let gateway = platform.gateway(quota, Some(std::sync::Arc::new(compute.directory.clone())))?;
    let knowledge = platform.knowledge(&identity, &gateway)?;
    Ok(platform.apps(&identity, &gateway, &knowledge).apps)
}

pub async fn app(platform: &Platform, command: AppCommand) -> anyhow::Result<()> {
    let apps = service(platform)?;
    let system = Actor::System;
    match command {
        AppCommand::Create {
            name,
            owner: who,
            model,
            prompt,
            prompt_file,
            bases,
            description,
        } => {
            let owner = owner(platform, &who).await?;
            let prompt = match prompt_file {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => prompt,
            };
            let app = apps
                .create(
                    &system,
                    owner,
                    NewApp {
                        name,
                        description,
                        config: ConfigDraft {
                            model: Some(model),
                            system_prompt: prompt,
                            knowledge: (!bases.is_empty()).then(|| KnowledgeDraft {
                                bases: Some(bases),
                                ..KnowledgeDraft::default()
                            }),
                            ..ConfigDraft::default()
                        },
                    },
                )
                .await?;
            println!(
                "created app `{}` ({}), a draft: publish it with `maas app publish {}`",
                app.name, app.id, app.id
            );
        }
        AppCommand::List { owner: who } => {
            let owner = owner(platform, &who).await?;
            let mut page = PageRequest::first();
            loop {
                let list = apps.list(&system, owner, &page).await?;
                for a in &list.items {
                    let version = a
                        .published_version
                        .map_or_else(|| "-".to_owned(), |v| format!("v{v}"));
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        a.id,
                        a.status().as_str(),
                        version,
                        a.draft.model,
                        a.name
                    );
                }
                match list.next {
                    Some(next) => {
                        page = PageRequest::parse(Some(page.limit()), Some(&next.encode()))?
                    }
                    None => break,
                }
            }
        }
        AppCommand::Publish { app, note } => {
            let v = apps.publish(&system, app, note.as_deref()).await?;
            println!("published app {app} as version {}", v.number);
        }
        AppCommand::Rollback { app, version, note } => {
            let v = apps
                .rollback(&system, app, version, note.as_deref())
                .await?;
            println!(
                "app {app} serves version {} (the configuration of version {version})",
                v.number
            );
        }
        AppCommand::Versions { app } => {
            for v in apps.versions(&system, app).await? {
                let by = v
                    .published_by
                    .map_or_else(|| "cli".to_owned(), |u| u.to_string());
                let rollback = v
                    .rollback_of
                    .map_or_else(String::new, |r| format!(" (rollback of v{r})"));
                println!(
                    "v{}\t{}\t{}\t{}{}",
                    v.number,
                    v.published_at.to_rfc3339(),
                    by,
                    v.note.unwrap_or_default(),
                    rollback
                );
            }
        }
        AppCommand::Key(AppKeyCommand::Create {
            app,
            name,
            requests_per_minute,
            tokens_per_minute,
        }) => {
            let issued = apps
                .create_key(
                    &system,
                    app,
                    &name,
                    KeyLimits {
                        requests_per_minute,
                        tokens_per_minute,
                    },
                    None,
                )
                .await?;
            eprintln!(
                "app key {} ({}) created; the secret is shown once:",
                issued.key.id(),
                issued.key.prefix()
            );
            println!("{}", issued.secret);
        }
        AppCommand::Key(AppKeyCommand::List { app }) => {
            for k in apps.keys(&system, app).await? {
                let state = if k.revoked_at().is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let used = k
                    .last_used_at()
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{}\t{}\t{}\t{}\tlast used {}",
                    k.id(),
                    k.prefix(),
                    state,
                    k.name().as_str(),
                    used
                );
            }
        }
        AppCommand::Key(AppKeyCommand::Revoke { app, key }) => {
            let k = apps.revoke_key(&system, app, key).await?;
            println!("revoked app key {} ({})", k.id(), k.prefix());
        }
    }
    Ok(())
}
