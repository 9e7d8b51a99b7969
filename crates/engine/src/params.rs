//! Request bodies: OpenAI's parameters, checked and turned into [`SamplingParams`].

use serde::Deserialize;
use serde_json::Value;

use crate::chat::{Message, SamplingParams};
use crate::error::ApiError;

/// Most stop sequences per request (OpenAI's limit).
const MAX_STOPS: usize = 4;

/// Longest stop sequence.
const MAX_STOP_BYTES: usize = 256;

/// The sampling part shared by chat, completions and `/generate`.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stop: Option<Value>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    n: Option<i64>,
    logprobs: Option<Value>,
    best_of: Option<i64>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Served model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Value>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Tools (not supported by the built-in models).
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `{"type": "text"}` only.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Served model name.
    pub model: String,
    /// One prompt (a string or a list of one string).
    pub prompt: Value,
    /// Server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Echo the prompt (not supported).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /generate` (the nano-vllm seed's shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Served model name (optional: the engine's chat model).
    #[serde(default)]
    pub model: Option<String>,
    /// Raw prompts, each answered separately.
    pub prompts: Vec<String>,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling_params: Sampling,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Served model name.
    pub model: String,
    /// A string or a list of strings.
    pub input: Value,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Must be the model's own size when given.
    #[serde(default)]
    pub dimensions: Option<i64>,
}

impl Sampling {
    /// Checks the values and fills in defaults (`default_max_tokens` when none is given).
    ///
    /// # Errors
    /// A value out of range or a feature this engine does not implement.
    pub fn resolve(&self, default_max_tokens: usize) -> Result<SamplingParams, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", "top_p must be in (0, 1]"));
        }
        let top_k = match self.top_k {
            None | Some(-1 | 0) => 0,
            Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
            Some(_) => {
                return Err(ApiError::invalid(
                    "top_k",
                    "top_k must be positive, or -1 for all",
                ));
            }
        };
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => default_max_tokens,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "max_tokens must be at least 1",
                ));
            }
        };
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid("stop", "stop must be a string or a list of strings")
                })?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "stop must be a string or a list of strings",
                ));
            }
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid("stop", "at most 4 stop sequences"));
        }
        if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                "stop",
                "stop sequences are at most 256 bytes",
            ));
        }
        let seed = self.seed.map(|s| u64::from_ne_bytes(s.to_ne_bytes()));
        let penalty = |value: Option<f32>, param: &'static str| match value {
            None => Ok(0.0),
            Some(v) if (-2.0..=2.0).contains(&v) => Ok(v),
            Some(_) => Err(ApiError::invalid(
                param,
                format!("{param} must be between -2 and 2"),
            )),
        };
        if self.n.is_some_and(|n| n != 1) || self.best_of.is_some_and(|n| n != 1) {
            return Err(ApiError::unsupported(
                "n",
                "this engine returns one choice per request",
            ));
        }
        if matches!(self.logprobs, Some(Value::Bool(true) | Value::Number(_))) {
            return Err(ApiError::unsupported(
                "logprobs",
                "log probabilities are not returned by this engine",
            ));
        }
        Ok(SamplingParams {
            temperature,
            top_p,
            top_k,
            max_tokens,
            stop,
            seed,
            presence_penalty: penalty(self.presence_penalty, "presence_penalty")?,
            frequency_penalty: penalty(self.frequency_penalty, "frequency_penalty")?,
        })
    }
}

/// Text of a message's `content`: a string, a list of text parts, or null.
fn content_text(content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some("image_url" | "input_audio" | "file") => {
                        return Err(ApiError::unsupported(
                            "messages",
                            "this model reads text only; image, audio and file parts are not supported",
                        ));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            "messages",
                            "each content part needs a known `type`",
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::invalid(
            "messages",
            "content must be a string or a list of parts",
        )),
    }
}

/// Validates the conversation.
///
/// # Errors
/// No messages, an unknown role, or content this engine cannot read.
pub fn messages(raw: &[Value]) -> Result<Vec<Message>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "at least one message is required",
        ));
    }
    raw.iter()
        .map(|m| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("messages", "each message needs a `role`"))?;
            let role = match role {
                "system" | "user" | "assistant" | "tool" => role.to_owned(),
                // OpenAI's newer name for system instructions.
                "developer" => "system".to_owned(),
                other => {
                    return Err(ApiError::invalid(
                        "messages",
                        format!("unknown role `{other}`"),
                    ));
                }
            };
            Ok(Message {
                role,
                content: content_text(m.get("content"))?,
            })
        })
        .collect()
}

/// The single prompt of a completions request.
///
/// # Errors
/// Not one string.
pub fn prompt(value: &Value) -> Result<String, ApiError> {
    let single = match value.as_array() {
        Some(items) if items.len() > 1 => {
            return Err(ApiError::unsupported("prompt", "one prompt per request"));
        }
        Some(items) => items.first(),
        None => Some(value),
    };
    single
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid("prompt", "prompt must be a non-empty string"))
}

/// Most inputs per embeddings request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// The texts of an embeddings request.
///
/// # Errors
/// Empty, too many, or token arrays (which only make sense for the provider's own tokenizer).
pub fn inputs(value: &Value) -> Result<Vec<String>, ApiError> {
    let texts = if let Some(s) = value.as_str() {
        vec![s.to_owned()]
    } else if let Some(items) = value.as_array() {
        items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::unsupported(
                    "input",
                    "input must be a string or a list of strings (token arrays are not supported)",
                )
            })?
    } else {
        return Err(ApiError::invalid(
            "input",
            "input must be a string or a list of strings",
        ));
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid("input", "between 1 and 2048 inputs"));
    }
    if texts.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "input",
            "inputs must not be empty strings",
        ));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sampling(v: Value) -> Result<SamplingParams, ApiError> {
        serde_json::from_value::<Sampling>(v)
            .map_err(|e| ApiError::malformed(e.to_string()))?
            .resolve(64)
    }

    #[test]
    fn defaults_follow_openai() {
        let p = sampling(json!({})).ok();
        assert_eq!(p.as_ref().map(|p| p.temperature), Some(1.0));
        assert_eq!(p.as_ref().map(|p| p.max_tokens), Some(64));
        assert_eq!(p.map(|p| p.stop), Some(vec![]));
    }

    #[test]
    fn out_of_range_values_name_their_parameter() {
        for (body, param) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": 5}), "stop"),
            (json!({"n": 2}), "n"),
            (json!({"presence_penalty": 9}), "presence_penalty"),
        ] {
            let err = sampling(body).err();
            assert_eq!(
                err.map(|e| e.body()["error"]["param"].clone()),
                Some(json!(param))
            );
        }
    }

    #[test]
    fn content_parts_are_joined_and_images_refused() {
        let ok = messages(&[
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        ]);
        assert_eq!(ok.ok().map(|m| m[0].content.clone()), Some("ab".to_owned()));
        let image = messages(&[
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}),
        ]);
        assert_eq!(
            image.err().map(|e| e.body()["error"]["code"].clone()),
            Some(json!("unsupported_parameter"))
        );
        assert!(messages(&[]).is_err());
        assert!(messages(&[json!({"role": "wizard", "content": "x"})]).is_err());
    }

    #[test]
    fn embedding_inputs_are_strings() {
        assert_eq!(inputs(&json!("a")).ok(), Some(vec!["a".to_owned()]));
        assert!(inputs(&json!([1, 2, 3])).is_err());
        assert!(inputs(&json!([])).is_err());
        assert!(inputs(&json!([""])).is_err());
    }
}
