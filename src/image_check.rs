//! What the Images service decodes: an image's dimensions and whether its structure holds,
//! shared by the emulator (which refuses what the service refuses) and the planner (which
//! saves the request), so both agree by construction.
//!
//! The dimensions come from the header (the `imagesize` crate); the limits
//! ([`MAX_SIDE_PX`], [`MAX_PIXELS`]) are checked before any pixel data is read, so an oversize
//! image is refused cheaply. Then a structural check, in bounded memory whatever the image's
//! size (never a whole decoded frame in memory):
//!
//! - **PNG**: decoded row by row with the `png` crate, which checks every chunk CRC, the zlib
//!   stream and its Adler-32, that all rows are there, and reads on to `IEND`. APNG frames
//!   after the default image are not counted (`frames` is 1).
//! - **GIF**: walked twice with the `gif` crate: first the frame descriptors only (summing
//!   their areas, so a huge animation is refused before any decoding), then every frame's
//!   LZW data decoded through a small buffer. Block structure, LZW codes and the trailer are
//!   checked; a frame whose data ends early is accepted, as browsers accept it.
//! - **JPEG**: a marker walk: SOI, segments whose lengths are consistent, one SOF with sane
//!   dimensions and component count, at least one SOS followed by entropy-coded data, EOI.
//!   The entropy-coded data itself is not decoded: a flipped bit inside it goes unnoticed
//!   (as most decoders tolerate it too).
//! - **WebP**: a RIFF walk: the RIFF size fits the data (trailing bytes after it are
//!   ignored, as libwebp does), chunks tile it exactly, the image chunk (`VP8 `, `VP8L`, or
//!   `VP8X` with them inside) has a sane bitstream header, and animations (`ANMF`) are summed
//!   frame by frame. The compressed bitstream itself is not decoded.
//! - **SVG**: a complete document, read as a stream (memory bounded by the nesting depth,
//!   never the file): tags, comments, CDATA, processing instructions and the doctype are
//!   closed, end tags match their start tags, and exactly one root element is there and
//!   closed, with nothing but white space, comments and processing instructions after it.
//!   Entities, namespaces and the SVG vocabulary are not checked. SVG (vector) has no
//!   dimensions: they are reported as 0.
//! - **HEIC, AVIF**: an ISO BMFF walk: top-level boxes whose sizes add up exactly to the file
//!   (a box running past the end is a truncated file), `ftyp` first, a `meta` box, and the
//!   image data (an `mdat` box, or an `idat` inside `meta`), whose extents as `iloc` gives
//!   them lie inside the file (a last `mdat` of size 0 adds up at any length). The coded image itself is not
//!   decoded. Dimensions are read when `imagesize` can, and checked against the limits;
//!   unknown dimensions are reported as 0.
//!
//! A format error is [`ImageProblem::Undecodable`] (service code 9422); dimensions over the
//! limits are [`ImageProblem::TooLarge`] (code 5400).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use crate::rules::{ImageFormat, MAX_PIXELS, MAX_SIDE_PX};

/// What the service would see of an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    /// Width in pixels (the canvas, for animations); 0 when unknown (SVG).
    pub width: u32,
    /// Height in pixels; 0 when unknown.
    pub height: u32,
    /// Frames: 1 for stills.
    pub frames: u32,
    /// Pixels over all frames (each frame's own area, for animations).
    pub total_pixels: u64,
}

/// Why the service would refuse an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProblem {
    /// Truncated or corrupt: service code 9422. The text says what is wrong.
    Undecodable(String),
    /// Over 12,000 px per side or 100 megapixels (animations: the total area of their
    /// frames): service code 5400. The text names the dimensions.
    TooLarge(String),
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageProblem::Undecodable(why) => write!(f, "the image could not be decoded: {why}"),
            ImageProblem::TooLarge(why) => write!(f, "the image is too large: {why}"),
        }
    }
}

impl std::error::Error for ImageProblem {}

fn bad(why: impl Into<String>) -> ImageProblem {
    ImageProblem::Undecodable(why.into())
}

fn io_bad(e: io::Error) -> ImageProblem {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("the file is truncated")
    } else {
        bad(format!("read error: {e}"))
    }
}

