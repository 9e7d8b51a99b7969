//! The gateway: resolve the model, admit the call (rate limits + quota reservation, one Redis
//! round trip), forward it to an upstream (trying the next one only before any byte came
//! back), and settle with the real usage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use maas_shared::clock::Clock;
use maas_user::contract::{Demand, LimitState, Principal, QuotaGate, Reservation};
use serde_json::{Value, json};

use super::balance::Balancer;
use super::conversations::ConversationService;
use super::metered::{Meter, MeteredStream};
use crate::domain::conversation::{Conversation, ConversationId, MessageRole};
use crate::domain::errors::{InferenceError, InvalidValue};
use crate::domain::ports::{
    KeySealer, ProviderRepository, ResponseCache, Upstream, UpstreamRequest, UsageSink,
};
use crate::domain::provider::{Provider, Target};
use crate::domain::usage::{TokenUsage, UsageRecord, estimate_tokens};

/// Which OpenAI endpoint is proxied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
    /// `/v1/embeddings`
    Embeddings,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
        }
    }

    /// The field holding the input, and whether it must be a non-empty array.
    fn input_field(self) -> &'static str {
        match self {
            Self::Chat => "messages",
            Self::Completions => "prompt",
            Self::Embeddings => "input",
        }
    }
}

/// The body of a proxied answer.
pub enum ProxiedBody {
    /// Complete.
    Full(Bytes),
    /// Server-sent events, metered as they pass.
    Stream(BoxStream<'static, Result<Bytes, std::convert::Infallible>>),
}

/// A proxied answer.
pub struct Proxied {
    /// Status to return.
    pub status: u16,
    /// Content type to return.
    pub content_type: String,
    /// Body.
    pub body: ProxiedBody,
    /// The tightest limit after admission (for `x-ratelimit-*`).
    pub limit: Option<LimitState>,
    /// `hit` or `miss` when the request was cacheable (for `x-cache`).
    pub cache: Option<&'static str>,
}

/// A model as listed by `/v1/models`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedModel {
    /// Public name.
    pub id: String,
    /// Provider slug.
    pub owned_by: String,
    /// Registration time (Unix seconds).
    pub created: i64,
}

/// Tunables of the gateway.
#[derive(Clone, Copy, Debug)]
pub struct GatewayConfig {
    /// How long the route table may be served before it is re-read.
    pub routes_ttl: Duration,
    /// Largest non-streamed upstream body accepted.
    pub max_response_bytes: usize,
    /// Completion tokens reserved when a request names no `max_tokens`.
    pub default_max_tokens: u64,
}

struct Snapshot {
    loaded: Option<Instant>,
    providers: Arc<Vec<Provider>>,
}

/// Gateway use cases.
#[derive(Clone)]
pub struct GatewayService {
    providers: Arc<dyn ProviderRepository>,
    sealer: Arc<dyn KeySealer>,
    upstream: Arc<dyn Upstream>,
    usage: Arc<dyn UsageSink>,
    quota: Arc<dyn QuotaGate>,
    clock: Arc<dyn Clock>,
    config: GatewayConfig,
    cache: Option<Arc<dyn ResponseCache>>,
    snapshot: Arc<RwLock<Snapshot>>,
    turn: Arc<AtomicUsize>,
    balancer: Balancer,
    conversations: Option<ConversationService>,
}

impl GatewayService {
    /// The service over its ports; `cache` enables the exact-match response cache.
    #[must_use]
    #[expect(clippy::too_many_arguments, reason = "one argument per port")]
    pub fn new(
        providers: Arc<dyn ProviderRepository>,
        sealer: Arc<dyn KeySealer>,
        upstream: Arc<dyn Upstream>,
        usage: Arc<dyn UsageSink>,
        quota: Arc<dyn QuotaGate>,
        clock: Arc<dyn Clock>,
        config: GatewayConfig,
        cache: Option<Arc<dyn ResponseCache>>,
    ) -> Self {
        Self {
            providers,
            sealer,
            upstream,
            usage,
            quota,
            clock,
            config,
            cache,
            snapshot: Arc::new(RwLock::new(Snapshot {
                loaded: None,
                providers: Arc::new(Vec::new()),
            })),
            turn: Arc::new(AtomicUsize::new(0)),
            balancer: Balancer::default(),
            conversations: None,
        }
    }

