//! Text rules: cutting a document's text into chunks (the `text-splitter` crate, sized by the
//! embedding model's tokenizer when known), and the terms full-text search indexes and matches
//! (words, and CJK text as overlapping character pairs since it has no spaces to split on).

use text_splitter::{ChunkConfig, ChunkSizer, TextSplitter};

use super::base::Chunking;

/// Counts tokens the way an embedding model does.
pub trait TokenCounter: Send + Sync {
    /// Tokens in `text`.
    fn count(&self, text: &str) -> usize;
}

/// The count when the model's tokenizer is not known: one token per 4 characters (the
/// gateway's estimate).
#[derive(Clone, Copy, Debug, Default)]
pub struct CharEstimate;

impl TokenCounter for CharEstimate {
    fn count(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4)
    }
}

struct Sizer<'a>(&'a dyn TokenCounter);

impl ChunkSizer for Sizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// A piece of text and its size in tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The text.
    pub text: String,
    /// Its tokens.
    pub tokens: u32,
}

/// Cuts `text` into chunks of at most `chunking.size` tokens sharing `chunking.overlap` tokens,
/// at the largest semantic boundary that fits (paragraphs, then sentences, words, characters);
/// with custom separators the text is first cut at every separator.
#[must_use]
pub fn split(text: &str, chunking: &Chunking, counter: &dyn TokenCounter) -> Vec<Piece> {
    let size = usize::try_from(chunking.size).unwrap_or(usize::MAX).max(1);
    let overlap = usize::try_from(chunking.overlap).unwrap_or(0).min(size / 2);
    let config = ChunkConfig::new(size).with_sizer(Sizer(counter));
    let config = match config.with_overlap(overlap) {
        Ok(c) => c,
        // Unreachable for validated settings (overlap ≤ size / 2 < size); no overlap otherwise.
        Err(_) => ChunkConfig::new(size).with_sizer(Sizer(counter)),
    };
    let splitter = TextSplitter::new(config);
    let mut segments: Vec<&str> = vec![text];
    for sep in &chunking.separators {
        segments = segments
            .iter()
            .flat_map(|s| s.split(sep.as_str()))
            .collect();
    }
    segments
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .flat_map(|segment| splitter.chunks(segment).collect::<Vec<_>>())
        .filter(|c| !c.trim().is_empty())
        .map(|c| Piece {
            text: c.to_owned(),
            tokens: u32::try_from(counter.count(c)).unwrap_or(u32::MAX),
        })
        .collect()
}

/// Whether `c` belongs to a script written without spaces between words (Han, kana, Hangul).
#[must_use]
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}'
        | '\u{3400}'..='\u{4dbf}'
        | '\u{4e00}'..='\u{9fff}'
        | '\u{f900}'..='\u{faff}'
        | '\u{ac00}'..='\u{d7af}'
        | '\u{20000}'..='\u{2ffff}')
}

/// The terms of `text` for full-text search: lower-cased words of letters and digits, and
/// every pair of neighbouring CJK characters (a lone CJK character stands for itself).
#[must_use]
pub fn search_terms(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_run = |run: &mut Vec<char>, terms: &mut Vec<String>| {
        match run.len() {
            0 => {}
            1 => terms.push(run.iter().collect()),
            _ => terms.extend(run.windows(2).map(|w| w.iter().collect::<String>())),
        }
        run.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                terms.push(std::mem::take(&mut word));
            }
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut terms);
            word.extend(c.to_lowercase());
        } else {
            flush_run(&mut run, &mut terms);
            if !word.is_empty() {
                terms.push(std::mem::take(&mut word));
            }
        }
    }
    flush_run(&mut run, &mut terms);
    if !word.is_empty() {
        terms.push(word);
    }
    terms
}

/// What a chunk is indexed as for full-text search: its terms separated by spaces.
#[must_use]
pub fn search_text(text: &str) -> String {
    search_terms(text).join(" ")
}

/// The distinct terms of a query (at most 64), for matching any of them.
#[must_use]
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    search_terms(query)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::base::{ChunkingStrategy, MIN_CHUNK_TOKENS};

    #[test]
    fn chinese_is_indexed_as_character_pairs() {
        assert_eq!(
            search_terms("知识库检索 works, Fine!"),
            ["知识", "识库", "库检", "检索", "works", "fine"]
        );
        assert_eq!(search_terms("的 a"), ["的", "a"]);
        assert_eq!(query_terms("检索 检索 x"), ["检索", "x"]);
    }

    #[test]
    fn chunks_respect_size_and_overlap() {
        let text = (0..400)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunking = Chunking {
            strategy: ChunkingStrategy::Custom,
            size: MIN_CHUNK_TOKENS,
            overlap: 10,
            separators: Vec::new(),
        };
        let pieces = split(&text, &chunking, &CharEstimate);
        assert!(pieces.len() > 10);
        assert!(pieces.iter().all(|p| p.tokens <= 50));
        // Neighbours share words (the overlap).
        let first: Vec<&str> = pieces[0].text.split(' ').collect();
        assert!(
            pieces[1].text.starts_with(first[first.len() - 1])
                || pieces[1].text.contains(first[first.len() - 2])
        );
        // Every word is in some chunk, in order.
        assert!(pieces[0].text.starts_with("word0 "));
        assert!(pieces.last().unwrap().text.ends_with("word399"));
    }

    #[test]
    fn custom_separators_cut_first() {
        let chunking = Chunking {
            strategy: ChunkingStrategy::Custom,
            size: 500,
            overlap: 0,
            separators: vec!["###".into()],
        };
        let pieces = split("alpha beta###gamma###  ###delta", &chunking, &CharEstimate);
        let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["alpha beta", "gamma", "delta"]);
    }
}
