//! In-memory fakes of the gateway's ports, for use-case tests without PostgreSQL, Redis or HTTP.
//! Each fake records what it was asked, so tests can assert exactly what the gateway did.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream;
use maas_shared::tasks::{Background, BackgroundFuture};
use maas_user::contract::{
    Demand, IdentityError, LimitState, Principal, QuotaGate, Reservation, UserId,
};
use tokio::task::JoinHandle;

use crate::domain::errors::InferenceError;
use crate::domain::ports::{
    KeySealer, ProviderRepository, Upstream, UpstreamFailure, UpstreamRequest, UpstreamResponse,
};
use crate::domain::provider::{BaseUrl, ModelRoute, Provider, ProviderId, ProviderName};
use crate::domain::usage::UsageRecord;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An enabled provider `name` at `base_url`, its `key` sealed by [`FakeSealer`], serving each
/// `(public, upstream)` model pair.
pub(crate) fn provider(
    name: &str,
    base_url: &str,
    key: Option<&str>,
    models: &[(&str, &str)],
) -> Provider {
    Provider::restore(
        ProviderId::new(),
        ProviderName::parse(name).expect("a valid provider name"),
        BaseUrl::parse(base_url).expect("a valid base URL"),
        key.map(|k| FakeSealer.seal(k)),
        models
            .iter()
            .map(|(model, upstream)| {
                ModelRoute::parse(model, Some(upstream)).expect("valid model names")
            })
            .collect(),
        true,
        chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
    )
}

/// Provider storage over a list in memory.
#[derive(Default)]
pub(crate) struct FakeProviders {
    providers: Mutex<Vec<Provider>>,
}

impl FakeProviders {
    /// Storage holding `providers`, in this order.
    pub(crate) fn new(providers: Vec<Provider>) -> Self {
        Self {
            providers: Mutex::new(providers),
        }
    }
}

#[async_trait]
impl ProviderRepository for FakeProviders {
    async fn insert(&self, provider: &Provider) -> Result<(), InferenceError> {
        let mut providers = lock(&self.providers);
        if providers.iter().any(|p| p.name() == provider.name()) {
            return Err(InferenceError::ProviderNameTaken);
        }
        providers.push(provider.clone());
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Provider>, InferenceError> {
        Ok(lock(&self.providers).clone())
    }

    async fn delete(&self, id: ProviderId) -> Result<bool, InferenceError> {
        let mut providers = lock(&self.providers);
        let before = providers.len();
        providers.retain(|p| p.id() != id);
        Ok(providers.len() != before)
    }
}

/// A reversible "sealer": `sealed:` in front of the key. Anything else fails to open, as a key
/// sealed with another platform key would.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FakeSealer;

impl FakeSealer {
    const PREFIX: &'static [u8] = b"sealed:";
}

impl KeySealer for FakeSealer {
    fn seal(&self, plaintext: &str) -> Vec<u8> {
        [Self::PREFIX, plaintext.as_bytes()].concat()
    }

    fn open(&self, sealed: &[u8]) -> Result<String, InferenceError> {
        sealed
            .strip_prefix(Self::PREFIX)
            .and_then(|rest| String::from_utf8(rest.to_vec()).ok())
            .ok_or_else(|| InferenceError::Unexpected(anyhow::anyhow!("not sealed by FakeSealer")))
    }
}

/// What a scripted upstream does with one request.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// Fails before any response arrives.
    Fail(UpstreamFailure),
    /// Answers with a status line, then the body chunks in order.
    Answer {
        /// Status code.
        status: u16,
        /// Content type.
        content_type: Option<String>,
        /// Body chunks; an error item breaks the body off.
        chunks: Vec<Result<Bytes, UpstreamFailure>>,
        /// Whether the body then stays open without sending more (a slow upstream).
        hang: bool,
    },
}

