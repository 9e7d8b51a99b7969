//! Deployments (the desired state of a model service), the instances placed on servers, the
//! deploy log, the placement rules, and what the agents and the platform exchange about them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::errors::InvalidValue;
use super::registry::{Capability, Engine, ModelId, ModelSource};
use super::server::ServerId;
use super::values::{collect, token};

maas_shared::define_id!(
    /// Identifies a deployment.
    DeploymentId
);

maas_shared::define_id!(
    /// Identifies an instance (one replica of a deployment placed on a server).
    InstanceId
);

/// Limits of a deployment's description.
pub mod limits {
    /// Replicas at most.
    pub const MAX_REPLICAS: i64 = 64;
    /// GPUs per replica at most.
    pub const MAX_GPUS: i64 = 16;
    /// Engine arguments at most.
    pub const MAX_ARGS: usize = 64;
    /// Characters of one argument at most.
    pub const MAX_ARG_CHARS: usize = 1024;
    /// Environment variables at most.
    pub const MAX_ENV: usize = 64;
    /// Characters of a custom command at most.
    pub const MAX_COMMAND_CHARS: usize = 4096;
    /// Served names at most.
    pub const MAX_SERVED_NAMES: usize = 8;
    /// Placement servers at most.
    pub const MAX_PLACEMENT_SERVERS: usize = 64;
}

/// Environment variables the agent sets itself.
pub const RESERVED_ENV: [&str; 4] = ["PORT", "MODEL_PATH", "CUDA_VISIBLE_DEVICES", "HOST"];

/// Where a deployment's life stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Waiting for servers that fit (the reason names each server's answer).
    Pending,
    /// Being placed.
    Scheduling,
    /// Placed; waiting for the instances to turn ready.
    Deploying,
    /// Every desired instance is ready.
    Running,
    /// Could not start (the reason says why); a start or restart tries again.
    Failed,
    /// Instances are being stopped.
    Stopping,
    /// Nothing runs.
    Stopped,
    /// Instances are being restarted.
    Restarting,
}

impl DeploymentState {
    /// Every state.
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Scheduling,
        Self::Deploying,
        Self::Running,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::Restarting,
    ];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduling => "scheduling",
            Self::Deploying => "deploying",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Restarting => "restarting",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The seeds' status word for this state (their services knew `deploying`, `running`,
    /// `failed`, `stopped`).
    #[must_use]
    pub const fn legacy(self) -> &'static str {
        match self {
            Self::Pending | Self::Scheduling | Self::Deploying | Self::Restarting => "deploying",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Stopping | Self::Stopped => "stopped",
        }
    }
}

/// What the admin asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Desired {
    /// Run the replicas.
    Running,
    /// Run nothing, keep the deployment.
    Stopped,
    /// Run nothing, then remove the deployment.
    Deleted,
}

impl Desired {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Running, Self::Stopped, Self::Deleted]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// What an instance is doing, as its agent reports it (`assigned` until it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Placed; its agent has not picked it up yet.
    Assigned,
    /// The agent is fetching the model file.
    Downloading,
    /// The engine runs; not answering yet.
    Starting,
    /// Answers its readiness probe: routed to.
    Ready,
    /// Was ready, stopped answering its probe.
    Unhealthy,
    /// The engine exited; the agent restarts it after a backoff.
    Exited,
    /// Cannot start (bad model file, missing engine, no free port): needs a change or restart.
    Failed,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// Its node went away.
    Lost,
}

