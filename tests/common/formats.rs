//! Images of the formats the examples do not cover, built in the test: a minimal AVIF (ISO
//! BMFF boxes) and SVG documents.

/// An ISO BMFF box.
pub fn bmff_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

/// The head of a minimal AVIF: `ftyp`, a `meta` (handler `pict`, a 64x48 `ispe`), and an
/// `mdat` header declaring `data` bytes, which are not written: the file is complete once
/// they follow.
pub fn avif_head(data: usize) -> Vec<u8> {
    let mut ftyp = b"avif".to_vec();
    ftyp.extend_from_slice(&[0, 0, 0, 0]);
    ftyp.extend_from_slice(b"avifmif1miaf");
    let mut hdlr = vec![0u8; 8];
    hdlr.extend_from_slice(b"pict");
    hdlr.extend_from_slice(&[0u8; 13]);
    let mut ispe = vec![0u8; 4];
    ispe.extend_from_slice(&64u32.to_be_bytes());
    ispe.extend_from_slice(&48u32.to_be_bytes());
    let mut meta = vec![0u8; 4];
    meta.extend(bmff_box(b"hdlr", &hdlr));
    meta.extend(bmff_box(
        b"iprp",
        &bmff_box(b"ipco", &bmff_box(b"ispe", &ispe)),
    ));
    let mut v = bmff_box(b"ftyp", &ftyp);
    v.extend(bmff_box(b"meta", &meta));
    v.extend_from_slice(&((data + 8) as u32).to_be_bytes());
    v.extend_from_slice(b"mdat");
    v
}

/// A complete minimal AVIF, its image data `n`-dependent.
pub fn avif(n: u8, data: usize) -> Vec<u8> {
    let mut v = avif_head(data);
    v.extend((0..data).map(|i| (i as u8).wrapping_mul(31).wrapping_add(n)));
    v
}

/// The start of an SVG document (its root element open).
pub const SVG_HEAD: &str = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"40\">\n";
/// What closes it.
pub const SVG_TAIL: &str = "</svg>\n";

/// A complete SVG of `rects` squares.
pub fn svg(rects: usize) -> Vec<u8> {
    let mut s = SVG_HEAD.to_string();
    for i in 0..rects {
        s.push_str(&svg_rect(i));
    }
    s.push_str(SVG_TAIL);
    s.into_bytes()
}

/// One square of an SVG.
pub fn svg_rect(i: usize) -> String {
    format!(
        "<rect x=\"{}\" y=\"{}\" width=\"1\" height=\"1\"/>\n",
        i % 40,
        i / 40 % 40
    )
}
