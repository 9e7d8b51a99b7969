//! Small validated values shared by the registry and the servers.

use super::errors::InvalidValue;

/// Free text shown to people: trimmed, `min..=max` characters, no control characters.
///
/// # Errors
/// [`InvalidValue`] naming `field` with `message`.
pub fn text(
    raw: &str,
    min: usize,
    max: usize,
    field: &'static str,
    message: &'static str,
) -> Result<String, InvalidValue> {
    let value = raw.trim();
    let count = value.chars().count();
    if (min..=max).contains(&count) && !value.chars().any(char::is_control) {
        Ok(value.to_owned())
    } else {
        Err(InvalidValue::new(field, message))
    }
}

/// An identifier-like token: `1..=max` characters of ASCII letters, digits and `extra`.
///
/// # Errors
/// [`InvalidValue`] naming `field` with `message`.
pub fn token(
    raw: &str,
    max: usize,
    extra: &[u8],
    field: &'static str,
    message: &'static str,
) -> Result<String, InvalidValue> {
    let value = raw.trim();
    if (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        Ok(value.to_owned())
    } else {
        Err(InvalidValue::new(field, message))
    }
}

/// A finite figure in `(0, max]`, when given.
///
/// # Errors
/// [`InvalidValue`] naming `field` with `message`.
pub fn positive(
    raw: Option<f64>,
    max: f64,
    field: &'static str,
    message: &'static str,
) -> Result<Option<f64>, InvalidValue> {
    match raw {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 && v <= max => Ok(Some(v)),
        Some(_) => Err(InvalidValue::new(field, message)),
    }
}

/// Collects `result`'s error into `errors`, keeping its value.
pub fn collect<T>(result: Result<T, InvalidValue>, errors: &mut Vec<InvalidValue>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}
