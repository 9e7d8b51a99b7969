//! The gateway: one call in four steps. **Admit** (rate limits + a quota reservation, one Redis
//! round trip), **route** (the model's upstreams from the route table, least loaded first),
//! **forward** (trying the next upstream only before any byte came back) and **settle** (one
//! [`Settlement`] for streamed and complete answers alike).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use maas_shared::clock::Clock;
use maas_shared::tasks::Background;
use maas_user::contract::{Demand, LimitState, Principal, QuotaGate};
use serde_json::{Value, json};

use super::balance::Balancer;
use super::conversations::ConversationService;
use super::metered::MeteredStream;
use super::settlement::{
    OnAnswer, OnSettled, Outcome, Settlement, SettlementPorts, elapsed_ms, openai_error,
};
pub use crate::domain::call::{Call, Endpoint, TemplateOverhead};
use crate::domain::conversation::{Conversation, MessageRole};
use crate::domain::errors::InferenceError;
use crate::domain::ports::{
    KeySealer, ProviderRepository, ResponseCache, Upstream, UpstreamRequest, UpstreamResponse,
};
use crate::domain::provider::{Provider, Target};
use crate::domain::usage::{TokenUsage, estimate_tokens};
use maas_model::contract::DeploymentDirectory;

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
    /// Time spent waiting on upstreams (their headers, and a full body's bytes).
    pub upstream_time: Duration,
    /// Time spent in the gateway itself until the answer (or a stream's head) left: the whole
    /// call minus `upstream_time` (for `server-timing` and the overhead histogram).
    pub gateway_time: Duration,
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
    /// What a chat template may add to a prompt (the reservation is an upper bound).
    pub template_overhead: TemplateOverhead,
}

/// The ports of the gateway.
#[derive(Clone)]
pub struct GatewayPorts {
    /// Provider storage (the route table is read from it).
    pub providers: Arc<dyn ProviderRepository>,
    /// Opens upstream keys, once per route-table load.
    pub sealer: Arc<dyn KeySealer>,
    /// HTTP to upstreams.
    pub upstream: Arc<dyn Upstream>,
    /// The identity context's metering gate.
    pub quota: Arc<dyn QuotaGate>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The exact-match response cache, when enabled.
    pub cache: Option<Arc<dyn ResponseCache>>,
    /// Where conversation writes (and settlements of calls whose client left) finish.
    pub background: Arc<dyn Background>,
}

/// One enabled provider as the hot path needs it: its key already opened.
struct Route {
    provider: Provider,
    target_key: Option<Arc<str>>,
}

#[derive(Default)]
struct RouteTable {
    loaded: Option<Instant>,
    routes: Arc<Vec<Route>>,
}

/// What was admitted: the settlement that will end the call.
struct Admitted {
    settlement: Settlement,
}

/// Gateway use cases.
#[derive(Clone)]
pub struct GatewayService {
    ports: GatewayPorts,
    settlement: SettlementPorts,
    config: GatewayConfig,
    table: Arc<RwLock<RouteTable>>,
    turn: Arc<AtomicUsize>,
    balancer: Balancer,
    conversations: Option<ConversationService>,
    deployments: Option<Arc<dyn DeploymentDirectory>>,
}

impl GatewayService {
    /// The service over its ports.
    #[must_use]
    pub fn new(ports: GatewayPorts, config: GatewayConfig) -> Self {
        let settlement = SettlementPorts {
            quota: Arc::clone(&ports.quota),
            background: Arc::clone(&ports.background),
        };
        Self {
            ports,
            settlement,
            config,
            table: Arc::default(),
            turn: Arc::new(AtomicUsize::new(0)),
            balancer: Balancer::default(),
            conversations: None,
            deployments: None,
        }
    }

    /// Routes served names of deployments to their ready instances (beside providers).
    #[must_use]
    pub fn with_deployments(mut self, directory: Arc<dyn DeploymentDirectory>) -> Self {
        self.deployments = Some(directory);
        self
    }

