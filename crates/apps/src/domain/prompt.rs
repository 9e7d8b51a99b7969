//! The prompt an app sends: its system prompt with the call's variables filled in, the
//! retrieved passages within the context budget, then the end user's messages.

use maas_shared::error::FieldError;
use serde_json::{Map, Value};

use super::config::{AppConfig, CONTEXT_PLACEHOLDER, VarType, Variable};
use super::errors::bad;

/// The names of the `{{ name }}` placeholders of `text`, in order (repeats included).
#[must_use]
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let name = after[..end].trim();
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(name);
        }
        rest = &after[end + 2..];
    }
    out
}

/// `text` with each placeholder replaced by `value_of(name)` (unknown names are left as
/// written). One pass: a value that holds `{{…}}` is not expanded again.
#[must_use]
pub fn render(text: &str, value_of: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match value_of(name) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The values of a call's variables: given, else defaulted, else (optional ones) empty.
///
/// # Errors
/// Every variable that is missing (required, no default), of the wrong type or not declared.
pub fn resolve_variables(
    declared: &[Variable],
    given: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut bad_fields = Vec::new();
    let mut out = Map::new();
    for v in declared {
        let field = format!("variables.{}", v.name);
        match given.and_then(|g| g.get(&v.name)).filter(|x| !x.is_null()) {
            Some(value) if v.kind.admits(value) => {
                if let (VarType::String, Some(s)) = (v.kind, value.as_str())
                    && (s.chars().count() > 10_000 || s.contains('\0'))
                {
                    bad_fields.push(bad(field, "invalid", "at most 10,000 characters, no NUL"));
                    continue;
                }
                out.insert(v.name.clone(), value.clone());
            }
            Some(_) => {
                bad_fields.push(bad(field, "type", format!("must be a {}", v.kind.as_str())))
            }
            None => match &v.default {
                Some(default) => {
                    out.insert(v.name.clone(), default.clone());
                }
                None if v.required => bad_fields.push(bad(field, "required", "is required")),
                None => {
                    out.insert(v.name.clone(), Value::String(String::new()));
                }
            },
        }
    }
    if let Some(given) = given {
        for name in given.keys() {
            if !declared.iter().any(|v| &v.name == name) {
                bad_fields.push(bad(
                    format!("variables.{name}"),
                    "unknown",
                    "not a variable of this app",
                ));
            }
        }
    }
    if bad_fields.is_empty() {
        Ok(out)
    } else {
        Err(bad_fields)
    }
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// One retrieved passage.
#[derive(Clone, Debug, PartialEq)]
pub struct Passage {
    /// Its knowledge base.
    pub base_id: uuid::Uuid,
    /// Its document.
    pub document_id: uuid::Uuid,
    /// The document's file name.
    pub file_name: String,
    /// The chunk.
    pub chunk_id: uuid::Uuid,
    /// The chunk's position in the document.
    pub position: u32,
    /// Score of the search mode, 0 to 1.
    pub score: f32,
    /// Text.
    pub content: String,
}

/// Tokens a text is counted as against the context budget: about four characters a token.
#[must_use]
pub fn budget_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The passages, best first, that fit in `budget` tokens together (one that does not fit is
/// skipped; a smaller one after it may still fit).
#[must_use]
pub fn within_budget(mut passages: Vec<Passage>, top_k: u32, budget: u32) -> Vec<Passage> {
    passages.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.chunk_id.cmp(&b.chunk_id))
    });
    let mut used = 0u64;
    let mut out = Vec::new();
    for p in passages {
        if out.len() >= top_k as usize {
            break;
        }
        let cost = budget_tokens(&p.content);
        if used + cost <= u64::from(budget) {
            used += cost;
            out.push(p);
        }
    }
    out
}

