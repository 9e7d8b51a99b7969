//! GPU servers, the node agent on each, and how the platform grades a silent node.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::errors::InvalidValue;
use super::registry::{BrandId, CardId};
use super::values::{collect, text};

maas_shared::define_id!(
    /// Identifies a server (and its node agent).
    ServerId
);

/// At most this many labels per server.
pub const MAX_LABELS: usize = 32;
/// At most this many GPUs per server.
pub const MAX_GPUS: i64 = 64;

/// What an admin gives for a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerDraft {
    /// Unique name.
    pub name: String,
    /// Host name or IP address the platform and operators reach it at.
    pub address: String,
    /// Placement labels (`zone=a`, `gpu=h100`).
    pub labels: BTreeMap<String, String>,
    /// Accelerator brand.
    pub brand_id: Option<BrandId>,
    /// Accelerator card.
    pub card_id: Option<CardId>,
    /// GPUs the server should have (its agent reports what it has).
    pub expected_gpus: i64,
}

/// A server's validated description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) brand_id: Option<BrandId>,
    pub(crate) card_id: Option<CardId>,
    pub(crate) expected_gpus: i32,
}

fn label_part(s: &str, max: usize, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty())
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

/// A host name (RFC 1123 labels) or an IP address, neither link-local nor cloud metadata.
///
/// # Errors
/// [`InvalidValue`] naming `field`.
pub fn host(raw: &str, field: &'static str) -> Result<String, InvalidValue> {
    let value = raw.trim().to_ascii_lowercase();
    let is_ip = value.parse::<std::net::IpAddr>().is_ok();
    let is_name = (1..=253).contains(&value.len())
        && value.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !is_ip && !is_name {
        return Err(InvalidValue::new(field, "a host name or an IP address"));
    }
    if maas_shared::net::is_forbidden_host(&value) {
        return Err(InvalidValue::new(
            field,
            "must not be a link-local or cloud-metadata address",
        ));
    }
    Ok(value)
}

impl ServerDraft {
    /// Validates every field.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self) -> Result<ServerSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let name = collect(
            super::values::token(
                &self.name,
                64,
                b"-_.",
                "name",
                "1 to 64 characters of letters, digits, '-', '_' or '.'",
            ),
            &mut errors,
        );
        let address = collect(host(&self.address, "address"), &mut errors);
        if self.labels.len() > MAX_LABELS {
            errors.push(InvalidValue::new("labels", "at most 32 labels"));
        }
        if !self
            .labels
            .iter()
            .all(|(k, v)| label_part(k, 63, false) && label_part(v, 63, true))
        {
            errors.push(InvalidValue::new(
                "labels",
                "keys of 1 to 63 and values of at most 63 characters of letters, digits, '-', '_', '.', '/'",
            ));
        }
        let expected_gpus = collect(
            i32::try_from(self.expected_gpus)
                .ok()
                .filter(|g| (0..=64).contains(g))
                .ok_or(InvalidValue::new(
                    "expected_gpus",
                    "a whole number from 0 to 64",
                )),
            &mut errors,
        );
        match (name, address, expected_gpus) {
            (Some(name), Some(address), Some(expected_gpus)) if errors.is_empty() => {
                Ok(ServerSpec {
                    name,
                    address,
                    labels: self.labels.clone(),
                    brand_id: self.brand_id,
                    card_id: self.card_id,
                    expected_gpus,
                })
            }
            _ => Err(errors),
        }
    }
}

impl ServerSpec {
    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }
    /// Labels.
    #[must_use]
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    /// Brand.
    #[must_use]
    pub fn brand_id(&self) -> Option<BrandId> {
        self.brand_id
    }
    /// Card.
    #[must_use]
    pub fn card_id(&self) -> Option<CardId> {
        self.card_id
    }
    /// Expected GPUs.
    #[must_use]
    pub fn expected_gpus(&self) -> i32 {
        self.expected_gpus
    }
}

/// Whether a node takes work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered by an admin; its agent has not joined yet.
    Pending,
    /// Heartbeating.
    Ready,
    /// Missed heartbeats: takes no new work, its instances leave routing.
    NotReady,
    /// Silent for longer: considered gone.
    Offline,
}