impl InstanceState {
    /// Every state.
    pub const ALL: [Self; 10] = [
        Self::Assigned,
        Self::Downloading,
        Self::Starting,
        Self::Ready,
        Self::Unhealthy,
        Self::Exited,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::Lost,
    ];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::Downloading => "downloading",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Unhealthy => "unhealthy",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Lost => "lost",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Which servers may hold a deployment's replicas: the named ones (none named: any), and only
/// those carrying every label given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Allowed servers (empty: every server).
    #[serde(default)]
    pub servers: Vec<ServerId>,
    /// Labels a server must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Placement {
    /// Whether a server with `id` and `labels` is allowed.
    #[must_use]
    pub fn allows(&self, id: ServerId, labels: &BTreeMap<String, String>) -> bool {
        (self.servers.is_empty() || self.servers.contains(&id))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// What an admin gives for a deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentDraft {
    /// Unique name.
    pub name: String,
    /// The registered model.
    pub model_id: ModelId,
    /// Engine (`None`: the model's default engine).
    pub engine: Option<String>,
    /// The command of a `custom` engine (run as `bash -lc <command>`).
    pub command: Option<String>,
    /// Extra engine arguments, each passed as one argv item.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Replicas.
    pub replicas: i64,
    /// GPUs per replica (0 for CPU engines).
    pub gpus_per_replica: i64,
    /// CPU cores per replica (checked against the server's last report).
    pub cpu_cores: Option<f64>,
    /// Memory per replica in MiB (checked against the server's last report).
    pub memory_mib: Option<i64>,
    /// Where replicas may go.
    pub placement: Placement,
    /// Names callers use in `model` (empty: the deployment's name).
    pub served_names: Vec<String>,
}

/// A deployment's validated description.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSpec {
    pub(crate) name: String,
    pub(crate) model_id: ModelId,
    pub(crate) engine: Engine,
    pub(crate) command: Option<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) replicas: i32,
    pub(crate) gpus_per_replica: i32,
    pub(crate) cpu_cores: Option<f64>,
    pub(crate) memory_mib: Option<i64>,
    pub(crate) placement: Placement,
    pub(crate) served_names: Vec<String>,
}

/// A deployment name or a served model name: 1–128 of `A-Z a-z 0-9 . _ - : /`.
///
/// # Errors
/// [`InvalidValue`] naming `field`.
pub fn served_name(raw: &str, field: &'static str) -> Result<String, InvalidValue> {
    token(
        raw,
        128,
        b"._-:/",
        field,
        "1 to 128 characters of letters, digits, '.', '_', '-', ':' or '/'",
    )
}

/// Free text an engine receives: at most `max` characters, no NUL.
fn engine_text(raw: &str, max: usize) -> bool {
    raw.chars().count() <= max && !raw.contains('\0')
}

