//! Apache: a `RewriteMap` text file (`key target` per line), with the rules that use it in
//! its header. mod_rewrite's `%{REQUEST_URI}` is decoded; the rules escape it back with
//! `int:escape` (the characters Apache keeps are alphanumerics and `$-_.+!*'(),:@&=~/`),
//! so a key is the lower-case host plus the path escaped exactly that way: no key holds a
//! space, which a text map could not.

use std::io::Write;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::Result;

/// What `ap_os_escape_path` (behind `int:escape`) escapes.
const APACHE_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'$')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'+')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b',')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'~')
    .remove(b'/');

/// The Apache writer.
#[derive(Debug)]
pub struct Apache {
    status: u16,
}

impl Apache {
    /// A writer of redirects with this status.
    pub fn new(status: u16) -> Apache {
        Apache { status }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (the rules match the path only)");
    }
    if e.decoded.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("has a control character");
    }
    Ok(format!(
        "{}{}",
        e.host,
        utf8_percent_encode(e.decoded, APACHE_PATH)
    ))
}

impl Format for Apache {
    fn keyer(&self) -> KeyFn {
        key
    }

    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "# cfimg redirects for Apache: a RewriteMap text file. In the old site's VirtualHost\n\
             # (RewriteMap is not allowed in .htaccess), with this file's path:\n\
             #   RewriteEngine On\n\
             #   RewriteMap cfimg \"txt:/etc/apache2/cfimg-redirects.txt\"\n\
             #   RewriteMap cfimg_esc int:escape\n\
             #   RewriteMap cfimg_lc int:tolower\n\
             #   RewriteCond \"${{cfimg:${{cfimg_lc:%{{SERVER_NAME}}}}${{cfimg_esc:%{{REQUEST_URI}}}}}}\" \"^(.+)$\"\n\
             #   RewriteRule \"^\" \"%1\" [R={},L,NE,QSD]",
            self.status
        )
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        // A target is a URL: it has no white space; any that slipped in is encoded.
        writeln!(out, "{key} {}", e.mapped.delivery_url.replace(' ', "%20"))
    }

    fn end(&mut self, _out: &mut dyn Write) -> Result<()> {
        Ok(())
    }

    fn notes(&self, _rules: u64) -> Vec<String> {
        vec!["apache: the file's header holds the RewriteMap and RewriteRule lines for the VirtualHost".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_as_int_escape_does() {
        let enc = |s: &str| utf8_percent_encode(s, APACHE_PATH).to_string();
        assert_eq!(enc("/a b/100%;ü.png"), "/a%20b/100%25%3B%C3%BC.png");
        assert_eq!(enc("/keep$-_.+!*'(),:@&=~"), "/keep$-_.+!*'(),:@&=~");
    }
}
