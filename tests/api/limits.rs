//! Quotas and rate limits: exact under concurrency and across replicas, with the documented
//! headers; the token gate settles and releases exactly.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, TimeZone as _, Timelike as _, Utc};
use futures_util::future::join_all;
use maas_shared::clock::{Clock as _, ManualClock, SystemClock};
use maas_tests::fake_upstream::{Behaviour, FakeUpstream};
use maas_tests::{TestApp, eventually};
use maas_user::app::auth::Authenticator as _;
use maas_user::app::quotas::QuotaGate as _;
use maas_user::contract::{Credential, Demand, IdentityError};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Sets `user`'s policy, then waits until the app (and `replicas`) admit the user under it,
/// watched with `token` (the user's access token: watching costs no request).
async fn set_quota(
    app: &TestApp,
    admin: &str,
    user: uuid::Uuid,
    policy: Value,
    token: &str,
    replicas: &[&TestApp],
) {
    let resp = app
        .request(Method::PUT, &format!("/api/v1/users/{user}/quota"))
        .bearer_auth(admin)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    app.wait_for_user_policy(token, &policy).await;
    for replica in replicas {
        replica.wait_for_user_policy(token, &policy).await;
    }
}

/// Seconds left in the current fixed window of `period` seconds (a minute or an hour).
fn left_in_window(period: u32) -> u32 {
    let now = SystemClock.now();
    period - (now.minute() * 60 + now.second()) % period
}

/// Fixed windows: don't start a counting test in the last seconds of a window of `period` s.
/// The app reads the system clock, so this waits (at most ten seconds) for the next window.
async fn away_from_boundary(period: u32) {
    let room = eventually(Duration::from_secs(12), || async {
        (left_in_window(period) >= 10).then_some(())
    })
    .await;
    assert_eq!(room, Some(()), "the {period} s window never rolled over");
}

async fn away_from_the_hour_boundary() {
    away_from_boundary(3600).await;
}

#[tokio::test]
async fn sixty_four_concurrent_requests_with_room_for_one_admit_exactly_one() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (oscar, token) = app.user_with_token("oscar", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    set_quota(
        &app,
        &admin,
        oscar,
        json!({"requests_total_quota": 1}),
        &token,
        &[],
    )
    .await;

    let calls = (0..64).map(|_| app.get_as(&key, "/api/v1/me"));
    let statuses: Vec<StatusCode> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (1, 63), "{statuses:?}");

    let resp = app.get_as(&key, "/api/v1/me").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "a lifetime quota never resets"
    );
    assert_eq!(resp.headers()["x-ratelimit-limit"], "1");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded");
}

#[tokio::test]
async fn a_rate_limit_admits_exactly_its_limit_across_two_replicas() {
    away_from_the_hour_boundary().await;
    let app = TestApp::spawn().await;
    let replica = app.spawn_replica().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (pia, token) = app.user_with_token("pia", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    set_quota(
        &app,
        &admin,
        pia,
        json!({"requests_per_hour": 10}),
        &token,
        &[&replica],
    )
    .await;

    let calls = (0..30).map(|i| {
        let target = if i % 2 == 0 { &app } else { &replica };
        target.get_as(&key, "/api/v1/me")
    });
    let responses = join_all(calls).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 10);
    let limited: Vec<&reqwest::Response> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(limited.len(), 20);
    for resp in limited {
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "10");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(
            resp.headers()["x-ratelimit-policy"],
            "user.requests_per_hour"
        );
        assert_eq!(
            resp.headers()["x-ratelimit-reset"].to_str().unwrap(),
            retry.to_string()
        );
    }

    // Every limiter key carries a TTL.
    let redis = app.redis();
    let mut conn = redis.get().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rl:*", app.keyspace.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    // One counter per request rule (`rl:{shard}:<user>:<rule>:...`: the hourly limit and the
    // default daily one); no leftover reservation markers, since every admitted call settled.
    let mut rules: Vec<&str> = keys
        .iter()
        .map(|k| {
            k.strip_prefix(app.keyspace.prefix())
                .and_then(|k| k.split(':').nth(3))
                .unwrap_or(k)
        })
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        ["user.requests_per_day", "user.requests_per_hour"],
        "{keys:?}"
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
}

