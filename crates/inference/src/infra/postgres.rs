//! PostgreSQL adapters: providers with their routes, usage rows (written by the worker from the
//! settlement stream) and usage reports.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::tasks::Tasks;
use maas_user::contract::SettledRecords;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement, TransactionTrait,
    Value,
};
use uuid::Uuid;

use crate::domain::errors::InferenceError;
use crate::domain::ports::{ProviderRepository, UsageReports};
use crate::domain::provider::{BaseUrl, ModelRoute, Provider, ProviderId, ProviderName};
use crate::domain::usage::{Grouping, UsageQuery, UsageRecord, UsageRow};

/// Providers in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgProviderRepository {
    db: DatabaseConnection,
}

impl PgProviderRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct ProviderRow {
    id: Uuid,
    name: String,
    base_url: String,
    api_key_sealed: Option<Vec<u8>>,
    enabled: bool,
    created_at: DateTime<Utc>,
    models: serde_json::Value,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl ProviderRepository for PgProviderRepository {
    #[tracing::instrument(skip_all)]
    async fn insert(&self, provider: &Provider) -> Result<(), InferenceError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let inserted = txn
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO providers (id, name, base_url, api_key_sealed, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    provider.id().as_uuid().into(),
                    provider.name().as_str().into(),
                    provider.base_url().as_str().into(),
                    provider.sealed_key().map(<[u8]>::to_vec).into(),
                    provider.enabled().into(),
                    provider.created_at().into(),
                ],
            ))
            .await;
        if let Err(err) = inserted {
            if matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) {
                return Err(InferenceError::ProviderNameTaken);
            }
            return Err(anyhow::Error::new(err).context("inserting provider").into());
        }
        for (position, route) in provider.models().iter().enumerate() {
            txn.execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO provider_models (provider_id, model, upstream_model, position) VALUES ($1, $2, $3, $4)",
                [
                    provider.id().as_uuid().into(),
                    route.model.as_str().into(),
                    route.upstream_model.as_str().into(),
                    i32::try_from(position).unwrap_or(i32::MAX).into(),
                ],
            ))
            .await
            .context("inserting provider model")?;
        }
        txn.commit().await.context("committing provider")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self) -> Result<Vec<Provider>, InferenceError> {
        let rows = ProviderRow::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            "SELECT p.id, p.name, p.base_url, p.api_key_sealed, p.enabled, p.created_at, \
               COALESCE((SELECT jsonb_agg(jsonb_build_array(m.model, m.upstream_model) ORDER BY m.position) \
                         FROM provider_models m WHERE m.provider_id = p.id), '[]'::jsonb) AS models \
             FROM providers p ORDER BY p.id",
        ))
        .all(&self.db)
        .await
        .context("listing providers")?;
        rows.into_iter().map(provider_from_row).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn delete(&self, id: ProviderId) -> Result<bool, InferenceError> {
        let result = self
            .db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM providers WHERE id = $1",
                [id.as_uuid().into()],
            ))
            .await
            .context("deleting provider")?;
        Ok(result.rows_affected() > 0)
    }
}

fn provider_from_row(row: ProviderRow) -> Result<Provider, InferenceError> {
    let corrupt = |what: &str| {
        InferenceError::Unexpected(anyhow::anyhow!(
            "stored provider {} has a bad {what}",
            row.id
        ))
    };
    let pairs: Vec<(String, String)> =
        serde_json::from_value(row.models.clone()).map_err(|_| corrupt("model list"))?;
    let models = pairs
        .iter()
        .map(|(model, upstream)| {
            ModelRoute::parse(model, Some(upstream)).map_err(|_| corrupt("model"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Provider::restore(
        ProviderId::from_uuid(row.id),
        ProviderName::parse(&row.name).map_err(|_| corrupt("name"))?,
        BaseUrl::parse(&row.base_url).map_err(|_| corrupt("base URL"))?,
        row.api_key_sealed,
        models,
        row.enabled,
        row.created_at,
    ))
}

/// Keeps this and next month's partitions of the usage table created ahead of time
/// (idempotent, so every replica may run it): registered with `tasks` by the process that
/// writes usage rows, `maas-worker`.
pub fn keep_usage_partitions(db: DatabaseConnection, tasks: &Tasks) {
    tasks.spawn_loop("inference.usage_partitions", move |shutdown| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.requested() => return,
            }
            let sql = "SELECT usage_records_ensure_partition(current_date), \
                       usage_records_ensure_partition((current_date + interval '1 month')::date)";
            if let Err(err) = db.execute_unprepared(sql).await {
                // Another replica may have created it at the same moment; the next run checks again.
                tracing::warn!(error = %err, "could not ensure usage partitions");
            }
        }
    });
}