impl Reply {
    /// A complete JSON answer.
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self::Answer {
            status,
            content_type: Some("application/json".to_owned()),
            chunks: vec![Ok(Bytes::from(body.to_owned()))],
            hang: false,
        }
    }

    /// A 200 event stream of `chunks`.
    pub(crate) fn events(chunks: &[&str]) -> Self {
        Self::Answer {
            status: 200,
            content_type: Some("text/event-stream".to_owned()),
            chunks: chunks
                .iter()
                .map(|c| Ok(Bytes::from((*c).to_owned())))
                .collect(),
            hang: false,
        }
    }

    /// A connect failure.
    pub(crate) fn refused() -> Self {
        Self::Fail(UpstreamFailure::Connect("connection refused".to_owned()))
    }

    /// The same answer whose body stays open after its chunks.
    pub(crate) fn hanging(self) -> Self {
        match self {
            Self::Answer {
                status,
                content_type,
                chunks,
                ..
            } => Self::Answer {
                status,
                content_type,
                chunks,
                hang: true,
            },
            fail @ Self::Fail(_) => fail,
        }
    }

    /// The same answer with its body broken off after its chunks.
    pub(crate) fn breaking(self, failure: UpstreamFailure) -> Self {
        match self {
            Self::Answer {
                status,
                content_type,
                mut chunks,
                hang,
            } => {
                chunks.push(Err(failure));
                Self::Answer {
                    status,
                    content_type,
                    chunks,
                    hang,
                }
            }
            fail @ Self::Fail(_) => fail,
        }
    }
}

/// A request the fake upstream received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// Full URL.
    pub url: String,
    /// Bearer key.
    pub api_key: Option<String>,
    /// JSON body.
    pub body: serde_json::Value,
}

/// Upstreams scripted per URL: each request takes the next reply queued for its URL (the last
/// one repeats); a URL with no script is refused.
#[derive(Default)]
pub(crate) struct FakeUpstream {
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    received: Mutex<Vec<Received>>,
}

impl FakeUpstream {
    /// Queues `reply` for the next request to `url`.
    pub(crate) fn script(&self, url: &str, reply: Reply) -> &Self {
        lock(&self.scripts)
            .entry(url.to_owned())
            .or_default()
            .push_back(reply);
        self
    }

    /// Every request received, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// The URLs requested, in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        lock(&self.received).iter().map(|r| r.url.clone()).collect()
    }
}

#[async_trait]
impl Upstream for FakeUpstream {
    async fn post(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamFailure> {
        lock(&self.received).push(Received {
            url: request.url.clone(),
            api_key: request.api_key.as_deref().map(str::to_owned),
            body: serde_json::from_slice(&request.body).expect("the gateway sends JSON"),
        });
        let reply = {
            let mut scripts = lock(&self.scripts);
            let queue = scripts.get_mut(&request.url);
            match queue {
                Some(queue) if queue.len() > 1 => queue.pop_front(),
                Some(queue) => queue.front().cloned(),
                None => None,
            }
        };
        match reply.unwrap_or_else(Reply::refused) {
            Reply::Fail(failure) => Err(failure),
            Reply::Answer {
                status,
                content_type,
                chunks,
                hang,
            } => {
                let body = stream::iter(chunks);
                let body = if hang {
                    body.chain(stream::pending()).boxed()
                } else {
                    body.boxed()
                };
                Ok(UpstreamResponse {
                    status,
                    content_type,
                    body,
                })
            }
        }
    }
}

/// A call the quota gate received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum QuotaCall {
    /// `reserve` with this token demand (refused or not).
    Reserve(Option<u64>),
    /// `settle` of the reservation with this id and estimate, with the actual tokens.
    Settle {
        /// Reservation id.
        id: uuid::Uuid,
        /// Its estimate.
        estimate: u64,
        /// Actual tokens.
        actual: u64,
    },
    /// `release` of the reservation with this id and estimate.
    Release {
        /// Reservation id.
        id: uuid::Uuid,
        /// Its estimate.
        estimate: u64,
    },
}

#[derive(Default)]
struct Budget {
    spent: u64,
    outstanding: HashMap<uuid::Uuid, u64>,
    calls: Vec<QuotaCall>,
    records: Vec<UsageRecord>,
}

/// A faithful token quota over one budget: `reserve` refuses with
/// [`IdentityError::QuotaExceeded`] when spent + reserved + demand exceeds the quota (a demand of
/// zero still needs one token of headroom, as in the Redis script), `settle`
/// moves a reservation to spent at its real total, `release` frees it; both are idempotent per
/// reservation, as the Redis store is. Calls that use no tokens are always admitted.
pub(crate) struct FakeQuota {
    quota: u64,
    budget: Mutex<Budget>,
}

