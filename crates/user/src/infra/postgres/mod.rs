//! PostgreSQL adapters of the identity ports, over the tables of migration
//! `m20261123_000002_user_identity`. Queries are plain SQL run through sea-orm's raw
//! statements: the atomic and bulk statements these ports need (`UPDATE … RETURNING`, `VALUES`
//! lists, upserts) read more clearly as SQL than through the query builder.

mod api_keys;
mod limits;
mod sessions;
mod users;

use anyhow::anyhow;
use sea_orm::{DbBackend, Statement, Value};

pub use self::api_keys::PgApiKeyRepository;
pub use self::limits::{PgQuotaPolicyRepository, PgUsageLedger};
pub use self::sessions::PgRefreshTokenRepository;
pub use self::users::{PgAccountChanges, PgUserRepository};
use crate::domain::api_key::SecretDigest;

/// PostgreSQL accepts at most this many bind parameters in one statement.
const MAX_BIND_PARAMS: usize = 65_535;

/// A PostgreSQL statement with positional (`$n`) parameters.
fn statement(sql: impl Into<String>, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Placeholders of a multi-row `VALUES` list: `rows` rows of `casts.len()` parameters each,
/// numbered from `$1`, each cast to its column type (`""`: no cast).
fn values_placeholders(rows: usize, casts: &[&str]) -> String {
    let width = casts.len();
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = casts
                .iter()
                .enumerate()
                .map(|(col, cast)| {
                    let n = row * width + col + 1;
                    if cast.is_empty() {
                        format!("${n}")
                    } else {
                        format!("${n}::{cast}")
                    }
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many rows of `width` parameters fit in one statement.
const fn rows_per_statement(width: usize) -> usize {
    MAX_BIND_PARAMS / width
}

/// A domain count or limit as a `bigint`; values beyond `i64::MAX` (never produced by validated
/// input) saturate.
fn to_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An optional domain count or limit as a nullable `bigint`.
fn to_bigint_opt(value: Option<u64>) -> Option<i64> {
    value.map(to_bigint)
}

/// A stored `bigint` that must not be negative.
fn from_bigint(value: i64, what: &str) -> anyhow::Result<u64> {
    u64::try_from(value).map_err(|_| anyhow!("stored {what} is negative ({value})"))
}

/// A stored nullable `bigint` that must not be negative.
fn from_bigint_opt(value: Option<i64>, what: &str) -> anyhow::Result<Option<u64>> {
    value.map(|v| from_bigint(v, what)).transpose()
}

/// The `bytea` a digest is stored as.
fn digest_value(digest: SecretDigest) -> Value {
    Value::from(digest.0.to_vec())
}

/// A stored digest: exactly 32 bytes.
fn digest_from_bytes(bytes: &[u8]) -> anyhow::Result<SecretDigest> {
    <[u8; 32]>::try_from(bytes)
        .map(SecretDigest)
        .map_err(|_| anyhow!("stored digest has {} bytes instead of 32", bytes.len()))
}

/// A cursor that decoded but names no id of this list (a client-supplied token).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_number_parameters_row_by_row() {
        assert_eq!(
            values_placeholders(2, &["uuid", ""]),
            "($1::uuid, $2), ($3::uuid, $4)"
        );
        assert_eq!(values_placeholders(0, &["uuid"]), "");
    }

    #[test]
    fn out_of_range_numbers_saturate_or_fail() {
        assert_eq!(to_bigint(u64::MAX), i64::MAX);
        assert_eq!(to_bigint(7), 7);
        assert!(from_bigint(-1, "limit").is_err());
        assert!(digest_from_bytes(&[0; 31]).is_err());
        assert_eq!(
            digest_from_bytes(&[1; 32]).ok(),
            Some(SecretDigest([1; 32]))
        );
    }
}
