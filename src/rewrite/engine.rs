//! The streaming rewriter: one pass over a file in chunks, holding back only a short
//! look-ahead (so an old URL split across two reads is still found) and, while a
//! PHP-serialized string that contains a replaced URL is open, the bytes from its `s:N:`
//! prefix on (so the prefix can be corrected before it is written). Every other byte is
//! copied through unchanged; each change is one [`Edit`], handed to the sink (the journal)
//! in file order.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use aho_corasick::{AhoCorasick, Input, MatchKind};

use super::forms::{Bases, Form, Slash};

/// The longest URL tail (after the base) that is looked up; longer runs are left alone.
pub const MAX_TAIL: usize = 2048;
/// The longest PHP-serialized string whose length prefix is corrected (bytes). URLs inside a
/// longer one are left alone and reported: changing them would break `unserialize`.
pub const MAX_SERIALIZED: u64 = 16 << 20;
/// The default read size.
pub const CHUNK: usize = 1 << 20;

/// One change to the input: at byte offset `at`, the bytes `old` became `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Offset of `old` in the input.
    pub at: u64,
    /// The input's bytes.
    pub old: Vec<u8>,
    /// What the output has instead.
    pub new: Vec<u8>,
}

/// Why an old URL was left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The ledger maps no uploaded item to it.
    NotMapped,
    /// It sits in a PHP-serialized string longer than [`MAX_SERIALIZED`].
    LongSerialized,
}

/// Where the rewriter reports what it did.
pub trait Sink {
    /// An old URL that was left as it is, with its 1-based line.
    fn missed(&mut self, line: u64, url: &str, why: Miss);
    /// A change, in file order, once its bytes are written.
    fn edit(&mut self, edit: &Edit) -> io::Result<()>;
}

/// How to rewrite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes per read.
    pub chunk: usize,
    /// A URL followed by a `srcset` width descriptor (`... 640w`) gets the flexible variant
    /// `w=640` instead of the delivery URL's variant.
    pub srcset_widths: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            chunk: CHUNK,
            srcset_widths: false,
        }
    }
}

/// What one file's rewrite did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Old URLs replaced.
    pub replaced: u64,
    /// Old URLs left as they are (see [`Miss`]).
    pub missed: u64,
    /// PHP-serialized length prefixes corrected.
    pub lengths_fixed: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// The compiled search for every spelling of the old bases.
#[derive(Debug)]
pub struct Matcher {
    bases: Bases,
    ac: AhoCorasick,
    lookahead: usize,
}

impl Matcher {
    /// Builds the search; the last pattern is the `s:` of a serialized string.
    pub fn new(bases: Bases) -> Result<Matcher, String> {
        let mut patterns: Vec<&[u8]> = bases.spellings.iter().map(|s| &s.bytes[..]).collect();
        patterns.push(b"s:");
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .map_err(|e| format!("the old bases make no search: {e}"))?;
        let lookahead = bases.longest() + MAX_TAIL + 320;
        Ok(Matcher {
            bases,
            ac,
            lookahead,
        })
    }

    /// The bases searched for.
    pub fn bases(&self) -> &Bases {
        &self.bases
    }
}

/// A serialized string (`s:N:"...";`) being read.
#[derive(Debug)]
struct Open {
    /// Index of its `s` in the buffer.
    prefix: usize,
    /// Its length digits in the buffer.
    digits: std::ops::Range<usize>,
    /// The declared length.
    n: u64,
    /// Content bytes (unescaped) still to come.
    remaining: u64,
    /// How far its content has been counted (buffer index).
    cur: usize,
    /// Written inside a SQL string (`\"` quotes, backslash escapes).
    sql: bool,
    /// How much its content has grown (unescaped bytes).
    delta: i64,
}

impl Open {
    fn fixable(&self) -> bool {
        self.n <= MAX_SERIALIZED
    }
}

