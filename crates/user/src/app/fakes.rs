//! In-memory fakes of the identity ports, for use-case tests without PostgreSQL or Redis.
//!
//! Each fake honours the contract of its port as the real adapter does (unique usernames and
//! e-mails, single-use refresh tokens, atomic check-and-charge of limit rules, idempotent
//! settle/release) and lets tests look at what it holds through [`Handles`].

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use maas_shared::audit::{
    AuditError, AuditEvent, AuditEventId, AuditFilter, AuditLog, NewAuditEvent,
};
use maas_shared::clock::{Clock, ManualClock};
use maas_shared::paging::{Page, PageRequest};
use uuid::Uuid;

use super::{IdentityConfig, IdentityDeps};
use crate::domain::api_key::{ApiKey, ApiKeyId, MintedSecret, SecretDigest};
use crate::domain::errors::{IdentityError, LimitState};
use crate::domain::limits::{Demand, LimitDefaults, LimitRule, Metric, QuotaPolicy, Subject};
use crate::domain::ports::{
    AccountChange, AccountChanges, ApiKeyRepository, CachedAuth, Ended, InvalidationBus,
    KeyUseRecorder, LedgerEntry, LimitStore, PasswordHasher, PrincipalCache, PrincipalKey,
    QuotaPolicyRepository, RefreshTokenRepository, Reservation, Secrets, TokenCodec, UsageLedger,
    UserRepository,
};
use crate::domain::principal::Principal;
use crate::domain::session::{AccessClaims, Consumed, IssuedToken, RefreshToken, TokenRejection};
use crate::domain::user::{User, UserId, UserStatus};
use crate::domain::values::{Password, PasswordHash};

/// Lifetime of the fake access tokens.
pub(crate) const ACCESS_TTL_SECS: i64 = 15 * 60;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The instant every fake clock starts at: 2026-03-10 12:00:00 UTC (a whole second, half a day
/// before the daily window resets).
pub(crate) fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Users

/// Users in memory; usernames and e-mails are unique case-insensitively over every row (deleted
/// ones included), like the `lower(...)` unique indexes of the real table.
#[derive(Default)]
pub(crate) struct FakeUsers {
    rows: Mutex<Vec<User>>,
}

impl FakeUsers {
    /// How many active admins are stored right now.
    pub(crate) fn active_admins(&self) -> usize {
        lock(&self.rows)
            .iter()
            .filter(|u| u.is_active_admin())
            .count()
    }
}

fn check_unique(rows: &[User], user: &User) -> Result<(), IdentityError> {
    for other in rows.iter().filter(|other| other.id() != user.id()) {
        if other
            .username()
            .as_str()
            .eq_ignore_ascii_case(user.username().as_str())
        {
            return Err(IdentityError::UsernameTaken);
        }
        if let (Some(theirs), Some(ours)) = (other.email(), user.email())
            && theirs.as_str().eq_ignore_ascii_case(ours.as_str())
        {
            return Err(IdentityError::EmailTaken);
        }
    }
    Ok(())
}

#[async_trait]
impl UserRepository for FakeUsers {
    async fn insert(&self, user: &User) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        if rows.iter().any(|u| u.id() == user.id()) {
            return Err(IdentityError::Unexpected(anyhow::anyhow!(
                "duplicate user id {}",
                user.id()
            )));
        }
        check_unique(&rows, user)?;
        rows.push(user.clone());
        Ok(())
    }

    async fn update(&self, user: &User) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        check_unique(&rows, user)?;
        let row = rows
            .iter_mut()
            .find(|u| u.id() == user.id())
            .ok_or(IdentityError::UserNotFound)?;
        *row = user.clone();
        Ok(())
    }

    async fn find(&self, id: UserId) -> Result<Option<User>, IdentityError> {
        Ok(lock(&self.rows).iter().find(|u| u.id() == id).cloned())
    }

    async fn find_by_login(&self, login: &str) -> Result<Option<User>, IdentityError> {
        let login = login.trim();
        Ok(lock(&self.rows)
            .iter()
            .filter(|u| u.status() != UserStatus::Deleted)
            .find(|u| {
                u.username().as_str().eq_ignore_ascii_case(login)
                    || u.email()
                        .is_some_and(|e| e.as_str().eq_ignore_ascii_case(login))
            })
            .cloned())
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<User>, IdentityError> {
        let after = page.after().map(|c| UserId::from_uuid(c.id()));
        let mut rows: Vec<User> = lock(&self.rows)
            .iter()
            .filter(|u| u.status() != UserStatus::Deleted)
            .filter(|u| after.is_none_or(|after| u.id() > after))
            .cloned()
            .collect();
        rows.sort_by_key(User::id);
        rows.truncate(page.limit() as usize + 1);
        Ok(Page::from_overfetch(rows, page, |u| u.id().as_uuid()))
    }
}

