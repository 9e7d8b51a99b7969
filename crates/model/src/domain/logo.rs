//! Logos: images only, judged by their bytes, stored under names the platform generates.

use super::errors::ModelError;

/// An accepted image type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF.
    Gif,
    /// WebP.
    Webp,
}

impl ImageKind {
    /// The type of `bytes` by their magic numbers, whatever the upload's name or declared type.
    ///
    /// # Errors
    /// [`ModelError::UnsupportedType`] for anything but PNG, JPEG, GIF and WebP (SVG and HTML
    /// included: they can carry scripts).
    pub fn sniff(bytes: &[u8]) -> Result<Self, ModelError> {
        match infer::get(bytes).map(|t| t.mime_type()) {
            Some("image/png") => Ok(Self::Png),
            Some("image/jpeg") => Ok(Self::Jpeg),
            Some("image/gif") => Ok(Self::Gif),
            Some("image/webp") => Ok(Self::Webp),
            _ => Err(ModelError::UnsupportedType(
                "a logo must be a PNG, JPEG, GIF or WebP image (judged by its content)",
            )),
        }
    }

    /// File extension of stored logos.
    #[must_use]
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }

    /// The `Content-Type` it is served with.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    fn from_extension(ext: &str) -> Option<Self> {
        [Self::Png, Self::Jpeg, Self::Gif, Self::Webp]
            .into_iter()
            .find(|k| k.extension() == ext)
    }
}

/// The stored name of a logo: `<uuid>.<ext>`, generated, never taken from an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoName(String);

impl LogoName {
    /// A fresh name for an image of `kind`.
    #[must_use]
    pub fn generate(kind: ImageKind) -> Self {
        Self(format!("{}.{}", uuid::Uuid::now_v7(), kind.extension()))
    }

    /// A name from a request path: only names this platform generates are accepted.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        let (stem, ext) = raw.split_once('.')?;
        let id = uuid::Uuid::try_parse(stem).ok()?;
        let kind = ImageKind::from_extension(ext)?;
        (id.hyphenated().to_string() == stem).then(|| Self(format!("{stem}.{}", kind.extension())))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The type its extension names.
    #[must_use]
    pub fn kind(&self) -> Option<ImageKind> {
        self.0
            .rsplit_once('.')
            .and_then(|(_, ext)| ImageKind::from_extension(ext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn the_bytes_decide_the_type() {
        assert_eq!(ImageKind::sniff(PNG).unwrap(), ImageKind::Png);
        for bad in [
            &b"<svg xmlns='http://www.w3.org/2000/svg'/>"[..],
            b"<!DOCTYPE html><html>",
            b"",
        ] {
            assert!(matches!(
                ImageKind::sniff(bad),
                Err(ModelError::UnsupportedType(_))
            ));
        }
    }

    #[test]
    fn only_generated_names_are_served() {
        let name = LogoName::generate(ImageKind::Webp);
        assert_eq!(LogoName::parse(name.as_str()), Some(name));
        for bad in [
            "../etc/passwd",
            "x.png",
            "0190e0e0-0000-7000-8000-000000000000.svg",
            "0190E0E0-0000-7000-8000-000000000000.png",
        ] {
            assert_eq!(LogoName::parse(bad), None, "{bad}");
        }
    }
}
