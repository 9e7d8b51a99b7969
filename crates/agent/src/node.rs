//! Joining the platform, the kept credential, heartbeats and reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Args;
use crate::resources::Sampler;

/// What the agent keeps in its data directory.
#[derive(Clone, Deserialize, Serialize)]
struct Identity {
    server_id: Uuid,
    node_credential: String,
    /// The platform it joined (a credential is only sent there).
    platform: String,
    /// What the platform presents when it calls this agent (logs); made by the agent, given
    /// to the platform with its instance reports.
    #[serde(default)]
    agent_secret: Option<String>,
}

/// A random secret: 64 hex digits (256 bits).
fn new_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
struct Joined {
    server_id: Uuid,
    node_credential: String,
    heartbeat_interval_secs: u64,
    report_interval_secs: u64,
}

#[derive(Deserialize)]
struct Beat {
    heartbeat_interval_secs: u64,
    report_interval_secs: u64,
}

/// A joined agent.
pub struct Agent {
    http: reqwest::Client,
    base: String,
    identity: Identity,
    token: Option<String>,
    data_dir: PathBuf,
    advertise: String,
    hostname: String,
    heartbeat: Duration,
    report: Duration,
    sampler: Sampler,
}

fn identity_path(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

/// Writes the identity with mode 0600, atomically (a crash leaves the old file or the new one).
fn save(dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(".node.json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("writing {}", partial.display()))?;
    file.write_all(&serde_json::to_vec(identity)?)?;
    file.sync_all()?;
    std::fs::rename(&partial, identity_path(dir)).context("storing the node identity")
}

fn load(dir: &Path) -> anyhow::Result<Option<Identity>> {
    match std::fs::read(identity_path(dir)) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).context("reading node.json")?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).context("reading node.json"),
    }
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v.clamp(1, 3600))
}

impl Agent {
    /// Joins (or resumes as the node it already is).
    ///
    /// # Errors
    /// When the agent has no identity and cannot join.
    pub async fn start(args: &Args, advertise: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = args.server.as_str().trim_end_matches('/').to_owned();
        let hostname = sysinfo::System::host_name().unwrap_or_else(|| "unknown".into());
        let mut agent = Self {
            http,
            base: base.clone(),
            identity: Identity {
                server_id: Uuid::nil(),
                node_credential: String::new(),
                platform: base.clone(),
                agent_secret: None,
            },
            token: args.token.clone(),
            data_dir: args.data_dir.clone(),
            advertise,
            hostname,
            heartbeat: Duration::from_secs(10),
            report: Duration::from_secs(30),
            sampler: Sampler::new(),
        };
        match load(&args.data_dir)? {
            Some(identity) if identity.platform == base => {
                tracing::info!(server.id = %identity.server_id, "resuming as the node this agent joined as");
                agent.identity = identity;
            }
            Some(_) => anyhow::bail!(
                "{} holds the identity of a node of another platform; remove it to join {base}",
                identity_path(&args.data_dir).display()
            ),
            None => agent.join().await?,
        }
        if agent.identity.agent_secret.is_none() {
            agent.identity.agent_secret = Some(new_secret());
            save(&agent.data_dir, &agent.identity)?;
        }
        Ok(agent)
    }

