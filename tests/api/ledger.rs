//! The usage ledger survives crashes: a settlement is durable (in the Redis settlement stream)
//! before the client sees its answer end, the worker drains the stream into PostgreSQL exactly
//! once whichever process is killed, and reservations of a killed process are released by the
//! sweeper. Every process here is a real binary killed with SIGKILL.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use maas_api::ExtraRoutes;
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use maas_tests::load::Load;
use maas_tests::process::{free_port, wait_ready};
use maas_tests::{TestApp, eventually, platform_command};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A quota large enough never to refuse, so that its counters can be compared with the ledger.
fn total_quotas() -> Value {
    json!({"tokens_total_quota": 1_000_000_000u64, "requests_total_quota": 1_000_000u64})
}

/// No default rate limits: only the quotas a test sets apply.
fn no_default_limits(settings: &mut maas_platform::Settings) {
    settings.sections.identity.default_requests_per_hour = 0;
    settings.sections.identity.default_requests_per_day = 0;
}

/// Registers `upstream` as provider `fake` serving model `m`.
async fn register(app: &TestApp, admin: &str, upstream: &FakeUpstream) {
    let created = app
        .post_as(
            admin,
            "/api/v1/providers",
            &json!({"name": "fake", "base_url": upstream.base_url,
                    "models": [{"model": "m", "upstream_model": "m-up"}]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

async fn set_policy(app: &TestApp, admin: &str, user: uuid::Uuid, token: &str, policy: &Value) {
    let resp = app
        .request(Method::PUT, &format!("/api/v1/users/{user}/quota"))
        .bearer_auth(admin)
        .json(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    app.wait_for_user_policy(token, policy).await;
}

/// `used` of the two total quotas in `/api/v1/me/quota` (read with an access token: costs
/// nothing).
async fn used(app: &TestApp, token: &str) -> BTreeMap<String, u64> {
    totals(app, token, "used").await
}

/// `field` (`used`, `remaining`) of each total quota in `/api/v1/me/quota`.
async fn totals(app: &TestApp, token: &str, field: &str) -> BTreeMap<String, u64> {
    let body: Value = app
        .get_as(token, "/api/v1/me/quota")
        .await
        .json()
        .await
        .unwrap();
    body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_total_quota"))
        })
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l[field].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The ledger's sums for `user`, as the quota counters should show them.
async fn ledger_sums(app: &TestApp, user: uuid::Uuid) -> BTreeMap<String, u64> {
    let tokens = app
        .count(&format!(
            "SELECT COALESCE(SUM(tokens), 0)::bigint FROM usage_ledger WHERE user_id = '{user}'"
        ))
        .await;
    let requests = app
        .count(&format!(
            "SELECT COALESCE(SUM(requests), 0)::bigint FROM usage_ledger WHERE user_id = '{user}'"
        ))
        .await;
    BTreeMap::from([
        (
            "user.requests_total_quota".to_owned(),
            u64::try_from(requests).unwrap(),
        ),
        (
            "user.tokens_total_quota".to_owned(),
            u64::try_from(tokens).unwrap(),
        ),
    ])
}

/// `maas-api` on a free port over the app's database and keys, its calls held at most
/// `total_timeout_ms` (so its reservations expire that long after admission).
async fn spawn_api(app: &TestApp, total_timeout_ms: u64) -> (Child, String) {
    let port = free_port();
    let api = platform_command("maas-api", &app.db.url, app.keyspace.prefix())
        .env("MAAS__SERVER__PORT", port.to_string())
        .env("MAAS__SERVER__WORKERS", "1")
        .env(
            "MAAS__GATEWAY__TOTAL_TIMEOUT_MS",
            total_timeout_ms.to_string(),
        )
        .env("MAAS__IDENTITY__RESERVATION_MARGIN_SECS", "0")
        .env("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_HOUR", "0")
        .env("MAAS__IDENTITY__DEFAULT_REQUESTS_PER_DAY", "0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_ready(&base).await, "maas-api never became ready");
    (api, base)
}

/// `maas-worker` over the app's database and keys, with `env` on top, sweeping every second.
fn spawn_worker(app: &TestApp, env: &[(&str, &str)]) -> Child {
    let mut worker = platform_command("maas-worker", &app.db.url, app.keyspace.prefix());
    worker
        .env("MAAS__IDENTITY__RESERVATION_SWEEP_SCHEDULE", "* * * * * *")
        .stdout(Stdio::null());
    for (name, value) in env {
        worker.env(name, value);
    }
    worker.spawn().unwrap()
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn kill_9_of_the_api_under_load_loses_no_answered_call_and_counts_none_twice() {
    const CLIENTS: usize = 16;
    const MAX_CALLS: usize = 2_000;
    let app = TestApp::spawn_with(no_default_limits, ExtraRoutes::default()).await;
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 4,
        chunk_delay: Duration::from_millis(2),
        ..Behaviour::default()
    });
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (user, token) = app.user_with_token("load", &["developer"]).await;
    register(&app, &admin, &upstream).await;
    set_policy(&app, &admin, user, &token, &total_quotas()).await;
    let mut keys = Vec::new();
    for i in 0..CLIENTS {
        keys.push(
            app.create_key(&token, json!({"name": format!("k{i}")}))
                .await,
        );
    }
    let (mut api, base) = spawn_api(&app, 2_000).await;

    let secrets: Vec<String> = keys.iter().map(|(_, key)| key.clone()).collect();
    let load = Load::start(&base, &secrets, MAX_CALLS);
    let warmed = eventually(Duration::from_secs(30), || {
        let answered = load.answered();
        async move { (answered >= 500).then_some(()) }
    })
    .await;
    assert!(warmed.is_some(), "the load never got going");
    kill(&mut api);
    let seen = load.stop().await;
    let answered = &seen.answered;
    assert!(
        seen.total() < i64::try_from(MAX_CALLS).unwrap(),
        "killed mid-load"
    );

    // The sweeper releases what the killed process held; the drain writes what it settled.
    let mut worker = spawn_worker(&app, &[]);
    let agreed = eventually(Duration::from_secs(30), || async {
        let (counters, ledger) = (used(&app, &token).await, ledger_sums(&app, user).await);
        (counters == ledger).then_some(ledger)
    })
    .await;
    kill(&mut worker);
    let ledger = agreed.expect("quota counters never matched the ledger");

    // Every call a client saw answered has its row, one per call: per key, the rows are the
    // answered calls plus at most the one call in flight when the process died (settled, its
    // answer not yet out).
    for (i, (key_id, _)) in keys.iter().enumerate() {
        let rows = app
            .count(&format!(
                "SELECT count(*) FROM usage_records WHERE key_id = '{key_id}'"
            ))
            .await;
        assert!(
            (answered[i]..=answered[i] + 1).contains(&rows),
            "key {i}: {rows} rows for {} answered calls",
            answered[i]
        );
    }
    let rows = app.count("SELECT count(*) FROM usage_records").await;
    assert_eq!(
        app.count("SELECT count(DISTINCT id) FROM usage_records")
            .await,
        rows
    );
    assert_eq!(
        app.count("SELECT count(*) FROM usage_ledger").await,
        rows,
        "one ledger entry per usage row"
    );
    assert_eq!(
        ledger["user.requests_total_quota"],
        u64::try_from(rows).unwrap()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM usage_records WHERE status <> 200")
            .await,
        0
    );
    eprintln!(
        "kill -9 of maas-api: {} calls answered, {rows} usage rows",
        seen.total()
    );
}

#[tokio::test]
async fn kill_9_of_the_worker_while_it_drains_writes_every_pending_entry_exactly_once() {
    const CALLS: usize = 1_000;
    let app = TestApp::spawn_undrained(no_default_limits).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (user, token) = app.user_with_token("load", &["developer"]).await;
    register(&app, &admin, &upstream).await;
    set_policy(&app, &admin, user, &token, &total_quotas()).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;

    // The settlements wait in the stream: nothing drains it yet.
    let url = format!("{}/v1/chat/completions", app.address);
    let calls = futures_util::stream::iter(0..CALLS)
        .map(|_| {
            let (client, url, key) = (app.client.clone(), url.clone(), key.clone());
            async move {
                let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                resp.status()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(calls.iter().all(|s| *s == StatusCode::OK));
    let identity = app.identity().await;
    let before = identity.settlement_stats().await.unwrap();
    assert_eq!(before.backlog, u64::try_from(CALLS).unwrap());
    assert_eq!(app.count("SELECT count(*) FROM usage_records").await, 0);

    // A worker with small batches is killed once it has written some.
    let mut first = spawn_worker(
        &app,
        &[
            ("MAAS__LEDGER__BATCH", "5"),
            ("MAAS__LEDGER__CLAIM_IDLE_MS", "500"),
        ],
    );
    let partial = eventually(Duration::from_secs(30), || async {
        let rows = app.count("SELECT count(*) FROM usage_ledger").await;
        (rows > 0).then_some(rows)
    })
    .await
    .expect("the first worker never drained anything");
    kill(&mut first);
    let at_kill = app.count("SELECT count(*) FROM usage_ledger").await;
    assert!(
        at_kill < i64::try_from(CALLS).unwrap(),
        "killed mid-drain ({partial} then {at_kill} rows)"
    );

    // A new worker claims what the dead one held once it has been idle, and drains the rest.
    let mut second = spawn_worker(&app, &[("MAAS__LEDGER__CLAIM_IDLE_MS", "500")]);
    let drained = eventually(Duration::from_secs(30), || async {
        let stats = identity.settlement_stats().await.ok()?;
        (stats.backlog == 0 && stats.pending == 0).then_some(stats)
    })
    .await;
    kill(&mut second);
    let stats = drained.expect("the stream was never drained");
    let calls = i64::try_from(CALLS).unwrap();
    for sql in [
        "SELECT count(*) FROM usage_records",
        "SELECT count(DISTINCT id) FROM usage_records",
        "SELECT count(*) FROM usage_ledger",
        "SELECT count(DISTINCT request_id) FROM usage_ledger",
        "SELECT count(*) FROM usage_ledger l JOIN usage_records r ON r.id = l.request_id",
    ] {
        assert_eq!(app.count(sql).await, calls, "{sql}");
    }
    assert_eq!(
        stats.drained,
        u64::try_from(CALLS).unwrap(),
        "every entry counted once: {stats:?}"
    );
    assert_eq!(stats.failed, 0);
    assert_eq!(used(&app, &token).await, ledger_sums(&app, user).await);
    eprintln!(
        "kill -9 of maas-worker after {at_kill} of {CALLS} entries; all {CALLS} written once"
    );
}

#[tokio::test]
async fn the_sweeper_releases_a_reservation_whose_process_was_killed() {
    let app = TestApp::spawn().await;
    // A stream that takes a minute: the call is in flight when its process dies.
    let upstream = FakeUpstream::spawn(Behaviour {
        chunks: 600,
        chunk_delay: Duration::from_millis(100),
        ..Behaviour::default()
    });
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (user, token) = app.user_with_token("sam", &["developer"]).await;
    register(&app, &admin, &upstream).await;
    let policy = json!({"tokens_total_quota": 5_000u64, "requests_total_quota": 100u64});
    set_policy(&app, &admin, user, &token, &policy).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    let (mut api, base) = spawn_api(&app, 1_500).await;

    let messages = json!([{"role": "user", "content": "hi"}]);
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "stream": true, "max_tokens": 100, "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    assert!(body.next().await.is_some(), "the stream started");
    let held = used(&app, &token).await;
    assert_eq!(held["user.requests_total_quota"], 1);
    // The upper bound of the call: its messages' JSON bytes, the default chat-template overhead
    // (128 once, 16 per message) and the completion cap.
    let bound = messages.to_string().len() as u64 + 128 + 16 + 100;
    assert_eq!(
        held["user.tokens_total_quota"], bound,
        "the prompt bound and the completion cap are reserved: {held:?}"
    );
    kill(&mut api);
    drop(body);

    // Nobody will settle it: the sweeper gives it back once its deadline (1.5 s) has passed.
    let mut worker = spawn_worker(&app, &[]);
    let released = eventually(Duration::from_secs(20), || async {
        let now = used(&app, &token).await;
        (now.values().all(|v| *v == 0)).then_some(now)
    })
    .await;
    kill(&mut worker);
    assert!(released.is_some(), "the reservation was never released");
    let remaining = totals(&app, &token, "remaining").await;
    assert_eq!(
        remaining,
        BTreeMap::from([
            ("user.requests_total_quota".to_owned(), 100),
            ("user.tokens_total_quota".to_owned(), 5_000)
        ])
    );
    assert_eq!(app.count("SELECT count(*) FROM usage_ledger").await, 0);
}
