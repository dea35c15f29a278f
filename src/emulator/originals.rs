//! What `GET v1/{id}/blob` serves, as the real service may: "For most images this will be
//! the originally uploaded file. For larger images it can be a near-lossless version of
//! the original." Two switches, both off by default (then the stored bytes are served as
//! uploaded):
//!
//! - `--reencode-originals-above BYTES`: an original over BYTES that decodes (JPEG, PNG,
//!   GIF, WebP) is served re-encoded as a JPEG at `--reencode-quality`: the same picture in
//!   other bytes. What does not decode (SVG, HEIC, AVIF) and animations (a JPEG would keep
//!   one frame) are served as stored.
//! - `--alter-original ID=FILE` (and [`super::EmulatorHandle::alter_original`]): image ID's
//!   original is served as FILE's bytes, whatever was uploaded: an account that holds
//!   another picture than its source, which only a comparison of pictures can tell.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;

use super::store::Blob;
use crate::rules;

/// The switches, as flags of `cfimg emulator` and fields of its configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginalsArgs {
    /// Serve an original over BYTES re-encoded as a JPEG (the service's "near-lossless
    /// version" of larger images): the same picture, other bytes.
    #[arg(long, value_name = "BYTES")]
    pub reencode_originals_above: Option<u64>,
    /// JPEG quality of those re-encodes (1-100).
    #[arg(long, value_name = "Q", default_value_t = DEFAULT_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub reencode_quality: u8,
    /// Serve FILE as image ID's original instead of what was uploaded (repeatable).
    #[arg(long = "alter-original", value_name = "ID=FILE", value_parser = parse_alter)]
    pub alter_original: Vec<(String, PathBuf)>,
}

/// The quality of re-encodes unless told.
pub const DEFAULT_QUALITY: u8 = 85;

impl Default for OriginalsArgs {
    fn default() -> OriginalsArgs {
        OriginalsArgs {
            reencode_originals_above: None,
            reencode_quality: DEFAULT_QUALITY,
            alter_original: Vec::new(),
        }
    }
}

fn parse_alter(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((id, file)) if !id.is_empty() && !file.is_empty() => {
            Ok((id.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected ID=FILE, got {text:?}")),
    }
}

/// The switches in force, and the altered originals.
#[derive(Debug)]
pub struct Originals {
    above: Option<u64>,
    quality: u8,
    altered: Mutex<HashMap<String, Bytes>>,
}

impl Originals {
    /// Reads the files of `--alter-original`.
    pub fn new(args: &OriginalsArgs) -> std::io::Result<Originals> {
        let mut altered = HashMap::new();
        for (id, file) in &args.alter_original {
            let bytes = std::fs::read(file).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("--alter-original {id}={}: {e}", file.display()),
                )
            })?;
            altered.insert(id.clone(), Bytes::from(bytes));
        }
        Ok(Originals {
            above: args.reencode_originals_above,
            quality: args.reencode_quality,
            altered: Mutex::new(altered),
        })
    }

    /// From now on, image `id`'s original is served as `bytes`.
    pub fn alter(&self, id: &str, bytes: Bytes) {
        if let Ok(mut altered) = self.altered.lock() {
            altered.insert(id.to_string(), bytes);
        }
    }

    /// The type and bytes `GET v1/{id}/blob` answers for image `id` stored as `blob`.
    pub fn serve(&self, id: &str, blob: &Blob) -> (&'static str, Bytes) {
        let altered = self.altered.lock().ok().and_then(|a| a.get(id).cloned());
        if let Some(bytes) = altered {
            let mime = rules::sniff_format(&bytes[..bytes.len().min(rules::SNIFF_BYTES)])
                .map_or("application/octet-stream", |f| f.mime());
            return (mime, bytes);
        }
        match self.above {
            Some(above) if blob.bytes.len() as u64 > above => {
                match reencode(&blob.bytes, self.quality) {
                    Some(jpeg) => ("image/jpeg", jpeg),
                    None => (blob.mime, blob.bytes.clone()),
                }
            }
            _ => (blob.mime, blob.bytes.clone()),
        }
    }
}

/// The picture in `bytes` as a JPEG of this quality; `None` when it does not decode or
/// is an animation.
fn reencode(bytes: &[u8], quality: u8) -> Option<Bytes> {
    let format = rules::sniff_format(&bytes[..bytes.len().min(rules::SNIFF_BYTES)])?;
    let dims = crate::image_check::check(format, Cursor::new(bytes)).ok()?;
    if dims.frames > 1 {
        return None;
    }
    let picture = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .decode()
        .ok()?;
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    picture.to_rgb8().write_with_encoder(encoder).ok()?;
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> Bytes {
        let img =
            image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        Bytes::from(out)
    }

    #[test]
    fn large_originals_come_back_reencoded_and_altered_ones_as_told() {
        let png = png();
        let blob = Blob::new(png.clone(), "image/png");
        let off = Originals::new(&OriginalsArgs::default()).unwrap();
        assert_eq!(off.serve("a", &blob), ("image/png", png.clone()));

        let on = Originals::new(&OriginalsArgs {
            reencode_originals_above: Some(png.len() as u64 - 1),
            ..OriginalsArgs::default()
        })
        .unwrap();
        let (mime, bytes) = on.serve("a", &blob);
        assert_eq!(mime, "image/jpeg");
        assert_ne!(bytes, png);
        assert!(bytes.starts_with(&[0xFF, 0xD8]));
        let svg = Blob::new(
            Bytes::from_static(b"<svg width=\"9\" height=\"9\"/>"),
            "image/svg+xml",
        );
        assert_eq!(
            on.serve("s", &svg).1,
            svg.bytes,
            "what does not decode is served as stored"
        );

        on.alter("a", Bytes::from_static(b"GIF89a"));
        assert_eq!(
            on.serve("a", &blob),
            ("image/gif", Bytes::from_static(b"GIF89a"))
        );
        assert_eq!(on.serve("b", &blob).0, "image/jpeg");
    }

    #[test]
    fn an_animation_is_served_as_stored() {
        let mut gif = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut gif, 4, 4, &[0, 0, 0, 255, 255, 255]).unwrap();
            for i in 0..2u8 {
                let frame = gif::Frame {
                    width: 4,
                    height: 4,
                    buffer: std::borrow::Cow::Owned(vec![i; 16]),
                    ..gif::Frame::default()
                };
                enc.write_frame(&frame).unwrap();
            }
        }
        let blob = Blob::new(Bytes::from(gif), "image/gif");
        let on = Originals::new(&OriginalsArgs {
            reencode_originals_above: Some(1),
            ..OriginalsArgs::default()
        })
        .unwrap();
        assert_eq!(on.serve("g", &blob), ("image/gif", blob.bytes.clone()));
    }

    #[test]
    fn alter_flags_parse_as_id_and_file() {
        assert_eq!(
            parse_alter("photos/a.png=/tmp/x.png"),
            Ok(("photos/a.png".to_string(), PathBuf::from("/tmp/x.png")))
        );
        assert!(parse_alter("nofile=").is_err());
        assert!(parse_alter("plain").is_err());
    }
}