/// Checks `reader` (positioned anywhere; it is rewound) as an image of `format`, the way the
/// service decodes it. Memory stays bounded by a few rows or buffers, not by the image size.
pub fn check<R: Read + Seek>(format: ImageFormat, reader: R) -> Result<Dimensions, ImageProblem> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    r.seek(SeekFrom::Start(0)).map_err(io_bad)?;
    let header = match imagesize::reader_size(&mut r) {
        Ok(size) => Some((clamp(size.width), clamp(size.height))),
        Err(e) => match format {
            ImageFormat::Svg | ImageFormat::Heic | ImageFormat::Avif => None,
            _ => return Err(bad(format!("unreadable header: {e}"))),
        },
    };
    if let Some((w, h)) = header {
        check_still(w, h)?;
    }
    r.seek(SeekFrom::Start(0)).map_err(io_bad)?;
    let (width, height) = header.unwrap_or((0, 0));
    let still = Dimensions {
        width,
        height,
        frames: 1,
        total_pixels: u64::from(width) * u64::from(height),
    };
    match format {
        ImageFormat::Png => png_check(r, still),
        ImageFormat::Gif => gif_check(r, still),
        ImageFormat::Jpeg => jpeg_check(r, still),
        ImageFormat::Webp => webp_check(r, still),
        ImageFormat::Svg => svg_check(r, still),
        ImageFormat::Heic | ImageFormat::Avif => bmff_check(r, still),
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The per-image limits: each side, then the area.
fn check_still(width: u32, height: u32) -> Result<(), ImageProblem> {
    if width > MAX_SIDE_PX || height > MAX_SIDE_PX {
        return Err(ImageProblem::TooLarge(format!(
            "{width}x{height} px: a side is over {MAX_SIDE_PX} px"
        )));
    }
    let area = u64::from(width) * u64::from(height);
    if area > MAX_PIXELS {
        return Err(ImageProblem::TooLarge(format!(
            "{width}x{height} px is {area} pixels, over {MAX_PIXELS}"
        )));
    }
    Ok(())
}

/// The animation limit: the total area of the frames.
fn check_total(width: u32, height: u32, frames: u32, total: u64) -> Result<(), ImageProblem> {
    if total > MAX_PIXELS {
        return Err(ImageProblem::TooLarge(format!(
            "{width}x{height} px animation: {frames} frames total {total} pixels, over {MAX_PIXELS}"
        )));
    }
    Ok(())
}

fn png_check<R: BufRead + Seek>(r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let mut options = png::DecodeOptions::default();
    options.set_ignore_adler32(false);
    let decoder = png::Decoder::new_with_options(r, options);
    let pe = |e: png::DecodingError| bad(format!("PNG: {e}"));
    let mut reader = decoder.read_info().map_err(pe)?;
    while reader.next_row().map_err(pe)?.is_some() {}
    reader.finish().map_err(pe)?;
    Ok(dims)
}

fn gif_check<R: BufRead + Seek>(mut r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let ge = |e: gif::DecodingError| bad(format!("GIF: {e}"));
    let options = || {
        let mut o = gif::DecodeOptions::new();
        o.set_color_output(gif::ColorOutput::Indexed);
        o
    };
    // Pass 1: frame descriptors only, to refuse a huge animation before decoding it.
    let mut frames = 0u32;
    let mut total = 0u64;
    {
        let mut o = options();
        o.skip_frame_decoding(true);
        let mut decoder = o.read_info(&mut r).map_err(ge)?;
        while let Some(frame) = decoder.next_frame_info().map_err(ge)? {
            frames += 1;
            total += u64::from(frame.width) * u64::from(frame.height);
            check_total(dims.width, dims.height, frames, total)?;
        }
    }
    if frames == 0 {
        return Err(bad("GIF: no image data"));
    }
    // Pass 2: the LZW data of every frame, through a small buffer.
    r.seek(SeekFrom::Start(0)).map_err(io_bad)?;
    let mut decoder = options().read_info(r).map_err(ge)?;
    let mut buf = vec![0u8; 64 * 1024];
    while decoder.next_frame_info().map_err(ge)?.is_some() {
        while decoder.fill_buffer(&mut buf).map_err(ge)? {}
    }
    Ok(Dimensions {
        frames,
        total_pixels: total,
        ..dims
    })
}

/// The JPEG walk's reader: it says where it is, for messages.
struct JpegReader<R> {
    r: R,
    pos: u64,
}

impl<R: BufRead> JpegReader<R> {
    fn u8(&mut self) -> Result<u8, ImageProblem> {
        let mut b = [0u8; 1];
        self.r.read_exact(&mut b).map_err(io_bad)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, ImageProblem> {
        let mut v = vec![0u8; n];
        self.r.read_exact(&mut v).map_err(io_bad)?;
        self.pos += n as u64;
        Ok(v)
    }

    fn skip(&mut self, n: u64) -> Result<(), ImageProblem> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink()).map_err(io_bad)?;
        self.pos += copied;
        if copied < n {
            return Err(bad("the file is truncated"));
        }
        Ok(())
    }
}

fn jpeg_check<R: BufRead>(r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let mut w = JpegReader { r, pos: 0 };
    if w.bytes(2)? != [0xFF, 0xD8] {
        return Err(bad("JPEG: no start-of-image marker"));
    }
    let mut sof: Option<(u32, u32)> = None;
    let mut scans = 0u32;
    let mut marker = jpeg_marker(&mut w)?;
    loop {
        match marker {
            0xD9 => break,
            0xD8 => return Err(bad(format!("JPEG: a second SOI at byte {}", w.pos - 2))),
            // Standalone markers: restart markers outside a scan and TEM carry no length.
            0xD0..=0xD7 | 0x01 => {
                marker = jpeg_marker(&mut w)?;
                continue;
            }
            _ => {}
        }
        let at = w.pos - 2;
        let len = u16::from_be_bytes([w.u8()?, w.u8()?]);
        if len < 2 {
            return Err(bad(format!(
                "JPEG: segment 0x{marker:02X} at byte {at} has length {len}"
            )));
        }
        let payload = u64::from(len - 2);
        match marker {
            // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let p = w.bytes(payload as usize)?;
                if sof.is_some() {
                    return Err(bad(format!("JPEG: a second frame header at byte {at}")));
                }
                if p.len() < 6 {
                    return Err(bad("JPEG: frame header too short"));
                }
                let height = u32::from(u16::from_be_bytes([p[1], p[2]]));
                let width = u32::from(u16::from_be_bytes([p[3], p[4]]));
                let components = usize::from(p[5]);
                if width == 0 || height == 0 {
                    return Err(bad(format!("JPEG: frame of {width}x{height} px")));
                }
                if !(1..=4).contains(&components) || p.len() != 6 + 3 * components {
                    return Err(bad(format!(
                        "JPEG: frame header of {} bytes for {components} components",
                        p.len()
                    )));
                }
                sof = Some((width, height));
                marker = jpeg_marker(&mut w)?;
            }
            0xDA => {
                let p = w.bytes(payload as usize)?;
                if sof.is_none() {
                    return Err(bad("JPEG: a scan before the frame header"));
                }
                let components = usize::from(p.first().copied().unwrap_or(0));
                if !(1..=4).contains(&components) || p.len() != 4 + 2 * components {
                    return Err(bad(format!(
                        "JPEG: scan header of {} bytes for {components} components",
                        p.len()
                    )));
                }
                let (entropy, next) = jpeg_entropy(&mut w)?;
                if entropy == 0 {
                    return Err(bad("JPEG: a scan without data"));
                }
                scans += 1;
                marker = next;
            }
            _ => {
                w.skip(payload)?;
                marker = jpeg_marker(&mut w)?;
            }
        }
    }
    let Some((width, height)) = sof else {
        return Err(bad("JPEG: no frame header"));
    };
    if scans == 0 {
        return Err(bad("JPEG: no image data"));
    }
    check_still(width, height)?;
    Ok(dims)
}