impl NodeStatus {
    /// Every status.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Ready, Self::NotReady, Self::Offline];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::NotReady => "not_ready",
            Self::Offline => "offline",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How often agents report, and how silence is graded (all settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Between two heartbeats of an agent.
    pub heartbeat: Duration,
    /// Between two resource reports of an agent.
    pub report: Duration,
    /// Missed heartbeats before a node is `not_ready`.
    pub missed_before_not_ready: u32,
    /// Silence after which a node is `offline`.
    pub offline_after: Duration,
}

/// What silence means for a node: its status and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grade {
    /// The status.
    pub status: NodeStatus,
    /// Why, when not ready.
    pub reason: Option<String>,
}

impl Liveness {
    /// Grades a registered node last heard of at `last_seen`.
    #[must_use]
    pub fn grade(&self, last_seen: DateTime<Utc>, now: DateTime<Utc>) -> Grade {
        let silent = (now - last_seen).to_std().unwrap_or_default();
        let not_ready_after = self.heartbeat * self.missed_before_not_ready.max(1);
        let secs = silent.as_secs();
        if silent <= not_ready_after {
            Grade {
                status: NodeStatus::Ready,
                reason: None,
            }
        } else if silent <= self.offline_after.max(not_ready_after) {
            let missed = silent.as_millis() / self.heartbeat.as_millis().max(1);
            Grade {
                status: NodeStatus::NotReady,
                reason: Some(format!("no heartbeat for {secs} s ({missed} missed)")),
            }
        } else {
            Grade {
                status: NodeStatus::Offline,
                reason: Some(format!("no heartbeat for {secs} s")),
            }
        }
    }
}

/// One GPU as the agent saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// Index on the node.
    pub index: u32,
    /// Vendor UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Total memory, MiB.
    pub memory_total_mib: u64,
    /// Used memory, MiB.
    pub memory_used_mib: u64,
    /// Utilisation, percent.
    pub utilization_percent: Option<f64>,
    /// Temperature, °C.
    pub temperature_c: Option<f64>,
}

/// One mounted disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    /// Mount point.
    pub mount: String,
    /// Size, bytes.
    pub total_bytes: u64,
    /// Free, bytes.
    pub available_bytes: u64,
}

/// A node's resources at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// CPU use, percent of all cores.
    pub cpu_usage_percent: f64,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Mounted disks.
    pub disks: Vec<DiskReport>,
    /// GPUs (empty without `nvidia-smi`).
    pub gpus: Vec<GpuReport>,
}

/// Limits of a report's lists.
pub const MAX_DISKS: usize = 64;

