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
