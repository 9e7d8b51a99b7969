//! The reconciler: starts the instances assigned to this node, stops the others (SIGTERM to
//! the engine's process group, SIGKILL after a grace), restarts crashed engines with backoff
//! `min(base·2^(n−1), cap)` (reset once healthy), probes readiness, keeps one log per start
//! (current and previous, size-capped) and persists what runs, so that a restarted agent
//! adopts its engines (pid and start time checked) instead of starting them twice.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maas_model::contract::{Assignment, InstanceReport, InstanceState, ModelSource};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::fetch::{FetchError, fetch};
use crate::launch::{ModelLocation, Tools, render};

/// How the supervisor runs engines.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where engines listen (`0.0.0.0`, or one address of the node).
    pub host: String,
    /// Ports engines may get.
    pub ports: RangeInclusive<u16>,
    /// First restart delay after a crash.
    pub backoff_base: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Largest engine log before it is truncated.
    pub log_max_bytes: u64,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// Engine programs.
    pub tools: Tools,
}

impl Config {
    fn logs(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    fn state_file(&self) -> PathBuf {
        self.data_dir.join("instances.json")
    }

    fn backoff(&self, crashes: u32) -> Duration {
        let factor = 1u32 << crashes.saturating_sub(1).min(16);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The current and previous log of an instance.
#[must_use]
pub fn log_paths(dir: &Path, instance: Uuid) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{instance}.log")),
        dir.join(format!("{instance}.log.1")),
    )
}

/// An engine process: its pid and its start time (clock ticks since boot, from
/// `/proc/<pid>/stat`), which together tell it from a later process with the same pid.
struct Process {
    pid: u32,
    start_time: u64,
    /// Present when this agent started it (an adopted one is watched through `/proc`).
    child: Option<tokio::process::Child>,
}

struct Managed {
    assignment: Assignment,
    port: u16,
    process: Option<Process>,
    state: InstanceState,
    restarts: u32,
    crashes: u32,
    exit_code: Option<i32>,
    message: Option<String>,
    next_start: Option<Instant>,
    probe_failures: u32,
    stop_deadline: Option<Instant>,
    killed: bool,
    replace: Option<Assignment>,
    download: Option<tokio::task::JoinHandle<Result<PathBuf, FetchError>>>,
}

impl Managed {
    fn new(assignment: Assignment, port: u16) -> Self {
        Self {
            assignment,
            port,
            process: None,
            state: InstanceState::Assigned,
            restarts: 0,
            crashes: 0,
            exit_code: None,
            message: None,
            next_start: Some(Instant::now()),
            probe_failures: 0,
            stop_deadline: None,
            killed: false,
            replace: None,
            download: None,
        }
    }

