//! Deployments end to end: real `maas-api`, `maas-worker`s and `maas-agent`s on loopback, real
//! engines (`maas-engine` with the small models, llama.cpp over `xllamacpp`), real PostgreSQL
//! and Redis. Processes are killed with SIGKILL to prove that deployments converge: no
//! duplicate engine, no leaked port or GPU slot.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maas_tests::cluster::{
    Cluster, WAIT, alive, chat_model, engines_serving, kill_group, kill9, range,
};
use maas_tests::engine::models_dir;
use maas_tests::eventually;
use maas_tests::process::free_port;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_builtin_deployment_serves_through_the_gateway_and_follows_every_action() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (server_id, _, agent) = c.node("cpu-1", 20).await;
    let chat = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;
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
        assert!(
            !body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .is_empty()
        );
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
    assert_eq!(
        embedded["data"][0]["embedding"].as_array().unwrap().len(),
        384
    );
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
    let listed: BTreeSet<&str> = models_list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(listed, BTreeSet::from(["minilm", "smol", "smol-alias"]));
    let metered = eventually(WAIT, || async {
        let n = c.app.count("SELECT count(*) FROM usage_records WHERE upstream IN ('deployment/smol', 'deployment/smol-alias', 'deployment/minilm')").await;
        (n == 3).then_some(n)
    })
    .await;
    assert_eq!(
        metered,
        Some(3),
        "every call through a deployment is metered"
    );

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
    let conversation = talk.headers()["x-conversation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let kept = eventually(WAIT, || async {
        let n = c.app.count(&format!("SELECT count(*) FROM conversation_messages WHERE conversation_id = '{conversation}'")).await;
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(kept, Some(2));

    // Scale 1 → 2 → 1: distinct ports; the removed engine is gone.
    let (status, _) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/deployments/{id}/replicas"),
            Some(json!({"replicas": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let two = c.settle(&id, "running", 2).await;
    let ports: BTreeSet<u64> = two.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 2);
    let second = two.iter().find(|i| i["replica"] == 1).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let (status, _) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/deployments/{id}/replicas"),
            Some(json!({"replicas": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let one = c.settle(&id, "running", 1).await;
    assert_eq!(
        one[0]["pid"].as_u64(),
        Some(pid),
        "replica 0 was left alone"
    );
    assert!(
        eventually(WAIT, || async { (!alive(second)).then_some(()) })
            .await
            .is_some(),
        "the scaled-down engine was stopped"
    );
    assert_eq!(engines_serving("smol").len(), 1);

    // Restart: a new generation, a new process.
    let (status, restarted) = c
        .send(
            reqwest::Method::POST,
            &format!("/deployments/{id}/restart"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(restarted["generation"], 2);
    let after_ = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        let d = c.deployment(&id).await;
        (d["state"] == "running"
            && i.len() == 1
            && i[0]["state"] == "ready"
            && i[0]["pid"].as_u64() != Some(pid)
            && i[0]["generation"] == 2)
            .then_some(i)
    })
    .await;
    let Some(after) = after_ else {
        panic!("the restart never finished: {}", c.dump(&id).await)
    };
    assert!(!alive(pid));
    let pid = after[0]["pid"].as_u64().unwrap();

    // The engine's log, from the agent at its approved address.
    let server = c.get(&format!("/servers/{server_id}")).await;
    let agent_url = server["agent"]["url"].as_str().unwrap().to_owned();
    let (status, _) = c
        .send(
            reqwest::Method::POST,
            &format!("/servers/{server_id}/agent/approve"),
            Some(json!({"agent_url": agent_url})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let instance = after[0]["id"].as_str().unwrap().to_owned();
    let log = c
        .client
        .get(c.url(&format!(
            "/deployments/{id}/instances/{instance}/logs?tail=50"
        )))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), StatusCode::OK);
    let log = log.text().await.unwrap();
    assert!(log.contains("smol"), "the engine's own log: {log}");
    let other = c
        .client
        .get(c.url(&format!(
            "/deployments/{vectors_id}/instances/{instance}/logs"
        )))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::NOT_FOUND,
        "an instance of another deployment"
    );

    // Stop: nothing runs, callers get 503 at once; start again.
    let (status, _) = c
        .send(
            reqwest::Method::POST,
            &format!("/deployments/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    c.settle(&id, "stopped", 0).await;
    assert!(
        eventually(WAIT, || async { (!alive(pid)).then_some(()) })
            .await
            .is_some()
    );
    let refused = eventually(WAIT, || async {
        let r = c.chat(&key, "smol").await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await
    .expect("a stopped deployment answers 503");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    let (status, _) = c
        .send(
            reqwest::Method::POST,
            &format!("/deployments/{id}/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    c.settle(&id, "running", 1).await;

    // Delete: instances, ports and slots end as desired; the name is free again.
    let (status, _) = c
        .send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None)
        .await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT);
    let gone = eventually(WAIT, || async {
        let r = c
            .client
            .get(c.url(&format!("/deployments/{id}")))
            .bearer_auth(&c.admin)
            .send()
            .await
            .unwrap();
        (r.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deployment was never removed");
    assert_eq!(
        c.app
            .count(&format!(
                "SELECT count(*) FROM instances WHERE deployment_id = '{id}'"
            ))
            .await,
        0
    );
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 0);
    assert!(
        eventually(WAIT, || async {
            engines_serving("smol").is_empty().then_some(())
        })
        .await
        .is_some()
    );
    assert_eq!(
        c.app
            .count("SELECT count(*) FROM audit_events WHERE action = 'deployment.removed'")
            .await,
        1
    );
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
    let (_, _, agent) = c.node("cpu-1", 10).await;
    let model = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;
    let created = c.deploy(json!({"name": "crashy", "model_id": model})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = c.settle(&id, "running", 1).await;
    let pid = first[0]["pid"].as_u64().unwrap();

    // SIGKILL the engine: the agent notices, waits its backoff, starts it again.
    kill_group(pid);
    let restarted_ = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        (i.len() == 1
            && i[0]["state"] == "ready"
            && i[0]["restarts"] == 1
            && i[0]["pid"].as_u64() != Some(pid))
        .then_some(i)
    })
    .await;
    let Some(restarted) = restarted_ else {
        panic!("the engine was never restarted: {}", c.dump(&id).await)
    };
    assert_eq!(restarted[0]["exit_code"], 137);
    let messages: Vec<String> = c
        .events(&id)
        .await
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("exited with code 137") && m.contains("restart 1 in 1 s")),
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
    assert_eq!(
        direct.status(),
        StatusCode::OK,
        "the engine outlives its agent"
    );
    c.restart_agent(agent);
    let adopted = eventually(WAIT, || async {
        let log = std::fs::read_to_string(c.dir.0.join("agent-cpu-1.log")).unwrap_or_default();
        log.contains("adopted a running engine").then_some(())
    })
    .await;
    assert!(adopted.is_some(), "the restarted agent adopted its engine");
    let same = c.settle(&id, "running", 1).await;
    assert_eq!(
        same[0]["pid"].as_u64(),
        Some(pid),
        "no second engine was started"
    );
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
    let model = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;
    let created = c
        .deploy(json!({"name": "pair", "model_id": model, "replicas": 2, "gpus_per_replica": 1}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    // kill -9 the worker as soon as it placed something, then start another one.
    let placed = eventually(WAIT, || async {
        let n = c
            .app
            .count(&format!(
                "SELECT count(*) FROM instances WHERE deployment_id = '{id}'"
            ))
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(placed.is_some());
    kill9(&mut c.workers[0]);
    let worker = c.spawn_worker();
    c.workers.push(worker);
    let instances = c.settle(&id, "running", 2).await;
    let replicas: BTreeSet<i64> = instances
        .iter()
        .map(|i| i["replica"].as_i64().unwrap())
        .collect();
    assert_eq!(replicas, BTreeSet::from([0, 1]));
    let gpus: BTreeSet<u64> = instances
        .iter()
        .flat_map(|i| {
            i["gpus"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_u64().unwrap())
        })
        .collect();
    assert_eq!(gpus, BTreeSet::from([0, 1]), "one GPU each, none shared");
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
    assert_eq!(c.app.count("SELECT count(*) FROM instances").await, 2);
    assert_eq!(engines_serving("pair").len(), 2, "no duplicate engine");
    // The ledger would refuse a third GPU: the server has none left.
    let (status, _) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/deployments/{id}/replicas"),
            Some(json!({"replicas": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pending = eventually(WAIT, || async {
        let d = c.deployment(&id).await;
        (d["state"] == "pending").then_some(d)
    })
    .await
    .expect("the third replica waits");
    assert!(
        pending["reason"]
            .as_str()
            .unwrap()
            .contains("gpu-1: 0 of 2 GPUs free, 1 needed"),
        "{pending}"
    );
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
}

#[tokio::test]
async fn a_dead_node_leaves_routing_at_once_and_its_replica_moves_to_another_server() {
    let Some(models) = models_dir() else { return };
    let mut c = Cluster::start(&[], 1).await;
    let (a_id, _, a) = c.node("node-a", 10).await;
    let model = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;
    let created = c.deploy(json!({"name": "mover", "model_id": model})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = c.settle(&id, "running", 1).await;
    let key = c.developer_key().await;
    assert_eq!(c.chat(&key, "mover").await.status(), StatusCode::OK);

    // A second API replica routes the same way.
    let (mut replica, replica_base) = c.spawn_api("api-2").await;

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

    // Another server fits: after the offline grace the status sync places the replica there
    // (nothing else changed: no edit, no restart).
    let (b_id, _, _) = c.node("node-b", 10).await;
    let moved = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        (i.len() == 1 && i[0]["server_id"] == b_id.as_str() && i[0]["state"] == "ready")
            .then_some(i)
    })
    .await;
    assert!(
        moved.is_some(),
        "the replica never moved: {:?}",
        c.instances(&id).await
    );
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
    let c = Cluster::start(
        &[
            ("MAAS__COMPUTE__HEARTBEAT_INTERVAL_SECS", "600"),
            ("MAAS__COMPUTE__OFFLINE_AFTER_SECS", "3600"),
        ],
        2,
    )
    .await;
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
        assert_eq!(
            report.status(),
            StatusCode::OK,
            "{}",
            report.text().await.unwrap()
        );
        servers.push((id, credential));
    }
    let model = c
        .model(
            "weights",
            json!({"kind": "hugging_face", "repo": "Qwen/Qwen2.5-0.5B-Instruct"}),
            &["chat"],
            "vllm",
        )
        .await;
    let bodies: Vec<Value> = (0..3)
        .map(|n| json!({"name": format!("d{n}"), "model_id": model, "gpus_per_replica": 1}))
        .collect();
    let created = futures_util::future::join_all(bodies.into_iter().map(|b| c.deploy(b))).await;
    let ids: Vec<String> = created
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let settled = eventually(WAIT, || async {
        let placed = c.app.count("SELECT count(*) FROM instances").await;
        let mut pending = Vec::new();
        for id in &ids {
            let d = c.deployment(id).await;
            let waiting = d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("waiting for room"));
            if d["state"] == "pending" && waiting {
                pending.push(d);
            }
        }
        (placed == 2 && pending.len() == 1).then_some(pending)
    })
    .await
    .expect("exactly two placed and one pending");
    let reason = settled[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("0 of 1 replica(s) placed; waiting for room:"),
        "{reason}"
    );
    assert!(
        reason.contains("gpu-a: 0 of 1 GPUs free, 1 needed"),
        "{reason}"
    );
    assert!(
        reason.contains("gpu-b: 0 of 1 GPUs free, 1 needed"),
        "{reason}"
    );
    assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
    assert_eq!(
        c.app
            .count("SELECT count(DISTINCT (server_id, gpu_index)) FROM gpu_slots")
            .await,
        2
    );
    // Still two while the pending one is retried (every second here): never double-booked.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.app.count("SELECT count(*) FROM instances").await, 2);
        assert_eq!(c.app.count("SELECT count(*) FROM gpu_slots").await, 2);
    }

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
    let b_instance = b_instance["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
        c.app
            .count(&format!(
                "SELECT count(*) FROM instances WHERE id = '{b_instance}' AND state = 'assigned'"
            ))
            .await,
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
    let model = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;

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
    let fields: BTreeSet<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["model_id", "name", "engine", "replicas", "env"])
    );
    let (status, body) = c
        .send(
            reqwest::Method::POST,
            "/deployments",
            Some(json!({"name": "x", "model_id": model, "shell": true})),
        )
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
    assert!(
        !created.to_string().contains(secret_env),
        "env values are never returned"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let exited = eventually(WAIT, || async {
        let i = c.instances(&id).await;
        i.first()
            .filter(|i| i["state"] == "exited" || i["restarts"].as_u64() > Some(0))
            .cloned()
    })
    .await
    .expect("the engine refused the argument and exited");
    assert_eq!(exited["exit_code"], 2, "clap's usage error");
    assert!(!marker.exists(), "the argument was never run by a shell");
    let server = c.get(&format!("/servers/{server_id}")).await;
    let agent_url = server["agent"]["url"].as_str().unwrap().to_owned();
    c.send(
        reqwest::Method::POST,
        &format!("/servers/{server_id}/agent/approve"),
        Some(json!({"agent_url": agent_url})),
    )
    .await;
    let instance = exited["id"].as_str().unwrap();
    let log = c
        .client
        .get(c.url(&format!(
            "/deployments/{id}/instances/{instance}/logs?tail=20"
        )))
        .bearer_auth(&c.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        log.contains(&injected),
        "the engine saw the argument verbatim: {log}"
    );
    let (status, _) = c
        .send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None)
        .await;
    assert!(status.is_success());
    assert!(
        eventually(WAIT, || async {
            (c.app.count("SELECT count(*) FROM deployments").await == 0).then_some(())
        })
        .await
        .is_some()
    );

    // One port for two replicas: the second fails with the reason.
    let created = c
        .deploy(json!({"name": "crowded", "model_id": model, "replicas": 2}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let failed = eventually(WAIT, || async {
        let d = c.deployment(&id).await;
        (d["state"] == "failed").then_some(d)
    })
    .await
    .expect("the deployment failed");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("no free port in {ports}")),
        "{failed}"
    );
    let (status, _) = c
        .send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None)
        .await;
    assert!(status.is_success());
    assert!(
        eventually(WAIT, || async {
            (c.app.count("SELECT count(*) FROM deployments").await == 0).then_some(())
        })
        .await
        .is_some()
    );

    // A model file whose digest is wrong fails with the reason (served over loopback).
    let files = c.dir.0.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("model.gguf"), b"not the registered weights").unwrap();
    let file_port = free_port();
    let mut http = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &file_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
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
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{failed}"
    );
    kill9(&mut http);

    // A non-admin gets 403 on every deployment route.
    let (_, user) = c.app.user_with_token("someone", &["developer"]).await;
    let routes = [
        (reqwest::Method::GET, "/deployments".to_owned()),
        (reqwest::Method::POST, "/deployments".to_owned()),
        (reqwest::Method::GET, format!("/deployments/{id}")),
        (reqwest::Method::PATCH, format!("/deployments/{id}")),
        (reqwest::Method::DELETE, format!("/deployments/{id}")),
        (
            reqwest::Method::PATCH,
            format!("/deployments/{id}/replicas"),
        ),
        (reqwest::Method::POST, format!("/deployments/{id}/start")),
        (reqwest::Method::POST, format!("/deployments/{id}/stop")),
        (reqwest::Method::POST, format!("/deployments/{id}/restart")),
        (reqwest::Method::GET, format!("/deployments/{id}/events")),
        (reqwest::Method::GET, format!("/deployments/{id}/instances")),
        (
            reqwest::Method::GET,
            format!("/deployments/{id}/instances/{id}/logs"),
        ),
        (
            reqwest::Method::POST,
            format!("/deployments/{id}/chat/completions"),
        ),
    ];
    for (method, path) in routes {
        // A body each route accepts, so that the refusal is the caller's role, not the body.
        let body = if path == "/deployments" {
            Some(json!({"name": "x", "model_id": model, "replicas": 1}))
        } else if path.ends_with("/chat/completions") {
            Some(json!({"messages": [{"role": "user", "content": "hi"}]}))
        } else if method == reqwest::Method::PATCH {
            Some(json!({"replicas": 1}))
        } else {
            None
        };
        let mut request = c
            .client
            .request(method.clone(), c.url(&path))
            .bearer_auth(&user);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
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
    let _ = c.node("cpu-1", 5).await;
    let model = c
        .model("smollm2-gguf", chat_model(&models), &["chat"], "llama.cpp")
        .await;
    let created = c
        .deploy(json!({"name": "llama", "model_id": model, "args": ["--ctx-size", "1024"]}))
        .await;
    assert_eq!(created["engine"], "llama.cpp");
    let id = created["id"].as_str().unwrap().to_owned();
    c.settle(&id, "running", 1).await;
    let key = c.developer_key().await;
    let answer = c.chat(&key, "llama").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let (status, _) = c
        .send(reqwest::Method::DELETE, &format!("/deployments/{id}"), None)
        .await;
    assert!(status.is_success());
    assert!(
        eventually(WAIT, || async {
            engines_serving("llama").is_empty().then_some(())
        })
        .await
        .is_some()
    );
}
