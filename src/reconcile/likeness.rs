//! Whether two files show the same picture, when their bytes differ: Cloudflare documents
//! that the stored original "for larger images can be a near-lossless version of the
//! original", so byte equality alone cannot judge a stored image.
//!
//! Each file is [`look`]ed at on its own: its format (sniffed, not trusted from a name), its
//! dimensions and frame count (`image_check`, the same header reading the planner and the
//! emulator use), and, for the formats cfimg decodes (JPEG, PNG, GIF, WebP; the first frame
//! of an animation), a perceptual hash (`image_hasher`, a gradient hash of 16x16 bits) and
//! its colours (an 8x8 thumbnail: the hash reads brightness only, so a recoloured picture
//! keeps its hash). [`compare`] then calls them close when the dimensions and frames agree,
//! the hashes are within [`CLOSE_BITS`] of each other and the thumbnails within
//! [`CLOSE_COLOUR`]. SVG, HEIC and AVIF are not decoded: they are
//! compared by dimensions (an SVG's from its root element) and said to be.
//!
//! Memory: decoding is held to the service's limits ([`MAX_SIDE_PX`] per side, and at most
//! [`MAX_DECODE_BYTES`] of pixels), so one look holds at most one decoded picture; the
//! caller runs one look at a time.

use std::io::{Read, Seek};
use std::path::Path;

use image_hasher::{HashAlg, HasherConfig, ImageHash};

use crate::image_check;
use crate::rules::{self, ImageFormat, MAX_SIDE_PX};

/// Side of the perceptual hash, in bits: 16x16 = 256 bits.
const HASH_SIDE: u32 = 16;
/// Hashes that differ in at most this many of their 256 bits show the same picture. A
/// JPEG re-encode at quality 75-95 moves a gradient hash by a few bits; an unrelated
/// picture by about half of them (128); a picture with a changed region by tens.
pub const CLOSE_BITS: u32 = 24;
/// Thumbnails whose channels differ by at most this much on average (of 255) have the same
/// colours: a JPEG re-encode moves them by a few units, a recolouring by tens.
pub const CLOSE_COLOUR: u32 = 12;
/// Side of the colour thumbnail, in pixels.
const THUMB_SIDE: u32 = 8;
/// The most memory one decoded picture may take: 100 megapixels (the service's limit) of
/// 8-bit RGBA, with room for 16-bit greys.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// What one file shows.
#[derive(Debug, Clone)]
pub struct Look {
    /// Its format.
    pub format: ImageFormat,
    /// Width in pixels (0 when unknown).
    pub width: u32,
    /// Height in pixels (0 when unknown).
    pub height: u32,
    /// Frames (1 for stills).
    pub frames: u32,
    /// The perceptual hash of its (first) frame and its colour thumbnail (8x8 RGB), for the
    /// formats cfimg decodes.
    pub hash: Option<(ImageHash, Vec<u8>)>,
}

/// How a stored original compares with its source, once their bytes differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Likeness {
    /// Both decoded: same dimensions and frames, hashes `distance` bits apart (at most
    /// [`CLOSE_BITS`]).
    Close {
        /// Bits apart, of 256.
        distance: u32,
    },
    /// A format cfimg does not decode on one side: same dimensions and frames, which is
    /// all that was compared.
    SameDimensions {
        /// The format not decoded.
        format: &'static str,
    },
    /// Another picture, and why.
    Far(String),
}

/// Looks at the file at `path`. An `Err` says why it is not an image cfimg can judge.
pub fn look(path: &Path) -> Result<Look, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut head = Vec::with_capacity(rules::SNIFF_BYTES);
    (&mut file)
        .take(rules::SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let format = rules::sniff_format(&head).ok_or("not an image format Cloudflare Images takes")?;
    file.rewind().map_err(|e| format!("cannot read it: {e}"))?;
    let dims = image_check::check(format, &mut file).map_err(|e| e.to_string())?;
    let (mut width, mut height) = (dims.width, dims.height);
    if format == ImageFormat::Svg {
        file.rewind().map_err(|e| format!("cannot read it: {e}"))?;
        (width, height) = svg_size(&mut file).unwrap_or((0, 0));
    }
    let hash = match format {
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::Webp => {
            Some(hash(path)?)
        }
        ImageFormat::Svg | ImageFormat::Heic | ImageFormat::Avif => None,
    };
    Ok(Look {
        format,
        width,
        height,
        frames: dims.frames,
        hash,
    })
}

