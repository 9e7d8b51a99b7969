//! An app's configuration: its model, prompt with declared variables, generation parameters,
//! knowledge and retrieval settings, opening message and suggested questions. The draft on the
//! app and every published version hold one; it is stored as JSON in the shape the API shows.

use std::collections::BTreeSet;

use maas_knowledge::contract::SearchMode;
use maas_shared::error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::bad;
use super::prompt::placeholders;

/// The placeholder retrieved passages go into (when the prompt names it; else they follow
/// the prompt).
pub const CONTEXT_PLACEHOLDER: &str = "context";
/// Variables an app may declare.
pub const MAX_VARIABLES: usize = 32;
/// Knowledge bases an app may search.
pub const MAX_BASES: usize = 8;
/// Longest system prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 20_000;

/// The type of a prompt variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// Any text.
    String,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl VarType {
    /// Reads a type name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "string" => Some(Self::String),
            "number" => Some(Self::Number),
            "integer" => Some(Self::Integer),
            "boolean" => Some(Self::Boolean),
            _ => None,
        }
    }

    /// The type name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
        }
    }

    /// Whether `value` is of this type.
    #[must_use]
    pub fn admits(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Integer => {
                value.is_i64()
                    || value.is_u64()
                    || value
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            }
            Self::Boolean => value.is_boolean(),
        }
    }
}

/// A declared prompt variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// Name, as written in `{{name}}`.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: VarType,
    /// Whether a call must give it (when it has no default).
    pub required: bool,
    /// Used when a call does not give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// Generation parameters sent with every call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Above 0, at most 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// 1 to 32,768.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Up to 4 stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// What the app retrieves and how much of it the prompt may hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeSettings {
    /// The owner's bases searched for each question.
    #[serde(default)]
    pub bases: Vec<uuid::Uuid>,
    /// `vector`, `fulltext` or `hybrid`.
    pub mode: String,
    /// Passages retrieved (over all bases), 1 to 20.
    pub top_k: u32,
    /// Passages scoring below are dropped (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    /// Tokens of retrieved passages the prompt holds at most (about four characters a token).
    pub max_context_tokens: u32,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        Self {
            bases: Vec::new(),
            mode: "hybrid".into(),
            top_k: 4,
            score_threshold: None,
            max_context_tokens: 1500,
        }
    }
}

