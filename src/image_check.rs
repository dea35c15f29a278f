//! Placeholder until the image-check branch lands: what the service decodes.

use crate::rules::ImageFormat;

/// An image's size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frames (1 for stills).
    pub frames: u32,
    /// Pixels over all frames.
    pub total_pixels: u64,
}

/// Why the service would refuse an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProblem {
    /// Cannot be decoded (9422).
    Undecodable(String),
    /// Over the dimension limits (5400).
    TooLarge(String),
}

/// Checks an image as the service would.
pub fn check<R: std::io::Read + std::io::Seek>(
    _format: ImageFormat,
    _reader: R,
) -> Result<Dimensions, ImageProblem> {
    Ok(Dimensions {
        width: 1,
        height: 1,
        frames: 1,
        total_pixels: 1,
    })
}
