//! The built-in engine (`maas-engine`) as a child process over the real models in
//! `MAAS_MODELS_DIR` (fetched by `scripts/fetch-models.sh`; `.ci/run` always fetches them).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Name the chat model is served under by default.
pub const CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Name the embedding model is served under by default.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// The models directory, or `None` (with a message saying why the test is skipped). With
/// `MAAS_REQUIRE_MODELS` set (CI), missing models fail the test instead.
#[must_use]
pub fn models_dir() -> Option<PathBuf> {
    let found = find_models_dir();
    assert!(
        found.is_some() || std::env::var_os("MAAS_REQUIRE_MODELS").is_none(),
        "MAAS_REQUIRE_MODELS is set but the models are missing"
    );
    found
}

fn find_models_dir() -> Option<PathBuf> {
    match std::env::var_os("MAAS_MODELS_DIR").map(PathBuf::from) {
        Some(dir) if dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists() => Some(dir),
        Some(dir) => {
            eprintln!(
                "SKIPPED: MAAS_MODELS_DIR={} holds no models; run scripts/fetch-models.sh",
                dir.display()
            );
            None
        }
        None => {
            eprintln!(
                "SKIPPED: MAAS_MODELS_DIR is not set; run scripts/fetch-models.sh and set it"
            );
            None
        }
    }
}

/// A running engine; killed when dropped.
pub struct EngineProcess {
    child: Child,
    /// `http://127.0.0.1:port`
    pub base_url: String,
    /// Where its models come from.
    pub models_dir: PathBuf,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EngineProcess {
    /// Starts `maas-engine` with both models and extra arguments, and waits until it is
    /// healthy. `None` when the models are absent (the test is skipped).
    pub async fn start(extra: &[&str]) -> Option<Self> {
        let models_dir = models_dir()?;
        let port = free_port();
        let mut cmd = Command::new(crate::binary("maas-engine"));
        for (key, _) in std::env::vars() {
            if key.starts_with("MAAS_ENGINE") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--models-dir")
            .arg(&models_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("start maas-engine");
        let engine = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            models_dir,
        };
        let client = reqwest::Client::new();
        let health = format!("{}/health", engine.base_url);
        let ready = crate::eventually(Duration::from_secs(90), || {
            let request = client.get(&health).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        assert!(ready.is_some(), "maas-engine did not become healthy");
        Some(engine)
    }

    /// `base_url` + path.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The chat model file.
    #[must_use]
    pub fn chat_model_file(&self) -> PathBuf {
        self.models_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
    }

    /// The embedding model directory.
    #[must_use]
    pub fn embedding_model_dir(&self) -> PathBuf {
        self.models_dir.join("all-MiniLM-L6-v2")
    }
}
