//! The seeds' request shapes, served by the same gateway: `POST /generate` (prompts +
//! sampling parameters, nano-vllm style) and `POST /api/chat` / `/api/chat-stream`
//! (one message, optional conversation, chat-service style).

use std::sync::Arc;

use maas_user::contract::Principal;
use serde_json::{Map, Value, json};

use super::conversations::ConversationService;
use super::gateway::{Call, Endpoint, GatewayService, Proxied, ProxiedBody};
use crate::domain::conversation::ConversationId;
use crate::domain::errors::{InferenceError, InvalidValue};

/// Most prompts one `/generate` call may carry.
pub const MAX_PROMPTS: usize = 32;

/// Sampling parameters accepted by `/generate` (passed on as OpenAI parameters).
const SAMPLING: [&str; 7] = [
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
];

/// One `/generate` output.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The text.
    pub text: String,
    /// OpenAI usage object of the call.
    pub usage: Value,
}

fn answer_text(proxied: &Proxied) -> Result<(String, Value), InferenceError> {
    let ProxiedBody::Full(bytes) = &proxied.body else {
        return Err(InferenceError::Unexpected(anyhow::anyhow!(
            "expected a complete answer"
        )));
    };
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| InferenceError::UpstreamUnavailable(format!("unreadable answer: {e}")))?;
    if !(200..300).contains(&proxied.status) {
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("upstream refused the call")
            .to_owned();
        return Err(InferenceError::UpstreamUnavailable(message));
    }
    let text = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((text, value.get("usage").cloned().unwrap_or(Value::Null)))
}

/// `POST /generate`: each prompt becomes one chat call with the same sampling parameters.
///
/// # Errors
/// Invalid input; the gateway's refusals.
pub async fn generate(
    gateway: &GatewayService,
    principal: Arc<Principal>,
    model: &str,
    prompts: &[String],
    sampling: &Map<String, Value>,
) -> Result<Vec<Generated>, InferenceError> {
    if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
        return Err(InvalidValue::new("prompts", "1 to 32 prompts").into());
    }
    if let Some(unknown) = sampling.keys().find(|k| !SAMPLING.contains(&k.as_str())) {
        tracing::debug!(parameter = %unknown, "unknown sampling parameter refused");
        return Err(InvalidValue::new(
            "sampling_params",
            "temperature, top_p, max_tokens, stop, seed, presence_penalty, frequency_penalty",
        )
        .into());
    }
    let mut outputs = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let mut body = sampling.clone();
        body.insert("model".into(), Value::String(model.to_owned()));
        body.insert(
            "messages".into(),
            json!([{"role": "user", "content": prompt}]),
        );
        let call = Call::parse(Endpoint::Chat, Value::Object(body))?;
        let proxied = gateway.proxy(Arc::clone(&principal), call).await?;
        let (text, usage) = answer_text(&proxied)?;
        outputs.push(Generated { text, usage });
    }
    Ok(outputs)
}

/// What `/api/chat` answers.
pub enum ChatAnswer {
    /// The whole reply.
    Reply {
        /// Text.
        reply: String,
        /// The conversation it was stored in.
        conversation_id: ConversationId,
    },
    /// Server-sent events (OpenAI chunks) and the conversation they are stored in.
    Stream(Proxied, ConversationId),
}

/// `POST /api/chat` and `/api/chat-stream`: one message, stored in a conversation (a new one
/// when none is named).
///
/// # Errors
/// Invalid input; unknown conversation; the gateway's refusals.
pub async fn chat(
    gateway: &GatewayService,
    conversations: &ConversationService,
    principal: Arc<Principal>,
    model: &str,
    message: &str,
    conversation_id: Option<ConversationId>,
    stream: bool,
) -> Result<ChatAnswer, InferenceError> {
    if message.trim().is_empty() {
        return Err(InvalidValue::new("message", "must not be empty").into());
    }
    let conversation_id = match conversation_id {
        Some(id) => conversations.get(&principal, id).await?.id(),
        None => {
            let title: String = message.chars().take(60).collect();
            conversations
                .create(&principal, Some(&title), Some(model.to_owned()))
                .await?
                .id()
        }
    };
    let body = json!({"model": model, "stream": stream, "conversation_id": conversation_id.to_string(),
        "messages": [{"role": "user", "content": message}]});
    let proxied = gateway
        .proxy(principal, Call::parse(Endpoint::Chat, body)?)
        .await?;
    if stream {
        return Ok(ChatAnswer::Stream(proxied, conversation_id));
    }
    let (reply, _) = answer_text(&proxied)?;
    Ok(ChatAnswer::Reply {
        reply,
        conversation_id,
    })
}