/// Decodes the (first frame of the) picture within the limits; hashes it and shrinks it.
fn hash(path: &Path) -> Result<(ImageHash, Vec<u8>), String> {
    let mut reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("cannot read it: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE_PX);
    limits.max_image_height = Some(MAX_SIDE_PX);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let picture = reader
        .decode()
        .map_err(|e| format!("cannot decode it: {e}"))?;
    let hasher = HasherConfig::new()
        .hash_size(HASH_SIDE, HASH_SIDE)
        .hash_alg(HashAlg::Gradient)
        .to_hasher();
    let thumb = picture
        .resize_exact(
            THUMB_SIDE,
            THUMB_SIDE,
            image::imageops::FilterType::Triangle,
        )
        .to_rgb8()
        .into_raw();
    Ok((hasher.hash_image(&picture), thumb))
}

/// Compares a stored original with its source.
pub fn compare(source: &Look, stored: &Look) -> Likeness {
    if (source.width, source.height) != (stored.width, stored.height) {
        return Likeness::Far(format!(
            "dimensions {}x{} at the source, {}x{} stored",
            source.width, source.height, stored.width, stored.height
        ));
    }
    if source.frames != stored.frames {
        return Likeness::Far(format!(
            "{} frames at the source, {} stored",
            source.frames, stored.frames
        ));
    }
    match (&source.hash, &stored.hash) {
        (Some((a, a_thumb)), Some((b, b_thumb))) => {
            let distance = a.dist(b);
            let colour = colour_difference(a_thumb, b_thumb);
            if distance > CLOSE_BITS {
                Likeness::Far(format!(
                    "another picture: perceptual hashes {distance} of {} bits apart (close is at most {CLOSE_BITS})",
                    HASH_SIDE * HASH_SIDE
                ))
            } else if colour > CLOSE_COLOUR {
                Likeness::Far(format!(
                    "other colours: the thumbnails differ by {colour} of 255 on average (close is at most {CLOSE_COLOUR})"
                ))
            } else {
                Likeness::Close { distance }
            }
        }
        _ if source.width == 0 && source.height == 0 => Likeness::Far(format!(
            "the bytes differ and neither side's dimensions can be read ({} at the source, {} stored)",
            source.format.extension(),
            stored.format.extension()
        )),
        _ => {
            let not_decoded = if source.hash.is_none() {
                source.format
            } else {
                stored.format
            };
            Likeness::SameDimensions {
                format: name(not_decoded),
            }
        }
    }
}

/// The mean absolute difference of two thumbnails' channels (of 255).
fn colour_difference(a: &[u8], b: &[u8]) -> u32 {
    if a.len() != b.len() || a.is_empty() {
        return u32::MAX;
    }
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    (sum / a.len() as u64) as u32
}

/// The format as people write it.
pub fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Gif => "GIF",
        ImageFormat::Webp => "WebP",
        ImageFormat::Svg => "SVG",
        ImageFormat::Heic => "HEIC",
        ImageFormat::Avif => "AVIF",
    }
}

