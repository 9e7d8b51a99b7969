//! The gateway's cost, measured against a fast mock upstream: `maas-api` (release) runs in its
//! own process pinned to core 0 with auth, limits, quota and metering all on; this process (the
//! mock upstream and the load), PostgreSQL and Redis are pinned to core 1 while it runs. Bounded loops on loopback; `just bench`.
//!
//! Reports: added latency p50/p99 at 1, 16 and 64 connections (gateway minus direct) in a closed
//! loop (each connection sends as fast as answers come back: at 16+ connections that is the pinned
//! core's saturation, where latency is queueing) and in an open loop at half that rate, with the
//! gateway's CPU time per request; added time to first token for streams, gateway RSS with 1000
//! concurrent streams open, export rows/s.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::StreamExt as _;
use maas_platform::{Platform, Role, Settings};
use maas_user::app::Actor;
use maas_user::app::accounts::NewAccount;
use maas_user::app::keys::NewKey;
use maas_user::domain::limits::QuotaPolicy;
use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};

/// Requests per measured row (`MAAS_BENCH_REQUESTS` overrides, e.g. to profile longer).
fn requests() -> usize {
    std::env::var("MAAS_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000)
}

fn pct(sorted: &[Duration], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_micros()
}

async fn chat(req: web::Json<Value>) -> HttpResponse {
    if req.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let slow = req.get("slow").and_then(Value::as_bool).unwrap_or(false);
        let chunks = futures_util::stream::unfold(0u32, move |i| async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let text = match i {
                0..=9 => format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}}}}]}}\n\n"),
                10 => "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":10}}\n\n".to_owned(),
                11 => "data: [DONE]\n\n".to_owned(),
                _ => return None,
            };
            Some((Ok::<_, actix_web::Error>(bytes::Bytes::from(text)), i + 1))
        });
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(chunks);
    }
    HttpResponse::Ok().json(
        json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split(' ').collect());
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // The kernel reports clock ticks of 1/100 s (USER_HZ) on Linux.
    Duration::from_millis(ticks * 10)
}

/// Moves every process named `name` (all threads) onto `cpus`.
fn pin_all(name: &str, cpus: &str) {
    let pids = Command::new("pgrep")
        .args(["-x", name])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    for pid in String::from_utf8_lossy(&pids).split_whitespace() {
        let _ = Command::new("taskset")
            .args(["-a", "-cp", cpus, pid])
            .stdout(Stdio::null())
            .status();
    }
}

