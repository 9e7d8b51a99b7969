//! What the identity context needs from the outside world.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::paging::{Page, PageRequest};
use uuid::Uuid;

use super::api_key::{ApiKey, ApiKeyId, MintedSecret, SecretDigest};
use super::errors::IdentityError;
use super::limits::{Demand, LimitRule, QuotaPolicy, Subject};
use super::principal::Principal;
use super::session::{AccessClaims, Consumed, IssuedToken, RefreshToken, TokenRejection};
use super::user::{User, UserId};
use super::values::{Password, PasswordHash};

/// Persistence of users and their roles.
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// Stores a new user with its roles.
    ///
    /// # Errors
    /// [`IdentityError::UsernameTaken`] / [`IdentityError::EmailTaken`] on duplicates;
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn insert(&self, user: &User) -> Result<(), IdentityError>;

    /// Writes every field and the roles of an existing user (one transaction).
    ///
    /// # Errors
    /// As [`UserRepository::insert`].
    async fn update(&self, user: &User) -> Result<(), IdentityError>;

    /// The user with `id`, deleted ones included.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn find(&self, id: UserId) -> Result<Option<User>, IdentityError>;

    /// The non-deleted user whose username or e-mail is `login` (case-insensitive).
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn find_by_login(&self, login: &str) -> Result<Option<User>, IdentityError>;

    /// Non-deleted users in creation order.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn list(&self, page: &PageRequest) -> Result<Page<User>, IdentityError>;
}

/// An admin's change of one account, written as one unit with everything it ends and its audit
/// event: all of it or nothing.
#[derive(Clone, Debug)]
pub struct AccountChange {
    /// The account as it is to be stored (every field and the roles).
    pub user: User,
    /// Refuse with [`IdentityError::LastAdmin`], writing nothing, when no active admin would
    /// remain afterwards (checked atomically with the write: two such changes at once cannot
    /// both pass).
    pub keep_an_admin: bool,
    /// End the account's sessions (revoke every refresh token).
    pub end_sessions: bool,
    /// Revoke every API key of the account.
    pub revoke_keys: bool,
    /// When.
    pub at: DateTime<Utc>,
    /// The audit event of the change.
    pub audit: maas_shared::audit::NewAuditEvent,
}

/// Writes [`AccountChange`]s (one transaction each).
#[async_trait]
pub trait AccountChanges: Send + Sync + 'static {
    /// Applies `change`; returns the digests of the keys it revoked.
    ///
    /// # Errors
    /// [`IdentityError::LastAdmin`]; [`IdentityError::UserNotFound`];
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn apply(&self, change: AccountChange) -> Result<Vec<SecretDigest>, IdentityError>;
}

/// Persistence of refresh tokens.
#[async_trait]
pub trait RefreshTokenRepository: Send + Sync + 'static {
    /// Stores a new token.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn insert(&self, token: &RefreshToken) -> Result<(), IdentityError>;

    /// Spends the token with `digest` atomically (two concurrent uses: one wins, one is reuse).
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn consume(
        &self,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Consumed, IdentityError>;

    /// Revokes every token of a family.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn revoke_family(&self, family_id: Uuid, now: DateTime<Utc>)
    -> Result<(), IdentityError>;

    /// Revokes every token of a user.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn revoke_user(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), IdentityError>;

    /// Whether a family still has a token that is neither revoked nor expired: its access tokens
    /// stay valid only while it does.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn family_live(&self, family_id: Uuid, now: DateTime<Utc>)
    -> Result<bool, IdentityError>;

    /// The family of the token with `digest`, if it is known.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn family_of(
        &self,
        digest: SecretDigest,
    ) -> Result<Option<(UserId, Uuid)>, IdentityError>;
}

/// Persistence of API keys.
#[async_trait]
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// Stores a new key.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn insert(&self, key: &ApiKey) -> Result<(), IdentityError>;

    /// Writes name, secret digest/prefix and revocation of an existing key.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn update(&self, key: &ApiKey) -> Result<(), IdentityError>;

    /// The key `id` if `owner` owns it.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn find_owned(
        &self,
        owner: UserId,
        id: ApiKeyId,
    ) -> Result<Option<ApiKey>, IdentityError>;

    /// The key whose digest is `digest` (revoked or not).
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn find_by_digest(&self, digest: SecretDigest) -> Result<Option<ApiKey>, IdentityError>;

    /// The keys of `owner`, newest first.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn list(&self, owner: UserId, page: &PageRequest) -> Result<Page<ApiKey>, IdentityError>;

    /// The keys of `owner` bound to `app`, newest first (revoked ones included).
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn list_app(&self, owner: UserId, app: uuid::Uuid) -> Result<Vec<ApiKey>, IdentityError>;

    /// Revokes every key of `owner`; returns the digests that stopped working.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn revoke_all(
        &self,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<SecretDigest>, IdentityError>;

    /// Records last-use times in one statement.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn touch(&self, uses: &[(ApiKeyId, DateTime<Utc>)]) -> Result<(), IdentityError>;
}

