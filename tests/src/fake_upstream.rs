//! A fake OpenAI-compatible upstream for gateway tests: configurable chunk counts, delays and
//! failures at every point of a stream, and a record of what it received.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::stream;
use serde_json::{Value, json};

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Completion chunks per streamed answer.
    pub chunks: usize,
    /// Delay before each chunk.
    pub chunk_delay: Duration,
    /// Answer this status (with an error body) to the first N requests.
    pub fail_first: usize,
    /// Status used for those failures.
    pub fail_status: u16,
    /// Break the stream off after this many chunks (no `[DONE]`, no usage).
    pub break_after: Option<usize>,
    /// Whether to report usage at all.
    pub report_usage: bool,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            chunks: 3,
            chunk_delay: Duration::ZERO,
            fail_first: 0,
            fail_status: 500,
            break_after: None,
            report_usage: true,
            prompt_tokens: 7,
        }
    }
}

/// What the fake saw.
#[derive(Default)]
pub struct Seen {
    /// Request bodies.
    pub bodies: Mutex<Vec<Value>>,
    /// `Authorization` headers.
    pub auth: Mutex<Vec<Option<String>>>,
    /// Requests answered.
    pub requests: AtomicUsize,
    /// Set when a streamed answer was dropped before it finished (the client went away).
    pub cancelled: AtomicBool,
}

/// A running fake upstream.
pub struct FakeUpstream {
    /// `http://127.0.0.1:<port>/v1`
    pub base_url: String,
    /// What it saw.
    pub seen: Arc<Seen>,
}

struct Guard(Arc<Seen>, bool);

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

/// One content chunk; like OpenAI, every chunk carries `"usage": null` when usage was asked for.
fn chunk(content: &str, i: usize, include_usage: bool) -> String {
    let mut event = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "upstream",
        "choices": [{"index": 0, "delta": {"content": format!("{content}{i} ")}, "finish_reason": null}]});
    if include_usage {
        event["usage"] = Value::Null;
    }
    format!("data: {event}\n\n")
}

async fn chat(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<(Behaviour, Arc<Seen>)>,
) -> HttpResponse {
    let (behaviour, seen) = (&state.0, Arc::clone(&state.1));
    let n = seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.bodies.lock().unwrap().push(body.0.clone());
    seen.auth.lock().unwrap().push(
        req.headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
    );
    if n < behaviour.fail_first {
        return HttpResponse::build(
            actix_web::http::StatusCode::from_u16(behaviour.fail_status).unwrap(),
        )
        .json(json!({"error": {"message": "fake failure", "type": "server_error"}}));
    }
    let streamed = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let completion = behaviour.chunks as u64;
    let usage = json!({"prompt_tokens": behaviour.prompt_tokens, "completion_tokens": completion, "total_tokens": behaviour.prompt_tokens + completion});
    if !streamed {
        let mut answer = json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}]});
        if behaviour.report_usage {
            answer["usage"] = usage;
        }
        return HttpResponse::Ok().json(answer);
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let behaviour = behaviour.clone();
    let guard = Guard(seen, false);
    let items = stream::unfold((0usize, guard), move |(i, mut guard)| {
        let behaviour = behaviour.clone();
        let usage = usage.clone();
        async move {
            tokio::time::sleep(behaviour.chunk_delay).await;
            if behaviour.break_after == Some(i) {
                guard.1 = true;
                return Some((
                    Err(actix_web::error::ErrorInternalServerError("broken")),
                    (usize::MAX, guard),
                ));
            }
            if i == usize::MAX {
                return None;
            }
            let text = if i < behaviour.chunks {
                chunk("tok", i, include_usage)
            } else if i == behaviour.chunks {
                if include_usage && behaviour.report_usage {
                    format!(
                        "data: {}\n\n",
                        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage})
                    )
                } else {
                    String::new()
                }
            } else if i == behaviour.chunks + 1 {
                guard.1 = true;
                "data: [DONE]\n\n".to_owned()
            } else {
                return None;
            };
            Some((Ok::<_, actix_web::Error>(Bytes::from(text)), (i + 1, guard)))
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(items)
}

async fn embeddings(
    body: web::Json<Value>,
    state: web::Data<(Behaviour, Arc<Seen>)>,
) -> HttpResponse {
    state.1.requests.fetch_add(1, Ordering::SeqCst);
    state.1.bodies.lock().unwrap().push(body.0.clone());
    HttpResponse::Ok().json(json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": body["model"], "usage": {"prompt_tokens": 4, "total_tokens": 4}}))
}

impl FakeUpstream {
    /// Starts one on a random loopback port.
    pub fn spawn(behaviour: Behaviour) -> Self {
        let seen = Arc::new(Seen::default());
        let state = web::Data::new((behaviour, Arc::clone(&seen)));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/v1/chat/completions", web::post().to(chat))
                .route("/v1/completions", web::post().to(chat))
                .route("/v1/embeddings", web::post().to(embeddings))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            seen,
        }
    }
}
