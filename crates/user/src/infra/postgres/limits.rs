//! [`PgQuotaPolicyRepository`] (table `quota_policies`) and [`PgUsageLedger`] (table
//! `usage_ledger`).

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Value};
use uuid::Uuid;

use super::{from_bigint, from_bigint_opt, statement, to_bigint, to_bigint_opt};
use crate::domain::errors::IdentityError;
use crate::domain::limits::{QuotaPolicy, Subject};
use crate::domain::ports::{LedgerEntry, QuotaPolicyRepository, UsageLedger};

/// `subject_type` and `subject_id` of a subject.
fn subject_values(subject: Subject) -> [Value; 2] {
    match subject {
        Subject::User(id) => [Value::from("user"), Value::from(id.as_uuid())],
        Subject::Key(id) => [Value::from("key"), Value::from(id.as_uuid())],
    }
}

/// Stores the quota policies of users and keys in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgQuotaPolicyRepository {
    db: DatabaseConnection,
}

impl PgQuotaPolicyRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct PolicyRow {
    requests_per_minute: Option<i64>,
    tokens_per_minute: Option<i64>,
    requests_per_hour: Option<i64>,
    requests_per_day: Option<i64>,
    tokens_per_day_quota: Option<i64>,
    tokens_per_month_quota: Option<i64>,
    tokens_total_quota: Option<i64>,
    requests_per_month_quota: Option<i64>,
    requests_total_quota: Option<i64>,
}

impl PolicyRow {
    fn into_policy(self) -> anyhow::Result<QuotaPolicy> {
        Ok(QuotaPolicy {
            requests_per_minute: from_bigint_opt(self.requests_per_minute, "requests_per_minute")?,
            tokens_per_minute: from_bigint_opt(self.tokens_per_minute, "tokens_per_minute")?,
            requests_per_hour: from_bigint_opt(self.requests_per_hour, "requests_per_hour")?,
            requests_per_day: from_bigint_opt(self.requests_per_day, "requests_per_day")?,
            tokens_per_day_quota: from_bigint_opt(
                self.tokens_per_day_quota,
                "tokens_per_day_quota",
            )?,
            tokens_per_month_quota: from_bigint_opt(
                self.tokens_per_month_quota,
                "tokens_per_month_quota",
            )?,
            tokens_total_quota: from_bigint_opt(self.tokens_total_quota, "tokens_total_quota")?,
            requests_per_month_quota: from_bigint_opt(
                self.requests_per_month_quota,
                "requests_per_month_quota",
            )?,
            requests_total_quota: from_bigint_opt(
                self.requests_total_quota,
                "requests_total_quota",
            )?,
        })
    }
}