/// Account changes over the fakes: the user's write and the last-admin check are one step under
/// the users' lock (as one transaction is in PostgreSQL); sessions, keys and the audit event
/// follow. It yields before writing, so concurrent use cases interleave after their reads.
pub(crate) struct FakeAccountChanges {
    users: Arc<FakeUsers>,
    tokens: Arc<FakeRefreshTokens>,
    keys: Arc<FakeApiKeys>,
    audit: Arc<FakeAudit>,
}

#[async_trait]
impl AccountChanges for FakeAccountChanges {
    async fn apply(&self, change: AccountChange) -> Result<Vec<SecretDigest>, IdentityError> {
        tokio::task::yield_now().await;
        let id = change.user.id();
        {
            let mut rows = lock(&self.users.rows);
            check_unique(&rows, &change.user)?;
            let index = rows
                .iter()
                .position(|u| u.id() == id)
                .ok_or(IdentityError::UserNotFound)?;
            let before = std::mem::replace(&mut rows[index], change.user.clone());
            if change.keep_an_admin && !rows.iter().any(User::is_active_admin) {
                rows[index] = before;
                return Err(IdentityError::LastAdmin);
            }
        }
        if change.end_sessions {
            self.tokens.revoke_user(id, change.at).await?;
        }
        let revoked = if change.revoke_keys {
            self.keys.revoke_all(id, change.at).await?
        } else {
            Vec::new()
        };
        self.audit
            .record(change.audit)
            .await
            .map_err(|e| IdentityError::Unexpected(e.0))?;
        Ok(revoked)
    }
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

struct TokenRow {
    token: RefreshToken,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Refresh tokens in memory, spent and revoked like the rows of `refresh_tokens`.
#[derive(Default)]
pub(crate) struct FakeRefreshTokens {
    rows: Mutex<Vec<TokenRow>>,
}

impl FakeRefreshTokens {
    /// How many tokens of `family` are revoked.
    pub(crate) fn revoked_in_family(&self, family: Uuid) -> usize {
        lock(&self.rows)
            .iter()
            .filter(|r| r.token.family_id == family && r.revoked_at.is_some())
            .count()
    }

    /// How many tokens of `family` exist.
    pub(crate) fn in_family(&self, family: Uuid) -> usize {
        lock(&self.rows)
            .iter()
            .filter(|r| r.token.family_id == family)
            .count()
    }
}

#[async_trait]
impl RefreshTokenRepository for FakeRefreshTokens {
    async fn insert(&self, token: &RefreshToken) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        if rows.iter().any(|r| r.token.digest == token.digest) {
            return Err(IdentityError::Unexpected(anyhow::anyhow!(
                "duplicate refresh token digest"
            )));
        }
        rows.push(TokenRow {
            token: token.clone(),
            used_at: None,
            revoked_at: None,
        });
        Ok(())
    }

