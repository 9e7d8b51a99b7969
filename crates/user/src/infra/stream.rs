//! [`SettlementStream`] on Redis Streams: one stream per shard (appended to by the settle
//! script, atomically with the counters), read by a consumer group. An entry is acknowledged and
//! deleted only once its effects are committed to PostgreSQL; one delivered to a reader that
//! died is claimed by another after an idle time (`XAUTOCLAIM`). An entry that cannot be read is
//! moved to a dead-letter stream and counted as failed, never retried forever or dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone as _, Utc};
use maas_shared::kv::{Keyspace, Multiplexed};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{ScriptInvocation, Value};
use uuid::Uuid;

use super::{redis_connection, redis_failure, shards};
use crate::domain::api_key::ApiKeyId;
use crate::domain::errors::IdentityError;
use crate::domain::ports::{
    LedgerEntry, Reservation, Settled, SettlementStream, StreamPosition, StreamStats,
};
use crate::domain::user::UserId;

/// The consumer group every drain joins.
const GROUP: &str = "ledger";

/// Acknowledges one shard's committed entries and counts them, atomically (`ack.lua`).
const ACK_SCRIPT: &str = include_str!("ack.lua");

/// Adds the stream entry of a settlement (or of a release with a record) to a settle script
/// call: field/value pairs after the script's own arguments.
pub(crate) fn append_fields(
    invocation: &mut ScriptInvocation<'_>,
    reservation: &Reservation,
    ledger: Option<(u64, DateTime<Utc>)>,
    record: Option<&[u8]>,
) {
    invocation
        .arg("r")
        .arg(reservation.id.to_string())
        .arg("u")
        .arg(reservation.user_id.to_string());
    if let Some(key) = reservation.key_id {
        invocation.arg("k").arg(key.to_string());
    }
    if let Some((tokens, at)) = ledger {
        invocation
            .arg("t")
            .arg(tokens)
            .arg("at")
            .arg(at.timestamp_millis());
    }
    if let Some(record) = record {
        invocation.arg("rec").arg(record);
    }
}

