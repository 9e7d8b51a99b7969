//! [`PgApiKeyRepository`]: table `api_keys`.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Value};
use uuid::Uuid;

use super::{
    digest_from_bytes, digest_value, from_bigint_opt, rows_per_statement, statement, to_bigint_opt,
    values_placeholders,
};
use crate::domain::api_key::{
    ApiKey, ApiKeyId, KeyLimits, KeyName, KeySpec, SecretDigest, StoredApiKey,
};
use crate::domain::errors::IdentityError;
use crate::domain::ports::ApiKeyRepository;
use crate::domain::user::UserId;
use crate::domain::values::Scope;

const SELECT_KEY: &str = "SELECT id, user_id, name, prefix, key_digest, scopes, allowed_models, \
     requests_per_minute, tokens_per_minute, expires_at, last_used_at, revoked_at, created_at, \
     app_id FROM api_keys";

/// Stores API keys (their digests only) in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgApiKeyRepository {
    db: DatabaseConnection,
}

impl PgApiKeyRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    prefix: String,
    key_digest: Vec<u8>,
    scopes: serde_json::Value,
    allowed_models: serde_json::Value,
    requests_per_minute: Option<i64>,
    tokens_per_minute: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    app_id: Option<Uuid>,
}

impl KeyRow {
    /// Rebuilds the aggregate; a stored value that does not parse is corrupt data.
    fn into_key(self) -> anyhow::Result<ApiKey> {
        let id = self.id;
        let name =
            KeyName::parse(&self.name).map_err(|e| anyhow!("API key {id}: stored name: {e}"))?;
        let scope_names: Vec<String> = serde_json::from_value(self.scopes)
            .with_context(|| format!("API key {id}: stored scopes"))?;
        let scopes = scope_names
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<BTreeSet<Scope>, _>>()
            .map_err(|e| anyhow!("API key {id}: stored scope: {e}"))?;
        let allowed_models: BTreeSet<String> = serde_json::from_value(self.allowed_models)
            .with_context(|| format!("API key {id}: stored allowed models"))?;
        Ok(ApiKey::restore(StoredApiKey {
            id: ApiKeyId::from_uuid(id),
            owner: UserId::from_uuid(self.user_id),
            spec: KeySpec {
                name,
                scopes,
                allowed_models,
                limits: KeyLimits {
                    requests_per_minute: from_bigint_opt(
                        self.requests_per_minute,
                        "requests per minute",
                    )?,
                    tokens_per_minute: from_bigint_opt(
                        self.tokens_per_minute,
                        "tokens per minute",
                    )?,
                },
                expires_at: self.expires_at,
                app: self.app_id,
            },
            prefix: self.prefix,
            digest: digest_from_bytes(&self.key_digest).with_context(|| format!("API key {id}"))?,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            created_at: self.created_at,
        }))
    }
}

#[derive(Debug, FromQueryResult)]
struct DigestRow {
    key_digest: Vec<u8>,
}