    /// The served name a deployment is called by (its first), when it should run.
    #[must_use]
    pub fn deployment_model(&self, deployment: uuid::Uuid) -> Option<String> {
        self.deployments
            .as_ref()
            .and_then(|d| d.deployment(deployment))
            .map(|m| m.name.clone())
    }

    /// The conversations of this gateway, when enabled.
    #[must_use]
    pub fn conversations(&self) -> Option<&ConversationService> {
        self.conversations.as_ref()
    }

    /// Enables `conversation_id` on chat calls.
    #[must_use]
    pub fn with_conversations(mut self, conversations: ConversationService) -> Self {
        self.conversations = Some(conversations);
        self
    }

    /// A closure that drops the route table, for [`super::providers::ProviderService`].
    #[must_use]
    pub fn invalidator(&self) -> Arc<dyn Fn() + Send + Sync> {
        let table = Arc::clone(&self.table);
        Arc::new(move || {
            table.write().unwrap_or_else(PoisonError::into_inner).loaded = None;
        })
    }

    /// The enabled providers, from memory when fresh (the hot path reads PostgreSQL at most once
    /// per `routes_ttl` per replica, and opens each upstream key once per load).
    async fn routes(&self) -> Result<Arc<Vec<Route>>, InferenceError> {
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            if table
                .loaded
                .is_some_and(|at| at.elapsed() < self.config.routes_ttl)
            {
                return Ok(Arc::clone(&table.routes));
            }
        }
        let mut routes = Vec::new();
        for provider in self.ports.providers.list().await? {
            if !provider.enabled() {
                continue;
            }
            let target_key = match provider.sealed_key().map(|k| self.ports.sealer.open(k)) {
                None => None,
                Some(Ok(key)) => Some(Arc::from(key)),
                Some(Err(err)) => {
                    // A key sealed with another platform key: this provider cannot be called,
                    // the others still can.
                    tracing::error!(provider.id = %provider.id(), error = %err, "cannot open a provider's key; not routing to it");
                    continue;
                }
            };
            routes.push(Route {
                provider,
                target_key,
            });
        }
        let routes = Arc::new(routes);
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = RouteTable {
            loaded: Some(Instant::now()),
            routes: Arc::clone(&routes),
        };
        Ok(routes)
    }

    /// Models the caller may use.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn models(&self, principal: &Principal) -> Result<Vec<ListedModel>, InferenceError> {
        let routes = self.routes().await?;
        let mut out: Vec<ListedModel> = Vec::new();
        for route in routes.iter() {
            let provider = &route.provider;
            for model in provider.models() {
                if principal.may_use_model(&model.model) && !out.iter().any(|m| m.id == model.model)
                {
                    out.push(ListedModel {
                        id: model.model.clone(),
                        owned_by: provider.name().as_str().to_owned(),
                        created: provider.created_at().timestamp(),
                    });
                }
            }
        }
        if let Some(directory) = &self.deployments {
            for served in directory.models() {
                if principal.may_use_model(&served.name) && !out.iter().any(|m| m.id == served.name)
                {
                    out.push(ListedModel {
                        id: served.name.clone(),
                        owned_by: "deployment".to_owned(),
                        created: served.created_at.timestamp(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Proxies one call: admit → route → forward → settle.
    ///
    /// # Errors
    /// [`InferenceError::ModelNotFound`]; [`InferenceError::ConversationNotFound`]; rate limit
    /// or quota refusals; [`InferenceError::UpstreamUnavailable`] when no upstream answered.
    pub async fn proxy(
        &self,
        principal: Arc<Principal>,
        call: Call,
    ) -> Result<Proxied, InferenceError> {
        self.proxy_with(principal, call, None).await
    }

    /// [`GatewayService::proxy`], running `on_settled` with what the call came to once it is
    /// settled (whenever it was admitted).
    ///
    /// # Errors
    /// As [`GatewayService::proxy`].
    #[tracing::instrument(name = "gateway.proxy", skip_all, fields(user.id = %principal.user_id(), model = %call.model(), endpoint = call.endpoint().name()))]
    pub async fn proxy_with(
        &self,
        principal: Arc<Principal>,
        mut call: Call,
        on_settled: Option<OnSettled>,
    ) -> Result<Proxied, InferenceError> {
        let started = Instant::now();
        let at = self.ports.clock.now();
        let exchange = self.continue_conversation(&principal, &mut call).await?;
        let targets = self.route(&principal, &call).await?;
        let cache_key = match &self.ports.cache {
            Some(_) if call.cacheable() => Some(call.cache_key()?),
            _ => None,
        };
        if let (Some(cache), Some(key)) = (&self.ports.cache, &cache_key)
            && let Some(hit) = cache.get(principal.user_id(), key).await
        {
            return self
                .answer_from_cache(&principal, &call, hit, started, at, on_settled)
                .await;
        }
        let Admitted { mut settlement } = self.admit(&principal, &call, started, at).await?;
        settlement.on_answer(exchange.map(record_exchange(Arc::clone(&self.ports.background))));
        settlement.on_settled(on_settled);
        let (response, settlement, waited) = self.forward(&call, targets, settlement).await?;
        let mut proxied = self.settle(&call, response, settlement).await;
        proxied.upstream_time += waited;
        if let (Some(cache), Some(key)) = (&self.ports.cache, cache_key) {
            proxied.cache = Some("miss");
            if let ProxiedBody::Full(bytes) = &proxied.body
                && (200..300).contains(&proxied.status)
            {
                cache.put(principal.user_id(), &key, bytes.clone()).await;
            }
        }
        proxied.gateway_time = started.elapsed().saturating_sub(proxied.upstream_time);
        Ok(proxied)
    }

    /// Puts the named conversation's history in front of the call's messages; returns what to
    /// store once the answer is complete.
    async fn continue_conversation(
        &self,
        principal: &Principal,
        call: &mut Call,
    ) -> Result<Option<Exchange>, InferenceError> {
        let Some(id) = call.conversation() else {
            return Ok(None);
        };
        let Some(conversations) = &self.conversations else {
            return Err(InferenceError::ConversationNotFound);
        };
        let (conversation, history) = conversations.context(principal, id).await?;
        let sent = sent_messages(call.body().get("messages"), call.preamble());
        call.prepend_messages(
            history
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect(),
        );
        Ok(Some((conversations.clone(), conversation, sent)))
    }

    /// Route: the upstreams serving the call's model, least loaded first (ties round-robin).
    async fn route(
        &self,
        principal: &Principal,
        call: &Call,
    ) -> Result<Vec<Target>, InferenceError> {
        let model = call.model();
        if !principal.may_use_model(model) {
            return Err(InferenceError::ModelNotFound(model.to_owned()));
        }
        let routes = self.routes().await?;
        let mut targets: Vec<Target> = routes
            .iter()
            .filter_map(|route| {
                let provider = &route.provider;
                let served = provider.models().iter().find(|r| r.model == model)?;
                Some(Target {
                    provider_id: provider.id(),
                    provider: provider.name().as_str().to_owned(),
                    base_url: provider.base_url().clone(),
                    api_key: route.target_key.clone(),
                    upstream_model: served.upstream_model.clone(),
                })
            })
            .collect();
        let deployed = self.deployments.as_ref().and_then(|d| d.lookup(model));
        if let Some(served) = &deployed {
            for endpoint in &served.endpoints {
                match crate::domain::provider::BaseUrl::parse(&endpoint.base_url) {
                    Ok(base_url) => targets.push(Target {
                        provider_id: crate::domain::provider::ProviderId::from_uuid(
                            endpoint.instance,
                        ),
                        provider: format!("deployment/{}", served.name),
                        base_url,
                        api_key: None,
                        upstream_model: served.upstream_model.clone(),
                    }),
                    Err(_) => {
                        tracing::warn!(instance = %endpoint.instance, "an instance's address is not routable; skipping it");
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err(match deployed {
                // Deployed, but nothing can answer now: unavailable at once, not unknown.
                Some(_) => InferenceError::UpstreamUnavailable(format!(
                    "deployment `{model}` has no ready instance"
                )),
                None => InferenceError::ModelNotFound(model.to_owned()),
            });
        }
        if targets.len() > 1 {
            let start = self.turn.fetch_add(1, Ordering::Relaxed) % targets.len();
            targets.rotate_left(start);
        }
        Ok(self.balancer.order(targets, |t| t.provider_id))
    }

    /// Admit: the caller's limits and a token reservation that bounds what the call can cost
    /// (so that spent + reserved never passes a quota); settled to the real usage after.
    async fn admit(
        &self,
        principal: &Principal,
        call: &Call,
        started: Instant,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Admitted, InferenceError> {
        let prompt_bound = call.prompt_bound(self.config.template_overhead);
        let prompt_estimate = estimate_tokens(call.input_len());
        let completion_cap = match call.endpoint() {
            Endpoint::Embeddings => 0,
            Endpoint::Chat | Endpoint::Completions => {
                call.max_tokens().unwrap_or(self.config.default_max_tokens)
            }
        };
        let reservation = self
            .ports
            .quota
            .reserve(
                principal,
                Demand {
                    tokens: Some(prompt_bound.saturating_add(completion_cap)),
                },
            )
            .await?;
        Ok(Admitted {
            settlement: Settlement::new(
                &self.settlement,
                principal,
                call,
                reservation,
                prompt_estimate,
                started,
                at,
            ),
        })
    }

    /// Forward: the first upstream that answers below 500 serves the call.
    ///
    /// # Errors
    /// [`InferenceError::UpstreamUnavailable`] (with the reservation released) when none did.
    async fn forward(
        &self,
        call: &Call,
        targets: Vec<Target>,
        mut settlement: Settlement,
    ) -> Result<(UpstreamResponse, Settlement, Duration), InferenceError> {
        let mut last_failure = String::from("no upstream");
        let mut waited = Duration::ZERO;
        for target in targets {
            let request = UpstreamRequest {
                url: target.base_url.join(call.endpoint().path()),
                api_key: target.api_key.clone(),
                body: Bytes::from(call.upstream_body(&target.upstream_model)?),
            };
            let in_flight = self.balancer.start(target.provider_id);
            let asked = Instant::now();
            let answered = self.ports.upstream.post(request).await;
            waited += asked.elapsed();
            match answered {
                Ok(r) if r.status >= 500 => {
                    self.balancer.failed(target.provider_id);
                    last_failure = format!("{} answered {}", target.provider, r.status);
                    tracing::warn!(upstream = %target.provider, status = r.status, "upstream failed before the first byte; trying the next");
                }
                Ok(response) => {
                    self.balancer.succeeded(target.provider_id);
                    settlement.serve_from(&target.provider, Some(in_flight));
                    return Ok((response, settlement, waited));
                }
                Err(failure) => {
                    self.balancer.failed(target.provider_id);
                    last_failure = format!("{}: {failure}", target.provider);
                    tracing::warn!(upstream = %target.provider, error = %failure, "upstream unreachable; trying the next");
                }
            }
        }
        settlement.abandon();
        Err(InferenceError::UpstreamUnavailable(last_failure))
    }

    /// Settle: a stream settles when it ends; a complete answer is read for its usage now.
    async fn settle(
        &self,
        call: &Call,
        response: UpstreamResponse,
        settlement: Settlement,
    ) -> Proxied {
        let limit = settlement.limit();
        let content_type = response
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".into());
        let success = (200..300).contains(&response.status);
        if call.stream() && success {
            let metered = MeteredStream::new(response.body, settlement, call.wants_usage());
            return Proxied {
                status: response.status,
                content_type,
                body: ProxiedBody::Stream(metered.boxed()),
                limit,
                cache: None,
                upstream_time: Duration::ZERO,
                gateway_time: Duration::ZERO,
            };
        }
        let first_byte_ms = Some(elapsed_ms(settlement.started()));
        let reading = Instant::now();
        let collected = collect(response.body, self.config.max_response_bytes).await;
        let upstream_time = reading.elapsed();
        let (status, content_type, body, outcome) = match collected {
            Err(reason) => {
                let body = openai_error(
                    &format!("upstream response failed: {reason}"),
                    "upstream_unavailable",
                );
                let outcome = Outcome {
                    status: 502,
                    first_byte_ms,
                    ..Outcome::default()
                };
                (502, "application/json".to_owned(), body, outcome)
            }
            Ok(bytes) => {
                let outcome = if success {
                    Outcome {
                        status: response.status,
                        consumed: true,
                        reported: reported_usage(&bytes),
                        completion_bytes: bytes.len(),
                        first_byte_ms,
                        answer: Some(answer_text(&bytes)),
                    }
                } else {
                    // The upstream refused the call (bad parameters and the like): nothing
                    // was consumed.
                    Outcome {
                        status: response.status,
                        first_byte_ms,
                        ..Outcome::default()
                    }
                };
                (response.status, content_type, bytes, outcome)
            }
        };
        settlement.finish(outcome).await;
        Proxied {
            status,
            content_type,
            body: ProxiedBody::Full(body),
            limit,
            cache: None,
            upstream_time,
            gateway_time: Duration::ZERO,
        }
    }

    /// A cache hit still counts as a request against the caller's limits, but uses no tokens.
    async fn answer_from_cache(
        &self,
        principal: &Principal,
        call: &Call,
        hit: Bytes,
        started: Instant,
        at: chrono::DateTime<chrono::Utc>,
        on_settled: Option<OnSettled>,
    ) -> Result<Proxied, InferenceError> {
        let reservation = self
            .ports
            .quota
            .reserve(principal, Demand { tokens: None })
            .await?;
        let limit = reservation.tightest.clone();
        let mut settlement = Settlement::new(
            &self.settlement,
            principal,
            call,
            reservation,
            0,
            started,
            at,
        );
        settlement.serve_from("cache", None);
        settlement.on_settled(on_settled);
        settlement
            .finish(Outcome {
                status: 200,
                consumed: true,
                reported: Some(TokenUsage::default()),
                completion_bytes: 0,
                first_byte_ms: Some(elapsed_ms(started)),
                answer: Some(answer_text(&hit)),
            })
            .await;
        Ok(Proxied {
            status: 200,
            content_type: "application/json".into(),
            body: ProxiedBody::Full(hit),
            limit,
            cache: Some("hit"),
            upstream_time: Duration::ZERO,
            gateway_time: started.elapsed(),
        })
    }
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

/// The usage a complete answer reports; only `usage` is read, serde skips the rest unbuilt.
fn reported_usage(answer: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<UsageOnly>(answer)
        .ok()
        .and_then(|v| v.usage.as_ref().and_then(TokenUsage::from_json))
}

/// The text of a complete chat answer (empty for other shapes).
fn answer_text(answer: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        message: Option<Message>,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    serde_json::from_slice::<Answer>(answer)
        .ok()
        .and_then(|a| a.choices.into_iter().next())
        .and_then(|c| c.message)
        .and_then(|m| m.content)
        .unwrap_or_default()
}

/// The request's own messages (after its preamble) as (role, text) for the conversation log.
fn sent_messages(messages: Option<&Value>, preamble: usize) -> Vec<(MessageRole, String)> {
    messages
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .skip(preamble)
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
fn record_exchange(background: Arc<dyn Background>) -> impl FnOnce(Exchange) -> OnAnswer {
    move |(service, conversation, sent): Exchange| {
        Box::new(move |answer: String| {
            background.spawn(Box::pin(async move {
                if let Err(err) = service.record_exchange(&conversation, &sent, &answer).await {
                    tracing::error!(error = %err, conversation.id = %conversation.id(), "could not store a conversation exchange");
                }
            }));
        })
    }
}
