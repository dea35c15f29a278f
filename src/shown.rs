//! Names, keys and URLs as text output shows them: control characters and the Unicode
//! characters that reorder or break lines are escaped, so that a file named
//! `a.png\n2026-… INFO uploaded x` cannot write a forged record into the log, `failures` or
//! `verify` output, and a right-to-left override cannot make `gnp.exe` read as `exe.png`.
//! JSON output needs none of this (its strings are escaped by JSON itself) and stays raw.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// A string shown with its control and reordering characters escaped (`\n`, `\u{202e}`).
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                _ => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether a character could break a line or reorder what a reader sees.
pub fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (ESC, NEL, CSI, ...)
        || matches!(c,
            '\u{202a}'..='\u{202e}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{200e}' | '\u{200f}' | '\u{061c}' // direction marks
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
        )
}

/// Whether a string would be shown differently from how it is stored.
pub fn is_plain(s: &str) -> bool {
    !s.contains(needs_escape)
}

/// The text log's field formatter: like tracing's default (`message key=value ...`, string
/// fields quoted), with every value passed through [`Shown`], so that no log site can
/// print a raw file name, key or URL.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShownFields;

impl<'w> FormatFields<'w> for ShownFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = FieldVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.writer, "{sep}{}", Shown(value)),
            // tracing's `log` bridge fields, which its default formatter hides too.
            name if name.starts_with("log.") => Ok(()),
            name => write!(self.writer, "{sep}{name}={}", Shown(value)),
        };
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(field, value);
        } else {
            // Quoted, as tracing's default formatter shows string fields.
            let mut quoted = String::with_capacity(value.len() + 2);
            let _ = write!(quoted, "{value:?}");
            self.put(field, &quoted);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_reorder_a_line() {
        let shown = |s: &str| Shown(s).to_string();
        assert_eq!(shown("photos/a b.png"), "photos/a b.png");
        assert_eq!(shown("büro/日本.webp"), "büro/日本.webp");
        assert_eq!(
            shown("a.png\n2026 INFO uploaded x\r\t"),
            "a.png\\n2026 INFO uploaded x\\r\\t"
        );
        assert_eq!(shown("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(shown("gnp\u{202e}.exe"), "gnp\\u{202e}.exe");
        assert_eq!(
            shown("\u{2066}\u{85}\u{7f}\u{2028}"),
            "\\u{2066}\\u{85}\\u{7f}\\u{2028}"
        );
        assert!(is_plain("a/b.png") && !is_plain("a\u{200f}"));
    }
}
