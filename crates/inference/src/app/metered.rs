//! A streamed answer passing through the gateway: bytes go out as they come in; the `usage`
//! event is read (and dropped when the client did not ask for it); when the stream ends, breaks
//! or the client goes away, the call's [`Settlement`] finishes exactly once. The stream's end
//! (the `[DONE]` event and the close) goes out only after the settlement is durable.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt as _};
use serde_json::Value;

use super::settlement::{CLIENT_GONE, Closing, Outcome, Settlement, elapsed_ms, openai_error};
use crate::domain::ports::UpstreamFailure;
use crate::domain::sse::{Event, EventSplitter};
use crate::domain::usage::TokenUsage;

/// The metered stream.
pub struct MeteredStream {
    inner: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
    splitter: EventSplitter,
    pending: VecDeque<Bytes>,
    settlement: Option<Settlement>,
    /// The settlement under way; the end waits for it.
    closing: Option<Closing>,
    /// The `[DONE]` event, held back until the settlement is durable.
    done_event: Option<Bytes>,
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
        settlement: Settlement,
        client_wants_usage: bool,
    ) -> Self {
        Self {
            inner,
            splitter: EventSplitter::default(),
            pending: VecDeque::new(),
            settlement: Some(settlement),
            closing: None,
            done_event: None,
            reported: None,
            completion_chars: 0,
            answer: String::new(),
            client_wants_usage,
            first_byte_ms: None,
            done: false,
        }
    }

    fn handle(&mut self, event: Event) {
        if event.raw.len() <= 64 && event.is_done() {
            self.done_event = Some(Bytes::from(event.raw));
            return;
        }
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

    /// Settles once; `status` is what the client saw. Whatever streamed was consumed.
    fn finish(&mut self, status: u16) {
        let Some(settlement) = self.settlement.take() else {
            return;
        };
        self.closing = Some(settlement.finish(Outcome {
            status,
            consumed: true,
            reported: self.reported,
            completion_bytes: self.completion_chars,
            first_byte_ms: self.first_byte_ms,
            answer: (status == 200).then(|| std::mem::take(&mut self.answer)),
        }));
        if let Some(done) = self.done_event.take() {
            self.pending.push_back(done);
        }
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(closing) = self.closing.as_mut() {
                match Pin::new(closing).poll(cx) {
                    Poll::Ready(()) => self.closing = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some(bytes) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if self.first_byte_ms.is_none()
                        && let Some(settlement) = &self.settlement
                    {
                        self.first_byte_ms = Some(elapsed_ms(settlement.started()));
                    }
                    for event in self.splitter.push(&chunk) {
                        self.handle(event);
                    }
                }
                Poll::Ready(Some(Err(failure))) => {
                    // After the first byte there is no retry: end with an error event, never
                    // with repeated text.
                    tracing::warn!(error = %failure, "upstream stream broke off");
                    let error = openai_error(
                        &format!("upstream stream broke off: {failure}"),
                        "upstream_unavailable",
                    );
                    let mut event = Vec::with_capacity(error.len() + 8);
                    event.extend_from_slice(b"data: ");
                    event.extend_from_slice(&error);
                    event.extend_from_slice(b"\n\n");
                    self.pending.push_back(Bytes::from(event));
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
        // The client went away mid-stream: dropping `inner` cancels the upstream call; the
        // settlement (and one under way) completes in the background.
        self.finish(CLIENT_GONE);
    }
}
