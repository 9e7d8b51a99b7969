//! Use cases of [`GatewayService::proxy`] over in-memory fakes of every port: admission,
//! routing, failover and settlement, streamed and not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone as _, Utc};
use futures_util::StreamExt as _;
use maas_shared::clock::ManualClock;
use maas_user::contract::{IdentityError, Principal, Role, UserId};
use serde_json::{Value, json};

use super::fakes::{
    FakeProviders, FakeQuota, FakeSealer, FakeUpstream, JoinedBackground, QUOTA_RULE, QuotaCall,
    Reply, provider, signed_in,
};
use super::gateway::{
    Call, Endpoint, GatewayConfig, GatewayPorts, GatewayService, Proxied, ProxiedBody,
    TemplateOverhead,
};
use crate::domain::errors::InferenceError;
use crate::domain::ports::UpstreamFailure;
use crate::domain::usage::{TokenUsage, UsageRecord, estimate_tokens};

const CHAT_A: &str = "http://a.test/v1/chat/completions";
const CHAT_B: &str = "http://b.test/v1/chat/completions";
const DEFAULT_MAX_TOKENS: u64 = 256;

/// `[{"role":"user","content":"hello"}]` is 35 characters: 9 tokens by the estimate.
const PROMPT_ESTIMATE: u64 = 9;
/// The chat template's overhead in these tests: 10 per call, 5 per message.
const OVERHEAD: TemplateOverhead = TemplateOverhead {
    base: 10,
    per_message: 5,
};
/// What the same messages reserve: every byte (35), one message (5), the base (10).
const PROMPT_BOUND: u64 = 50;

fn started_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0)
        .single()
        .expect("a valid instant")
}

/// The gateway over fakes: providers `a` and `b` (keys `sk-a`, `sk-b`), both serving the public
/// model `m` (as `up-a` and `up-b`). A fresh service tries `a` first, then `b`.
struct Gateway {
    service: GatewayService,
    upstream: Arc<FakeUpstream>,
    quota: Arc<FakeQuota>,
    background: Arc<JoinedBackground>,
}

impl Gateway {
    fn new(quota: u64) -> Self {
        let upstream = Arc::new(FakeUpstream::default());
        let quota = Arc::new(FakeQuota::new(quota));
        let background = Arc::new(JoinedBackground::default());
        let providers = FakeProviders::new(vec![
            provider("a", "http://a.test/v1", Some("sk-a"), &[("m", "up-a")]),
            provider("b", "http://b.test/v1", Some("sk-b"), &[("m", "up-b")]),
        ]);
        let ports = GatewayPorts {
            providers: Arc::new(providers),
            sealer: Arc::new(FakeSealer),
            upstream: Arc::clone(&upstream) as _,
            quota: Arc::clone(&quota) as _,
            clock: Arc::new(ManualClock::new(started_at())),
            cache: None,
            background: Arc::clone(&background) as _,
        };
        let config = GatewayConfig {
            routes_ttl: Duration::from_secs(60),
            max_response_bytes: 1 << 20,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            template_overhead: OVERHEAD,
        };
        Self {
            service: GatewayService::new(ports, config),
            upstream,
            quota,
            background,
        }
    }

    async fn call(
        &self,
        principal: &Principal,
        endpoint: Endpoint,
        body: Value,
    ) -> Result<Proxied, InferenceError> {
        let call = Call::parse(endpoint, body).expect("a valid call");
        self.service.proxy(Arc::new(principal.clone()), call).await
    }

    async fn chat(&self, principal: &Principal, body: Value) -> Result<Proxied, InferenceError> {
        self.call(principal, Endpoint::Chat, body).await
    }

    /// The one usage record, once background work finished.
    async fn only_record(&self) -> UsageRecord {
        self.background.settled().await;
        let mut records = self.quota.records();
        assert_eq!(records.len(), 1, "exactly one usage record: {records:?}");
        records.remove(0)
    }
}

fn hello(extra: Value) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

fn refused(result: Result<Proxied, InferenceError>) -> InferenceError {
    match result {
        Ok(proxied) => panic!("expected a refusal, got status {}", proxied.status),
        Err(err) => err,
    }
}

fn full(proxied: &Proxied) -> &Bytes {
    match &proxied.body {
        ProxiedBody::Full(bytes) => bytes,
        ProxiedBody::Stream(_) => panic!("expected a complete body, got a stream"),
    }
}

