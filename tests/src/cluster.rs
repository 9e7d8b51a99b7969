//! A cluster of real processes for deployment tests and benchmarks: `maas-api`, `maas-worker`s
//! and `maas-agent`s (with a fake `nvidia-smi` listing as many GPUs as asked) on loopback over
//! one test database and Redis prefix; the engines the agents start are killed with the cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::process::{free_port, wait_ready};
use crate::{TestApp, binary, eventually, platform_command};

/// Fast liveness, sync and backoff, so that the tests see every transition in seconds.
pub const FAST: [(&str, &str); 10] = [
    ("MAAS__COMPUTE__HEARTBEAT_INTERVAL_SECS", "1"),
    ("MAAS__COMPUTE__REPORT_INTERVAL_SECS", "2"),
    ("MAAS__COMPUTE__MISSED_HEARTBEATS_BEFORE_NOT_READY", "2"),
    ("MAAS__COMPUTE__OFFLINE_AFTER_SECS", "4"),
    ("MAAS__COMPUTE__LIVENESS_SCHEDULE", "* * * * * *"),
    ("MAAS__COMPUTE__STATUS_SYNC_SCHEDULE", "* * * * * *"),
    ("MAAS__COMPUTE__RESCHEDULE_AFTER_OFFLINE_SECS", "2"),
    ("MAAS__COMPUTE__DEPLOY_TIMEOUT_SECS", "120"),
    ("MAAS__COMPUTE__PENDING_RETRY_SECS", "1"),
    ("MAAS__COMPUTE__DIRECTORY_REFRESH_SECS", "30"),
];

pub const WAIT: Duration = Duration::from_secs(90);

pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn log_file(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
}

pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILL to the process group `pid` leads (an engine; the agent starts each in its own).
/// Not through `kill(1)`: this machine's `kill -9 -PID` signalled every process.
///
/// # Panics
/// On a pid that is not a real process group leader's (0, 1 or out of range).
pub fn kill_group(pid: u64) {
    let pid = i32::try_from(pid).unwrap();
    assert!(pid > 1, "refusing to signal process group {pid}");
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Engines whose command line names `served` (each engine is started with its served name).
pub fn engines_serving(served: &str) -> Vec<u64> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&served.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A `nvidia-smi` listing `n` GPUs.
pub fn fake_nvidia_smi(dir: &Path, n: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join(format!("bin-{n}"));
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    let mut body = String::from("#!/bin/sh\n");
    for i in 0..n {
        body.push_str(&format!(
            "echo '{i}, GPU-{i:04}, NVIDIA H100 80GB HBM3, 81559, 0, 0, 40'\n"
        ));
    }
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

pub struct Agent {
    pub child: Child,
    pub data: PathBuf,
    pub name: String,
    pub path_dir: PathBuf,
    pub ports: String,
    pub extra: Vec<String>,
}

/// Real processes of one test: the API, workers, agents, and the engines the agents start.
pub struct Cluster {
    pub app: TestApp,
    pub dir: Dir,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub api: Child,
    pub workers: Vec<Child>,
    pub agents: Vec<Agent>,
    pub env: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            kill9(&mut agent.child);
        }
        for agent in &self.agents {
            for pid in engine_pids(&agent.data) {
                kill_group(pid);
            }
        }
        for worker in &mut self.workers {
            kill9(worker);
        }
        kill9(&mut self.api);
    }
}

