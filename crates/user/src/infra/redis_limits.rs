//! [`LimitStore`] on Redis: one Lua call checks and charges every rule of a request atomically,
//! so limits hold exactly across replicas and under concurrency. Counters of a request share
//! one hash tag (the user id), so the script also runs on Redis Cluster. Durable counters
//! (quotas) missing from Redis are rebuilt from the PostgreSQL ledger before admission.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::kv::{Keyspace, Multiplexed};
use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{redis_connection, redis_failure};
use crate::domain::errors::{IdentityError, LimitState};
use crate::domain::limits::{Demand, LimitRule, Metric, Window};
use crate::domain::ports::{LimitStore, Reservation, UsageLedger};
use crate::domain::principal::Principal;
use crate::domain::user::UserId;

/// How long an unsettled reservation can still be settled or released.
const RESERVATION_TTL: Duration = Duration::from_secs(3600);
/// Rebuilding a lapsed durable counter races with other replicas at most this often.
const MAX_REBUILDS: usize = 4;

/// Redis-backed limits.
pub struct RedisLimitStore {
    conn: Multiplexed,
    keys: Keyspace,
    ledger: Arc<dyn UsageLedger>,
    admit: Script,
    settle: Script,
    hit: Script,
}

impl RedisLimitStore {
    /// A store over the multiplexed connection `conn`, writing under `keys`, rebuilding quotas
    /// from `ledger`.
    #[must_use]
    pub fn new(conn: Multiplexed, keys: Keyspace, ledger: Arc<dyn UsageLedger>) -> Self {
        Self {
            conn,
            keys,
            ledger,
            admit: Script::new(include_str!("limits.lua")),
            settle: Script::new(include_str!("settle.lua")),
            hit: Script::new(include_str!("hit.lua")),
        }
    }

    fn counter(&self, user: UserId, rule: &LimitRule, now: DateTime<Utc>) -> String {
        self.keys.key(&format!(
            "rl:{{{user}}}:{}:{}:{}",
            rule.name,
            rule.subject.tag(),
            rule.window.label(now)
        ))
    }

    fn marker(&self, user: UserId, id: Uuid) -> String {
        self.keys.key(&format!("rl:{{{user}}}:resv:{id}"))
    }

    async fn conn(&self) -> Result<ConnectionManager, IdentityError> {
        redis_connection(&self.conn).await
    }