fn into_stream(
    proxied: Proxied,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, std::convert::Infallible>> {
    match proxied.body {
        ProxiedBody::Stream(stream) => stream,
        ProxiedBody::Full(_) => panic!("expected a stream, got a complete body"),
    }
}

async fn drain(proxied: Proxied) -> Vec<Bytes> {
    into_stream(proxied)
        .map(|item| match item {
            Ok(bytes) => bytes,
            Err(never) => match never {},
        })
        .collect()
        .await
}

/// The reservation of every settle and release, in order.
fn reservation_ids(quota: &FakeQuota) -> Vec<uuid::Uuid> {
    quota
        .calls()
        .iter()
        .filter_map(|call| match call {
            QuotaCall::Settle { id, .. } | QuotaCall::Release { id, .. } => Some(*id),
            QuotaCall::Reserve(_) => None,
        })
        .collect()
}

const ANSWER_WITH_USAGE: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"}}],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}"#;
const ANSWER_WITHOUT_USAGE: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"}}]}"#;

// ---- admission ------------------------------------------------------------------------------

#[test]
fn the_prompt_estimate_constant_matches_the_rule() {
    let messages = json!([{"role": "user", "content": "hello"}]);
    assert_eq!(messages.to_string().len(), 35);
    assert_eq!(estimate_tokens(35), PROMPT_ESTIMATE);
    let call = Call::parse(Endpoint::Chat, hello(json!({}))).expect("a valid call");
    assert_eq!(call.prompt_bound(OVERHEAD), PROMPT_BOUND);
}

#[tokio::test]
async fn a_call_whose_reservation_exceeds_what_is_left_is_refused_before_any_upstream() {
    // 12 tokens get spent first; then 12 + (50 + 50) is one more than the quota.
    let quota = 12 + PROMPT_BOUND + 50 - 1;
    let gateway = Gateway::new(quota);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let caller = signed_in();
    let first = gateway
        .chat(&caller, hello(json!({"max_tokens": 10})))
        .await
        .expect("the first call fits");
    assert_eq!(first.status, 200);
    gateway.background.settled().await;
    assert_eq!(gateway.quota.spent(), 12);

    let err = refused(
        gateway
            .chat(&caller, hello(json!({"max_tokens": 50})))
            .await,
    );
    let InferenceError::Identity(IdentityError::QuotaExceeded(state)) = &err else {
        panic!("expected QuotaExceeded, got {err:?}");
    };
    assert_eq!(state.name, QUOTA_RULE);
    assert_eq!(state.limit, quota);
    assert_eq!(state.remaining, quota - 12);
    gateway.background.settled().await;
    assert_eq!(gateway.upstream.urls(), vec![CHAT_A.to_owned()]);
    assert_eq!(
        gateway.quota.calls().last(),
        Some(&QuotaCall::Reserve(Some(PROMPT_BOUND + 50)))
    );
    assert_eq!(gateway.quota.records().len(), 1);
    assert_eq!(gateway.quota.reserved(), 0);
    assert_eq!(gateway.quota.spent(), 12);
}

#[tokio::test]
async fn a_call_that_fits_exactly_is_admitted_with_estimate_plus_max_tokens() {
    let gateway = Gateway::new(PROMPT_BOUND + 50);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({"max_tokens": 50})))
        .await
        .expect("admitted");
    assert_eq!(proxied.status, 200);
    let limit = proxied.limit.expect("the reservation's limit state");
    assert_eq!(limit.remaining, 0);
    gateway.background.settled().await;
    assert_eq!(
        gateway.quota.calls()[0],
        QuotaCall::Reserve(Some(PROMPT_BOUND + 50))
    );
    let QuotaCall::Settle { estimate, .. } = gateway.quota.calls()[1] else {
        panic!("expected a settle, got {:?}", gateway.quota.calls());
    };
    assert_eq!(estimate, PROMPT_BOUND + 50);
}

#[tokio::test]
async fn without_max_tokens_the_default_cap_is_reserved() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let caller = signed_in();
    gateway.chat(&caller, hello(json!({}))).await.expect("ok");
    // `max_completion_tokens` wins over `max_tokens`.
    gateway
        .chat(
            &caller,
            hello(json!({"max_tokens": 90, "max_completion_tokens": 3})),
        )
        .await
        .expect("ok");
    gateway.background.settled().await;
    let reserves: Vec<QuotaCall> = gateway
        .quota
        .calls()
        .into_iter()
        .filter(|c| matches!(c, QuotaCall::Reserve(_)))
        .collect();
    assert_eq!(
        reserves,
        vec![
            QuotaCall::Reserve(Some(PROMPT_BOUND + DEFAULT_MAX_TOKENS)),
            QuotaCall::Reserve(Some(PROMPT_BOUND + 3)),
        ]
    );
}

