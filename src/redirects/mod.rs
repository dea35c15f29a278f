//! `cfimg redirects`: rules that send every old URL of an uploaded item to its delivery URL,
//! in the format of the place users put redirects. The ledger is read by a cursor and each
//! rule written as its row is read; a format that must know its keys before its first line
//! (nginx's hash sizes, the single Cloudflare rule) reads the ledger twice instead of holding it.
//!
//! One file per format; `check.rs` is `cfimg redirects check`.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;

use percent_encoding::percent_decode_str;

use crate::cli::RedirectFormat;
use crate::error::{Error, Result};
use crate::item::SourceKind;
use crate::ledger::{Ledger, Row};
use crate::old_url::{Mapped, OldBases, old_urls};

pub mod apache;
pub mod bulk;
pub mod caddy;
pub mod check;
pub mod json;
pub mod netlify;
pub mod nginx;
pub mod rule;

/// One old URL of an uploaded item, split the ways the formats need it.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The old URL as `old_url::old_urls` writes it (percent-encoded).
    pub old_url: &'a str,
    /// Its host, lower case, without a port.
    pub host: &'a str,
    /// Its path, percent-encoded as a browser sends it, from the first '/'.
    pub path: &'a str,
    /// The path percent-decoded, as nginx's `$uri` and Caddy's `{path}` hold it.
    pub decoded: &'a str,
    /// Whether the old URL has a query string (rules match paths only).
    pub has_query: bool,
    /// The item and its delivery URL.
    pub mapped: &'a Mapped,
    /// The kind of its source.
    pub kind: SourceKind,
    /// The delivery URL recorded in the ledger (before the variant is chosen).
    pub recorded_url: &'a str,
}

/// What a format does with an entry: a rule under this lookup key, or why it has none.
pub type Keyed = std::result::Result<String, &'static str>;

/// See [`Format::keyer`].
pub type KeyFn = fn(&Entry<'_>) -> Keyed;

/// A format's writer.
pub trait Format {
    /// Whether it must see every entry ([`Format::prepare`]) before writing.
    fn needs_prepass(&self) -> bool {
        false
    }
    /// The function giving the key a server looks an entry up by (duplicates get one
    /// rule: the first), or why the format cannot express it.
    fn keyer(&self) -> KeyFn;
    /// The first pass over every entry that has a key, when [`Format::needs_prepass`].
    fn prepare(&mut self, _e: &Entry<'_>, _key: &str) -> Result<()> {
        Ok(())
    }
    /// Writes what comes before the rules.
    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()>;
    /// Writes one rule.
    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()>;
    /// Writes what comes after the rules.
    fn end(&mut self, out: &mut dyn Write) -> Result<()>;
    /// Lines for the summary on stderr (plan limits, what to add to the server).
    fn notes(&self, _rules: u64) -> Vec<String> {
        Vec::new()
    }
}

/// The writer of a format.
pub fn format(f: RedirectFormat, status: u16) -> Box<dyn Format> {
    match f {
        RedirectFormat::CloudflareBulk => Box::new(bulk::Bulk::new(status)),
        RedirectFormat::CloudflareRule => Box::new(rule::Rule::new(status)),
        RedirectFormat::Nginx => Box::new(nginx::Nginx::new(status)),
        RedirectFormat::Apache => Box::new(apache::Apache::new(status)),
        RedirectFormat::Caddy => Box::new(caddy::Caddy::new(status)),
        RedirectFormat::Netlify => Box::new(netlify::Netlify::new(status)),
        RedirectFormat::Json => Box::new(json::Json::new(status)),
    }
}

/// The redirect statuses every format accepts.
pub fn check_status(status: u16) -> Result<u16> {
    match status {
        301 | 302 | 303 | 307 | 308 => Ok(status),
        _ => Err(Error::Usage(format!(
            "--status {status} is not a redirect: give 301 (permanent, the default), 302, 303, 307 or 308"
        ))),
    }
}

/// What a run wrote and what it left out, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Rows read.
    pub items: u64,
    /// Items with no rule: not uploaded (failed, rejected, ignored, uploading).
    pub not_uploaded: u64,
    /// Uploaded items of a folder or bucket source with no old base.
    pub no_base: u64,
    /// Rules written.
    pub rules: u64,
    /// Old URLs whose key another item already has (the first keeps the rule).
    pub duplicates: u64,
    /// Old URLs the format cannot express, by reason, with a first example.
    pub inexpressible: BTreeMap<&'static str, (u64, String)>,
}