#[async_trait]
impl QuotaPolicyRepository for PgQuotaPolicyRepository {
    #[tracing::instrument(skip_all)]
    async fn get(&self, subject: Subject) -> Result<QuotaPolicy, IdentityError> {
        let row = PolicyRow::find_by_statement(statement(
            "SELECT requests_per_minute, tokens_per_minute, requests_per_hour, requests_per_day, \
             tokens_per_day_quota, tokens_per_month_quota, tokens_total_quota, requests_per_month_quota, \
             requests_total_quota FROM quota_policies WHERE subject_type = $1 AND subject_id = $2",
            subject_values(subject),
        ))
        .one(&self.db)
        .await
        .context("reading quota policy")?;
        match row {
            Some(row) => Ok(row.into_policy()?),
            None => Ok(QuotaPolicy::default()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn put(&self, subject: Subject, policy: &QuotaPolicy) -> Result<(), IdentityError> {
        let [subject_type, subject_id] = subject_values(subject);
        let values: [Value; 11] = [
            subject_type,
            subject_id,
            to_bigint_opt(policy.requests_per_minute).into(),
            to_bigint_opt(policy.tokens_per_minute).into(),
            to_bigint_opt(policy.requests_per_hour).into(),
            to_bigint_opt(policy.requests_per_day).into(),
            to_bigint_opt(policy.tokens_per_day_quota).into(),
            to_bigint_opt(policy.tokens_per_month_quota).into(),
            to_bigint_opt(policy.tokens_total_quota).into(),
            to_bigint_opt(policy.requests_per_month_quota).into(),
            to_bigint_opt(policy.requests_total_quota).into(),
        ];
        self.db
            .execute(statement(
                "INSERT INTO quota_policies (subject_type, subject_id, requests_per_minute, tokens_per_minute, \
                 requests_per_hour, requests_per_day, tokens_per_day_quota, tokens_per_month_quota, \
                 tokens_total_quota, requests_per_month_quota, requests_total_quota, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now()) \
                 ON CONFLICT (subject_type, subject_id) DO UPDATE SET \
                 requests_per_minute = EXCLUDED.requests_per_minute, \
                 tokens_per_minute = EXCLUDED.tokens_per_minute, \
                 requests_per_hour = EXCLUDED.requests_per_hour, \
                 requests_per_day = EXCLUDED.requests_per_day, \
                 tokens_per_day_quota = EXCLUDED.tokens_per_day_quota, \
                 tokens_per_month_quota = EXCLUDED.tokens_per_month_quota, \
                 tokens_total_quota = EXCLUDED.tokens_total_quota, \
                 requests_per_month_quota = EXCLUDED.requests_per_month_quota, \
                 requests_total_quota = EXCLUDED.requests_total_quota, \
                 updated_at = EXCLUDED.updated_at",
                values,
            ))
            .await
            .context("storing quota policy")?;
        Ok(())
    }
}

/// Appends settled consumption to PostgreSQL and sums it per subject.
#[derive(Clone, Debug)]
pub struct PgUsageLedger {
    db: DatabaseConnection,
}

impl PgUsageLedger {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// A ledger entry as [`PgUsageLedger::append`] ships it.
#[derive(serde::Serialize)]
struct LedgerRow {
    request_id: Uuid,
    user_id: Uuid,
    key_id: Option<Uuid>,
    tokens: i64,
    requests: i64,
    at: DateTime<Utc>,
}

/// A redelivered entry (same `request_id`) is skipped: appending is idempotent.
const APPEND_LEDGER: &str = "INSERT INTO usage_ledger (request_id, user_id, key_id, tokens, requests, at) \
     SELECT request_id, user_id, key_id, tokens, requests, at FROM json_to_recordset($1::json) \
     AS r(request_id uuid, user_id uuid, key_id uuid, tokens bigint, requests bigint, at timestamptz) \
     ON CONFLICT (request_id) DO NOTHING";

#[derive(Debug, FromQueryResult)]
struct TotalsRow {
    tokens: i64,
    requests: i64,
}

#[async_trait]
impl UsageLedger for PgUsageLedger {
    #[tracing::instrument(skip_all, fields(entries = entries.len()))]
    async fn append(&self, entries: &[LedgerEntry]) -> Result<(), IdentityError> {
        // One statement per batch with one JSON parameter: the SQL never changes (prepared
        // once per connection) and no side handles thousands of bind parameters.
        let rows: Vec<LedgerRow> = entries
            .iter()
            .map(|e| LedgerRow {
                request_id: e.request_id,
                user_id: e.user_id.as_uuid(),
                key_id: e.key_id.map(|k| k.as_uuid()),
                tokens: to_bigint(e.tokens),
                requests: to_bigint(e.requests),
                at: e.at,
            })
            .collect();
        let json = serde_json::to_string(&rows).context("encoding usage ledger entries")?;
        self.db
            .execute(statement(APPEND_LEDGER.to_owned(), [Value::from(json)]))
            .await
            .context("appending to usage ledger")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn totals(
        &self,
        subject: Subject,
        since: DateTime<Utc>,
    ) -> Result<(u64, u64), IdentityError> {
        let (column, id): (&str, Uuid) = match subject {
            Subject::User(id) => ("user_id", id.as_uuid()),
            Subject::Key(id) => ("key_id", id.as_uuid()),
        };
        // SUM(bigint) is numeric; the cast back fails loudly rather than wrapping past i64::MAX.
        let row = TotalsRow::find_by_statement(statement(
            format!(
                "SELECT COALESCE(SUM(tokens), 0)::bigint AS tokens, COALESCE(SUM(requests), 0)::bigint AS requests \
                 FROM usage_ledger WHERE {column} = $1 AND at >= $2"
            ),
            [Value::from(id), Value::from(since)],
        ))
        .one(&self.db)
        .await
        .context("summing usage ledger")?;
        let (tokens, requests) = row.map_or((0, 0), |r| (r.tokens, r.requests));
        Ok((
            from_bigint(tokens, "token total")?,
            from_bigint(requests, "request total")?,
        ))
    }
}