#[tokio::test]
async fn embeddings_reserve_only_their_input_bound() {
    let gateway = Gateway::new(1_000_000);
    gateway.upstream.script(
        "http://a.test/v1/embeddings",
        Reply::json(
            200,
            r#"{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}"#,
        ),
    );
    // `"abcdefghij"` is 12 characters of JSON: at most 12 tokens, plus one item and the base.
    gateway
        .call(
            &signed_in(),
            Endpoint::Embeddings,
            json!({"model": "m", "input": "abcdefghij", "max_tokens": 500}),
        )
        .await
        .expect("ok");
    let record = gateway.only_record().await;
    assert_eq!(
        gateway.quota.calls()[0],
        QuotaCall::Reserve(Some(12 + 5 + 10))
    );
    assert_eq!(record.endpoint, "embeddings");
    assert_eq!(
        record.usage,
        TokenUsage {
            prompt: 3,
            completion: 0
        }
    );
}

#[tokio::test]
async fn a_key_restricted_to_other_models_gets_model_not_found_and_no_reservation() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let key = maas_user::testing::key_principal(UserId::new(), &[Role::User], &["other"]);
    let err = refused(gateway.chat(&key, hello(json!({}))).await);
    assert!(
        matches!(&err, InferenceError::ModelNotFound(model) if model == "m"),
        "{err:?}"
    );
    gateway.background.settled().await;
    assert_eq!(gateway.quota.calls(), Vec::new());
    assert_eq!(gateway.upstream.received(), Vec::new());
    assert_eq!(gateway.quota.records(), Vec::new());
}

#[tokio::test]
async fn a_key_allowed_the_model_is_served_and_recorded_under_its_id() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let user = UserId::new();
    let key = maas_user::testing::key_principal(user, &[Role::User], &["m"]);
    let proxied = gateway.chat(&key, hello(json!({}))).await.expect("ok");
    assert_eq!(proxied.status, 200);
    let record = gateway.only_record().await;
    assert_eq!(record.user_id, user);
    assert_eq!(record.key_id, key.key_id());
    assert!(record.key_id.is_some());
}

// ---- settlement of complete answers ---------------------------------------------------------

#[tokio::test]
async fn a_complete_answer_with_usage_is_recorded_and_settled_exactly() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITH_USAGE));
    let caller = signed_in();
    let proxied = gateway
        .chat(&caller, hello(json!({"max_tokens": 20, "top_p": 0.5})))
        .await
        .expect("ok");
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.content_type, "application/json");
    assert_eq!(proxied.cache, None);
    assert_eq!(
        full(&proxied),
        &Bytes::from_static(ANSWER_WITH_USAGE.as_bytes())
    );

    let record = gateway.only_record().await;
    assert_eq!(
        record.usage,
        TokenUsage {
            prompt: 7,
            completion: 5
        }
    );
    assert!(!record.estimated);
    assert_eq!(record.status, 200);
    assert_eq!(record.upstream, "a");
    assert_eq!(record.model, "m");
    assert_eq!(record.endpoint, "chat");
    assert!(!record.stream);
    assert_eq!(record.user_id, caller.user_id());
    assert_eq!(record.key_id, None);
    assert_eq!(record.at, started_at());
    assert!(record.ttft_ms.is_some());

    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], QuotaCall::Reserve(Some(PROMPT_BOUND + 20)));
    assert!(
        matches!(calls[1], QuotaCall::Settle { estimate, actual: 12, .. } if estimate == PROMPT_BOUND + 20),
        "{calls:?}"
    );
    assert_eq!(gateway.quota.spent(), 12);
    assert_eq!(gateway.quota.reserved(), 0);

    // What went upstream: the opened key, the upstream's model name, the rest as sent.
    let received = gateway.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].url, CHAT_A);
    assert_eq!(received[0].api_key.as_deref(), Some("sk-a"));
    assert_eq!(
        received[0].body,
        json!({"model": "up-a", "messages": [{"role": "user", "content": "hello"}],
               "max_tokens": 20, "top_p": 0.5})
    );
}

