//! `maas brand`, `maas model`, `maas server`: the registry and compute use cases, run as the
//! system.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Subcommand;
use maas_model::domain::deployment::{DeploymentDraft, Placement};
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
    /// Set a server's SSH access. The password comes from `MAAS_SSH_PASSWORD` or the key
    /// from a file, never from the command line (which other users can read).
    SshSet {
        /// Server id or name.
        server: String,
        /// Login user.
        #[arg(long)]
        user: String,
        /// sshd's port.
        #[arg(long, default_value_t = 22)]
        port: i64,
        /// A private key file (else the password in `MAAS_SSH_PASSWORD`).
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// Check servers' TCP + SSH reachability and agent heartbeat (one server, or all).
    SshCheck {
        /// Server id or name (all servers when absent).
        server: Option<String>,
    },
    /// Pin the host key a server presents now (after checking why it changed).
    SshRepin {
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
    let compute = platform.compute()?;
    let servers = compute.servers;
    let ssh = compute.ssh;
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
        ServerCommand::SshSet {
            server,
            user,
            port,
            key_file,
        } => {
            let id = resolve(&servers, &server).await?;
            let (password, private_key) = match key_file {
                Some(path) => (
                    None,
                    Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    ),
                ),
                None => (
                    Some(std::env::var("MAAS_SSH_PASSWORD").context(
                        "set MAAS_SSH_PASSWORD (or pass --key-file): passwords are not taken from the command line",
                    )?),
                    None,
                ),
            };
            let draft = maas_model::domain::ssh::SshAccessDraft {
                port: Some(port),
                username: user,
                password,
                private_key,
                passphrase: std::env::var("MAAS_SSH_PASSPHRASE").ok(),
            };
            let view = ssh.set_access(&Actor::System, id, &draft).await?;
            println!(
                "SSH access set: {}@{}:{} ({})",
                view.username, server, view.port, view.auth
            );
        }
        ServerCommand::SshCheck { server } => {
            let checks = match server {
                Some(server) => {
                    let id = resolve(&servers, &server).await?;
                    vec![ssh.check(&Actor::System, id).await?]
                }
                None => ssh.check_all(&Actor::System).await?,
            };
            println!(
                "{:<36}  {:<8}  {:>8}  probes",
                "server", "status", "latency"
            );
            for c in &checks {
                let probe = |name: &str, p: Option<&maas_model::domain::ssh::Probe>| match p {
                    None => String::new(),
                    Some(p) if p.ok => format!("{name}=ok "),
                    Some(p) => format!(
                        "{name}={} ",
                        p.error.as_ref().map_or("failed", |e| e.code.as_str())
                    ),
                };
                println!(
                    "{:<36}  {:<8}  {:>8}  {}{}{}",
                    c.server_id,
                    c.status.as_str(),
                    c.latency_ms
                        .map_or_else(|| "-".to_owned(), |l| format!("{l} ms")),
                    probe("tcp", Some(&c.detail.tcp)),
                    probe("ssh", c.detail.ssh.as_ref()),
                    probe("agent", c.detail.agent.as_ref()),
                );
            }
            if checks
                .iter()
                .any(|c| c.status != maas_model::domain::ssh::CheckStatus::Online)
            {
                anyhow::bail!("not every server is online");
            }
        }
        ServerCommand::SshRepin { server } => {
            let id = resolve(&servers, &server).await?;
            let view = ssh.repin(&Actor::System, id).await?;
            if let Some(key) = view.host_key {
                println!("pinned {} {}", key.algorithm, key.fingerprint);
            }
        }
    }
    Ok(())
}