/// Keeps PostgreSQL and Redis off the gateway's core while it lives (new PostgreSQL backends
/// inherit the postmaster's mask); gives them every core back on drop.
struct ServicesOffCore0;
impl ServicesOffCore0 {
    fn new() -> Self {
        pin_all("postgres", "1");
        pin_all("redis-server", "1");
        Self
    }
}
impl Drop for ServicesOffCore0 {
    fn drop(&mut self) {
        let all = format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        );
        pin_all("postgres", &all);
        pin_all("redis-server", &all);
    }
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `connections` clients sending `requests()` requests in all; latencies sorted.
///
/// Closed loop (`rate_per_sec` = `None`): each sends its next request when the answer is in.
/// Open loop (`Some(rate)`): each sends one every `connections / rate` seconds (staggered),
/// whatever the answers take: latency under a steady load below saturation, where a closed loop
/// at full speed measures queueing behind the pinned core.
async fn run(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
    connections: usize,
    rate_per_sec: Option<u64>,
) -> Vec<Duration> {
    let per = requests() / connections;
    let period =
        rate_per_sec.map(|rate| Duration::from_nanos(1_000_000_000 * connections as u64 / rate));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, url, key, body) = (
            client.clone(),
            url.to_owned(),
            key.map(str::to_owned),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per);
            for i in 0..per {
                if let Some(period) = period {
                    let offset =
                        period * u32::try_from(c).unwrap() / u32::try_from(connections).unwrap();
                    tokio::time::sleep_until(start + offset + period * u32::try_from(i).unwrap())
                        .await;
                }
                let t = Instant::now();
                let mut req = client.post(&url).json(&body);
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let resp = req.send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.unwrap();
                out.push(t.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

async fn ttft(client: &reqwest::Client, url: &str, key: Option<&str>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut req = client.post(url).json(&json!({"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": true}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let mut stream = resp.bytes_stream();
        stream.next().await.unwrap().unwrap();
        out.push(t.elapsed());
        while stream.next().await.is_some() {}
    }
    out.sort_unstable();
    out
}

fn main() {
    // This process (load generator + mock upstream) runs on core 1, before any thread starts,
    // so that every thread it makes inherits the mask: the gateway has core 0 to itself.
    let pinned = Command::new("taskset")
        .args(["-cp", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        pinned,
        "taskset (util-linux) is needed to pin the benchmark"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Mock upstream, in this process.
        let upstream_port = free_port();
        let upstream = HttpServer::new(|| App::new().route("/v1/chat/completions", web::post().to(chat)))
            .workers(1)
            .max_connections(100_000)
            .backlog(4096)
            .bind(("127.0.0.1", upstream_port))
            .unwrap()
            .run();
        tokio::spawn(upstream);

        // Identity data through the real services.
        let prefix = format!("bench:{}:", uuid::Uuid::now_v7().simple());
        let settings = Settings::load_with(&[("redis.key_prefix", &prefix), ("telemetry.filter", "warn")]).expect("settings (DATABASE_URL?)");
        let platform = Platform::connect(settings.clone(), Role::Command).await.unwrap();
        let db = platform.db().clone();
        let identity = platform.identity().unwrap();
        let suffix = &uuid::Uuid::now_v7().simple().to_string()[20..];
        let admin_name = format!("benchadmin{suffix}");
        let account = |name: &str, role: &str| NewAccount { username: name.into(), email: None, password: "benchmark password".into(), roles: vec![role.into()] };
        identity.accounts.create(Actor::System, account(&admin_name, "admin")).await.unwrap();
        let user = identity.accounts.create(Actor::System, account(&format!("benchuser{suffix}"), "developer")).await.unwrap();
        let big = Some(1_000_000_000_000);
        let policy = QuotaPolicy { requests_per_minute: big, tokens_per_minute: big, requests_per_hour: big, requests_per_day: big, tokens_per_month_quota: big, ..QuotaPolicy::default() };
        identity.quotas.set_user_policy(Actor::System, user.id(), policy).await.unwrap();
        let key = identity.keys.create(Actor::System, user.id(), NewKey { name: "bench".into(), ..NewKey::default() }).await.unwrap().secret;

        // The gateway, pinned to core 0.
        let api_port = free_port();
        let exe = std::env::current_exe().unwrap();
        // `MAAS_BENCH_API_BIN` runs another build (e.g. one with frame pointers, to profile).
        let api_bin = std::env::var_os("MAAS_BENCH_API_BIN").map_or_else(
            || exe.parent().unwrap().parent().unwrap().join("maas-api"),
            std::path::PathBuf::from,
        );
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&api_bin)
            .env("MAAS__SERVER__PORT", api_port.to_string())
            .env("MAAS__SERVER__WORKERS", "1")
            .env("MAAS__REDIS__KEY_PREFIX", &prefix)
            .env("MAAS__TELEMETRY__FILTER", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("maas-api release binary (cargo build --release --bins)");
        let api = Guard(child);
        // The worker drains the settlement stream into PostgreSQL as in a deployment (core 1,
        // with the services): the stream's lag is sampled while the gateway is loaded.
        let worker = Command::new("taskset")
            .args(["-c", "1"])
            .arg(exe.parent().unwrap().parent().unwrap().join("maas-worker"))
            .env("MAAS__REDIS__KEY_PREFIX", &prefix)
            .env("MAAS__TELEMETRY__FILTER", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("maas-worker release binary (cargo build --release --bins)");
        let _worker = Guard(worker);
        let _services = ServicesOffCore0::new();
        let pid = api.0.id();
        let base = format!("http://127.0.0.1:{api_port}");
        let client = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(2000).build().unwrap();
        for _ in 0..100 {
            if client.get(format!("{base}/health")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let admin_token: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"login": admin_name, "password": "benchmark password"}))
            .send().await.unwrap().json().await.unwrap();
        let admin_token = admin_token["access_token"].as_str().unwrap().to_owned();
        let provider = json!({"name": format!("mock{suffix}"), "base_url": format!("http://127.0.0.1:{upstream_port}/v1"), "models": [{"model": "bench"}]});
        let resp = client.post(format!("{base}/api/v1/providers")).bearer_auth(&admin_token).json(&provider).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let provider_id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

        let direct = format!("http://127.0.0.1:{upstream_port}/v1/chat/completions");
        let via = format!("{base}/v1/chat/completions");
        let body = json!({"model": "bench", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16});
        run(&client, &via, Some(&key), &body, 16, None).await; // warm-up
        println!("non-streamed chat, {} requests per row (µs); gwcpu: the gateway's CPU time per request; \
                  directcpu: this process's (load generator + mock upstream) per direct request", requests());
        println!("closed loop: each connection sends its next request when the answer is in");
        println!("{:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}", "conns", "direct50", "direct99", "gw50", "gw99", "added50", "added99", "gwcpu", "gw rps", "directcpu");
        let mut capacity = 0.0f64;
        let peak = std::sync::Arc::new(std::sync::Mutex::new((0.0f64, 0u64)));
        let sampler = {
            let (identity, peak) = (identity.clone(), std::sync::Arc::clone(&peak));
            tokio::spawn(async move {
                loop {
                    if let Ok(stats) = identity.settlement_stats().await {
                        let mut peak = peak.lock().unwrap();
                        peak.0 = peak.0.max(stats.lag_seconds);
                        peak.1 = peak.1.max(stats.backlog + stats.pending);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        for connections in [1, 16, 64] {
            let own = cpu_time(std::process::id());
            let d = run(&client, &direct, None, &body, connections, None).await;
            let direct_cpu = (cpu_time(std::process::id()) - own).as_micros() / d.len() as u128;
            let (cpu, t) = (cpu_time(pid), Instant::now());
            let g = run(&client, &via, Some(&key), &body, connections, None).await;
            let rps = g.len() as f64 / t.elapsed().as_secs_f64();
            let per_request = (cpu_time(pid) - cpu).as_micros() / g.len() as u128;
            if connections == 16 {
                capacity = rps;
            }
            let (d50, d99, g50, g99) = (pct(&d, 0.5), pct(&d, 0.99), pct(&g, 0.5), pct(&g, 0.99));
            println!("{connections:>5} {d50:>10} {d99:>10} {g50:>10} {g99:>10} {:>10} {:>10} {per_request:>10} {rps:>8.0} {direct_cpu:>10}", g50.saturating_sub(d50), g99.saturating_sub(d99));
        }
        sampler.abort();
        let drained_in = Instant::now();
        let mut left = u64::MAX;
        while left > 0 && drained_in.elapsed() < Duration::from_secs(60) {
            left = identity.settlement_stats().await.map_or(u64::MAX, |s| s.backlog + s.pending);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (lag, backlog) = *peak.lock().unwrap();
        println!(
            "settlement stream during the closed loops (sampled every 100 ms): peak lag {lag:.3} s, \
             peak backlog {backlog} entries; drained to {left} entries {:.2} s after the load",
            drained_in.elapsed().as_secs_f64()
        );
        // Half of what the pinned gateway served at 16 closed-loop connections.
        let rate = (capacity / 2.0).max(100.0) as u64;
        println!("open loop at {rate} requests/s (half the 16-connection closed-loop rate)");
        for connections in [16, 64] {
            let d = run(&client, &direct, None, &body, connections, Some(rate)).await;
            let g = run(&client, &via, Some(&key), &body, connections, Some(rate)).await;
            let (d50, d99, g50, g99) = (pct(&d, 0.5), pct(&d, 0.99), pct(&g, 0.5), pct(&g, 0.99));
            println!("{connections:>5} {d50:>10} {d99:>10} {g50:>10} {g99:>10} {:>10} {:>10}", g50.saturating_sub(d50), g99.saturating_sub(d99));
        }

        let d = ttft(&client, &direct, None, 300).await;
        let g = ttft(&client, &via, Some(&key), 300).await;
        println!("time to first token (µs): direct p50 {} p99 {}, gateway p50 {} p99 {}, added p50 {}",
            pct(&d, 0.5), pct(&d, 0.99), pct(&g, 0.5), pct(&g, 0.99), pct(&g, 0.5).saturating_sub(pct(&d, 0.5)));

        // 1000 concurrent streams held open by a slow upstream.
        let idle_rss = rss_kib(pid);
        let slow = json!({"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": true, "slow": true});
        let mut streams = Vec::new();
        for _ in 0..1000 {
            let (client, via, key, slow) = (client.clone(), via.clone(), key.clone(), slow.clone());
            streams.push(tokio::spawn(async move {
                let resp = client.post(&via).bearer_auth(&key).json(&slow).send().await.unwrap();
                let mut s = resp.bytes_stream();
                while s.next().await.is_some() {}
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let busy_rss = rss_kib(pid);
        for s in streams {
            s.await.unwrap();
        }
        println!("gateway RSS: idle {} MiB, with 1000 concurrent streams {} MiB", idle_rss / 1024, busy_rss / 1024);

        // Export of 1M rows.
        let conversation: Value = client.post(format!("{base}/api/v1/conversations")).bearer_auth(&key).json(&json!({"title": "bench"})).send().await.unwrap().json().await.unwrap();
        let cid = conversation["id"].as_str().unwrap();
        db.execute_unprepared(&format!(
            "INSERT INTO conversation_messages (id, conversation_id, user_id, role, content, created_at) \
             SELECT gen_random_uuid(), '{cid}', '{}', 'user', 'message number ' || g, now() + (g || ' microseconds')::interval \
             FROM generate_series(1, 1000000) g", user.id()
        )).await.unwrap();
        let before = rss_kib(pid);
        let started = Instant::now();
        let resp = client.get(format!("{base}/api/v1/conversations/export?format=csv")).bearer_auth(&key).send().await.unwrap();
        let mut stream = resp.bytes_stream();
        let (mut rows, mut peak) = (0usize, before);
        while let Some(chunk) = stream.next().await {
            rows += chunk.unwrap().iter().filter(|b| **b == b'\n').count();
            peak = peak.max(rss_kib(pid));
        }
        let secs = started.elapsed().as_secs_f64();
        println!("export: {} rows in {secs:.2} s = {:.0} rows/s, gateway RSS +{} MiB", rows - 1, (rows - 1) as f64 / secs, (peak.saturating_sub(before)) / 1024);
        db.execute_unprepared(&format!("DELETE FROM conversations WHERE id = '{cid}'")).await.unwrap();
        // Vacuum now rather than let autovacuum chew on a million dead rows during the next run.
        db.execute_unprepared("VACUUM conversation_messages").await.unwrap();
        // Leave the development database as it was: the mock upstream dies with this process.
        client.delete(format!("{base}/api/v1/providers/{provider_id}")).bearer_auth(&admin_token).send().await.unwrap();
    });
}
