//! A streamed answer passing through the gateway: bytes go out as they come in; the `usage`
//! event is read (and dropped when the client did not ask for it); when the stream ends, breaks
//! or the client goes away, the reservation is settled exactly once and one usage record is
//! written.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt as _};
use maas_user::contract::{QuotaGate, Reservation};
use serde_json::Value;

use crate::domain::ports::{UpstreamFailure, UsageSink};
use crate::domain::sse::{Event, EventSplitter};
use crate::domain::usage::{TokenUsage, UsageRecord, estimate_tokens};

/// What settling a call needs.
pub struct Meter {
    /// The gate to settle with.
    pub quota: Arc<dyn QuotaGate>,
    /// Where the record goes.
    pub usage: Arc<dyn UsageSink>,
    /// The admission to settle.
    pub reservation: Reservation,
    /// The record, completed at the end.
    pub record: UsageRecord,
    /// Prompt tokens estimated at admission (used when the upstream reports none).
    pub prompt_estimate: u64,
    /// When the call started.
    pub started: Instant,
    /// Keeps the upstream counted as busy until the call ends.
    pub in_flight: Option<super::balance::InFlight>,
    /// Runs with the full answer text when the call completes normally.
    pub on_complete: Option<Box<dyn FnOnce(String) + Send>>,
}

/// The metered stream.
pub struct MeteredStream {
    inner: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
    splitter: EventSplitter,
    pending: VecDeque<Bytes>,
    meter: Option<Meter>,
    reported: Option<TokenUsage>,
    completion_chars: usize,
    answer: String,
    client_wants_usage: bool,
    first_byte_ms: Option<u64>,
    done: bool,
}

impl MeteredStream {
    /// Wraps an upstream body.
    #[must_use]
    pub fn new(
        inner: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
        meter: Meter,
        client_wants_usage: bool,
    ) -> Self {
        Self {
            inner,
            splitter: EventSplitter::default(),
            pending: VecDeque::new(),
            meter: Some(meter),
            reported: None,
            completion_chars: 0,
            answer: String::new(),
            client_wants_usage,
            first_byte_ms: None,
            done: false,
        }
    }

    fn handle(&mut self, event: Event) {
        if let Some(mut json) = event.json() {
            if let Some(usage) = json
                .get("usage")
                .filter(|u| !u.is_null())
                .and_then(TokenUsage::from_json)
            {
                self.reported = Some(usage);
                let no_choices = json
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if !self.client_wants_usage && no_choices {
                    return;
                }
            }
            if let Some(choices) = json.get("choices").and_then(Value::as_array) {
                for choice in choices {
                    let text = choice
                        .get("delta")
                        .and_then(|d| d.get("content"))
                        .or_else(|| choice.get("text"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.completion_chars += text.len();
                    if self.answer.len() + text.len() <= crate::domain::conversation::MAX_CONTENT {
                        self.answer.push_str(text);
                    }
                }
            }
            // Asked for usage on the client's behalf, the upstream puts `"usage": null` on every
            // chunk; a client that did not ask gets its chunks as OpenAI sends them: without it.
            if !self.client_wants_usage
                && let Some(object) = json.as_object_mut()
                && object.get("usage").is_some_and(Value::is_null)
                && event.only_data()
            {
                object.remove("usage");
                self.pending
                    .push_back(Bytes::from(format!("data: {json}\n\n")));
                return;
            }
        }
        self.pending.push_back(Bytes::from(event.raw));
    }

    /// Settles and records once; `status` is what the client saw (499: it went away).
    fn finish(&mut self, status: u16) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        let Meter {
            quota,
            usage,
            reservation,
            mut record,
            prompt_estimate,
            started,
            in_flight,
            on_complete,
        } = meter;
        drop(in_flight);
        if status == 200
            && let Some(hook) = on_complete
        {
            hook(std::mem::take(&mut self.answer));
        }
        let (tokens, estimated) = match self.reported {
            Some(u) => (u, false),
            None => (
                TokenUsage {
                    prompt: prompt_estimate,
                    completion: estimate_tokens(self.completion_chars),
                },
                true,
            ),
        };
        record.usage = tokens;
        record.estimated = estimated;
        record.status = status;
        record.ttft_ms = self.first_byte_ms;
        record.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        usage.record(record);
        let total = tokens.total();
        // May run from Drop (client gone), so the settle happens in its own task.
        tokio::spawn(async move {
            if let Err(err) = quota.settle(&reservation, total).await {
                tracing::error!(error = %err, "could not settle a streamed call");
            }
        });
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(bytes) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if self.first_byte_ms.is_none()
                        && let Some(meter) = &self.meter
                    {
                        self.first_byte_ms = Some(
                            u64::try_from(meter.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        );
                    }
                    for event in self.splitter.push(&chunk) {
                        self.handle(event);
                    }
                }
                Poll::Ready(Some(Err(failure))) => {
                    // After the first byte there is no retry: end with an error event, never
                    // with repeated text.
                    tracing::warn!(error = %failure, "upstream stream broke off");
                    let error = serde_json::json!({"error": {"message": format!("upstream stream broke off: {failure}"),
                        "type": "api_error", "code": "upstream_unavailable", "param": null}});
                    self.pending
                        .push_back(Bytes::from(format!("data: {error}\n\n")));
                    self.done = true;
                    self.finish(502);
                }
                Poll::Ready(None) => {
                    if let Some(rest) = self.splitter.finish() {
                        self.handle(rest);
                    }
                    self.done = true;
                    self.finish(200);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        // The client went away mid-stream: dropping `inner` cancels the upstream call.
        self.finish(499);
    }
}
