//! Quotas and rate limits: admins set policies; callers are admitted (rate limits + quota
//! reservation in one atomic step), then settle with real usage or release.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Actor, IdentityDeps};
use crate::domain::api_key::ApiKeyId;
use crate::domain::errors::IdentityError;
use crate::domain::limits::{Demand, LimitRule, QuotaPolicy, Subject};
use crate::domain::ports::{Ended, Reservation};
use crate::domain::principal::Principal;
use crate::domain::user::{UserId, UserStatus};
use crate::domain::values::Permission;

/// The metering contract other contexts (the gateway) depend on.
#[async_trait]
pub trait QuotaGate: Send + Sync + 'static {
    /// Checks every rate limit and quota of `principal` and reserves `demand`, atomically.
    ///
    /// # Errors
    /// [`IdentityError::RateLimited`] / [`IdentityError::QuotaExceeded`] with the refusing rule.
    async fn reserve(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> Result<Reservation, IdentityError>;

    /// Replaces the reserved token estimate with the real usage and records it durably, with
    /// `record` (the caller's own record of the call, stored by the worker with the ledger
    /// entry), in one atomic step: once this returns, neither is lost by a crash.
    ///
    /// # Errors
    /// Infrastructure failures (then nothing was recorded).
    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError>;

    /// Gives the reservation back (the call consumed nothing); `record`, when given, is still
    /// stored.
    ///
    /// # Errors
    /// Infrastructure failures.
    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError>;
}

/// One rule with its current consumption.
#[derive(Clone, Debug)]
pub struct RuleUsage {
    /// The rule.
    pub rule: LimitRule,
    /// Consumed in the current window.
    pub used: u64,
    /// When the window resets (`None`: never).
    pub resets_at: Option<DateTime<Utc>>,
}

/// Quota use cases.
#[derive(Clone)]
pub struct QuotaService {
    deps: IdentityDeps,
}

impl QuotaService {
    /// The service over `deps`.
    #[must_use]
    pub fn new(deps: IdentityDeps) -> Self {
        Self { deps }
    }

