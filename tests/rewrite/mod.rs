//! `cfimg rewrite` end to end: files migrated to the emulator, pages and a WordPress dump
//! rewritten to their delivery URLs and undone; Chromium loading a rewritten page.

mod browser;
mod cli;

/// The old base of the fixtures.
pub const BASE: &str = "https://www.example.com/wp-content/uploads/";

/// Every `s:N:\"...\";` in a SQL dump holds N bytes once unescaped: the length prefixes
/// `unserialize` checks. Returns how many strings were checked.
pub fn serialized_lengths_ok(dump: &[u8]) -> Result<usize, String> {
    let mut checked = 0;
    let mut i = 0;
    while let Some(at) = find(dump, b"s:", i) {
        i = at + 2;
        let mut j = i;
        while j < dump.len() && dump[j].is_ascii_digit() {
            j += 1;
        }
        if j == i || !dump[j..].starts_with(b":\\\"") {
            continue;
        }
        let n: usize = std::str::from_utf8(&dump[i..j]).unwrap().parse().unwrap();
        let mut k = j + 3;
        for _ in 0..n {
            k += if dump.get(k) == Some(&b'\\') { 2 } else { 1 };
        }
        if !dump.get(k..).is_some_and(|r| r.starts_with(b"\\\";")) {
            return Err(format!(
                "s:{n} at byte {at} does not end after {n} bytes: {}",
                String::from_utf8_lossy(&dump[at..(at + n + 40).min(dump.len())])
            ));
        }
        checked += 1;
    }
    Ok(checked)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
