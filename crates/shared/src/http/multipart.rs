//! Reading an upload: one file part and a few small text parts of a `multipart/form-data`
//! body, each bounded while it streams in, anything else refused.

use std::collections::HashMap;

use actix_multipart::Multipart;
use futures_util::StreamExt as _;

/// What a form may hold.
#[derive(Clone, Copy, Debug)]
pub struct FormRules<'a> {
    /// The file part's name.
    pub file: &'a str,
    /// The largest file, in bytes (one byte more is refused without reading the rest).
    pub max_file_bytes: usize,
    /// The text parts allowed besides the file.
    pub text: &'a [&'a str],
    /// The largest text part, in bytes.
    pub max_text_bytes: usize,
}

/// The file part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilePart {
    /// The file name the client gave (untrusted; never a path).
    pub name: String,
    /// The part's media type, if given.
    pub media_type: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A form as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// The file part.
    pub file: FilePart,
    /// The text parts given, by name (UTF-8).
    pub fields: HashMap<String, String>,
}

/// Why a form was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body is not `multipart/form-data`.
    #[error("the body is not multipart/form-data")]
    NotMultipart,
    /// The body could not be read as multipart.
    #[error("the multipart body could not be read")]
    Unreadable,
    /// No file part.
    #[error("the file part is missing")]
    MissingFile,
    /// The file is larger than allowed (the limit).
    #[error("the file is larger than {0} bytes")]
    FileTooLarge(usize),
    /// A text part is too long, or not UTF-8 (its name).
    #[error("the part `{0}` is too long or not UTF-8")]
    BadText(String),
    /// A part that is not allowed (its name), or a part given twice.
    #[error("the part `{0}` is not expected")]
    Unexpected(String),
}

/// Reads a form by `rules`.
///
/// # Errors
/// [`FormError`] for a body that is not multipart or not readable, a missing file, a file or
/// text part too large, an unknown or repeated part.
pub async fn read_form(
    req: &actix_web::HttpRequest,
    mut form: Multipart,
    rules: FormRules<'_>,
) -> Result<Form, FormError> {
    if !super::is_multipart(req) {
        return Err(FormError::NotMultipart);
    }
    let mut file: Option<FilePart> = None;
    let mut fields = HashMap::new();
    while let Some(part) = form.next().await {
        let mut part = part.map_err(|_| FormError::Unreadable)?;
        let name = part.name().unwrap_or_default().to_owned();
        let is_file = name == rules.file;
        if (is_file && file.is_some())
            || (!is_file && (!rules.text.contains(&name.as_str()) || fields.contains_key(&name)))
        {
            return Err(FormError::Unexpected(name));
        }
        let limit = if is_file {
            rules.max_file_bytes
        } else {
            rules.max_text_bytes
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            bytes.extend_from_slice(&chunk.map_err(|_| FormError::Unreadable)?);
            if bytes.len() > limit {
                return Err(if is_file {
                    FormError::FileTooLarge(limit)
                } else {
                    FormError::BadText(name)
                });
            }
        }
        if is_file {
            file = Some(FilePart {
                name: part
                    .content_disposition()
                    .and_then(|d| d.get_filename())
                    .unwrap_or_default()
                    .to_owned(),
                media_type: part.content_type().map(ToString::to_string),
                bytes,
            });
        } else {
            let text = String::from_utf8(bytes).map_err(|_| FormError::BadText(name.clone()))?;
            fields.insert(name, text);
        }
    }
    Ok(Form {
        file: file.ok_or(FormError::MissingFile)?,
        fields,
    })
}
