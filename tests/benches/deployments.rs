//! Deployments, measured over real processes (release `maas-api`, `maas-worker`, `maas-agent`,
//! engines) on loopback with real PostgreSQL and Redis:
//! 1. `POST /deployments` → first streamed token through `/v1`, for `builtin` (SmolLM2 on
//!    `maas-engine`) and `llama.cpp` (the same GGUF over `xllamacpp`, when `MAAS_LLAMA_PYTHON`
//!    has it);
//! 2. the time for routing to drop a SIGKILLed engine on each of two API replicas (until each
//!    answers 503 "no ready instance" instead of trying the dead one);
//! 3. the agent's RSS and CPU at idle with 10 ready instances (`custom` engines: a static HTTP
//!    server each, so the figure is the agent's and not the engines');
//! 4. the gateway's added latency to a deployed engine: the same non-streamed one-token chat
//!    sent to the engine directly and through `/v1`, interleaved, p50/p99.
//!
//! Run with `just bench` (it builds the release binaries first); `BENCH_CALLS` tunes (4).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::time::{Duration, Instant};

use maas_tests::cluster::{Cluster, chat_model, kill_group, range};
use maas_tests::engine::models_dir;
use maas_tests::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};

const NO_QUOTA: [(&str, &str); 3] = [
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_MINUTE", "0"),
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_HOUR", "0"),
    ("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_DAY", "0"),
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[i])
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let Some(models) = models_dir() else {
        eprintln!("deployments bench: no models (run scripts/fetch-models.sh); skipped");
        return;
    };
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut c = Cluster::start(&NO_QUOTA, 1).await;
    let (server, token) = c.server("bench-node", 0).await;
    // Restarts wait 30 s here, so that a killed engine stays down while routing is watched.
    c.agent_with(
        "bench-node",
        Some(&token),
        0,
        &range(40),
        &[
            "--restart-backoff-secs",
            "30",
            "--restart-backoff-max-secs",
            "30",
        ],
    );
    c.wait_server(&server, "ready").await;
    let key = c.developer_key().await;
    let smol = c
        .model("smollm2", chat_model(&models), &["chat"], "builtin")
        .await;

    println!("== POST /deployments → first token through /v1");
    let builtin = first_token(&c, &key, json!({"name": "smol", "model_id": smol})).await;
    println!(
        "builtin (maas-engine, SmolLM2-135M Q4_1): {:.0} ms",
        ms(builtin)
    );
    if std::env::var_os("MAAS_LLAMA_PYTHON").is_some() {
        let llama = c
            .model("smollm2-gguf", chat_model(&models), &["chat"], "llama.cpp")
            .await;
        let took = first_token(&c, &key, json!({"name": "smol-llama", "model_id": llama})).await;
        println!(
            "llama.cpp (xllamacpp, same GGUF):          {:.0} ms",
            ms(took)
        );
    } else {
        println!("llama.cpp: skipped (MAAS_LLAMA_PYTHON is not set)");
    }

    println!(
        "== the gateway's added latency (non-streamed chat, max_tokens 1, {calls} calls each, interleaved)"
    );
    let id = deployment_id(&c, "smol").await;
    let instance = c.instances(&id).await.remove(0);
    let port = instance["port"].as_u64().unwrap();
    let direct_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let gateway_url = format!("{}/v1/chat/completions", c.base);
    let mut direct = Vec::with_capacity(calls);
    let mut gateway = Vec::with_capacity(calls);
    for i in 0..calls + 10 {
        for (url, model, auth, into) in [
            (&direct_url, "smol", None, &mut direct),
            (&gateway_url, "smol", Some(key.as_str()), &mut gateway),
        ] {
            let body = json!({"model": model, "max_tokens": 1, "temperature": 0,
                              "messages": [{"role": "user", "content": "Hi"}]});
            let mut request = c.client.post(url).json(&body);
            if let Some(auth) = auth {
                request = request.bearer_auth(auth);
            }
            let started = Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status();
            let _ = response.bytes().await.unwrap();
            let took = started.elapsed();
            assert_eq!(status, StatusCode::OK, "{url}");
            if i >= 10 {
                into.push(took);
            }
        }
    }
    direct.sort();
    gateway.sort();
    println!(
        "direct:  p50 {:.2} ms  p99 {:.2} ms",
        pct(&direct, 0.5),
        pct(&direct, 0.99)
    );
    println!(
        "gateway: p50 {:.2} ms  p99 {:.2} ms  (added: p50 {:.2} ms, p99 {:.2} ms)",
        pct(&gateway, 0.5),
        pct(&gateway, 0.99),
        pct(&gateway, 0.5) - pct(&direct, 0.5),
        pct(&gateway, 0.99) - pct(&direct, 0.99)
    );

    println!("== routing drops a killed engine (two API replicas)");
    let (mut replica, replica_base) = c.spawn_api("api-2").await;
    for base in [&c.base, &replica_base] {
        assert_eq!(chat_status(&c, base, &key).await.0, StatusCode::OK);
    }
    kill_group(instance["pid"].as_u64().unwrap());
    let killed = Instant::now();
    for (name, base) in [("api-1", c.base.clone()), ("api-2", replica_base.clone())] {
        let dropped = eventually(Duration::from_secs(30), || async {
            let (status, body) = chat_status(&c, &base, &key).await;
            (status == StatusCode::SERVICE_UNAVAILABLE
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no ready instance")))
            .then(|| killed.elapsed())
        })
        .await
        .expect("routing never dropped the killed instance");
        println!(
            "{name}: routing dropped it {:.0} ms after the SIGKILL",
            ms(dropped)
        );
    }
    let _ = replica.kill();
    let _ = replica.wait();

    println!("== the agent at idle with 10 ready instances");
    let site = c.dir.0.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("health"), "ok").unwrap();
    let static_model = c
        .model(
            "static",
            json!({"kind": "local", "path": site.display().to_string()}),
            &["chat"],
            "custom",
        )
        .await;
    let command = format!(
        "cd {} && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        site.display()
    );
    let stat = c
        .deploy(
            json!({"name": "static", "model_id": static_model, "engine": "custom",
                       "command": command, "replicas": 10}),
        )
        .await;
    let stat_id = stat["id"].as_str().unwrap().to_owned();
    c.settle(&stat_id, "running", 10).await;
    let agent_pid = c.agents[0].child.id();
    let (rss, cpu) = idle(agent_pid, Duration::from_secs(10)).await;
    let running = c.agent_instances(0);
    println!(
        "agent RSS {rss:.1} MiB, CPU {cpu:.2} % of one core over 10 s ({running} instances on the node, 10 of them the static ones)"
    );
}

