//! The per-request identity path of the gateway, against real PostgreSQL and Redis:
//! API key → principal (cache hit), rate limits + quota reservation (one Redis round trip),
//! then settle. One core (current-thread runtime), sequential requests, bounded loop.
//! Run with `just bench`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::time::{Duration, Instant};

use maas_platform::{Platform, Role, Settings};
use maas_user::app::Actor;
use maas_user::app::accounts::NewAccount;
use maas_user::app::auth::Authenticator as _;
use maas_user::app::keys::NewKey;
use maas_user::app::quotas::QuotaGate as _;
use maas_user::contract::{Credential, Demand};
use maas_user::domain::limits::QuotaPolicy;

const ITERATIONS: usize = 20_000;

fn pct(sorted: &[Duration], p: f64) -> u128 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_micros()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prefix = format!("bench:{}:", uuid::Uuid::now_v7().simple());
        let settings =
            Settings::load_with(&[("redis.key_prefix", &prefix), ("telemetry.filter", "warn")])
                .expect("settings (is DATABASE_URL set? `just bench` sets it)");
        let platform = Platform::connect(settings.clone(), Role::Command)
            .await
            .unwrap();
        let identity = platform.identity().unwrap();

        let name = format!("bench{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let account = NewAccount {
            username: name.clone(),
            email: None,
            password: "benchmark password".into(),
            roles: vec!["developer".into()],
        };
        let user = identity
            .accounts
            .create(Actor::System, account)
            .await
            .unwrap();
        let big = Some(1_000_000_000_000);
        let policy = QuotaPolicy {
            requests_per_minute: big,
            tokens_per_minute: big,
            requests_per_hour: big,
            requests_per_day: big,
            tokens_per_month_quota: big,
            ..QuotaPolicy::default()
        };
        identity
            .quotas
            .set_user_policy(Actor::System, user.id(), policy)
            .await
            .unwrap();
        let key = identity
            .keys
            .create(
                Actor::System,
                user.id(),
                NewKey {
                    name: "bench".into(),
                    ..NewKey::default()
                },
            )
            .await
            .unwrap();
        let principal = identity
            .auth
            .authenticate(Credential::Bearer(&key.secret))
            .await
            .unwrap();
        println!("rules checked per request: {}", principal.rules().len());

        for _ in 0..1_000 {
            let p = identity
                .auth
                .authenticate(Credential::Bearer(&key.secret))
                .await
                .unwrap();
            let r = identity
                .quotas
                .reserve(&p, Demand { tokens: Some(100) })
                .await
                .unwrap();
            identity.quotas.settle(&r, 80, None).await.unwrap();
        }

        let mut before_upstream = Vec::with_capacity(ITERATIONS);
        let mut whole = Vec::with_capacity(ITERATIONS);
        let started = Instant::now();
        for _ in 0..ITERATIONS {
            let t = Instant::now();
            let p = identity
                .auth
                .authenticate(Credential::Bearer(&key.secret))
                .await
                .unwrap();
            let r = identity
                .quotas
                .reserve(&p, Demand { tokens: Some(100) })
                .await
                .unwrap();
            before_upstream.push(t.elapsed());
            identity.quotas.settle(&r, 80, None).await.unwrap();
            whole.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        before_upstream.sort_unstable();
        whole.sort_unstable();
        let mut auth_only = Vec::with_capacity(ITERATIONS);
        for _ in 0..ITERATIONS {
            let t = Instant::now();
            identity
                .auth
                .authenticate(Credential::Bearer(&key.secret))
                .await
                .unwrap();
            auth_only.push(t.elapsed());
        }
        auth_only.sort_unstable();

        println!("{:<38} {:>8} {:>8}", "path (µs)", "p50", "p99");
        println!(
            "{:<38} {:>8} {:>8}",
            "key -> principal (cache hit)",
            pct(&auth_only, 0.5),
            pct(&auth_only, 0.99)
        );
        println!(
            "{:<38} {:>8} {:>8}",
            "auth + limits/quota reserve",
            pct(&before_upstream, 0.5),
            pct(&before_upstream, 0.99)
        );
        println!(
            "{:<38} {:>8} {:>8}",
            "auth + reserve + settle",
            pct(&whole, 0.5),
            pct(&whole, 0.99)
        );
        println!(
            "requests/s on one core (auth + reserve + settle): {:.0}",
            ITERATIONS as f64 / elapsed.as_secs_f64()
        );
    });
}
