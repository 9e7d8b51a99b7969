//! The API under 1,000 simulated node agents heartbeating every 10 s: the latency of a heartbeat
//! (p50/p99) and the PostgreSQL writes per second while nothing changes (the goal: none,
//! a heartbeat goes to Redis). Then a real release `maas-agent` at idle: its RSS and CPU.
//! In-process `maas-api` (one HTTP worker) over real PostgreSQL and Redis; bounded in time.
//! Run with `just bench`; `BENCH_AGENTS`, `BENCH_SECONDS`, `BENCH_IDLE_SECONDS` tune it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use maas_api::startup::Application;
use maas_model::domain::server::{AgentInfo, ServerDraft};
use maas_platform::{Platform, Role, Settings};
use maas_user::app::Actor;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// PostgreSQL's next transaction id: every transaction that writes takes one (reads do not), so
/// the difference of two readings is the number of writing transactions in between, at once
/// (the statistics views lag by seconds). Each reading takes one itself.
async fn transaction_id(platform: &Platform) -> i64 {
    let row = platform
        .db()
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT txid_current()::bigint AS n",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
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
    let agents = usize::try_from(env("BENCH_AGENTS", 1000)).unwrap();
    let seconds = env("BENCH_SECONDS", 30);
    let prefix = format!("bench:{}:", uuid::Uuid::now_v7().simple());
    let uploads =
        std::env::temp_dir().join(format!("maas-bench-{}", uuid::Uuid::now_v7().simple()));
    let settings = Settings::load_with(&[
        ("redis.key_prefix", &prefix),
        ("telemetry.filter", "warn"),
        ("server.host", "127.0.0.1"),
        ("server.port", "0"),
        ("server.workers", "1"),
        ("storage.dir", &uploads.to_string_lossy()),
    ])
    .expect("settings (is DATABASE_URL set? `just bench` sets it)");
    let platform = Platform::connect(settings, Role::Server).await.unwrap();
    let app = Application::build(&platform).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let compute = platform.compute().unwrap();

    // Register and join the fleet through the services (what the HTTP join does).
    let run_id = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let mut nodes = Vec::with_capacity(agents);
    for i in 0..agents {
        let draft = ServerDraft {
            name: format!("bench-{run_id}-{i}"),
            address: "10.0.0.1".into(),
            ..ServerDraft::default()
        };
        let (_, token) = compute.servers.create(&Actor::System, draft).await.unwrap();
        let info = AgentInfo::parse(
            "bench",
            "0",
            &format!("http://10.0.{}.{}:9090", i / 250, i % 250 + 1),
        )
        .unwrap();
        let joined = compute.nodes.join(&token.token, info).await.unwrap();
        nodes.push((joined.server, joined.credential));
    }
    println!(
        "heartbeats: {agents} agents registered and joined; heartbeating every 10 s for {seconds} s"
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let before = transaction_id(&platform).await;
    let started = Instant::now();
    let period = Duration::from_secs(10);
    let deadline = started + Duration::from_secs(seconds);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, (server, credential)) in nodes.into_iter().enumerate() {
        let (client, base, latencies, failures) = (
            client.clone(),
            base.clone(),
            Arc::clone(&latencies),
            Arc::clone(&failures),
        );
        let offset = period.mul_f64(
            f64::from(u32::try_from(i).unwrap()) / f64::from(u32::try_from(agents).unwrap()),
        );
        tasks.push(tokio::spawn(async move {
            let mut next = started + offset;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/api/v1/nodes/{server}/heartbeat"))
                    .bearer_auth(&credential)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        latencies.lock().unwrap().push(sent.elapsed())
                    }
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                next += period;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let written = transaction_id(&platform).await - before - 1;
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort_unstable();
    println!(
        "heartbeats: {} answered, {} failed in {:.1} s ({:.0}/s); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        failures.load(std::sync::atomic::Ordering::Relaxed),
        elapsed.as_secs_f64(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        pct(&sorted, 0.5),
        pct(&sorted, 0.99),
        pct(&sorted, 1.0),
    );
    println!(
        "heartbeats: PostgreSQL writing transactions during the run: {written} ({:.2}/s)",
        written as f64 / elapsed.as_secs_f64()
    );
    idle_agent(&compute, &base).await;
    let _ = std::fs::remove_dir_all(uploads);
}

/// A real release `maas-agent`, joined, at idle (heartbeat 10 s, report 30 s): RSS and CPU.
async fn idle_agent(compute: &maas_model::infra::Compute, base: &str) {
    let seconds = env("BENCH_IDLE_SECONDS", 60);
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("maas-agent");
    if !agent.exists() {
        println!(
            "agent idle: {} not built (cargo build --release --bins); skipped",
            agent.display()
        );
        return;
    }
    let draft = ServerDraft {
        name: format!("idle-{}", uuid::Uuid::now_v7().simple()),
        address: "127.0.0.1".into(),
        ..ServerDraft::default()
    };
    let (_, token) = compute.servers.create(&Actor::System, draft).await.unwrap();
    let data = std::env::temp_dir().join(format!(
        "maas-bench-agent-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let mut child = std::process::Command::new(agent)
        .args([
            "--server",
            base,
            "--token",
            &token.token,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let pid = child.id();
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    // Past its join and first report, then measured over `seconds`.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (t0, at) = (ticks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = ticks() - t0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .to_owned();
    let clk = 100.0;
    println!(
        "agent idle over {:.0} s: CPU {:.3} % of one core ({used} ticks), {}",
        at.elapsed().as_secs_f64(),
        used as f64 / clk / at.elapsed().as_secs_f64() * 100.0,
        rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(data);
}