    fn report(&self) -> InstanceReport {
        InstanceReport {
            instance_id: self.assignment.instance_id,
            generation: self.assignment.generation,
            state: self.state,
            port: Some(self.port),
            pid: self.process.as_ref().map(|p| p.pid),
            exit_code: self.exit_code,
            restarts: self.restarts,
            message: self.message.clone(),
        }
    }
}

/// What is persisted per instance.
#[derive(Deserialize, Serialize)]
struct Saved {
    assignment: Assignment,
    port: u16,
    pid: Option<u32>,
    start_time: Option<u64>,
    restarts: u32,
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`), unless it is gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Signals the process group an engine leads. Never 0 or 1: `killpg(0)` is the agent's own
/// group and group 1 is init's.
pub(crate) fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// Supervises this node's instances.
pub struct Supervisor {
    cfg: Config,
    managed: BTreeMap<Uuid, Managed>,
    probe: reqwest::Client,
    dirty: bool,
}

impl Supervisor {
    /// The supervisor, adopting the engines a previous agent left running.
    ///
    /// # Errors
    /// When the data directory cannot be used.
    pub fn load(cfg: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(cfg.logs())?;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut managed = BTreeMap::new();
        if let Ok(bytes) = std::fs::read(cfg.state_file()) {
            let saved: Vec<Saved> = serde_json::from_slice(&bytes).unwrap_or_default();
            for s in saved {
                let id = s.assignment.instance_id;
                let mut m = Managed::new(s.assignment, s.port);
                m.restarts = s.restarts;
                match (s.pid, s.start_time) {
                    (Some(pid), Some(at)) if start_time(pid) == Some(at) => {
                        tracing::info!(instance.id = %id, pid, "adopted a running engine");
                        m.process = Some(Process {
                            pid,
                            start_time: at,
                            child: None,
                        });
                        m.state = InstanceState::Starting;
                        m.next_start = None;
                    }
                    (Some(_), _) => {
                        m.state = InstanceState::Exited;
                        m.message = Some("its engine was gone when the agent started".into());
                        m.restarts += 1;
                    }
                    _ => {}
                }
                managed.insert(id, m);
            }
        }
        Ok(Self {
            cfg,
            managed,
            probe,
            dirty: true,
        })
    }

    fn save(&self) {
        let saved: Vec<Saved> = self
            .managed
            .values()
            .map(|m| Saved {
                assignment: m.assignment.clone(),
                port: m.port,
                pid: m.process.as_ref().map(|p| p.pid),
                start_time: m.process.as_ref().map(|p| p.start_time),
                restarts: m.restarts,
            })
            .collect();
        let path = self.cfg.state_file();
        let partial = path.with_extension("json.partial");
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&partial, bytes))
            .and_then(|()| std::fs::rename(&partial, &path));
        if let Err(err) = result {
            tracing::error!(error = %err, "could not persist the instances; a restarted agent may not adopt them");
        }
    }

    /// What every instance does, for the platform.
    #[must_use]
    pub fn reports(&self) -> Vec<InstanceReport> {
        self.managed.values().map(Managed::report).collect()
    }

    /// Runs until the assignments channel closes: reconciles on every change and every tick,
    /// and hands reports to `report` when something changed (and every `report_every`).
    pub async fn run<F, Fut>(
        mut self,
        mut desired: watch::Receiver<Option<Vec<Assignment>>>,
        report_every: Duration,
        mut report: F,
    ) where
        F: FnMut(Vec<InstanceReport>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_report: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = desired.changed() => if changed.is_err() { return },
            }
            let wanted = desired.borrow_and_update().clone();
            // Until the platform has answered once, nothing adopted is stopped.
            if let Some(wanted) = wanted {
                self.reconcile(&wanted);
            }
            self.supervise().await;
            let due = last_report.is_none_or(|at| at.elapsed() >= report_every);
            if (self.dirty || due) && report(self.reports()).await {
                self.dirty = false;
                last_report = Some(Instant::now());
            }
        }
    }

    fn free_port(&self) -> Option<u16> {
        self.cfg.ports.clone().find(|port| {
            !self.managed.values().any(|m| m.port == *port)
                && std::net::TcpListener::bind((self.cfg.host.as_str(), *port)).is_ok()
        })
    }

    fn begin_stop(m: &mut Managed, grace: Duration) {
        if let Some(task) = m.download.take() {
            task.abort();
        }
        if m.stop_deadline.is_some() {
            return;
        }
        m.stop_deadline = Some(Instant::now() + grace);
        m.killed = false;
        if let Some(p) = &m.process {
            signal_group(p.pid, nix::sys::signal::Signal::SIGTERM);
            m.state = InstanceState::Stopping;
        } else {
            m.state = InstanceState::Stopped;
        }
    }

    fn reconcile(&mut self, wanted: &[Assignment]) {
        let by_id: HashMap<Uuid, &Assignment> = wanted.iter().map(|a| (a.instance_id, a)).collect();
        for (id, m) in &mut self.managed {
            match by_id.get(id) {
                None => {
                    if m.replace.take().is_some() || m.stop_deadline.is_none() {
                        tracing::info!(instance.id = %id, "instance no longer assigned; stopping it");
                        Self::begin_stop(m, self.cfg.grace);
                        self.dirty = true;
                    }
                }
                Some(a) if **a != m.assignment && m.replace.as_ref() != Some(*a) => {
                    tracing::info!(instance.id = %id, generation = a.generation, "instance changed; restarting it");
                    m.replace = Some((*a).clone());
                    Self::begin_stop(m, self.cfg.grace);
                    self.dirty = true;
                }
                Some(_) => {}
            }
        }
        for a in wanted {
            if self.managed.contains_key(&a.instance_id) {
                continue;
            }
            match self.free_port() {
                Some(port) => {
                    self.managed
                        .insert(a.instance_id, Managed::new(a.clone(), port));
                }
                None => {
                    let mut m = Managed::new(a.clone(), 0);
                    m.state = InstanceState::Failed;
                    m.next_start = None;
                    m.message = Some(format!(
                        "no free port in {}-{}",
                        self.cfg.ports.start(),
                        self.cfg.ports.end()
                    ));
                    self.managed.insert(a.instance_id, m);
                }
            }
            self.dirty = true;
        }
    }

    async fn supervise(&mut self) {
        let now = Instant::now();
        let mut changed_process = false;
        let mut finished: Vec<Uuid> = Vec::new();
        let ids: Vec<Uuid> = self.managed.keys().copied().collect();
        for id in &ids {
            let Some(m) = self.managed.get_mut(id) else {
                continue;
            };
            // Exits.
            let exit = match &mut m.process {
                Some(Process {
                    child: Some(child), ..
                }) => match child.try_wait() {
                    Ok(Some(status)) => Some(exit_code(status)),
                    _ => None,
                },
                Some(p) => (start_time(p.pid) != Some(p.start_time)).then_some(None),
                None => None,
            };
            if let Some(code) = exit {
                m.process = None;
                changed_process = true;
                self.dirty = true;
                if m.stop_deadline.is_some() {
                    m.state = InstanceState::Stopped;
                } else {
                    m.exit_code = code;
                    m.restarts += 1;
                    m.crashes += 1;
                    let delay = self.cfg.backoff(m.crashes);
                    m.next_start = Some(now + delay);
                    m.state = InstanceState::Exited;
                    m.message = Some(format!(
                        "exited{}; restart {} in {} s",
                        code.map(|c| format!(" with code {c}")).unwrap_or_default(),
                        m.restarts,
                        delay.as_secs_f64()
                    ));
                    tracing::warn!(instance.id = %id, code, restart_in = ?delay, "engine exited; restarting after the backoff");
                }
            }
            // Stops.
            if let Some(deadline) = m.stop_deadline {
                match &m.process {
                    None => {
                        if let Some(next) = m.replace.take() {
                            let port = m.port;
                            *m = Managed::new(next, port);
                        } else {
                            finished.push(*id);
                        }
                        self.dirty = true;
                        changed_process = true;
                    }
                    Some(p) if now >= deadline && !m.killed => {
                        tracing::warn!(instance.id = %id, pid = p.pid, "engine ignored SIGTERM; sending SIGKILL");
                        signal_group(p.pid, nix::sys::signal::Signal::SIGKILL);
                        m.killed = true;
                    }
                    Some(_) => {}
                }
                continue;
            }
            // Starts.
            let due = m.process.is_none()
                && matches!(
                    m.state,
                    InstanceState::Assigned | InstanceState::Exited | InstanceState::Downloading
                )
                && m.next_start.is_some_and(|at| at <= now);
            if due && self.start(*id).await {
                changed_process = true;
            }
        }
        for id in finished {
            self.managed.remove(&id);
            let (current, previous) = log_paths(&self.cfg.logs(), id);
            let _ = std::fs::remove_file(current);
            let _ = std::fs::remove_file(previous);
        }
        self.probe_all().await;
        self.cap_logs();
        if changed_process {
            self.save();
        }
    }

    fn fail(&mut self, id: Uuid, message: String) {
        if let Some(m) = self.managed.get_mut(&id) {
            tracing::error!(instance.id = %id, reason = %message, "instance cannot start");
            m.state = InstanceState::Failed;
            m.message = Some(message);
            m.next_start = None;
            self.dirty = true;
        }
    }

    /// Resolves the model; `None` while it downloads (or after a failure was recorded).
    async fn model(&mut self, id: Uuid) -> Option<ModelLocation> {
        let cache = self.cfg.data_dir.join("models");
        let m = self.managed.get_mut(&id)?;
        match m.assignment.source.clone() {
            ModelSource::Local { path } => {
                if Path::new(&path).exists() {
                    Some(ModelLocation::Path(path.into()))
                } else {
                    self.fail(
                        id,
                        format!("the model path {path} does not exist on this node"),
                    );
                    None
                }
            }
            ModelSource::HuggingFace { repo } | ModelSource::ModelScope { repo } => {
                Some(ModelLocation::Hub(repo))
            }
            ModelSource::Url { url, sha256 } => {
                let Some(task) = &m.download else {
                    m.download = Some(tokio::spawn(
                        async move { fetch(&cache, &url, &sha256).await },
                    ));
                    m.state = InstanceState::Downloading;
                    m.message = Some("downloading the model file".into());
                    self.dirty = true;
                    return None;
                };
                if !task.is_finished() {
                    return None;
                }
                let task = m.download.take()?;
                match task.await {
                    Ok(Ok(path)) => Some(ModelLocation::Path(path)),
                    Ok(Err(err @ (FetchError::Mismatch { .. } | FetchError::Refused(_)))) => {
                        self.fail(id, err.to_string());
                        None
                    }
                    Ok(Err(err)) => {
                        m.crashes += 1;
                        let delay = self.cfg.backoff(m.crashes);
                        m.next_start = Some(Instant::now() + delay);
                        m.message = Some(format!("{err}; retrying in {} s", delay.as_secs_f64()));
                        self.dirty = true;
                        None
                    }
                    Err(_) => None,
                }
            }
        }
    }

    /// Starts an instance's engine; `true` when a process started.
    async fn start(&mut self, id: Uuid) -> bool {
        let Some(model) = self.model(id).await else {
            return false;
        };
        let Some(m) = self.managed.get(&id) else {
            return false;
        };
        let launch = match render(
            &m.assignment,
            &self.cfg.host,
            m.port,
            &model,
            &self.cfg.tools,
        ) {
            Ok(launch) => launch,
            Err(message) => {
                self.fail(id, message);
                return false;
            }
        };
        let (current, previous) = log_paths(&self.cfg.logs(), id);
        if current.exists() {
            let _ = std::fs::rename(&current, &previous);
        }
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
        {
            Ok(log) => log,
            Err(err) => {
                self.fail(id, format!("cannot write its log: {err}"));
                return false;
            }
        };
        let Ok(log_err) = log.try_clone() else {
            self.fail(id, "cannot write its log".into());
            return false;
        };
        let mut command = tokio::process::Command::new(&launch.program);
        command
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        match command.spawn() {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                let started = start_time(pid).unwrap_or(0);
                if let Some(m) = self.managed.get_mut(&id) {
                    m.process = Some(Process {
                        pid,
                        start_time: started,
                        child: Some(child),
                    });
                    m.state = InstanceState::Starting;
                    m.message = None;
                    m.next_start = None;
                    m.probe_failures = 0;
                }
                tracing::info!(instance.id = %id, pid, program = %launch.program, "engine started");
                self.dirty = true;
                true
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.fail(id, format!("engine program not found: {}", launch.program));
                false
            }
            Err(err) => {
                self.fail(id, format!("cannot start {}: {err}", launch.program));
                false
            }
        }
    }

    fn probe_host(&self) -> String {
        match self.cfg.host.as_str() {
            "0.0.0.0" => "127.0.0.1".to_owned(),
            "::" | "[::]" => "[::1]".to_owned(),
            host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
            host => host.to_owned(),
        }
    }

    async fn probe_all(&mut self) {
        let host = self.probe_host();
        let targets: Vec<(Uuid, u16)> = self
            .managed
            .iter()
            .filter(|(_, m)| {
                m.process.is_some()
                    && m.stop_deadline.is_none()
                    && matches!(
                        m.state,
                        InstanceState::Starting | InstanceState::Ready | InstanceState::Unhealthy
                    )
            })
            .map(|(id, m)| (*id, m.port))
            .collect();
        let client = &self.probe;
        let results = futures_util::future::join_all(targets.iter().map(|(id, port)| {
            let host = host.clone();
            async move {
                let ok = match client
                    .get(format!("http://{host}:{port}/health"))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) if r.status().as_u16() == 404 => client
                        .get(format!("http://{host}:{port}/v1/models"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    _ => false,
                };
                (*id, ok)
            }
        }))
        .await;
        for (id, ok) in results {
            let Some(m) = self.managed.get_mut(&id) else {
                continue;
            };
            match (m.state, ok) {
                (InstanceState::Starting | InstanceState::Unhealthy, true) => {
                    tracing::info!(instance.id = %id, port = m.port, "engine ready");
                    m.state = InstanceState::Ready;
                    m.crashes = 0;
                    m.probe_failures = 0;
                    m.message = None;
                    self.dirty = true;
                }
                (InstanceState::Ready, false) => {
                    m.probe_failures += 1;
                    if m.probe_failures >= 2 {
                        tracing::warn!(instance.id = %id, "engine stopped answering its probe");
                        m.state = InstanceState::Unhealthy;
                        m.message = Some("stopped answering its readiness probe".into());
                        self.dirty = true;
                    }
                }
                (InstanceState::Ready, true) => m.probe_failures = 0,
                _ => {}
            }
        }
    }

    fn cap_logs(&self) {
        for id in self.managed.keys() {
            let (current, _) = log_paths(&self.cfg.logs(), *id);
            if std::fs::metadata(&current).is_ok_and(|m| m.len() > self.cfg.log_max_bytes)
                && let Ok(file) = std::fs::OpenOptions::new().write(true).open(&current)
            {
                // The engine writes with O_APPEND: it goes on at the new end.
                let _ = file.set_len(0);
                tracing::info!(instance.id = %id, max = self.cfg.log_max_bytes, "engine log truncated at its cap");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let cfg = Config {
            host: "127.0.0.1".into(),
            ports: 1..=2,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            grace: Duration::from_secs(1),
            log_max_bytes: 1,
            data_dir: PathBuf::new(),
            tools: Tools {
                maas_engine: PathBuf::new(),
                llama_server: None,
                llama_python: String::new(),
                llama_launcher: PathBuf::new(),
            },
        };
        let secs: Vec<u64> = (1..=7).map(|n| cfg.backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn the_start_time_of_this_process_is_read_and_a_missing_pid_has_none() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX - 1), None);
    }
}