/// Stores the usage records that travel with settlements (the identity context's drain hands
/// them over): one statement per batch, a record already stored is skipped.
#[derive(Clone, Debug)]
pub struct PgUsageRecords {
    db: DatabaseConnection,
}

impl PgUsageRecords {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SettledRecords for PgUsageRecords {
    #[tracing::instrument(name = "usage.store", skip_all, fields(records = records.len()))]
    async fn store(&self, records: &[Vec<u8>]) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(records.len());
        for bytes in records {
            match UsageRecord::decode(bytes) {
                Ok(record) => batch.push(record),
                // Written by this platform, so never expected; kept in the log rather than
                // retried forever.
                Err(why) => tracing::error!(
                    why,
                    bytes = bytes.len(),
                    "skipping an unreadable usage record"
                ),
            }
        }
        write(&self.db, &batch).await
    }
}

/// One usage row as the writer ships it: the whole batch travels as one JSON parameter.
#[derive(serde::Serialize)]
struct UsageInsert<'a> {
    id: Uuid,
    user_id: Uuid,
    key_id: Option<Uuid>,
    model: &'a str,
    upstream: &'a str,
    endpoint: &'a str,
    prompt_tokens: i64,
    completion_tokens: i64,
    estimated: bool,
    status: i32,
    stream: bool,
    ttft_ms: Option<i64>,
    latency_ms: i64,
    at: DateTime<Utc>,
}

/// One statement per batch whatever its size: the SQL text never changes (prepared once per
/// connection), and neither side builds or parses thousands of bind parameters.
const INSERT_USAGE: &str = "INSERT INTO usage_records (id, user_id, key_id, model, upstream, endpoint, \
     prompt_tokens, completion_tokens, estimated, status, stream, ttft_ms, latency_ms, at) \
     SELECT id, user_id, key_id, model, upstream, endpoint, prompt_tokens, completion_tokens, \
     estimated, status, stream, ttft_ms, latency_ms, at \
     FROM json_to_recordset($1::json) AS r(id uuid, user_id uuid, key_id uuid, model text, \
     upstream text, endpoint text, prompt_tokens bigint, completion_tokens bigint, estimated boolean, \
     status integer, stream boolean, ttft_ms bigint, latency_ms bigint, at timestamptz) \
     ON CONFLICT (id, at) DO NOTHING";

async fn write(db: &DatabaseConnection, batch: &[UsageRecord]) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let rows: Vec<UsageInsert<'_>> = batch
        .iter()
        .map(|r| UsageInsert {
            id: r.id,
            user_id: r.user_id.as_uuid(),
            key_id: r.key_id.map(|k| k.as_uuid()),
            model: &r.model,
            upstream: &r.upstream,
            endpoint: r.endpoint,
            prompt_tokens: to_i64(r.usage.prompt),
            completion_tokens: to_i64(r.usage.completion),
            estimated: r.estimated,
            status: i32::from(r.status),
            stream: r.stream,
            ttft_ms: r.ttft_ms.map(to_i64),
            latency_ms: to_i64(r.latency_ms),
            at: r.at,
        })
        .collect();
    let json = serde_json::to_string(&rows).context("encoding usage records")?;
    db.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT_USAGE,
        [Value::from(json)],
    ))
    .await
    .context("inserting usage records")?;
    Ok(())
}

/// Usage reports from PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgUsageReports {
    db: DatabaseConnection,
}

impl PgUsageReports {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct ReportRow {
    grp: String,
    requests: i64,
    prompt: i64,
    completion: i64,
    estimated: i64,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl UsageReports for PgUsageReports {
    #[tracing::instrument(skip_all)]
    async fn report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, InferenceError> {
        let group = match query.group_by {
            Grouping::Day => "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            Grouping::Model => "model",
            Grouping::Key => "COALESCE(key_id::text, '')",
        };
        let mut values: Vec<Value> = vec![query.from.into(), query.to.into()];
        let user_filter = match query.user_id {
            Some(user) => {
                values.push(user.as_uuid().into());
                " AND user_id = $3"
            }
            None => "",
        };
        let sql = format!(
            "SELECT {group} AS grp, COUNT(*)::bigint AS requests, COALESCE(SUM(prompt_tokens), 0)::bigint AS prompt, \
             COALESCE(SUM(completion_tokens), 0)::bigint AS completion, COUNT(*) FILTER (WHERE estimated)::bigint AS estimated \
             FROM usage_records WHERE at >= $1 AND at < $2{user_filter} GROUP BY grp ORDER BY grp"
        );
        let rows = ReportRow::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .all(&self.db)
        .await
        .context("aggregating usage")?;
        Ok(rows
            .into_iter()
            .map(|r| UsageRow {
                group: r.grp,
                requests: to_u64(r.requests),
                prompt_tokens: to_u64(r.prompt),
                completion_tokens: to_u64(r.completion),
                estimated_requests: to_u64(r.estimated),
            })
            .collect())
    }
}
