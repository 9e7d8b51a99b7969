//! How the Redis keys of limits and settlements are sharded. Every key one Lua call touches
//! carries the same hash tag, the user's shard, so each call stays in one hash slot and runs
//! unchanged on Redis Cluster; the settlement stream is sharded the same way, one stream per
//! shard, so settling a reservation and appending its ledger entry is one atomic call.

use maas_shared::kv::Keyspace;
use uuid::Uuid;

use crate::domain::user::UserId;

/// Number of shards (hash slots used) of limit counters and settlement streams.
pub const SHARDS: u16 = 16;

/// The shard of `user`'s keys (stable across processes and versions).
#[must_use]
pub fn of(user: UserId) -> u16 {
    u16::try_from(user.as_uuid().as_u128() % u128::from(SHARDS)).unwrap_or(0)
}

/// The hash tag of `shard`.
fn tag(shard: u16) -> String {
    format!("{{s{shard:02}}}")
}

/// A limit counter of `user`.
#[must_use]
pub fn counter(keys: &Keyspace, user: UserId, name: &str) -> String {
    keys.key(&format!("rl:{}:{user}:{name}", tag(of(user))))
}

/// The marker of reservation `id` (what to give back if it is never settled).
#[must_use]
pub fn marker(keys: &Keyspace, shard: u16, id: Uuid) -> String {
    keys.key(&format!("rl:{}:resv:{id}", tag(shard)))
}

/// The sorted set of the shard's open reservations by deadline.
#[must_use]
pub fn deadlines(keys: &Keyspace, shard: u16) -> String {
    keys.key(&format!("rl:{}:deadlines", tag(shard)))
}

/// The shard's settlement stream.
#[must_use]
pub fn stream(keys: &Keyspace, shard: u16) -> String {
    keys.key(&format!("ledger:{}", tag(shard)))
}

/// The count of the shard's entries drained (acknowledged with the count in one script).
#[must_use]
pub fn drained(keys: &Keyspace, shard: u16) -> String {
    keys.key(&format!("ledger:{}:counts", tag(shard)))
}

/// Entries that could not be read, set aside for an operator (one key: no Lua call uses it).
#[must_use]
pub fn dead_letters(keys: &Keyspace) -> String {
    keys.key("ledger:dead")
}

/// The count of failed writes and unreadable entries, all shards together.
#[must_use]
pub fn counts(keys: &Keyspace) -> String {
    keys.key("ledger:counts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_user_shares_one_hash_tag() {
        let keys = Keyspace::new("t:");
        let user = UserId::from_uuid(Uuid::from_u128(0x1234_0000_0000_0000_0000_0000_0000_0023));
        let shard = of(user);
        assert_eq!(shard, 3, "0x23 % 16");
        let id = Uuid::from_u128(7);
        for key in [
            counter(&keys, user, "daily:u:2026-12-02"),
            marker(&keys, shard, id),
            deadlines(&keys, shard),
            stream(&keys, shard),
        ] {
            assert!(key.starts_with("t:"), "{key}");
            assert_eq!(key.matches("{s03}").count(), 1, "{key}");
            assert_eq!(key.matches('{').count(), 1, "one tag only: {key}");
        }
    }
}
