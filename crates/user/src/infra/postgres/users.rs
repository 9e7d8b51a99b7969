//! [`PgUserRepository`]: tables `users` and `user_roles`.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, FromQueryResult, SqlErr,
    TransactionTrait, Value,
};
use uuid::Uuid;

use super::{statement, values_placeholders};
use crate::domain::api_key::SecretDigest;
use crate::domain::errors::IdentityError;
use crate::domain::ports::{AccountChange, AccountChanges, UserRepository};
use crate::domain::user::{User, UserId, UserRecord, UserStatus};
use crate::domain::values::{Email, PasswordHash, Role, Username};

/// Columns of a user, its roles aggregated as a JSON array (one round trip per lookup).
const SELECT_USER: &str = "SELECT u.id, u.username, u.email, u.password_hash, u.status, \
     u.created_at, u.updated_at, u.last_login_at, \
     COALESCE((SELECT jsonb_agg(r.role ORDER BY r.role) FROM user_roles r WHERE r.user_id = u.id), \
     '[]'::jsonb) AS roles \
     FROM users u";

/// Stores users and their roles in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgUserRepository {
    db: DatabaseConnection,
}

impl PgUserRepository {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct UserRow {
    id: Uuid,
    username: String,
    email: Option<String>,
    password_hash: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
    roles: serde_json::Value,
}

impl UserRow {
    /// Rebuilds the aggregate; a stored value that does not parse is corrupt data.
    fn into_user(self) -> anyhow::Result<User> {
        let id = self.id;
        let username = Username::parse(&self.username)
            .map_err(|e| anyhow!("user {id}: stored username: {e}"))?;
        let email = self
            .email
            .as_deref()
            .map(Email::parse)
            .transpose()
            .map_err(|e| anyhow!("user {id}: stored e-mail: {e}"))?;
        let status =
            UserStatus::parse(&self.status).with_context(|| format!("user {id}: stored status"))?;
        let names: Vec<String> = serde_json::from_value(self.roles)
            .with_context(|| format!("user {id}: stored roles"))?;
        let roles = names
            .iter()
            .map(|name| Role::parse(name))
            .collect::<Result<BTreeSet<Role>, _>>()
            .map_err(|e| anyhow!("user {id}: stored role: {e}"))?;
        Ok(User::from_record(UserRecord {
            id: UserId::from_uuid(id),
            username,
            email,
            password_hash: PasswordHash::from_phc(self.password_hash),
            roles,
            status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_login_at: self.last_login_at,
        }))
    }
}

/// A failed write of the `users` row: unique violations are duplicates the caller can fix.
fn write_error(err: DbErr, what: &'static str) -> IdentityError {
    if let Some(SqlErr::UniqueConstraintViolation(message)) = err.sql_err() {
        if message.contains("email") {
            return IdentityError::EmailTaken;
        }
        if message.contains("username") {
            return IdentityError::UsernameTaken;
        }
    }
    IdentityError::Unexpected(anyhow::Error::new(err).context(what))
}

/// The user's fields, in the order of the `INSERT` parameters `$1..$8`.
fn insert_values(user: &User) -> [Value; 8] {
    [
        user.id().as_uuid().into(),
        user.username().as_str().into(),
        user.email().map(|e| e.as_str().to_owned()).into(),
        user.password_hash().as_str().into(),
        user.status().as_str().into(),
        user.created_at().into(),
        user.updated_at().into(),
        user.last_login_at().into(),
    ]
}

/// Writes the roles of a user whose `user_roles` rows are absent (new, or just cleared).
async fn insert_roles(txn: &DatabaseTransaction, user: &User) -> Result<(), IdentityError> {
    let roles = user.roles();
    if roles.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO user_roles (user_id, role) VALUES {}",
        values_placeholders(roles.len(), &["uuid", "text"])
    );
    let id = user.id().as_uuid();
    let values = roles
        .iter()
        .flat_map(|role| [Value::from(id), Value::from(role.as_str())]);
    txn.execute(statement(sql, values))
        .await
        .context("inserting user roles")?;
    Ok(())
}

/// Writes every field (but `created_at`, which never changes) and the roles of an existing user.
async fn write_user(txn: &DatabaseTransaction, user: &User) -> Result<(), IdentityError> {
    let [
        id,
        username,
        email,
        hash,
        status,
        _created_at,
        updated_at,
        last_login_at,
    ] = insert_values(user);
    let values: [Value; 7] = [id, username, email, hash, status, updated_at, last_login_at];
    let updated = txn
        .execute(statement(
            "UPDATE users SET username = $2, email = $3, password_hash = $4, status = $5, \
             updated_at = $6, last_login_at = $7 WHERE id = $1",
            values,
        ))
        .await
        .map_err(|e| write_error(e, "updating user"))?;
    if updated.rows_affected() == 0 {
        return Err(IdentityError::UserNotFound);
    }
    txn.execute(statement(
        "DELETE FROM user_roles WHERE user_id = $1",
        [Value::from(user.id().as_uuid())],
    ))
    .await
    .context("clearing user roles")?;
    insert_roles(txn, user).await
}

