//! Deployments end to end: real `maas-api`, `maas-worker`s and `maas-agent`s on loopback, real
//! engines (`maas-engine` with the small models, llama.cpp over `xllamacpp`), real PostgreSQL
//! and Redis. Processes are killed with SIGKILL to prove that deployments converge: no
//! duplicate engine, no leaked port or GPU slot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_tests::engine::models_dir;
use maas_tests::process::{free_port, wait_ready};
use maas_tests::{TestApp, binary, eventually, platform_command};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Fast liveness, sync and backoff, so that the tests see every transition in seconds.
const FAST: [(&str, &str); 10] = [
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

const WAIT: Duration = Duration::from_secs(90);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn log_file(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

fn kill_group(pid: u64) {
    let _ = Command::new("kill")
        .args(["-9", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Engines whose command line names `served` (each engine is started with its served name).
fn engines_serving(served: &str) -> Vec<u64> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.iter().any(|a| *a == served.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A `nvidia-smi` listing `n` GPUs.
fn fake_nvidia_smi(dir: &Path, n: u32) -> PathBuf {
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

struct Agent {
    child: Child,
    data: PathBuf,
    name: String,
    path_dir: PathBuf,
    ports: String,
}

/// Real processes of one test: the API, workers, agents, and the engines the agents start.
struct Cluster {
    app: TestApp,
    dir: Dir,
    base: String,
    admin: String,
    client: reqwest::Client,
    api: Child,
    workers: Vec<Child>,
    agents: Vec<Agent>,
    env: Vec<(String, String)>,
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
fn engine_pids(data: &Path) -> Vec<u64> {
    std::fs::read(data.join("instances.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["pid"].as_u64())
        .collect()
}

impl Cluster {
    async fn start(env: &[(&str, &str)], workers: usize) -> Self {
        let app = TestApp::spawn().await;
        let (_, admin) = app.user_with_token("root", &["admin"]).await;
        let dir = std::env::temp_dir().join(format!("maas-deploy-{}", uuid::Uuid::now_v7().simple()));
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
        assert!(wait_ready(&cluster.base).await, "maas-api never became ready");
        cluster
    }

    fn spawn_worker(&self) -> Child {
        let n = self.workers.len();
        let (out, err) = log_file(&self.dir.0, &format!("worker-{n}"));
        let mut worker = platform_command("maas-worker", &self.app.db.url, self.app.keyspace.prefix());
        worker
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(err);
        worker.spawn().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn get(&self, path: &str) -> Value {
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

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a server; answers its id and join token.
    async fn server(&self, name: &str, gpus: u32) -> (String, String) {
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

    /// Starts an agent for server `name` with `gpus` fake GPUs and its own port range.
    fn agent(&mut self, name: &str, token: Option<&str>, gpus: u32, ports: &str) -> usize {
        let data = self.dir.0.join(format!("agent-{name}"));
        let path_dir = fake_nvidia_smi(&self.dir.0, gpus);
        let mut agent = Agent {
            child: Command::new("true").spawn().unwrap(),
            data,
            name: name.to_owned(),
            path_dir,
            ports: ports.to_owned(),
        };
        agent.child = self.spawn_agent(&agent, token);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    fn spawn_agent(&self, agent: &Agent, token: Option<&str>) -> Child {
        let (out, err) = log_file(&self.dir.0, &format!("agent-{}", agent.name));
        let mut cmd = Command::new(binary("maas-agent"));
        cmd.args(["--server", &self.base, "--listen", "127.0.0.1:0", "--data-dir"])
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
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        cmd.spawn().unwrap()
    }

    fn restart_agent(&mut self, index: usize) {
        let child = self.spawn_agent(&self.agents[index], None);
        self.agents[index].child = child;
    }

    async fn wait_server(&self, id: &str, status: &str) -> Value {
        eventually(WAIT, || async {
            let s = self.get(&format!("/servers/{id}")).await;
            (s["status"] == status).then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("server {id} never turned {status}"))
    }

    async fn model(&self, name: &str, source: Value, capabilities: &[&str], engine: &str) -> String {
        let (status, model) = self
            .send(
                reqwest::Method::POST,
                "/models",
                Some(json!({"name": name, "family": "test", "context_length": 2048,
                    "capabilities": capabilities, "source": source, "default_engine": engine})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{model}");
        model["id"].as_str().unwrap().to_owned()
    }

    async fn deploy(&self, body: Value) -> Value {
        let (status, created) = self.send(reqwest::Method::POST, "/deployments", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    async fn deployment(&self, id: &str) -> Value {
        self.get(&format!("/deployments/{id}")).await
    }

    async fn instances(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/deployments/{id}/instances")).await["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/deployments/{id}/events?limit=200")).await["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the deployment is `state` with exactly `ready` ready instances and nothing
    /// else.
    async fn settle(&self, id: &str, state: &str, ready: usize) -> Vec<Value> {
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
                self.events(id).await.iter().map(|e| e["message"].clone()).collect::<Vec<_>>()
            ),
        }
    }

    async fn developer_key(&self) -> String {
        let (_, token) = self.app.user_with_token("dev", &["developer"]).await;
        self.app.create_key(&token, json!({"name": "k"})).await.1
    }

    async fn chat(&self, key: &str, model: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}))
            .send()
            .await
            .unwrap()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

fn chat_model(models: &Path) -> Value {
    json!({"kind": "local", "path": models.join("SmolLM2-135M-Instruct.Q4_1.gguf").display().to_string()})
}

fn range(width: u16) -> String {
    let first = free_port();
    format!("{first}-{}", first.saturating_add(width - 1))
}

#[tokio::test]
async fn a_builtin_deployment_serves_through_the_gateway_and_follows_every_action() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, token) = c.server("cpu-1", 0).await;
    let agent = c.agent("cpu-1", Some(&token), 0, &range(20));
    c.wait_server(&server_id, "ready").await;
    let chat = c.model("smollm2", chat_model(&models), &["chat"], "builtin").await;
    let embed = c
        .model(
            "minilm",
            json!({"kind": "local", "path": models.join("all-MiniLM-L6-v2").display().to_string()}),
            &["embedding"],
            "builtin",
        )
        .await;

    // Deploy: pending, placed, ready; then answered through /v1 and metered.
    let created = c
        .deploy(json!({"name": "smol", "model_id": chat, "served_names": ["smol", "smol-alias"]}))
        .await;
    assert_eq!(created["state"], "pending");
    assert_eq!(created["engine"], "builtin");
    let id = created["id"].as_str().unwrap().to_owned();
    let vectors = c.deploy(json!({"name": "minilm", "model_id": embed})).await;
    let vectors_id = vectors["id"].as_str().unwrap().to_owned();
    let first = c.settle(&id, "running", 1).await;
    c.settle(&vectors_id, "running", 1).await;
    let pid = first[0]["pid"].as_u64().unwrap();
    assert!(alive(pid));
    assert_eq!(first[0]["server_id"], server_id.as_str());
    assert_eq!(c.deployment(&id).await["status"], "running");

    let key = c.developer_key().await;
    for name in ["smol", "smol-alias"] {
        let answer = c.chat(&key, name).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    }
    let embedded = c
        .client
        .post(format!("{}/v1/embeddings", c.base))
        .bearer_auth(&key)
        .json(&json!({"model": "minilm", "input": ["a b c"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(embedded.status(), StatusCode::OK);
    let embedded: Value = embedded.json().await.unwrap();
    assert_eq!(embedded["data"][0]["embedding"].as_array().unwrap().len(), 384);
    let models_list: Value = c
        .client
        .get(format!("{}/v1/models", c.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: BTreeSet<&str> = models_list["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(listed, BTreeSet::from(["minilm", "smol", "smol-alias"]));
    let metered = eventually(WAIT, || async {
        let n = c.app.count("SELECT count(*) FROM usage_records WHERE upstream IN ('deployment/smol', 'deployment/smol-alias', 'deployment/minilm')").await;
        (n == 3).then_some(n)
    })
    .await;
    assert_eq!(metered, Some(3), "every call through a deployment is metered");

    // The per-deployment chat keeps its history in a conversation.
    let talk = c
        .client
        .post(c.url(&format!("/deployments/{id}/chat/completions")))
        .bearer_auth(&c.admin)
        .json(&json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(talk.status(), StatusCode::OK);
    let conversation = talk.headers()["x-conversation-id"].to_str().unwrap().to_owned();
    let kept = eventually(WAIT, || async {
        let n = c.app.count(&format!("SELECT count(*) FROM conversation_messages WHERE conversation_id = '{conversation}'")).await;
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(kept, Some(2));

    // Scale 1 → 2 → 1: distinct ports; the removed engine is gone.
    let (status, _) = c
        .send(reqwest::Method::PATCH, &format!("/deployments/{id}/replicas"), Some(json!({"replicas": 2})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let two = c.settle(&id, "running", 2).await;
    let ports: BTreeSet<u64> = two.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 2);
    let second = two.iter().find(|i| i["replica"] == 1).unwrap()["pid"].as_u64().unwrap();
    let (status, _) = c
        .send(reqwest::Method::PATCH, &format!("/deployments/{id}/replicas"), Some(json!({"replicas": 1})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let one = c.settle(&id, "running", 1).await;
    assert_eq!(one[0]["pid"].as_u64(), Some(pid), "replica 0 was left alone");
    assert!(
        eventually(WAIT, || async { (!alive(second)).then_some(()) }).await.is_some(),
        "the scaled-down engine was stopped"
    );
    assert_eq!(engines_serving("smol").len(), 1);

    // Restart: a new generation, a new process.
    let (status, restarted) = c.send(reqwest::Method::POST, &format!("/deployments/{id}/restart"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(restarted["generation"], 2);
    let after = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        let d = c.deployment(&id).await;
        (d["state"] == "running" && i.len() == 1 && i[0]["state"] == "ready" && i[0]["pid"].as_u64() != Some(pid) && i[0]["generation"] == 2)
            .then_some(i)
    })
    .await
    .expect("the restart never finished");
    assert!(!alive(pid));
    let pid = after[0]["pid"].as_u64().unwrap();

    // The engine's log, from the agent at its approved address.
    let server = c.get(&format!("/servers/{server_id}")).await;
    let agent_url = server["agent"]["url"].as_str().unwrap().to_owned();
    let (status, _) = c
        .send(reqwest::Method::POST, &format!("/servers/{server_id}/agent/approve"), Some(json!({"agent_url": agent_url})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let instance = after[0]["id"].as_str().unwrap().to_owned();
    let log = c
        .client
        .get(c.url(&format!("/deployments/{id}/instances/{instance}/logs?tail=50")))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), StatusCode::OK);
    let log = log.text().await.unwrap();
    assert!(log.contains("smol"), "the engine's own log: {log}");
    let other = c
        .client
        .get(c.url(&format!("/deployments/{vectors_id}/instances/{instance}/logs")))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "an instance of another deployment");

    // Stop: nothing runs, callers get 503 at once; start again.
    let (status, _) = c.send(reqwest::Method::POST, &format!("/deployments/{id}/stop"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    c.settle(&id, "stopped", 0).await;
    assert!(eventually(WAIT, || async { (!alive(pid)).then_some(()) }).await.is_some());
    let refused = eventually(WAIT, || async {
        let r = c.chat(&key, "smol").await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await
    .expect("a stopped deployment answers 503");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    let (status, _) = c.send(reqwest::Method::POST, &format!("/deployments/{id}/start"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    c.settle(&id, "running", 1).await;

    // Delete: instances, ports and slots end as desired; the name is free again.
    let (status, _) = c.send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT);
    let gone = eventually(WAIT, || async {
        let r = c.client.get(c.url(&format!("/deployments/{id}"))).bearer_auth(&c.admin).send().await.unwrap();
        (r.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deployment was never removed");
    assert_eq!(c.app.count(&format!("SELECT count(*) FROM instances WHERE deployment_id = '{id}'")).await, 0);
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 0);
    assert!(eventually(WAIT, || async { engines_serving("smol").is_empty().then_some(()) }).await.is_some());
    assert_eq!(c.app.count("SELECT count(*) FROM audit_events WHERE action = 'deployment.removed'").await, 1);
    let unknown = c.chat(&key, "smol").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // The log told the story.
    let kinds: BTreeSet<String> = c
        .events(&vectors_id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in ["created", "scheduled", "state", "instance_ready"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    let _ = agent;
}

#[tokio::test]
async fn a_killed_engine_is_restarted_with_backoff_and_a_restarted_agent_adopts_its_engines() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, token) = c.server("cpu-1", 0).await;
    let agent = c.agent("cpu-1", Some(&token), 0, &range(10));
    c.wait_server(&server_id, "ready").await;
    let model = c.model("smollm2", chat_model(&models), &["chat"], "builtin").await;
    let created = c.deploy(json!({"name": "crashy", "model_id": model})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = c.settle(&id, "running", 1).await;
    let pid = first[0]["pid"].as_u64().unwrap();

    // SIGKILL the engine: the agent notices, waits its backoff, starts it again.
    kill_group(pid);
    let restarted = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        (i.len() == 1 && i[0]["state"] == "ready" && i[0]["restarts"] == 1 && i[0]["pid"].as_u64() != Some(pid)).then_some(i)
    })
    .await
    .expect("the engine was never restarted");
    assert_eq!(restarted[0]["exit_code"], 137);
    let messages: Vec<String> = c.events(&id).await.iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect();
    assert!(
        messages.iter().any(|m| m.contains("exited with code 137") && m.contains("restart 1 in 1 s")),
        "the events say so: {messages:?}"
    );
    let pid = restarted[0]["pid"].as_u64().unwrap();

    // SIGKILL only the agent: the engine keeps serving; a new agent adopts the same pid.
    kill9(&mut c.agents[agent].child);
    let port = restarted[0]["port"].as_u64().unwrap();
    let direct = c
        .client
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "crashy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK, "the engine outlives its agent");
    c.restart_agent(agent);
    let adopted = eventually(WAIT, || async {
        let log = std::fs::read_to_string(c.dir.0.join("agent-cpu-1.log")).unwrap_or_default();
        log.contains("adopted a running engine").then_some(())
    })
    .await;
    assert!(adopted.is_some(), "the restarted agent adopted its engine");
    let same = c.settle(&id, "running", 1).await;
    assert_eq!(same[0]["pid"].as_u64(), Some(pid), "no second engine was started");
    assert_eq!(engines_serving("crashy"), vec![pid]);
    assert!(alive(pid));
}

#[tokio::test]
async fn a_worker_killed_mid_deploy_leaves_exactly_the_desired_instances_and_slots() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, token) = c.server("gpu-1", 2).await;
    c.agent("gpu-1", Some(&token), 2, &range(10));
    c.wait_server(&server_id, "ready").await;
    let model = c.model("smollm2", chat_model(&models), &["chat"], "builtin").await;
    let created = c
        .deploy(json!({"name": "pair", "model_id": model, "replicas": 2, "gpus_per_replica": 1}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    // kill -9 the worker as soon as it placed something, then start another one.
    let placed = eventually(WAIT, || async {
        let n = c.app.count(&format!("SELECT count(*) FROM instances WHERE deployment_id = '{id}'")).await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(placed.is_some());
    kill9(&mut c.workers[0]);
    let worker = c.spawn_worker();
    c.workers.push(worker);
    let instances = c.settle(&id, "running", 2).await;
    let replicas: BTreeSet<i64> = instances.iter().map(|i| i["replica"].as_i64().unwrap()).collect();
    assert_eq!(replicas, BTreeSet::from([0, 1]));
    let gpus: BTreeSet<u64> = instances.iter().flat_map(|i| i["gpus"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap())).collect();
    assert_eq!(gpus, BTreeSet::from([0, 1]), "one GPU each, none shared");
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
    assert_eq!(c.app.count("SELECT count(*) FROM instances").await, 2);
    assert_eq!(engines_serving("pair").len(), 2, "no duplicate engine");
    // The ledger would refuse a third GPU: the server has none left.
    let (status, _) = c
        .send(reqwest::Method::PATCH, &format!("/deployments/{id}/replicas"), Some(json!({"replicas": 3})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let pending = eventually(WAIT, || async {
        let d = c.deployment(&id).await;
        (d["state"] == "pending").then_some(d)
    })
    .await
    .expect("the third replica waits");
    assert!(
        pending["reason"].as_str().unwrap().contains("gpu-1: 0 of 2 GPUs free, 1 needed"),
        "{pending}"
    );
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
}

#[tokio::test]
async fn a_dead_node_leaves_routing_at_once_and_its_replica_moves_to_another_server() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (a_id, a_token) = c.server("node-a", 0).await;
    let a = c.agent("node-a", Some(&a_token), 0, &range(10));
    c.wait_server(&a_id, "ready").await;
    let model = c.model("smollm2", chat_model(&models), &["chat"], "builtin").await;
    let placement = json!({"servers": [a_id]});
    let created = c.deploy(json!({"name": "mover", "model_id": model, "placement": placement})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = c.settle(&id, "running", 1).await;
    let key = c.developer_key().await;
    assert_eq!(c.chat(&key, "mover").await.status(), StatusCode::OK);

    // A second API replica routes the same way.
    let replica_port = free_port();
    let (out, err) = log_file(&c.dir.0, "api-2");
    let mut replica = platform_command("maas-api", &c.app.db.url, c.app.keyspace.prefix());
    replica
        .env("MAAS__SERVER__PORT", replica_port.to_string())
        .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(out)
        .stderr(err);
    let mut replica = replica.spawn().unwrap();
    let replica_base = format!("http://127.0.0.1:{replica_port}");
    assert!(wait_ready(&replica_base).await);

    // The whole node dies: agent and engine.
    kill9(&mut c.agents[a].child);
    kill_group(first[0]["pid"].as_u64().unwrap());
    c.wait_server(&a_id, "not_ready").await;
    for base in [c.base.clone(), replica_base.clone()] {
        let answered = eventually(Duration::from_secs(5), || async {
            let started = Instant::now();
            let r = c
                .client
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "mover", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            (r.status() == StatusCode::SERVICE_UNAVAILABLE).then(|| started.elapsed())
        })
        .await
        .expect("every replica answers 503 once the node is not ready");
        assert!(answered < Duration::from_secs(2), "no hang: {answered:?}");
    }

    // Another server fits: after the offline grace the replica is placed there.
    let (b_id, b_token) = c.server("node-b", 0).await;
    c.agent("node-b", Some(&b_token), 0, &range(10));
    c.wait_server(&b_id, "ready").await;
    let (status, _) = c
        .send(reqwest::Method::PATCH, &format!("/deployments/{id}"), Some(json!({"placement": {"servers": []}})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let moved = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        (i.len() == 1 && i[0]["server_id"] == b_id.as_str() && i[0]["state"] == "ready").then_some(i)
    })
    .await;
    assert!(moved.is_some(), "the replica never moved: {:?}", c.instances(&id).await);
    c.wait_server(&a_id, "offline").await;
    let served = eventually(WAIT, || async {
        let r = c.chat(&key, "mover").await;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(served.is_some());
    kill9(&mut replica);
}

#[tokio::test]
async fn three_single_gpu_replicas_on_two_gpus_place_exactly_two_whatever_the_workers() {
    // No agent needed: two nodes join and report one GPU each over the API.
    let c = Cluster::start(&[("MAAS__COMPUTE__HEARTBEAT_INTERVAL_SECS", "600"), ("MAAS__COMPUTE__OFFLINE_AFTER_SECS", "3600")], 2).await;
    let mut servers = Vec::new();
    for name in ["gpu-a", "gpu-b"] {
        let (id, token) = c.server(name, 1).await;
        let joined: Value = c
            .client
            .post(c.url("/agents/join"))
            .json(&json!({"join_token": token, "hostname": name, "agent_version": "test", "agent_url": "http://127.0.0.1:9"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let credential = joined["node_credential"].as_str().unwrap().to_owned();
        let report = c
            .client
            .put(c.url(&format!("/nodes/{id}/report")))
            .bearer_auth(&credential)
            .json(&json!({"hostname": name, "agent_version": "test", "agent_url": "http://127.0.0.1:9",
                "resources": {"cpu_cores": 8, "cpu_usage_percent": 1.0, "memory_total_bytes": 17179869184u64, "memory_used_bytes": 0, "disks": [],
                    "gpus": [{"index": 0, "uuid": "GPU-1", "name": "H100", "memory_total_mib": 81559, "memory_used_mib": 0}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(report.status(), StatusCode::OK, "{}", report.text().await.unwrap());
        servers.push((id, credential));
    }
    let model = c
        .model("weights", json!({"kind": "hugging_face", "repo": "Qwen/Qwen2.5-0.5B-Instruct"}), &["chat"], "vllm")
        .await;
    let bodies: Vec<Value> = (0..3)
        .map(|n| json!({"name": format!("d{n}"), "model_id": model, "gpus_per_replica": 1}))
        .collect();
    let created = futures_util::future::join_all(bodies.into_iter().map(|b| c.deploy(b))).await;
    let ids: Vec<String> = created.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    let settled = eventually(WAIT, || async {
        let placed = c.app.count("SELECT count(*) FROM instances").await;
        let mut pending = Vec::new();
        for id in &ids {
            let d = c.deployment(id).await;
            if d["state"] == "pending" {
                pending.push(d);
            }
        }
        (placed == 2 && pending.len() == 1).then_some(pending)
    })
    .await
    .expect("exactly two placed and one pending");
    let reason = settled[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("0 of 1 replica(s) placed; waiting for room:"), "{reason}");
    assert!(reason.contains("gpu-a: 0 of 1 GPUs free, 1 needed"), "{reason}");
    assert!(reason.contains("gpu-b: 0 of 1 GPUs free, 1 needed"), "{reason}");
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
    assert_eq!(
        c.app.count("SELECT count(DISTINCT (server_id, gpu_index)) FROM gpu_slots").await,
        2
    );
    // Still two a while later: the retries of the pending one never double-book.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.app.count("SELECT count(*) FROM instances").await, 2);

    // A node speaks only for itself.
    let (a_id, a_credential) = &servers[0];
    let (b_id, _) = &servers[1];
    let theirs = c
        .client
        .get(c.url(&format!("/nodes/{b_id}/assignments")))
        .bearer_auth(a_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let body: Value = theirs.json().await.unwrap();
    assert_eq!(body["code"], "server_not_found");
    let forged = c
        .client
        .put(c.url(&format!("/nodes/{b_id}/instances")))
        .bearer_auth(a_credential)
        .json(&json!({"instances": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    let own: Value = c
        .client
        .get(c.url(&format!("/nodes/{a_id}/assignments?wait_secs=0")))
        .bearer_auth(a_credential)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["instances"].as_array().unwrap().len(), 1);
    // Reporting another node's instance id changes nothing.
    let b_instance: Value = c
        .client
        .get(c.url(&format!("/nodes/{b_id}/assignments?wait_secs=0")))
        .bearer_auth(&servers[1].1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_instance = b_instance["instances"][0]["instance_id"].as_str().unwrap().to_owned();
    let applied: Value = c
        .client
        .put(c.url(&format!("/nodes/{a_id}/instances")))
        .bearer_auth(a_credential)
        .json(&json!({"instances": [{"instance_id": b_instance, "generation": 1, "state": "ready", "port": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(applied["changed"], 0);
    assert_eq!(
        c.app.count(&format!("SELECT count(*) FROM instances WHERE id = '{b_instance}' AND state = 'assigned'")).await,
        1
    );
}

#[tokio::test]
async fn bad_deployments_fail_clearly_and_nothing_is_run_through_a_shell() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, token) = c.server("cpu-1", 0).await;
    let ports = range(1);
    c.agent("cpu-1", Some(&token), 0, &ports);
    c.wait_server(&server_id, "ready").await;
    let model = c.model("smollm2", chat_model(&models), &["chat"], "builtin").await;

    // Every bad field at once.
    let (status, body) = c
        .send(
            reqwest::Method::POST,
            "/deployments",
            Some(json!({"name": "bad name", "model_id": uuid::Uuid::now_v7(), "engine": "docker", "replicas": 65,
                "env": {"PORT": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "validation_failed");
    let fields: BTreeSet<&str> = body["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, BTreeSet::from(["model_id", "name", "engine", "replicas", "env"]));
    let (status, body) = c
        .send(reqwest::Method::POST, "/deployments", Some(json!({"name": "x", "model_id": model, "shell": true})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A shell-looking argument is one argv item: the engine refuses it, nothing runs it.
    let marker = std::env::temp_dir().join(format!("pwned-{}", uuid::Uuid::now_v7().simple()));
    let injected = format!("; touch {}", marker.display());
    let secret_env = "hf_live_secret_value_123";
    let created = c
        .deploy(json!({"name": "injected", "model_id": model, "args": ["--queue", injected], "env": {"HF_TOKEN": secret_env}}))
        .await;
    assert_eq!(created["env_names"], json!(["HF_TOKEN"]));
    assert!(!created.to_string().contains(secret_env), "env values are never returned");
    let id = created["id"].as_str().unwrap().to_owned();
    let exited = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        i.first().filter(|i| i["state"] == "exited" || i["restarts"].as_u64() > Some(0)).cloned()
    })
    .await
    .expect("the engine refused the argument and exited");
    assert_eq!(exited["exit_code"], 2, "clap's usage error");
    assert!(!marker.exists(), "the argument was never run by a shell");
    let server = c.get(&format!("/servers/{server_id}")).await;
    let agent_url = server["agent"]["url"].as_str().unwrap().to_owned();
    c.send(reqwest::Method::POST, &format!("/servers/{server_id}/agent/approve"), Some(json!({"agent_url": agent_url}))).await;
    let instance = exited["id"].as_str().unwrap();
    let log = c
        .client
        .get(c.url(&format!("/deployments/{id}/instances/{instance}/logs?tail=20")))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains(&injected), "the engine saw the argument verbatim: {log}");
    let (status, _) = c.send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None).await;
    assert!(status.is_success());
    assert!(eventually(WAIT, || async { (c.app.count("SELECT count(*) FROM deployments").await == 0).then_some(()) }).await.is_some());

    // One port for two replicas: the second fails with the reason.
    let created = c.deploy(json!({"name": "crowded", "model_id": model, "replicas": 2})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let failed = eventually(WAIT, || async {
        let d = c.deployment(&id).await;
        (d["state"] == "failed").then_some(d)
    })
    .await
    .expect("the deployment failed");
    assert!(failed["reason"].as_str().unwrap().contains(&format!("no free port in {ports}")), "{failed}");
    let (status, _) = c.send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None).await;
    assert!(status.is_success());
    assert!(eventually(WAIT, || async { (c.app.count("SELECT count(*) FROM deployments").await == 0).then_some(()) }).await.is_some());

    // A model file whose digest is wrong fails with the reason (served over loopback).
    let files = c.dir.0.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("model.gguf"), b"not the registered weights").unwrap();
    let file_port = free_port();
    let mut http = Command::new("python3")
        .args(["-m", "http.server", &file_port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wrong = c
        .model(
            "wrong",
            json!({"kind": "url", "url": format!("http://127.0.0.1:{file_port}/model.gguf"), "sha256": "0".repeat(64)}),
            &["chat"],
            "builtin",
        )
        .await;
    let created = c.deploy(json!({"name": "wrong", "model_id": wrong})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let failed = eventually(WAIT, || async {
        let d = c.deployment(&id).await;
        (d["state"] == "failed").then_some(d)
    })
    .await
    .expect("the deployment failed");
    assert!(failed["reason"].as_str().unwrap().contains("sha256 mismatch"), "{failed}");
    kill9(&mut http);

    // A non-admin gets 403 on every deployment route.
    let (_, user) = c.app.user_with_token("someone", &["developer"]).await;
    let routes = [
        (reqwest::Method::GET, "/deployments".to_owned()),
        (reqwest::Method::POST, "/deployments".to_owned()),
        (reqwest::Method::GET, format!("/deployments/{id}")),
        (reqwest::Method::PATCH, format!("/deployments/{id}")),
        (reqwest::Method::DELETE, format!("/deployments/{id}")),
        (reqwest::Method::PATCH, format!("/deployments/{id}/replicas")),
        (reqwest::Method::POST, format!("/deployments/{id}/start")),
        (reqwest::Method::POST, format!("/deployments/{id}/stop")),
        (reqwest::Method::POST, format!("/deployments/{id}/restart")),
        (reqwest::Method::GET, format!("/deployments/{id}/events")),
        (reqwest::Method::GET, format!("/deployments/{id}/instances")),
        (reqwest::Method::GET, format!("/deployments/{id}/instances/{id}/logs")),
        (reqwest::Method::POST, format!("/deployments/{id}/chat/completions")),
    ];
    for (method, path) in routes {
        let body = json!({"name": "x", "model_id": model, "replicas": 1, "messages": []});
        let r = c.client.request(method.clone(), c.url(&path)).bearer_auth(&user).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }

    // No token, credential, key or secret in any log line.
    let agent = std::fs::read_to_string(c.agents[0].data.join("node.json")).unwrap();
    let agent: Value = serde_json::from_str(&agent).unwrap();
    let logs = c.logs();
    for secret in [
        token.as_str(),
        agent["node_credential"].as_str().unwrap(),
        agent["agent_secret"].as_str().unwrap(),
        secret_env,
        c.admin.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached a log");
    }
}

#[tokio::test]
async fn a_llama_cpp_deployment_over_xllamacpp_answers_through_the_gateway() {
    let Some(models) = models_dir() else { return };
    if std::env::var("MAAS_LLAMA_PYTHON").is_err() {
        assert!(
            std::env::var("MAAS_REQUIRE_MODELS").is_err(),
            "MAAS_LLAMA_PYTHON (a Python with xllamacpp) is required in CI"
        );
        return;
    }
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, token) = c.server("cpu-1", 0).await;
    c.agent("cpu-1", Some(&token), 0, &range(5));
    c.wait_server(&server_id, "ready").await;
    let model = c.model("smollm2-gguf", chat_model(&models), &["chat"], "llama.cpp").await;
    let created = c.deploy(json!({"name": "llama", "model_id": model, "args": ["--ctx-size", "1024"]})).await;
    assert_eq!(created["engine"], "llama.cpp");
    let id = created["id"].as_str().unwrap().to_owned();
    c.settle(&id, "running", 1).await;
    let key = c.developer_key().await;
    let answer = c.chat(&key, "llama").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let (status, _) = c.send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None).await;
    assert!(status.is_success());
    assert!(eventually(WAIT, || async { engines_serving("llama").is_empty().then_some(()) }).await.is_some());
}