/// Creates the deployment, then polls it until running and takes the first token
/// of a streamed chat: the time from the POST to that token.
async fn first_token(c: &Cluster, key: &str, body: Value) -> Duration {
    let name = body["name"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let created = c.deploy(body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    // Polled every 50 ms (the figure's resolution).
    let running = eventually(Duration::from_secs(300), || async {
        (c.deployment(&id).await["state"] == "running").then_some(())
    })
    .await;
    assert!(running.is_some(), "{name} never became ready");
    let mut response = c
        .client
        .post(format!("{}/v1/chat/completions", c.base))
        .bearer_auth(key)
        .json(&json!({"model": name, "stream": true, "max_tokens": 8,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("\"content\"") {
            return started.elapsed();
        }
    }
    panic!("{name}: the stream ended without a token: {seen}");
}

async fn deployment_id(c: &Cluster, name: &str) -> String {
    let listed = c.get("/deployments?limit=200").await;
    listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn chat_status(c: &Cluster, base: &str, key: &str) -> (StatusCode, Value) {
    let r = c
        .client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "smol", "max_tokens": 1,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// RSS (MiB) at the end and CPU (% of one core) over `window`, from `/proc`.
async fn idle(pid: u32, window: Duration) -> (f64, f64) {
    fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15; after the `)` they are the 12th and 13th.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
    let before = cpu_ticks(pid);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let ticks = cpu_ticks(pid) - before;
    let elapsed = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Linux reports CPU time in clock ticks of 1/100 s.
    #[expect(clippy::cast_precision_loss, reason = "a small tick count")]
    let cpu = ticks as f64 / 100.0 / elapsed * 100.0;
    (rss_kib / 1024.0, cpu)
}
