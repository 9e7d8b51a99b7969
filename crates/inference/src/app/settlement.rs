//! How an admitted call ends, streamed or not: one [`Settlement`] turns what came back into
//! exactly one usage record and one settled (or released) reservation. The record travels with
//! the settlement into the identity context's durable stream, in the same atomic step, and the
//! answer's end goes out only once that step is done: a call the client saw answered is never
//! lost, whichever process dies next.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use maas_shared::tasks::{Background, BackgroundFuture};
use maas_user::contract::{Principal, QuotaGate, Reservation};

use super::balance::InFlight;
use crate::domain::call::Call;
use crate::domain::usage::{TokenUsage, UsageRecord, estimate_tokens};

/// The status recorded when the client went away before the answer was complete.
pub const CLIENT_GONE: u16 = 499;

/// OpenAI's error body, for failures the gateway reports itself once an upstream was reached.
#[must_use]
pub fn openai_error(message: &str, code: &str) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": "api_error", "code": code, "param": null}});
    Bytes::from(body.to_string())
}

/// What came back, as the settlement needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The status the client saw ([`CLIENT_GONE`] when it left).
    pub status: u16,
    /// Whether the upstream did work the caller pays for. An upstream that refused the call
    /// (4xx) consumed nothing, and neither did one that never answered.
    pub consumed: bool,
    /// Usage the upstream reported.
    pub reported: Option<TokenUsage>,
    /// Bytes of completion text (or of the whole answer) for the estimate when none was reported.
    pub completion_bytes: usize,
    /// Milliseconds to the first byte of the answer.
    pub first_byte_ms: Option<u64>,
    /// The answer's text, when complete (for the conversation log).
    pub answer: Option<String>,
}

/// Runs with the complete answer's text (stores a conversation exchange).
pub type OnAnswer = Box<dyn FnOnce(String) + Send>;

/// What a call came to once settled, for a caller that keeps its own log (an app's messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// The status the client saw ([`CLIENT_GONE`] when it left).
    pub status: u16,
    /// Tokens charged.
    pub usage: TokenUsage,
    /// Whether they are an estimate (the upstream reported none).
    pub estimated: bool,
    /// The answer's text, when complete.
    pub answer: Option<String>,
    /// Milliseconds from admission to the end.
    pub latency_ms: u64,
    /// Milliseconds to the first byte.
    pub ttft_ms: Option<u64>,
}

/// Runs once with what the call came to (it runs where the settlement closes: keep it short,
/// hand slow work to the background).
pub type OnSettled = Box<dyn FnOnce(Settled) + Send>;

/// Everything needed to settle one admitted call. It ends exactly once: through
/// [`Settlement::finish`] or [`Settlement::abandon`], or, when the call's future is dropped
/// before either (the client went away while the answer was on its way), on drop, as a call the
/// client left ([`CLIENT_GONE`]) whose upstream did work at the estimate.
pub struct Settlement {
    parts: Option<Parts>,
}

struct Parts {
    quota: Arc<dyn QuotaGate>,
    background: Arc<dyn Background>,
    reservation: Reservation,
    record: UsageRecord,
    prompt_estimate: u64,
    started: Instant,
    in_flight: Option<InFlight>,
    on_answer: Option<OnAnswer>,
    on_settled: Option<OnSettled>,
}

/// The ports a settlement reports to.
#[derive(Clone)]
pub struct SettlementPorts {
    /// The identity context's metering gate (usage records travel with its settlements).
    pub quota: Arc<dyn QuotaGate>,
    /// Where settling runs when the caller went away before it could be awaited.
    pub background: Arc<dyn Background>,
}

impl Settlement {
    /// A settlement of `reservation`, made when `call` was admitted at `at`.
    #[must_use]
    pub fn new(
        ports: &SettlementPorts,
        principal: &Principal,
        call: &Call,
        reservation: Reservation,
        prompt_estimate: u64,
        started: Instant,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let request_id = reservation.id;
        Self {
            parts: Some(Parts {
                quota: Arc::clone(&ports.quota),
                background: Arc::clone(&ports.background),
                reservation,
                record: UsageRecord {
                    id: request_id,
                    user_id: principal.user_id(),
                    key_id: principal.key_id(),
                    model: call.model().to_owned(),
                    upstream: String::new(),
                    endpoint: call.endpoint().name(),
                    usage: TokenUsage::default(),
                    estimated: false,
                    status: 0,
                    stream: call.stream(),
                    ttft_ms: None,
                    latency_ms: 0,
                    at,
                },
                prompt_estimate,
                started,
                in_flight: None,
                on_answer: None,
                on_settled: None,
            }),
        }
    }

    fn parts(&mut self) -> Option<&mut Parts> {
        self.parts.as_mut()
    }

