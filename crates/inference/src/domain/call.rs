//! One OpenAI call as the gateway sees it: parsed once, at the edge, into the few facts the
//! gateway acts on, with the rest of the body kept for pass-through.

use maas_shared::text::nul_paths;
use serde_json::{Map, Value};

use super::conversation::ConversationId;
use super::errors::{InferenceError, InvalidValue};

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
    /// The path under an upstream's base URL.
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// The name recorded with usage.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
        }
    }

    /// The endpoint recorded under `name` (see [`Endpoint::name`]).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Chat, Self::Completions, Self::Embeddings]
            .into_iter()
            .find(|e| e.name() == name)
    }

    /// The field holding the input.
    #[must_use]
    pub fn input_field(self) -> &'static str {
        match self {
            Self::Chat => "messages",
            Self::Completions => "prompt",
            Self::Embeddings => "input",
        }
    }
}

/// The largest completion cap a call may name (`max_tokens`, `max_completion_tokens`): beyond
/// any model's context, and small enough that reservations can never overflow.
pub const MAX_COMPLETION_TOKENS: u64 = 1 << 32;

/// Tokens a chat template may add to a prompt, for the reservation's upper bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateOverhead {
    /// Once per call.
    pub base: u64,
    /// Per message.
    pub per_message: u64,
}

/// A parsed call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    endpoint: Endpoint,
    model: String,
    stream: bool,
    wants_usage: bool,
    max_tokens: Option<u64>,
    cacheable: bool,
    conversation: Option<ConversationId>,
    preamble: usize,
    body: Map<String, Value>,
}

