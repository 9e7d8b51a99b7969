//! SIGTERM under load, as an orchestrator sends it: intake stops, in-flight work finishes, every
//! background task flushes, and the process exits within its shutdown timeout. And scheduled
//! jobs run once per tick however many workers run.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use maas_shared::jobs::DiagnosticPing;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use maas_tests::load::Load;
use maas_tests::process::{exit_within, free_port, sigterm, wait_ready};
use maas_tests::{TestApp, eventually, platform_command};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn api_sigterm_under_load_answers_in_flight_calls_and_flushes_every_usage_row() {
    const CLIENTS: usize = 16;
    const MAX_CALLS: usize = 2_000;
    let app = TestApp::spawn().await;
    // Each answer takes a few milliseconds, so calls are in flight when SIGTERM lands.
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 4,
        chunk_delay: Duration::from_millis(2),
        ..Behaviour::default()
    });
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("load", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "load"})).await;
    let created = app
        .post_as(
            &admin,
            "/api/v1/providers",
            &json!({"name": "fake", "base_url": upstream.base_url,
                    "models": [{"model": "m", "upstream_model": "m-up"}]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);

    let port = free_port();
    let mut api = platform_command("maas-api", &app.db.url, app.keyspace.prefix())
        .env("MAAS__SERVER__PORT", port.to_string())
        .env("MAAS__SERVER__WORKERS", "1")
        .env("MAAS__SERVER__SHUTDOWN_TIMEOUT_SECS", "10")
        .env("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_HOUR", "0")
        .env("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_DAY", "0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_ready(&base).await, "maas-api never became ready");

    let load = Load::start(&base, &vec![key; CLIENTS], MAX_CALLS);
    let warmed = eventually(Duration::from_secs(30), || {
        let answered = load.answered();
        async move { (answered >= 200).then_some(()) }
    })
    .await;
    assert!(warmed.is_some(), "the load never got going");
    sigterm(&api);
    let (status, took) = exit_within(&mut api, Duration::from_secs(15)).await;
    let seen = load.stop().await;
    assert!(status.success(), "maas-api exited with {status:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert_eq!(seen.refused, 0, "no call got an error status");
    // Every answered call was settled into the durable stream before its answer went out, and
    // drained from there: none is lost with the process, and none is written twice.
    let answered = seen.total();
    let rows = eventually(Duration::from_secs(10), || async {
        let rows = app.count("SELECT count(*) FROM usage_records").await;
        (rows == answered).then_some(rows)
    })
    .await;
    assert_eq!(rows, Some(answered));
    assert_eq!(
        app.count("SELECT count(DISTINCT id) FROM usage_records")
            .await,
        answered
    );
    assert_eq!(
        app.count("SELECT count(*) FROM usage_records WHERE status <> 200")
            .await,
        0
    );
    // And the process is gone: nothing listens any more.
    assert!(reqwest::get(format!("{base}/health")).await.is_err());
}

async fn pong(app: &TestApp, key: String) -> Option<String> {
    let mut conn = app.redis().get().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<String>>(&mut conn)
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn worker_sigterm_under_load_finishes_running_jobs_and_leaves_the_rest_queued() {
    const JOBS: usize = 12;
    let app = TestApp::spawn().await;
    let prefix = app.keyspace.prefix().to_owned();
    let producer = app.producer::<DiagnosticPing>().await;
    let pings: Vec<DiagnosticPing> = (0..JOBS)
        .map(|_| DiagnosticPing {
            id: uuid::Uuid::now_v7(),
            delay_ms: 1_000,
        })
        .collect();
    for ping in &pings {
        producer.push(ping.clone()).await.unwrap();
    }
    let mut worker = platform_command("maas-worker", &app.db.url, &prefix)
        .env("MAAS__WORKER__CONCURRENCY", "4")
        .env("MAAS__WORKER__SHUTDOWN_TIMEOUT_SECS", "10")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until jobs are running (each takes a second; four at a time).
    let running = eventually(Duration::from_secs(20), || async {
        let mut started = 0;
        for ping in &pings {
            if pong(&app, ping.started_key(&app.keyspace)).await.is_some() {
                started += 1;
            }
        }
        (started >= 2).then_some(())
    })
    .await;
    assert!(running.is_some(), "no job started");
    sigterm(&worker);
    let (status, took) = exit_within(&mut worker, Duration::from_secs(15)).await;
    assert!(status.success(), "maas-worker exited with {status:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    // Every job that started also finished: none was abandoned half-way.
    let mut started = Vec::new();
    let mut finished = Vec::new();
    for ping in &pings {
        if pong(&app, ping.started_key(&app.keyspace)).await.is_some() {
            started.push(ping.id);
        }
        if pong(&app, ping.pong_key(&app.keyspace)).await.is_some() {
            finished.push(ping.id);
        }
    }
    assert_eq!(started, finished, "a running job was abandoned on SIGTERM");
    assert!(
        finished.len() < JOBS,
        "the worker kept taking jobs after SIGTERM"
    );

    // A new worker takes the rest: every job is done in the end.
    let mut next = platform_command("maas-worker", &app.db.url, &prefix)
        .env("MAAS__WORKER__CONCURRENCY", "8")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let all = eventually(Duration::from_secs(30), || async {
        for ping in &pings {
            pong(&app, ping.pong_key(&app.keyspace)).await?;
        }
        Some(())
    })
    .await;
    let _ = next.kill();
    let _ = next.wait();
    assert!(all.is_some(), "the queued jobs were lost");
}

type Lines = Arc<std::sync::Mutex<Vec<String>>>;

/// Reads a worker's JSON log lines and records each `tick` of a conversation expiry run (and
/// every line, to show when the test fails).
fn collect_ticks(child: &mut Child, ticks: &Arc<std::sync::Mutex<Vec<u64>>>, lines: &Lines) {
    let stdout = child.stdout.take().unwrap();
    let ticks = Arc::clone(ticks);
    let lines = Arc::clone(lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            lines.lock().unwrap().push(line.clone());
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["fields"]["message"] == "conversation expiry ran"
                && let Some(tick) = event["fields"]["tick"].as_u64()
            {
                ticks.lock().unwrap().push(tick);
            }
        }
    });
}

#[tokio::test]
async fn two_workers_run_each_tick_of_a_schedule_once() {
    let app = TestApp::spawn().await;
    let ticks: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let lines: Lines = Arc::default();
    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            let mut child = platform_command("maas-worker", &app.db.url, app.keyspace.prefix())
                .env("MAAS__CONVERSATIONS__EXPIRY_SCHEDULE", "* * * * * *")
                .env("MAAS__DATABASE__MAX_CONNECTIONS", "4")
                .env("RUST_LOG", "maas_worker=info,warn")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            collect_ticks(&mut child, &ticks, &lines);
            child
        })
        .collect();
    // Both workers fire every second; wait for several ticks to have run.
    let enough = eventually(Duration::from_secs(30), || {
        let distinct = ticks
            .lock()
            .unwrap()
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        async move { (distinct >= 4).then_some(()) }
    })
    .await;
    for worker in &mut workers {
        sigterm(worker);
    }
    for worker in &mut workers {
        let (status, _) = exit_within(worker, Duration::from_secs(15)).await;
        assert!(status.success(), "{status:?}");
    }
    assert!(
        enough.is_some(),
        "the schedule did not run: {:?}",
        ticks.lock().unwrap()
    );
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for tick in ticks.lock().unwrap().iter() {
        *runs.entry(*tick).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "ticks that ran more than once: {twice:?} of {runs:?}"
    );
    assert!(runs.len() >= 4, "{runs:?}");
}

#[tokio::test]
async fn a_malformed_schedule_stops_the_worker_with_a_clear_error() {
    let app = TestApp::spawn().await;
    let out = platform_command("maas-worker", &app.db.url, app.keyspace.prefix())
        .env("MAAS__CONVERSATIONS__EXPIRY_SCHEDULE", "every five minutes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conversations.expiry_schedule `every five minutes` is not a cron expression"),
        "{err}"
    );
}