    /// Rebuilds a lapsed durable counter from the ledger (only if still missing).
    async fn rebuild(
        &self,
        key: &str,
        rule: &LimitRule,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let (tokens, requests) = self
            .ledger
            .totals(rule.subject, rule.window.start(now))
            .await?;
        let value = match rule.metric {
            Metric::Tokens => tokens,
            Metric::Requests => requests,
        };
        let mut conn = self.conn().await?;
        let _: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis(rule.window.retention()))
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(redis_failure("rebuilding a quota counter"))?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn reset_after(window: Window, now: DateTime<Utc>) -> Option<Duration> {
    window.end(now).and_then(|end| (end - now).to_std().ok())
}

fn state(rule: &LimitRule, current: u64, now: DateTime<Utc>) -> LimitState {
    LimitState {
        name: rule.name.clone(),
        limit: rule.max,
        remaining: rule.max.saturating_sub(current),
        reset_after: reset_after(rule.window, now),
    }
}

#[async_trait]
impl LimitStore for RedisLimitStore {
    #[tracing::instrument(skip_all, fields(user = %principal.user_id()))]
    async fn admit(
        &self,
        principal: &Principal,
        rules: &[LimitRule],
        demand: Demand,
        now: DateTime<Utc>,
    ) -> Result<Reservation, IdentityError> {
        let user = principal.user_id();
        // Token rules only apply to calls that consume tokens.
        let active: Vec<&LimitRule> = rules
            .iter()
            .filter(|r| r.metric == Metric::Requests || demand.tokens.is_some())
            .collect();
        let estimate = demand.tokens.unwrap_or(0);
        let keys: Vec<String> = active.iter().map(|r| self.counter(user, r, now)).collect();
        let id = Uuid::now_v7();
        let marker = self.marker(user, id);
        for _ in 0..MAX_REBUILDS {
            let mut invocation = self.admit.prepare_invoke();
            for (rule, key) in active.iter().zip(&keys) {
                let cost = match rule.metric {
                    Metric::Requests => 1,
                    Metric::Tokens => estimate,
                };
                invocation
                    .key(key)
                    .arg(rule.max)
                    .arg(cost)
                    .arg(millis(rule.window.retention()))
                    .arg(u8::from(rule.durable));
            }
            invocation.key(&marker).arg(millis(RESERVATION_TTL));
            let mut conn = self.conn().await?;
            let (status, index, value): (u8, usize, i64) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_failure("running the admission script"))?;
            drop(conn);
            let rule_at = |i: usize| i.checked_sub(1).and_then(|i| active.get(i).copied());
            match status {
                0 => {
                    let tightest = rule_at(index).map(|rule| {
                        let used = rule
                            .max
                            .saturating_sub(u64::try_from(value.max(0)).unwrap_or(0));
                        state(rule, used, now)
                    });
                    let (token_counters, request_counters) = active.iter().zip(&keys).fold(
                        (Vec::new(), Vec::new()),
                        |(mut tokens, mut requests), (rule, key)| {
                            match rule.metric {
                                Metric::Tokens => tokens.push(key.clone()),
                                Metric::Requests => requests.push(key.clone()),
                            }
                            (tokens, requests)
                        },
                    );
                    return Ok(Reservation {
                        id,
                        user_id: user,
                        key_id: principal.key_id(),
                        estimate,
                        token_counters,
                        request_counters,
                        tightest,
                    });
                }
                1 => {
                    let rule = rule_at(index).context("admission script named no rule")?;
                    let limit = state(rule, u64::try_from(value.max(0)).unwrap_or(0), now);
                    return Err(if rule.is_quota() {
                        IdentityError::QuotaExceeded(limit)
                    } else {
                        IdentityError::RateLimited(limit)
                    });
                }
                _ => {
                    let rule = rule_at(index).context("admission script named no rule")?;
                    self.rebuild(&keys[index - 1], rule, now).await?;
                }
            }
        }
        Err(IdentityError::Unexpected(anyhow::anyhow!(
            "quota counters kept lapsing during admission"
        )))
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
    ) -> Result<bool, IdentityError> {
        let delta = i128::from(actual_tokens) - i128::from(reservation.estimate);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        self.finish(reservation, delta, 0).await
    }

    async fn release(&self, reservation: &Reservation) -> Result<bool, IdentityError> {
        let estimate = i64::try_from(reservation.estimate).unwrap_or(i64::MAX);
        self.finish(reservation, -estimate, -1).await
    }

    async fn current(
        &self,
        principal: &Principal,
        now: DateTime<Utc>,
    ) -> Result<Vec<u64>, IdentityError> {
        let mut values = Vec::with_capacity(principal.rules().len());
        let mut conn = self.conn().await?;
        for rule in principal.rules() {
            let key = self.counter(principal.user_id(), rule, now);
            let value: Option<u64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_failure("reading a counter"))?;
            let value = match value {
                Some(v) => v,
                None if rule.durable => {
                    let (tokens, requests) = self
                        .ledger
                        .totals(rule.subject, rule.window.start(now))
                        .await?;
                    if rule.metric == Metric::Tokens {
                        tokens
                    } else {
                        requests
                    }
                }
                None => 0,
            };
            values.push(value);
        }
        Ok(values)
    }

    async fn hit(
        &self,
        name: &str,
        max: u64,
        window: Duration,
    ) -> Result<Option<Duration>, IdentityError> {
        let name: String = name.chars().take(300).collect();
        let key = self.keys.key(&format!("throttle:{name}"));
        let mut conn = self.conn().await?;
        let wait_ms: u64 = self
            .hit
            .key(key)
            .arg(max)
            .arg(millis(window))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_failure("running the throttle script"))?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }
}

impl RedisLimitStore {
    async fn finish(
        &self,
        reservation: &Reservation,
        token_delta: i64,
        request_delta: i64,
    ) -> Result<bool, IdentityError> {
        let mut invocation = self.settle.prepare_invoke();
        invocation.key(self.marker(reservation.user_id, reservation.id));
        for key in reservation
            .token_counters
            .iter()
            .chain(&reservation.request_counters)
        {
            invocation.key(key);
        }
        invocation
            .arg(token_delta)
            .arg(reservation.token_counters.len())
            .arg(request_delta);
        let mut conn = self.conn().await?;
        let done: u8 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_failure("running the settle script"))?;
        Ok(done == 1)
    }
}
