//! Cost of the HTTP stack every request pays (normalisation, request id, metrics, CORS check,
//! error fallback, routing): `/health` touches no dependency, `/ready` adds one PostgreSQL and one
//! Redis round trip. Bounded loops on loopback; run with `just bench`.
//!
//! Client and server share this 2-core machine, so the figures are an upper bound on overhead.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::time::{Duration, Instant};

use maas_platform::{Platform, Role, Settings};

const REQUESTS_PER_RUN: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run(url: &str, connections: usize, total: usize) -> (Vec<Duration>, Duration) {
    let per_connection = total / connections;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let url = url.to_owned();
        // One client (one keep-alive connection) per simulated caller.
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let t = Instant::now();
                let resp = client.get(&url).send().await.unwrap();
                assert!(resp.status().is_success());
                resp.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    (all, elapsed)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let settings = Settings::load_with(&[
            ("server.port", "0"),
            ("server.workers", "1"),
            ("telemetry.filter", "warn"),
        ])
        .expect("settings (is DATABASE_URL set? `just bench` sets it)");
        let platform = Platform::connect(settings, Role::Server)
            .await
            .expect("platform");
        let app = maas_api::Application::build(&platform).expect("app");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());

        println!(
            "{:<8} {:>5} {:>10} {:>10} {:>10}",
            "path", "conns", "p50 µs", "p99 µs", "req/s"
        );
        for path in ["/health", "/ready"] {
            let url = format!("{base}{path}");
            run(&url, 4, 2_000).await; // warm-up
            for connections in [1, 16, 64] {
                let (latencies, elapsed) = run(&url, connections, REQUESTS_PER_RUN).await;
                println!(
                    "{:<8} {:>5} {:>10} {:>10} {:>10.0}",
                    path,
                    connections,
                    percentile(&latencies, 0.50).as_micros(),
                    percentile(&latencies, 0.99).as_micros(),
                    latencies.len() as f64 / elapsed.as_secs_f64()
                );
            }
        }
    });
}
