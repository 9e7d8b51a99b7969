//! The HTTP surface: OpenAI-compatible routes, `/generate` and `/health`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::Engine;
use crate::chat::{ChatModel, Event, FinishReason, SamplingParams, Usage};
use crate::error::ApiError;
use crate::gate::Slot;
use crate::params::{self, ChatRequest, CompletionRequest, EmbeddingRequest, GenerateRequest};

/// Largest request body.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Most prompts per `/generate` call.
pub const MAX_PROMPTS: usize = 32;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(BODY_LIMIT)
            .content_type_required(false)
            .error_handler(|err, _| {
                let too_large = matches!(
                    err,
                    actix_web::error::JsonPayloadError::Overflow { .. }
                        | actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                );
                if too_large {
                    ApiError::too_large(BODY_LIMIT).into()
                } else {
                    ApiError::malformed(err.to_string()).into()
                }
            }),
    )
    .route("/health", web::get().to(health))
    .route("/v1/models", web::get().to(models))
    .route("/v1/models/{id}", web::get().to(model))
    .route("/v1/chat/completions", web::post().to(chat_completions))
    .route("/v1/completions", web::post().to(completions))
    .route("/v1/embeddings", web::post().to(embeddings))
    .route("/generate", web::post().to(generate))
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::no_route())
    }));
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn authorize(engine: &Engine, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = engine.api_key.as_deref() else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compare in time independent of where the first difference is.
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn chat_model<'a>(engine: &'a Engine, model: &str) -> Result<&'a ChatModel, ApiError> {
    engine
        .chat
        .as_ref()
        .filter(|c| c.name() == model)
        .ok_or_else(|| ApiError::model_not_found(model))
}

async fn health(engine: web::Data<Engine>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "models": engine.model_names(),
        "busy": engine.gate.busy(),
        "queued": engine.gate.queued(),
    }))
}

fn model_object(engine: &Engine, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": engine.started, "owned_by": "maas-engine"})
}

