//! Checks on text that is headed for storage. PostgreSQL `text` (and `jsonb`) cannot hold the NUL
//! character (U+0000): a string carrying one makes the write fail, so it is refused up front.

use serde_json::Value;

/// The NUL character, which PostgreSQL cannot store in text.
pub const NUL: char = '\0';

/// Whether `text` holds a NUL character.
#[must_use]
pub fn has_nul(text: &str) -> bool {
    text.contains(NUL)
}

/// The path of every string in `value` (and of every object key) that holds a NUL character,
/// sorted: dotted for object members, `[i]` for array items (`messages[0].content`),
/// `prefix` for `value` itself. A NUL inside a key is shown as `\u0000` in its path.
#[must_use]
pub fn nul_paths(value: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(value, prefix, &mut out);
    out.sort();
    out
}

fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::String(text) if has_nul(text) => out.push(path.to_owned()),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{index}]"), out);
            }
        }
        Value::Object(members) => {
            for (key, member) in members {
                let name = key.replace(NUL, "\\u0000");
                let member_path = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                if has_nul(key) {
                    out.push(member_path.clone());
                }
                walk(member, &member_path, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_string_with_a_nul_is_named_by_its_path() {
        let body = json!({
            "name": "a\u{0}b",
            "ok": "fine",
            "allowed_models": ["m", "x\u{0}"],
            "limits": {"note": "\u{0}"},
            "k\u{0}": 1,
            "n": 5,
        });
        assert_eq!(
            nul_paths(&body, ""),
            ["allowed_models[1]", "k\\u0000", "limits.note", "name"]
        );
        assert_eq!(
            nul_paths(&json!([{"content": "\u{0}"}]), "messages"),
            ["messages[0].content"]
        );
        assert!(nul_paths(&json!({"text": "no nul here", "list": [1, null]}), "").is_empty());
    }
}