#[tokio::test]
async fn a_complete_answer_without_usage_is_settled_with_the_estimate() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, ANSWER_WITHOUT_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({})))
        .await
        .expect("ok");
    assert_eq!(full(&proxied).len(), ANSWER_WITHOUT_USAGE.len());
    let record = gateway.only_record().await;
    let expected = TokenUsage {
        prompt: PROMPT_ESTIMATE,
        completion: estimate_tokens(ANSWER_WITHOUT_USAGE.len()),
    };
    assert_eq!(record.usage, expected);
    assert!(record.estimated);
    assert_eq!(record.status, 200);
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Settle { actual, .. } if actual == expected.total()),
        "{calls:?}"
    );
    assert_eq!(gateway.quota.spent(), expected.total());
}

#[tokio::test]
async fn an_upstream_refusal_passes_through_and_releases_the_reservation() {
    let gateway = Gateway::new(1_000_000);
    let error = r#"{"error":{"message":"bad temperature","type":"invalid_request_error"}}"#;
    gateway.upstream.script(CHAT_A, Reply::json(422, error));
    gateway
        .upstream
        .script(CHAT_B, Reply::json(200, ANSWER_WITH_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({})))
        .await
        .expect("passed through");
    assert_eq!(proxied.status, 422);
    assert_eq!(full(&proxied), &Bytes::from_static(error.as_bytes()));
    // A 4xx is an answer: no failover.
    assert_eq!(gateway.upstream.urls(), vec![CHAT_A.to_owned()]);

    let record = gateway.only_record().await;
    assert_eq!(record.status, 422);
    assert_eq!(record.usage, TokenUsage::default());
    assert!(!record.estimated);
    assert_eq!(record.upstream, "a");
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Release { estimate, .. } if estimate == PROMPT_BOUND + DEFAULT_MAX_TOKENS),
        "{calls:?}"
    );
    assert_eq!(gateway.quota.spent(), 0);
    assert_eq!(gateway.quota.reserved(), 0);
}

// ---- failover -------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_first_upstream_hands_the_call_to_the_second() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(503, r#"{"error":"overloaded"}"#));
    gateway
        .upstream
        .script(CHAT_B, Reply::json(200, ANSWER_WITH_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({})))
        .await
        .expect("served by b");
    assert_eq!(proxied.status, 200);
    assert_eq!(
        full(&proxied),
        &Bytes::from_static(ANSWER_WITH_USAGE.as_bytes())
    );
    assert_eq!(
        gateway.upstream.urls(),
        vec![CHAT_A.to_owned(), CHAT_B.to_owned()]
    );
    let received = gateway.upstream.received();
    assert_eq!(received[1].api_key.as_deref(), Some("sk-b"));
    assert_eq!(received[1].body["model"], "up-b");

    let record = gateway.only_record().await;
    assert_eq!(record.upstream, "b");
    assert_eq!(record.status, 200);
    assert_eq!(
        record.usage,
        TokenUsage {
            prompt: 7,
            completion: 5
        }
    );
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Settle { actual: 12, .. }),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_unreachable_first_upstream_hands_the_call_to_the_second() {
    let gateway = Gateway::new(1_000_000);
    gateway.upstream.script(CHAT_A, Reply::refused());
    gateway
        .upstream
        .script(CHAT_B, Reply::json(200, ANSWER_WITH_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({})))
        .await
        .expect("served by b");
    assert_eq!(proxied.status, 200);
    let record = gateway.only_record().await;
    assert_eq!(record.upstream, "b");
}

#[tokio::test]
async fn a_complete_body_that_breaks_after_the_first_byte_is_not_retried() {
    let gateway = Gateway::new(1_000_000);
    gateway.upstream.script(
        CHAT_A,
        Reply::json(200, r#"{"choices":"#).breaking(UpstreamFailure::Body("reset".into())),
    );
    gateway
        .upstream
        .script(CHAT_B, Reply::json(200, ANSWER_WITH_USAGE));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({})))
        .await
        .expect("an answer");
    assert_eq!(proxied.status, 502);
    let body: Value = serde_json::from_slice(full(&proxied)).expect("an error body");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(gateway.upstream.urls(), vec![CHAT_A.to_owned()]);
    let record = gateway.only_record().await;
    assert_eq!(record.status, 502);
    assert_eq!(record.upstream, "a");
    assert_eq!(record.usage, TokenUsage::default());
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(matches!(calls[1], QuotaCall::Release { .. }), "{calls:?}");
}