async fn models(engine: web::Data<Engine>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    let data: Vec<Value> = engine
        .model_names()
        .iter()
        .map(|id| model_object(&engine, id))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

async fn model(
    engine: web::Data<Engine>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    if !engine.model_names().contains(&id) {
        return Err(ApiError::model_not_found(&id));
    }
    Ok(HttpResponse::Ok().json(model_object(&engine, &id)))
}

/// What kind of answer a generation is formatted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// How long generation waits for a client that stops reading before giving up its slot.
const STALLED_CLIENT: Duration = Duration::from_secs(30);

/// Sends from the generation thread; `false` when the client is gone or has not read for
/// [`STALLED_CLIENT`] (so a stuck reader cannot hold a slot forever).
fn send(tx: &mpsc::Sender<Result<Event, ApiError>>, event: Result<Event, ApiError>) -> bool {
    let deadline = Instant::now() + STALLED_CLIENT;
    let mut event = event;
    loop {
        match tx.try_send(event) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    tracing::warn!("client stopped reading; generation abandoned");
                    return false;
                }
                event = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// One generation on a blocking thread; events arrive on the channel. When the receiver is
/// dropped (client gone) the generation stops before the next forward pass.
fn start(
    engine: Arc<Engine>,
    slot: Slot,
    prompts: Vec<Vec<u32>>,
    params: SamplingParams,
) -> mpsc::Receiver<Result<Event, ApiError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let Some(chat) = engine.chat.as_ref() else {
            return;
        };
        for prompt in prompts {
            let cancelled = || tx.is_closed();
            let result = chat.generate(&prompt, &params, &cancelled, |event| send(&tx, Ok(event)));
            if let Err(error) = result {
                if !send(&tx, Err(ApiError::internal(&error))) {
                    tracing::debug!("client left before the error could be sent");
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Waits for a whole answer: text, finish reason, usage, token ids.
async fn collect(
    mut rx: mpsc::Receiver<Result<Event, ApiError>>,
) -> Result<(String, FinishReason, Usage, Vec<u32>), ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event? {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done {
                finish_reason,
                usage,
                token_ids,
            } => return Ok((text, finish_reason, usage, token_ids)),
        }
    }
    Err(ApiError::internal(&anyhow::anyhow!(
        "generation ended without a result"
    )))
}

struct Sse {
    rx: mpsc::Receiver<Result<Event, ApiError>>,
    id: String,
    model: String,
    created: u64,
    kind: Kind,
    include_usage: bool,
    started: bool,
    done: bool,
}

impl Sse {
    fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({
                "index": 0,
                "text": delta.get("content").cloned().unwrap_or_else(|| json!("")),
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        let mut chunk = json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion.chunk", Kind::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn event(value: &Value) -> String {
        format!("data: {value}\n\n")
    }

    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            if self.kind == Kind::Chat {
                return Some(
                    Self::event(&self.chunk(json!({"role": "assistant", "content": ""}), None))
                        .into(),
                );
            }
        }
        let out = match self.rx.recv().await {
            Some(Ok(Event::Text(text))) => Self::event(&self.chunk(json!({"content": text}), None)),
            Some(Ok(Event::Done {
                finish_reason,
                usage,
                ..
            })) => {
                self.done = true;
                let mut out = Self::event(&self.chunk(json!({}), Some(finish_reason)));
                if self.include_usage {
                    let mut last = self.chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = json!(usage);
                    out.push_str(&Self::event(&last));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            Some(Err(error)) => {
                self.done = true;
                format!("{}data: [DONE]\n\n", Self::event(&error.body()))
            }
            None => {
                self.done = true;
                let error =
                    ApiError::internal(&anyhow::anyhow!("generation ended without a result"));
                format!("{}data: [DONE]\n\n", Self::event(&error.body()))
            }
        };
        Some(Bytes::from(out))
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
        stream::unfold(self, |mut sse| async move {
            sse.next().await.map(|b| (Ok(b), sse))
        })
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one place formats both answer kinds"
)]
async fn answer(
    engine: web::Data<Engine>,
    kind: Kind,
    model: String,
    prompt: Vec<u32>,
    params: SamplingParams,
    stream: bool,
    include_usage: bool,
    id_prefix: &str,
) -> Result<HttpResponse, ApiError> {
    let slot = engine.gate.enter().await?;
    let rx = start(engine.into_inner(), slot, vec![prompt], params);
    let id = format!("{id_prefix}-{}", uuid::Uuid::now_v7().simple());
    let created = now();
    if stream {
        let sse = Sse {
            rx,
            id,
            model,
            created,
            kind,
            include_usage,
            started: false,
            done: false,
        };
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .streaming(sse.into_stream()));
    }
    let (text, finish_reason, usage, _) = collect(rx).await?;
    let (object, choice) = match kind {
        Kind::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish_reason}),
        ),
        Kind::Completion => (
            "text_completion",
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason}),
        ),
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    })))
}

/// Bytes per token above which a prompt cannot fit (checked before tokenizing, so a huge body
/// costs no tokenizer time on the request threads).
const MAX_BYTES_PER_TOKEN: usize = 32;

fn refuse_oversized(chat: &ChatModel, bytes: usize) -> Result<(), ApiError> {
    if bytes > chat.context() * MAX_BYTES_PER_TOKEN {
        return Err(ApiError::context_exceeded(format!(
            "the prompt is {bytes} bytes; this model's context is {} tokens",
            chat.context()
        )));
    }
    Ok(())
}

/// A raw prompt's token ids (BOS first when the model asks for it), if it fits the context.
fn fitting(chat: &ChatModel, text: &str) -> Result<Vec<u32>, ApiError> {
    refuse_oversized(chat, text.len())?;
    let ids = chat.encode_raw(text).map_err(|e| ApiError::internal(&e))?;
    chat.check_fits(ids.len())
        .map_err(|e| ApiError::context_exceeded(e.to_string()))?;
    Ok(ids)
}

