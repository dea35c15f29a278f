//! The Images service's own rules on what it accepts, shared by the local checks that
//! save a request (`plan`) and the emulator that enforces them, so both agree by construction.

/// Largest file cfimg sends: 10 MiB. Cloudflare says "10 MB" without saying whether it
/// means 10^7 bytes or 10 MiB, so a file in between goes to the service and its answer is
/// recorded (a refusal is a `rejected` item with Cloudflare's reason), not refused on a guess.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// The service's limit as the emulator enforces it: the stricter reading of "10 MB"
/// (10^7 bytes), so that the client is tested against the refusal it may meet.
pub const SERVICE_MAX_FILE_BYTES: u64 = 10 * 1000 * 1000;
/// Largest `metadata` JSON text, in bytes.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Longest custom id, in characters.
pub const MAX_ID_CHARS: usize = 1024;
/// Longest `creator`, in characters.
pub const MAX_CREATOR_CHARS: usize = 1024;
/// Most variants an account may define.
pub const MAX_VARIANTS: usize = 100;
/// Longest side of an image the service accepts, in pixels.
pub const MAX_SIDE_PX: u32 = 12_000;
/// Most pixels of an image (for animations: the total area of their frames).
pub const MAX_PIXELS: u64 = 100_000_000;
/// How many leading bytes [`sniff_format`] needs to decide.
pub const SNIFF_BYTES: usize = 512;

/// An image format the upload endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// GIF, animated or not.
    Gif,
    /// WebP, animated or not.
    Webp,
    /// SVG (text).
    Svg,
    /// HEIC (accepted on some plans).
    Heic,
    /// AVIF (accepted on some plans).
    Avif,
}

impl ImageFormat {
    /// The MIME type to send and serve.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Svg => "image/svg+xml",
            ImageFormat::Heic => "image/heic",
            ImageFormat::Avif => "image/avif",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Svg => "svg",
            ImageFormat::Heic => "heic",
            ImageFormat::Avif => "avif",
        }
    }
}

/// Decides the format from the first bytes of the content (at least [`SNIFF_BYTES`] of it
/// when the file is that long). File names are never trusted.
pub fn sniff_format(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(ImageFormat::Jpeg);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(ImageFormat::Png);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some(ImageFormat::Gif);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some(ImageFormat::Webp);
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let brand = &head[8..12];
        if brand == b"avif" || brand == b"avis" {
            return Some(ImageFormat::Avif);
        }
        if [b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"hevx"].contains(&brand.try_into().ok()?)
        {
            return Some(ImageFormat::Heic);
        }
    }
    if looks_like_svg(head) {
        return Some(ImageFormat::Svg);
    }
    None
}

/// SVG is text: skip a BOM, whitespace, an XML declaration, comments and a doctype, then
/// expect an `<svg` element.
fn looks_like_svg(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            match after.find("?>") {
                Some(end) => rest = after[end + 2..].trim_start(),
                None => return false,
            }
        } else if let Some(after) = rest.strip_prefix("<!--") {
            match after.find("-->") {
                Some(end) => rest = after[end + 3..].trim_start(),
                None => return false,
            }
        } else if let Some(after) = rest.strip_prefix("<!") {
            match after.find('>') {
                Some(end) => rest = after[end + 1..].trim_start(),
                None => return false,
            }
        } else {
            return rest.starts_with("<svg");
        }
    }
}

/// Extensions that mark an id as a non-image file, which Cloudflare refuses as a custom id.
/// A denylist, not an allowlist: ids like `report.v2` or `a.b` stay valid.
const NON_IMAGE_EXTENSIONS: &[&str] = &[
    "txt", "html", "htm", "xhtml", "js", "mjs", "css", "json", "xml", "csv", "md", "pdf", "doc",
    "docx", "xls", "xlsx", "ppt", "pptx", "zip", "gz", "tgz", "tar", "rar", "7z", "bz2", "xz",
    "exe", "dll", "so", "bin", "sh", "bat", "php", "asp", "aspx", "jsp", "py", "rb", "pl", "mp4",
    "m4v", "mov", "avi", "mkv", "webm", "flv", "wmv", "mpg", "mpeg", "mp3", "wav", "ogg", "oga",
    "ogv", "flac", "aac", "m4a", "wasm", "swf", "apk", "dmg", "iso",
];

/// Checks a custom id against Cloudflare's rules; the error says which rule it breaks.
pub fn validate_custom_id(id: &str) -> Result<(), String> {
    validate_service_custom_id(id)?;
    if let Some(rule) = shadowed_route(id) {
        return Err(rule);
    }
    Ok(())
}

/// API routes under `v1/` that a custom id would collide with: `GET v1/{id}` of such an id
/// reaches the route, never the image, so cfimg could not read it back.
const SHADOWED_ROUTES: &[&str] = &[
    "stats",
    "keys",
    "variants",
    "config",
    "batch_token",
    "direct_upload",
];