    async fn consume(
        &self,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Consumed, IdentityError> {
        let mut rows = lock(&self.rows);
        let Some(row) = rows.iter_mut().find(|r| r.token.digest == digest) else {
            return Ok(Consumed::Rejected);
        };
        if row.used_at.is_none() && row.revoked_at.is_none() && row.token.expires_at > now {
            row.used_at = Some(now);
            return Ok(Consumed::Fresh(row.token.clone()));
        }
        // A spent token presented again is reuse even if its family was revoked since.
        Ok(if row.used_at.is_some() {
            Consumed::Reused {
                user_id: row.token.user_id,
                family_id: row.token.family_id,
            }
        } else {
            Consumed::Rejected
        })
    }

    async fn revoke_family(
        &self,
        family_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        for row in lock(&self.rows)
            .iter_mut()
            .filter(|r| r.token.family_id == family_id && r.revoked_at.is_none())
        {
            row.revoked_at = Some(now);
        }
        Ok(())
    }

    async fn revoke_user(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), IdentityError> {
        for row in lock(&self.rows)
            .iter_mut()
            .filter(|r| r.token.user_id == user_id && r.revoked_at.is_none())
        {
            row.revoked_at = Some(now);
        }
        Ok(())
    }

    async fn family_live(
        &self,
        family_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, IdentityError> {
        Ok(lock(&self.rows).iter().any(|r| {
            r.token.family_id == family_id && r.revoked_at.is_none() && r.token.expires_at > now
        }))
    }

    async fn family_of(
        &self,
        digest: SecretDigest,
    ) -> Result<Option<(UserId, Uuid)>, IdentityError> {
        Ok(lock(&self.rows)
            .iter()
            .find(|r| r.token.digest == digest)
            .map(|r| (r.token.user_id, r.token.family_id)))
    }
}

// ---------------------------------------------------------------------------------------------
// API keys

/// API keys in memory.
#[derive(Default)]
pub(crate) struct FakeApiKeys {
    rows: Mutex<Vec<ApiKey>>,
}

#[async_trait]
impl ApiKeyRepository for FakeApiKeys {
    async fn insert(&self, key: &ApiKey) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        if rows
            .iter()
            .any(|k| k.id() == key.id() || k.digest() == key.digest())
        {
            return Err(IdentityError::Unexpected(anyhow::anyhow!(
                "duplicate API key"
            )));
        }
        rows.push(key.clone());
        Ok(())
    }

    async fn update(&self, key: &ApiKey) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        let row = rows
            .iter_mut()
            .find(|k| k.id() == key.id())
            .ok_or(IdentityError::KeyNotFound)?;
        let last_used = row.last_used_at();
        *row = key.clone();
        if let Some(at) = last_used {
            row.mark_used(at);
        }
        Ok(())
    }

