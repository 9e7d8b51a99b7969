//! Whole numbers as JSON Schema defines them: `1.0` is an integer, so a field documented as
//! `integer` accepts it. serde reads `1.0` into a `u64` only through this.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// 2^64, the first value a `u64` cannot hold.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

/// The whole number `n` holds, if it is one from 0 to 2^64 − 1.
#[must_use]
pub fn whole(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..U64_END).contains(f))
            .map(|f| {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "checked above: whole, non-negative and below 2^64"
                )]
                let n = f as u64;
                n
            })
    })
}

/// `deserialize_with` for an optional whole number (`null` or absent: `None`; pair it with
/// `#[serde(default)]`).
///
/// # Errors
/// A number with a fraction, a negative one, one of 2^64 or more, or a value that is not a
/// number.
pub fn opt_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Number>::deserialize(deserializer)?
        .map(|n| {
            whole(&n).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid value: {n}, expected a whole number from 0 to 18446744073709551615"
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "opt_u64")]
        n: Option<u64>,
    }

    fn read(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_whole_numbers_and_fractions_are_not() {
        assert_eq!(read(r#"{}"#), Ok(None));
        assert_eq!(read(r#"{"n": null}"#), Ok(None));
        assert_eq!(read(r#"{"n": 7}"#), Ok(Some(7)));
        assert_eq!(read(r#"{"n": 1.0}"#), Ok(Some(1)));
        assert_eq!(read(r#"{"n": 274877906945.0}"#), Ok(Some(274_877_906_945)));
        assert_eq!(read(r#"{"n": 18446744073709551615}"#), Ok(Some(u64::MAX)));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "1"}"#,
        ] {
            let err = read(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
