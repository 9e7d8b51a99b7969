//! Test support: [`TestApp::spawn`] starts the real API on a random loopback port over a fresh
//! PostgreSQL database (cloned from a migrated template, so it takes milliseconds) and its own
//! Redis key prefix; [`TestDatabase`] and [`binary`] help tests that drive the other binaries.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support fails loudly by design"
)]

pub mod cluster;
pub mod docs;
pub mod engine;
pub mod fake_upstream;
pub mod load;
pub mod sshd;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use maas_api::{Application, ExtraRoutes};
use maas_migrations::{Migrator, MigratorTrait};
pub use maas_platform::Settings;
use maas_platform::{Platform, Role};
use maas_shared::clock::{Clock, SystemClock};
use maas_shared::kv::{Keyspace, RedisPool};
use maas_user::app::Actor;
use maas_user::app::accounts::NewAccount;
use maas_user::infra::Identity;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// Base connection URL of the test PostgreSQL (a database the test role may connect to).
#[must_use]
pub fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://maas:maas@127.0.0.1:54329/maas".to_owned())
}

/// URL of the test Redis.
#[must_use]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:63799/".to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

async fn connect_one(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .expect("connect to test PostgreSQL (is `just services-up` running?)")
}

/// Installs a log subscriber once per process when `TEST_LOG` is set; silent otherwise.
pub fn init_test_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database of its own for one test, dropped when the value is dropped.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
}

impl TestDatabase {
    /// A fresh, fully migrated database (a copy of the template).
    pub async fn migrated() -> Self {
        let template = ensure_template().await;
        Self::create(Some(&template)).await
    }

    /// A fresh, empty database (no migrations applied).
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let base = base_database_url();
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let admin = connect_one(&base).await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        admin
            .execute_unprepared(&sql)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        Self {
            url: with_database(&base, &name),
            name,
        }
    }

    /// Drops the database now, closing every connection to it.
    pub async fn drop_now(&self) {
        let admin = connect_one(&base_database_url()).await;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop test database");
        let _ = admin.close().await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which must not block: use a runtime of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = connect_one(&base_database_url()).await;
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
            });
        })
        .join();
    }
}

/// The migrated template database, built once per migration set across all test processes.
async fn ensure_template() -> String {
    let mut hasher = DefaultHasher::new();
    for migration in Migrator::migrations() {
        migration.name().hash(&mut hasher);
    }
    let template = format!("maas_tpl_{:016x}", hasher.finish());
    let admin = connect_one(&base_database_url()).await;
    let exists = |admin: &DatabaseConnection, name: String| {
        let admin = admin.clone();
        async move {
            admin
                .query_one(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
                ))
                .await
                .expect("query pg_database")
                .is_some()
        }
    };
    if !exists(&admin, template.clone()).await {
        // Serialise builders across processes; the template appears under its final name only
        // once it is complete and nobody is connected to it.
        admin
            .execute_unprepared("SELECT pg_advisory_lock(72726001)")
            .await
            .expect("advisory lock");
        if !exists(&admin, template.clone()).await {
            let building = format!("{template}_building");
            admin
                .execute_unprepared(&format!(
                    "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
                ))
                .await
                .unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{building}\""))
                .await
                .unwrap();
            let db = connect_one(&with_database(&base_database_url(), &building)).await;
            Migrator::up(&db, None).await.expect("migrate template");
            db.close().await.unwrap();
            admin
                .execute_unprepared(&format!(
                    "ALTER DATABASE \"{building}\" RENAME TO \"{template}\""
                ))
                .await
                .unwrap();
        }
        admin
            .execute_unprepared("SELECT pg_advisory_unlock(72726001)")
            .await
            .expect("advisory unlock");
    }
    let _ = admin.close().await;
    template
}

/// A running API over its own database and Redis key prefix.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The settings the app runs with.
    pub settings: Settings,
    /// The app's Redis keys start with this.
    pub keyspace: Keyspace,
    /// HTTP client (no redirects followed, so tests see them).
    pub client: reqwest::Client,
    /// Stops the server.
    pub handle: actix_web::dev::ServerHandle,
    /// The app's database; dropped with the app.
    pub db: Arc<TestDatabase>,
    /// The app's composition root (pools, background tasks).
    pub platform: Platform,
}