    /// Enables `conversation_id` on chat calls.
    #[must_use]
    pub fn with_conversations(mut self, conversations: ConversationService) -> Self {
        self.conversations = Some(conversations);
        self
    }

    /// Drops the cached route table (after a provider change).
    pub fn invalidate_routes(&self) {
        if let Ok(mut snapshot) = self.snapshot.write() {
            snapshot.loaded = None;
        }
    }

    /// A closure that drops the route table, for [`super::providers::ProviderService`].
    #[must_use]
    pub fn invalidator(&self) -> Arc<dyn Fn() + Send + Sync> {
        let snapshot = Arc::clone(&self.snapshot);
        Arc::new(move || {
            if let Ok(mut s) = snapshot.write() {
                s.loaded = None;
            }
        })
    }

    /// The enabled providers, from memory when fresh (the hot path reads PostgreSQL at most once
    /// per `routes_ttl` per replica).
    async fn table(&self) -> Result<Arc<Vec<Provider>>, InferenceError> {
        if let Ok(snapshot) = self.snapshot.read()
            && snapshot
                .loaded
                .is_some_and(|at| at.elapsed() < self.config.routes_ttl)
        {
            return Ok(Arc::clone(&snapshot.providers));
        }
        let providers: Vec<Provider> = self
            .providers
            .list()
            .await?
            .into_iter()
            .filter(|p| p.enabled)
            .collect();
        let providers = Arc::new(providers);
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = Snapshot {
                loaded: Some(Instant::now()),
                providers: Arc::clone(&providers),
            };
        }
        Ok(providers)
    }

    /// Models the caller may use.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn models(&self, principal: &Principal) -> Result<Vec<ListedModel>, InferenceError> {
        let table = self.table().await?;
        let mut out: Vec<ListedModel> = Vec::new();
        for provider in table.iter() {
            for route in &provider.models {
                if principal.may_use_model(&route.model) && !out.iter().any(|m| m.id == route.model)
                {
                    out.push(ListedModel {
                        id: route.model.clone(),
                        owned_by: provider.name.as_str().to_owned(),
                        created: provider.created_at.timestamp(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn targets(&self, model: &str) -> Result<Vec<Target>, InferenceError> {
        let table = self.table().await?;
        let mut targets = Vec::new();
        for provider in table.iter() {
            if let Some(route) = provider.models.iter().find(|r| r.model == model) {
                let api_key = provider
                    .sealed_key
                    .as_deref()
                    .map(|k| self.sealer.open(k))
                    .transpose()?;
                targets.push(Target {
                    provider_id: provider.id,
                    provider: provider.name.as_str().to_owned(),
                    base_url: provider.base_url.clone(),
                    api_key,
                    upstream_model: route.upstream_model.clone(),
                });
            }
        }
        // Ties between equally loaded upstreams go round-robin.
        if targets.len() > 1 {
            let start = self.turn.fetch_add(1, Ordering::Relaxed) % targets.len();
            targets.rotate_left(start);
        }
        Ok(self.balancer.order(targets, |t| t.provider_id))
    }

    /// Proxies one call.
    ///
    /// # Errors
    /// Invalid body; [`InferenceError::ModelNotFound`]; rate limit or quota refusals;
    /// [`InferenceError::UpstreamUnavailable`] when no upstream answered.
    pub async fn proxy(
        &self,
        principal: Arc<Principal>,
        endpoint: Endpoint,
        mut body: Value,
    ) -> Result<Proxied, InferenceError> {
        let started = Instant::now();
        let at = self.clock.now();
        let Some(object) = body.as_object_mut() else {
            return Err(InvalidValue::new("body", "must be a JSON object").into());
        };
        let model = match object.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => return Err(InvalidValue::new("model", "a model name is required").into()),
        };
        // `conversation_id` is ours, not OpenAI's: it never goes upstream.
        let conversation_id = match object.remove("conversation_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if endpoint == Endpoint::Chat => Some(
                id.parse::<ConversationId>()
                    .map_err(|_| InvalidValue::new("conversation_id", "not a conversation id"))?,
            ),
            Some(_) => {
                return Err(InvalidValue::new(
                    "conversation_id",
                    "a conversation id, on chat completions only",
                )
                .into());
            }
        };
        let exchange = match (conversation_id, &self.conversations) {
            (Some(id), Some(conversations)) => {
                let (conversation, history) = conversations.context(&principal, id).await?;
                let sent = sent_messages(object.get("messages"));
                if let Some(Value::Array(messages)) = object.get_mut("messages") {
                    let context = history
                        .iter()
                        .map(|m| json!({"role": m.role.as_str(), "content": m.content}));
                    let mut all: Vec<Value> = context.collect();
                    all.append(messages);
                    *messages = all;
                }
                Some((conversations.clone(), conversation, sent))
            }
            (Some(_), None) => return Err(InferenceError::ConversationNotFound),
            (None, _) => None,
        };
        let input = object
            .get(endpoint.input_field())
            .cloned()
            .unwrap_or(Value::Null);
        let input_ok = match endpoint {
            Endpoint::Chat => input.as_array().is_some_and(|a| !a.is_empty()),
            Endpoint::Completions | Endpoint::Embeddings => input.is_string() || input.is_array(),
        };
        if !input_ok {
            return Err(match endpoint {
                Endpoint::Chat => {
                    InvalidValue::new("messages", "a non-empty array of messages is required")
                }
                Endpoint::Completions => InvalidValue::new("prompt", "a prompt is required"),
                Endpoint::Embeddings => {
                    InvalidValue::new("input", "an input string or array is required")
                }
            }
            .into());
        }
        let stream = endpoint != Endpoint::Embeddings
            && object
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let client_wants_usage = object
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !principal.may_use_model(&model) {
            return Err(InferenceError::ModelNotFound(model));
        }
        let targets = self.targets(&model).await?;
        if targets.is_empty() {
            return Err(InferenceError::ModelNotFound(model));
        }

        // Deterministic, non-streamed calls may be answered from the cache (per user).
        let temperature_zero = object.get("temperature").and_then(Value::as_f64) == Some(0.0);
        let cache_key = (self.cache.is_some()
            && !stream
            && (endpoint == Endpoint::Embeddings || temperature_zero))
            .then(|| serde_json::to_vec(&body))
            .transpose()
            .map_err(|e| InferenceError::Unexpected(e.into()))?;
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key)
            && let Some(hit) = cache.get(principal.user_id.as_uuid(), key).await
        {
            return self
                .answer_from_cache(&principal, endpoint, model, hit, started, at)
                .await;
        }
        let Some(object) = body.as_object_mut() else {
            return Err(InvalidValue::new("body", "must be a JSON object").into());
        };

        let prompt_estimate = estimate_tokens(input.to_string().len());
        let max_tokens = match endpoint {
            Endpoint::Embeddings => 0,
            Endpoint::Chat | Endpoint::Completions => object
                .get("max_completion_tokens")
                .or_else(|| object.get("max_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(self.config.default_max_tokens),
        };
        let reservation = self
            .quota
            .reserve(
                &principal,
                Demand {
                    tokens: Some(prompt_estimate + max_tokens),
                },
            )
            .await?;
        if stream {
            // Ask for usage so the stream can be settled exactly; stripped again below if the
            // client did not ask for it.
            object.insert("stream_options".into(), json!({"include_usage": true}));
        }

        let mut last_failure = String::from("no upstream");
        for target in targets {
            if let Some(obj) = body.as_object_mut() {
                obj.insert("model".into(), Value::String(target.upstream_model.clone()));
            }
            let request = UpstreamRequest {
                url: target.base_url.join(endpoint.path()),
                api_key: target.api_key.clone(),
                body: Bytes::from(
                    serde_json::to_vec(&body).map_err(|e| InferenceError::Unexpected(e.into()))?,
                ),
            };
            let in_flight = self.balancer.start(target.provider_id);
            let response = match self.upstream.post(request).await {
                Ok(r) if r.status >= 500 => {
                    self.balancer.failed(target.provider_id);
                    last_failure = format!("{} answered {}", target.provider, r.status);
                    tracing::warn!(upstream = %target.provider, status = r.status, "upstream failed before the first byte; trying the next");
                    continue;
                }
                Ok(r) => {
                    self.balancer.succeeded(target.provider_id);
                    r
                }
                Err(failure) => {
                    self.balancer.failed(target.provider_id);
                    last_failure = format!("{}: {failure}", target.provider);
                    tracing::warn!(upstream = %target.provider, error = %failure, "upstream unreachable; trying the next");
                    continue;
                }
            };
            let record = UsageRecord {
                id: uuid::Uuid::now_v7(),
                user_id: principal.user_id.as_uuid(),
                key_id: principal.key.as_ref().map(|k| k.id.as_uuid()),
                model: model.clone(),
                upstream: target.provider.clone(),
                endpoint: endpoint.name(),
                usage: TokenUsage::default(),
                estimated: false,
                status: response.status,
                stream,
                ttft_ms: None,
                latency_ms: 0,
                at,
            };
            let limit = reservation.tightest.clone();
            let content_type = response
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".into());
            let meter = Meter {
                quota: Arc::clone(&self.quota),
                usage: Arc::clone(&self.usage),
                reservation: reservation.clone(),
                record,
                prompt_estimate,
                started,
                in_flight: Some(in_flight),
                on_complete: exchange.clone().map(record_exchange),
            };
            if stream && (200..300).contains(&response.status) {
                let metered = MeteredStream::new(response.body, meter, client_wants_usage);
                return Ok(Proxied {
                    status: response.status,
                    content_type,
                    body: ProxiedBody::Stream(metered.boxed()),
                    limit,
                    cache: None,
                });
            }
            let full = collect(response.body, self.config.max_response_bytes).await;
            let mut proxied = self
                .finish_full(full, meter, response.status, content_type, limit)
                .await;
            if let (Some(cache), Some(key)) = (&self.cache, cache_key) {
                proxied.cache = Some("miss");
                if let ProxiedBody::Full(bytes) = &proxied.body
                    && (200..300).contains(&proxied.status)
                {
                    cache
                        .put(principal.user_id.as_uuid(), &key, bytes.clone())
                        .await;
                }
            }
            return Ok(proxied);
        }
        self.release(&reservation).await;
        Err(InferenceError::UpstreamUnavailable(last_failure))
    }

    async fn finish_full(
        &self,
        full: Result<Bytes, String>,
        meter: Meter,
        status: u16,
        content_type: String,
        limit: Option<LimitState>,
    ) -> Proxied {
        let Meter {
            quota,
            usage: sink,
            reservation,
            mut record,
            prompt_estimate,
            started,
            in_flight,
            on_complete,
        } = meter;
        drop(in_flight);
        let bytes = match full {
            Ok(bytes) => bytes,
            Err(reason) => {
                self.release(&reservation).await;
                record.status = 502;
                record.latency_ms = elapsed_ms(started);
                sink.record(record);
                let body = json!({"error": {"message": format!("upstream response failed: {reason}"), "type": "api_error", "code": "upstream_unavailable", "param": null}});
                return Proxied {
                    status: 502,
                    content_type: "application/json".into(),
                    body: ProxiedBody::Full(Bytes::from(body.to_string())),
                    limit,
                    cache: None,
                };
            }
        };
        record.ttft_ms = Some(elapsed_ms(started));
        record.latency_ms = elapsed_ms(started);
        if (200..300).contains(&status) {
            // Only `usage` is read; serde skips the rest without building it.
            let reported = serde_json::from_slice::<UsageOnly>(&bytes)
                .ok()
                .and_then(|v| v.usage.as_ref().and_then(TokenUsage::from_json));
            let (usage, estimated) = match reported {
                Some(u) => (u, false),
                None => (
                    TokenUsage {
                        prompt: prompt_estimate,
                        completion: estimate_tokens(bytes.len()),
                    },
                    true,
                ),
            };
            record.usage = usage;
            record.estimated = estimated;
            if let Some(hook) = on_complete {
                let answer = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/choices/0/message/content")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                hook(answer);
            }
            // Settling is not the client's business: the answer goes out without waiting for it.
            let total = usage.total();
            tokio::spawn(async move {
                if let Err(err) = quota.settle(&reservation, total).await {
                    tracing::error!(error = %err, "could not settle a reservation");
                }
            });
        } else {
            // The upstream refused the call (bad parameters and the like): nothing was consumed.
            self.release(&reservation).await;
        }
        sink.record(record);
        Proxied {
            status,
            content_type,
            body: ProxiedBody::Full(bytes),
            limit,
            cache: None,
        }
    }

    /// A cache hit still counts as a request against the caller's limits, but uses no tokens.
    async fn answer_from_cache(
        &self,
        principal: &Principal,
        endpoint: Endpoint,
        model: String,
        hit: Bytes,
        started: Instant,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Proxied, InferenceError> {
        let reservation = self
            .quota
            .reserve(principal, Demand { tokens: None })
            .await?;
        if let Err(err) = self.quota.settle(&reservation, 0).await {
            tracing::error!(error = %err, "could not settle a cached answer");
        }
        self.usage.record(UsageRecord {
            id: uuid::Uuid::now_v7(),
            user_id: principal.user_id.as_uuid(),
            key_id: principal.key.as_ref().map(|k| k.id.as_uuid()),
            model,
            upstream: "cache".into(),
            endpoint: endpoint.name(),
            usage: TokenUsage::default(),
            estimated: false,
            status: 200,
            stream: false,
            ttft_ms: Some(elapsed_ms(started)),
            latency_ms: elapsed_ms(started),
            at,
        });
        Ok(Proxied {
            status: 200,
            content_type: "application/json".into(),
            body: ProxiedBody::Full(hit),
            limit: reservation.tightest,
            cache: Some("hit"),
        })
    }

    async fn release(&self, reservation: &Reservation) {
        if let Err(err) = self.quota.release(reservation).await {
            tracing::error!(error = %err, "could not release a reservation");
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn collect(
    mut body: BoxStream<'static, Result<Bytes, crate::domain::ports::UpstreamFailure>>,
    max: usize,
) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > max {
            return Err(format!("response larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The one field of an answer metering needs.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Value>,
}

/// The request's own messages as (role, text) for the conversation log.
fn sent_messages(messages: Option<&Value>) -> Vec<(MessageRole, String)> {
    messages
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    let role = MessageRole::parse(m.get("role")?.as_str()?).ok()?;
                    let content = m.get("content")?;
                    let content = content
                        .as_str()
                        .map_or_else(|| content.to_string(), str::to_owned);
                    Some((role, content))
                })
                .collect()
        })
        .unwrap_or_default()
}

type Exchange = (
    ConversationService,
    Conversation,
    Vec<(MessageRole, String)>,
);

/// Stores the exchange in the background once the answer is complete.
fn record_exchange((service, conversation, sent): Exchange) -> Box<dyn FnOnce(String) + Send> {
    Box::new(move |answer: String| {
        tokio::spawn(async move {
            if let Err(err) = service.record_exchange(&conversation, &sent, &answer).await {
                tracing::error!(error = %err, conversation = %conversation.id, "could not store a conversation exchange");
            }
        });
    })
}