impl Counts {
    /// The summary lines (stderr).
    pub fn lines(&self) -> Vec<String> {
        let plural = crate::progress::plural;
        let mut out = vec![format!(
            "{} redirected ({} read)",
            plural(self.rules, "old URL", "old URLs"),
            plural(self.items, "item", "items")
        )];
        if self.not_uploaded > 0 {
            out.push(format!(
                "{} not uploaded: no rule (`cfimg failures` lists them)",
                plural(self.not_uploaded, "item", "items")
            ));
        }
        if self.no_base > 0 {
            out.push(format!(
                "{} of a folder or bucket source with no old base: no rule (give --old-base URL, or store one with `cfimg source set-old-base`)",
                plural(self.no_base, "uploaded item", "uploaded items")
            ));
        }
        if self.duplicates > 0 {
            out.push(format!(
                "{} already had a rule for another item (the first one read keeps it)",
                plural(self.duplicates, "old URL", "old URLs")
            ));
        }
        for (why, (n, example)) in &self.inexpressible {
            out.push(format!(
                "{} left out: {why} (first: {example})",
                plural(*n, "old URL", "old URLs")
            ));
        }
        out
    }
}

/// A double-quoted string with `"` and `\` escaped: the same rule in nginx and Caddy
/// configuration and in Cloudflare's Rules language. (A Caddy map input starting with `~`
/// would be a regular expression; keys begin with the host, so none does.)
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn hash_of(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// (host without port in lower case, encoded path from '/', has query) of an absolute
/// http(s) URL; `None` for anything else.
pub fn split_url(url: &str) -> Option<(String, &str, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let after = &rest[end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = &after[..path_end];
    let has_query = after[path_end..].starts_with('?');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), path, has_query))
}

/// Calls `f` on every old URL of every uploaded item (of one source), with its format key;
/// counts what has no rule. Nothing is collected but the hashes of the keys seen, so that
/// a key two items share gets one rule.
pub fn walk(
    ledger: &Ledger,
    bases: &OldBases,
    source: Option<i64>,
    variant: Option<&str>,
    key_of: KeyFn,
    mut f: impl FnMut(&Entry<'_>, &str) -> Result<()>,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut seen: HashSet<u64> = HashSet::new();
    ledger.for_each_row(source, |row: &Row| {
        counts.items += 1;
        let Some(mapped) = Mapped::of(row, variant) else {
            counts.not_uploaded += 1;
            return Ok(());
        };
        let kind = row
            .source
            .split_once(':')
            .and_then(|(k, _)| SourceKind::parse(k))
            .unwrap_or(SourceKind::Dir);
        let urls = old_urls(bases, row.source_id, kind, &row.key);
        if urls.is_empty() {
            if matches!(kind, SourceKind::Dir | SourceKind::Bucket) {
                counts.no_base += 1;
            }
            return Ok(());
        }
        let recorded = row.url.as_deref().unwrap_or_default();
        for url in &urls {
            let Some((host, path, has_query)) = split_url(url) else {
                note(&mut counts, "not an http(s) URL", url);
                continue;
            };
            let decoded = percent_decode_str(path).decode_utf8_lossy();
            let e = Entry {
                old_url: url,
                host: &host,
                path: if path.is_empty() { "/" } else { path },
                decoded: if decoded.is_empty() { "/" } else { &decoded },
                has_query,
                mapped: &mapped,
                kind,
                recorded_url: recorded,
            };
            let key = match key_of(&e) {
                Ok(k) => k,
                Err(why) => {
                    note(&mut counts, why, url);
                    continue;
                }
            };
            if !seen.insert(hash_of(&key)) {
                counts.duplicates += 1;
                continue;
            }
            counts.rules += 1;
            f(&e, &key)?;
        }
        Ok(())
    })?;
    Ok(counts)
}

fn note(counts: &mut Counts, why: &'static str, url: &str) {
    let slot = counts
        .inexpressible
        .entry(why)
        .or_insert_with(|| (0, url.to_string()));
    slot.0 += 1;
}

/// An error writing the output.
pub fn write_err(e: std::io::Error) -> Error {
    Error::Io {
        path: "the redirects' output".into(),
        source: e,
    }
}

/// Writes the rules of one format to `out`: the prepass when the format needs one, then
/// the rules as the rows are read.
pub fn write(
    ledger: &Ledger,
    bases: &OldBases,
    source: Option<i64>,
    variant: Option<&str>,
    fmt: &mut dyn Format,
    out: &mut dyn Write,
) -> Result<Counts> {
    let key = fmt.keyer();
    if fmt.needs_prepass() {
        walk(ledger, bases, source, variant, key, |e, k| {
            fmt.prepare(e, k)
        })?;
    }
    fmt.begin(out).map_err(write_err)?;
    let counts = walk(ledger, bases, source, variant, key, |e, k| {
        fmt.entry(out, e, k).map_err(write_err)
    })?;
    fmt.end(out)?;
    out.flush().map_err(write_err)?;
    Ok(counts)
}