/// A server by id or name.
pub(crate) async fn resolve(
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

/// `maas deploy create`.
#[derive(Debug, clap::Args)]
pub struct CreateDeployment {
    /// Unique name (also the served name when no --served-name is given).
    name: String,
    /// The model (id or name).
    #[arg(long)]
    model: String,
    /// Engine (builtin, llama.cpp, vllm, sglang, custom); default: the model's.
    #[arg(long)]
    engine: Option<String>,
    /// The command of a `custom` engine.
    #[arg(long)]
    command: Option<String>,
    /// One engine argument (one argv item each; repeat).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Environment `NAME=value` (repeat).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Replicas.
    #[arg(long, default_value_t = 1)]
    replicas: i64,
    /// GPUs per replica (0 for CPU engines).
    #[arg(long, default_value_t = 0)]
    gpus: i64,
    /// CPU cores per replica.
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory per replica, MiB.
    #[arg(long)]
    memory_mib: Option<i64>,
    /// Allowed servers (id or name; repeat or comma-separate; none: every server).
    #[arg(long = "server", value_delimiter = ',')]
    servers: Vec<String>,
    /// Labels a server must carry `key=value` (repeat or comma-separate).
    #[arg(long = "label", value_delimiter = ',')]
    labels: Vec<String>,
    /// Names callers send in `model` (repeat; default: the name).
    #[arg(long = "served-name")]
    served_names: Vec<String>,
}

/// `maas deploy ...`
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Deploy a registered model onto the servers (the deploy job places and starts it).
    Create(Box<CreateDeployment>),
    /// List deployments.
    List {
        /// How many (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a deployment's instances.
    Show {
        /// Deployment id or name.
        deployment: String,
    },
    /// Start a stopped deployment.
    Start {
        /// Deployment id or name.
        deployment: String,
    },
    /// Stop every instance (the deployment stays, callers get 503).
    Stop {
        /// Deployment id or name.
        deployment: String,
    },
    /// Restart every instance (a new generation).
    Restart {
        /// Deployment id or name.
        deployment: String,
    },
    /// Stop and delete a deployment.
    Delete {
        /// Deployment id or name.
        deployment: String,
    },
    /// The deploy log, oldest first.
    Events {
        /// Deployment id or name.
        deployment: String,
        /// How many (1-200).
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// An instance's engine log, read from its agent.
    Logs {
        /// Deployment id or name.
        deployment: String,
        /// Which replica (0-based).
        #[arg(long, default_value_t = 0)]
        replica: i32,
        /// The last N lines.
        #[arg(long, default_value_t = 200)]
        tail: u32,
        /// Keep printing new lines.
        #[arg(long)]
        follow: bool,
    },
}

fn pairs(raw: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{what} `{l}` is not key=value"))
        })
        .collect()
}