async fn chat_completions(
    engine: web::Data<Engine>,
    req: HttpRequest,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    let body = body.into_inner();
    let chat = chat_model(&engine, &body.model)?;
    if body.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported(
            "tools",
            "this engine does not call tools",
        ));
    }
    if body
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "text")
    {
        return Err(ApiError::unsupported(
            "response_format",
            "this engine produces free text only (no JSON mode or schemas)",
        ));
    }
    let params = body.sampling.resolve(engine.default_max_tokens)?;
    let messages = params::messages(&body.messages)?;
    let bytes = messages.iter().map(|m| m.content.len()).sum();
    refuse_oversized(chat, bytes)?;
    let prompt = chat.encode_chat(&messages).map_err(|e| {
        ApiError::invalid(
            "messages",
            format!("the model's chat template refused these messages: {e}"),
        )
    })?;
    chat.check_fits(prompt.len())
        .map_err(|e| ApiError::context_exceeded(e.to_string()))?;
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    answer(
        engine,
        Kind::Chat,
        body.model,
        prompt,
        params,
        body.stream.unwrap_or(false),
        include_usage,
        "chatcmpl",
    )
    .await
}

async fn completions(
    engine: web::Data<Engine>,
    req: HttpRequest,
    body: web::Json<CompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    let body = body.into_inner();
    let chat = chat_model(&engine, &body.model)?;
    if body.echo == Some(true) {
        return Err(ApiError::unsupported("echo", "echo is not supported"));
    }
    let params = body.sampling.resolve(engine.default_max_tokens)?;
    let prompt = fitting(chat, &params::prompt(&body.prompt)?)?;
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    answer(
        engine,
        Kind::Completion,
        body.model,
        prompt,
        params,
        body.stream.unwrap_or(false),
        include_usage,
        "cmpl",
    )
    .await
}

async fn generate(
    engine: web::Data<Engine>,
    req: HttpRequest,
    body: web::Json<GenerateRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    let body = body.into_inner();
    let name = match (&body.model, engine.chat.as_ref()) {
        (Some(model), _) => model.clone(),
        (None, Some(chat)) => chat.name().to_owned(),
        (None, None) => return Err(ApiError::model_not_found("")),
    };
    let chat = chat_model(&engine, &name)?;
    if body.prompts.is_empty() || body.prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompts", "1 to 32 prompts"));
    }
    if body.prompts.iter().any(String::is_empty) {
        return Err(ApiError::invalid("prompts", "prompts must not be empty"));
    }
    let params = body.sampling_params.resolve(engine.default_max_tokens)?;
    let prompts = body
        .prompts
        .iter()
        .map(|p| fitting(chat, p))
        .collect::<Result<Vec<_>, _>>()?;
    let count = prompts.len();
    let slot = engine.gate.enter().await?;
    let mut rx = start(engine.into_inner(), slot, prompts, params);
    let mut outputs = Vec::with_capacity(count);
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event? {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done {
                finish_reason,
                usage,
                token_ids,
            } => outputs.push(json!({
                "text": std::mem::take(&mut text),
                "token_ids": token_ids,
                "finish_reason": finish_reason,
                "usage": usage,
            })),
        }
    }
    if outputs.len() != count {
        return Err(ApiError::internal(&anyhow::anyhow!(
            "generation ended early"
        )));
    }
    Ok(HttpResponse::Ok().json(json!({"model": name, "outputs": outputs})))
}

async fn embeddings(
    engine: web::Data<Engine>,
    req: HttpRequest,
    body: web::Json<EmbeddingRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&engine, &req)?;
    let body = body.into_inner();
    let model = engine
        .embedding
        .as_ref()
        .filter(|m| m.name() == body.model)
        .ok_or_else(|| ApiError::model_not_found(&body.model))?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "encoding_format",
                "encoding_format is `float` or `base64`",
            ));
        }
    };
    if body
        .dimensions
        .is_some_and(|d| usize::try_from(d).ok() != Some(model.dimensions()))
    {
        return Err(ApiError::unsupported(
            "dimensions",
            format!(
                "this model's vectors have {} dimensions",
                model.dimensions()
            ),
        ));
    }
    let texts = params::inputs(&body.input)?;
    let slot = engine.gate.enter().await?;
    let worker = engine.clone().into_inner();
    let embedded = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        worker.embedding.as_ref().map(|m| m.embed(&texts))
    })
    .await
    .map_err(|e| ApiError::internal(&anyhow::anyhow!("embedding task failed: {e}")))?
    .ok_or_else(|| ApiError::model_not_found(&body.model))?
    .map_err(|e| ApiError::internal(&e))?;
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                use base64::Engine as _;
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens},
    })))
}
