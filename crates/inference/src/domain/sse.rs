//! Reading a server-sent-event stream just enough to meter it: events are split on blank lines,
//! `data:` payloads are parsed only to find `usage`, and everything else passes through as is.

/// One complete event as it arrived (including its terminating blank line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The raw bytes, forwarded unchanged.
    pub raw: Vec<u8>,
}

impl Event {
    /// The concatenated `data:` lines.
    #[must_use]
    pub fn data(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.raw).ok()?;
        let mut data: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                let part = rest.strip_prefix(' ').unwrap_or(rest);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(part);
                    }
                    None => data = Some(part.to_owned()),
                }
            }
        }
        data
    }

    /// The JSON payload, unless this is `[DONE]` or not JSON.
    #[must_use]
    pub fn json(&self) -> Option<serde_json::Value> {
        let data = self.data()?;
        if data.trim() == "[DONE]" {
            return None;
        }
        serde_json::from_str(&data).ok()
    }

    /// Whether the event has nothing but `data:` lines (no `id:`, `event:` or comments), so that
    /// `data: <payload>` says all of it.
    #[must_use]
    pub fn only_data(&self) -> bool {
        std::str::from_utf8(&self.raw).is_ok_and(|text| {
            text.lines()
                .all(|line| line.is_empty() || line.starts_with("data:"))
        })
    }

    /// Whether this is the `[DONE]` sentinel.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.data().is_some_and(|d| d.trim() == "[DONE]")
    }
}

/// Splits a byte stream into events; bytes of an unfinished event wait for more input.
#[derive(Debug, Default)]
pub struct EventSplitter {
    buffer: Vec<u8>,
}

impl EventSplitter {
    /// The largest event we hold on to; beyond it bytes pass through unparsed.
    pub const MAX_EVENT: usize = 4 * 1024 * 1024;

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_boundary(&self.buffer) {
            let rest = self.buffer.split_off(end);
            events.push(Event {
                raw: std::mem::replace(&mut self.buffer, rest),
            });
        }
        if self.buffer.len() > Self::MAX_EVENT {
            events.push(Event {
                raw: std::mem::take(&mut self.buffer),
            });
        }
        events
    }

    /// Whatever is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Event> {
        (!self.buffer.is_empty()).then(|| Event {
            raw: std::mem::take(&mut self.buffer),
        })
    }
}

/// The index just past the first blank line (`\n\n` or `\r\n\r\n`).
fn find_boundary(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keep_their_bytes() {
        let mut splitter = EventSplitter::default();
        assert!(splitter.push(b"data: {\"a\"").is_empty());
        let events = splitter.push(b":1}\n\ndata: [DONE]\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raw, b"data: {\"a\":1}\n\n");
        assert_eq!(events[0].json().unwrap()["a"], 1);
        assert!(events[1].is_done());
        assert!(splitter.finish().is_none());
    }

    #[test]
    fn crlf_and_multi_line_data_are_understood() {
        let mut splitter = EventSplitter::default();
        let events = splitter.push(b"event: x\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].json().unwrap()["b"], 2);
        assert!(!events[0].only_data(), "it has an event: line");
        let plain = splitter.push(b"data: {\"c\":3}\r\n\r\n");
        assert!(plain[0].only_data());
    }
}