impl KnowledgeSettings {
    /// The search mode.
    #[must_use]
    pub fn search_mode(&self) -> SearchMode {
        SearchMode::parse(&self.mode).unwrap_or(SearchMode::Hybrid)
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppConfig {
    /// The chat model (a provider's model or a deployment's served name).
    pub model: String,
    /// The system prompt, with `{{variables}}` (and optionally `{{context}}`).
    #[serde(default)]
    pub system_prompt: String,
    /// Declared variables.
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Generation parameters.
    #[serde(default)]
    pub generation: Generation,
    /// Knowledge and retrieval.
    #[serde(default)]
    pub knowledge: KnowledgeSettings,
    /// Shown by a client before the first question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening_message: Option<String>,
    /// Offered to end users.
    #[serde(default)]
    pub suggested_questions: Vec<String>,
}

/// A variable as asked (unchecked).
#[derive(Clone, Debug, Default)]
pub struct VariableDraft {
    /// Name.
    pub name: String,
    /// Type name (default `string`).
    pub kind: Option<String>,
    /// Required (default `false`).
    pub required: Option<bool>,
    /// Default.
    pub default: Option<Value>,
    /// Description.
    pub description: Option<String>,
}

/// Generation parameters as asked.
#[derive(Clone, Debug, Default)]
pub struct GenerationDraft {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Top p.
    pub top_p: Option<f64>,
    /// Max tokens.
    pub max_tokens: Option<i64>,
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
}

/// Knowledge settings as asked (absent fields keep their value).
#[derive(Clone, Debug, Default)]
pub struct KnowledgeDraft {
    /// Bases.
    pub bases: Option<Vec<uuid::Uuid>>,
    /// Mode.
    pub mode: Option<String>,
    /// Top k.
    pub top_k: Option<i64>,
    /// Threshold.
    pub score_threshold: Option<f64>,
    /// Context budget.
    pub max_context_tokens: Option<i64>,
}

/// A configuration change: each field given replaces the current one.
#[derive(Clone, Debug, Default)]
pub struct ConfigDraft {
    /// Model.
    pub model: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Variables (the whole list).
    pub variables: Option<Vec<VariableDraft>>,
    /// Generation (the whole object).
    pub generation: Option<GenerationDraft>,
    /// Knowledge (field by field).
    pub knowledge: Option<KnowledgeDraft>,
    /// Opening message (empty clears it).
    pub opening_message: Option<String>,
    /// Suggested questions (the whole list).
    pub suggested_questions: Option<Vec<String>>,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

fn plain_text(text: &str, allow_newlines: bool) -> bool {
    !text.chars().any(|c| {
        c == '\0' || (c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t')))
    })
}

impl AppConfig {
    /// Applies `draft` over `current` (or over the defaults for a new app, which must name a
    /// model) and checks every rule; every bad field is reported.
    ///
    /// # Errors
    /// The bad fields.
    pub fn apply(current: Option<&Self>, draft: ConfigDraft) -> Result<Self, Vec<FieldError>> {
        let mut bad_fields = Vec::new();
        let mut out = current.cloned().unwrap_or_else(|| Self {
            model: String::new(),
            system_prompt: String::new(),
            variables: Vec::new(),
            generation: Generation::default(),
            knowledge: KnowledgeSettings::default(),
            opening_message: None,
            suggested_questions: Vec::new(),
        });
        if let Some(model) = draft.model {
            out.model = model.trim().to_owned();
        }
        if out.model.is_empty() || out.model.chars().count() > 200 || !plain_text(&out.model, false)
        {
            bad_fields.push(bad(
                "model",
                "invalid",
                "a model name of 1 to 200 characters is required",
            ));
        }
        if let Some(prompt) = draft.system_prompt {
            out.system_prompt = prompt;
        }
        if out.system_prompt.chars().count() > MAX_PROMPT_CHARS
            || !plain_text(&out.system_prompt, true)
        {
            bad_fields.push(bad(
                "system_prompt",
                "invalid",
                format!("at most {MAX_PROMPT_CHARS} characters, no control characters but newlines and tabs"),
            ));
        }
        if let Some(variables) = draft.variables {
            out.variables = parse_variables(variables, &mut bad_fields);
        }
        let declared: BTreeSet<&str> = out.variables.iter().map(|v| v.name.as_str()).collect();
        for name in placeholders(&out.system_prompt) {
            if name != CONTEXT_PLACEHOLDER && !declared.contains(name) {
                bad_fields.push(bad(
                    "system_prompt",
                    "undeclared_variable",
                    format!("`{{{{{name}}}}}` is not a declared variable"),
                ));
            }
        }
        if let Some(generation) = draft.generation {
            out.generation = parse_generation(generation, &mut bad_fields);
        }
        if let Some(knowledge) = draft.knowledge {
            out.knowledge = parse_knowledge(&out.knowledge, knowledge, &mut bad_fields);
        }
        if let Some(opening) = draft.opening_message {
            let opening = opening.trim().to_owned();
            if opening.chars().count() > 2000 || !plain_text(&opening, true) {
                bad_fields.push(bad(
                    "opening_message",
                    "invalid",
                    "at most 2,000 characters",
                ));
            }
            out.opening_message = (!opening.is_empty()).then_some(opening);
        }
        if let Some(questions) = draft.suggested_questions {
            if questions.len() > 10 {
                bad_fields.push(bad(
                    "suggested_questions",
                    "too_many",
                    "at most 10 questions",
                ));
            }
            for (i, q) in questions.iter().enumerate() {
                let n = q.trim().chars().count();
                if n == 0 || n > 300 || !plain_text(q, false) {
                    bad_fields.push(bad(
                        format!("suggested_questions[{i}]"),
                        "invalid",
                        "1 to 300 characters on one line",
                    ));
                }
            }
            out.suggested_questions = questions.into_iter().map(|q| q.trim().to_owned()).collect();
        }
        if bad_fields.is_empty() {
            Ok(out)
        } else {
            Err(bad_fields)
        }
    }
}

fn parse_variables(drafts: Vec<VariableDraft>, bad_fields: &mut Vec<FieldError>) -> Vec<Variable> {
    if drafts.len() > MAX_VARIABLES {
        bad_fields.push(bad(
            "variables",
            "too_many",
            format!("at most {MAX_VARIABLES} variables"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, d) in drafts.into_iter().enumerate() {
        let field = |f: &str| format!("variables[{i}].{f}");
        let name = d.name.trim().to_owned();
        if !is_identifier(&name) {
            bad_fields.push(bad(
                field("name"),
                "invalid",
                "a letter or `_`, then letters, digits or `_` (at most 64)",
            ));
        } else if name == CONTEXT_PLACEHOLDER {
            bad_fields.push(bad(
                field("name"),
                "reserved",
                "`context` is where retrieved passages go",
            ));
        } else if !seen.insert(name.clone()) {
            bad_fields.push(bad(field("name"), "duplicate", "declared twice"));
        }
        let kind = match d.kind.as_deref() {
            None => VarType::String,
            Some(raw) => VarType::parse(raw).unwrap_or_else(|| {
                bad_fields.push(bad(
                    field("type"),
                    "invalid",
                    "one of string, number, integer, boolean",
                ));
                VarType::String
            }),
        };
        let default = d.default.filter(|v| !v.is_null());
        if let Some(value) = &default
            && !kind.admits(value)
        {
            bad_fields.push(bad(
                field("default"),
                "type",
                format!("must be a {}", kind.as_str()),
            ));
        }
        let description = d.description.unwrap_or_default();
        if description.chars().count() > 500 {
            bad_fields.push(bad(
                field("description"),
                "invalid",
                "at most 500 characters",
            ));
        }
        out.push(Variable {
            name,
            kind,
            required: d.required.unwrap_or(false),
            default,
            description,
        });
    }
    out
}

fn parse_generation(d: GenerationDraft, bad_fields: &mut Vec<FieldError>) -> Generation {
    if d.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        bad_fields.push(bad("generation.temperature", "range", "0 to 2"));
    }
    if d.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        bad_fields.push(bad("generation.top_p", "range", "above 0, at most 1"));
    }
    let max_tokens = match d.max_tokens {
        None => None,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=32_768).contains(&n) => Some(n),
            _ => {
                bad_fields.push(bad("generation.max_tokens", "range", "1 to 32,768"));
                None
            }
        },
    };
    let stop = d.stop.unwrap_or_default();
    if stop.len() > 4 {
        bad_fields.push(bad(
            "generation.stop",
            "too_many",
            "at most 4 stop sequences",
        ));
    }
    if stop
        .iter()
        .any(|s| s.is_empty() || s.chars().count() > 64 || s.contains('\0'))
    {
        bad_fields.push(bad("generation.stop", "invalid", "each 1 to 64 characters"));
    }
    Generation {
        temperature: d.temperature,
        top_p: d.top_p,
        max_tokens,
        stop,
    }
}

fn parse_knowledge(
    current: &KnowledgeSettings,
    d: KnowledgeDraft,
    bad_fields: &mut Vec<FieldError>,
) -> KnowledgeSettings {
    let mut out = current.clone();
    if let Some(bases) = d.bases {
        let unique: BTreeSet<uuid::Uuid> = bases.iter().copied().collect();
        if bases.len() > MAX_BASES {
            bad_fields.push(bad(
                "knowledge.bases",
                "too_many",
                format!("at most {MAX_BASES} bases"),
            ));
        } else if unique.len() != bases.len() {
            bad_fields.push(bad(
                "knowledge.bases",
                "duplicate",
                "a base is listed twice",
            ));
        }
        out.bases = bases;
    }
    if let Some(mode) = d.mode {
        if SearchMode::parse(&mode).is_none() {
            bad_fields.push(bad(
                "knowledge.mode",
                "invalid",
                "one of vector, fulltext, hybrid",
            ));
        }
        out.mode = mode;
    }
    if let Some(k) = d.top_k {
        match u32::try_from(k) {
            Ok(k) if (1..=20).contains(&k) => out.top_k = k,
            _ => bad_fields.push(bad("knowledge.top_k", "range", "1 to 20")),
        }
    }
    if let Some(t) = d.score_threshold {
        if (0.0..=1.0).contains(&t) {
            #[expect(clippy::cast_possible_truncation, reason = "0 to 1")]
            let t = t as f32;
            out.score_threshold = Some(t);
        } else {
            bad_fields.push(bad("knowledge.score_threshold", "range", "0 to 1"));
        }
    }
    if let Some(n) = d.max_context_tokens {
        match u32::try_from(n) {
            Ok(n) if (1..=32_000).contains(&n) => out.max_context_tokens = n,
            _ => bad_fields.push(bad("knowledge.max_context_tokens", "range", "1 to 32,000")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(prompt: &str, vars: Vec<VariableDraft>) -> ConfigDraft {
        ConfigDraft {
            model: Some("m".into()),
            system_prompt: Some(prompt.into()),
            variables: Some(vars),
            ..ConfigDraft::default()
        }
    }

    #[test]
    fn undeclared_placeholders_and_bad_variables_are_all_listed() {
        let err = AppConfig::apply(
            None,
            draft(
                "Hi {{name}} {{ topic }} {{context}}",
                vec![
                    VariableDraft {
                        name: "name".into(),
                        ..VariableDraft::default()
                    },
                    VariableDraft {
                        name: "name".into(),
                        ..VariableDraft::default()
                    },
                    VariableDraft {
                        name: "9x".into(),
                        kind: Some("date".into()),
                        ..VariableDraft::default()
                    },
                    VariableDraft {
                        name: "n".into(),
                        kind: Some("integer".into()),
                        default: Some(serde_json::json!(1.5)),
                        ..VariableDraft::default()
                    },
                ],
            ),
        )
        .unwrap_err();
        let fields: Vec<(&str, &str)> = err
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("variables[1].name", "duplicate"),
                ("variables[2].name", "invalid"),
                ("variables[2].type", "invalid"),
                ("variables[3].default", "type"),
                ("system_prompt", "undeclared_variable"),
            ]
        );
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let first = AppConfig::apply(None, draft("Be brief.", vec![])).unwrap();
        let second = AppConfig::apply(
            Some(&first),
            ConfigDraft {
                knowledge: Some(KnowledgeDraft {
                    top_k: Some(7),
                    ..KnowledgeDraft::default()
                }),
                ..ConfigDraft::default()
            },
        )
        .unwrap();
        assert_eq!(second.system_prompt, "Be brief.");
        assert_eq!(second.knowledge.top_k, 7);
        assert_eq!(second.knowledge.max_context_tokens, 1500);
        assert!(
            AppConfig::apply(None, ConfigDraft::default()).is_err(),
            "a new app needs a model"
        );
    }
}