fn env_name(raw: &str) -> bool {
    let mut bytes = raw.bytes();
    raw.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The engine of a request: one of [`Engine::ALL`] by name.
///
/// # Errors
/// [`InvalidValue`] naming `engine`.
pub fn parse_engine(raw: &str) -> Result<Engine, InvalidValue> {
    Engine::from_name(raw.trim()).ok_or(InvalidValue::new(
        "engine",
        "one of builtin, llama.cpp, vllm, sglang, custom",
    ))
}

/// Checks the runtime fields every change must keep valid; pushes each failure (the command
/// only when the engine is known).
fn check_runtime(
    engine: Option<Engine>,
    command: Option<&str>,
    args: &[String],
    env: &BTreeMap<String, String>,
    errors: &mut Vec<InvalidValue>,
) {
    match (engine, command) {
        (None, _) => {}
        (Some(Engine::Custom), None) => errors.push(InvalidValue::new(
            "command",
            "a custom engine needs its command (run as `bash -lc <command>` with PORT and MODEL_PATH set)",
        )),
        (Some(Engine::Custom), Some(c))
            if c.trim().is_empty() || !engine_text(c, limits::MAX_COMMAND_CHARS) =>
        {
            errors.push(InvalidValue::new(
                "command",
                "1 to 4096 characters, without NUL",
            ));
        }
        (Some(Engine::Custom), Some(_)) | (Some(_), None) => {}
        (Some(_), Some(_)) => errors.push(InvalidValue::new(
            "command",
            "only a custom engine takes a command; pass arguments in args",
        )),
    }
    if args.len() > limits::MAX_ARGS
        || args
            .iter()
            .any(|a| a.is_empty() || !engine_text(a, limits::MAX_ARG_CHARS))
    {
        errors.push(InvalidValue::new(
            "args",
            "at most 64 arguments of 1 to 1024 characters each, without NUL",
        ));
    }
    if env.len() > limits::MAX_ENV
        || env
            .iter()
            .any(|(k, v)| !env_name(k) || !engine_text(v, limits::MAX_COMMAND_CHARS))
    {
        errors.push(InvalidValue::new(
            "env",
            "at most 64 variables named [A-Za-z_][A-Za-z0-9_]*, values of at most 4096 characters without NUL",
        ));
    } else if env.keys().any(|k| RESERVED_ENV.contains(&k.as_str())) {
        errors.push(InvalidValue::new(
            "env",
            "PORT, HOST, MODEL_PATH and CUDA_VISIBLE_DEVICES are set by the agent",
        ));
    }
}

fn check_resources(
    replicas: i64,
    gpus: i64,
    cpu: Option<f64>,
    memory: Option<i64>,
    placement: &Placement,
    errors: &mut Vec<InvalidValue>,
) {
    if !(0..=limits::MAX_REPLICAS).contains(&replicas) {
        errors.push(InvalidValue::new("replicas", "0 to 64"));
    }
    if !(0..=limits::MAX_GPUS).contains(&gpus) {
        errors.push(InvalidValue::new("gpus_per_replica", "0 to 16"));
    }
    if cpu.is_some_and(|c| !c.is_finite() || c <= 0.0 || c > 1024.0) {
        errors.push(InvalidValue::new(
            "cpu_cores",
            "a number of cores above 0, at most 1024",
        ));
    }
    if memory.is_some_and(|m| !(1..=16 * 1024 * 1024).contains(&m)) {
        errors.push(InvalidValue::new("memory_mib", "1 to 16777216 MiB"));
    }
    if placement.servers.len() > limits::MAX_PLACEMENT_SERVERS
        || placement.servers.iter().collect::<BTreeSet<_>>().len() != placement.servers.len()
    {
        errors.push(InvalidValue::new(
            "placement.servers",
            "at most 64 distinct server ids",
        ));
    }
    if placement.labels.len() > 32
        || placement
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 63)
    {
        errors.push(InvalidValue::new(
            "placement.labels",
            "at most 32 labels, keys 1 to 63 characters, values at most 63",
        ));
    }
}

fn parse_served_names(raw: &[String], fallback: &str) -> Result<Vec<String>, InvalidValue> {
    if raw.is_empty() {
        return Ok(vec![fallback.to_owned()]);
    }
    let invalid = || {
        InvalidValue::new(
            "served_names",
            "1 to 8 distinct names of 1 to 128 letters, digits, '.', '_', '-', ':' or '/'",
        )
    };
    if raw.len() > limits::MAX_SERVED_NAMES {
        return Err(invalid());
    }
    let mut names = Vec::with_capacity(raw.len());
    for name in raw {
        let name = served_name(name, "served_names").map_err(|_| invalid())?;
        if names.contains(&name) {
            return Err(invalid());
        }
        names.push(name);
    }
    Ok(names)
}