/// The next marker: `0xFF`, any fill `0xFF`s, then the marker byte.
fn jpeg_marker<R: BufRead>(w: &mut JpegReader<R>) -> Result<u8, ImageProblem> {
    let at = w.pos;
    if w.u8()? != 0xFF {
        return Err(bad(format!("JPEG: expected a marker at byte {at}")));
    }
    loop {
        match w.u8()? {
            0xFF => continue,
            0x00 => return Err(bad(format!("JPEG: expected a marker at byte {at}"))),
            m => return Ok(m),
        }
    }
}

/// Skips entropy-coded data; returns its length and the marker that ends it.
fn jpeg_entropy<R: BufRead>(w: &mut JpegReader<R>) -> Result<(u64, u8), ImageProblem> {
    let mut len = 0u64;
    loop {
        let buf = w.r.fill_buf().map_err(io_bad)?;
        if buf.is_empty() {
            return Err(bad("JPEG: the file ends inside the image data"));
        }
        match buf.iter().position(|b| *b == 0xFF) {
            None => {
                let n = buf.len();
                w.r.consume(n);
                w.pos += n as u64;
                len += n as u64;
            }
            Some(i) => {
                w.r.consume(i + 1);
                w.pos += i as u64 + 1;
                len += i as u64;
                let mut b = w.u8()?;
                while b == 0xFF {
                    b = w.u8()?;
                }
                match b {
                    0x00 => len += 1,
                    0xD0..=0xD7 => {}
                    m => return Ok((len, m)),
                }
            }
        }
    }
}

/// A RIFF chunk header: its four-character code, payload start and payload size.
struct Chunk {
    fourcc: [u8; 4],
    start: u64,
    size: u64,
}

fn le24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