impl TestApp {
    /// Spawns the API with default test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}, ExtraRoutes::default()).await
    }

    /// Spawns the API after `tweak` has adjusted the settings, with extra routes.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings), extra: ExtraRoutes) -> Self {
        Self::start(tweak, extra, true).await
    }

    /// Spawns the API without the in-process drain of the settlement stream: settlements stay
    /// in Redis until a `maas-worker` drains them.
    pub async fn spawn_undrained(tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start(tweak, ExtraRoutes::default(), false).await
    }

    async fn start(tweak: impl FnOnce(&mut Settings), extra: ExtraRoutes, drain: bool) -> Self {
        init_test_logs();
        let db = Arc::new(TestDatabase::migrated().await);
        let mut settings = test_settings(&db.url);
        tweak(&mut settings);
        let platform = Platform::connect(settings.clone(), Role::Server)
            .await
            .expect("connect the platform");
        let app = Application::build_with(&platform, extra).expect("build app");
        // The worker's drain of the settlement stream, in-process: usage rows and ledger
        // entries reach PostgreSQL as they do in production, through the stream.
        if drain {
            let identity = platform.identity().expect("identity");
            platform.start_ledger_drain(&identity);
        }
        let port = app.port();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let keyspace = Keyspace::new(&settings.redis.key_prefix);
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            settings,
            keyspace,
            client,
            handle,
            db,
            platform,
        }
    }

    /// `GET {address}{path}`
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// A request builder for `method {address}{path}`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    /// A connection to the app's own database.
    pub async fn db(&self) -> DatabaseConnection {
        connect_one(&self.db.url).await
    }

    /// The one `bigint` value `sql` selects from the app's database (a count, a sum).
    pub async fn count(&self, sql: &str) -> i64 {
        use sea_orm::ConnectionTrait as _;
        let db = self.db().await;
        let row = db
            .query_one(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("a bigint")
    }

    /// Another API process on the same database and Redis prefix (a second replica).
    pub async fn spawn_replica(&self) -> Self {
        self.spawn_replica_with(|_| {}).await
    }

    /// A second replica whose settings `tweak` has adjusted (e.g. one that cannot reach Redis).
    pub async fn spawn_replica_with(&self, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let platform = Platform::connect(settings.clone(), Role::Server)
            .await
            .expect("connect the replica's platform");
        let app =
            Application::build_with(&platform, ExtraRoutes::default()).expect("build replica");
        let port = app.port();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            settings,
            keyspace: self.keyspace.clone(),
            client: self.client.clone(),
            handle,
            db: Arc::clone(&self.db),
            platform,
        }
    }

    /// The app's Redis pool.
    #[must_use]
    pub fn redis(&self) -> RedisPool {
        self.platform.redis().clone()
    }

    /// A job producer on the app's Redis and key prefix, as the API side pushes jobs.
    pub async fn producer<J: maas_shared::jobs::Job>(&self) -> maas_shared::jobs::JobProducer<J> {
        let conn = self.platform.multiplexed().get().await.expect("Redis");
        maas_shared::jobs::JobProducer::new(conn, &self.keyspace)
    }

    /// The identity services wired in-process against the app's database and Redis, acting as
    /// the operator's CLI would.
    pub async fn identity(&self) -> Identity {
        self.identity_with_clock(Arc::new(SystemClock)).await
    }

    /// The identity services as [`TestApp::identity`] wires them, over `clock` instead of the
    /// system clock (a [`maas_shared::clock::ManualClock`] keeps every window still).
    pub async fn identity_with_clock(&self, clock: Arc<dyn Clock>) -> Identity {
        Platform::connect(self.settings.clone(), Role::Command)
            .await
            .expect("connect the platform")
            .with_clock(clock)
            .identity()
            .expect("identity")
    }

    /// Waits (up to 2 s) until `GET /api/v1/me/quota` as `credential` lists, for every field of
    /// `policy` (a quota policy as `PUT /users/{id}/quota` takes it), the rule `user.<field>`
    /// with that cap: the app now admits this user's calls under the new policy.
    ///
    /// Calls with an access token cost nothing; calls with an API key count one request each
    /// against the key's and the user's request limits.
    ///
    /// # Panics
    /// When the policy is not seen in time (with the last answer).
    pub async fn wait_for_user_policy(&self, credential: &str, policy: &serde_json::Value) {
        let expected: Vec<(String, u64)> = policy
            .as_object()
            .expect("a policy is an object")
            .iter()
            .map(|(field, max)| (format!("user.{field}"), max.as_u64().expect("a cap")))
            .collect();
        let applies = |body: &serde_json::Value| {
            let Some(limits) = body["limits"].as_array() else {
                return false;
            };
            expected.iter().all(|(name, max)| {
                limits
                    .iter()
                    .any(|l| l["name"] == name.as_str() && l["limit"] == *max)
            })
        };
        let seen = eventually(std::time::Duration::from_secs(2), || async {
            let resp = self.get_as(credential, "/api/v1/me/quota").await;
            let body: serde_json::Value = resp.json().await.ok()?;
            applies(&body).then_some(())
        })
        .await;
        if seen.is_none() {
            let body = self.get_as(credential, "/api/v1/me/quota").await;
            panic!(
                "policy {policy} not applied: {}",
                body.text().await.unwrap_or_default()
            );
        }
    }

    /// Creates a user with `roles` and a fixed password; returns its id.
    pub async fn create_user(&self, username: &str, roles: &[&str]) -> uuid::Uuid {
        let identity = self.identity().await;
        let account = NewAccount {
            username: username.to_owned(),
            email: Some(format!("{username}@example.com")),
            password: TEST_PASSWORD.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        identity
            .accounts
            .create(Actor::System, account)
            .await
            .expect("create user")
            .id()
            .as_uuid()
    }

    /// Logs `username` in with [`TEST_PASSWORD`]; returns the token response.
    pub async fn login(&self, username: &str) -> serde_json::Value {
        let resp = self
            .request(reqwest::Method::POST, "/api/v1/auth/login")
            .json(&serde_json::json!({"login": username, "password": TEST_PASSWORD}))
            .send()
            .await
            .expect("login request");
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::OK,
            "login of {username} failed"
        );
        resp.json().await.expect("token json")
    }

    /// Creates a user with `roles`, logs in, and returns (user id, access token).
    pub async fn user_with_token(&self, username: &str, roles: &[&str]) -> (uuid::Uuid, String) {
        let id = self.create_user(username, roles).await;
        let tokens = self.login(username).await;
        (
            id,
            tokens["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
        )
    }

    /// Creates an API key with `body` using `token`; returns (key id, secret).
    pub async fn create_key(&self, token: &str, body: serde_json::Value) -> (uuid::Uuid, String) {
        let resp = self
            .request(reqwest::Method::POST, "/api/v1/me/keys")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("create key");
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::CREATED,
            "{}",
            resp.text().await.unwrap_or_default()
        );
        let json: serde_json::Value = resp.json().await.expect("key json");
        (
            json["id"].as_str().expect("id").parse().expect("uuid"),
            json["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// `GET path` with a bearer credential.
    pub async fn get_as(&self, credential: &str, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .bearer_auth(credential)
            .send()
            .await
            .expect("request")
    }

    /// `POST path` with a JSON body as the holder of a token or API key.
    pub async fn post_as(
        &self,
        credential: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .bearer_auth(credential)
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

/// The password [`TestApp::create_user`] gives every user.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// Settings for a test process: the given database, a fresh Redis prefix, a random port.
#[must_use]
pub fn test_settings(database_url: &str) -> Settings {
    let prefix = format!("test:{}:", uuid::Uuid::now_v7().simple());
    let redis = redis_url();
    let uploads = std::env::temp_dir().join(format!(
        "maas-test-uploads-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let uploads = uploads.to_string_lossy().into_owned();
    Settings::load_with(&[
        ("database.url", database_url),
        ("database.max_connections", "5"),
        ("database.connect_retries", "1"),
        ("redis.url", &redis),
        ("redis.key_prefix", &prefix),
        ("server.host", "127.0.0.1"),
        ("server.port", "0"),
        ("server.workers", "1"),
        ("server.shutdown_timeout_secs", "5"),
        ("storage.dir", &uploads),
    ])
    .expect("test settings")
}

/// Path of a platform binary (`maas`, `maas-api`, `maas-worker`) next to the test executable.
///
/// # Panics
/// When it has not been built: run `cargo build --bins` first (`just test` does).
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` (just test does it)",
        path.display()
    );
    path
}

/// A platform binary as an operator would start it against this test's database and Redis
/// prefix: no `MAAS*` variable inherited from the caller, `MAAS_ENV=test`, JSON logs.
#[must_use]
pub fn platform_command(name: &str, database_url: &str, key_prefix: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary(name));
    for (key, _) in std::env::vars() {
        if key.starts_with("MAAS") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("MAAS__REDIS__KEY_PREFIX", key_prefix)
        .env("MAAS__DATABASE__CONNECT_RETRIES", "1")
        .env("MAAS__TELEMETRY__FORMAT", "json")
        .env("MAAS_ENV", "test")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Waits up to `timeout` for `check` to return `Some`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Driving the platform's binaries as an orchestrator would: ports, readiness, signals, exits.
pub mod process {
    use std::process::{Child, Command, ExitStatus};
    use std::time::{Duration, Instant};

    use super::eventually;

    /// A free loopback port for a binary to bind.
    #[must_use]
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Waits up to 20 s for `GET {base}/ready` to answer 2xx.
    pub async fn wait_ready(base: &str) -> bool {
        eventually(Duration::from_secs(20), || {
            let url = format!("{base}/ready");
            async move {
                reqwest::get(url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await
        .is_some()
    }

    /// Sends SIGTERM, as an orchestrator stopping the process does.
    pub fn sigterm(child: &Child) {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for `child` to exit; returns its status and how long that took. Kills it and fails
    /// the test when it is still running after `within`.
    pub async fn exit_within(child: &mut Child, within: Duration) -> (ExitStatus, Duration) {
        let asked = Instant::now();
        let status = eventually(within, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await;
        match status {
            Some(status) => (status, asked.elapsed()),
            None => {
                let _ = child.kill();
                panic!("process did not exit within {within:?}")
            }
        }
    }
}
