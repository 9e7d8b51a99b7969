//! Text from documents: PDF (`pdf-extract`), DOCX (`zip` + `quick-xml`: the `w:t` runs of
//! `word/document.xml`, paragraphs as blank lines), HTML (`html2text`), CSV (one line per
//! row, `header: value` pairs), JSON lines (one line per value); text and Markdown as they are.
//! Parsers run on the blocking pool, and a parser that panics on a hostile file fails that
//! document only.

use std::io::Read as _;

use async_trait::async_trait;

use crate::domain::document::DocumentKind;
use crate::domain::ports::{ExtractError, Extractor};

/// The largest `word/document.xml` read out of a DOCX (a zip bomb stops here).
const MAX_DOCX_XML: u64 = 64 * 1024 * 1024;

/// Extracts text with the crates above.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileExtractor;

#[async_trait]
impl Extractor for FileExtractor {
    async fn extract(&self, kind: DocumentKind, bytes: Vec<u8>) -> Result<String, ExtractError> {
        tokio::task::spawn_blocking(move || extract(kind, &bytes))
            .await
            .map_err(|e| {
                if e.is_panic() {
                    ExtractError(format!(
                        "the {} parser could not read the file",
                        kind.as_str()
                    ))
                } else {
                    ExtractError("extraction was cancelled".into())
                }
            })?
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    std::str::from_utf8(bytes).map_err(|_| ExtractError("the text is not UTF-8".into()))
}

/// The text of `bytes` of type `kind`.
///
/// # Errors
/// When the bytes cannot be read as that type.
pub fn extract(kind: DocumentKind, bytes: &[u8]) -> Result<String, ExtractError> {
    match kind {
        DocumentKind::Text | DocumentKind::Markdown => Ok(utf8(bytes)?.to_owned()),
        DocumentKind::Html => html2text::from_read(bytes, 10_000)
            .map_err(|e| ExtractError(format!("the HTML could not be read: {e}"))),
        DocumentKind::Pdf => pdf_extract::extract_text_from_mem(bytes)
            .map_err(|e| ExtractError(format!("the PDF could not be read: {e}"))),
        DocumentKind::Docx => docx(bytes),
        DocumentKind::Csv => csv_text(bytes),
        DocumentKind::Jsonl => jsonl_text(utf8(bytes)?),
    }
}

fn docx(bytes: &[u8]) -> Result<String, ExtractError> {
    use quick_xml::events::Event;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ExtractError(format!("the DOCX is not a readable zip: {e}")))?;
    let entry = archive
        .by_name("word/document.xml")
        .map_err(|_| ExtractError("the DOCX has no word/document.xml".into()))?;
    let mut xml = String::new();
    entry
        .take(MAX_DOCX_XML)
        .read_to_string(&mut xml)
        .map_err(|e| ExtractError(format!("the DOCX body could not be read: {e}")))?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == "w:t" => in_text = true,
            Ok(Event::End(e)) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => out.push_str("\n\n"),
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.name().as_ref() {
                "w:tab" => out.push('\t'),
                "w:br" | "w:cr" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => out.push_str(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) if in_text => {
                let malformed = |e: &dyn std::fmt::Display| {
                    ExtractError(format!("the DOCX text is malformed: {e}"))
                };
                match r.resolve_char_ref().map_err(|e| malformed(&e))? {
                    Some(c) => out.push(c),
                    None => {
                        let entity = format!("&{};", r.xml10_content());
                        let text =
                            quick_xml::escape::unescape(&entity).map_err(|e| malformed(&e))?;
                        out.push_str(&text);
                    }
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(ExtractError(format!("the DOCX body is malformed: {e}"))),
        }
    }
    Ok(out)
}

fn csv_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| ExtractError(format!("the CSV could not be read: {e}")))?
        .clone();
    let mut out = String::new();
    for record in reader.records() {
        let record = record.map_err(|e| ExtractError(format!("the CSV could not be read: {e}")))?;
        let line: Vec<String> = record
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(i, v)| match headers.get(i) {
                Some(h) if !h.trim().is_empty() => format!("{h}: {v}"),
                Some(_) | None => v.to_owned(),
            })
            .collect();
        out.push_str(&line.join("; "));
        out.push_str("\n\n");
    }
    Ok(out)
}

fn jsonl_text(text: &str) -> Result<String, ExtractError> {
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| ExtractError(format!("line {} is not JSON", n + 1)))?;
        match value {
            serde_json::Value::String(s) => out.push_str(&s),
            serde_json::Value::Object(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}: {s}"),
                        other @ (serde_json::Value::Null
                        | serde_json::Value::Bool(_)
                        | serde_json::Value::Number(_)
                        | serde_json::Value::Array(_)
                        | serde_json::Value::Object(_)) => format!("{k}: {other}"),
                    })
                    .collect();
                out.push_str(&parts.join("; "));
            }
            other @ (serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Array(_)) => out.push_str(&other.to_string()),
        }
        out.push_str("\n\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_labelled_lines() {
        let text = csv_text(b"name,city\nAda,London\nLin,\n").unwrap();
        assert_eq!(text, "name: Ada; city: London\n\nname: Lin\n\n");
    }

    #[test]
    fn json_lines_become_text() {
        let text = jsonl_text("{\"q\":\"why\",\"n\":1}\n\n\"plain\"\n").unwrap();
        assert_eq!(text, "n: 1; q: why\n\nplain\n\n");
    }

    #[test]
    fn html_loses_its_tags() {
        let text = extract(
            DocumentKind::Html,
            b"<html><body><h1>Title</h1><p>Some <b>bold</b> text</p><script>x()</script></body></html>",
        )
        .unwrap();
        assert!(text.contains("Title"));
        assert!(text.contains("Some **bold** text") || text.contains("Some bold text"));
        assert!(!text.contains("<p>"));
    }

    #[test]
    fn a_broken_docx_fails_cleanly() {
        assert!(extract(DocumentKind::Docx, b"PK\x03\x04 not really").is_err());
        assert!(extract(DocumentKind::Pdf, b"%PDF-1.4 garbage").is_err());
    }
}