/// The advisory lock every change that may remove an admin takes (for its transaction only):
/// such changes run one at a time, so each one's check sees every change committed before it.
const ADMIN_CHANGE_LOCK: i64 = 0x6d61_6173_6164_6d69;

/// [`AccountChanges`] in PostgreSQL: one transaction per change.
#[derive(Clone, Debug)]
pub struct PgAccountChanges {
    db: DatabaseConnection,
}

impl PgAccountChanges {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct DigestRow {
    key_digest: Vec<u8>,
}

#[derive(Debug, FromQueryResult)]
struct ExistsRow {
    found: bool,
}

#[async_trait]
impl AccountChanges for PgAccountChanges {
    #[tracing::instrument(skip_all, fields(user.id = %change.user.id(), action = %change.audit.action))]
    async fn apply(&self, change: AccountChange) -> Result<Vec<SecretDigest>, IdentityError> {
        let id = Value::from(change.user.id().as_uuid());
        let txn = self
            .db
            .begin()
            .await
            .context("starting an account change")?;
        if change.keep_an_admin {
            txn.execute(statement(
                "SELECT pg_advisory_xact_lock($1)",
                [Value::from(ADMIN_CHANGE_LOCK)],
            ))
            .await
            .context("waiting for other admin changes")?;
        }
        write_user(&txn, &change.user).await?;
        if change.keep_an_admin {
            // The condition, after the write and under the lock: an active admin remains.
            let remains = ExistsRow::find_by_statement(statement(
                "SELECT EXISTS (SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id \
                 WHERE u.status = 'active' AND r.role = 'admin') AS found",
                [],
            ))
            .one(&txn)
            .await
            .context("checking that an admin remains")?
            .is_some_and(|r| r.found);
            if !remains {
                txn.rollback().await.context("undoing an account change")?;
                return Err(IdentityError::LastAdmin);
            }
        }
        if change.end_sessions {
            txn.execute(statement(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                [id.clone(), Value::from(change.at)],
            ))
            .await
            .context("ending the account's sessions")?;
        }
        let revoked = if change.revoke_keys {
            DigestRow::find_by_statement(statement(
                "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL \
                 RETURNING key_digest",
                [id, Value::from(change.at)],
            ))
            .all(&txn)
            .await
            .context("revoking the account's keys")?
            .iter()
            .map(|r| super::digest_from_bytes(&r.key_digest))
            .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        maas_shared::audit_pg::insert(&txn, change.audit, change.at).await?;
        txn.commit().await.context("committing an account change")?;
        Ok(revoked)
    }
}

#[async_trait]
impl UserRepository for PgUserRepository {
    #[tracing::instrument(skip_all)]
    async fn insert(&self, user: &User) -> Result<(), IdentityError> {
        let txn = self.db.begin().await.context("starting user insert")?;
        txn.execute(statement(
            "INSERT INTO users (id, username, email, password_hash, status, created_at, updated_at, \
             last_login_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            insert_values(user),
        ))
        .await
        .map_err(|e| write_error(e, "inserting user"))?;
        insert_roles(&txn, user).await?;
        txn.commit().await.context("committing user insert")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn update(&self, user: &User) -> Result<(), IdentityError> {
        let txn = self.db.begin().await.context("starting user update")?;
        write_user(&txn, user).await?;
        txn.commit().await.context("committing user update")?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn find(&self, id: UserId) -> Result<Option<User>, IdentityError> {
        let row = UserRow::find_by_statement(statement(
            format!("{SELECT_USER} WHERE u.id = $1"),
            [Value::from(id.as_uuid())],
        ))
        .one(&self.db)
        .await
        .context("finding user")?;
        Ok(row.map(UserRow::into_user).transpose()?)
    }

    #[tracing::instrument(skip_all)]
    async fn find_by_login(&self, login: &str) -> Result<Option<User>, IdentityError> {
        // Usernames cannot contain '@' and e-mails must, so at most one user matches.
        let row = UserRow::find_by_statement(statement(
            format!(
                "{SELECT_USER} WHERE u.status <> 'deleted' \
                 AND (lower(u.username) = lower($1) OR lower(u.email) = lower($1)) LIMIT 1"
            ),
            [Value::from(login.trim())],
        ))
        .one(&self.db)
        .await
        .context("finding user by login")?;
        Ok(row.map(UserRow::into_user).transpose()?)
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, page: &PageRequest) -> Result<Page<User>, IdentityError> {
        let limit = i64::from(page.limit()) + 1;
        let stmt = match page.after() {
            Some(cursor) => {
                let after = cursor.id();
                statement(
                    format!(
                        "{SELECT_USER} WHERE u.status <> 'deleted' AND u.id > $1 ORDER BY u.id LIMIT $2"
                    ),
                    [Value::from(after), Value::from(limit)],
                )
            }
            None => statement(
                format!("{SELECT_USER} WHERE u.status <> 'deleted' ORDER BY u.id LIMIT $1"),
                [Value::from(limit)],
            ),
        };
        let rows = UserRow::find_by_statement(stmt)
            .all(&self.db)
            .await
            .context("listing users")?;
        let page = Page::from_overfetch(rows, page, |row| row.id);
        let users = page
            .items
            .into_iter()
            .map(UserRow::into_user)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Page {
            items: users,
            next: page.next,
        })
    }
}
