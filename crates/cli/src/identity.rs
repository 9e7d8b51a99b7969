//! `maas seed`, `maas user`, `maas key`, `maas quota`: the identity use cases, run as the system.

use std::io::Read as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use maas_platform::Platform;
use maas_shared::paging::PageRequest;
use maas_user::app::Actor;
use maas_user::app::accounts::{Bootstrap, NewAccount};
use maas_user::app::keys::NewKey;
use maas_user::domain::api_key::{ApiKeyId, KeyLimits};
use maas_user::domain::limits::QuotaPolicy;
use maas_user::infra::Identity;

/// `maas user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from stdin with --password-stdin, else generated
    /// and printed once.
    Create {
        /// Login name.
        username: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Roles (admin, developer, user); repeat or comma-separate. Default: user.
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// How many (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Disable a user (sessions end, keys stop working).
    Disable {
        /// User id or login name.
        user: String,
    },
    /// Enable a disabled user.
    Enable {
        /// User id or login name.
        user: String,
    },
    /// Replace a user's roles.
    SetRole {
        /// User id or login name.
        user: String,
        /// New roles (admin, developer, user).
        #[arg(required = true, value_delimiter = ',')]
        roles: Vec<String>,
    },
}

/// `maas key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a user and print its secret once.
    Create {
        /// Owner: user id or login name.
        #[arg(long)]
        user: String,
        /// Label.
        #[arg(long)]
        name: String,
        /// Scopes (inference, knowledge, finetune, apps, manage); default inference.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Models the key may call; default all.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Requests per minute through this key.
        #[arg(long)]
        requests_per_minute: Option<u64>,
        /// Tokens per minute through this key.
        #[arg(long)]
        tokens_per_minute: Option<u64>,
        /// Days until the key expires.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// `maas quota ...`
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Replace the limits and quotas of a user (or of one of its keys with --key).
    Set(QuotaSet),
}

/// Limits to set; unset rate limits fall back to the defaults, unset quotas are unlimited.
#[derive(Debug, Args)]
pub struct QuotaSet {
    /// User id or login name.
    user: String,
    /// Set the policy of this key of the user instead.
    #[arg(long)]
    key: Option<uuid::Uuid>,
    #[arg(long)]
    requests_per_minute: Option<u64>,
    #[arg(long)]
    tokens_per_minute: Option<u64>,
    #[arg(long)]
    requests_per_hour: Option<u64>,
    #[arg(long)]
    requests_per_day: Option<u64>,
    #[arg(long)]
    tokens_per_day_quota: Option<u64>,
    #[arg(long)]
    tokens_per_month_quota: Option<u64>,
    #[arg(long)]
    tokens_total_quota: Option<u64>,
    #[arg(long)]
    requests_per_month_quota: Option<u64>,
    #[arg(long)]
    requests_total_quota: Option<u64>,
}

fn build(platform: &Platform) -> anyhow::Result<Identity> {
    platform.identity()
}

/// `maas seed`
pub async fn seed(
    platform: &Platform,
    username: &str,
    password: Option<String>,
) -> anyhow::Result<()> {
    let identity = build(platform)?;
    match identity
        .accounts
        .bootstrap_admin(username, password)
        .await?
    {
        Bootstrap::AlreadyPresent(user) => println!(
            "admin `{}` already present ({}); nothing to do",
            user.username(),
            user.id()
        ),
        Bootstrap::Created(user) => println!(
            "created admin `{}` ({}) with the given password",
            user.username(),
            user.id()
        ),
        Bootstrap::CreatedWithPassword(user, password) => {
            println!("created admin `{}` ({})", user.username(), user.id());
            println!("generated password (shown once, store it now): {password}");
        }
    }
    Ok(())
}