fn webp_check<R: BufRead + Seek>(mut r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(io_bad)?;
    r.seek(SeekFrom::Start(0)).map_err(io_bad)?;
    let mut head = [0u8; 12];
    r.read_exact(&mut head).map_err(io_bad)?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WEBP" {
        return Err(bad("WebP: no RIFF/WEBP header"));
    }
    let riff = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let end = riff + 8;
    if riff < 4 + 8 || riff % 2 == 1 {
        return Err(bad(format!("WebP: RIFF size {riff}")));
    }
    if end > file_len {
        return Err(bad(format!(
            "WebP: the file is truncated ({file_len} bytes, RIFF says {end})"
        )));
    }
    let chunks = riff_chunks(&mut r, 12, end)?;
    let first = chunks.first().ok_or_else(|| bad("WebP: no chunks"))?;
    match &first.fourcc {
        b"VP8 " | b"VP8L" => {
            let (w, h) = webp_bitstream(&mut r, first)?;
            check_still(w, h)?;
            Ok(dims)
        }
        b"VP8X" => {
            let x = read_payload(&mut r, first, 10)?;
            if first.size < 10 {
                return Err(bad("WebP: VP8X chunk too short"));
            }
            let animated = x[0] & 0x02 != 0;
            let (cw, ch) = (le24(&x[4..7]) + 1, le24(&x[7..10]) + 1);
            check_still(cw, ch)?;
            if !animated {
                let image = chunks
                    .iter()
                    .find(|c| matches!(&c.fourcc, b"VP8 " | b"VP8L"))
                    .ok_or_else(|| bad("WebP: VP8X without image data"))?;
                let (w, h) = webp_bitstream(&mut r, image)?;
                if w != cw || h != ch {
                    return Err(bad(format!("WebP: canvas {cw}x{ch} but image {w}x{h} px")));
                }
                return Ok(dims);
            }
            let mut frames = 0u32;
            let mut total = 0u64;
            for frame in chunks.iter().filter(|c| &c.fourcc == b"ANMF") {
                if frame.size < 16 + 8 {
                    return Err(bad("WebP: ANMF chunk too short"));
                }
                let f = read_payload(&mut r, frame, 16)?;
                let (fx, fy) = (le24(&f[0..3]) * 2, le24(&f[3..6]) * 2);
                let (fw, fh) = (le24(&f[6..9]) + 1, le24(&f[9..12]) + 1);
                if u64::from(fx) + u64::from(fw) > u64::from(cw)
                    || u64::from(fy) + u64::from(fh) > u64::from(ch)
                {
                    return Err(bad(format!(
                        "WebP: frame {fw}x{fh} at {fx},{fy} outside the {cw}x{ch} canvas"
                    )));
                }
                frames += 1;
                total += u64::from(fw) * u64::from(fh);
                check_total(cw, ch, frames, total)?;
                let inner = riff_chunks(&mut r, frame.start + 16, frame.start + frame.size)?;
                let image = inner
                    .iter()
                    .find(|c| matches!(&c.fourcc, b"VP8 " | b"VP8L"))
                    .ok_or_else(|| bad("WebP: an animation frame without image data"))?;
                let (w, h) = webp_bitstream(&mut r, image)?;
                if w != fw || h != fh {
                    return Err(bad(format!("WebP: frame {fw}x{fh} but image {w}x{h} px")));
                }
            }
            if frames == 0 {
                return Err(bad("WebP: an animation without frames"));
            }
            Ok(Dimensions {
                frames,
                total_pixels: total,
                ..dims
            })
        }
        other => Err(bad(format!(
            "WebP: unexpected first chunk {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// The chunks tiling `start..end` exactly (payloads padded to even sizes).
fn riff_chunks<R: Read + Seek>(
    r: &mut R,
    start: u64,
    end: u64,
) -> Result<Vec<Chunk>, ImageProblem> {
    let mut chunks = Vec::new();
    let mut at = start;
    while at < end {
        if end - at < 8 {
            return Err(bad(format!("WebP: a stray {} bytes at {at}", end - at)));
        }
        r.seek(SeekFrom::Start(at)).map_err(io_bad)?;
        let mut h = [0u8; 8];
        r.read_exact(&mut h).map_err(io_bad)?;
        let size = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
        let next = at + 8 + size + size % 2;
        // The last chunk's padding byte may be missing.
        if at + 8 + size > end {
            return Err(bad(format!(
                "WebP: chunk {:?} at {at} runs past the end of its container",
                String::from_utf8_lossy(&h[0..4])
            )));
        }
        chunks.push(Chunk {
            fourcc: [h[0], h[1], h[2], h[3]],
            start: at + 8,
            size,
        });
        at = next;
    }
    Ok(chunks)
}

/// The first `min(n, size)` bytes of a chunk's payload, zero-padded to `n`.
fn read_payload<R: Read + Seek>(r: &mut R, c: &Chunk, n: usize) -> Result<Vec<u8>, ImageProblem> {
    r.seek(SeekFrom::Start(c.start)).map_err(io_bad)?;
    let take = (n as u64).min(c.size) as usize;
    let mut v = vec![0u8; n];
    r.read_exact(&mut v[..take]).map_err(io_bad)?;
    Ok(v)
}

/// Checks a `VP8 ` or `VP8L` bitstream header; returns its dimensions.
fn webp_bitstream<R: Read + Seek>(r: &mut R, c: &Chunk) -> Result<(u32, u32), ImageProblem> {
    let p = read_payload(r, c, 10)?;
    if &c.fourcc == b"VP8L" {
        if c.size < 5 || p[0] != 0x2F {
            return Err(bad("WebP: bad VP8L signature"));
        }
        let bits = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
        if bits >> 29 != 0 {
            return Err(bad("WebP: unknown VP8L version"));
        }
        return Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1));
    }
    if c.size < 10 {
        return Err(bad("WebP: VP8 chunk too short"));
    }
    let tag = le24(&p[0..3]);
    let key_frame = tag & 1 == 0;
    let version = (tag >> 1) & 7;
    let first_partition = u64::from(tag >> 5);
    if !key_frame || version > 3 || first_partition > c.size - 10 {
        return Err(bad("WebP: bad VP8 frame tag"));
    }
    if p[3..6] != [0x9D, 0x01, 0x2A] {
        return Err(bad("WebP: bad VP8 start code"));
    }
    let width = u32::from(u16::from_le_bytes([p[6], p[7]]) & 0x3FFF);
    let height = u32::from(u16::from_le_bytes([p[8], p[9]]) & 0x3FFF);
    if width == 0 || height == 0 {
        return Err(bad(format!("WebP: frame of {width}x{height} px")));
    }
    Ok((width, height))
}

/// The deepest element nesting an SVG may have: past it the document is refused rather than
/// letting a hostile file grow the stack of open names without bound.
const SVG_MAX_DEPTH: usize = 4096;
/// The longest element name kept for matching end tags.
const SVG_MAX_NAME: usize = 1024;

/// The SVG walk's reader: bytes from a buffered source, and where it is, for messages.
struct SvgReader<R> {
    r: R,
    pos: u64,
}

impl<R: BufRead> SvgReader<R> {
    fn peek(&mut self) -> Result<Option<u8>, ImageProblem> {
        Ok(self.r.fill_buf().map_err(io_bad)?.first().copied())
    }

    fn next(&mut self) -> Result<Option<u8>, ImageProblem> {
        let b = self.peek()?;
        if b.is_some() {
            self.r.consume(1);
            self.pos += 1;
        }
        Ok(b)
    }

    /// The next byte, or the truncation error naming what the file ends inside.
    fn need(&mut self, inside: &str) -> Result<u8, ImageProblem> {
        self.next()?.ok_or_else(|| {
            bad(format!(
                "SVG: the file ends inside {inside} at byte {}: it is truncated",
                self.pos
            ))
        })
    }

    /// Skips past `end`; the file must not end first.
    fn skip_past(&mut self, end: &[u8], inside: &str) -> Result<(), ImageProblem> {
        // The last bytes read, compared with `end` (at most a few bytes long).
        let mut window = Vec::with_capacity(end.len());
        loop {
            if window.len() == end.len() {
                window.remove(0);
            }
            window.push(self.need(inside)?);
            if window == end {
                return Ok(());
            }
        }
    }

    /// Skips text up to the next `<`; returns whether the text held anything but white space,
    /// and `false` for the byte when the file ends.
    fn text(&mut self) -> Result<(bool, bool), ImageProblem> {
        let mut content = false;
        loop {
            let buf = self.r.fill_buf().map_err(io_bad)?;
            if buf.is_empty() {
                return Ok((content, false));
            }
            let (n, found) = match buf.iter().position(|b| *b == b'<') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            content |= buf[..n].iter().any(|b| !b.is_ascii_whitespace());
            let consumed = if found { n + 1 } else { n };
            self.r.consume(consumed);
            self.pos += consumed as u64;
            if found {
                return Ok((content, true));
            }
        }
    }
}

/// Whether a byte ends an XML name.
fn svg_name_end(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'/' | b'>')
}

impl<R: BufRead> SvgReader<R> {
    /// Steps over a UTF-8 byte-order mark, which may come first.
    fn skip_bom(&mut self) -> Result<(), ImageProblem> {
        if self
            .r
            .fill_buf()
            .map_err(io_bad)?
            .starts_with(&[0xEF, 0xBB, 0xBF])
        {
            self.r.consume(3);
            self.pos = 3;
        }
        Ok(())
    }

    /// The rest of a name whose bytes so far are `name`, and the byte that ended it; only
    /// the first [`SVG_MAX_NAME`] bytes are kept.
    fn name(&mut self, mut name: Vec<u8>, inside: &str) -> Result<(Vec<u8>, u8), ImageProblem> {
        let mut c = self.need(inside)?;
        while !svg_name_end(c) {
            if name.len() < SVG_MAX_NAME {
                name.push(c);
            }
            c = self.need(inside)?;
        }
        Ok((name, c))
    }

    /// A markup declaration after its `<!` at byte `at`: a comment, a CDATA section (only
    /// inside the root element) or a doctype.
    fn declaration(&mut self, at: u64, in_root: bool) -> Result<(), ImageProblem> {
        match self.need("a declaration")? {
            b'-' => {
                if self.need("a comment")? != b'-' {
                    return Err(bad(format!("SVG: a malformed comment at byte {at}")));
                }
                self.skip_past(b"-->", "a comment")
            }
            b'[' => {
                for want in *b"CDATA[" {
                    if self.need("a CDATA section")? != want {
                        return Err(bad(format!("SVG: a malformed CDATA section at byte {at}")));
                    }
                }
                if !in_root {
                    return Err(bad(format!(
                        "SVG: CDATA outside the root element at byte {at}"
                    )));
                }
                self.skip_past(b"]]>", "a CDATA section")
            }
            _ => self.doctype(),
        }
    }

    /// A doctype (or another declaration): up to its `>`, past quoted strings and an
    /// internal subset in brackets.
    fn doctype(&mut self) -> Result<(), ImageProblem> {
        let (mut brackets, mut quote) = (0u32, None);
        loop {
            let c = self.need("the doctype")?;
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(c),
                (None, b'[') => brackets += 1,
                (None, b']') => brackets = brackets.saturating_sub(1),
                (None, b'>') if brackets == 0 => return Ok(()),
                _ => {}
            }
        }
    }

    /// An end tag after its `</` at byte `at`: the name it closes.
    fn end_tag(&mut self, at: u64) -> Result<Vec<u8>, ImageProblem> {
        let (name, mut c) = self.name(Vec::new(), "an end tag")?;
        while c.is_ascii_whitespace() {
            c = self.need("an end tag")?;
        }
        if c != b'>' {
            return Err(bad(format!("SVG: a malformed end tag at byte {at}")));
        }
        Ok(name)
    }

    /// A start tag whose name begins with `first`: its name, and whether it closes itself.
    fn start_tag(&mut self, first: u8) -> Result<(Vec<u8>, bool), ImageProblem> {
        let (name, mut c) = self.name(vec![first], "a start tag")?;
        // Attributes: quoted values may hold `>` and `/`.
        loop {
            match c {
                b'"' | b'\'' => self.skip_past(&[c], "an attribute value")?,
                b'/' if self.peek()? == Some(b'>') => {
                    self.next()?;
                    return Ok((name, true));
                }
                b'>' => return Ok((name, false)),
                _ => {}
            }
            c = self.need("a start tag")?;
        }
    }
}