/// Persistence of quota policies.
#[async_trait]
pub trait QuotaPolicyRepository: Send + Sync + 'static {
    /// The policy of `subject` (default when none is stored).
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn get(&self, subject: Subject) -> Result<QuotaPolicy, IdentityError>;

    /// Replaces the policy of `subject`.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn put(&self, subject: Subject, policy: &QuotaPolicy) -> Result<(), IdentityError>;
}

/// One settled consumption, for the durable ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The settled reservation (one entry per request: a redelivered entry is written once).
    pub request_id: Uuid,
    /// Who.
    pub user_id: UserId,
    /// Through which key.
    pub key_id: Option<ApiKeyId>,
    /// Tokens consumed.
    pub tokens: u64,
    /// Requests counted (1, or 0 for a pure token correction).
    pub requests: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// The durable record of consumption that quotas are rebuilt from.
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// Appends entries (one statement); an entry whose `request_id` is already stored is
    /// skipped, so appending the same entries again changes nothing.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn append(&self, entries: &[LedgerEntry]) -> Result<(), IdentityError>;

    /// Tokens and requests of `subject` since `since`.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] on storage failure.
    async fn totals(
        &self,
        subject: Subject,
        since: DateTime<Utc>,
    ) -> Result<(u64, u64), IdentityError>;
}

/// A granted admission: what was counted, to settle or release later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Id (idempotency of settle/release).
    pub id: Uuid,
    /// The caller.
    pub user_id: UserId,
    /// Through which key.
    pub key_id: Option<ApiKeyId>,
    /// Tokens reserved.
    pub estimate: u64,
    /// Counter keys charged with the token estimate.
    pub token_counters: Vec<String>,
    /// Counter keys charged with one request.
    pub request_counters: Vec<String>,
    /// The tightest rule after admission, for `x-ratelimit-*` headers.
    pub tightest: Option<super::errors::LimitState>,
}

/// What ending a reservation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It was held: ended now.
    Held,
    /// The sweeper had released it (its process was thought dead): ended now, charged in full.
    Swept,
    /// It had been ended already: nothing changed.
    Gone,
}

/// Counters in a shared store (Redis): atomic check-and-charge of many rules at once.
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Checks every rule against its current window and, only if all pass, charges them all, in
    /// one atomic step.
    ///
    /// # Errors
    /// [`IdentityError::RateLimited`] / [`IdentityError::QuotaExceeded`] naming the rule that
    /// refused; [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn admit(
        &self,
        principal: &Principal,
        rules: &[LimitRule],
        demand: Demand,
        now: DateTime<Utc>,
    ) -> Result<Reservation, IdentityError>;

    /// Replaces the token estimate with `actual_tokens` and, in the same atomic step, appends
    /// the [`LedgerEntry`] (and `record`, the caller's own usage record) to the durable
    /// settlement stream. A reservation the sweeper already released is charged in full
    /// instead, so counters and ledger still agree; one already ended changes nothing.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
        at: DateTime<Utc>,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError>;

    /// Gives back everything the reservation charged (idempotent) and appends `record`, when
    /// given, to the settlement stream (a call that consumed nothing is still recorded).
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError>;

    /// Releases every reservation whose deadline passed before `now` (its process died before
    /// settling); returns how many.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, IdentityError>;

    /// Current counts of the principal's rules in their windows at `now`, in rule order.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn current(
        &self,
        principal: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<u64>, IdentityError>;

    /// A simple fixed-window counter (login throttling): counts one hit on `name` and says
    /// whether it stayed within `max` per `window`; when not, how long until it resets.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable or timing out.
    async fn hit(
        &self,
        name: &str,
        max: u64,
        window: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, IdentityError>;
}

/// One entry of the settlement stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Where it sits in the stream (acknowledged with it).
    pub position: StreamPosition,
    /// The ledger entry, when the call consumed anything.
    pub entry: Option<LedgerEntry>,
    /// The caller context's own record of the call (the gateway's usage row), opaque here.
    pub record: Option<Vec<u8>>,
}

/// An entry's place in the sharded settlement stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Shard.
    pub shard: u16,
    /// Entry id in that shard's stream.
    pub id: String,
}

/// How far the stream's readers are behind, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Entries not yet written to PostgreSQL (new and delivered-but-unacknowledged).
    pub backlog: u64,
    /// Entries delivered to a reader and not acknowledged yet.
    pub pending: u64,
    /// Age of the oldest entry not yet written, in seconds (0 when none).
    pub lag_seconds: f64,
    /// Entries written to PostgreSQL so far (all readers, since the stream began).
    pub drained: u64,
    /// Entries that failed to be written (retried later) or could not be read (set aside).
    pub failed: u64,
}