impl Call {
    /// Reads the facts the gateway needs from an OpenAI request body; `conversation_id` (ours,
    /// not OpenAI's) is taken out of the body, which otherwise passes through as it came.
    ///
    /// # Errors
    /// [`InferenceError::Invalid`] naming the field that is missing or malformed.
    pub fn parse(endpoint: Endpoint, body: Value) -> Result<Self, InferenceError> {
        let Value::Object(mut body) = body else {
            return Err(InvalidValue::new("body", "must be a JSON object").into());
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => return Err(InvalidValue::new("model", "a model name is required").into()),
        };
        let conversation = match body.remove("conversation_id") {
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
        let input = body.get(endpoint.input_field());
        let input_ok = match endpoint {
            Endpoint::Chat => input
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            Endpoint::Completions | Endpoint::Embeddings => {
                input.is_some_and(|i| i.is_string() || i.is_array())
            }
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
        // A conversation stores the call's messages, and PostgreSQL cannot store NUL in text.
        if conversation.is_some()
            && body
                .get("messages")
                .is_some_and(|m| !nul_paths(m, "messages").is_empty())
        {
            return Err(InvalidValue::new(
                "messages",
                "must not contain the NUL character (U+0000) when continuing a conversation",
            )
            .into());
        }
        let stream =
            endpoint != Endpoint::Embeddings && flag(&body, "stream", None)?.unwrap_or(false);
        let wants_usage = flag(&body, "stream_options", Some("include_usage"))?.unwrap_or(false);
        let max_tokens = match endpoint {
            Endpoint::Embeddings => None,
            Endpoint::Chat | Endpoint::Completions => {
                match token_cap(&body, "max_completion_tokens")? {
                    Some(cap) => Some(cap),
                    None => token_cap(&body, "max_tokens")?,
                }
            }
        };
        let temperature_zero = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
        // A conversation's exchange is stored from the answer: never served from the cache.
        let cacheable = !stream
            && conversation.is_none()
            && (endpoint == Endpoint::Embeddings || temperature_zero);
        Ok(Self {
            endpoint,
            model,
            stream,
            wants_usage,
            max_tokens,
            cacheable,
            conversation,
            preamble: 0,
            body,
        })
    }

    /// Marks the first `n` messages as the caller's preamble (an app's system prompt and
    /// retrieved context): a conversation's history goes after them, and they are not stored
    /// with the exchange.
    #[must_use]
    pub fn with_preamble(mut self, n: usize) -> Self {
        self.preamble = n;
        self
    }

    /// How many leading messages are preamble (see [`Call::with_preamble`]).
    #[must_use]
    pub fn preamble(&self) -> usize {
        self.preamble
    }

    /// The endpoint.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The public model name the caller asked for.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the answer streams (never for embeddings).
    #[must_use]
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// Whether the caller asked for the usage chunk of a stream.
    #[must_use]
    pub fn wants_usage(&self) -> bool {
        self.wants_usage
    }

    /// The completion cap the caller named, if any.
    #[must_use]
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// Whether the answer is deterministic enough to serve from the cache.
    #[must_use]
    pub fn cacheable(&self) -> bool {
        self.cacheable
    }

    /// The conversation the call continues, if any.
    #[must_use]
    pub fn conversation(&self) -> Option<ConversationId> {
        self.conversation
    }

    /// The body as it passes through.
    #[must_use]
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The input the caller sent (messages, prompt or input), as JSON text, for estimates.
    #[must_use]
    pub fn input_len(&self) -> usize {
        self.body
            .get(self.endpoint.input_field())
            .map_or(0, |input| input.to_string().len())
    }

    /// An upper bound of the prompt tokens the call can cost, for its reservation: every byte
    /// of its input (the JSON text is longer than the text it holds, and no tokenizer makes
    /// more than one token of a byte), plus what a chat template adds around it:
    /// `overhead.per_message` for each message (or input item) and `overhead.base` once (a
    /// default system prompt, the generation prompt, BOS).
    #[must_use]
    pub fn prompt_bound(&self, overhead: TemplateOverhead) -> u64 {
        let items = match self.body.get(self.endpoint.input_field()) {
            Some(Value::Array(items)) => items.len(),
            _ => 1,
        };
        let bytes = u64::try_from(self.input_len()).unwrap_or(u64::MAX);
        bytes
            .saturating_add(overhead.per_message.saturating_mul(items as u64))
            .saturating_add(overhead.base)
    }

    /// Puts a conversation's history in front of the call's own messages (after its
    /// preamble).
    pub fn prepend_messages(&mut self, history: Vec<Value>) {
        let at = self.preamble;
        if let Some(Value::Array(messages)) = self.body.get_mut("messages") {
            let at = at.min(messages.len());
            let own = messages.split_off(at);
            messages.extend(history);
            messages.extend(own);
        }
    }

    /// The body to send to an upstream that knows the model as `upstream_model`; a stream always
    /// asks for usage so that it can be settled exactly.
    ///
    /// # Errors
    /// Only if serialisation fails, which would be a bug.
    pub fn upstream_body(&self, upstream_model: &str) -> Result<Vec<u8>, InferenceError> {
        let mut body = self.body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_owned()));
        if self.stream {
            body.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
        serde_json::to_vec(&body).map_err(|e| InferenceError::Unexpected(e.into()))
    }

    /// The cache key of this call (its canonical body).
    ///
    /// # Errors
    /// Only if serialisation fails, which would be a bug.
    pub fn cache_key(&self) -> Result<Vec<u8>, InferenceError> {
        serde_json::to_vec(&self.body).map_err(|e| InferenceError::Unexpected(e.into()))
    }
}

/// A boolean field (or a boolean inside an object field); `null` counts as absent.
fn flag(
    body: &Map<String, Value>,
    field: &'static str,
    inner: Option<&'static str>,
) -> Result<Option<bool>, InferenceError> {
    let value = match (body.get(field), inner) {
        (None | Some(Value::Null), _) => return Ok(None),
        (Some(Value::Object(object)), Some(inner)) => match object.get(inner) {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value,
        },
        (Some(_), Some(_)) => {
            return Err(InvalidValue::new(field, "must be an object").into());
        }
        (Some(value), None) => value,
    };
    value
        .as_bool()
        .map(Some)
        .ok_or_else(|| InvalidValue::new(field, "must be true or false").into())
}

/// A completion cap: a whole number from 0 to [`MAX_COMPLETION_TOKENS`].
fn token_cap(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, InferenceError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        // `2.0` is a whole number too (JSON Schema's `integer`).
        Some(value) => match value.as_number().and_then(maas_shared::whole::whole) {
            Some(n) if n <= MAX_COMPLETION_TOKENS => Ok(Some(n)),
            _ => Err(InvalidValue::new(field, "a whole number from 0 to 4294967296").into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn invalid_field(result: Result<Call, InferenceError>) -> &'static str {
        match result {
            Err(InferenceError::Invalid(invalid)) if invalid.len() == 1 => invalid[0].field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_chat_call_yields_its_facts_and_keeps_the_rest_for_pass_through() {
        let call = Call::parse(
            Endpoint::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                   "stream_options": {"include_usage": true}, "max_tokens": 7, "top_p": 0.5}),
        )
        .unwrap();
        assert_eq!(call.model(), "m");
        assert!(call.stream());
        assert!(call.wants_usage());
        assert_eq!(call.max_tokens(), Some(7));
        assert!(!call.cacheable());
        assert_eq!(call.body()["top_p"], json!(0.5));
        let sent: Value = serde_json::from_slice(&call.upstream_body("up").unwrap()).unwrap();
        assert_eq!(sent["model"], "up");
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn max_completion_tokens_wins_and_embeddings_have_no_cap() {
        let call = Call::parse(
            Endpoint::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "max_tokens": 9, "max_completion_tokens": 3, "temperature": 0}),
        )
        .unwrap();
        assert_eq!(call.max_tokens(), Some(3));
        assert!(call.cacheable());
        let embed = Call::parse(
            Endpoint::Embeddings,
            json!({"model": "e", "input": "x", "max_tokens": 5}),
        )
        .unwrap();
        assert_eq!(embed.max_tokens(), None);
        assert!(embed.cacheable());
        assert!(!embed.stream());
    }

    #[test]
    fn the_conversation_id_never_goes_upstream() {
        let id = ConversationId::new();
        let call = Call::parse(
            Endpoint::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "conversation_id": id.to_string()}),
        )
        .unwrap();
        assert_eq!(call.conversation(), Some(id));
        assert!(!call.body().contains_key("conversation_id"));
    }

    #[test]
    fn a_nul_in_messages_is_refused_only_when_a_conversation_would_store_it() {
        let msgs = json!([{"role": "user", "content": "a\u{0}b"}]);
        let id = ConversationId::new();
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": msgs, "conversation_id": id.to_string()})
            )),
            "messages"
        );
        let plain = Call::parse(Endpoint::Chat, json!({"model": "m", "messages": msgs})).unwrap();
        assert_eq!(plain.body()["messages"], msgs, "passed through as sent");
    }

    #[test]
    fn every_malformed_fact_names_its_field() {
        let msgs = json!([{"role": "user", "content": "x"}]);
        assert_eq!(
            invalid_field(Call::parse(Endpoint::Chat, json!(["x"]))),
            "body"
        );
        assert_eq!(
            invalid_field(Call::parse(Endpoint::Chat, json!({"messages": msgs}))),
            "model"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": []})
            )),
            "messages"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Completions,
                json!({"model": "m", "prompt": 3})
            )),
            "prompt"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": msgs, "max_tokens": u64::MAX})
            )),
            "max_tokens"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": msgs, "max_completion_tokens": -1})
            )),
            "max_completion_tokens"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": msgs, "stream": "yes"})
            )),
            "stream"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Chat,
                json!({"model": "m", "messages": msgs, "stream_options": true})
            )),
            "stream_options"
        );
        assert_eq!(
            invalid_field(Call::parse(
                Endpoint::Embeddings,
                json!({"model": "m", "input": "x", "conversation_id": "c"})
            )),
            "conversation_id"
        );
    }
}