pub async fn deploy(platform: &Platform, command: DeployCommand) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    use std::io::Write as _;

    let compute = platform.compute()?;
    let deployments = &compute.deployments;
    let actor = Actor::System;
    match command {
        DeployCommand::Create(create) => {
            let CreateDeployment {
                name,
                model,
                engine,
                command,
                args,
                env,
                replicas,
                gpus,
                cpu,
                memory_mib,
                servers,
                labels,
                served_names,
            } = *create;
            let model_id = resolve_model(&compute.registry, &model).await?;
            let mut allowed = Vec::with_capacity(servers.len());
            for s in servers.iter().filter(|s| !s.is_empty()) {
                allowed.push(resolve(&compute.servers, s).await?);
            }
            let draft = DeploymentDraft {
                name,
                model_id,
                engine,
                command,
                args,
                env: pairs(&env, "environment")?,
                replicas,
                gpus_per_replica: gpus,
                cpu_cores: cpu,
                memory_mib,
                placement: Placement {
                    servers: allowed,
                    labels: pairs(&labels, "label")?,
                },
                served_names,
            };
            let d = deployments.create(&actor, draft).await?;
            println!(
                "deployment `{}` ({}) is {}; follow it with `maas deploy events {}`",
                d.spec().name(),
                d.id(),
                d.state().as_str(),
                d.spec().name()
            );
        }
        DeployCommand::List { limit } => {
            let page = deployments
                .list(&actor, &PageRequest::parse(Some(limit), None)?)
                .await?;
            println!(
                "{:<36}  {:<24}  {:<9}  {:<11}  replicas  served",
                "id", "name", "engine", "state"
            );
            for d in page.items {
                println!(
                    "{:<36}  {:<24}  {:<9}  {:<11}  {:<8}  {}",
                    d.id(),
                    d.spec().name(),
                    d.spec().engine().as_str(),
                    d.state().as_str(),
                    d.spec().replicas(),
                    d.spec().served_names().join(",")
                );
            }
        }
        DeployCommand::Show { deployment } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let d = deployments.get(&actor, id).await?;
            println!(
                "{} ({}): {} (desired {}), generation {}{}",
                d.spec().name(),
                d.id(),
                d.state().as_str(),
                d.desired().as_str(),
                d.generation(),
                d.reason().map(|r| format!(": {r}")).unwrap_or_default()
            );
            println!(
                "{:<7}  {:<36}  {:<36}  {:<11}  {:<5}  restarts  message",
                "replica", "instance", "server", "state", "port"
            );
            for i in deployments.instances(&actor, id).await? {
                println!(
                    "{:<7}  {:<36}  {:<36}  {:<11}  {:<5}  {:<8}  {}",
                    i.replica,
                    i.id,
                    i.server_id,
                    i.state.as_str(),
                    i.port.map(|p| p.to_string()).unwrap_or_default(),
                    i.restarts,
                    i.message.as_deref().unwrap_or("")
                );
            }
        }
        DeployCommand::Start { deployment } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let d = deployments.start(&actor, id).await?;
            println!("`{}` is {}", d.spec().name(), d.state().as_str());
        }
        DeployCommand::Stop { deployment } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let d = deployments.stop(&actor, id).await?;
            println!("`{}` is {}", d.spec().name(), d.state().as_str());
        }
        DeployCommand::Restart { deployment } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let d = deployments.restart(&actor, id).await?;
            println!(
                "`{}` is {} (generation {})",
                d.spec().name(),
                d.state().as_str(),
                d.generation()
            );
        }
        DeployCommand::Delete { deployment } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            deployments.delete(&actor, id).await?;
            println!("deleting `{deployment}`: its instances stop, then it is removed");
        }
        DeployCommand::Events { deployment, limit } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let mut page = PageRequest::parse(Some(limit), None)?;
            loop {
                let found = deployments.events(&actor, id, &page).await?;
                for e in &found.items {
                    println!(
                        "{}  {:<12}  {}",
                        e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        e.kind,
                        e.message
                    );
                }
                let Some(next) = found.next else { break };
                page = PageRequest::parse(Some(limit), Some(&next.encode()))?;
            }
        }
        DeployCommand::Logs {
            deployment,
            replica,
            tail,
            follow,
        } => {
            let id = resolve_deployment(deployments, &deployment).await?;
            let instance = deployments
                .instances(&actor, id)
                .await?
                .into_iter()
                .filter(|i| i.replica == replica)
                .max_by_key(|i| (i.desired_running, i.generation))
                .with_context(|| format!("`{deployment}` has no replica {replica}"))?;
            let mut stream = deployments
                .logs(&actor, id, instance.id, tail, follow)
                .await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

/// A model by id or name.
async fn resolve_model(
    registry: &maas_model::app::registry::RegistryService,
    key: &str,
) -> anyhow::Result<maas_model::domain::registry::ModelId> {
    if let Ok(id) = key.parse() {
        return Ok(id);
    }
    let mut page = PageRequest::parse(Some(200), None)?;
    loop {
        let found = registry.models(&page).await?;
        if let Some(m) = found.items.iter().find(|m| m.spec().name() == key) {
            return Ok(m.id());
        }
        let Some(next) = found.next else {
            anyhow::bail!("no model `{key}`");
        };
        page = PageRequest::parse(Some(200), Some(&next.encode()))?;
    }
}

/// A deployment by id or name.
async fn resolve_deployment(
    deployments: &maas_model::app::deployments::DeploymentService,
    key: &str,
) -> anyhow::Result<maas_model::domain::deployment::DeploymentId> {
    if let Ok(id) = key.parse() {
        return Ok(id);
    }
    let mut page = PageRequest::parse(Some(200), None)?;
    loop {
        let found = deployments.list(&Actor::System, &page).await?;
        if let Some(d) = found.items.iter().find(|d| d.spec().name() == key) {
            return Ok(d.id());
        }
        let Some(next) = found.next else {
            anyhow::bail!("no deployment `{key}`");
        };
        page = PageRequest::parse(Some(200), Some(&next.encode()))?;
    }
}
