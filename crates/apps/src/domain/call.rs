//! A call of an app's endpoint, read from OpenAI's chat request, and the request it becomes.

use maas_shared::error::FieldError;
use serde_json::{Map, Value, json};

use super::app::parse_end_user;
use super::config::AppConfig;
use super::errors::{AppsError, bad};

/// The parameters an app's endpoint takes.
pub const PARAMETERS: [&str; 12] = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "user",
    "variables",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
];
/// Messages a call may send.
pub const MAX_MESSAGES: usize = 200;
/// Characters all of a call's messages may hold.
pub const MAX_MESSAGE_CHARS: usize = 200_000;

/// Who said a message the caller sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    /// The end user.
    User,
    /// The app (earlier answers the caller keeps).
    Assistant,
}

impl Speaker {
    /// OpenAI's role name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Speaker,
    /// Text.
    pub content: String,
}

/// What the caller may set where the app leaves it unset (`max_tokens` is capped by the app's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Top p.
    pub top_p: Option<f64>,
    /// Completion cap.
    pub max_tokens: Option<u64>,
    /// Stop sequences.
    pub stop: Option<Value>,
}

/// A parsed call.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointCall {
    /// The caller's messages (the last is the end user's question).
    pub messages: Vec<ChatMessage>,
    /// Streamed.
    pub stream: bool,
    /// `stream_options`, passed on.
    pub stream_options: Option<Value>,
    /// The end user, whose conversation the call continues.
    pub user: Option<String>,
    /// Prompt variables.
    pub variables: Option<Map<String, Value>>,
    /// Generation parameters of the caller.
    pub overrides: Overrides,
}

fn text_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => Some(text.to_owned()),
                    _ => None,
                }
            })
            .collect::<Option<Vec<String>>>()
            .map(|t| t.join("")),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => None,
    }
}

fn number(
    body: &Map<String, Value>,
    field: &str,
    ok: impl Fn(f64) -> bool,
    rule: &str,
    bad_fields: &mut Vec<FieldError>,
) -> Option<f64> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64().filter(|f| ok(*f)) {
            Some(f) => Some(f),
            None => {
                bad_fields.push(bad(field, "range", rule));
                None
            }
        },
    }
}

impl EndpointCall {
    /// Reads OpenAI's chat request.
    ///
    /// # Errors
    /// [`AppsError::UnsupportedParameter`] for a parameter the endpoint does not take;
    /// [`AppsError::Invalid`] listing every malformed field.
    pub fn parse(body: Value) -> Result<Self, AppsError> {
        let Value::Object(body) = body else {
            return Err(AppsError::Invalid(vec![bad(
                "body",
                "type",
                "must be a JSON object",
            )]));
        };
        if let Some(unknown) = body.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
            return Err(AppsError::UnsupportedParameter(unknown.clone()));
        }
        let mut bad_fields = Vec::new();
        if body
            .get("model")
            .is_some_and(|m| !m.is_string() && !m.is_null())
        {
            bad_fields.push(bad(
                "model",
                "type",
                "a string (the app's model answers whatever it names)",
            ));
        }
        let mut messages = Vec::new();
        match body.get("messages").and_then(Value::as_array) {
            Some(list) if !list.is_empty() && list.len() <= MAX_MESSAGES => {
                let mut chars = 0;
                for (i, m) in list.iter().enumerate() {
                    let role = match m.get("role").and_then(Value::as_str) {
                        Some("user") => Some(Speaker::User),
                        Some("assistant") => Some(Speaker::Assistant),
                        Some("system" | "developer") => {
                            bad_fields.push(bad(format!("messages[{i}].role"), "not_allowed", "the app's prompt is the system message; send user and assistant messages"));
                            None
                        }
                        _ => {
                            bad_fields.push(bad(
                                format!("messages[{i}].role"),
                                "invalid",
                                "user or assistant",
                            ));
                            None
                        }
                    };
                    let content = m.get("content").and_then(text_content);
                    match &content {
                        Some(text) if !text.contains('\0') => chars += text.chars().count(),
                        _ => bad_fields.push(bad(
                            format!("messages[{i}].content"),
                            "invalid",
                            "text (a string or text parts), no NUL",
                        )),
                    }
                    if let (Some(role), Some(content)) = (role, content) {
                        messages.push(ChatMessage { role, content });
                    }
                }
                if chars > MAX_MESSAGE_CHARS {
                    bad_fields.push(bad(
                        "messages",
                        "too_long",
                        format!("at most {MAX_MESSAGE_CHARS} characters in all"),
                    ));
                }
                if list
                    .last()
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    != Some("user")
                {
                    bad_fields.push(bad(
                        "messages",
                        "last_not_user",
                        "the last message is the end user's question",
                    ));
                }
            }
            _ => bad_fields.push(bad(
                "messages",
                "invalid",
                format!("1 to {MAX_MESSAGES} messages"),
            )),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                bad_fields.push(bad("stream", "type", "a boolean"));
                false
            }
        };
        let stream_options = match body.get("stream_options") {
            None | Some(Value::Null) => None,
            Some(Value::Object(o))
                if o.get("include_usage")
                    .is_none_or(|v| v.is_boolean() || v.is_null()) =>
            {
                Some(Value::Object(o.clone()))
            }
            Some(_) => {
                bad_fields.push(bad(
                    "stream_options",
                    "type",
                    "an object with a boolean include_usage",
                ));
                None
            }
        };
        let user = match body.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => match parse_end_user(u) {
                Ok(u) => Some(u),
                Err(rule) => {
                    bad_fields.push(bad("user", "invalid", rule));
                    None
                }
            },
            Some(_) => {
                bad_fields.push(bad("user", "type", "a string"));
                None
            }
        };
        let variables = match body.get("variables") {
            None | Some(Value::Null) => None,
            Some(Value::Object(v)) => Some(v.clone()),
            Some(_) => {
                bad_fields.push(bad("variables", "type", "an object of the app's variables"));
                None
            }
        };
        if body
            .get("n")
            .is_some_and(|n| !n.is_null() && n.as_u64() != Some(1))
        {
            bad_fields.push(bad("n", "range", "an app answers once: 1"));
        }
        let temperature = number(
            &body,
            "temperature",
            |t| (0.0..=2.0).contains(&t),
            "0 to 2",
            &mut bad_fields,
        );
        let top_p = number(
            &body,
            "top_p",
            |p| p > 0.0 && p <= 1.0,
            "above 0, at most 1",
            &mut bad_fields,
        );
        let mut max_tokens = None;
        for field in ["max_completion_tokens", "max_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64().filter(|n| *n >= 1) {
                    Some(n) => {
                        max_tokens = max_tokens.or(Some(n));
                    }
                    None => bad_fields.push(bad(field, "range", "a positive integer")),
                },
            }
        }
        let stop = match body.get("stop") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(json!([s])),
            Some(Value::Array(a))
                if a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) =>
            {
                Some(Value::Array(a.clone()))
            }
            Some(_) => {
                bad_fields.push(bad("stop", "invalid", "a string or up to 4 strings"));
                None
            }
        };
        if !bad_fields.is_empty() {
            return Err(AppsError::Invalid(bad_fields));
        }
        Ok(Self {
            messages,
            stream,
            stream_options,
            user,
            variables,
            overrides: Overrides {
                temperature,
                top_p,
                max_tokens,
                stop,
            },
        })
    }

    /// The end user's question: their last message.
    #[must_use]
    pub fn question(&self) -> &str {
        self.messages.last().map_or("", |m| m.content.as_str())
    }
}