/// Rewrites `input` into `output`; `resolve` maps an old URL (as the base plus its tail,
/// slashes plain) to its delivery URL.
pub fn rewrite(
    m: &Matcher,
    input: &mut dyn Read,
    output: &mut dyn Write,
    resolve: &mut dyn FnMut(&str) -> Option<String>,
    sink: &mut dyn Sink,
    opts: &Options,
) -> io::Result<Stats> {
    let mut run = Run {
        m,
        output,
        resolve,
        sink,
        opts,
        buf: Vec::with_capacity(opts.chunk.max(1) + m.lookahead),
        base: 0,
        scan: 0,
        out: 0,
        eof: false,
        edits: BTreeMap::new(),
        open: Vec::new(),
        line_at: 0,
        line: 1,
        stats: Stats::default(),
    };
    let chunk = opts.chunk.max(1);
    loop {
        if !run.eof {
            let len = run.buf.len();
            run.buf.resize(len + chunk, 0);
            let n = loop {
                match input.read(&mut run.buf[len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        run.buf.truncate(len);
                        return Err(e);
                    }
                }
            };
            run.buf.truncate(len + n);
            run.stats.bytes_in += n as u64;
            run.eof = n == 0;
        }
        let limit = if run.eof {
            run.buf.len()
        } else {
            run.buf.len().saturating_sub(m.lookahead)
        };
        run.search(limit)?;
        let hold = run
            .open
            .iter()
            .filter(|o| o.fixable())
            .map(|o| o.prefix)
            .min()
            .unwrap_or(usize::MAX);
        let upto = if run.eof {
            run.buf.len()
        } else {
            run.scan.min(hold).min(run.buf.len())
        };
        run.flush(upto)?;
        if run.eof {
            break;
        }
        run.compact();
    }
    run.output.flush()?;
    Ok(run.stats)
}

struct Run<'a> {
    m: &'a Matcher,
    output: &'a mut dyn Write,
    resolve: &'a mut dyn FnMut(&str) -> Option<String>,
    sink: &'a mut dyn Sink,
    opts: &'a Options,
    /// Input bytes from offset `base` on.
    buf: Vec<u8>,
    base: u64,
    /// Next buffer index to search from.
    scan: usize,
    /// Buffer index up to which the output is written.
    out: usize,
    eof: bool,
    /// Changes not yet written, by input offset.
    edits: BTreeMap<u64, Edit>,
    /// Serialized strings being read, outermost first.
    open: Vec<Open>,
    /// Line number `line` starts at or before buffer index `line_at`.
    line_at: usize,
    line: u64,
    stats: Stats,
}

/// Bytes that end a URL (a `\` ends it unless it starts the spelling's slash).
fn ends_url(b: u8) -> bool {
    b <= b' '
        || b == 0x7f
        || matches!(
            b,
            b'"' | b'\''
                | b'<'
                | b'>'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'|'
                | b'^'
                | b'`'
                | b'?'
                | b'#'
                | b'&'
                | b';'
                | b'\\'
        )
}

/// Bytes after which a root-relative path may start (not part of a host or another path).
fn may_precede_path(b: u8) -> bool {
    !(b.is_ascii_alphanumeric()
        || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'%' | b'~' | b'@'))
}

/// The content length of `bytes` once unescaped (a SQL string's backslash takes the next byte).
fn unescaped_len(bytes: &[u8], sql: bool) -> i64 {
    if !sql {
        return bytes.len() as i64;
    }
    let (mut i, mut n) = (0, 0i64);
    while i < bytes.len() {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
        n += 1;
    }
    n
}

/// `url` with its last path segment (the variant) replaced.
fn with_variant(url: &str, variant: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{variant}"),
        None => url.to_string(),
    }
}