#[tokio::test]
async fn when_every_upstream_fails_the_reservation_is_released_once_and_nothing_recorded() {
    let gateway = Gateway::new(1_000_000);
    gateway.upstream.script(CHAT_A, Reply::refused());
    gateway
        .upstream
        .script(CHAT_B, Reply::json(503, r#"{"error":"overloaded"}"#));
    let err = refused(gateway.chat(&signed_in(), hello(json!({}))).await);
    assert!(
        matches!(&err, InferenceError::UpstreamUnavailable(why) if why == "b answered 503"),
        "{err:?}"
    );
    gateway.background.settled().await;
    assert_eq!(
        gateway.upstream.urls(),
        vec![CHAT_A.to_owned(), CHAT_B.to_owned()]
    );
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Release { estimate, .. } if estimate == PROMPT_BOUND + DEFAULT_MAX_TOKENS),
        "{calls:?}"
    );
    assert_eq!(gateway.quota.records(), Vec::new());
    assert_eq!(gateway.quota.reserved(), 0);
    assert_eq!(gateway.quota.spent(), 0);
}

// ---- streams --------------------------------------------------------------------------------

const EVENT_HEL: &str =
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n";
const EVENT_LO: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n";
const EVENT_USAGE: &str =
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n";
const EVENT_DONE: &str = "data: [DONE]\n\n";

/// The four events, the second split across two chunks.
fn stream_chunks() -> Vec<String> {
    let (lo_head, lo_tail) = EVENT_LO.split_at(20);
    vec![
        format!("{EVENT_HEL}{lo_head}"),
        lo_tail.to_owned(),
        EVENT_USAGE.to_owned(),
        EVENT_DONE.to_owned(),
    ]
}

fn streamed(include_usage: bool) -> Value {
    hello(json!({"stream": true, "stream_options": {"include_usage": include_usage}}))
}

#[tokio::test]
async fn a_stream_passes_through_unchanged_and_settles_once_with_its_usage() {
    let gateway = Gateway::new(1_000_000);
    let chunks = stream_chunks();
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    gateway.upstream.script(CHAT_A, Reply::events(&refs));
    let proxied = gateway
        .chat(&signed_in(), streamed(true))
        .await
        .expect("ok");
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.content_type, "text/event-stream");
    let out = drain(proxied).await.concat();
    assert_eq!(out, chunks.concat().into_bytes());
    assert_eq!(
        gateway.upstream.received()[0].body["stream_options"],
        json!({"include_usage": true})
    );

    let record = gateway.only_record().await;
    assert_eq!(
        record.usage,
        TokenUsage {
            prompt: 7,
            completion: 2
        }
    );
    assert!(!record.estimated);
    assert!(record.stream);
    assert_eq!(record.status, 200);
    assert_eq!(record.upstream, "a");
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Settle { actual: 9, .. }),
        "{calls:?}"
    );
    assert_eq!(gateway.quota.spent(), 9);
}

#[tokio::test]
async fn a_stream_the_client_asked_no_usage_of_hides_it_but_is_settled_with_it() {
    let gateway = Gateway::new(1_000_000);
    let chunks = stream_chunks();
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    gateway.upstream.script(CHAT_A, Reply::events(&refs));
    let proxied = gateway
        .chat(&signed_in(), hello(json!({"stream": true})))
        .await
        .expect("ok");
    // The gateway asked for usage on the client's behalf.
    assert_eq!(
        gateway.upstream.received()[0].body["stream_options"],
        json!({"include_usage": true})
    );
    let out = String::from_utf8(drain(proxied).await.concat()).expect("text");
    let events: Vec<&str> = out.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 3, "{out}");
    let payload = |event: &str| -> Value {
        serde_json::from_str(event.strip_prefix("data: ").expect("a data line")).expect("JSON")
    };
    assert_eq!(
        payload(events[0]),
        json!({"choices": [{"delta": {"content": "Hel"}}]})
    );
    assert_eq!(
        payload(events[1]),
        json!({"choices": [{"delta": {"content": "lo"}}]})
    );
    assert_eq!(events[2], "data: [DONE]");
    let record = gateway.only_record().await;
    assert_eq!(
        record.usage,
        TokenUsage {
            prompt: 7,
            completion: 2
        }
    );
    assert!(!record.estimated);
    assert_eq!(gateway.quota.spent(), 9);
}