impl NodeReport {
    /// Checks the figures.
    ///
    /// # Errors
    /// Every bad field.
    pub fn validate(&self) -> Result<(), Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let percent = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
        if !percent(self.cpu_usage_percent) {
            errors.push(InvalidValue::new(
                "cpu_usage_percent",
                "a percentage from 0 to 100",
            ));
        }
        if self.memory_used_bytes > self.memory_total_bytes {
            errors.push(InvalidValue::new(
                "memory_used_bytes",
                "at most memory_total_bytes",
            ));
        }
        if self.disks.len() > MAX_DISKS
            || self.disks.iter().any(|d| {
                d.mount.is_empty()
                    || d.mount.len() > 1024
                    || d.mount.chars().any(char::is_control)
                    || d.available_bytes > d.total_bytes
            })
        {
            errors.push(InvalidValue::new(
                "disks",
                "at most 64 disks, each with a mount point and available_bytes <= total_bytes",
            ));
        }
        let gpu_ok = |g: &GpuReport| {
            text(&g.name, 1, 128, "gpus", "").is_ok()
                && text(&g.uuid, 0, 128, "gpus", "").is_ok()
                && g.memory_used_mib <= g.memory_total_mib
                && g.utilization_percent.is_none_or(percent)
                && g.temperature_c
                    .is_none_or(|t| t.is_finite() && (-50.0..=200.0).contains(&t))
        };
        if self.gpus.len() > usize::try_from(MAX_GPUS).unwrap_or(64)
            || !self.gpus.iter().all(gpu_ok)
        {
            errors.push(InvalidValue::new("gpus", "at most 64 GPUs, each with a name, memory_used_mib <= memory_total_mib and percentages from 0 to 100"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What an agent says about itself when it joins and when it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    /// The node's host name.
    pub hostname: String,
    /// `maas-agent`'s version.
    pub version: String,
    /// Where the agent listens (the platform calls it only there, once approved).
    pub url: String,
}

impl AgentInfo {
    /// Validates what an agent sent.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(hostname: &str, version: &str, url: &str) -> Result<Self, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let hostname = collect(
            text(hostname, 1, 253, "hostname", "1 to 253 characters"),
            &mut errors,
        );
        let version = collect(
            text(version, 1, 64, "agent_version", "1 to 64 characters"),
            &mut errors,
        );
        let url = collect(agent_url(url), &mut errors);
        match (hostname, version, url) {
            (Some(hostname), Some(version), Some(url)) if errors.is_empty() => Ok(Self {
                hostname,
                version,
                url,
            }),
            _ => Err(errors),
        }
    }
}

/// An agent's base URL: `http(s)://host:port`, no path, credentials, query or fragment, never a
/// link-local or cloud-metadata address (IP literals are checked here; names at connect time).
///
/// # Errors
/// [`InvalidValue`] naming `agent_url`.
pub fn agent_url(raw: &str) -> Result<String, InvalidValue> {
    let invalid = InvalidValue::new(
        "agent_url",
        "http(s)://host:port without a path, credentials, query or fragment",
    );
    let url = maas_shared::net::outbound_url(raw, 300).map_err(|e| match e {
        maas_shared::net::OutboundUrlError::Malformed => invalid.clone(),
        maas_shared::net::OutboundUrlError::Forbidden => InvalidValue::new(
            "agent_url",
            "must not be a link-local or cloud-metadata address",
        ),
    })?;
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(invalid);
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The agent side of a server, once its agent joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// What it said about itself last.
    pub info: AgentInfo,
    /// The address an admin approved for calls from the platform.
    pub approved_url: Option<String>,
    /// When it joined.
    pub registered_at: DateTime<Utc>,
}

impl Agent {
    /// The address the platform may call: the one the agent reported, when an admin approved it.
    #[must_use]
    pub fn callable_url(&self) -> Option<&str> {
        self.approved_url
            .as_deref()
            .filter(|approved| *approved == self.info.url)
    }
}

/// A GPU server.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub(crate) id: ServerId,
    pub(crate) spec: ServerSpec,
    pub(crate) status: NodeStatus,
    pub(crate) status_reason: Option<String>,
    pub(crate) status_changed_at: DateTime<Utc>,
    pub(crate) join_token_expires_at: Option<DateTime<Utc>>,
    pub(crate) agent: Option<Agent>,
    pub(crate) report: Option<(NodeReport, DateTime<Utc>)>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Server {
    /// A new server waiting for its agent, with a join token valid until `token_expires_at`.
    #[must_use]
    pub fn register(spec: ServerSpec, token_expires_at: DateTime<Utc>, at: DateTime<Utc>) -> Self {
        Self {
            id: ServerId::new(),
            spec,
            status: NodeStatus::Pending,
            status_reason: Some("waiting for its agent to join".into()),
            status_changed_at: at,
            join_token_expires_at: Some(token_expires_at),
            agent: None,
            report: None,
            created_at: at,
            updated_at: at,
        }
    }
    /// Id.
    #[must_use]
    pub fn id(&self) -> ServerId {
        self.id
    }
    /// Description.
    #[must_use]
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }
    /// Status as stored.
    #[must_use]
    pub fn status(&self) -> NodeStatus {
        self.status
    }
    /// Why it has its status.
    #[must_use]
    pub fn status_reason(&self) -> Option<&str> {
        self.status_reason.as_deref()
    }
    /// Since when.
    #[must_use]
    pub fn status_changed_at(&self) -> DateTime<Utc> {
        self.status_changed_at
    }
    /// Until when an unspent join token is valid.
    #[must_use]
    pub fn join_token_expires_at(&self) -> Option<DateTime<Utc>> {
        self.join_token_expires_at
    }
    /// Its agent, once joined.
    #[must_use]
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }
    /// The last resource report and when it came.
    #[must_use]
    pub fn report(&self) -> Option<&(NodeReport, DateTime<Utc>)> {
        self.report.as_ref()
    }
    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last changed.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// The draft an update starts from.
    #[must_use]
    pub fn draft(&self) -> ServerDraft {
        let s = &self.spec;
        ServerDraft {
            name: s.name.clone(),
            address: s.address.clone(),
            labels: s.labels.clone(),
            brand_id: s.brand_id,
            card_id: s.card_id,
            expected_gpus: i64::from(s.expected_gpus),
        }
    }
    /// Replaces the description.
    pub fn revise(&mut self, spec: ServerSpec, at: DateTime<Utc>) {
        self.spec = spec;
        self.updated_at = at;
    }

    /// The status to show now: the stored one, or worse when the last heartbeat (`last_seen`,
    /// else the join) is older than the liveness rules allow. Nothing waits for the worker's
    /// sweep to write it.
    #[must_use]
    pub fn effective(
        &self,
        last_seen: Option<DateTime<Utc>>,
        liveness: &Liveness,
        now: DateTime<Utc>,
    ) -> Grade {
        let stored = Grade {
            status: self.status,
            reason: self.status_reason.clone(),
        };
        let (NodeStatus::Ready | NodeStatus::NotReady, Some(agent)) = (self.status, &self.agent)
        else {
            return stored;
        };
        let seen = last_seen.unwrap_or(agent.registered_at);
        let graded = liveness.grade(seen, now);
        let rank = |s: NodeStatus| match s {
            NodeStatus::Ready => 0,
            NodeStatus::NotReady => 1,
            NodeStatus::Pending | NodeStatus::Offline => 2,
        };
        if rank(graded.status) > rank(self.status) {
            graded
        } else {
            stored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness() -> Liveness {
        Liveness {
            heartbeat: Duration::from_secs(10),
            report: Duration::from_secs(30),
            missed_before_not_ready: 3,
            offline_after: Duration::from_secs(120),
        }
    }

    #[test]
    fn silence_is_graded_into_not_ready_then_offline() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s| now - chrono::Duration::seconds(s);
        assert_eq!(liveness().grade(ago(30), now).status, NodeStatus::Ready);
        let late = liveness().grade(ago(31), now);
        assert_eq!(late.status, NodeStatus::NotReady);
        assert_eq!(
            late.reason.as_deref(),
            Some("no heartbeat for 31 s (3 missed)")
        );
        let gone = liveness().grade(ago(121), now);
        assert_eq!(gone.status, NodeStatus::Offline);
        assert_eq!(gone.reason.as_deref(), Some("no heartbeat for 121 s"));
    }

    #[test]
    fn agent_urls_are_bare_origins_outside_link_local() {
        assert_eq!(
            agent_url("http://10.0.0.5:9090/").unwrap(),
            "http://10.0.0.5:9090"
        );
        for bad in [
            "http://169.254.169.254:80",
            "http://[fe80::1]:9090",
            "ftp://x:1",
            "http://a:1/p",
            "http://u:p@a:1",
        ] {
            assert!(agent_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_platform_calls_only_an_approved_and_current_address() {
        let info = AgentInfo::parse("gpu-1", "0.1.0", "http://10.0.0.5:9090").unwrap();
        let mut agent = Agent {
            info,
            approved_url: None,
            registered_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert_eq!(agent.callable_url(), None);
        agent.approved_url = Some("http://10.0.0.5:9090".into());
        assert_eq!(agent.callable_url(), Some("http://10.0.0.5:9090"));
        agent.info.url = "http://10.0.0.6:9090".into();
        assert_eq!(agent.callable_url(), None);
    }

    #[test]
    fn server_fields_are_all_checked() {
        let draft = ServerDraft {
            name: "gpu 1".into(),
            address: "169.254.169.254".into(),
            labels: [("bad key!".to_owned(), "v".to_owned())].into(),
            expected_gpus: 65,
            ..ServerDraft::default()
        };
        let fields: Vec<&str> = draft.parse().unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "address", "labels", "expected_gpus"]);
    }
}
