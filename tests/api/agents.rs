//! Real `maas-agent`s against a real `maas-api` and `maas-worker`: joining with a one-time
//! token, heartbeats and resource reports (GPUs from a fake `nvidia-smi` on `PATH`), grading
//! of a silent node into not_ready then offline, and coming back as the same node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use maas_tests::process::{free_port, wait_ready};
use maas_tests::{TestApp, binary, eventually, platform_command};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LIVENESS: [(&str, &str); 5] = [
    ("MAAS__COMPUTE__HEARTBEAT_INTERVAL_SECS", "1"),
    ("MAAS__COMPUTE__REPORT_INTERVAL_SECS", "2"),
    ("MAAS__COMPUTE__MISSED_HEARTBEATS_BEFORE_NOT_READY", "3"),
    ("MAAS__COMPUTE__OFFLINE_AFTER_SECS", "6"),
    ("MAAS__COMPUTE__LIVENESS_SCHEDULE", "* * * * * *"),
];

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Dir {
    let dir = std::env::temp_dir().join(format!("maas-agents-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    Dir(dir)
}

/// A `nvidia-smi` that lists two H100s, as the real one answers the agent's query.
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '0, GPU-0b9f5e8e-1111, NVIDIA H100 80GB HBM3, 81559, 1024, 37, 41'\necho '1, GPU-0b9f5e8e-2222, NVIDIA H100 80GB HBM3, 81559, 0, 0, 39'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn log_file(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
}

fn agent(base: &str, token: Option<&str>, data: &Path, path_dir: &Path, logs: &Path) -> Child {
    let (out, err) = log_file(logs, "agent");
    let mut cmd = Command::new(binary("maas-agent"));
    cmd.args(["--server", base, "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env(
            "PATH",
            format!(
                "{}:{}",
                path_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RUST_LOG", "info")
        .env_remove("MAAS_AGENT_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    cmd.spawn().unwrap()
}

async fn server(client: &reqwest::Client, base: &str, admin: &str, id: &str) -> Value {
    client
        .get(format!("{base}/api/v1/servers/{id}"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_agent_joins_reports_goes_silent_and_comes_back_as_the_same_node() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, user) = app.user_with_token("someone", &["developer"]).await;
    let dir = temp_dir();
    let fake_bin = fake_nvidia_smi(&dir.0);
    let uploads = dir.0.join("uploads");

    let port = free_port();
    let (out, err) = log_file(&dir.0, "api");
    let mut api = platform_command("maas-api", &app.db.url, app.keyspace.prefix());
    api.env("MAAS__SERVER__PORT", port.to_string())
        .env("MAAS__SERVER__WORKERS", "1")
        .env("MAAS__STORAGE__DIR", &uploads)
        .envs(LIVENESS)
        .stdout(out)
        .stderr(err);
    let mut api = api.spawn().unwrap();
    let (out, err) = log_file(&dir.0, "worker");
    let mut worker = platform_command("maas-worker", &app.db.url, app.keyspace.prefix());
    worker
        .env("MAAS__STORAGE__DIR", &uploads)
        .envs(LIVENESS)
        .stdout(out)
        .stderr(err);
    let mut worker = worker.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_ready(&base).await, "maas-api never became ready");
    let client = reqwest::Client::new();

    // A non-admin cannot register a server; an admin gets a one-time join token.
    let spec = json!({"name": "gpu-a", "address": "127.0.0.1", "labels": {"zone": "a"}, "expected_gpus": 2});
    let refused = client
        .post(format!("{base}/api/v1/servers"))
        .bearer_auth(&user)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let created: Value = client
        .post(format!("{base}/api/v1/servers"))
        .bearer_auth(&admin)
        .json(&spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["join_token"].as_str().unwrap().to_owned();
    let id = created["server"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["server"]["status"], "pending");
    let other: Value = client
        .post(format!("{base}/api/v1/servers"))
        .bearer_auth(&admin)
        .json(&json!({"name": "gpu-b", "address": "10.0.0.2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_id = other["server"]["id"].as_str().unwrap().to_owned();

    // The agent joins, heartbeats and reports its two GPUs.
    let data = dir.0.join("agent-data");
    let mut node = agent(&base, Some(&token), &data, &fake_bin, &dir.0);
    let ready = eventually(Duration::from_secs(20), || async {
        let s = server(&client, &base, &admin, &id).await;
        (s["status"] == "ready" && s["reported_gpus"] == 2).then_some(s)
    })
    .await
    .expect("the agent never joined and reported");
    assert_eq!(
        ready["resources"]["gpus"][1]["name"],
        "NVIDIA H100 80GB HBM3"
    );
    assert_eq!(ready["resources"]["gpus"][0]["memory_used_mib"], 1024);
    assert!(ready["resources"]["cpu_cores"].as_u64().unwrap() >= 1);
    assert!(ready["resources"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(ready["last_heartbeat_at"].is_string());
    assert_eq!(
        ready["join_token_expires_at"],
        Value::Null,
        "the token is spent"
    );
    let agent_url = ready["agent"]["url"].as_str().unwrap().to_owned();
    assert_eq!(ready["agent"]["callable"], false);

    // The spent token joins nothing.
    let again = client
        .post(format!("{base}/api/v1/agents/join"))
        .json(&json!({"join_token": token, "hostname": "x", "agent_version": "0", "agent_url": "http://127.0.0.1:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "invalid_join_token"
    );

    // Node A's credential cannot act as node B, and a made-up one is refused.
    let identity: Value =
        serde_json::from_slice(&std::fs::read(data.join("node.json")).unwrap()).unwrap();
    let credential = identity["node_credential"].as_str().unwrap().to_owned();
    assert_eq!(identity["server_id"], id.as_str());
    let as_b = client
        .post(format!("{base}/api/v1/nodes/{other_id}/heartbeat"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(as_b.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        as_b.json::<Value>().await.unwrap()["code"],
        "server_not_found"
    );
    let forged = client
        .post(format!("{base}/api/v1/nodes/{id}/heartbeat"))
        .bearer_auth("mnc_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server(&client, &base, &admin, &other_id).await["status"],
        "pending"
    );
    let user_as_node = client
        .post(format!("{base}/api/v1/nodes/{id}/heartbeat"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(user_as_node.status(), StatusCode::UNAUTHORIZED);

    // The platform calls the agent only at the approved address.
    let health = client
        .get(format!("{base}/api/v1/servers/{id}/agent/health"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::CONFLICT);
    assert_eq!(
        health.json::<Value>().await.unwrap()["code"],
        "agent_address_not_approved"
    );
    let wrong = client
        .post(format!("{base}/api/v1/servers/{id}/agent/approve"))
        .bearer_auth(&admin)
        .json(&json!({"agent_url": "http://127.0.0.1:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    let approved = client
        .post(format!("{base}/api/v1/servers/{id}/agent/approve"))
        .bearer_auth(&admin)
        .json(&json!({"agent_url": agent_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), StatusCode::OK);
    assert_eq!(
        approved.json::<Value>().await.unwrap()["agent"]["callable"],
        true
    );
    let health: Value = client
        .get(format!("{base}/api/v1/servers/{id}/agent/health"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let metadata = client
        .post(format!("{base}/api/v1/servers/{id}/agent/approve"))
        .bearer_auth(&admin)
        .json(&json!({"agent_url": "http://169.254.169.254:80"}))
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Stop the agent without a word: not_ready after 3 missed heartbeats, then offline, with
    // the reason; the worker writes both.
    node.kill().unwrap();
    node.wait().unwrap();
    let not_ready = eventually(Duration::from_secs(15), || async {
        let s = server(&client, &base, &admin, &id).await;
        (s["status"] == "not_ready").then_some(s)
    })
    .await
    .expect("the silent node never turned not_ready");
    assert!(
        not_ready["status_reason"]
            .as_str()
            .unwrap()
            .contains("missed"),
        "{not_ready}"
    );
    let offline = eventually(Duration::from_secs(20), || async {
        let stored = app
            .count(&format!(
                "SELECT count(*) FROM servers WHERE id = '{id}' AND status = 'offline'"
            ))
            .await;
        let s = server(&client, &base, &admin, &id).await;
        (stored == 1 && s["status"] == "offline").then_some(s)
    })
    .await
    .expect("the silent node never turned offline");
    assert!(
        offline["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("no heartbeat for"),
        "{offline}"
    );
    let stats: Value = client
        .get(format!("{base}/api/v1/stats"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stats["servers"].as_u64(), stats["online_servers"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(stats["servers_by_status"]["offline"], 1);

    // Started again without a token, it is the same node, ready again.
    let mut node = agent(&base, None, &data, &fake_bin, &dir.0);
    let back = eventually(Duration::from_secs(20), || async {
        let s = server(&client, &base, &admin, &id).await;
        (s["status"] == "ready").then_some(s)
    })
    .await
    .expect("the restarted agent never came back");
    assert_eq!(
        back["agent"]["registered_at"], ready["agent"]["registered_at"],
        "it did not join again"
    );
    let list: Value = client
        .get(format!("{base}/api/v1/servers"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        app.count("SELECT count(*) FROM audit_events WHERE action = 'server.status'")
            .await
            >= 3
    );

    // No token or credential in any answer or log line.
    let answers = format!("{list}{back}{stats}");
    node.kill().unwrap();
    node.wait().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &api.id().to_string()])
        .status();
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = api.wait();
    let _ = worker.wait();
    for secret in [&token, &credential] {
        assert!(!answers.contains(secret.as_str()));
        for log in ["api", "worker", "agent"] {
            let text = std::fs::read_to_string(dir.0.join(format!("{log}.log"))).unwrap();
            assert!(!text.is_empty() || log != "agent", "{log} wrote no log");
            assert!(
                !text.contains(secret.as_str()),
                "a secret is in the {log} log"
            );
        }
    }
}