/// The name the fake's one rule goes by.
pub(crate) const QUOTA_RULE: &str = "tokens_total_quota";

impl FakeQuota {
    /// A budget of `quota` tokens, none spent.
    pub(crate) fn new(quota: u64) -> Self {
        Self {
            quota,
            budget: Mutex::default(),
        }
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<QuotaCall> {
        lock(&self.budget).calls.clone()
    }

    /// The usage records that travelled with settlements and releases, in order.
    pub(crate) fn records(&self) -> Vec<UsageRecord> {
        lock(&self.budget).records.clone()
    }

    /// Tokens spent.
    pub(crate) fn spent(&self) -> u64 {
        lock(&self.budget).spent
    }

    /// Tokens held by outstanding reservations.
    pub(crate) fn reserved(&self) -> u64 {
        lock(&self.budget).outstanding.values().sum()
    }

    fn state(&self, used: u64) -> LimitState {
        LimitState {
            name: QUOTA_RULE.to_owned(),
            limit: self.quota,
            remaining: self.quota.saturating_sub(used),
            reset_after: None,
        }
    }
}

#[async_trait]
impl QuotaGate for FakeQuota {
    async fn reserve(
        &self,
        principal: &Principal,
        demand: Demand,
    ) -> Result<Reservation, IdentityError> {
        let mut budget = lock(&self.budget);
        budget.calls.push(QuotaCall::Reserve(demand.tokens));
        let estimate = demand.tokens.unwrap_or(0);
        let used = budget.spent + budget.outstanding.values().sum::<u64>();
        // As the Redis script: a zero-cost check still needs one unit of headroom.
        if demand.tokens.is_some() && used.saturating_add(estimate.max(1)) > self.quota {
            return Err(IdentityError::QuotaExceeded(self.state(used)));
        }
        let id = uuid::Uuid::now_v7();
        budget.outstanding.insert(id, estimate);
        Ok(Reservation {
            id,
            user_id: principal.user_id(),
            key_id: principal.key_id(),
            estimate,
            token_counters: vec![QUOTA_RULE.to_owned()],
            request_counters: Vec::new(),
            tightest: Some(self.state(used + estimate)),
        })
    }

    async fn settle(
        &self,
        reservation: &Reservation,
        actual_tokens: u64,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError> {
        let mut budget = lock(&self.budget);
        budget
            .records
            .extend(record.map(|r| UsageRecord::decode(&r).expect("a usage record")));
        budget.calls.push(QuotaCall::Settle {
            id: reservation.id,
            estimate: reservation.estimate,
            actual: actual_tokens,
        });
        if budget.outstanding.remove(&reservation.id).is_some() {
            budget.spent += actual_tokens;
        }
        Ok(())
    }

    async fn release(
        &self,
        reservation: &Reservation,
        record: Option<Vec<u8>>,
    ) -> Result<(), IdentityError> {
        let mut budget = lock(&self.budget);
        budget
            .records
            .extend(record.map(|r| UsageRecord::decode(&r).expect("a usage record")));
        budget.calls.push(QuotaCall::Release {
            id: reservation.id,
            estimate: reservation.estimate,
        });
        budget.outstanding.remove(&reservation.id);
        Ok(())
    }
}

/// Background work on `tokio::spawn`, which tests can wait for.
#[derive(Default)]
pub(crate) struct JoinedBackground {
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl JoinedBackground {
    /// Waits until every piece of work spawned so far (and any it spawned) has finished;
    /// panics if one panicked.
    pub(crate) async fn settled(&self) {
        loop {
            let handles = std::mem::take(&mut *lock(&self.handles));
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                handle.await.expect("background work panicked");
            }
        }
    }
}

impl Background for JoinedBackground {
    fn spawn(&self, work: BackgroundFuture) {
        lock(&self.handles).push(tokio::spawn(work));
    }
}

/// A user with the `user` role signed in with a login token.
pub(crate) fn signed_in() -> Principal {
    maas_user::testing::principal(UserId::new(), &[maas_user::contract::Role::User])
}