#[async_trait]
impl ApiKeyRepository for PgApiKeyRepository {
    #[tracing::instrument(skip_all)]
    async fn insert(&self, key: &ApiKey) -> Result<(), IdentityError> {
        let scopes: Vec<&str> = key.scopes().iter().map(|s| s.as_str()).collect();
        let values: [Value; 14] = [
            key.id().as_uuid().into(),
            key.owner().as_uuid().into(),
            key.name().as_str().into(),
            key.prefix().into(),
            digest_value(key.digest()),
            serde_json::json!(scopes).into(),
            serde_json::json!(key.allowed_models()).into(),
            to_bigint_opt(key.limits().requests_per_minute).into(),
            to_bigint_opt(key.limits().tokens_per_minute).into(),
            key.expires_at().into(),
            key.last_used_at().into(),
            key.revoked_at().into(),
            key.created_at().into(),
            key.app().into(),
        ];
        self.db
            .execute(statement(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_digest, scopes, allowed_models, \
                 requests_per_minute, tokens_per_minute, expires_at, last_used_at, revoked_at, created_at, app_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                values,
            ))
            .await
            .context("inserting API key")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn update(&self, key: &ApiKey) -> Result<(), IdentityError> {
        let values: [Value; 6] = [
            key.id().as_uuid().into(),
            key.owner().as_uuid().into(),
            key.name().as_str().into(),
            key.prefix().into(),
            digest_value(key.digest()),
            key.revoked_at().into(),
        ];
        let updated = self
            .db
            .execute(statement(
                "UPDATE api_keys SET name = $3, prefix = $4, key_digest = $5, revoked_at = $6 \
                 WHERE id = $1 AND user_id = $2",
                values,
            ))
            .await
            .context("updating API key")?;
        if updated.rows_affected() == 0 {
            return Err(IdentityError::KeyNotFound);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn find_owned(
        &self,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<Option<ApiKey>, IdentityError> {
        let row = KeyRow::find_by_statement(statement(
            format!("{SELECT_KEY} WHERE id = $1 AND user_id = $2"),
            [Value::from(id.as_uuid()), Value::from(owner.as_uuid())],
        ))
        .one(&self.db)
        .await
        .context("finding API key")?;
        Ok(row.map(KeyRow::into_key).transpose()?)
    }

    #[tracing::instrument(skip_all)]
    async fn find_by_digest(&self, digest: SecretDigest) -> Result<Option<ApiKey>, IdentityError> {
        let row = KeyRow::find_by_statement(statement(
            format!("{SELECT_KEY} WHERE key_digest = $1"),
            [digest_value(digest)],
        ))
        .one(&self.db)
        .await
        .context("finding API key by digest")?;
        Ok(row.map(KeyRow::into_key).transpose()?)
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, owner: UserId, page: &PageRequest) -> Result<Page<ApiKey>, IdentityError> {
        let limit = i64::from(page.limit()) + 1;
        let stmt = match page.after() {
            Some(cursor) => {
                let before = cursor.id();
                statement(
                    format!(
                        "{SELECT_KEY} WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                    ),
                    [
                        Value::from(owner.as_uuid()),
                        Value::from(before),
                        Value::from(limit),
                    ],
                )
            }
            None => statement(
                format!("{SELECT_KEY} WHERE user_id = $1 ORDER BY id DESC LIMIT $2"),
                [Value::from(owner.as_uuid()), Value::from(limit)],
            ),
        };
        let rows = KeyRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .context("listing API keys")?;
        let page = Page::from_overfetch(rows, page, |row| row.id);
        let keys = page
            .items
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Page {
            items: keys,
            next: page.next,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_app(&self, owner: UserId, app: Uuid) -> Result<Vec<ApiKey>, IdentityError> {
        let rows = KeyRow::find_by_statement(statement(
            format!("{SELECT_KEY} WHERE user_id = $1 AND app_id = $2 ORDER BY id DESC LIMIT 1000"),
            [Value::from(owner.as_uuid()), Value::from(app)],
        ))
        .all(&self.db)
        .await
        .context("listing app keys")?;
        Ok(rows
            .into_iter()
            .map(KeyRow::into_key)
            .collect::<anyhow::Result<Vec<_>>>()?)
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_all(
        &self,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SecretDigest>, IdentityError> {
        let rows = DigestRow::find_by_statement(statement(
            "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL RETURNING key_digest",
            [Value::from(owner.as_uuid()), Value::from(now)],
        ))
        .all(&self.db)
        .await
        .context("revoking API keys of user")?;
        let digests = rows
            .iter()
            .map(|r| digest_from_bytes(&r.key_digest))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(digests)
    }

    #[tracing::instrument(skip_all, fields(keys = uses.len()))]
    async fn touch(&self, uses: &[(ApiKeyId, DateTime<Utc>)]) -> Result<(), IdentityError> {
        // One row per key: `UPDATE … FROM` applies only one of several matching source rows.
        let mut latest: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(uses.len());
        for (id, at) in uses {
            let entry = latest.entry(id.as_uuid()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        let latest: Vec<(Uuid, DateTime<Utc>)> = latest.into_iter().collect();
        // A single statement unless the batch exceeds PostgreSQL's bind-parameter limit.
        for chunk in latest.chunks(rows_per_statement(2)) {
            let sql = format!(
                "UPDATE api_keys AS k SET last_used_at = v.at FROM (VALUES {}) AS v (id, at) \
                 WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
                values_placeholders(chunk.len(), &["uuid", "timestamptz"])
            );
            let values = chunk
                .iter()
                .flat_map(|(id, at)| [Value::from(*id), Value::from(*at)]);
            self.db
                .execute(statement(sql, values))
                .await
                .context("recording API key use")?;
        }
        Ok(())
    }
}