    /// Sets the policy of a user (admin).
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::UserNotFound`]; a cap above
    /// [`MAX_LIMIT`](crate::domain::limits::MAX_LIMIT).
    #[tracing::instrument(name = "quotas.set_user_policy", skip_all, fields(user.id = %user))]
    pub async fn set_user_policy(
        &self,
        actor: Actor<'_>,
        user: UserId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps
            .users
            .find(user)
            .await?
            .filter(|u| u.status() != UserStatus::Deleted)
            .ok_or(IdentityError::UserNotFound)?;
        self.put(&actor, Subject::User(user), user, policy).await
    }

    /// Sets the policy of one key of `owner` (admin).
    ///
    /// # Errors
    /// Forbidden; [`IdentityError::KeyNotFound`]; a cap above
    /// [`MAX_LIMIT`](crate::domain::limits::MAX_LIMIT).
    #[tracing::instrument(name = "quotas.set_key_policy", skip_all, fields(user.id = %owner, key.id = %key))]
    pub async fn set_key_policy(
        &self,
        actor: Actor<'_>,
        owner: UserId,
        key: ApiKeyId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps
            .keys
            .find_owned(owner, key)
            .await?
            .ok_or(IdentityError::KeyNotFound)?;
        self.put(&actor, Subject::Key(key), owner, policy).await
    }

    async fn put(
        &self,
        actor: &Actor<'_>,
        subject: Subject,
        owner: UserId,
        policy: QuotaPolicy,
    ) -> Result<(), IdentityError> {
        policy.check()?;
        self.deps.policies.put(subject, &policy).await?;
        self.deps.user_changed(owner).await?;
        self.deps
            .audit(
                actor,
                "quota.set",
                "quota",
                Some(subject.tag()),
                policy_details(&policy),
            )
            .await
    }

    /// The policy stored for a user (admin).
    ///
    /// # Errors
    /// Forbidden.
    #[tracing::instrument(name = "quotas.user_policy", skip_all, fields(user.id = %user))]
    pub async fn user_policy(
        &self,
        actor: Actor<'_>,
        user: UserId,
    ) -> Result<QuotaPolicy, IdentityError> {
        actor.require(Permission::ManageQuotas)?;
        self.deps.policies.get(Subject::User(user)).await
    }

    /// Every rule that applies to the caller with its consumption in the current window.
    ///
    /// # Errors
    /// Infrastructure failures.
    pub async fn usage(&self, principal: &Principal) -> Result<Vec<RuleUsage>, IdentityError> {
        let now = self.deps.clock.now();
        let used = self.deps.limits.current(principal, now).await?;
        Ok(principal
            .rules()
            .iter()
            .zip(used)
            .map(|(rule, used)| RuleUsage {
                rule: rule.clone(),
                used,
                resets_at: rule.window.end(now),
            })
            .collect())
    }

    /// Admits a call that consumes no tokens (a request by API key): counts one request.
    ///
    /// # Errors
    /// As [`QuotaGate::reserve`].
    pub async fn admit_request(&self, principal: &Principal) -> Result<Reservation, IdentityError> {
        let reservation = self.reserve(principal, Demand { tokens: None }).await?;
        self.settle(&reservation, 0, None).await?;
        Ok(reservation)
    }

    /// Releases the reservations whose process died before settling them (their deadline
    /// passed); the scheduled sweeper runs this. Returns how many were released.
    ///
    /// # Errors
    /// Infrastructure failures.
    #[tracing::instrument(name = "quotas.sweep", skip_all)]
    pub async fn sweep_reservations(&self) -> Result<u64, IdentityError> {
        self.deps.limits.sweep(self.deps.clock.now()).await
    }
}

/// The audit details of a policy: the fields it sets, by name (`{}` when it sets none).
fn policy_details(policy: &QuotaPolicy) -> serde_json::Value {
    let set: serde_json::Map<String, serde_json::Value> = policy
        .fields()
        .into_iter()
        .filter_map(|(field, value)| value.map(|v| (field.to_owned(), v.into())))
        .collect();
    serde_json::Value::Object(set)
}

#[async_trait]
impl QuotaGate for QuotaService {
    async fn reserve(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> Result<Reservation, IdentityError> {
        self.deps
            .limits
            .admit(principal, principal.rules(), demand, self.deps.clock.now())
            .await
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError> {
        let ended = self
            .deps
            .limits
            .settle(
                reservation,
                actual_tokens,
                self.deps.clock.now(),
                record.as_deref(),
            )
            .await?;
        if ended == Ended::Swept {
            tracing::warn!(reservation = %reservation.id, "settled a reservation the sweeper had already released; charged in full");
        }
        Ok(())
    }

    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError> {
        self.deps
            .limits
            .release(reservation, record.as_deref())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration as StdDuration;

    use chrono::Duration;

    use super::*;
    use crate::app::accounts::{AccountService, NewAccount};
    use crate::app::auth::{AuthService, Authenticator as _, Credential};
    use crate::app::fakes::{self, BusMessage, Counter, FakeLimits, Handles};
    use crate::app::sessions::SessionService;
    use crate::domain::errors::LimitState;
    use crate::domain::ports::LedgerEntry;

    const PASSWORD: &str = "correct horse battery";
    const MINUTE: Option<StdDuration> = Some(StdDuration::from_secs(60));
    /// The fake clock stands at noon: the daily window resets in twelve hours.
    const HALF_DAY: Option<StdDuration> = Some(StdDuration::from_secs(12 * 3600));

    struct Fixture {
        quotas: QuotaService,
        handles: Handles,
        caller: Arc<Principal>,
        /// Counter key of `user.requests_per_minute` (3 a minute).
        requests: String,
        /// Counter key of `user.tokens_per_day_quota` (1000 a day).
        tokens: String,
    }

    /// A user with 3 requests a minute and 1000 tokens a day, set by the operator, then logged
    /// in and authenticated: the principal carries the rules from the stored policy.
    async fn fixture() -> Fixture {
        let (deps, handles) = fakes::deps();
        let user = AccountService::new(deps.clone())
            .register(NewAccount {
                username: "erin".to_owned(),
                email: None,
                password: PASSWORD.to_owned(),
                roles: Vec::new(),
            })
            .await
            .unwrap();
        let quotas = QuotaService::new(deps.clone());
        let policy = QuotaPolicy {
            requests_per_minute: Some(3),
            tokens_per_day_quota: Some(1000),
            ..QuotaPolicy::default()
        };
        quotas
            .set_user_policy(Actor::System, user.id(), policy)
            .await
            .unwrap();
        assert_eq!(handles.bus.take(), [BusMessage::UserChanged(user.id())]);
        let login = SessionService::new(deps.clone())
            .login("erin", PASSWORD.to_owned(), None)
            .await
            .unwrap();
        let caller = AuthService::new(deps)
            .authenticate(Credential::Bearer(&login.access.token))
            .await
            .unwrap();
        let names: Vec<(&str, u64)> = caller
            .rules()
            .iter()
            .map(|r| (r.name.as_str(), r.max))
            .collect();
        assert_eq!(
            names,
            [
                ("user.requests_per_minute", 3),
                ("user.tokens_per_day_quota", 1000)
            ]
        );
        let now = fakes::start();
        let requests = FakeLimits::key(user.id(), &caller.rules()[0], now);
        let tokens = FakeLimits::key(user.id(), &caller.rules()[1], now);
        Fixture {
            quotas,
            handles,
            caller,
            requests,
            tokens,
        }
    }

    impl Fixture {
        fn counters(&self) -> (Option<Counter>, Option<Counter>) {
            (
                self.handles.limits.counter(&self.requests),
                self.handles.limits.counter(&self.tokens),
            )
        }

        async fn reserve(&self, tokens: u64) -> Result<Reservation, IdentityError> {
            self.quotas
                .reserve(
                    &self.caller,
                    Demand {
                        tokens: Some(tokens),
                    },
                )
                .await
        }
    }

    fn counter(spent: u64, reserved: u64) -> Option<Counter> {
        Some(Counter { spent, reserved })
    }

    fn quota_state(remaining: u64) -> LimitState {
        LimitState {
            name: "user.tokens_per_day_quota".to_owned(),
            limit: 1000,
            remaining,
            reset_after: HALF_DAY,
        }
    }

    #[tokio::test]
    async fn a_reservation_within_quota_is_admitted_and_one_beyond_is_refused() {
        let f = fixture().await;
        let admitted = f.reserve(600).await.unwrap();
        assert_eq!(admitted.user_id, f.caller.user_id());
        assert_eq!(admitted.key_id, None);
        assert_eq!(admitted.estimate, 600);
        assert_eq!(admitted.request_counters, std::slice::from_ref(&f.requests));
        assert_eq!(admitted.token_counters, std::slice::from_ref(&f.tokens));
        // 2 requests left this minute is tighter than 400 tokens left today.
        assert_eq!(
            admitted.tightest,
            Some(LimitState {
                name: "user.requests_per_minute".to_owned(),
                limit: 3,
                remaining: 2,
                reset_after: MINUTE,
            })
        );
        assert_eq!(f.counters(), (counter(0, 1), counter(0, 600)));

        // 600 reserved + 500 > 1000: refused by the quota, and nothing is charged.
        let refused = f.reserve(500).await.unwrap_err();
        let IdentityError::QuotaExceeded(state) = &refused else {
            panic!("expected QuotaExceeded, got {refused:?}");
        };
        assert_eq!(state, &quota_state(400));
        assert_eq!(f.counters(), (counter(0, 1), counter(0, 600)));
        assert_eq!(f.handles.limits.live_reservations(), 1);

        // Exactly up to the quota is still admitted.
        f.reserve(400).await.unwrap();
        assert_eq!(f.counters(), (counter(0, 2), counter(0, 1000)));
        assert_eq!(f.handles.ledger.entries(), []);
    }

    #[tokio::test]
    async fn settling_moves_the_reservation_to_spent_and_records_the_real_usage_once() {
        let f = fixture().await;
        let reservation = f.reserve(600).await.unwrap();
        f.quotas
            .settle(&reservation, 450, Some(b"usage row".to_vec()))
            .await
            .unwrap();
        assert_eq!(f.counters(), (counter(1, 0), counter(450, 0)));
        let entry = LedgerEntry {
            request_id: reservation.id,
            user_id: f.caller.user_id(),
            key_id: None,
            tokens: 450,
            requests: 1,
            at: fakes::start(),
        };
        assert_eq!(f.handles.ledger.entries(), std::slice::from_ref(&entry));
        assert_eq!(f.handles.limits.live_reservations(), 0);

        // Settling (or releasing) the same reservation again changes nothing.
        f.quotas.settle(&reservation, 450, None).await.unwrap();
        f.quotas.release(&reservation, None).await.unwrap();
        assert_eq!(f.counters(), (counter(1, 0), counter(450, 0)));
        assert_eq!(f.handles.ledger.entries(), [entry]);
        assert_eq!(f.handles.limits.records(), [b"usage row".to_vec()]);

        // What was settled is what counts against the quota: 450 + 550 = 1000 fits, one more not.
        let rest = f.reserve(550).await.unwrap();
        let over = f.reserve(1).await.unwrap_err();
        let IdentityError::QuotaExceeded(state) = &over else {
            panic!("expected QuotaExceeded, got {over:?}");
        };
        assert_eq!(state, &quota_state(0));
        let used: Vec<u64> = f
            .quotas
            .usage(&f.caller)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.used)
            .collect();
        assert_eq!(used, [2, 1000]);

        // Usage above the estimate is recorded as it was.
        f.quotas.settle(&rest, 700, None).await.unwrap();
        assert_eq!(f.counters(), (counter(2, 0), counter(1150, 0)));
        let tokens: Vec<u64> = f
            .handles
            .ledger
            .entries()
            .iter()
            .map(|e| e.tokens)
            .collect();
        assert_eq!(tokens, [450, 700]);
    }

    #[tokio::test]
    async fn releasing_gives_the_whole_reservation_back_and_records_nothing() {
        let f = fixture().await;
        let reservation = f.reserve(600).await.unwrap();
        f.quotas.release(&reservation, None).await.unwrap();
        assert_eq!(f.counters(), (counter(0, 0), counter(0, 0)));
        assert_eq!(f.handles.limits.live_reservations(), 0);

        // A released reservation cannot be settled afterwards.
        f.quotas.settle(&reservation, 600, None).await.unwrap();
        assert_eq!(f.counters(), (counter(0, 0), counter(0, 0)));
        assert_eq!(f.handles.ledger.entries(), []);

        // The whole quota is available again.
        let all = f.reserve(1000).await.unwrap();
        assert_eq!(all.tightest, Some(quota_state(0)));
        assert_eq!(f.counters(), (counter(0, 1), counter(0, 1000)));
    }

    #[tokio::test]
    async fn a_release_stores_its_record_but_no_ledger_entry() {
        let f = fixture().await;
        let reservation = f.reserve(600).await.unwrap();
        f.quotas
            .release(&reservation, Some(b"refused upstream".to_vec()))
            .await
            .unwrap();
        assert_eq!(f.counters(), (counter(0, 0), counter(0, 0)));
        assert_eq!(f.handles.ledger.entries(), []);
        assert_eq!(f.handles.limits.records(), [b"refused upstream".to_vec()]);
    }

    #[tokio::test]
    async fn the_sweeper_releases_reservations_past_their_deadline_and_a_late_settlement_charges_in_full()
     {
        let f = fixture().await;
        let dead = f.reserve(600).await.unwrap();
        f.handles.clock.advance(Duration::minutes(5));
        let alive = f.reserve(100).await.unwrap();
        // The minute's request counter holds only the first call (the second is in another
        // minute); the daily token counter holds both.
        assert_eq!(f.counters(), (counter(0, 1), counter(0, 700)));

        // Not yet past any deadline: nothing is released.
        assert_eq!(f.quotas.sweep_reservations().await.unwrap(), 0);
        f.handles.clock.advance(Duration::minutes(6));
        assert_eq!(f.quotas.sweep_reservations().await.unwrap(), 1);
        assert_eq!(f.counters(), (counter(0, 0), counter(0, 100)));
        assert_eq!(f.handles.limits.live_reservations(), 1);
        assert_eq!(f.quotas.sweep_reservations().await.unwrap(), 0, "once");

        // The swept call did finish after all: it is charged what it used, once.
        f.quotas.settle(&dead, 250, None).await.unwrap();
        f.quotas.settle(&dead, 250, None).await.unwrap();
        assert_eq!(f.counters(), (counter(1, 0), counter(250, 100)));
        f.quotas.settle(&alive, 80, None).await.unwrap();
        assert_eq!(f.counters(), (counter(1, 0), counter(330, 0)));
        let tokens: Vec<u64> = f
            .handles
            .ledger
            .entries()
            .iter()
            .map(|e| e.tokens)
            .collect();
        assert_eq!(tokens, [250, 80]);
    }

    #[tokio::test]
    async fn requests_beyond_the_rate_limit_are_refused_until_the_window_turns() {
        let f = fixture().await;
        for _ in 0..3 {
            f.quotas.admit_request(&f.caller).await.unwrap();
        }
        // Calls without tokens skip token rules: the daily token counter was never touched.
        assert_eq!(f.counters(), (counter(3, 0), None));

        let refused = f.quotas.admit_request(&f.caller).await.unwrap_err();
        let IdentityError::RateLimited(state) = &refused else {
            panic!("expected RateLimited, got {refused:?}");
        };
        assert_eq!(
            state,
            &LimitState {
                name: "user.requests_per_minute".to_owned(),
                limit: 3,
                remaining: 0,
                reset_after: MINUTE,
            }
        );
        let entries: Vec<_> = f
            .handles
            .ledger
            .entries()
            .iter()
            .map(|e| (e.user_id, e.key_id, e.tokens, e.requests, e.at))
            .collect();
        let entry = (f.caller.user_id(), None, 0, 1, fakes::start());
        assert_eq!(entries, [entry, entry, entry]);

        f.handles.clock.advance(Duration::minutes(1));
        f.quotas.admit_request(&f.caller).await.unwrap();
        assert_eq!(f.handles.ledger.entries().len(), 4);
    }
}