    /// The upstream that serves the call, kept counted as busy until the call ends.
    pub fn serve_from(&mut self, upstream: &str, in_flight: Option<InFlight>) {
        if let Some(parts) = self.parts() {
            upstream.clone_into(&mut parts.record.upstream);
            parts.in_flight = in_flight;
        }
    }

    /// Runs `hook` with the answer's text when the call completes normally.
    pub fn on_answer(&mut self, hook: Option<OnAnswer>) {
        if let Some(parts) = self.parts() {
            parts.on_answer = hook;
        }
    }

    /// Runs `hook` with what the call came to, however it ends after admission (not when no
    /// upstream answered: the caller gets that error itself).
    pub fn on_settled(&mut self, hook: Option<OnSettled>) {
        if let Some(parts) = self.parts() {
            parts.on_settled = hook;
        }
    }

    /// When the call started (for time-to-first-byte).
    #[must_use]
    pub fn started(&self) -> Instant {
        self.parts
            .as_ref()
            .map_or_else(Instant::now, |parts| parts.started)
    }

    /// The tightest limit after admission (for `x-ratelimit-*`).
    #[must_use]
    pub fn limit(&self) -> Option<maas_user::contract::LimitState> {
        self.parts
            .as_ref()
            .and_then(|parts| parts.reservation.tightest.clone())
    }

    /// Ends the call: one usage record, and the reservation settled with the real (or
    /// estimated) usage when the upstream did work, released when it did not, in one atomic
    /// step. Await the returned [`Closing`] before the answer's end goes out; dropped before it
    /// completes, it finishes in the background.
    #[must_use = "await the closing before the answer's end goes out"]
    pub fn finish(mut self, outcome: Outcome) -> Closing {
        match self.parts.take() {
            Some(parts) => parts.close(outcome),
            None => Closing::done(),
        }
    }

    /// Ends a call no upstream answered: nothing was consumed and nothing is recorded.
    pub fn abandon(mut self) {
        let Some(Parts {
            quota,
            background,
            reservation,
            ..
        }) = self.parts.take()
        else {
            return;
        };
        background.spawn(Box::pin(async move {
            if let Err(err) = quota.release(&reservation, None).await {
                tracing::error!(error = %err, "could not release a reservation");
            }
        }));
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            // Nobody waits for this one: the client is gone.
            drop(parts.close(Outcome {
                status: CLIENT_GONE,
                consumed: true,
                ..Outcome::default()
            }));
        }
    }
}

/// A settlement on its way to the durable stream. Await it; dropped before it completes (the
/// client went away meanwhile), it runs to the end in the background.
pub struct Closing {
    work: Option<BackgroundFuture>,
    background: Option<Arc<dyn Background>>,
}

impl Closing {
    fn done() -> Self {
        Self {
            work: None,
            background: None,
        }
    }
}

impl Future for Closing {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(());
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.work = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let (Some(work), Some(background)) = (self.work.take(), self.background.take()) {
            background.spawn(work);
        }
    }
}

impl Parts {
    fn close(self, outcome: Outcome) -> Closing {
        let Self {
            quota,
            background,
            reservation,
            mut record,
            prompt_estimate,
            started,
            in_flight,
            on_answer,
            on_settled,
        } = self;
        drop(in_flight);
        let (tokens, estimated) = match (outcome.consumed, outcome.reported) {
            (false, _) => (TokenUsage::default(), false),
            (true, Some(reported)) => (reported, false),
            (true, None) => (
                TokenUsage {
                    prompt: prompt_estimate,
                    completion: estimate_tokens(outcome.completion_bytes),
                },
                true,
            ),
        };
        record.usage = tokens;
        record.estimated = estimated;
        record.status = outcome.status;
        record.ttft_ms = outcome.first_byte_ms;
        record.latency_ms = elapsed_ms(started);
        if let Some(hook) = on_settled {
            hook(Settled {
                status: outcome.status,
                usage: tokens,
                estimated,
                answer: outcome.answer.clone(),
                latency_ms: record.latency_ms,
                ttft_ms: record.ttft_ms,
            });
        }
        if let (Some(hook), Some(answer)) = (on_answer, outcome.answer) {
            hook(answer);
        }
        let encoded = record.encode();
        let consumed = outcome.consumed;
        let work: BackgroundFuture = Box::pin(async move {
            let result = if consumed {
                quota
                    .settle(&reservation, tokens.total(), Some(encoded))
                    .await
            } else {
                quota.release(&reservation, Some(encoded)).await
            };
            if let Err(err) = result {
                tracing::error!(error = %err, consumed, request = %reservation.id, "could not settle a reservation; its usage is not recorded");
            }
        });
        Closing {
            work: Some(work),
            background: Some(background),
        }
    }
}

/// Milliseconds since `started`.
#[must_use]
pub fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