/// Why an entry could not be read.
#[derive(Debug)]
struct Unreadable(&'static str);

fn text(entry: &StreamId, field: &str) -> Option<String> {
    entry.get::<String>(field)
}

/// Reads one entry back.
fn parse(shard: u16, entry: &StreamId) -> Result<Settled, Unreadable> {
    let request_id = text(entry, "r")
        .and_then(|r| Uuid::parse_str(&r).ok())
        .ok_or(Unreadable("no reservation id"))?;
    let user_id = text(entry, "u")
        .and_then(|u| u.parse::<UserId>().ok())
        .ok_or(Unreadable("no user id"))?;
    let key_id = match text(entry, "k") {
        None => None,
        Some(k) => Some(
            k.parse::<ApiKeyId>()
                .map_err(|_| Unreadable("malformed key id"))?,
        ),
    };
    let ledger = match text(entry, "t") {
        None => None,
        Some(tokens) => {
            let tokens = tokens
                .parse::<u64>()
                .map_err(|_| Unreadable("malformed tokens"))?;
            let at = text(entry, "at")
                .and_then(|at| at.parse::<i64>().ok())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .ok_or(Unreadable("malformed time"))?;
            Some(LedgerEntry {
                request_id,
                user_id,
                key_id,
                tokens,
                requests: 1,
                at,
            })
        }
    };
    let record = match entry.map.get("rec") {
        None => None,
        Some(value) => Some(
            redis::from_redis_value_ref::<Vec<u8>>(value)
                .map_err(|_| Unreadable("malformed record"))?,
        ),
    };
    if ledger.is_none() && record.is_none() {
        return Err(Unreadable("neither a ledger entry nor a record"));
    }
    Ok(Settled {
        position: StreamPosition {
            shard,
            id: entry.id.clone(),
        },
        entry: ledger,
        record,
    })
}

/// The settlement stream on Redis.
pub struct RedisSettlementStream {
    conn: Multiplexed,
    keys: Keyspace,
    groups_ready: AtomicBool,
}

impl RedisSettlementStream {
    /// The stream under `keys`, over the shared connection.
    #[must_use]
    pub fn new(conn: Multiplexed, keys: Keyspace) -> Self {
        Self {
            conn,
            keys,
            groups_ready: AtomicBool::new(false),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, IdentityError> {
        redis_connection(&self.conn).await
    }

    /// Creates the consumer group on every shard's stream (from its first entry, so entries
    /// appended before any drain ran are read too), once per process.
    async fn ensure_groups(&self, conn: &mut ConnectionManager) -> Result<(), IdentityError> {
        if self.groups_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        for shard in 0..shards::SHARDS {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(shards::stream(&self.keys, shard))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            match created {
                Ok(()) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => return Err(redis_failure("creating the ledger consumer group")(err)),
            }
        }
        self.groups_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// A failure that means the group is gone (the stream was deleted): recreate it next time.
    fn forget_groups_on(&self, err: &redis::RedisError) {
        if err.code() == Some("NOGROUP") {
            self.groups_ready.store(false, Ordering::Release);
        }
    }

    /// Turns entries of `shard` into settlements, setting aside those that cannot be read.
    async fn settle_entries(
        &self,
        conn: &mut ConnectionManager,
        shard: u16,
        entries: &[StreamId],
        out: &mut Vec<Settled>,
    ) -> Result<(), IdentityError> {
        let mut unreadable = Vec::new();
        for entry in entries {
            match parse(shard, entry) {
                Ok(settled) => out.push(settled),
                Err(Unreadable(why)) => {
                    tracing::error!(shard, entry = %entry.id, why, "unreadable settlement entry; moved to the dead letters");
                    unreadable.push(entry);
                }
            }
        }
        if unreadable.is_empty() {
            return Ok(());
        }
        let stream = shards::stream(&self.keys, shard);
        let mut pipe = redis::pipe();
        for entry in &unreadable {
            let mut add = redis::cmd("XADD");
            add.arg(shards::dead_letters(&self.keys))
                .arg("*")
                .arg("shard")
                .arg(shard)
                .arg("entry")
                .arg(&entry.id);
            for (field, value) in &entry.map {
                add.arg(field).arg(value_bytes(value));
            }
            pipe.add_command(add).ignore();
            pipe.cmd("XACK")
                .arg(&stream)
                .arg(GROUP)
                .arg(&entry.id)
                .ignore();
            pipe.cmd("XDEL").arg(&stream).arg(&entry.id).ignore();
        }
        pipe.cmd("HINCRBY")
            .arg(shards::counts(&self.keys))
            .arg("failed")
            .arg(unreadable.len())
            .ignore();
        pipe.query_async::<()>(conn)
            .await
            .map_err(redis_failure("setting aside unreadable settlement entries"))
    }
}

fn value_bytes(value: &Value) -> Vec<u8> {
    redis::from_redis_value_ref::<Vec<u8>>(value)
        .unwrap_or_else(|_| format!("{value:?}").into_bytes())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl SettlementStream for RedisSettlementStream {
    async fn read(&self, consumer: &str, max: usize) -> Result<Vec<Settled>, IdentityError> {
        let mut conn = self.conn().await?;
        self.ensure_groups(&mut conn).await?;
        let per_shard = max.div_ceil(usize::from(shards::SHARDS)).max(1);
        let mut pipe = redis::pipe();
        for shard in 0..shards::SHARDS {
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(per_shard)
                .arg("STREAMS")
                .arg(shards::stream(&self.keys, shard))
                .arg(">");
        }
        let replies: Vec<Option<StreamReadReply>> =
            pipe.query_async(&mut conn).await.map_err(|err| {
                self.forget_groups_on(&err);
                redis_failure("reading the settlement stream")(err)
            })?;
        let mut out = Vec::new();
        for (shard, reply) in (0..shards::SHARDS).zip(replies) {
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                self.settle_entries(&mut conn, shard, &key.ids, &mut out)
                    .await?;
            }
        }
        Ok(out)
    }

    async fn claim(
        &self,
        consumer: &str,
        idle: Duration,
        max: usize,
    ) -> Result<Vec<Settled>, IdentityError> {
        let mut conn = self.conn().await?;
        self.ensure_groups(&mut conn).await?;
        let per_shard = max.div_ceil(usize::from(shards::SHARDS)).max(1);
        let mut pipe = redis::pipe();
        for shard in 0..shards::SHARDS {
            pipe.cmd("XAUTOCLAIM")
                .arg(shards::stream(&self.keys, shard))
                .arg(GROUP)
                .arg(consumer)
                .arg(millis(idle))
                .arg("0-0")
                .arg("COUNT")
                .arg(per_shard);
        }
        let replies: Vec<StreamAutoClaimReply> =
            pipe.query_async(&mut conn).await.map_err(|err| {
                self.forget_groups_on(&err);
                redis_failure("claiming settlement entries")(err)
            })?;
        let mut out = Vec::new();
        for (shard, reply) in (0..shards::SHARDS).zip(replies) {
            if !reply.claimed.is_empty() {
                tracing::info!(
                    shard,
                    entries = reply.claimed.len(),
                    consumer,
                    "claimed settlement entries of a reader that stopped"
                );
            }
            self.settle_entries(&mut conn, shard, &reply.claimed, &mut out)
                .await?;
        }
        Ok(out)
    }

    async fn ack(&self, positions: &[StreamPosition]) -> Result<u64, IdentityError> {
        if positions.is_empty() {
            return Ok(0);
        }
        let mut by_shard: HashMap<u16, Vec<&str>> = HashMap::new();
        for position in positions {
            by_shard
                .entry(position.shard)
                .or_default()
                .push(&position.id);
        }
        // One script per shard (its keys share the shard's hash tag), all in one round trip.
        let mut pipe = redis::pipe();
        for (shard, ids) in &by_shard {
            pipe.cmd("EVAL")
                .arg(ACK_SCRIPT)
                .arg(2)
                .arg(shards::stream(&self.keys, *shard))
                .arg(shards::drained(&self.keys, *shard))
                .arg(GROUP)
                .arg(ids);
        }
        let mut conn = self.conn().await?;
        let acked: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(redis_failure("acknowledging settlement entries"))?;
        Ok(acked.iter().sum())
    }

    async fn count_failed(&self, failed: u64) -> Result<(), IdentityError> {
        let mut conn = self.conn().await?;
        redis::cmd("HINCRBY")
            .arg(shards::counts(&self.keys))
            .arg("failed")
            .arg(failed)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_failure("counting failed settlement writes"))
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<StreamStats, IdentityError> {
        let mut conn = self.conn().await?;
        self.ensure_groups(&mut conn).await?;
        let mut pipe = redis::pipe();
        for shard in 0..shards::SHARDS {
            let stream = shards::stream(&self.keys, shard);
            pipe.cmd("XLEN").arg(&stream);
            pipe.cmd("XPENDING").arg(&stream).arg(GROUP);
            pipe.cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        for shard in 0..shards::SHARDS {
            pipe.cmd("HGET")
                .arg(shards::drained(&self.keys, shard))
                .arg("drained");
        }
        pipe.cmd("HGET")
            .arg(shards::counts(&self.keys))
            .arg("failed");
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|err| {
            self.forget_groups_on(&err);
            redis_failure("reading the settlement stream's state")(err)
        })?;
        let mut stats = StreamStats::default();
        let mut oldest: Option<i64> = None;
        let mut replies = replies.into_iter();
        for _ in 0..shards::SHARDS {
            let (Some(len), Some(pending), Some(first)) =
                (replies.next(), replies.next(), replies.next())
            else {
                break;
            };
            stats.backlog += redis::from_redis_value::<u64>(len).unwrap_or(0);
            stats.pending += redis::from_redis_value::<redis::streams::StreamPendingReply>(pending)
                .map_or(0, |p| u64::try_from(p.count()).unwrap_or(u64::MAX));
            let first: redis::streams::StreamRangeReply =
                redis::from_redis_value(first).unwrap_or_default();
            if let Some(ms) = first
                .ids
                .first()
                .and_then(|e| e.id.split('-').next())
                .and_then(|ms| ms.parse::<i64>().ok())
            {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        }
        for _ in 0..shards::SHARDS {
            let drained: Option<u64> = replies
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .flatten();
            stats.drained += drained.unwrap_or(0);
        }
        let failed: Option<u64> = replies
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .flatten();
        stats.failed = failed.unwrap_or(0);
        if let Some(ms) = oldest {
            let age_ms = (now.timestamp_millis() - ms).max(0);
            #[expect(clippy::cast_precision_loss, reason = "a lag in seconds for a gauge")]
            {
                stats.lag_seconds = age_ms as f64 / 1000.0;
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> StreamId {
        StreamId {
            id: "1700000000000-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.to_vec())))
                .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    #[test]
    fn a_settlement_reads_back_as_its_ledger_entry_and_record() {
        let id = Uuid::now_v7();
        let user = UserId::new();
        let settled = parse(
            3,
            &entry(&[
                ("r", id.to_string().as_bytes()),
                ("u", user.to_string().as_bytes()),
                ("t", b"42"),
                ("at", b"1764633600000"),
                ("rec", b"{\"x\":1}"),
            ]),
        )
        .unwrap();
        assert_eq!(
            settled.position,
            StreamPosition {
                shard: 3,
                id: "1700000000000-0".into()
            }
        );
        let ledger = settled.entry.unwrap();
        assert_eq!(
            (ledger.request_id, ledger.user_id, ledger.key_id),
            (id, user, None)
        );
        assert_eq!((ledger.tokens, ledger.requests), (42, 1));
        assert_eq!(ledger.at.timestamp_millis(), 1_764_633_600_000);
        assert_eq!(settled.record.as_deref(), Some(&b"{\"x\":1}"[..]));
    }

    #[test]
    fn a_release_with_a_record_has_no_ledger_entry_and_garbage_is_refused() {
        let id = Uuid::now_v7().to_string();
        let user = UserId::new().to_string();
        let release = parse(
            0,
            &entry(&[("r", id.as_bytes()), ("u", user.as_bytes()), ("rec", b"x")]),
        )
        .unwrap();
        assert_eq!(release.entry, None);
        assert_eq!(release.record.as_deref(), Some(&b"x"[..]));
        for (fields, why) in [
            (
                vec![("u", user.as_bytes()), ("rec", &b"x"[..])],
                "no reservation id",
            ),
            (vec![("r", id.as_bytes()), ("rec", &b"x"[..])], "no user id"),
            (
                vec![
                    ("r", id.as_bytes()),
                    ("u", user.as_bytes()),
                    ("t", &b"-1"[..]),
                ],
                "malformed tokens",
            ),
            (
                vec![("r", id.as_bytes()), ("u", user.as_bytes())],
                "neither a ledger entry nor a record",
            ),
        ] {
            let err = parse(0, &entry(&fields)).unwrap_err();
            assert_eq!(err.0, why);
        }
    }
}