/// The elements an SVG has open so far, and whether its root element has closed.
#[derive(Default)]
struct SvgTree {
    open: Vec<Vec<u8>>,
    root_done: bool,
}

impl SvgTree {
    /// Text that is not white space: allowed only inside the root element.
    fn text(&self) -> Result<(), ImageProblem> {
        if !self.open.is_empty() {
            return Ok(());
        }
        Err(bad(if self.root_done {
            "SVG: text after the root element"
        } else {
            "SVG: text before the root element"
        }))
    }

    /// The file ended: complete only once the root element has closed.
    fn end(&self) -> Result<(), ImageProblem> {
        match self.open.last() {
            _ if self.root_done => Ok(()),
            Some(name) => Err(bad(format!(
                "SVG: the file ends inside <{}>, with {} element{} not closed: it is truncated",
                String::from_utf8_lossy(name),
                self.open.len(),
                if self.open.len() == 1 { "" } else { "s" }
            ))),
            None => Err(bad("SVG: no root element")),
        }
    }

    /// A start tag begins at byte `at`: refused when it would be a second root element.
    fn may_start(&self, at: u64) -> Result<(), ImageProblem> {
        if self.open.is_empty() && self.root_done {
            return Err(bad(format!("SVG: a second root element at byte {at}")));
        }
        Ok(())
    }

    /// A start tag was read.
    fn start(&mut self, name: Vec<u8>, self_closing: bool) -> Result<(), ImageProblem> {
        if self_closing {
            self.root_done |= self.open.is_empty();
            return Ok(());
        }
        if self.open.len() >= SVG_MAX_DEPTH {
            return Err(bad(format!(
                "SVG: elements nested deeper than {SVG_MAX_DEPTH}"
            )));
        }
        self.open.push(name);
        Ok(())
    }

    /// An end tag at byte `at` closes `name`: it must be the innermost open element.
    fn close(&mut self, name: &[u8], at: u64) -> Result<(), ImageProblem> {
        match self.open.pop() {
            Some(started) if started == name => {}
            Some(started) => {
                return Err(bad(format!(
                    "SVG: </{}> at byte {at} closes <{}>",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(&started)
                )));
            }
            None => {
                return Err(bad(format!(
                    "SVG: </{}> at byte {at} closes nothing",
                    String::from_utf8_lossy(name)
                )));
            }
        }
        self.root_done |= self.open.is_empty();
        Ok(())
    }
}

fn svg_check<R: BufRead>(r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let mut b = SvgReader { r, pos: 0 };
    b.skip_bom()?;
    let mut tree = SvgTree::default();
    loop {
        let (content, tag) = b.text()?;
        if content {
            tree.text()?;
        }
        if !tag {
            return tree.end().map(|()| dims);
        }
        let at = b.pos - 1;
        match b.need("a tag")? {
            b'!' => b.declaration(at, !tree.open.is_empty())?,
            b'?' => b.skip_past(b"?>", "a processing instruction")?,
            b'/' => {
                let name = b.end_tag(at)?;
                tree.close(&name, at)?;
            }
            first => {
                tree.may_start(at)?;
                let (name, self_closing) = b.start_tag(first)?;
                tree.start(name, self_closing)?;
            }
        }
    }
}

/// An ISO BMFF box header: its type, where its payload starts and where the box ends.
struct BmffBox {
    kind: [u8; 4],
    payload: u64,
    end: u64,
}