/// The engine pids an agent persisted.
pub fn engine_pids(data: &Path) -> Vec<u64> {
    std::fs::read(data.join("instances.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["pid"].as_u64())
        .collect()
}

impl Cluster {
    pub async fn start(env: &[(&str, &str)], workers: usize) -> Self {
        let app = TestApp::spawn().await;
        let (_, admin) = app.user_with_token("root", &["admin"]).await;
        let dir =
            std::env::temp_dir().join(format!("maas-deploy-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = Dir(dir);
        let mut env: Vec<(String, String)> = FAST
            .iter()
            .chain(env.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push((
            "MAAS__STORAGE__DIR".into(),
            dir.0.join("uploads").display().to_string(),
        ));
        let port = free_port();
        let (out, err) = log_file(&dir.0, "api");
        let mut api = platform_command("maas-api", &app.db.url, app.keyspace.prefix());
        api.env("MAAS__SERVER__PORT", port.to_string())
            .env("MAAS__SERVER__WORKERS", "2")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(err);
        let api = api.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut cluster = Self {
            app,
            dir,
            base,
            admin,
            client: reqwest::Client::new(),
            api,
            workers: Vec::new(),
            agents: Vec::new(),
            env,
        };
        for _ in 0..workers {
            let worker = cluster.spawn_worker();
            cluster.workers.push(worker);
        }
        assert!(
            wait_ready(&cluster.base).await,
            "maas-api never became ready"
        );
        cluster
    }

    /// Another `maas-api` replica on the same database and Redis prefix; answers it and its
    /// base URL once it is ready.
    pub async fn spawn_api(&self, name: &str) -> (Child, String) {
        self.spawn_api_with(name, &[]).await
    }

    /// [`Self::spawn_api`] with more settings in the environment.
    pub async fn spawn_api_with(&self, name: &str, extra: &[(&str, &str)]) -> (Child, String) {
        let port = free_port();
        let (out, err) = log_file(&self.dir.0, name);
        let mut api = platform_command("maas-api", &self.app.db.url, self.app.keyspace.prefix());
        api.env("MAAS__SERVER__PORT", port.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdout(out)
            .stderr(err);
        let child = api.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        assert!(wait_ready(&base).await, "{name} never became ready");
        (child, base)
    }

    pub fn spawn_worker(&self) -> Child {
        let n = self.workers.len();
        let (out, err) = log_file(&self.dir.0, &format!("worker-{n}"));
        let mut worker =
            platform_command("maas-worker", &self.app.db.url, self.app.keyspace.prefix());
        worker
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(err);
        worker.spawn().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a server; answers its id and join token.
    pub async fn server(&self, name: &str, gpus: u32) -> (String, String) {
        let (status, created) = self
            .send(
                reqwest::Method::POST,
                "/servers",
                Some(json!({"name": name, "address": "127.0.0.1", "expected_gpus": gpus})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["server"]["id"].as_str().unwrap().to_owned(),
            created["join_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers a CPU server `name`, starts its agent with `ports` engine ports and waits
    /// until it is ready; answers the server's id, its join token and the agent's index.
    pub async fn node(&mut self, name: &str, ports: u16) -> (String, String, usize) {
        let (id, token) = self.server(name, 0).await;
        let agent = self.agent(name, Some(&token), 0, &range(ports));
        self.wait_server(&id, "ready").await;
        (id, token, agent)
    }

    /// Starts an agent for server `name` with `gpus` fake GPUs and its own port range.
    pub fn agent(&mut self, name: &str, token: Option<&str>, gpus: u32, ports: &str) -> usize {
        self.agent_with(name, token, gpus, ports, &[])
    }

    /// [`Self::agent`] with extra agent arguments (kept across restarts; later ones win).
    pub fn agent_with(
        &mut self,
        name: &str,
        token: Option<&str>,
        gpus: u32,
        ports: &str,
        extra: &[&str],
    ) -> usize {
        let data = self.dir.0.join(format!("agent-{name}"));
        let path_dir = fake_nvidia_smi(&self.dir.0, gpus);
        let mut agent = Agent {
            child: Command::new("true").spawn().unwrap(),
            data,
            name: name.to_owned(),
            path_dir,
            ports: ports.to_owned(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        agent.child = self.spawn_agent(&agent, token);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    pub fn spawn_agent(&self, agent: &Agent, token: Option<&str>) -> Child {
        let (out, err) = log_file(&self.dir.0, &format!("agent-{}", agent.name));
        let mut cmd = Command::new(binary("maas-agent"));
        cmd.args([
            "--server",
            &self.base,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&agent.data)
        .args([
            "--engine-host",
            "127.0.0.1",
            "--port-range",
            &agent.ports,
            "--restart-backoff-secs",
            "1",
            "--restart-backoff-max-secs",
            "4",
            "--stop-grace-secs",
            "3",
        ])
        .env(
            "PATH",
            format!(
                "{}:{}",
                agent.path_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RUST_LOG", "info")
        .env_remove("MAAS_AGENT_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        if let Ok(python) = std::env::var("MAAS_LLAMA_PYTHON") {
            cmd.args(["--llama-python", &python]);
        }
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/xllamacpp-server.py");
        cmd.arg("--llama-launcher").arg(launcher);
        cmd.args(&agent.extra);
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        cmd.spawn().unwrap()
    }

    /// How many engines agent `index` persisted as its own.
    pub fn agent_instances(&self, index: usize) -> usize {
        engine_pids(&self.agents[index].data).len()
    }

    pub fn restart_agent(&mut self, index: usize) {
        let child = self.spawn_agent(&self.agents[index], None);
        self.agents[index].child = child;
    }

    pub async fn wait_server(&self, id: &str, status: &str) -> Value {
        eventually(WAIT, || async {
            let s = self.get(&format!("/servers/{id}")).await;
            (s["status"] == status).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("server {id} never turned {status}"))
    }

    pub async fn model(
        &self,
        name: &str,
        source: Value,
        capabilities: &[&str],
        engine: &str,
    ) -> String {
        let (status, model) = self
            .send(
                reqwest::Method::POST,
                "/models",
                Some(
                    json!({"name": name, "family": "test", "context_length": 2048,
                    "capabilities": capabilities, "source": source, "default_engine": engine}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{model}");
        model["id"].as_str().unwrap().to_owned()
    }

    pub async fn deploy(&self, body: Value) -> Value {
        let (status, created) = self
            .send(reqwest::Method::POST, "/deployments", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    pub async fn deployment(&self, id: &str) -> Value {
        self.get(&format!("/deployments/{id}")).await
    }

    pub async fn instances(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/deployments/{id}/instances")).await["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/deployments/{id}/events?limit=200"))
            .await["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the deployment is `state` with exactly `ready` ready instances and nothing
    /// else.
    pub async fn settle(&self, id: &str, state: &str, ready: usize) -> Vec<Value> {
        let settled = eventually(WAIT, || async {
            let d = self.deployment(id).await;
            let instances = self.instances(id).await;
            let all_ready = instances.iter().all(|i| i["state"] == "ready");
            (d["state"] == state && instances.len() == ready && all_ready).then_some(instances)
        })
        .await;
        match settled {
            Some(instances) => instances,
            None => panic!(
                "deployment {id} never settled as {state} with {ready} ready instance(s): {} {:?} {:?}",
                self.deployment(id).await,
                self.instances(id).await,
                self.events(id)
                    .await
                    .iter()
                    .map(|e| e["message"].clone())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// A deployment, its instances and its deploy log, for a failure message.
    pub async fn dump(&self, id: &str) -> String {
        let events: Vec<String> = self
            .events(id)
            .await
            .iter()
            .map(|e| format!("{} {}", e["kind"], e["message"]))
            .collect();
        format!(
            "deployment {}\ninstances {:?}\nevents {events:#?}",
            self.deployment(id).await,
            self.instances(id).await
        )
    }

    pub async fn developer_key(&self) -> String {
        let (_, token) = self.app.user_with_token("dev", &["developer"]).await;
        self.app.create_key(&token, json!({"name": "k"})).await.1
    }

    pub async fn chat(&self, key: &str, model: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}))
            .send()
            .await
            .unwrap()
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

pub fn chat_model(models: &Path) -> Value {
    json!({"kind": "local", "path": models.join("SmolLM2-135M-Instruct.Q4_1.gguf").display().to_string()})
}

pub fn range(width: u16) -> String {
    let first = free_port();
    format!("{first}-{}", first.saturating_add(width - 1))
}
