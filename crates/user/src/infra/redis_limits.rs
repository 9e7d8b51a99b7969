//! [`LimitStore`] on Redis: one Lua call checks and charges every rule of a request atomically,
//! so limits hold exactly across replicas and under concurrency; one Lua call settles it and
//! appends its ledger entry to the settlement stream, so a settlement that happened is never
//! lost by a crash of the process that made it. Every key of a call shares one hash tag (the
//! user's shard, [`shards`]), so the scripts also run on Redis Cluster. Durable counters
//! (quotas) missing from Redis are rebuilt from the PostgreSQL ledger before admission. A
//! reservation whose process died before settling is released by [`LimitStore::sweep`] once its
//! deadline has passed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::kv::{Keyspace, Multiplexed};
use redis::Script;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{redis_connection, redis_failure, shards};
use crate::domain::errors::{IdentityError, LimitState};
use crate::domain::limits::{Demand, LimitRule, Metric, Window};
use crate::domain::ports::{Ended, LimitStore, Reservation, UsageLedger};
use crate::domain::principal::Principal;
use crate::domain::user::UserId;

/// How long a marker outlives its deadline, should no sweeper run at all.
const MARKER_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Reservations released per shard and sweep (the next sweep takes the rest).
const SWEEP_BATCH: isize = 500;
/// Each admission attempt rebuilds at most one lapsed durable counter (the first the script
/// finds missing), so a call may need one attempt per durable counter, plus this many more for
/// counters that lapse again (their window ends) while the others are rebuilt.
const EXTRA_REBUILDS: usize = 2;

/// Redis-backed limits.
pub struct RedisLimitStore {
    conn: Multiplexed,
    keys: Keyspace,
    ledger: Arc<dyn UsageLedger>,
    hold: Duration,
    admit: Script,
    settle: Script,
    hit: Script,
}

impl RedisLimitStore {
    /// A store over the multiplexed connection `conn`, writing under `keys`, rebuilding quotas
    /// from `ledger`; a reservation not settled within `hold` is released by the sweeper.
    #[must_use]
    pub fn new(
        conn: Multiplexed,
        keys: Keyspace,
        ledger: Arc<dyn UsageLedger>,
        hold: Duration,
    ) -> Self {
        Self {
            conn,
            keys,
            ledger,
            hold,
            admit: Script::new(include_str!("limits.lua")),
            settle: Script::new(include_str!("settle.lua")),
            hit: Script::new(include_str!("hit.lua")),
        }
    }

