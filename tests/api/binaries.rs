//! The binaries as operators run them: `maas` (migrations, config), `maas-worker` (jobs, SIGTERM)
//! and `maas-api` (refusing insecure production settings, SIGTERM).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use maas_shared::jobs::DiagnosticPing;
use maas_tests::process::{exit_within, free_port, sigterm, wait_ready};
use maas_tests::{TestApp, TestDatabase, eventually, platform_command};
use sea_orm::{ConnectionTrait, Database};

fn command(name: &str, database_url: &str, key_prefix: &str) -> Command {
    platform_command(name, database_url, key_prefix)
}

fn maas(db: &TestDatabase, args: &[&str]) -> Output {
    command("maas", &db.url, "test:cli:")
        .args(args)
        .output()
        .expect("run maas")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn has_table(url: &str, table: &str) -> bool {
    let db = Database::connect(url).await.unwrap();
    let row = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT 1 FROM information_schema.tables WHERE table_name = '{table}'"),
        ))
        .await
        .unwrap();
    db.close().await.unwrap();
    row.is_some()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDatabase::empty().await;
    let status = maas(&db, &["migrate", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("pending  m20261123_000001_shared_audit_events"),
        "{}",
        text(&status.stdout)
    );

    let up = maas(&db, &["migrate", "up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert!(has_table(&db.url, "audit_events").await);
    assert!(
        text(&maas(&db, &["migrate", "status"]).stdout)
            .contains("applied  m20261123_000001_shared_audit_events")
    );

    let down = maas(&db, &["migrate", "down", "--steps", "100"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(!has_table(&db.url, "audit_events").await);

    let again = maas(&db, &["migrate", "up"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(has_table(&db.url, "audit_events").await);

    let fresh = maas(&db, &["migrate", "fresh"]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    assert!(has_table(&db.url, "audit_events").await);
}

#[tokio::test]
async fn config_show_redacts_every_secret() {
    let db = TestDatabase::empty().await;
    let url = db.url.replace("maas:maas@", "maas:s3cr3t-pw@");
    let out = command("maas", &url, "test:cfg:")
        .env("MAAS__AUTH__JWT_SECRET", "jwt-very-secret-value")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        !shown.contains("s3cr3t-pw") && !shown.contains("jwt-very-secret-value"),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"));
    assert!(
        shown.contains(&format!("/{}", db.name)),
        "the database name stays visible: {shown}"
    );
    assert!(shown.contains("\"key_prefix\": \"test:cfg:\""), "{shown}");
}

#[tokio::test]
async fn api_refuses_to_start_in_production_with_default_secrets() {
    let db = TestDatabase::migrated().await;
    let out = command("maas-api", &db.url, "test:prod:")
        .env("MAAS_ENV", "production")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("refusing to start in production"), "{err}");
    assert!(err.contains("JWT_SECRET"), "{err}");
}

#[tokio::test]
async fn api_binary_serves_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::migrated().await;
    let port = free_port();
    let mut child = command("maas-api", &db.url, "test:bin:")
        .env("MAAS__SERVER__PORT", port.to_string())
        .env("MAAS__SERVER__WORKERS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_ready(&format!("http://127.0.0.1:{port}")).await,
        "maas-api never became ready"
    );
    sigterm(&child);
    let (status, _) = exit_within(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn worker_process_completes_jobs_pushed_by_the_api_side() {
    let app = TestApp::spawn().await;
    let prefix = app.keyspace.prefix().to_owned();
    let mut worker = command("maas-worker", &app.db.url, &prefix)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let producer = app.producer::<DiagnosticPing>().await;
    let ping = DiagnosticPing {
        id: uuid::Uuid::now_v7(),
        delay_ms: 0,
    };
    producer.push(ping.clone()).await.unwrap();

    let redis = app.redis();
    let pong_key = ping.pong_key(&app.keyspace);
    let answered_by = eventually(Duration::from_secs(20), || {
        let redis = redis.clone();
        let key = pong_key.clone();
        async move {
            let mut conn = redis.get().await.ok()?;
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let worker_name = answered_by.expect("the worker answered the ping");
    assert!(
        worker_name.starts_with("diagnostics.ping@"),
        "{worker_name}"
    );

    // A job in flight when SIGTERM arrives is finished before the process exits.
    let slow = DiagnosticPing {
        id: uuid::Uuid::now_v7(),
        delay_ms: 1500,
    };
    producer.push(slow.clone()).await.unwrap();
    let started_key = slow.started_key(&app.keyspace);
    let started = eventually(Duration::from_secs(20), || {
        let redis = redis.clone();
        let key = started_key.clone();
        async move {
            let mut conn = redis.get().await.ok()?;
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(
        started.as_deref(),
        Some(worker_name.as_str()),
        "the slow job never started"
    );
    sigterm(&worker);
    let (status, _) = exit_within(&mut worker, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let mut conn = redis.get().await.unwrap();
    let pong: Option<String> = redis::cmd("GET")
        .arg(slow.pong_key(&app.keyspace))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        pong.as_deref(),
        Some(worker_name.as_str()),
        "the in-flight job was abandoned on SIGTERM"
    );
}

#[tokio::test]
async fn the_cli_registers_brands_models_and_servers_through_the_same_services() {
    let db = TestDatabase::migrated().await;
    let run = |args: &[&str]| {
        let out = maas(&db, args);
        assert!(out.status.success(), "maas {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(run(&["brand", "add", "NVIDIA"]).starts_with("registered brand `NVIDIA`"));
    assert!(run(&["brand", "list"]).contains("NVIDIA"));
    let added = run(&[
        "model",
        "add",
        "qwen-mini",
        "--family",
        "qwen2.5",
        "--context-length",
        "4096",
        "--capability",
        "chat,completion",
        "--source",
        "hf:Qwen/Qwen2.5-0.5B",
        "--engine",
        "llama.cpp",
    ]);
    assert!(added.starts_with("registered model `qwen-mini`"), "{added}");
    assert!(run(&["model", "list"]).contains("qwen-mini"));
    let bad = maas(
        &db,
        &[
            "model",
            "add",
            "bad name",
            "--family",
            "x",
            "--context-length",
            "0",
            "--source",
            "local:relative",
        ],
    );
    assert!(!bad.status.success());
    let message = text(&bad.stderr);
    assert!(
        message.contains("name")
            && message.contains("context_length")
            && message.contains("source.path"),
        "{message}"
    );
    let server = run(&[
        "server",
        "add",
        "gpu-1",
        "--address",
        "10.0.0.5",
        "--label",
        "zone=a",
        "--gpus",
        "8",
    ]);
    let token_line = server
        .lines()
        .find(|l| l.starts_with("join token"))
        .unwrap();
    assert!(token_line.contains("mjt_"), "{server}");
    assert!(run(&["server", "list"]).contains("gpu-1"));
    let token = run(&["server", "token", "gpu-1"]);
    assert!(
        token.contains("mjt_") && !token.contains(token_line.rsplit(' ').next().unwrap()),
        "a new token each time"
    );
    let rows = Database::connect(&db.url).await.unwrap();
    let row = rows
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT count(*) AS n FROM audit_events WHERE action IN ('brand.create', 'model.create', 'server.create', 'server.join_token')",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 4);
    rows.close().await.unwrap();
}