/// `maas user ...`
pub async fn user(platform: &Platform, command: UserCommand) -> anyhow::Result<()> {
    let identity = build(platform)?;
    let accounts = &identity.accounts;
    match command {
        UserCommand::Create {
            username,
            email,
            roles,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the password from stdin")?;
                (text.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (accounts.generate_password(), true)
            };
            let user = accounts
                .create(
                    Actor::System,
                    NewAccount {
                        username,
                        email,
                        password: password.clone(),
                        roles,
                    },
                )
                .await?;
            println!("created user `{}` ({})", user.username(), user.id());
            if generated {
                println!("generated password (shown once, store it now): {password}");
            }
        }
        UserCommand::List { limit } => {
            let page = accounts
                .list(Actor::System, &PageRequest::parse(Some(limit), None)?)
                .await?;
            println!("{:<36}  {:<20}  {:<9}  roles", "id", "username", "status");
            for user in page.items {
                let roles: Vec<&str> = user.roles().iter().map(|r| r.as_str()).collect();
                println!(
                    "{:<36}  {:<20}  {:<9}  {}",
                    user.id(),
                    user.username(),
                    user.status().as_str(),
                    roles.join(",")
                );
            }
        }
        UserCommand::Disable { user } => {
            let found = accounts.resolve(Actor::System, &user).await?;
            accounts
                .set_enabled(Actor::System, found.id(), false)
                .await?;
            println!("disabled `{}`", found.username());
        }
        UserCommand::Enable { user } => {
            let found = accounts.resolve(Actor::System, &user).await?;
            accounts
                .set_enabled(Actor::System, found.id(), true)
                .await?;
            println!("enabled `{}`", found.username());
        }
        UserCommand::SetRole { user, roles } => {
            let found = accounts.resolve(Actor::System, &user).await?;
            let updated = accounts
                .set_roles(Actor::System, found.id(), &roles)
                .await?;
            let names: Vec<&str> = updated.roles().iter().map(|r| r.as_str()).collect();
            println!("`{}` now has roles {}", updated.username(), names.join(","));
        }
    }
    Ok(())
}

/// `maas key ...`
pub async fn key(platform: &Platform, command: KeyCommand) -> anyhow::Result<()> {
    let identity = build(platform)?;
    let KeyCommand::Create {
        user,
        name,
        scopes,
        models,
        requests_per_minute,
        tokens_per_minute,
        expires_in_days,
    } = command;
    let owner = identity.accounts.resolve(Actor::System, &user).await?;
    let expires_at =
        expires_in_days.map(|d| platform.clock().now() + chrono::Duration::days(i64::from(d)));
    let request = NewKey {
        name,
        scopes,
        allowed_models: models,
        limits: KeyLimits {
            requests_per_minute,
            tokens_per_minute,
        },
        expires_at,
        app: None,
    };
    let issued = identity
        .keys
        .create(Actor::System, owner.id(), request)
        .await?;
    println!(
        "created key {} ({}) for `{}`",
        issued.key.id(),
        issued.key.prefix(),
        owner.username()
    );
    println!("secret (shown once, store it now): {}", issued.secret);
    Ok(())
}

/// `maas quota ...`
pub async fn quota(platform: &Platform, command: QuotaCommand) -> anyhow::Result<()> {
    let identity = build(platform)?;
    let QuotaCommand::Set(q) = command;
    let owner = identity.accounts.resolve(Actor::System, &q.user).await?;
    let policy = QuotaPolicy {
        requests_per_minute: q.requests_per_minute,
        tokens_per_minute: q.tokens_per_minute,
        requests_per_hour: q.requests_per_hour,
        requests_per_day: q.requests_per_day,
        tokens_per_day_quota: q.tokens_per_day_quota,
        tokens_per_month_quota: q.tokens_per_month_quota,
        tokens_total_quota: q.tokens_total_quota,
        requests_per_month_quota: q.requests_per_month_quota,
        requests_total_quota: q.requests_total_quota,
    };
    match q.key {
        Some(key) => {
            identity
                .quotas
                .set_key_policy(Actor::System, owner.id(), ApiKeyId::from_uuid(key), policy)
                .await?
        }
        None => {
            identity
                .quotas
                .set_user_policy(Actor::System, owner.id(), policy)
                .await?
        }
    }
    println!(
        "policy set for `{}`{}",
        owner.username(),
        q.key.map(|k| format!(" key {k}")).unwrap_or_default()
    );
    Ok(())
}