    async fn join(&mut self) -> anyhow::Result<()> {
        let token = self
            .token
            .clone()
            .context("this agent has not joined yet: pass --token with the server's join token")?;
        let response = self
            .http
            .post(format!("{}/api/v1/agents/join", self.base))
            .json(&serde_json::json!({
                "join_token": token,
                "hostname": self.hostname,
                "agent_version": env!("CARGO_PKG_VERSION"),
                "agent_url": self.advertise,
            }))
            .send()
            .await
            .context("calling the platform to join")?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            anyhow::bail!(
                "the platform refused to join this agent (HTTP {status}, {})",
                body["code"].as_str().unwrap_or("no code")
            );
        }
        let joined: Joined = response.json().await.context("reading the join answer")?;
        self.identity = Identity {
            server_id: joined.server_id,
            node_credential: joined.node_credential,
            platform: self.base.clone(),
            agent_secret: Some(new_secret()),
        };
        save(&self.data_dir, &self.identity)?;
        self.heartbeat = secs(joined.heartbeat_interval_secs);
        self.report = secs(joined.report_interval_secs);
        // A join token works once: it is not kept.
        self.token = None;
        tracing::info!(server.id = %joined.server_id, "joined the platform");
        Ok(())
    }

    /// A client for the instance calls (shares the identity).
    #[must_use]
    pub fn platform(&self) -> PlatformClient {
        PlatformClient {
            http: self.http.clone(),
            base: self.base.clone(),
            server_id: self.identity.server_id,
            credential: self.identity.node_credential.clone(),
        }
    }

    /// The secret the platform presents when it calls this agent.
    #[must_use]
    pub fn agent_secret(&self) -> String {
        self.identity.agent_secret.clone().unwrap_or_default()
    }

    /// Heartbeats and reports until the process stops.
    ///
    /// # Errors
    /// Never returns while it can retry; only an unusable identity stops it.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        let mut next_report = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let outcome = if now >= next_report {
                next_report = now + self.report;
                self.send_report().await
            } else {
                self.send_heartbeat().await
            };
            match outcome {
                Ok(beat) => {
                    self.heartbeat = secs(beat.heartbeat_interval_secs);
                    self.report = secs(beat.report_interval_secs);
                }
                Err(Failure::Refused) => tracing::error!(
                    server.id = %self.identity.server_id,
                    "the platform refuses this node's credential (server deleted, or joined again elsewhere); retrying"
                ),
                Err(Failure::Other(err)) => tracing::warn!(
                    error = format!("{err:#}"),
                    "could not reach the platform; retrying"
                ),
            }
            tokio::time::sleep(
                self.heartbeat.min(
                    next_report
                        .saturating_duration_since(tokio::time::Instant::now())
                        .max(Duration::from_millis(100)),
                ),
            )
            .await;
        }
    }

    async fn send_heartbeat(&self) -> Result<Beat, Failure> {
        let request = self.http.post(format!(
            "{}/api/v1/nodes/{}/heartbeat",
            self.base, self.identity.server_id
        ));
        self.call(request).await
    }

    async fn send_report(&mut self) -> Result<Beat, Failure> {
        let resources = self.sampler.sample().await;
        let request = self
            .http
            .put(format!(
                "{}/api/v1/nodes/{}/report",
                self.base, self.identity.server_id
            ))
            .json(&serde_json::json!({
                "hostname": self.hostname,
                "agent_version": env!("CARGO_PKG_VERSION"),
                "agent_url": self.advertise,
                "resources": resources,
            }));
        self.call(request).await
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Beat, Failure> {
        let response = request
            .bearer_auth(&self.identity.node_credential)
            .send()
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        match response.status().as_u16() {
            200 => response.json().await.map_err(|e| Failure::Other(e.into())),
            401 | 404 => Err(Failure::Refused),
            status => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Err(Failure::Other(anyhow::anyhow!(
                    "HTTP {status} ({})",
                    body["code"].as_str().unwrap_or("no code")
                )))
            }
        }
    }
}

enum Failure {
    Refused,
    Other(anyhow::Error),
}

/// The node's calls about its instances.
#[derive(Clone)]
pub struct PlatformClient {
    http: reqwest::Client,
    base: String,
    server_id: Uuid,
    credential: String,
}

#[derive(Deserialize)]
struct AssignmentsAnswer {
    version: String,
    instances: Vec<maas_model::contract::Assignment>,
}

impl PlatformClient {
    /// What this node should run: at once when it differs from `version`, else when it
    /// changes or after `wait`.
    ///
    /// # Errors
    /// When the platform cannot be reached or refuses the credential.
    pub async fn assignments(
        &self,
        version: Option<&str>,
        wait: Duration,
    ) -> anyhow::Result<(String, Vec<maas_model::contract::Assignment>)> {
        let mut request = self
            .http
            .get(format!(
                "{}/api/v1/nodes/{}/assignments",
                self.base, self.server_id
            ))
            .query(&[("wait_secs", wait.as_secs().to_string())])
            .timeout(wait + Duration::from_secs(15))
            .bearer_auth(&self.credential);
        if let Some(version) = version {
            request = request.query(&[("version", version)]);
        }
        let response = request.send().await.context("asking for assignments")?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "the platform answered HTTP {status} to the assignments request"
        );
        let answer: AssignmentsAnswer = response.json().await.context("reading assignments")?;
        Ok((answer.version, answer.instances))
    }

    /// Reports every instance (with the agent's secret when given).
    ///
    /// # Errors
    /// When the platform cannot be reached or refuses the report.
    pub async fn report(
        &self,
        instances: &[maas_model::contract::InstanceReport],
        agent_secret: Option<&str>,
    ) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!(
                "{}/api/v1/nodes/{}/instances",
                self.base, self.server_id
            ))
            .bearer_auth(&self.credential)
            .json(&serde_json::json!({"instances": instances, "agent_secret": agent_secret}))
            .send()
            .await
            .context("reporting instances")?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            anyhow::bail!(
                "the platform refused the instance report (HTTP {status}, {})",
                body["code"].as_str().unwrap_or("no code")
            );
        }
        Ok(())
    }
}