impl Run<'_> {
    fn search(&mut self, limit: usize) -> io::Result<()> {
        let serial = self.m.bases.spellings.len();
        while self.scan < limit {
            let found = self
                .m
                .ac
                .find(Input::new(&self.buf[..]).span(self.scan..self.buf.len()));
            let Some(hit) = found.filter(|h| h.start() < limit) else {
                self.scan = limit;
                break;
            };
            self.advance_open(hit.start());
            self.scan = if hit.pattern().as_usize() == serial {
                self.serialized(hit.start(), hit.end())
            } else {
                self.url(hit.pattern().as_usize(), hit.start(), hit.end())
            };
        }
        let to = self.scan.min(self.buf.len());
        self.advance_open(to);
        Ok(())
    }

    /// The 1-based line of buffer index `at` (called with growing `at`).
    fn line_of(&mut self, at: usize) -> u64 {
        if at > self.line_at {
            self.line += memchr::memchr_iter(b'\n', &self.buf[self.line_at..at]).count() as u64;
            self.line_at = at;
        }
        self.line
    }

    /// An `s:` at `start`: opens a serialized string when `s:N:"` (or `s:N:\"`) follows.
    fn serialized(&mut self, start: usize, after: usize) -> usize {
        let buf = &self.buf;
        let mut i = after;
        while i < buf.len() && buf[i].is_ascii_digit() && i - after <= 10 {
            i += 1;
        }
        let digits = after..i;
        if digits.is_empty() || digits.len() > 10 || buf.get(i) != Some(&b':') {
            return start + 1;
        }
        i += 1;
        let sql = if buf.get(i) == Some(&b'"') {
            i += 1;
            false
        } else if buf[i..].starts_with(b"\\\"") {
            i += 2;
            true
        } else {
            return start + 1;
        };
        let Some(n) = std::str::from_utf8(&buf[digits.clone()])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        else {
            return start + 1;
        };
        self.open.push(Open {
            prefix: start,
            digits,
            n,
            remaining: n,
            cur: i,
            sql,
            delta: 0,
        });
        i
    }

    /// Counts open strings' content up to buffer index `to`; closes those that end there,
    /// correcting the length prefix of those that grew or shrank.
    fn advance_open(&mut self, to: usize) {
        let mut k = self.open.len();
        while k > 0 {
            k -= 1;
            let o = &mut self.open[k];
            while o.remaining > 0 && o.cur < to {
                o.cur += if o.sql && self.buf[o.cur] == b'\\' {
                    2
                } else {
                    1
                };
                o.remaining -= 1;
            }
            if o.remaining > 0 {
                if self.eof && to >= self.buf.len() {
                    // The file ends inside: it was not a serialized string.
                    self.open.remove(k);
                }
                continue;
            }
            let close: &[u8] = if o.sql { b"\\\";" } else { b"\";" };
            let valid = self.buf.get(o.cur..).is_some_and(|b| b.starts_with(close));
            let o = self.open.remove(k);
            if !(valid && o.fixable() && o.delta != 0) {
                continue;
            }
            let old = self.buf[o.digits.clone()].to_vec();
            let new = (o.n as i64 + o.delta).max(0).to_string().into_bytes();
            let grown = new.len() as i64 - old.len() as i64;
            // Outer strings hold this prefix: their content changes with it.
            for outer in &mut self.open[..k] {
                outer.delta += grown;
            }
            let at = self.base + o.digits.start as u64;
            self.edits.insert(at, Edit { at, old, new });
            self.stats.lengths_fixed += 1;
        }
    }

    /// The spelling `which` at `start..after`: reads the URL's tail, looks it up and
    /// records the change. Returns where to search next.
    fn url(&mut self, which: usize, start: usize, after: usize) -> usize {
        let sp = &self.m.bases.spellings[which];
        let prev = start.checked_sub(1).map(|i| self.buf[i]);
        match sp.form {
            Form::RootRelative if prev.is_some_and(|b| !may_precede_path(b)) => {
                return start + 1;
            }
            Form::ProtocolRelative if prev == Some(b':') => return start + 1,
            _ => {}
        }
        let (slash, base) = (sp.slash, sp.base);
        let token = slash.token();
        let mut tail = Vec::new();
        let mut i = after;
        while i < self.buf.len() {
            if i - after > MAX_TAIL {
                return i;
            }
            let b = self.buf[i];
            if slash != Slash::Plain && b == b'\\' && self.buf[i..].starts_with(token) {
                tail.push(b'/');
                i += token.len();
            } else if ends_url(b) {
                break;
            } else {
                tail.push(b);
                i += 1;
            }
        }
        if tail.is_empty() {
            return i;
        }
        let base_url = &self.m.bases.bases[base];
        let tail = String::from_utf8_lossy(&tail);
        let mut end = i;
        let mut url = format!("{base_url}{tail}");
        let mut mapped = (self.resolve)(&url);
        // A root-relative path may be any host's whose base has that path.
        if mapped.is_none() && sp.form == Form::RootRelative {
            for other in self.m.bases.same_path(base) {
                let candidate = format!("{other}{tail}");
                if let Some(m) = (self.resolve)(&candidate) {
                    (url, mapped) = (candidate, Some(m));
                    break;
                }
            }
        }
        // Prose puts punctuation after a link: try without it.
        while mapped.is_none() && url.ends_with(['.', ',', ':', '!']) {
            url.pop();
            end -= 1;
            mapped = (self.resolve)(&url);
        }
        if url.len() <= base_url.len() {
            return i;
        }
        let line = self.line_of(start);
        if self.open.iter().any(|o| !o.fixable()) {
            self.sink.missed(line, &url, Miss::LongSerialized);
            self.stats.missed += 1;
            return end;
        }
        let Some(mut delivery) = mapped else {
            self.sink.missed(line, &url, Miss::NotMapped);
            self.stats.missed += 1;
            return end;
        };
        if self.opts.srcset_widths
            && let Some(w) = self.srcset_width(end)
        {
            delivery = with_variant(&delivery, &format!("w={w}"));
        }
        let new = slash.encode(&delivery);
        let old = self.buf[start..end].to_vec();
        for o in &mut self.open {
            o.delta += unescaped_len(&new, o.sql) - unescaped_len(&old, o.sql);
        }
        let at = self.base + start as u64;
        self.edits.insert(at, Edit { at, old, new });
        self.stats.replaced += 1;
        end
    }

    /// The width of a `srcset` descriptor (`640w`) after a URL ending at `end`, if any.
    fn srcset_width(&self, end: usize) -> Option<u32> {
        let b = &self.buf;
        let mut i = end;
        // A query or fragment stays with the URL.
        while i < b.len()
            && i - end < 256
            && !b[i].is_ascii_whitespace()
            && !matches!(b[i], b'"' | b'\'' | b',' | b'\\')
        {
            i += 1;
        }
        let gap = i;
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        let digits = i;
        while i < b.len() && b[i].is_ascii_digit() && i - digits < 6 {
            i += 1;
        }
        if i == gap || i == digits || b.get(i) != Some(&b'w') {
            return None;
        }
        match b.get(i + 1) {
            None => {}
            Some(c) if c.is_ascii_whitespace() || matches!(c, b',' | b'"' | b'\'' | b'\\') => {}
            Some(_) => return None,
        }
        std::str::from_utf8(&b[digits..i])
            .ok()?
            .parse()
            .ok()
            .filter(|w| *w > 0)
    }

    /// Writes the output up to buffer index `upto`, applying the changes before it.
    fn flush(&mut self, upto: usize) -> io::Result<()> {
        let mut pos = self.out;
        while let Some(entry) = self.edits.first_entry() {
            let idx = (entry.key() - self.base) as usize;
            if idx >= upto {
                break;
            }
            let e = entry.remove();
            self.output.write_all(&self.buf[pos..idx])?;
            self.output.write_all(&e.new)?;
            self.stats.bytes_out += (idx - pos + e.new.len()) as u64;
            self.sink.edit(&e)?;
            pos = idx + e.old.len();
        }
        if pos < upto {
            self.output.write_all(&self.buf[pos..upto])?;
            self.stats.bytes_out += (upto - pos) as u64;
            pos = upto;
        }
        self.out = self.out.max(pos);
        Ok(())
    }

    /// Drops written bytes from the buffer (keeping one for the look-behind).
    fn compact(&mut self) {
        let drop = self.out.min(self.scan).saturating_sub(1);
        if drop < (64 << 10) && drop < self.buf.len() / 2 {
            return;
        }
        self.line_of(drop);
        self.buf.drain(..drop);
        self.base += drop as u64;
        self.scan -= drop;
        self.out -= drop;
        self.line_at -= drop;
        // Only a string too long to fix can start before the written part.
        for o in &mut self.open {
            o.prefix = o.prefix.saturating_sub(drop);
            o.digits = o.digits.start.saturating_sub(drop)..o.digits.end.saturating_sub(drop);
            o.cur -= drop;
        }
    }
}