/// An SVG's size from its root element: `width` and `height` in user units (px or none),
/// else the `viewBox`'s. Only the first 64 kB are read: the root element starts there.
fn svg_size(reader: impl Read) -> Option<(u32, u32)> {
    let mut head = Vec::new();
    reader.take(64 * 1024).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let start = text.find("<svg")? + 4;
    let end = start + text[start..].find('>')?;
    let attrs = attributes(&text[start..end]);
    let get = |name: &str| attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let length = |v: &str| {
        let v = v.trim();
        let v = v.strip_suffix("px").unwrap_or(v);
        v.parse::<f64>().ok().filter(|n| n.is_finite() && *n > 0.0)
    };
    let from_box = || {
        let numbers: Vec<f64> = get("viewBox")?
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match numbers[..] {
            [_, _, w, h] if w > 0.0 && h > 0.0 => Some((w, h)),
            _ => None,
        }
    };
    let (w, h) = match (
        get("width").and_then(length),
        get("height").and_then(length),
    ) {
        (Some(w), Some(h)) => (w, h),
        _ => from_box()?,
    };
    Some((
        w.round().min(f64::from(u32::MAX)) as u32,
        h.round().min(f64::from(u32::MAX)) as u32,
    ))
}

/// `name="value"` pairs of a start tag's inside (either quote).
fn attributes(tag: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].split_whitespace().last().unwrap_or("");
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(quote) else {
            break;
        };
        out.push((name, &after[1..1 + close]));
        rest = &after[close + 2..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svg_is_sized_by_its_root_element() {
        let size = |s: &str| svg_size(s.as_bytes());
        assert_eq!(
            size(
                r#"<?xml version="1.0"?><svg xmlns="x" stroke-width="9" width="40" height='30px'>"#
            ),
            Some((40, 30))
        );
        assert_eq!(size(r#"<svg viewBox="0 0 120.4 80">"#), Some((120, 80)));
        assert_eq!(
            size(r#"<svg width="100%" height="100%" viewBox="0,0,5,6">"#),
            Some((5, 6))
        );
        assert_eq!(size("<svg>"), None);
        assert_eq!(size("no svg here"), None);
    }

    fn picture(seed: u32, path: &Path, format: image::ImageFormat) {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            let v = (x * 4 + y * 2 + seed * 97) % 256;
            let ring = ((x as i32 - 32).pow(2) + (y as i32 - 24).pow(2)) < 200;
            if ring ^ (seed % 2 == 1) {
                image::Rgb([v as u8, 40, 200])
            } else {
                image::Rgb([20, (255 - v) as u8, 90])
            }
        });
        img.save_with_format(path, format).unwrap();
    }

    #[test]
    fn a_reencoded_picture_is_close_and_another_one_is_far() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        let jpg = dir.path().join("a.jpg");
        let other = dir.path().join("b.png");
        picture(0, &png, image::ImageFormat::Png);
        picture(0, &jpg, image::ImageFormat::Jpeg);
        picture(1, &other, image::ImageFormat::Png);
        let (a, b, c) = (
            look(&png).unwrap(),
            look(&jpg).unwrap(),
            look(&other).unwrap(),
        );
        assert_eq!((a.width, a.height, a.frames), (64, 48, 1));
        assert!(
            matches!(compare(&a, &b), Likeness::Close { .. }),
            "{:?}",
            compare(&a, &b)
        );
        assert!(
            matches!(compare(&a, &c), Likeness::Far(_)),
            "{:?}",
            compare(&a, &c)
        );
        let small = dir.path().join("s.png");
        image::RgbImage::new(8, 8).save(&small).unwrap();
        let Likeness::Far(why) = compare(&a, &look(&small).unwrap()) else {
            panic!("other dimensions are far")
        };
        assert!(why.contains("64x48 at the source, 8x8 stored"), "{why}");
        assert!(look(&dir.path().join("none")).is_err());
        // The same shapes in other colours keep their brightness hash, not their colours.
        let tinted = dir.path().join("t.png");
        let mut img = image::open(&png).unwrap().to_rgb8();
        for p in img.pixels_mut() {
            p.0[2] = p.0[2].saturating_add(90);
        }
        img.save(&tinted).unwrap();
        let Likeness::Far(why) = compare(&a, &look(&tinted).unwrap()) else {
            panic!("a recoloured picture is far")
        };
        assert!(why.contains("other colours"), "{why}");
    }
}
