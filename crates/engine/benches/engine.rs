//! The built-in engine on this machine (`just bench`): the release `maas-engine` over the real
//! models in `MAAS_MODELS_DIR` (default `.models`), measured over HTTP as a client sees it.
//!
//! Reports: decode and prefill tokens/s, time to first token, RSS after load and at peak,
//! embeddings/s at batch 1 and 32; with `MAAS_BENCH_GATEWAY_URL` and `MAAS_BENCH_GATEWAY_KEY`
//! (set by `scripts/bench.sh`, which registers the engine with a release `maas-api`), the time to
//! first token the gateway adds. Bounded loops on loopback.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHAT: &str = "smollm2-135m-instruct";
const EMBED: &str = "all-minilm-l6-v2";

struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Timings of one streamed call.
struct Streamed {
    /// First SSE event (the engine sends the role chunk before computing anything).
    first_event: Duration,
    /// First content.
    first_token: Duration,
    total: Duration,
    completion_tokens: u64,
}

/// Streams one chat call.
async fn stream_chat(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> Streamed {
    let started = Instant::now();
    let mut request = client.post(format!("{url}/chat/completions")).json(&json!({
        "model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
        "max_tokens": max_tokens, "stream": true, "stream_options": {"include_usage": true}}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let mut resp = request.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut first = None;
    let mut first_event = None;
    let mut tokens = 0;
    let mut buffer = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            first_event.get_or_insert_with(|| started.elapsed());
            if first.is_none()
                && v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            {
                first = Some(started.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    Streamed {
        first_event: first_event.unwrap_or_default(),
        first_token: first.unwrap_or_default(),
        total: started.elapsed(),
        completion_tokens: tokens,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let models = std::env::var_os("MAAS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".models"));
    let binary = root.join("target/release/maas-engine");
    if !models.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists() || !binary.exists() {
        eprintln!(
            "engine bench skipped: needs the models (just fetch-models) and a release build (cargo build --release -p maas-engine)"
        );
        return;
    }
    let port = std::env::var("MAAS_BENCH_ENGINE_PORT").unwrap_or_else(|_| "18777".into());
    let loaded = Instant::now();
    let engine = Engine(
        Command::new(&binary)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--concurrency",
                "1",
            ])
            .arg("--models-dir")
            .arg(&models)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = engine.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    while client.get(format!("{base}/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "engine ready in {:.1} s, RSS {} MiB",
        loaded.elapsed().as_secs_f64(),
        rss_kib(pid, "VmRSS:") / 1024
    );
    let v1 = format!("{base}/v1");

    // Warm up.
    stream_chat(&client, &v1, None, CHAT, "Hello", 8).await;

    // Decode: long answers, tokens after the first over the time after the first.
    let mut decode = Vec::new();
    let mut ttft_short = Vec::new();
    for _ in 0..5 {
        let Streamed {
            first_token: first,
            total,
            completion_tokens: tokens,
            ..
        } = stream_chat(
            &client,
            &v1,
            None,
            CHAT,
            "Write a long essay about the history of the Roman Empire.",
            128,
        )
        .await;
        ttft_short.push(first.as_secs_f64() * 1000.0);
        if tokens > 1 {
            decode.push((tokens - 1) as f64 / (total - first).as_secs_f64());
        }
    }
    println!(
        "decode: {:.1} tok/s (median of 5 answers of up to 128 tokens); time to first token, 45-token prompt: {:.1} ms",
        median(decode),
        median(ttft_short)
    );

    // Prefill: a long prompt, one token out.
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let mut prefill = Vec::new();
    let mut ttft_long = Vec::new();
    let mut prompt_tokens = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let v: Value = client
            .post(format!("{v1}/chat/completions"))
            .json(&json!({"model": CHAT, "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 1, "temperature": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
        prefill.push(prompt_tokens as f64 / elapsed);
        ttft_long.push(elapsed * 1000.0);
    }
    println!(
        "prefill: {:.0} tok/s; time to first token, {prompt_tokens}-token prompt: {:.0} ms",
        median(prefill),
        median(ttft_long)
    );

    // Embeddings at batch 1 and 32.
    let sentence = "A man is eating a piece of bread in the kitchen.";
    for batch in [1usize, 32] {
        let inputs: Vec<String> = (0..batch).map(|i| format!("{sentence} {i}")).collect();
        let rounds = if batch == 1 { 100 } else { 10 };
        let started = Instant::now();
        for _ in 0..rounds {
            let resp = client
                .post(format!("{v1}/embeddings"))
                .json(&json!({"model": EMBED, "input": inputs}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            resp.bytes().await.unwrap();
        }
        let per_sec = (rounds * batch) as f64 / started.elapsed().as_secs_f64();
        println!("embeddings: {per_sec:.0}/s at batch {batch}");
    }
    println!(
        "RSS now {} MiB, peak {} MiB",
        rss_kib(pid, "VmRSS:") / 1024,
        rss_kib(pid, "VmHWM:") / 1024
    );

    // The gateway in front: time to first token added (same call, direct vs through it).
    if let (Ok(gateway), Ok(key)) = (
        std::env::var("MAAS_BENCH_GATEWAY_URL"),
        std::env::var("MAAS_BENCH_GATEWAY_KEY"),
    ) {
        let model =
            std::env::var("MAAS_BENCH_GATEWAY_MODEL").unwrap_or_else(|_| "bench-smollm2".into());
        let gateway_v1 = format!("{gateway}/v1");
        let mut direct = (Vec::new(), Vec::new());
        let mut through = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let d = stream_chat(&client, &v1, None, CHAT, "Say hello.", 2).await;
            let g = stream_chat(&client, &gateway_v1, Some(&key), &model, "Say hello.", 2).await;
            direct.0.push(d.first_event.as_secs_f64() * 1000.0);
            direct.1.push(d.first_token.as_secs_f64() * 1000.0);
            through.0.push(g.first_event.as_secs_f64() * 1000.0);
            through.1.push(g.first_token.as_secs_f64() * 1000.0);
        }
        let (de, dt) = (median(direct.0), median(direct.1));
        let (ge, gt) = (median(through.0), median(through.1));
        println!(
            "through the gateway (median of 20): first event {ge:.2} ms vs {de:.2} ms direct, added {:.2} ms; first token {gt:.1} ms vs {dt:.1} ms direct, added {:.2} ms",
            ge - de,
            gt - dt
        );
    }
}
