//! Cloudflare Bulk Redirects: the CSV a Bulk Redirect List imports. One line per redirect,
//! no header: `<SOURCE_URL>,<TARGET_URL>,<STATUS_CODE>`; the source without a scheme so
//! that it matches http and https, its path percent-encoded with upper-case hex (the form
//! Cloudflare normalises request URLs to). A source URL has no query and at most 32 KB.
//!
//! Accounts hold a number of URL redirects across all their lists that depends on the plan
//! (Free 10,000; Pro 25,000; Business 50,000; Enterprise 1,000,000 by default): the
//! summary says which plans a mapping fits and what to use beyond them.

use std::io::Write;

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::Result;

/// URL redirects across lists, per plan (Cloudflare's limits as of 2025-02).
pub const PLAN_LIMITS: [(&str, u64); 4] = [
    ("Free", 10_000),
    ("Pro", 25_000),
    ("Business", 50_000),
    ("Enterprise (default quota)", 1_000_000),
];

/// Longest source URL a URL redirect takes.
const MAX_SOURCE: usize = 32 * 1024;

/// The Bulk Redirects writer.
#[derive(Debug)]
pub struct Bulk {
    status: u16,
}

impl Bulk {
    /// A writer of redirects with this status.
    pub fn new(status: u16) -> Bulk {
        Bulk { status }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (a Bulk Redirect source URL cannot have one)");
    }
    let k = format!("{}{}", e.host, e.path);
    if k.len() > MAX_SOURCE {
        return Err("is longer than a Bulk Redirect source URL (32 KB)");
    }
    Ok(k)
}

/// A CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Format for Bulk {
    fn keyer(&self) -> KeyFn {
        key
    }

    fn begin(&mut self, _out: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        writeln!(
            out,
            "{},{},{}",
            field(key),
            field(&e.mapped.delivery_url),
            self.status
        )
    }

    fn end(&mut self, _out: &mut dyn Write) -> Result<()> {
        Ok(())
    }

    fn notes(&self, rules: u64) -> Vec<String> {
        plan_notes(rules)
    }
}

/// Which plans' quotas a number of URL redirects fits, and what to use beyond them.
pub fn plan_notes(rules: u64) -> Vec<String> {
    let fits: Vec<&str> = PLAN_LIMITS
        .iter()
        .filter(|(_, n)| rules <= *n)
        .map(|(p, _)| *p)
        .collect();
    let over: Vec<String> = PLAN_LIMITS
        .iter()
        .filter(|(_, n)| rules > *n)
        .map(|(p, n)| format!("{p} ({n})"))
        .collect();
    let mut out = Vec::new();
    if over.is_empty() {
        out.push(format!(
            "cloudflare-bulk: {rules} URL redirects fit every plan's quota (Free: 10,000 across all lists of the account)"
        ));
    } else {
        out.push(format!(
            "cloudflare-bulk: {rules} URL redirects exceed the quota of {} (URL redirects across all lists of the account){}",
            over.join(", "),
            if fits.is_empty() {
                String::new()
            } else {
                format!("; they fit {}", fits.join(", "))
            }
        ));
        out.push(
            "beyond your plan: `--format cloudflare-rule` (one rule, when the ids are path ids), \
             `--format json` (a Worker with KV), or split with `--source` / by old base"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("h/a%20b.jpg"), "h/a%20b.jpg");
        assert_eq!(field("h/a,b.jpg"), "\"h/a,b.jpg\"");
        assert_eq!(field("h/a\"b"), "\"h/a\"\"b\"");
    }

    #[test]
    fn plan_quotas_are_named() {
        assert!(plan_notes(9_000)[0].contains("fit every plan"));
        let over = plan_notes(30_000).join("\n");
        assert!(
            over.contains("Free (10000)") && over.contains("Pro (25000)"),
            "{over}"
        );
        assert!(over.contains("they fit Business"), "{over}");
        assert!(plan_notes(2_000_000).join("\n").contains("cloudflare-rule"));
    }
}