    fn counter(&self, user: UserId, rule: &LimitRule, now: DateTime<Utc>) -> String {
        shards::counter(
            &self.keys,
            user,
            &format!(
                "{}:{}:{}",
                rule.name,
                rule.subject.tag(),
                rule.window.label(now)
            ),
        )
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
        let mut active: Vec<&LimitRule> = rules
            .iter()
            .filter(|r| r.metric == Metric::Requests || demand.tokens.is_some())
            .collect();
        // Token counters first: the marker names them in that order.
        active.sort_by_key(|r| r.metric != Metric::Tokens);
        let estimate = demand.tokens.unwrap_or(0);
        let keys: Vec<String> = active.iter().map(|r| self.counter(user, r, now)).collect();
        let id = Uuid::now_v7();
        let shard = shards::of(user);
        let marker = shards::marker(&self.keys, shard, id);
        let deadlines = shards::deadlines(&self.keys, shard);
        let deadline = now + chrono::Duration::from_std(self.hold).unwrap_or(chrono::Duration::MAX);
        let token_rules = active.iter().filter(|r| r.metric == Metric::Tokens).count();
        let durable = active.iter().filter(|r| r.durable).count();
        for _ in 0..=durable + EXTRA_REBUILDS {
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
            invocation
                .key(&marker)
                .key(&deadlines)
                .arg(millis(self.hold + MARKER_GRACE))
                .arg(deadline.timestamp_millis())
                .arg(id.to_string())
                .arg(estimate)
                .arg(token_rules);
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
        at: DateTime<Utc>,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError> {
        let delta = i128::from(actual_tokens) - i128::from(reservation.estimate);
        let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
        let actual = i64::try_from(actual_tokens).unwrap_or(i64::MAX);
        let entry = StreamEntry {
            reservation,
            ledger: Some((actual_tokens, at)),
            record,
        };
        self.finish(reservation, (delta, 0), (actual, 1), Some(&entry))
            .await
    }

    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<&[u8]>,
    ) -> Result<Ended, IdentityError> {
        let estimate = i64::try_from(reservation.estimate).unwrap_or(i64::MAX);
        let entry = record.map(|record| StreamEntry {
            reservation,
            ledger: None,
            record: Some(record),
        });
        self.finish(reservation, (-estimate, -1), (0, 0), entry.as_ref())
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, IdentityError> {
        let mut released = 0;
        for shard in 0..shards::SHARDS {
            let deadlines = shards::deadlines(&self.keys, shard);
            let mut conn = self.conn().await?;
            let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&deadlines)
                .arg("-inf")
                .arg(now.timestamp_millis())
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(redis_failure("listing expired reservations"))?;
            for id in due {
                let Ok(uuid) = Uuid::parse_str(&id) else {
                    tracing::warn!(reservation = %id, "dropping a malformed reservation deadline");
                    let _: i64 = redis::cmd("ZREM")
                        .arg(&deadlines)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await
                        .map_err(redis_failure("dropping a reservation deadline"))?;
                    continue;
                };
                let marker = shards::marker(&self.keys, shard, uuid);
                let held: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(&marker)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_failure("reading a reservation"))?;
                let field = |name: &str| held.get(name).and_then(|v| v.parse::<i64>().ok());
                let (estimate, tokens, count) = (
                    field("e").unwrap_or(0),
                    field("t").unwrap_or(0),
                    field("n").unwrap_or(0),
                );
                let mut invocation = self.settle.prepare_invoke();
                invocation
                    .key(&marker)
                    .key(&deadlines)
                    .key(shards::stream(&self.keys, shard));
                for i in 1..=count {
                    if let Some(counter) = held.get(&format!("c{i}")) {
                        invocation.key(counter);
                    }
                }
                invocation
                    .arg(&id)
                    .arg(tokens)
                    .arg(-estimate)
                    .arg(-1)
                    .arg(0)
                    .arg(0)
                    .arg("sweep");
                let swept: u8 = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_failure("releasing an expired reservation"))?;
                if swept == 1 {
                    tracing::info!(reservation = %id, tokens = estimate, "released a reservation its process never settled");
                    released += 1;
                }
            }
        }
        Ok(released)
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

/// What a settlement appends to the stream.
struct StreamEntry<'a> {
    reservation: &'a Reservation,
    /// Tokens consumed and when, for the ledger (`None`: nothing was consumed).
    ledger: Option<(u64, DateTime<Utc>)>,
    /// The caller's record of the call.
    record: Option<&'a [u8]>,
}

impl RedisLimitStore {
    /// Runs the settle script: `held` deltas (tokens, requests) while the reservation is held,
    /// `late` ones once the sweeper released it; appends `entry` to the user's shard stream.
    async fn finish(
        &self,
        reservation: &Reservation,
        held: (i64, i64),
        late: (i64, i64),
        entry: Option<&StreamEntry<'_>>,
    ) -> Result<Ended, IdentityError> {
        let shard = shards::of(reservation.user_id);
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(shards::marker(&self.keys, shard, reservation.id))
            .key(shards::deadlines(&self.keys, shard))
            .key(shards::stream(&self.keys, shard));
        for key in reservation
            .token_counters
            .iter()
            .chain(&reservation.request_counters)
        {
            invocation.key(key);
        }
        invocation
            .arg(reservation.id.to_string())
            .arg(reservation.token_counters.len())
            .arg(held.0)
            .arg(held.1)
            .arg(late.0)
            .arg(late.1)
            .arg("end");
        if let Some(entry) = entry {
            super::stream::append_fields(
                &mut invocation,
                entry.reservation,
                entry.ledger,
                entry.record,
            );
        }
        let mut conn = self.conn().await?;
        let ended: u8 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_failure("running the settle script"))?;
        Ok(match ended {
            1 => Ended::Held,
            2 => Ended::Swept,
            _ => Ended::Gone,
        })
    }
}
