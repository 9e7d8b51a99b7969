//! Stop sequences over streamed text: what may be sent now, what must wait, where to cut.

/// Watches the generated text for stop sequences.
///
/// Text that could still become a stop sequence is held back until it either completes one
/// (and is dropped with everything after it) or cannot (and is released), so a stream never
/// sends text that the final answer would not contain.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Text that can be sent now (may be empty).
    Continue(String),
    /// A stop sequence was reached: the last text to send before finishing.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for these stop sequences (empty ones are ignored).
    #[must_use]
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            text: String::new(),
            sent: 0,
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, delta: &str) -> Step {
        // A stop can only begin in the unsent tail (held-back text) or in the new delta.
        let search_from = self.sent;
        self.text.push_str(delta);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| {
                self.text
                    .get(search_from..)
                    .and_then(|tail| tail.find(stop.as_str()))
                    .map(|at| search_from + at)
            })
            .min();
        if let Some(cut) = first_stop {
            let out = self.text.get(self.sent..cut).unwrap_or_default().to_owned();
            self.text.truncate(cut);
            self.sent = cut;
            return Step::Stopped(out);
        }
        let hold = self.held_back();
        let until = self.text.len() - hold;
        let out = self
            .text
            .get(self.sent..until)
            .unwrap_or_default()
            .to_owned();
        self.sent = until;
        Step::Continue(out)
    }

    /// The text held back at the end of generation, released as it is.
    pub fn finish(&mut self) -> String {
        let out = self.text.get(self.sent..).unwrap_or_default().to_owned();
        self.sent = self.text.len();
        out
    }

    /// The whole answer so far (sent or not), without any stop sequence.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Bytes at the end of the text that are a proper prefix of some stop sequence.
    fn held_back(&self) -> usize {
        let unsent = self.text.get(self.sent..).unwrap_or_default();
        self.stops
            .iter()
            .map(|stop| {
                (1..stop.len().min(unsent.len() + 1))
                    .rev()
                    .find(|&n| {
                        stop.is_char_boundary(n)
                            && unsent.len() >= n
                            && unsent.is_char_boundary(unsent.len() - n)
                            && unsent.ends_with(&stop[..n])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| (*s).to_owned()).collect());
        let mut sent = Vec::new();
        for d in deltas {
            match m.push(d) {
                Step::Continue(s) => sent.push(s),
                Step::Stopped(s) => {
                    sent.push(s);
                    return (sent, true);
                }
            }
        }
        sent.push(m.finish());
        (sent, false)
    }

    #[test]
    fn without_stops_everything_passes_through() {
        let (sent, stopped) = run(&[], &["Hel", "lo", " world"]);
        assert_eq!(sent.concat(), "Hello world");
        assert_eq!(sent[0], "Hel");
        assert!(!stopped);
    }

    #[test]
    fn a_stop_split_over_deltas_is_never_sent() {
        let (sent, stopped) = run(&["END"], &["one E", "N", "D two"]);
        assert!(stopped);
        assert_eq!(sent.concat(), "one ");
        assert!(sent.iter().all(|s| !s.contains('E')));
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let (sent, stopped) = run(&["END"], &["one E", "N", "x"]);
        assert!(!stopped);
        assert_eq!(sent, vec!["one ", "", "ENx", ""]);
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (sent, stopped) = run(&["b", "a"], &["xxab"]);
        assert!(stopped);
        assert_eq!(sent.concat(), "xx");
    }

    #[test]
    fn held_back_text_at_the_end_is_flushed() {
        let (sent, stopped) = run(&["\n\n"], &["line\n"]);
        assert!(!stopped);
        assert_eq!(sent.concat(), "line\n");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let (sent, stopped) = run(&["é!"], &["café", "!", "more"]);
        assert!(stopped);
        assert_eq!(sent.concat(), "caf");
    }
}