/// The durable stream of settlements (written atomically with the counters by
/// [`LimitStore::settle`]) as its readers see it: a consumer group, so each entry is handled
/// by one reader, and one that died has its entries claimed by another.
#[async_trait]
pub trait SettlementStream: Send + Sync + 'static {
    /// Up to `max` entries never delivered before, for `consumer`. Entries that cannot be
    /// read are set aside (out of the stream, counted as failed) and not returned.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable.
    async fn read(&self, consumer: &str, max: usize) -> Result<Vec<Settled>, IdentityError>;

    /// Up to `max` entries delivered to some reader (possibly dead) more than `idle` ago and
    /// never acknowledged, now delivered to `consumer`.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable.
    async fn claim(
        &self,
        consumer: &str,
        idle: std::time::Duration,
        max: usize,
    ) -> Result<Vec<Settled>, IdentityError>;

    /// Acknowledges (and removes) entries whose effects are committed and counts them as
    /// drained in the same atomic step, so the count is exact whichever reader dies when; an
    /// entry another reader already acknowledged is not counted twice. Returns how many were
    /// still pending.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable.
    async fn ack(&self, positions: &[StreamPosition]) -> Result<u64, IdentityError>;

    /// Counts entries whose write failed (they stay pending and are retried).
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable.
    async fn count_failed(&self, failed: u64) -> Result<(), IdentityError>;

    /// Backlog, lag and counts.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the store is unreachable.
    async fn stats(&self, now: DateTime<Utc>) -> Result<StreamStats, IdentityError>;
}

/// Where the records that travel with settlements are stored (another context's table: the
/// gateway's usage rows). Storing the same record twice must store it once.
#[async_trait]
pub trait SettledRecords: Send + Sync + 'static {
    /// Stores `records` (one batch, idempotent per record).
    ///
    /// # Errors
    /// Storage failures (the entries are retried).
    async fn store(&self, records: &[Vec<u8>]) -> anyhow::Result<()>;
}

/// Argon2id hashing (CPU-heavy: implementations run it off the async threads).
#[async_trait]
pub trait PasswordHasher: Send + Sync + 'static {
    /// Hashes a new password.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] if hashing fails.
    async fn hash(&self, password: &Password) -> Result<PasswordHash, IdentityError>;

    /// Whether `password` matches `hash`. With `None`, burns the same time and says no, so
    /// unknown users cannot be told apart by timing.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] if verification cannot run.
    async fn verify(
        &self,
        password: &Password,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, IdentityError>;
}

/// Signing and checking access tokens.
pub trait TokenCodec: Send + Sync + 'static {
    /// Signs an access token for a session.
    ///
    /// # Errors
    /// [`IdentityError::Unexpected`] if signing fails.
    fn issue(
        &self,
        user_id: UserId,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, IdentityError>;

    /// Verifies signature, algorithm, audience, issuer, type, `exp` and `nbf`.
    ///
    /// # Errors
    /// [`TokenRejection`] saying why.
    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection>;
}

/// Random secrets and their keyed digests.
pub trait Secrets: Send + Sync + 'static {
    /// A new API key: `sk-` + 8-character public prefix + 32 random characters (≥ 190 bits).
    fn mint_api_key(&self) -> MintedSecret;

    /// A new opaque refresh token (256 random bits).
    fn mint_refresh_token(&self) -> MintedSecret;

    /// The keyed digest a presented secret is looked up by.
    fn digest(&self, presented: &str) -> SecretDigest;

    /// A random password for bootstrap accounts (24 characters).
    fn generate_password(&self) -> String;
}

/// What a cached principal is found by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKey {
    /// A login session (the refresh-token family its access tokens name); its value is the
    /// session's user, or a refusal once the session ended.
    Session(Uuid),
    /// An API key.
    Key(SecretDigest),
}

/// A cached authentication outcome.
#[derive(Clone, Debug)]
pub enum CachedAuth {
    /// The credential is valid for this principal.
    Valid(Arc<Principal>),
    /// The credential is refused; `owner` is the user it belongs to, when known, so that a
    /// change to that user (re-enabling it) drops the refusal too.
    Refused {
        /// The owning user, if any.
        owner: Option<UserId>,
    },
}

/// In-process cache of principals (the gateway's hot path touches no database on a hit).
pub trait PrincipalCache: Send + Sync + 'static {
    /// A cached outcome.
    fn get(&self, key: &PrincipalKey) -> Option<CachedAuth>;
    /// Caches a lookup outcome.
    fn put(&self, key: PrincipalKey, outcome: CachedAuth);
    /// Drops everything about a user (its session entry and every key of it).
    fn invalidate_user(&self, user_id: UserId);
    /// Drops one key.
    fn invalidate_key(&self, digest: SecretDigest);
}

/// Tells every replica's cache that something changed.
#[async_trait]
pub trait InvalidationBus: Send + Sync + 'static {
    /// Broadcasts that a user's principal changed (status, roles, limits).
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the bus is unreachable or timing out.
    async fn user_changed(&self, user_id: UserId) -> Result<(), IdentityError>;

    /// Broadcasts that a key stopped working or changed.
    ///
    /// # Errors
    /// [`IdentityError::Unavailable`] when the bus is unreachable or timing out.
    async fn key_changed(&self, digest: SecretDigest) -> Result<(), IdentityError>;
}

/// Collects key use times and writes them in batches.
pub trait KeyUseRecorder: Send + Sync + 'static {
    /// Notes that `key` was used at `at` (never blocks).
    fn record(&self, key: ApiKeyId, at: DateTime<Utc>);
}
