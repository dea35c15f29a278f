//! nginx: one `map $host$uri $cfimg_redirect` for the `http` context, and the two hash
//! sizes that let a stock nginx build it whatever the number and length of its keys.
//!
//! nginx matches `$uri` decoded and normalised (no `//`, `.` or `..` segments), and its
//! string keys case-insensitively: two keys equal but for case would stop nginx with
//! "conflicting parameter", so those become case-sensitive regular expressions (found in
//! the prepass; only their hashes are held). A configuration token is at most 4 KB.

use super::quoted;
use std::collections::HashSet;
use std::io::Write;

use super::{Entry, Format, KeyFn, Keyed, hash_of};
use crate::error::Result;

/// Longest quoted token nginx's configuration parser takes (its buffer is 4096 bytes).
const MAX_TOKEN: usize = 4000;

/// Largest `map_hash_bucket_size` nginx accepts (65536 minus a cache line).
const MAX_BUCKET: usize = 65536 - 64;

/// The nginx writer.
#[derive(Debug)]
pub struct Nginx {
    status: u16,
    keys: u64,
    longest: usize,
    total: u64,
    lower: Vec<u64>,
    clashing: HashSet<u64>,
}

impl Nginx {
    /// A writer; `status` is shown in the snippet of the header.
    pub fn new(status: u16) -> Nginx {
        Nginx {
            status,
            keys: 0,
            longest: 0,
            total: 0,
            lower: Vec::new(),
            clashing: HashSet::new(),
        }
    }
}

/// The `$host$uri` an old URL arrives as.
fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (nginx matches $uri, without it)");
    }
    let d = e.decoded;
    if d.contains("//")
        || d.contains("/./")
        || d.contains("/../")
        || d.ends_with("/.")
        || d.ends_with("/..")
    {
        return Err("has an empty, `.` or `..` path segment (nginx normalises $uri)");
    }
    if d.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("has a control character");
    }
    let k = format!("{}{}", e.host, d);
    if quoted(&k).len() > MAX_TOKEN || quoted(&value(&e.mapped.delivery_url)).len() > MAX_TOKEN {
        return Err("is longer than an nginx configuration token (4 KB)");
    }
    Ok(k)
}

/// A map value: a `$` would start a variable, so the URL carries it percent-encoded.
fn value(url: &str) -> String {
    url.replace('$', "%24")
        .replace('"', "%22")
        .replace('\\', "%5C")
}

/// A case-sensitive regular expression matching exactly `key`, quoted for the config.
fn regex(key: &str) -> String {
    let mut re = String::with_capacity(key.len() * 2 + 4);
    re.push_str("~^");
    for c in key.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            re.push('\\');
        }
        re.push(c);
    }
    re.push('$');
    quoted(&re)
}

/// The size nginx gives one key in a hash bucket: a pointer, a length, the name aligned.
fn element(len: usize) -> usize {
    8 + (len + 2).div_ceil(8) * 8
}

impl Nginx {
    /// (`map_hash_max_size`, `map_hash_bucket_size`) for the keys seen in the prepass.
    /// nginx tries the 1,000 table sizes below the maximum and keeps the first where no
    /// bucket overflows; a bucket holding many average keys (plus the longest) at about
    /// one key per bucket leaves an overflow in all of them improbable.
    pub fn hash_sizes(&self) -> (u64, usize) {
        let n = self.keys.max(1);
        let avg = element((self.total / n) as usize);
        let longest = element(self.longest);
        let bucket = (longest + 8 + 15 * avg).div_ceil(64) * 64;
        let bucket = bucket.clamp(64, MAX_BUCKET);
        // How many average keys fit beside the longest; aim at a quarter of that per bucket.
        let fit = ((bucket - 8).saturating_sub(longest) / avg).max(1) as u64;
        let per_bucket = (fit as f64 / 4.0).min(1.0);
        let size = (n as f64 / per_bucket).ceil() as u64 + 1024;
        (size, bucket)
    }
}

impl Format for Nginx {
    fn needs_prepass(&self) -> bool {
        true
    }

    fn keyer(&self) -> KeyFn {
        key
    }

    fn prepare(&mut self, _e: &Entry<'_>, key: &str) -> Result<()> {
        self.keys += 1;
        self.longest = self.longest.max(key.len());
        self.total += key.len() as u64;
        self.lower.push(hash_of(&key.to_lowercase()));
        Ok(())
    }

    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut lower = std::mem::take(&mut self.lower);
        lower.sort_unstable();
        for w in lower.windows(2) {
            if w[0] == w[1] {
                self.clashing.insert(w[0]);
            }
        }
        drop(lower);
        let (max_size, bucket) = self.hash_sizes();
        writeln!(
            out,
            "# cfimg redirects for nginx: include this file in the http context, and in the\n\
             # server block of the old site:\n\
             #     if ($cfimg_redirect) {{ return {} $cfimg_redirect; }}\n\
             # The hash sizes fit this map's {} keys; if nginx.conf sets them already, keep the larger values.",
            self.status, self.keys
        )?;
        writeln!(out, "map_hash_max_size {max_size};")?;
        writeln!(out, "map_hash_bucket_size {bucket};")?;
        writeln!(out, "map $host$uri $cfimg_redirect {{")?;
        writeln!(out, "    default \"\";")
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        let target = quoted(&value(&e.mapped.delivery_url));
        if self.clashing.contains(&hash_of(&key.to_lowercase())) {
            writeln!(out, "    {} {target};", regex(key))
        } else {
            writeln!(out, "    {} {target};", quoted(key))
        }
    }

    fn end(&mut self, out: &mut dyn Write) -> Result<()> {
        writeln!(out, "}}").map_err(super::write_err)
    }

    fn notes(&self, _rules: u64) -> Vec<String> {
        vec![format!(
            "nginx: include the file in `http {{ }}` and add `if ($cfimg_redirect) {{ return {} $cfimg_redirect; }}` to the old site's server block",
            self.status
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_regexes_are_quoted_for_nginx() {
        assert_eq!(quoted(r#"a"b\c d"#), r#""a\"b\\c d""#);
        // The parser turns `\\` back into `\`: the regex is ~^h\/a\.b$.
        assert_eq!(regex("h/a.b"), r#""~^h\\/a\\.b$""#);
        assert_eq!(regex("h/ü x"), r#""~^h\\/ü\\ x$""#);
        assert_eq!(value("https://x/a$b/public"), "https://x/a%24b/public");
    }

    #[test]
    fn the_bucket_holds_the_longest_key_and_more() {
        let mut n = Nginx::new(301);
        n.keys = 1_000_000;
        n.longest = 3_900;
        n.total = 60 * 1_000_000;
        let (size, bucket) = n.hash_sizes();
        assert!(bucket >= element(3_900) + 8, "{bucket}");
        assert!(bucket % 64 == 0 && bucket <= MAX_BUCKET);
        assert!(size >= 1_000_000, "{size}");
    }
}