/// The chat request sent to the model, and how many of its leading messages are the app's
/// preamble (the system message).
#[must_use]
pub fn upstream_request(config: &AppConfig, system: &str, call: &EndpointCall) -> (Value, usize) {
    let mut messages = Vec::with_capacity(call.messages.len() + 1);
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    let preamble = messages.len();
    messages.extend(
        call.messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
    );
    let mut body = Map::new();
    body.insert("model".into(), Value::String(config.model.clone()));
    body.insert("messages".into(), Value::Array(messages));
    let g = &config.generation;
    let o = &call.overrides;
    if let Some(t) = g.temperature.or(o.temperature) {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = g.top_p.or(o.top_p) {
        body.insert("top_p".into(), json!(p));
    }
    let cap = match (g.max_tokens.map(u64::from), o.max_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(cap) = cap {
        body.insert("max_tokens".into(), json!(cap));
    }
    if !g.stop.is_empty() {
        body.insert("stop".into(), json!(g.stop));
    } else if let Some(stop) = &o.stop {
        body.insert("stop".into(), stop.clone());
    }
    if call.stream {
        body.insert("stream".into(), Value::Bool(true));
        if let Some(options) = &call.stream_options {
            body.insert("stream_options".into(), options.clone());
        }
    }
    (Value::Object(body), preamble)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{ConfigDraft, GenerationDraft};

    #[test]
    fn calls_are_read_and_refused_field_by_field() {
        let call = EndpointCall::parse(json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "user": "u1", "max_tokens": 50})).unwrap();
        assert_eq!(call.question(), "hi");
        assert_eq!(call.user.as_deref(), Some("u1"));
        let Err(AppsError::UnsupportedParameter(p)) =
            EndpointCall::parse(json!({"messages": [], "tools": []}))
        else {
            panic!("tools is not taken");
        };
        assert_eq!(p, "tools");
        let Err(AppsError::Invalid(fields)) = EndpointCall::parse(
            json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": 3}], "n": 2, "stream": "yes"}),
        ) else {
            panic!("invalid");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            vec!["messages[0].role", "messages[1].content", "stream", "n"]
        );
    }

    #[test]
    fn the_app_s_parameters_win_and_cap_the_caller_s() {
        let config = AppConfig::apply(
            None,
            ConfigDraft {
                model: Some("m".into()),
                generation: Some(GenerationDraft {
                    temperature: Some(0.0),
                    max_tokens: Some(64),
                    ..GenerationDraft::default()
                }),
                ..ConfigDraft::default()
            },
        )
        .unwrap();
        let call = EndpointCall::parse(json!({"messages": [{"role": "user", "content": "q"}], "temperature": 1.5, "top_p": 0.5, "max_tokens": 500, "stream": true})).unwrap();
        let (body, preamble) = upstream_request(&config, "sys", &call);
        assert_eq!(preamble, 1);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["top_p"], 0.5);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        let (body, preamble) = upstream_request(&config, "", &call);
        assert_eq!(
            (preamble, body["messages"][0]["role"].as_str()),
            (0, Some("user"))
        );
    }
}
