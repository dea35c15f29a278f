//! Netlify `_redirects` (also read by Cloudflare Pages): `from to status` per line, the
//! path percent-encoded (white space separates the fields). A site's file has paths only:
//! the host is the site's.
//!
//! Cloudflare Pages takes at most 2,000 static redirects, of 1,000 characters each.

use std::io::Write;

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::Result;

/// Static redirects Cloudflare Pages takes from a `_redirects` file.
pub const PAGES_LIMIT: u64 = 2_000;

/// The `_redirects` writer.
#[derive(Debug)]
pub struct Netlify {
    status: u16,
}

impl Netlify {
    /// A writer of redirects with this status.
    pub fn new(status: u16) -> Netlify {
        Netlify { status }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (the rules match the path only)");
    }
    // `*`, `:name` and a trailing `!` mean something in `_redirects`: encoded, they don't.
    Ok(e.path
        .replace('*', "%2A")
        .replace(':', "%3A")
        .replace('!', "%21"))
}

impl Format for Netlify {
    fn keyer(&self) -> KeyFn {
        key
    }

    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "# cfimg redirects: a _redirects file (Netlify, Cloudflare Pages) for the old site."
        )
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        writeln!(
            out,
            "{key} {} {}",
            e.mapped.delivery_url.replace(' ', "%20"),
            self.status
        )
    }

    fn end(&mut self, _out: &mut dyn Write) -> Result<()> {
        Ok(())
    }

    fn notes(&self, rules: u64) -> Vec<String> {
        if rules > PAGES_LIMIT {
            vec![format!(
                "netlify: {rules} redirects are over Cloudflare Pages' {PAGES_LIMIT} static redirects (Netlify itself takes them); on Pages use --format cloudflare-bulk or json"
            )]
        } else {
            Vec::new()
        }
    }
}
