//! Caddy: a Caddyfile snippet for the old site's block, one `map` from `{host}{path}` (the
//! path decoded, as Caddy holds it) to `{cfimg_redirect}`, then one `redir`.

use super::quoted;
use std::io::Write;

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::Result;

/// The Caddy writer.
#[derive(Debug)]
pub struct Caddy {
    status: u16,
}

impl Caddy {
    /// A writer of redirects with this status.
    pub fn new(status: u16) -> Caddy {
        Caddy { status }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (the map matches the path only)");
    }
    if e.decoded.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("has a control character");
    }
    Ok(format!("{}{}", e.host, e.decoded))
}

impl Format for Caddy {
    fn keyer(&self) -> KeyFn {
        key
    }

    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "# cfimg redirects for Caddy: `import` this file inside the old site's block."
        )?;
        writeln!(out, "map {{host}}{{path}} {{cfimg_redirect}} {{")
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        // Map outputs expand placeholders: a `{` in a URL is percent-encoded.
        let target = e
            .mapped
            .delivery_url
            .replace('{', "%7B")
            .replace('}', "%7D");
        writeln!(out, "\t{} {}", quoted(key), quoted(&target))
    }

    fn end(&mut self, out: &mut dyn Write) -> Result<()> {
        writeln!(
            out,
            "\tdefault \"\"\n}}\n@cfimg_redirect not vars {{cfimg_redirect}} \"\"\nredir @cfimg_redirect {{cfimg_redirect}} {}",
            self.status
        )
        .map_err(super::write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_quoted() {
        assert_eq!(quoted("h/a b\"c\\d"), "\"h/a b\\\"c\\\\d\"");
    }
}