/// The rule a custom id breaks by shadowing an API route, if any.
fn shadowed_route(id: &str) -> Option<String> {
    let first = id.split('/').next().unwrap_or(id);
    if SHADOWED_ROUTES.contains(&id) || (matches!(first, "keys" | "variants") && id.contains('/')) {
        return Some(format!(
            "the id must not be an API route's name ({first:?}: GET v1/{id} would reach the route, not the image)"
        ));
    }
    if id.ends_with("/blob") {
        return Some(
            "the id must not end in \"/blob\" (GET v1/<id> would read another image's original)"
                .into(),
        );
    }
    None
}

/// The custom-id rules the service itself enforces (code 5411), without cfimg's own
/// refusal of ids that shadow API routes (which the service accepts, and cannot serve).
pub fn validate_service_custom_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("the id is longer than {MAX_ID_CHARS} characters"));
    }
    if id.starts_with('/') || id.ends_with('/') {
        return Err("the id must not start or end with '/'".into());
    }
    if is_uuid(id) {
        return Err("the id must not be a UUID".into());
    }
    let last = id.rsplit('/').next().unwrap_or(id);
    if let Some((_, ext)) = last.rsplit_once('.') {
        let ext = ext.to_ascii_lowercase();
        if NON_IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            return Err(format!(
                "the id must not end in a non-image file extension (.{ext})"
            ));
        }
    }
    if id.chars().any(|c| c.is_control()) {
        return Err("the id must not contain control characters".into());
    }
    Ok(())
}

/// True for the 8-4-4-4-12 hexadecimal form of a UUID.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Checks a `metadata` JSON text: a JSON object of at most [`MAX_METADATA_BYTES`] bytes.
pub fn validate_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata is {} bytes; the limit is {MAX_METADATA_BYTES}",
            text.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("metadata must be a JSON object".into()),
        Err(e) => Err(format!("metadata is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_accepted_format_and_refuses_others() {
        assert_eq!(
            sniff_format(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            sniff_format(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageFormat::Png)
        );
        assert_eq!(sniff_format(b"GIF89a...."), Some(ImageFormat::Gif));
        assert_eq!(
            sniff_format(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(
            sniff_format(b"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!-- c -->\n<svg xmlns=\"x\"/>"),
            Some(ImageFormat::Svg)
        );
        assert_eq!(sniff_format(b"\0\0\0\x1cftypavif"), Some(ImageFormat::Avif));
        assert_eq!(sniff_format(b"hello world"), None);
        assert_eq!(sniff_format(b"%PDF-1.7"), None);
        assert_eq!(sniff_format(b"<html><svg/></html>"), None);
        assert_eq!(sniff_format(b""), None);
    }

    #[test]
    fn custom_id_rules() {
        assert!(validate_custom_id("photos/2024/cat.jpg").is_ok());
        assert!(validate_custom_id("ünïcødé/ファイル.png").is_ok());
        assert!(validate_custom_id("report.v2").is_ok());
        assert!(
            validate_custom_id("/a.jpg")
                .unwrap_err()
                .contains("start or end")
        );
        assert!(
            validate_custom_id("a/")
                .unwrap_err()
                .contains("start or end")
        );
        assert!(
            validate_custom_id("notes.TXT")
                .unwrap_err()
                .contains(".txt")
        );
        assert!(validate_custom_id("clip.mp4").is_err());
        assert!(
            validate_custom_id("2cdc28f0-017a-49c4-9ed7-87056c83901b")
                .unwrap_err()
                .contains("UUID")
        );
        assert!(
            validate_custom_id(&"a".repeat(1025))
                .unwrap_err()
                .contains("1024")
        );
        assert!(validate_custom_id(&"é".repeat(1024)).is_ok());
        for shadow in [
            "stats",
            "keys",
            "variants",
            "config",
            "batch_token",
            "direct_upload",
            "variants/public",
            "keys/default",
            "photos/cat.png/blob",
        ] {
            let why = validate_custom_id(shadow).expect_err(shadow);
            assert!(
                why.contains("API route") || why.contains("/blob"),
                "{shadow}: {why}"
            );
            assert!(validate_service_custom_id(shadow).is_ok(), "{shadow}");
        }
        assert!(validate_custom_id("stats.png").is_ok());
        assert!(validate_custom_id("photos/stats").is_ok());
        assert!(validate_custom_id("blob").is_ok());
    }

    #[test]
    fn metadata_rules() {
        assert!(validate_metadata(r#"{"a":"b"}"#).is_ok());
        assert!(validate_metadata("[1]").is_err());
        assert!(validate_metadata("{").is_err());
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(1100));
        assert!(validate_metadata(&big).unwrap_err().contains("1024"));
    }
}