#[tokio::test]
async fn key_limits_apply_on_top_of_the_users() {
    away_from_boundary(60).await;
    let app = TestApp::spawn().await;
    let (_, token) = app.user_with_token("quinn", &["developer"]).await;
    let (_, slow_key) = app
        .create_key(
            &token,
            json!({"name": "slow", "limits": {"requests_per_minute": 3}}),
        )
        .await;
    let (_, other_key) = app.create_key(&token, json!({"name": "other"})).await;
    let mut statuses = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..5 {
        let resp = app.get_as(&slow_key, "/api/v1/me").await;
        statuses.push(resp.status());
        if resp.status() != StatusCode::OK {
            let policy = resp.headers()["x-ratelimit-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = resp.json().await.unwrap();
            refusals.push((policy, body["code"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let refused = (
        "key.requests_per_minute".to_owned(),
        "rate_limited".to_owned(),
    );
    assert_eq!(refusals, [refused.clone(), refused]);
    assert_eq!(
        app.get_as(&other_key, "/api/v1/me").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_limiter_fails_closed_when_redis_is_down() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (_, token) = app.user_with_token("ursula", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    let upstream = FakeUpstream::spawn(Behaviour::default());
    let provider =
        json!({"name": "fake", "base_url": upstream.base_url, "models": [{"model": "tiny"}]});
    let created = app
        .request(Method::POST, "/api/v1/providers")
        .bearer_auth(&admin)
        .json(&provider)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    // A replica that cannot reach Redis (nothing listens on port 1 of loopback).
    let cut_off = app
        .spawn_replica_with(|s| s.sections.redis.url = "redis://127.0.0.1:1/".to_owned().into())
        .await;

    // Calls that must be counted are refused, never let through uncounted: 503
    // `dependency_unavailable` with `Retry-After`, in each API's shape.
    let started = std::time::Instant::now();
    let resp = cut_off.get_as(&key, "/api/v1/me").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "type": "https://docs.maas.dev/errors#dependency_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "a platform dependency is unavailable; retry shortly",
            "code": "dependency_unavailable",
        })
    );
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]});
    let resp = cut_off.post_as(&key, "/v1/chat/completions", &chat).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "message": "a platform dependency is unavailable; retry shortly",
            "type": "api_error",
            "code": "dependency_unavailable",
            "param": null,
        }})
    );
    assert_eq!(
        upstream.seen.requests.load(Ordering::SeqCst),
        0,
        "no call goes upstream unmetered"
    );
    // Both refusals come at once (a refused connection is not retried with back-off).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );
    // Access tokens are not metered: they still work without Redis.
    let me = cut_off.get_as(&token, "/api/v1/me").await;
    assert_eq!(me.status(), StatusCode::OK);
    // The healthy replica serves the same key and model.
    let resp = app.post_as(&key, "/v1/chat/completions", &chat).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn me_quota_reports_rules_and_usage() {
    away_from_the_hour_boundary().await;
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (rita, token) = app.user_with_token("rita", &["developer"]).await;
    set_quota(
        &app,
        &admin,
        rita,
        json!({"requests_per_hour": 40, "tokens_per_month_quota": 5000}),
        &token,
        &[],
    )
    .await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    for _ in 0..3 {
        assert_eq!(
            app.get_as(&key, "/api/v1/me").await.status(),
            StatusCode::OK
        );
    }
    let body: Value = app
        .get_as(&key, "/api/v1/me/quota")
        .await
        .json()
        .await
        .unwrap();
    let now = SystemClock.now();
    let limits = body["limits"].as_array().unwrap();
    let rules: Vec<(&str, u64)> = limits
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["limit"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [
            ("user.requests_per_hour", 40),
            ("user.requests_per_day", 200),
            ("user.tokens_per_month_quota", 5000)
        ],
        "the key has no rules of its own; the unset per-minute default is off"
    );
    let resets_at = |limit: &Value| {
        DateTime::parse_from_rfc3339(limit["resets_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let hour_start = now
        .date_naive()
        .and_hms_opt(now.hour(), 0, 0)
        .unwrap()
        .and_utc();
    let day_start = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let next_month = if now.month() == 12 {
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0)
    }
    .unwrap();
    let hourly = limits
        .iter()
        .find(|l| l["name"] == "user.requests_per_hour")
        .unwrap();
    assert_eq!(hourly["limit"], 40);
    assert_eq!(hourly["used"], 4, "three calls plus this one: {body}");
    assert_eq!(hourly["quota"], false);
    assert_eq!(hourly["remaining"], 36);
    assert_eq!(resets_at(hourly), hour_start + chrono::Duration::hours(1));
    let daily = limits
        .iter()
        .find(|l| l["name"] == "user.requests_per_day")
        .unwrap();
    assert_eq!(daily["limit"], 200, "the platform default applies");
    assert_eq!(daily["used"], 4);
    assert_eq!(resets_at(daily), day_start + chrono::Duration::days(1));
    let monthly = limits
        .iter()
        .find(|l| l["name"] == "user.tokens_per_month_quota")
        .unwrap();
    assert_eq!(
        (monthly["used"].as_u64(), monthly["quota"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(resets_at(monthly), next_month);
}

#[tokio::test]
async fn the_token_gate_reserves_settles_and_releases_exactly() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (sam, token) = app.user_with_token("sam", &["developer"]).await;
    let (_, key) = app.create_key(&token, json!({"name": "k"})).await;
    set_quota(
        &app,
        &admin,
        sam,
        json!({"tokens_per_day_quota": 1000}),
        &token,
        &[],
    )
    .await;
    // A clock that stands still: the whole test runs inside one day's window, even at midnight.
    let identity = app
        .identity_with_clock(Arc::new(ManualClock::new(SystemClock.now())))
        .await;
    let principal = identity
        .auth
        .authenticate(Credential::Bearer(&key))
        .await
        .unwrap();
    let gate = identity.quotas.clone();

    // Room for exactly one reservation of 600 out of 1000: 64 racers, one winner.
    let racers = (0..64).map(|_| gate.reserve(&principal, Demand { tokens: Some(600) }));
    let results = join_all(racers).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1);
    // Every loser is refused by the daily token quota, with 400 of 1000 left.
    let losers: Vec<&IdentityError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(losers.len(), 63);
    for err in losers {
        assert_eq!(quota_refusal(err), Some((1000, 400)), "{err:?}");
    }

    // Settling with the real usage (150) frees the unused estimate; settling twice changes nothing.
    gate.settle(winners[0], 150, None).await.unwrap();
    gate.settle(winners[0], 150, None).await.unwrap();
    let second = gate
        .reserve(&principal, Demand { tokens: Some(850) })
        .await
        .unwrap();
    let full = gate.reserve(&principal, Demand { tokens: Some(1) }).await;
    assert_eq!(
        full.as_ref().err().and_then(quota_refusal),
        Some((1000, 0)),
        "1000 of 1000 are taken: {full:?}"
    );
    gate.release(&second, None).await.unwrap();
    gate.release(&second, None).await.unwrap();
    let third = gate
        .reserve(&principal, Demand { tokens: Some(850) })
        .await
        .unwrap();
    gate.settle(&third, 850, None).await.unwrap();
    let full = gate.reserve(&principal, Demand { tokens: Some(1) }).await;
    assert_eq!(
        full.as_ref().err().and_then(quota_refusal),
        Some((1000, 0)),
        "150 + 850 settled: {full:?}"
    );

    // The ledger holds the settled usage durably (written in the background).
    let totals = maas_tests::eventually(Duration::from_secs(3), || async {
        let usage = identity.quotas.usage(&principal).await.unwrap();
        let daily = usage
            .iter()
            .find(|u| u.rule.name == "user.tokens_per_day_quota")
            .unwrap();
        (daily.used == 1000).then_some(daily.used)
    })
    .await;
    assert_eq!(totals, Some(1000));
    let db = app.db().await;
    use sea_orm::ConnectionTrait as _;
    let ledger = maas_tests::eventually(Duration::from_secs(3), || async {
        let row = db
            .query_one(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT COALESCE(SUM(tokens), 0)::bigint AS t, COUNT(*)::bigint AS n FROM usage_ledger",
            ))
            .await
            .unwrap()
            .unwrap();
        let (tokens, rows): (i64, i64) = (row.try_get("", "t").unwrap(), row.try_get("", "n").unwrap());
        (rows == 2).then_some(tokens)
    })
    .await;
    assert_eq!(ledger, Some(1000), "two settled calls, 150 + 850 tokens");
}

/// `(limit, remaining)` when `err` is a refusal by the daily token quota, else `None`.
fn quota_refusal(err: &IdentityError) -> Option<(u64, u64)> {
    let IdentityError::QuotaExceeded(state) = err else {
        return None;
    };
    (state.name == "user.tokens_per_day_quota" && state.reset_after.is_some())
        .then_some((state.limit, state.remaining))
}

#[tokio::test]
async fn caps_beyond_what_a_bigint_holds_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (vic, token) = app.user_with_token("vic", &["developer"]).await;
    let (key, _) = app.create_key(&token, json!({"name": "k"})).await;
    let fields = |body: &Value| -> Vec<(String, String, String)> {
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["field"].as_str().unwrap().to_owned(),
                    e["code"].as_str().unwrap().to_owned(),
                    e["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let refused =
        |field: &str, message: &str| (field.to_owned(), "range".to_owned(), message.to_owned());
    let at_most = "must be at most 9223372036854775807";
    let put = |path: String, body: Value| {
        app.request(Method::PUT, &path)
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let user_quota = format!("/api/v1/users/{vic}/quota");

    // 2^64 − 1 and 2^63: refused, naming every field.
    let resp = put(
        user_quota.clone(),
        json!({"tokens_total_quota": u64::MAX, "requests_per_minute": 1_u64 << 63, "requests_per_hour": 5}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");
    assert_eq!(
        fields(&body),
        [
            refused(
                "requests_per_minute",
                "must be between 1 and 9223372036854775807"
            ),
            refused("tokens_total_quota", at_most),
        ]
    );
    let resp = put(
        format!("/api/v1/users/{vic}/keys/{key}/quota"),
        json!({"requests_total_quota": u64::MAX}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(fields(&body), [refused("requests_total_quota", at_most)]);
    // Beyond u64: no such number in the schema.
    let resp = app
        .request(Method::PUT, &user_quota)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"tokens_total_quota": 18446744073709551616}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed", "{body}");

    // Key limits at creation, by the owner and by an admin.
    for (credential, path) in [
        (&token, "/api/v1/me/keys".to_owned()),
        (&admin, format!("/api/v1/users/{vic}/keys")),
    ] {
        let resp = app
            .post_as(
                credential,
                &path,
                &json!({"name": "big", "limits": {"requests_per_minute": u64::MAX, "tokens_per_minute": 10}}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed", "{body}");
        assert_eq!(
            fields(&body),
            [refused(
                "limits.requests_per_minute",
                "must be between 1 and 9223372036854775807"
            )]
        );
    }
    let keys: Value = app
        .get_as(&token, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys["data"].as_array().unwrap().len(),
        1,
        "no key was made: {keys}"
    );

    // The largest cap is stored exactly and read back as it was set.
    let max = json!({"tokens_total_quota": i64::MAX, "requests_per_hour": i64::MAX});
    let resp = put(user_quota.clone(), max.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stored: Value = app.get_as(&admin, &user_quota).await.json().await.unwrap();
    assert_eq!(stored["tokens_total_quota"], i64::MAX, "{stored}");
    assert_eq!(stored["requests_per_hour"], i64::MAX, "{stored}");
    app.create_key(
        &token,
        json!({"name": "max", "limits": {"tokens_per_minute": i64::MAX}}),
    )
    .await;
    let me_keys: Value = app
        .get_as(&token, "/api/v1/me/keys")
        .await
        .json()
        .await
        .unwrap();
    let max_key = me_keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "max")
        .unwrap();
    assert_eq!(
        max_key["limits"]["tokens_per_minute"],
        i64::MAX,
        "{me_keys}"
    );
}

#[tokio::test]
async fn whole_numbers_written_as_floats_are_caps_and_fractions_are_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (vic, _) = app.user_with_token("vic", &["developer"]).await;
    let path = format!("/api/v1/users/{vic}/quota");
    let put = |body: Value| {
        app.request(Method::PUT, &path)
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    // JSON Schema's `integer` includes 5.0: it is the cap 5.
    let resp = put(json!({"requests_per_hour": 5.0, "tokens_total_quota": 1.2e3}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stored: Value = app.get_as(&admin, &path).await.json().await.unwrap();
    assert_eq!(stored["requests_per_hour"], 5, "{stored}");
    assert_eq!(stored["tokens_total_quota"], 1200, "{stored}");

    for bad in [json!(5.5), json!(-1.0), json!(1e30), json!("5")] {
        let resp = put(json!({"requests_per_hour": bad})).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed", "{bad}: {body}");
    }
    let stored: Value = app.get_as(&admin, &path).await.json().await.unwrap();
    assert_eq!(stored["requests_per_hour"], 5, "unchanged: {stored}");
}

#[tokio::test]
async fn a_first_call_under_every_durable_quota_of_user_and_key_is_admitted() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.user_with_token("root", &["admin"]).await;
    let (ada, token) = app.user_with_token("ada", &["developer"]).await;
    let (key_id, key) = app.create_key(&token, json!({"name": "k"})).await;
    // Nine or more durable counters, none in Redis yet: each is rebuilt from the ledger.
    let quotas = json!({"tokens_per_day_quota": 10_000, "tokens_per_month_quota": 10_000,
                        "tokens_total_quota": 10_000, "requests_per_month_quota": 100,
                        "requests_total_quota": 100});
    set_quota(&app, &admin, ada, quotas.clone(), &token, &[]).await;
    let resp = app
        .request(
            Method::PUT,
            &format!("/api/v1/users/{ada}/keys/{key_id}/quota"),
        )
        .bearer_auth(&admin)
        .json(
            &json!({"tokens_per_day_quota": 5_000, "tokens_per_month_quota": 5_000,
                      "tokens_total_quota": 5_000, "requests_total_quota": 50}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let identity = app.identity().await;
    let principal = eventually(Duration::from_secs(10), || async {
        let principal = identity
            .auth
            .authenticate(Credential::Bearer(&key))
            .await
            .ok()?;
        let key_quotas = principal
            .rules()
            .iter()
            .filter(|r| r.durable && r.name.starts_with("key."))
            .count();
        (key_quotas == 4).then_some(principal)
    })
    .await
    .expect("the key's quotas never applied");
    let reservation = identity
        .quotas
        .reserve(&principal, Demand { tokens: Some(10) })
        .await
        .expect("admitted on the first call");
    identity.quotas.release(&reservation, None).await.unwrap();
}