/// The context block the passages make, numbered as their citations are.
#[must_use]
pub fn context_block(passages: &[Passage]) -> String {
    if passages.is_empty() {
        return "(no passage of the knowledge bases matches the question)".to_owned();
    }
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[{}] {} (part {})\n{}",
                i + 1,
                p.file_name,
                p.position + 1,
                p.content
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The system message of a call: the prompt with its variables, and the passages where the
/// prompt names `{{context}}` (else after it, when the app has knowledge bases).
#[must_use]
pub fn system_message(
    config: &AppConfig,
    values: &Map<String, Value>,
    passages: &[Passage],
) -> String {
    let uses_knowledge = !config.knowledge.bases.is_empty();
    let context = context_block(passages);
    let names_context = placeholders(&config.system_prompt).contains(&CONTEXT_PLACEHOLDER);
    let mut text = render(&config.system_prompt, |name| {
        if name == CONTEXT_PLACEHOLDER {
            Some(if uses_knowledge {
                context.clone()
            } else {
                String::new()
            })
        } else {
            values.get(name).map(text_of)
        }
    });
    if uses_knowledge && !names_context {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str("Answer from the numbered passages below and cite them as [n].\n\n");
        text.push_str(&context);
    }
    text
}

/// A short quote of a passage for its citation: its first 200 characters.
#[must_use]
pub fn quote(content: &str) -> String {
    let mut out: String = content.chars().take(200).collect();
    if out.len() < content.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::{ConfigDraft, VariableDraft};
    use serde_json::json;

    #[test]
    fn rendering_fills_each_placeholder_once() {
        assert_eq!(placeholders("a {{x}} b {{ y }} {{}} {{x"), vec!["x", "y"]);
        let out = render("{{a}}-{{ b }}-{{c}}", |n| match n {
            "a" => Some("{{b}}".into()),
            "b" => Some("2".into()),
            _ => None,
        });
        assert_eq!(out, "{{b}}-2-{{c}}");
    }

    #[test]
    fn variables_are_checked_defaulted_and_listed() {
        let vars = vec![
            Variable {
                name: "who".into(),
                kind: VarType::String,
                required: true,
                default: None,
                description: String::new(),
            },
            Variable {
                name: "n".into(),
                kind: VarType::Integer,
                required: true,
                default: None,
                description: String::new(),
            },
            Variable {
                name: "tone".into(),
                kind: VarType::String,
                required: false,
                default: Some(json!("kind")),
                description: String::new(),
            },
        ];
        let given = json!({"n": "three", "extra": 1});
        let err = resolve_variables(&vars, given.as_object()).unwrap_err();
        let got: Vec<(String, String)> = err.into_iter().map(|e| (e.field, e.code)).collect();
        assert_eq!(
            got,
            vec![
                ("variables.who".to_owned(), "required".to_owned()),
                ("variables.n".to_owned(), "type".to_owned()),
                ("variables.extra".to_owned(), "unknown".to_owned()),
            ]
        );
        let ok = resolve_variables(&vars, json!({"who": "Ann", "n": 3}).as_object()).unwrap();
        assert_eq!(ok["tone"], "kind");
        assert_eq!(ok["n"], 3);
    }

    fn passage(score: f32, chars: usize) -> Passage {
        Passage {
            base_id: uuid::Uuid::nil(),
            document_id: uuid::Uuid::nil(),
            file_name: "f.txt".into(),
            chunk_id: uuid::Uuid::now_v7(),
            position: 0,
            score,
            content: "x".repeat(chars),
        }
    }

    #[test]
    fn the_budget_keeps_the_best_passages_that_fit() {
        let kept = within_budget(
            vec![passage(0.5, 40), passage(0.9, 400), passage(0.7, 40)],
            5,
            30,
        );
        let scores: Vec<f32> = kept.iter().map(|p| p.score).collect();
        assert_eq!(scores, vec![0.7, 0.5]);
        assert_eq!(
            within_budget(vec![passage(0.5, 4), passage(0.6, 4)], 1, 100).len(),
            1
        );
    }

    #[test]
    fn passages_go_where_the_prompt_names_them_or_after_it() {
        let mut config = AppConfig::apply(
            None,
            ConfigDraft {
                model: Some("m".into()),
                system_prompt: Some("Help {{who}}.\n{{context}}\nEnd.".into()),
                variables: Some(vec![VariableDraft {
                    name: "who".into(),
                    ..VariableDraft::default()
                }]),
                ..ConfigDraft::default()
            },
        )
        .unwrap();
        config.knowledge.bases = vec![uuid::Uuid::nil()];
        let values =
            resolve_variables(&config.variables, json!({"who": "Ann"}).as_object()).unwrap();
        let mut p = passage(0.9, 3);
        p.content = "abc".into();
        let text = system_message(&config, &values, &[p.clone()]);
        assert_eq!(text, "Help Ann.\n[1] f.txt (part 1)\nabc\nEnd.");
        config.system_prompt = "Be brief.".into();
        let text = system_message(&config, &values, &[p]);
        assert!(
            text.starts_with("Be brief.\n\nAnswer from the numbered passages"),
            "{text}"
        );
        assert!(text.ends_with("[1] f.txt (part 1)\nabc"), "{text}");
        config.knowledge.bases.clear();
        assert_eq!(system_message(&config, &values, &[]), "Be brief.");
    }
}