#[tokio::test]
async fn a_stream_that_breaks_after_the_first_chunk_ends_with_an_error_event_not_a_retry() {
    let gateway = Gateway::new(1_000_000);
    gateway.upstream.script(
        CHAT_A,
        Reply::events(&[EVENT_HEL]).breaking(UpstreamFailure::Body("reset".into())),
    );
    let chunks = stream_chunks();
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    gateway.upstream.script(CHAT_B, Reply::events(&refs));
    let proxied = gateway
        .chat(&signed_in(), streamed(true))
        .await
        .expect("ok");
    let out = drain(proxied).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], Bytes::from_static(EVENT_HEL.as_bytes()));
    let error = std::str::from_utf8(&out[1]).expect("text");
    let error: Value = serde_json::from_str(
        error
            .strip_prefix("data: ")
            .and_then(|e| e.strip_suffix("\n\n"))
            .expect("one data event"),
    )
    .expect("JSON");
    assert_eq!(error["error"]["code"], "upstream_unavailable");
    assert_eq!(gateway.upstream.urls(), vec![CHAT_A.to_owned()]);

    let record = gateway.only_record().await;
    assert_eq!(record.status, 502);
    assert_eq!(record.upstream, "a");
    // What streamed was consumed; no usage came, so it is estimated.
    let expected = TokenUsage {
        prompt: PROMPT_ESTIMATE,
        completion: estimate_tokens("Hel".len()),
    };
    assert_eq!(record.usage, expected);
    assert!(record.estimated);
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Settle { actual, .. } if actual == expected.total()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_settled_exactly_once_as_499() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::events(&[EVENT_HEL]).hanging());
    let proxied = gateway
        .chat(&signed_in(), streamed(true))
        .await
        .expect("ok");
    let mut stream = into_stream(proxied);
    let first = stream.next().await.expect("a first chunk");
    assert_eq!(first, Ok(Bytes::from_static(EVENT_HEL.as_bytes())));
    gateway.background.settled().await;
    assert_eq!(
        gateway.quota.records(),
        Vec::new(),
        "not settled before the end"
    );
    drop(stream);

    let record = gateway.only_record().await;
    assert_eq!(record.status, 499);
    assert!(record.stream);
    let expected = TokenUsage {
        prompt: PROMPT_ESTIMATE,
        completion: estimate_tokens("Hel".len()),
    };
    assert_eq!(record.usage, expected);
    assert!(record.estimated);
    let calls = gateway.quota.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(calls[1], QuotaCall::Settle { actual, .. } if actual == expected.total()),
        "{calls:?}"
    );
    assert_eq!(reservation_ids(&gateway.quota).len(), 1);
    assert_eq!(gateway.quota.reserved(), 0);
}

#[tokio::test]
async fn an_upstream_error_status_on_a_stream_is_a_complete_answer() {
    let gateway = Gateway::new(1_000_000);
    let error = r#"{"error":{"message":"no such model"}}"#;
    gateway.upstream.script(CHAT_A, Reply::json(404, error));
    let proxied = gateway
        .chat(&signed_in(), streamed(true))
        .await
        .expect("ok");
    assert_eq!(proxied.status, 404);
    assert_eq!(full(&proxied), &Bytes::from_static(error.as_bytes()));
    let record = gateway.only_record().await;
    assert_eq!(record.status, 404);
    assert_eq!(record.usage, TokenUsage::default());
    assert!(matches!(
        gateway.quota.calls()[1],
        QuotaCall::Release { .. }
    ));
}

// ---- cancellation ---------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_leaves_before_a_complete_answer_arrived_still_ends_its_reservation() {
    let gateway = Gateway::new(1_000_000);
    gateway
        .upstream
        .script(CHAT_A, Reply::json(200, r#"{"choices":"#).hanging());
    let caller = signed_in();
    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        gateway.chat(&caller, hello(json!({}))),
    )
    .await;
    let Err(_elapsed) = waited else {
        panic!("the answer never completes");
    };
    gateway.background.settled().await;
    assert_eq!(reservation_ids(&gateway.quota).len(), 1);
    assert_eq!(gateway.quota.reserved(), 0);
    let record = gateway.only_record().await;
    assert_eq!(record.status, 499);
}