    async fn find_owned(
        &self,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<Option<ApiKey>, IdentityError> {
        Ok(lock(&self.rows)
            .iter()
            .find(|k| k.owner() == owner && k.id() == id)
            .cloned())
    }

    async fn find_by_digest(&self, digest: SecretDigest) -> Result<Option<ApiKey>, IdentityError> {
        Ok(lock(&self.rows)
            .iter()
            .find(|k| k.digest() == digest)
            .cloned())
    }

    async fn list(&self, owner: UserId, page: &PageRequest) -> Result<Page<ApiKey>, IdentityError> {
        let before = page.after().map(|c| ApiKeyId::from_uuid(c.id()));
        let mut rows: Vec<ApiKey> = lock(&self.rows)
            .iter()
            .filter(|k| k.owner() == owner && before.is_none_or(|before| k.id() < before))
            .cloned()
            .collect();
        rows.sort_by_key(|k| std::cmp::Reverse(k.id()));
        rows.truncate(page.limit() as usize + 1);
        Ok(Page::from_overfetch(rows, page, |k| k.id().as_uuid()))
    }

    async fn list_app(&self, owner: UserId, app: uuid::Uuid) -> Result<Vec<ApiKey>, IdentityError> {
        let mut rows: Vec<ApiKey> = lock(&self.rows)
            .iter()
            .filter(|k| k.owner() == owner && k.app() == Some(app))
            .cloned()
            .collect();
        rows.sort_by_key(|k| std::cmp::Reverse(k.id()));
        Ok(rows)
    }

    async fn revoke_all(
        &self,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SecretDigest>, IdentityError> {
        let mut stopped = Vec::new();
        for key in lock(&self.rows)
            .iter_mut()
            .filter(|k| k.owner() == owner && k.revoked_at().is_none())
        {
            key.revoke(now);
            stopped.push(key.digest());
        }
        Ok(stopped)
    }

    async fn touch(&self, uses: &[(ApiKeyId, DateTime<Utc>)]) -> Result<(), IdentityError> {
        let mut rows = lock(&self.rows);
        for (id, at) in uses {
            if let Some(key) = rows.iter_mut().find(|k| k.id() == *id) {
                key.mark_used(*at);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Quota policies and the ledger

/// Quota policies in memory (the default policy when none is stored).
#[derive(Default)]
pub(crate) struct FakePolicies {
    rows: Mutex<HashMap<Subject, QuotaPolicy>>,
}

#[async_trait]
impl QuotaPolicyRepository for FakePolicies {
    async fn get(&self, subject: Subject) -> Result<QuotaPolicy, IdentityError> {
        Ok(lock(&self.rows).get(&subject).copied().unwrap_or_default())
    }

    async fn put(&self, subject: Subject, policy: &QuotaPolicy) -> Result<(), IdentityError> {
        lock(&self.rows).insert(subject, *policy);
        Ok(())
    }
}

/// The usage ledger in memory.
#[derive(Default)]
pub(crate) struct FakeLedger {
    entries: Mutex<Vec<LedgerEntry>>,
}

impl FakeLedger {
    /// Every entry appended so far, in order.
    pub(crate) fn entries(&self) -> Vec<LedgerEntry> {
        lock(&self.entries).clone()
    }

    /// Appends one entry unless its request is stored already (as the real ledger does).
    pub(crate) fn push(&self, entry: LedgerEntry) {
        let mut entries = lock(&self.entries);
        if !entries.iter().any(|e| e.request_id == entry.request_id) {
            entries.push(entry);
        }
    }

    fn sums(&self, subject: Subject, since: DateTime<Utc>) -> (u64, u64) {
        lock(&self.entries)
            .iter()
            .filter(|e| e.at >= since)
            .filter(|e| match subject {
                Subject::User(user) => e.user_id == user,
                Subject::Key(key) => e.key_id == Some(key),
            })
            .fold((0, 0), |(tokens, requests), e| {
                (tokens + e.tokens, requests + e.requests)
            })
    }
}

#[async_trait]
impl UsageLedger for FakeLedger {
    async fn append(&self, entries: &[LedgerEntry]) -> Result<(), IdentityError> {
        for entry in entries {
            self.push(entry.clone());
        }
        Ok(())
    }

    async fn totals(
        &self,
        subject: Subject,
        since: DateTime<Utc>,
    ) -> Result<(u64, u64), IdentityError> {
        Ok(self.sums(subject, since))
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

/// One counter of the fake limit store: what settled calls consumed and what live reservations
/// hold. The real store keeps their sum in one Redis counter; admission compares that sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counter {
    /// Consumed by settled reservations.
    pub(crate) spent: u64,
    /// Held by reservations not yet settled or released.
    pub(crate) reserved: u64,
}

impl Counter {
    fn value(self) -> u64 {
        self.spent + self.reserved
    }
}

#[derive(Default)]
struct LimitsInner {
    counters: HashMap<String, Counter>,
    /// Live reservations and their deadlines.
    live: HashMap<Uuid, (Reservation, DateTime<Utc>)>,
    /// Reservations the sweeper released.
    swept: HashSet<Uuid>,
    /// Records that ended with a settlement or release, in order.
    records: Vec<Vec<u8>>,
    hits: HashMap<String, (DateTime<Utc>, u64)>,
}

/// Counters in memory, with the admission semantics of the Redis scripts: every rule is checked
/// (spent + reserved + demand, a zero-cost check needing one unit of headroom) and only if all
/// pass are they all charged; settle and release apply once per reservation; durable counters
/// missing from the store are rebuilt from the ledger. Settling appends the ledger entry at once
/// (the real store appends it to a stream the worker drains); a reservation not ended within
/// [`FakeLimits::HOLD`] is released by a sweep.
pub(crate) struct FakeLimits {
    clock: Arc<dyn Clock>,
    ledger: Arc<FakeLedger>,
    state: Mutex<LimitsInner>,
}

impl FakeLimits {
    /// The counter key of `rule` for `user` in the window containing `now` (the real store's
    /// layout, without the keyspace prefix).
    pub(crate) fn key(user: UserId, rule: &LimitRule, now: DateTime<Utc>) -> String {
        format!(
            "rl:{{{user}}}:{}:{}:{}",
            rule.name,
            rule.subject.tag(),
            rule.window.label(now)
        )
    }

    /// The counter stored under `key`, if any.
    pub(crate) fn counter(&self, key: &str) -> Option<Counter> {
        lock(&self.state).counters.get(key).copied()
    }

    /// How long a reservation is held before a sweep may release it.
    pub(crate) const HOLD: chrono::Duration = chrono::Duration::minutes(10);

    /// How many reservations are neither settled nor released.
    pub(crate) fn live_reservations(&self) -> usize {
        lock(&self.state).live.len()
    }

    /// Every record that ended with a settlement or release, in order.
    pub(crate) fn records(&self) -> Vec<Vec<u8>> {
        lock(&self.state).records.clone()
    }
}

/// Ends reservation `id`: whether it was held, swept or already gone.
fn end(state: &mut LimitsInner, id: Uuid) -> Ended {
    if state.live.remove(&id).is_some() {
        Ended::Held
    } else if state.swept.remove(&id) {
        Ended::Swept
    } else {
        Ended::Gone
    }
}

fn release_counters(state: &mut LimitsInner, reservation: &Reservation) {
    for key in &reservation.token_counters {
        if let Some(counter) = state.counters.get_mut(key) {
            counter.reserved = counter.reserved.saturating_sub(reservation.estimate);
        }
    }
    for key in &reservation.request_counters {
        if let Some(counter) = state.counters.get_mut(key) {
            counter.reserved = counter.reserved.saturating_sub(1);
        }
    }
}

fn limit_state(rule: &LimitRule, current: u64, now: DateTime<Utc>) -> LimitState {
    LimitState {
        name: rule.name.clone(),
        limit: rule.max,
        remaining: rule.max.saturating_sub(current),
        reset_after: rule
            .window
            .end(now)
            .and_then(|end| (end - now).to_std().ok()),
    }
}

fn cost(rule: &LimitRule, estimate: u64) -> u64 {
    match rule.metric {
        Metric::Requests => 1,
        Metric::Tokens => estimate,
    }
}

fn ledger_value(rule: &LimitRule, (tokens, requests): (u64, u64)) -> u64 {
    match rule.metric {
        Metric::Tokens => tokens,
        Metric::Requests => requests,
    }
}

#[async_trait]
impl LimitStore for FakeLimits {
    async fn admit(
        &self,
        principal: &Principal,
        rules: &[LimitRule],
        demand: Demand,
        now: DateTime<Utc>,
    ) -> Result<Reservation, IdentityError> {
        let user = principal.user_id();
        let active: Vec<&LimitRule> = rules
            .iter()
            .filter(|r| r.metric == Metric::Requests || demand.tokens.is_some())
            .collect();
        let estimate = demand.tokens.unwrap_or(0);
        let keys: Vec<String> = active.iter().map(|r| Self::key(user, r, now)).collect();
        let mut state = lock(&self.state);
        for (rule, key) in active.iter().zip(&keys) {
            if rule.durable && !state.counters.contains_key(key) {
                let spent =
                    ledger_value(rule, self.ledger.sums(rule.subject, rule.window.start(now)));
                state
                    .counters
                    .insert(key.clone(), Counter { spent, reserved: 0 });
            }
        }
        for (rule, key) in active.iter().zip(&keys) {
            let current = state.counters.get(key).copied().unwrap_or_default().value();
            let need = cost(rule, estimate).max(1);
            if current + need > rule.max {
                let limit = limit_state(rule, current, now);
                return Err(if rule.is_quota() {
                    IdentityError::QuotaExceeded(limit)
                } else {
                    IdentityError::RateLimited(limit)
                });
            }
        }
        let mut tightest: Option<(&LimitRule, u64)> = None;
        let (mut token_counters, mut request_counters) = (Vec::new(), Vec::new());
        for (rule, key) in active.iter().zip(&keys) {
            let counter = state.counters.entry(key.clone()).or_default();
            counter.reserved += cost(rule, estimate);
            let value = counter.value();
            let left = rule.max.saturating_sub(value);
            if tightest.is_none_or(|(_, remaining)| left < remaining) {
                tightest = Some((rule, left));
            }
            match rule.metric {
                Metric::Tokens => token_counters.push(key.clone()),
                Metric::Requests => request_counters.push(key.clone()),
            }
        }
        let id = Uuid::now_v7();
        let reservation = Reservation {
            id,
            user_id: user,
            key_id: principal.key_id(),
            estimate,
            token_counters,
            request_counters,
            tightest: tightest.map(|(rule, left)| limit_state(rule, rule.max - left, now)),
        };
        state
            .live
            .insert(id, (reservation.clone(), now + Self::HOLD));
        Ok(reservation)
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
        at: DateTime<Utc>,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError> {
        let mut state = lock(&self.state);
        let ended = end(&mut state, reservation.id);
        if ended == Ended::Gone {
            return Ok(ended);
        }
        let held = ended == Ended::Held;
        for key in &reservation.token_counters {
            if let Some(counter) = state.counters.get_mut(key) {
                if held {
                    counter.reserved = counter.reserved.saturating_sub(reservation.estimate);
                }
                counter.spent += actual_tokens;
            }
        }
        for key in &reservation.request_counters {
            if let Some(counter) = state.counters.get_mut(key) {
                if held {
                    counter.reserved = counter.reserved.saturating_sub(1);
                }
                counter.spent += 1;
            }
        }
        state.records.extend(record.map(<[u8]>::to_vec));
        drop(state);
        self.ledger.push(LedgerEntry {
            request_id: reservation.id,
            user_id: reservation.user_id,
            key_id: reservation.key_id,
            tokens: actual_tokens,
            requests: 1,
            at,
        });
        Ok(ended)
    }

    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError> {
        let mut state = lock(&self.state);
        let ended = end(&mut state, reservation.id);
        if ended == Ended::Gone {
            return Ok(ended);
        }
        if ended == Ended::Held {
            release_counters(&mut state, reservation);
        }
        state.records.extend(record.map(<[u8]>::to_vec));
        Ok(ended)
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, IdentityError> {
        let mut state = lock(&self.state);
        let due: Vec<Reservation> = state
            .live
            .values()
            .filter(|(_, deadline)| *deadline < now)
            .map(|(reservation, _)| reservation.clone())
            .collect();
        for reservation in &due {
            state.live.remove(&reservation.id);
            state.swept.insert(reservation.id);
            release_counters(&mut state, reservation);
        }
        Ok(due.len() as u64)
    }

    async fn current(
        &self,
        principal: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<u64>, IdentityError> {
        let state = lock(&self.state);
        Ok(principal
            .rules()
            .iter()
            .map(|rule| {
                let key = Self::key(principal.user_id(), rule, now);
                match state.counters.get(&key) {
                    Some(counter) => counter.value(),
                    None if rule.durable => {
                        ledger_value(rule, self.ledger.sums(rule.subject, rule.window.start(now)))
                    }
                    None => 0,
                }
            })
            .collect())
    }

    async fn hit(
        &self,
        name: &str,
        max: u64,
        window: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, IdentityError> {
        let now = self.clock.now();
        let window = Duration::from_std(window).map_err(|e| IdentityError::Unexpected(e.into()))?;
        let mut state = lock(&self.state);
        let (ends, count) = state
            .hits
            .entry(name.to_owned())
            .or_insert((now + window, 0));
        if *ends <= now {
            *ends = now + window;
            *count = 0;
        }
        *count += 1;
        if *count > max {
            let wait = (*ends - now)
                .to_std()
                .unwrap_or_default()
                .max(std::time::Duration::from_millis(1));
            return Ok(Some(wait));
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Crypto

/// Hashes by prefixing: fast, deterministic, and only matches the same password.
pub(crate) struct FakeHasher;

fn fake_hash(password: &Password) -> String {
    format!("fake${}", password.expose())
}

#[async_trait]
impl PasswordHasher for FakeHasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, IdentityError> {
        Ok(PasswordHash::from_phc(fake_hash(password)))
    }

    async fn verify(
        &self,
        password: &Password,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, IdentityError> {
        Ok(hash.is_some_and(|hash| hash.as_str() == fake_hash(password)))
    }
}

/// Access tokens `at:<user>:<session>:<exp unix seconds>`, expiring by the shared clock.
pub(crate) struct FakeTokens {
    clock: Arc<dyn Clock>,
}

impl TokenCodec for FakeTokens {
    fn issue(
        &self,
        user_id: UserId,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, IdentityError> {
        let expires_at = now + Duration::seconds(ACCESS_TTL_SECS);
        Ok(IssuedToken {
            token: format!("at:{user_id}:{session_id}:{}", expires_at.timestamp()),
            expires_at,
        })
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        let mut parts = token.split(':');
        let (Some("at"), Some(user), Some(session), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenRejection::Invalid);
        };
        let user_id = user.parse().map_err(|_| TokenRejection::Invalid)?;
        let session_id = session.parse().map_err(|_| TokenRejection::Invalid)?;
        let expires_at = exp
            .parse()
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or(TokenRejection::Invalid)?;
        if expires_at <= self.clock.now() {
            return Err(TokenRejection::Expired);
        }
        Ok(AccessClaims {
            user_id,
            session_id,
            expires_at,
        })
    }
}

/// Secrets from a counter; digests from four differently seeded SipHash runs.
#[derive(Default)]
pub(crate) struct FakeSecrets {
    next: AtomicU64,
}

impl FakeSecrets {
    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Secrets for FakeSecrets {
    fn mint_api_key(&self) -> MintedSecret {
        let n = self.next();
        let prefix = format!("sk-{n:08}");
        let plaintext = format!("{prefix}{n:032}");
        MintedSecret {
            digest: self.digest(&plaintext),
            plaintext,
            prefix,
        }
    }

    fn mint_refresh_token(&self) -> MintedSecret {
        let plaintext = format!("rt-{:040}", self.next());
        MintedSecret {
            digest: self.digest(&plaintext),
            plaintext,
            prefix: String::new(),
        }
    }

    fn digest(&self, presented: &str) -> SecretDigest {
        let mut out = [0u8; 32];
        for (seed, chunk) in (0u8..).zip(out.chunks_mut(8)) {
            let mut hasher = DefaultHasher::new();
            seed.hash(&mut hasher);
            presented.hash(&mut hasher);
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        SecretDigest(out)
    }

    fn generate_password(&self) -> String {
        format!("generated-password-{:06}", self.next())
    }
}

// ---------------------------------------------------------------------------------------------
// Cache, bus, key uses, audit

/// The principal cache as a plain map, invalidated like the real one.
#[derive(Default)]
pub(crate) struct FakeCache {
    entries: Mutex<HashMap<PrincipalKey, CachedAuth>>,
}

impl FakeCache {
    /// Whether `key` has a cached outcome.
    pub(crate) fn contains(&self, key: &PrincipalKey) -> bool {
        lock(&self.entries).contains_key(key)
    }
}

impl PrincipalCache for FakeCache {
    fn get(&self, key: &PrincipalKey) -> Option<CachedAuth> {
        lock(&self.entries).get(key).cloned()
    }

    fn put(&self, key: PrincipalKey, outcome: CachedAuth) {
        lock(&self.entries).insert(key, outcome);
    }

    fn invalidate_user(&self, user_id: UserId) {
        lock(&self.entries).retain(|_, value| match value {
            CachedAuth::Valid(p) => p.user_id() != user_id,
            CachedAuth::Refused { owner } => *owner != Some(user_id),
        });
    }

    fn invalidate_key(&self, digest: SecretDigest) {
        lock(&self.entries).remove(&PrincipalKey::Key(digest));
    }
}

/// A message broadcast on the invalidation bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BusMessage {
    /// [`InvalidationBus::user_changed`].
    UserChanged(UserId),
    /// [`InvalidationBus::key_changed`].
    KeyChanged(SecretDigest),
}

/// Records every broadcast.
#[derive(Default)]
pub(crate) struct FakeBus {
    messages: Mutex<Vec<BusMessage>>,
}

impl FakeBus {
    /// Takes every message published so far.
    pub(crate) fn take(&self) -> Vec<BusMessage> {
        std::mem::take(&mut *lock(&self.messages))
    }
}

#[async_trait]
impl InvalidationBus for FakeBus {
    async fn user_changed(&self, user_id: UserId) -> Result<(), IdentityError> {
        lock(&self.messages).push(BusMessage::UserChanged(user_id));
        Ok(())
    }

    async fn key_changed(&self, digest: SecretDigest) -> Result<(), IdentityError> {
        lock(&self.messages).push(BusMessage::KeyChanged(digest));
        Ok(())
    }
}

/// Records key uses.
#[derive(Default)]
pub(crate) struct FakeKeyUses {
    uses: Mutex<Vec<(ApiKeyId, DateTime<Utc>)>>,
}

impl KeyUseRecorder for FakeKeyUses {
    fn record(&self, key: ApiKeyId, at: DateTime<Utc>) {
        lock(&self.uses).push((key, at));
    }
}

/// The audit trail in memory.
pub(crate) struct FakeAudit {
    clock: Arc<dyn Clock>,
    events: Mutex<Vec<AuditEvent>>,
}

impl FakeAudit {
    /// `(action, target id)` of every event recorded so far, oldest first.
    pub(crate) fn actions(&self) -> Vec<(String, Option<String>)> {
        lock(&self.events)
            .iter()
            .map(|e| (e.event.action.clone(), e.event.target_id.clone()))
            .collect()
    }
}

#[async_trait]
impl AuditLog for FakeAudit {
    async fn record(&self, event: NewAuditEvent) -> Result<AuditEventId, AuditError> {
        let id = AuditEventId::new();
        lock(&self.events).push(AuditEvent {
            id,
            event,
            at: self.clock.now(),
        });
        Ok(id)
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, AuditError> {
        let mut rows: Vec<AuditEvent> = lock(&self.events)
            .iter()
            .filter(|e| {
                filter
                    .actor
                    .is_none_or(|a| e.event.context.actor == Some(a))
            })
            .filter(|e| {
                filter
                    .target_type
                    .as_ref()
                    .is_none_or(|t| &e.event.target_type == t)
            })
            .filter(|e| {
                filter
                    .target_id
                    .as_ref()
                    .is_none_or(|t| e.event.target_id.as_ref() == Some(t))
            })
            .cloned()
            .collect();
        rows.reverse();
        rows.truncate(page.limit() as usize + 1);
        Ok(Page::from_overfetch(rows, page, |e| e.id.into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Wiring

/// What tests inspect and steer.
pub(crate) struct Handles {
    /// The shared clock, standing at [`start`].
    pub(crate) clock: Arc<ManualClock>,
    /// Users.
    pub(crate) users: Arc<FakeUsers>,
    /// Refresh tokens.
    pub(crate) refresh_tokens: Arc<FakeRefreshTokens>,
    /// The ledger.
    pub(crate) ledger: Arc<FakeLedger>,
    /// Counters.
    pub(crate) limits: Arc<FakeLimits>,
    /// The principal cache.
    pub(crate) cache: Arc<FakeCache>,
    /// Broadcasts.
    pub(crate) bus: Arc<FakeBus>,
    /// The audit trail.
    pub(crate) audit: Arc<FakeAudit>,
}

/// Every port backed by a fresh fake, with handles on their state. Self-registration is on,
/// five login attempts a minute, no default rate limits, refresh tokens live 30 days.
pub(crate) fn deps() -> (IdentityDeps, Handles) {
    let clock = Arc::new(ManualClock::new(start()));
    let shared_clock: Arc<dyn Clock> = clock.clone();
    let users = Arc::new(FakeUsers::default());
    let refresh_tokens = Arc::new(FakeRefreshTokens::default());
    let keys = Arc::new(FakeApiKeys::default());
    let ledger = Arc::new(FakeLedger::default());
    let limits = Arc::new(FakeLimits {
        clock: shared_clock.clone(),
        ledger: ledger.clone(),
        state: Mutex::default(),
    });
    let cache = Arc::new(FakeCache::default());
    let bus = Arc::new(FakeBus::default());
    let audit = Arc::new(FakeAudit {
        clock: shared_clock.clone(),
        events: Mutex::default(),
    });
    let account_changes = Arc::new(FakeAccountChanges {
        users: users.clone(),
        tokens: refresh_tokens.clone(),
        keys: keys.clone(),
        audit: audit.clone(),
    });
    let deps = IdentityDeps {
        users: users.clone(),
        account_changes,
        refresh_tokens: refresh_tokens.clone(),
        keys,
        policies: Arc::new(FakePolicies::default()),
        ledger: ledger.clone(),
        limits: limits.clone(),
        hasher: Arc::new(FakeHasher),
        tokens: Arc::new(FakeTokens {
            clock: shared_clock.clone(),
        }),
        secrets: Arc::new(FakeSecrets::default()),
        cache: cache.clone(),
        bus: bus.clone(),
        key_uses: Arc::new(FakeKeyUses::default()),
        audit: audit.clone(),
        clock: shared_clock,
        config: IdentityConfig {
            refresh_ttl: Duration::days(30),
            allow_self_registration: true,
            login_attempts_per_minute: 5,
            defaults: LimitDefaults {
                requests_per_minute: None,
                tokens_per_minute: None,
                requests_per_hour: None,
                requests_per_day: None,
            },
        },
    };
    let handles = Handles {
        clock,
        users,
        refresh_tokens,
        ledger,
        limits,
        cache,
        bus,
        audit,
    };
    (deps, handles)
}