/// The box at `at`, which must end by `limit`.
fn bmff_box<R: Read + Seek>(r: &mut R, at: u64, limit: u64) -> Result<BmffBox, ImageProblem> {
    if limit - at < 8 {
        return Err(bad(format!(
            "ISO BMFF: a stray {} bytes at byte {at}: the file is truncated",
            limit - at
        )));
    }
    r.seek(SeekFrom::Start(at)).map_err(io_bad)?;
    let mut h = [0u8; 8];
    r.read_exact(&mut h).map_err(io_bad)?;
    let kind = [h[4], h[5], h[6], h[7]];
    let name = String::from_utf8_lossy(&kind).into_owned();
    let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
        // To the end of the enclosing container.
        0 => (limit - at, 8),
        1 => {
            if limit - at < 16 {
                return Err(bad(format!(
                    "ISO BMFF: box '{name}' at byte {at} is cut inside its header: the file is truncated"
                )));
            }
            let mut l = [0u8; 8];
            r.read_exact(&mut l).map_err(io_bad)?;
            (u64::from_be_bytes(l), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header {
        return Err(bad(format!(
            "ISO BMFF: box '{name}' at byte {at} has size {size}"
        )));
    }
    if size > limit - at {
        return Err(bad(format!(
            "ISO BMFF: box '{name}' at byte {at} declares {size} bytes but only {} follow: the file is truncated",
            limit - at
        )));
    }
    Ok(BmffBox {
        kind,
        payload: at + header,
        end: at + size,
    })
}

fn bmff_check<R: Read + Seek>(mut r: R, dims: Dimensions) -> Result<Dimensions, ImageProblem> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(io_bad)?;
    let (mut at, mut meta, mut data) = (0u64, None, false);
    while at < file_len {
        let b = bmff_box(&mut r, at, file_len)?;
        if at == 0 && &b.kind != b"ftyp" {
            return Err(bad("ISO BMFF: the first box is not 'ftyp'"));
        }
        match &b.kind {
            b"meta" => meta = Some((b.payload, b.end)),
            b"mdat" => data = true,
            _ => {}
        }
        at = b.end;
    }
    if at == 0 {
        return Err(bad("ISO BMFF: an empty file"));
    }
    let Some((payload, end)) = meta else {
        return Err(bad("ISO BMFF: no 'meta' box"));
    };
    // `meta` is a full box: a version and flags, then its children, which tile it exactly.
    let mut at = payload + 4;
    if at > end {
        return Err(bad("ISO BMFF: the 'meta' box is too short"));
    }
    let mut iloc = None;
    while at < end {
        let b = bmff_box(&mut r, at, end)?;
        data |= &b.kind == b"idat";
        if &b.kind == b"iloc" {
            iloc = Some((b.payload, b.end));
        }
        at = b.end;
    }
    if !data {
        return Err(bad("ISO BMFF: no image data (neither 'mdat' nor 'idat')"));
    }
    // A last box of size 0 runs to the end of the file whatever its length, so a file still
    // being written behind such an `mdat` adds up at every moment: the items' extents, which
    // `iloc` gives as file offsets, must lie inside the file too.
    if let Some((from, to)) = iloc
        && to - from <= ILOC_MAX_BYTES
    {
        r.seek(SeekFrom::Start(from)).map_err(io_bad)?;
        let mut payload = vec![0u8; (to - from) as usize];
        r.read_exact(&mut payload).map_err(io_bad)?;
        if let Some(needed) = iloc_file_end(&payload)
            && needed > file_len
        {
            return Err(bad(format!(
                "ISO BMFF: the image data runs to byte {needed} but the file has {file_len} bytes: the file is truncated"
            )));
        }
    }
    Ok(dims)
}

/// The largest `iloc` box read for its extents; a real one is a few hundred bytes.
const ILOC_MAX_BYTES: u64 = 1 << 20;

/// The end of the furthest extent `iloc` places in this file (construction method 0, data
/// reference 0), or `None` when the box cannot be read (it is then not judged here).
fn iloc_file_end(p: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<u64> {
        let bytes = p.get(at..at + n)?;
        at += n;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let version = take(4)? >> 24; // version and flags
    let sizes = take(2)?;
    let (offset_size, length_size) = ((sizes >> 12) as usize, ((sizes >> 8) & 0xf) as usize);
    let (base_size, index_size) = (((sizes >> 4) & 0xf) as usize, (sizes & 0xf) as usize);
    let index_size = if version == 0 { 0 } else { index_size };
    if [offset_size, length_size, base_size, index_size]
        .iter()
        .any(|&n| ![0, 4, 8].contains(&n))
        || version > 2
    {
        return None;
    }
    let wide = if version == 2 { 4 } else { 2 };
    let items = take(wide)?;
    let mut furthest = 0u64;
    for _ in 0..items {
        take(wide)?; // item id
        let method = if version == 0 { 0 } else { take(2)? & 0xf };
        let reference = take(2)?;
        let base = take(base_size)?;
        let extents = take(2)?;
        for _ in 0..extents {
            take(index_size)?;
            let offset = take(offset_size)?;
            let length = take(length_size)?;
            if method == 0 && reference == 0 {
                furthest = furthest.max(base.saturating_add(offset).saturating_add(length));
            }
        }
    }
    Some(furthest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn run(format: ImageFormat, bytes: &[u8]) -> Result<Dimensions, ImageProblem> {
        check(format, Cursor::new(bytes))
    }

    fn undecodable(format: ImageFormat, bytes: &[u8]) {
        match run(format, bytes) {
            Err(ImageProblem::Undecodable(_)) => {}
            other => panic!("{format:?}: expected Undecodable, got {other:?}"),
        }
    }

    fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[at] ^= 0xFF;
        v
    }

    fn png_image(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..width * height * 3).map(|i| (i * 7) as u8).collect();
        w.write_image_data(&data).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn png_good_truncated_corrupt() {
        let good = png_image(20, 10);
        assert_eq!(
            run(ImageFormat::Png, &good),
            Ok(Dimensions {
                width: 20,
                height: 10,
                frames: 1,
                total_pixels: 200
            })
        );
        undecodable(ImageFormat::Png, &good[..good.len() - 20]);
        undecodable(ImageFormat::Png, &good[..good.len() / 2]);
        // A byte inside the IDAT data (after signature, IHDR and the IDAT header).
        undecodable(ImageFormat::Png, &flipped(&good, 8 + 25 + 8 + 10));
    }

    #[test]
    fn png_over_the_side_limit_is_too_large() {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 12_500, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&vec![0u8; 12_500usize.div_ceil(8)])
            .unwrap();
        w.finish().unwrap();
        match run(ImageFormat::Png, &out) {
            Err(ImageProblem::TooLarge(m)) => assert!(m.contains("12500x1"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 12_000, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0u8; 1500]).unwrap();
        w.finish().unwrap();
        assert_eq!(run(ImageFormat::Png, &out).unwrap().width, 12_000);
    }

    fn gif_image(frames: u16) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut out, 16, 8, &[0, 0, 0, 255, 255, 255]).unwrap();
            for f in 0..frames {
                let pixels: Vec<u8> = (0..16 * 8).map(|i| ((i + f) % 2) as u8).collect();
                let frame = gif::Frame {
                    width: 16,
                    height: 8,
                    buffer: pixels.into(),
                    ..gif::Frame::default()
                };
                enc.write_frame(&frame).unwrap();
            }
        }
        out
    }

    #[test]
    fn gif_good_truncated_corrupt() {
        let good = gif_image(3);
        assert_eq!(
            run(ImageFormat::Gif, &good),
            Ok(Dimensions {
                width: 16,
                height: 8,
                frames: 3,
                total_pixels: 3 * 128
            })
        );
        undecodable(ImageFormat::Gif, &good[..good.len() - 1]);
        undecodable(ImageFormat::Gif, &good[..good.len() / 2]);
        // The first frame's image separator (after the 13-byte header and the 6-byte palette).
        undecodable(ImageFormat::Gif, &flipped(&good, 13 + 6));
        let spinner = include_bytes!("../examples/images/icons/spinner.gif");
        assert!(run(ImageFormat::Gif, spinner).is_ok());
    }

    /// A GIF whose frames are declared 5000x5000 each with almost no data: 5 frames make
    /// 125 megapixels, which must be refused from the descriptors alone.
    #[test]
    fn gif_animation_over_the_total_is_too_large() {
        let mut v = b"GIF89a".to_vec();
        v.extend_from_slice(&5000u16.to_le_bytes());
        v.extend_from_slice(&5000u16.to_le_bytes());
        v.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
        for _ in 0..5 {
            v.push(0x2C);
            v.extend_from_slice(&[0, 0, 0, 0]);
            v.extend_from_slice(&5000u16.to_le_bytes());
            v.extend_from_slice(&5000u16.to_le_bytes());
            // No local palette; LZW minimum code size 2; one sub-block: clear, end.
            v.extend_from_slice(&[0, 2, 1, 0x2C, 0]);
        }
        v.push(0x3B);
        match run(ImageFormat::Gif, &v) {
            Err(ImageProblem::TooLarge(m)) => assert!(m.contains("5000x5000"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// An 8x8 grey baseline JPEG built by hand: one DC and one AC Huffman code.
    fn jpeg_image() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
        v.extend_from_slice(&[1u8; 64]);
        v.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
        for class in [0x00u8, 0x10] {
            v.extend_from_slice(&[0xFF, 0xC4, 0, 20, class, 1]);
            v.extend_from_slice(&[0u8; 15]);
            v.push(0);
        }
        v.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 63, 0]);
        v.push(0x3F);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    #[test]
    fn jpeg_good_truncated_corrupt() {
        let good = jpeg_image();
        assert_eq!(
            run(ImageFormat::Jpeg, &good),
            Ok(Dimensions {
                width: 8,
                height: 8,
                frames: 1,
                total_pixels: 64
            })
        );
        for sample in [
            &include_bytes!("../examples/images/landscapes/coast.jpg")[..],
            &include_bytes!("../examples/images/photos/2024/night sky.jpg")[..],
        ] {
            assert!(run(ImageFormat::Jpeg, sample).is_ok());
            undecodable(ImageFormat::Jpeg, &sample[..sample.len() - 2]);
            undecodable(ImageFormat::Jpeg, &sample[..sample.len() / 2]);
        }
        undecodable(ImageFormat::Jpeg, &good[..good.len() - 2]);
        undecodable(ImageFormat::Jpeg, &good[..good.len() - 4]);
        // The DQT segment's length byte: the walk lands inside the table.
        undecodable(ImageFormat::Jpeg, &flipped(&good, 5));
        // The frame header's component count.
        undecodable(ImageFormat::Jpeg, &flipped(&good, 2 + 69 + 9));
    }

    const WEBP: &[u8] = include_bytes!("../examples/images/photos/2024/büro.webp");

    /// An animated WebP: `frames` copies of the sample's VP8 chunk in ANMF frames.
    fn webp_animation(frames: u32) -> Vec<u8> {
        let vp8 = &WEBP[12..];
        let (w, h) = (
            u32::from(u16::from_le_bytes([vp8[14], vp8[15]]) & 0x3FFF),
            u32::from(u16::from_le_bytes([vp8[16], vp8[17]]) & 0x3FFF),
        );
        let chunk = |fourcc: &[u8], payload: &[u8]| {
            let mut c = fourcc.to_vec();
            c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            c.extend_from_slice(payload);
            if payload.len() % 2 == 1 {
                c.push(0);
            }
            c
        };
        let le24 = |n: u32| n.to_le_bytes()[..3].to_vec();
        let mut body = b"WEBP".to_vec();
        let mut x = vec![0x02, 0, 0, 0];
        x.extend(le24(w - 1));
        x.extend(le24(h - 1));
        body.extend(chunk(b"VP8X", &x));
        body.extend(chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
        for _ in 0..frames {
            let mut f = le24(0);
            f.extend(le24(0));
            f.extend(le24(w - 1));
            f.extend(le24(h - 1));
            f.extend(le24(100));
            f.push(0);
            f.extend_from_slice(vp8);
            body.extend(chunk(b"ANMF", &f));
        }
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn webp_good_truncated_corrupt() {
        let still = run(ImageFormat::Webp, WEBP).unwrap();
        assert_eq!(still.frames, 1);
        assert!(still.width > 0 && still.height > 0);
        let anim = webp_animation(3);
        let d = run(ImageFormat::Webp, &anim).unwrap();
        assert_eq!(d.frames, 3);
        assert_eq!(d.total_pixels, 3 * still.total_pixels);
        for good in [WEBP, &anim[..]] {
            undecodable(ImageFormat::Webp, &good[..good.len() - 1]);
            undecodable(ImageFormat::Webp, &good[..good.len() / 2]);
        }
        // The VP8 start code, then the RIFF size.
        undecodable(ImageFormat::Webp, &flipped(WEBP, 12 + 8 + 4));
        undecodable(ImageFormat::Webp, &flipped(WEBP, 5));
        // A frame's declared width no longer matches its bitstream.
        undecodable(
            ImageFormat::Webp,
            &flipped(&anim, anim.len() - WEBP.len() + 12 - 16 + 6),
        );
    }

    #[test]
    fn the_examples_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images");
        let mut seen = 0;
        for entry in walkdir::WalkDir::new(dir) {
            let entry = entry.unwrap();
            if !entry.file_type().is_file() {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            let format = crate::rules::sniff_format(&bytes).expect("an image type");
            assert!(
                run(format, &bytes).is_ok(),
                "{}: {:?}",
                entry.path().display(),
                run(format, &bytes)
            );
            seen += 1;
        }
        assert!(seen >= 5);
    }

    const SVG: &[u8] = include_bytes!("../examples/images/icons/logo.svg");

    #[test]
    fn svg_complete_documents_pass() {
        for good in [
            SVG,
            &b"<svg xmlns='http://www.w3.org/2000/svg'/>"[..],
            b"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!DOCTYPE svg [<!ENTITY a \"<x>\">]>\n<!-- a > b -->\n<svg a=\"1>2\" b='/>'><style><![CDATA[ a > b ]]]></style><g><rect/></g>text</svg>\n<!-- after -->\n",
        ] {
            let d = run(ImageFormat::Svg, good).unwrap();
            assert_eq!((d.width, d.height, d.frames), (0, 0, 1));
        }
    }

    #[test]
    fn svg_truncated_or_malformed_is_undecodable() {
        // Every proper prefix of a document ending in its root's end tag is incomplete.
        let doc = b"<?xml version=\"1.0\"?><svg xmlns=\"x\"><!-- c --><g a=\"1\"><rect/></g></svg>";
        for n in 0..doc.len() {
            undecodable(ImageFormat::Svg, &doc[..n]);
        }
        undecodable(ImageFormat::Svg, &SVG[..SVG.len() / 2]);
        for bad in [
            &b"<svg><g></svg>"[..],
            b"<svg></svg><svg></svg>",
            b"<svg></svg>trailing",
            b"<svg></g></svg>",
            b"<svg><![CDATA[ x </svg>",
        ] {
            undecodable(ImageFormat::Svg, bad);
        }
    }

    fn bmff(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    /// A minimal AVIF: `ftyp`, a `meta` with a handler and an `ispe` property, `mdat`.
    fn avif_image(data: usize) -> Vec<u8> {
        let mut ftyp = b"avif".to_vec();
        ftyp.extend_from_slice(&[0, 0, 0, 0]);
        ftyp.extend_from_slice(b"avifmif1miaf");
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"pict");
        hdlr.extend_from_slice(&[0u8; 13]);
        let mut ispe = vec![0u8; 4];
        ispe.extend_from_slice(&64u32.to_be_bytes());
        ispe.extend_from_slice(&48u32.to_be_bytes());
        let iprp = bmff(b"iprp", &bmff(b"ipco", &bmff(b"ispe", &ispe)));
        let mut meta = vec![0u8; 4];
        meta.extend(bmff(b"hdlr", &hdlr));
        meta.extend(iprp);
        let mut v = bmff(b"ftyp", &ftyp);
        v.extend(bmff(b"meta", &meta));
        v.extend(bmff(b"mdat", &vec![7u8; data]));
        v
    }

    #[test]
    fn avif_and_heic_boxes_must_add_up_to_the_file() {
        let good = avif_image(300);
        assert_eq!(crate::rules::sniff_format(&good), Some(ImageFormat::Avif));
        assert!(run(ImageFormat::Avif, &good).is_ok());
        for n in [good.len() - 1, good.len() - 200, 40, 9] {
            match run(ImageFormat::Avif, &good[..n]) {
                Err(ImageProblem::Undecodable(m)) => assert!(m.contains("truncated"), "{n}: {m}"),
                other => panic!("{n}: {other:?}"),
            }
        }
        // Trailing bytes after the last box, a missing `mdat`, `ftyp` not first.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0, 0, 0]);
        undecodable(ImageFormat::Avif, &longer);
        let no_mdat = &good[..good.len() - 308];
        undecodable(ImageFormat::Heic, no_mdat);
        let mut swapped = bmff(b"free", b"");
        swapped.extend_from_slice(&good);
        undecodable(ImageFormat::Avif, &swapped);
        // A last box of size 0 runs to the end of the file.
        let mut open_ended = good[..good.len() - 308].to_vec();
        open_ended.extend_from_slice(&[0, 0, 0, 0]);
        open_ended.extend_from_slice(b"mdat");
        open_ended.extend_from_slice(&[1u8; 50]);
        assert!(run(ImageFormat::Avif, &open_ended).is_ok());
    }

    /// An AVIF whose `iloc` places `len` bytes at the start of an open-ended `mdat` (size 0,
    /// as a writer that patches the size at the end leaves it), with `have` of them written.
    fn open_ended_avif(len: u32, have: usize) -> Vec<u8> {
        let good = avif_image(0);
        let ftyp_len = u32::from_be_bytes(good[..4].try_into().unwrap()) as usize;
        let meta = &good[ftyp_len..good.len() - 8];
        // iloc v0: offset and length 4 bytes, no base; one item with one extent, whose offset
        // is patched once the layout is known.
        let mut iloc = vec![0u8, 0, 0, 0, 0x44, 0x00, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        iloc.extend_from_slice(&len.to_be_bytes());
        let mut meta_payload = meta[8..].to_vec();
        meta_payload.extend(bmff(b"iloc", &iloc));
        let mut v = good[..ftyp_len].to_vec();
        v.extend(bmff(b"meta", &meta_payload));
        let data_at = (v.len() + 8) as u32;
        let offset_at = v.len() - 8;
        v[offset_at..offset_at + 4].copy_from_slice(&data_at.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(b"mdat");
        v.extend(std::iter::repeat_n(5u8, have));
        v
    }

    #[test]
    fn an_open_ended_mdat_still_being_written_is_truncated() {
        assert!(run(ImageFormat::Avif, &open_ended_avif(400, 400)).is_ok());
        assert!(run(ImageFormat::Avif, &open_ended_avif(400, 500)).is_ok());
        for have in [0, 1, 399] {
            match run(ImageFormat::Avif, &open_ended_avif(400, have)) {
                Err(ImageProblem::Undecodable(m)) => {
                    assert!(m.contains("truncated"), "{have}: {m}")
                }
                other => panic!("{have}: {other:?}"),
            }
        }
    }
}