impl DeploymentDraft {
    /// Validates every field; `default_engine` is the model's.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self, default_engine: Engine) -> Result<DeploymentSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let name = collect(served_name(&self.name, "name"), &mut errors);
        let engine = match &self.engine {
            None => Some(default_engine),
            Some(raw) => collect(parse_engine(raw), &mut errors),
        };
        check_runtime(
            engine,
            self.command.as_deref(),
            &self.args,
            &self.env,
            &mut errors,
        );
        check_resources(
            self.replicas,
            self.gpus_per_replica,
            self.cpu_cores,
            self.memory_mib,
            &self.placement,
            &mut errors,
        );
        let served = collect(
            parse_served_names(&self.served_names, name.as_deref().unwrap_or("")),
            &mut errors,
        );
        match (name, engine, served) {
            (Some(name), Some(engine), Some(served_names)) if errors.is_empty() => {
                Ok(DeploymentSpec {
                    name,
                    model_id: self.model_id,
                    engine,
                    command: self.command.clone(),
                    args: self.args.clone(),
                    env: self.env.clone(),
                    replicas: i32::try_from(self.replicas).unwrap_or(0),
                    gpus_per_replica: i32::try_from(self.gpus_per_replica).unwrap_or(0),
                    cpu_cores: self.cpu_cores,
                    memory_mib: self.memory_mib,
                    placement: self.placement.clone(),
                    served_names,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A change to a deployment: `None` keeps the field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentPatch {
    /// Replicas.
    pub replicas: Option<i64>,
    /// Engine arguments.
    pub args: Option<Vec<String>>,
    /// Environment.
    pub env: Option<BTreeMap<String, String>>,
    /// The custom command.
    pub command: Option<String>,
    /// GPUs per replica.
    pub gpus_per_replica: Option<i64>,
    /// CPU cores per replica (`Some(None)` clears).
    pub cpu_cores: Option<Option<f64>>,
    /// Memory per replica (`Some(None)` clears).
    pub memory_mib: Option<Option<i64>>,
    /// Placement.
    pub placement: Option<Placement>,
    /// Served names.
    pub served_names: Option<Vec<String>>,
}

/// What a patch changes, so the deploy job knows what to redo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The replica count.
    pub replicas: bool,
    /// What the engines run with (restart in place).
    pub runtime: bool,
    /// What placement depends on (place again).
    pub placement: bool,
}

impl DeploymentSpec {
    /// Applies `patch`, validating the result.
    ///
    /// # Errors
    /// Every bad field.
    pub fn revise(&self, patch: &DeploymentPatch) -> Result<(Self, Changed), Vec<InvalidValue>> {
        let mut next = self.clone();
        let mut errors = Vec::new();
        if let Some(args) = &patch.args {
            next.args.clone_from(args);
        }
        if let Some(env) = &patch.env {
            next.env.clone_from(env);
        }
        if let Some(command) = &patch.command {
            next.command = Some(command.clone());
        }
        check_runtime(
            Some(next.engine),
            next.command.as_deref(),
            &next.args,
            &next.env,
            &mut errors,
        );
        let replicas = patch.replicas.unwrap_or_else(|| i64::from(self.replicas));
        let gpus = patch
            .gpus_per_replica
            .unwrap_or_else(|| i64::from(self.gpus_per_replica));
        if let Some(cpu) = patch.cpu_cores {
            next.cpu_cores = cpu;
        }
        if let Some(memory) = patch.memory_mib {
            next.memory_mib = memory;
        }
        if let Some(placement) = &patch.placement {
            next.placement = placement.clone();
        }
        check_resources(
            replicas,
            gpus,
            next.cpu_cores,
            next.memory_mib,
            &next.placement,
            &mut errors,
        );
        if let Some(names) = &patch.served_names
            && let Some(names) = collect(parse_served_names(names, &self.name), &mut errors)
        {
            next.served_names = names;
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        next.replicas = i32::try_from(replicas).unwrap_or(0);
        next.gpus_per_replica = i32::try_from(gpus).unwrap_or(0);
        let changed = Changed {
            replicas: next.replicas != self.replicas,
            runtime: next.args != self.args
                || next.env != self.env
                || next.command != self.command
                || next.served_names != self.served_names,
            placement: next.gpus_per_replica != self.gpus_per_replica
                || next.cpu_cores != self.cpu_cores
                || next.memory_mib != self.memory_mib
                || next.placement != self.placement,
        };
        Ok((next, changed))
    }

    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The model deployed.
    #[must_use]
    pub fn model_id(&self) -> ModelId {
        self.model_id
    }
    /// Engine.
    #[must_use]
    pub fn engine(&self) -> Engine {
        self.engine
    }
    /// The custom command.
    #[must_use]
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }
    /// Extra arguments.
    #[must_use]
    pub fn args(&self) -> &[String] {
        &self.args
    }
    /// Extra environment.
    #[must_use]
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }
    /// Replicas.
    #[must_use]
    pub fn replicas(&self) -> i32 {
        self.replicas
    }
    /// GPUs per replica.
    #[must_use]
    pub fn gpus_per_replica(&self) -> i32 {
        self.gpus_per_replica
    }
    /// CPU cores per replica.
    #[must_use]
    pub fn cpu_cores(&self) -> Option<f64> {
        self.cpu_cores
    }
    /// Memory per replica, MiB.
    #[must_use]
    pub fn memory_mib(&self) -> Option<i64> {
        self.memory_mib
    }
    /// Placement.
    #[must_use]
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
    /// Served names (the first is the one engines are started with).
    #[must_use]
    pub fn served_names(&self) -> &[String] {
        &self.served_names
    }
}

/// A deployment: its description, what the admin wants and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub(crate) id: DeploymentId,
    pub(crate) spec: DeploymentSpec,
    pub(crate) desired: Desired,
    pub(crate) state: DeploymentState,
    pub(crate) reason: Option<String>,
    pub(crate) generation: i32,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) created_by: Option<Uuid>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Deployment {
    /// A new deployment that should run (or stay stopped when it has no replicas).
    #[must_use]
    pub fn create(spec: DeploymentSpec, created_by: Option<Uuid>, at: DateTime<Utc>) -> Self {
        Self {
            id: DeploymentId::new(),
            spec,
            desired: Desired::Running,
            state: DeploymentState::Pending,
            reason: Some("waiting for the deploy job to place it".into()),
            generation: 1,
            deadline: None,
            created_by,
            created_at: at,
            updated_at: at,
        }
    }
    /// Id.
    #[must_use]
    pub fn id(&self) -> DeploymentId {
        self.id
    }
    /// Description.
    #[must_use]
    pub fn spec(&self) -> &DeploymentSpec {
        &self.spec
    }
    /// What the admin wants.
    #[must_use]
    pub fn desired(&self) -> Desired {
        self.desired
    }
    /// State.
    #[must_use]
    pub fn state(&self) -> DeploymentState {
        self.state
    }
    /// Why it is in this state.
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// Bumped by every restart and runtime change: instances of an older one are restarted.
    #[must_use]
    pub fn generation(&self) -> i32 {
        self.generation
    }
    /// When the current deploy fails if not ready.
    #[must_use]
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }
    /// Who created it.
    #[must_use]
    pub fn created_by(&self) -> Option<Uuid> {
        self.created_by
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
}

/// One replica placed on a server.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Id.
    pub id: InstanceId,
    /// Its deployment.
    pub deployment_id: DeploymentId,
    /// Which replica (0-based).
    pub replica: i32,
    /// Where it is placed.
    pub server_id: ServerId,
    /// Whether it should run.
    pub desired_running: bool,
    /// The deployment generation it should run.
    pub generation: i32,
    /// Reported state.
    pub state: InstanceState,
    /// The port its agent gave it.
    pub port: Option<i32>,
    /// Its engine's process id on the node.
    pub pid: Option<i32>,
    /// The last exit code.
    pub exit_code: Option<i32>,
    /// Restarts after crashes.
    pub restarts: i32,
    /// The agent's last word on it.
    pub message: Option<String>,
    /// GPU indices it holds on its server.
    pub gpus: Vec<u32>,
    /// CPU cores requested.
    pub cpu_cores: Option<f64>,
    /// Memory requested, MiB.
    pub memory_mib: Option<i64>,
    /// Placed at.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// One line of a deployment's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployEvent {
    /// Id (time-ordered).
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// Who did it (`None`: the platform).
    pub actor: Option<Uuid>,
    /// Machine word (`created`, `scheduled`, `instance_ready`, `instance_exited`, …).
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl DeployEvent {
    /// An event now-ish.
    #[must_use]
    pub fn new(
        at: DateTime<Utc>,
        actor: Option<Uuid>,
        kind: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            at,
            actor,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
}

/// A server as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The server.
    pub server_id: ServerId,
    /// Its name (for explanations).
    pub name: String,
    /// Whether its node is ready.
    pub ready: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// GPU indices it has (from its last report, else the expected count).
    pub gpus: Vec<u32>,
    /// GPU indices held by instances.
    pub gpus_taken: BTreeSet<u32>,
    /// Logical CPUs from the last report.
    pub cpu_cores: Option<f64>,
    /// CPU cores requested by the instances on it.
    pub cpu_requested: f64,
    /// Memory from the last report, MiB.
    pub memory_mib: Option<i64>,
    /// Memory requested by the instances on it, MiB.
    pub memory_requested: i64,
    /// Instances of the deployment being placed already on it.
    pub same_deployment: usize,
}

/// Where one replica goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The server.
    pub server_id: ServerId,
    /// The GPU indices it takes.
    pub gpus: Vec<u32>,
}

/// Why a server does not fit, or `None` when it does (with the GPUs it would give).
fn fits(spec: &DeploymentSpec, c: &Candidate) -> Result<Vec<u32>, String> {
    if !spec.placement.allows(c.server_id, &c.labels) {
        return Err(format!("{}: not in the placement", c.name));
    }
    if !c.ready {
        return Err(format!("{}: not ready", c.name));
    }
    let free: Vec<u32> = c
        .gpus
        .iter()
        .copied()
        .filter(|g| !c.gpus_taken.contains(g))
        .collect();
    let want = usize::try_from(spec.gpus_per_replica).unwrap_or(0);
    if free.len() < want {
        return Err(format!(
            "{}: {} of {} GPUs free, {} needed",
            c.name,
            free.len(),
            c.gpus.len(),
            want
        ));
    }
    if let Some(cpu) = spec.cpu_cores {
        match c.cpu_cores {
            None => return Err(format!("{}: has not reported its CPUs yet", c.name)),
            Some(total) if total - c.cpu_requested + 1e-9 < cpu => {
                return Err(format!(
                    "{}: {:.1} of {:.0} CPU cores unrequested, {cpu} needed",
                    c.name,
                    (total - c.cpu_requested).max(0.0),
                    total
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(memory) = spec.memory_mib {
        match c.memory_mib {
            None => return Err(format!("{}: has not reported its memory yet", c.name)),
            Some(total) if total - c.memory_requested < memory => {
                return Err(format!(
                    "{}: {} of {} MiB memory unrequested, {memory} needed",
                    c.name,
                    (total - c.memory_requested).max(0),
                    total
                ));
            }
            Some(_) => {}
        }
    }
    Ok(free.into_iter().take(want).collect())
}

/// Places one replica of `spec`: among the servers that fit, the one holding the fewest
/// replicas of this deployment, then the one with the most GPUs free, then by name. When none
/// fits, every server's reason.
///
/// # Errors
/// One line per server saying why it does not fit (`gpu-2: 0 of 2 GPUs free, 1 needed`).
pub fn place(spec: &DeploymentSpec, candidates: &[Candidate]) -> Result<Placed, Vec<String>> {
    let mut reasons = Vec::new();
    let mut best: Option<(&Candidate, Vec<u32>)> = None;
    for candidate in candidates {
        match fits(spec, candidate) {
            Err(reason) => reasons.push(reason),
            Ok(gpus) => {
                let key = |c: &Candidate| {
                    (
                        c.same_deployment,
                        std::cmp::Reverse(c.gpus.len() - c.gpus_taken.len().min(c.gpus.len())),
                        c.name.clone(),
                    )
                };
                if best.as_ref().is_none_or(|(b, _)| key(candidate) < key(b)) {
                    best = Some((candidate, gpus));
                }
            }
        }
    }
    match best {
        Some((c, gpus)) => Ok(Placed {
            server_id: c.server_id,
            gpus,
        }),
        None if candidates.is_empty() => Err(vec!["no servers are registered".to_owned()]),
        None => Err(reasons),
    }
}

/// What an agent is told to run: one entry per instance that should run on its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The instance.
    pub instance_id: Uuid,
    /// Its deployment.
    pub deployment_id: Uuid,
    /// The deployment's name.
    pub deployment: String,
    /// A new generation means: restart with this description.
    pub generation: i32,
    /// Engine.
    pub engine: Engine,
    /// The model's name in the registry.
    pub model: String,
    /// Where its weights come from.
    pub source: ModelSource,
    /// Whether it serves embeddings rather than chat (chooses the built-in engine's mode).
    pub embeddings: bool,
    /// The custom engine's command.
    pub command: Option<String>,
    /// Extra arguments, each one argv item.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// GPU indices (`CUDA_VISIBLE_DEVICES`).
    pub gpus: Vec<u32>,
    /// Served names (the first is the one the engine is started with).
    pub served_names: Vec<String>,
}

/// Whether a model with `capabilities` is served as an embedding model.
#[must_use]
pub fn serves_embeddings(capabilities: &BTreeSet<Capability>) -> bool {
    capabilities.contains(&Capability::Embedding)
        && !capabilities.contains(&Capability::Chat)
        && !capabilities.contains(&Capability::Completion)
}

/// The assignments of a node and their fingerprint (an agent that already has this version
/// waits for the next).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// Changes whenever the list does.
    pub version: String,
    /// What should run.
    pub instances: Vec<Assignment>,
}

/// What an agent says of one instance it supervises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// The instance.
    pub instance_id: Uuid,
    /// The generation it runs.
    pub generation: i32,
    /// Its state.
    pub state: InstanceState,
    /// Its port.
    pub port: Option<u16>,
    /// Its engine's pid.
    pub pid: Option<u32>,
    /// Its last exit code.
    pub exit_code: Option<i32>,
    /// Restarts after crashes.
    pub restarts: u32,
    /// What the agent says (an error, the backoff before the next start).
    pub message: Option<String>,
}

/// Limits of an agent's instance report.
pub const MAX_REPORTED_INSTANCES: usize = 256;

impl InstanceReport {
    /// Checks the sizes.
    ///
    /// # Errors
    /// The bad field.
    pub fn check(reports: &[Self]) -> Result<(), InvalidValue> {
        if reports.len() > MAX_REPORTED_INSTANCES {
            return Err(InvalidValue::new("instances", "at most 256 instances"));
        }
        if reports
            .iter()
            .any(|r| r.message.as_ref().is_some_and(|m| m.chars().count() > 2000))
        {
            return Err(InvalidValue::new(
                "instances.message",
                "at most 2000 characters",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> DeploymentDraft {
        DeploymentDraft {
            name: "chat".into(),
            model_id: ModelId::new(),
            replicas: 1,
            gpus_per_replica: 1,
            ..DeploymentDraft::default()
        }
    }

    fn candidate(name: &str, gpus: u32, taken: &[u32], ready: bool) -> Candidate {
        Candidate {
            server_id: ServerId::new(),
            name: name.into(),
            ready,
            labels: BTreeMap::new(),
            gpus: (0..gpus).collect(),
            gpus_taken: taken.iter().copied().collect(),
            cpu_cores: Some(8.0),
            cpu_requested: 0.0,
            memory_mib: Some(16_384),
            memory_requested: 0,
            same_deployment: 0,
        }
    }

    #[test]
    fn every_bad_field_is_named_and_arguments_stay_verbatim() {
        let mut bad = draft();
        bad.name = "bad name".into();
        bad.engine = Some("docker".into());
        bad.replicas = 65;
        bad.gpus_per_replica = -1;
        bad.env.insert("PORT".into(), "1".into());
        bad.served_names = vec!["a".into(), "a".into()];
        let errors = bad.parse(Engine::Builtin).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "engine",
                "env",
                "replicas",
                "gpus_per_replica",
                "served_names"
            ]
        );
        let mut env = draft();
        env.env.insert("PORT".into(), "1".into());
        assert_eq!(env.parse(Engine::Builtin).unwrap_err()[0].field, "env");

        let mut ok = draft();
        ok.args = vec![
            "; touch /tmp/pwned".into(),
            "--ctx-size".into(),
            "2048".into(),
        ];
        let spec = ok.parse(Engine::LlamaCpp).unwrap();
        assert_eq!(spec.args()[0], "; touch /tmp/pwned");
        assert_eq!(spec.engine(), Engine::LlamaCpp);
        assert_eq!(spec.served_names(), ["chat"]);

        let mut custom = draft();
        custom.engine = Some("custom".into());
        assert_eq!(
            custom.parse(Engine::Builtin).unwrap_err()[0].field,
            "command"
        );
        let mut builtin_with_command = draft();
        builtin_with_command.command = Some("echo".into());
        assert_eq!(
            builtin_with_command.parse(Engine::Builtin).unwrap_err()[0].field,
            "command"
        );
    }

    #[test]
    fn a_patch_says_what_it_changes() {
        let spec = draft().parse(Engine::Builtin).unwrap();
        let (next, changed) = spec
            .revise(&DeploymentPatch {
                replicas: Some(2),
                ..DeploymentPatch::default()
            })
            .unwrap();
        assert_eq!(next.replicas(), 2);
        assert_eq!(
            changed,
            Changed {
                replicas: true,
                ..Changed::default()
            }
        );
        let (_, changed) = spec
            .revise(&DeploymentPatch {
                args: Some(vec!["--x".into()]),
                gpus_per_replica: Some(2),
                ..DeploymentPatch::default()
            })
            .unwrap();
        assert!(changed.runtime && changed.placement && !changed.replicas);
        assert_eq!(
            spec.revise(&DeploymentPatch {
                replicas: Some(-1),
                ..DeploymentPatch::default()
            })
            .unwrap_err()[0]
                .field,
            "replicas"
        );
    }

    #[test]
    fn placement_spreads_replicas_and_explains_every_refusal() {
        let spec = draft().parse(Engine::Builtin).unwrap();
        let full = candidate("gpu-2", 2, &[0, 1], true);
        let down = candidate("gpu-3", 4, &[], false);
        let reasons = place(&spec, &[full.clone(), down.clone()]).unwrap_err();
        assert_eq!(
            reasons,
            ["gpu-2: 0 of 2 GPUs free, 1 needed", "gpu-3: not ready"]
        );

        let mut one = candidate("gpu-1", 2, &[0], true);
        let two = candidate("gpu-4", 2, &[], true);
        let placed = place(&spec, &[one.clone(), two.clone(), full]).unwrap();
        assert_eq!(placed.server_id, two.server_id);
        assert_eq!(placed.gpus, [0]);
        one.same_deployment = 0;
        let mut two_busy = two;
        two_busy.same_deployment = 1;
        let placed = place(&spec, &[two_busy, one.clone()]).unwrap();
        assert_eq!((placed.server_id, placed.gpus), (one.server_id, vec![1]));

        let mut cpu = draft();
        cpu.gpus_per_replica = 0;
        cpu.cpu_cores = Some(6.0);
        let cpu = cpu.parse(Engine::Builtin).unwrap();
        let mut busy = candidate("cpu-1", 0, &[], true);
        busy.cpu_requested = 4.0;
        assert_eq!(
            place(&cpu, &[busy]).unwrap_err(),
            ["cpu-1: 4.0 of 8 CPU cores unrequested, 6 needed"]
        );

        let mut labelled = draft();
        labelled.placement.labels.insert("zone".into(), "b".into());
        let labelled = labelled.parse(Engine::Builtin).unwrap();
        assert_eq!(
            place(&labelled, &[down]).unwrap_err(),
            ["gpu-3: not in the placement"]
        );
        assert_eq!(
            place(&labelled, &[]).unwrap_err(),
            ["no servers are registered"]
        );
    }
}
