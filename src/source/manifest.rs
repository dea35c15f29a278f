//! URL manifests: a file (or stdin) listing image URLs, one row each, as plain text, CSV
//! with a header, or JSON Lines. The file is read as a stream, a line at a time, so a
//! manifest of millions of rows never sits in memory; repeats are found by a fixed-size
//! filter whose hits are confirmed against a spill file (see `seen`), so memory stays flat.
//! A row that cannot be used becomes a [`Found::Bad`] keyed by a hash of its text (its
//! reason names the line number) and never stops the run.
//!
//! Bodies: in `remote` mode Cloudflare fetches the URL itself (the `url` form); in `local`
//! mode cfimg downloads it into a temporary file first, so that the same checks as for
//! files (type sniffing, hashing, size, dedup) apply before any request to Cloudflare.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod seen;

use self::seen::Seen;
use super::{Found, Recount};
use crate::download::Bounds;
use crate::error::{Error, Result};
use crate::item::{Body, Item, ItemOptions, Locator, SourceId, SourceKind};
use crate::layer::raw_section;
use crate::rules::MAX_FILE_BYTES;

/// How the bytes of a URL item reach Cloudflare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlMode {
    /// Cloudflare fetches the URL itself (the `url` upload form).
    #[default]
    Remote,
    /// cfimg downloads it first, checks it like a file and uploads the bytes.
    Local,
}

raw_section! {
/// `[manifest]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// `remote` or `local`.
    pub url_mode: Option<UrlMode>,
}
}

/// Checked `[manifest]` settings.
#[derive(Debug, Clone, Default)]
pub struct ManifestConfig {
    /// How the bytes of URL items reach Cloudflare.
    pub url_mode: UrlMode,
}

/// `[manifest]`: nothing to check; the URL mode defaults to remote.
pub fn validate_manifest(m: RawManifest) -> ManifestConfig {
    ManifestConfig {
        url_mode: m.url_mode.unwrap_or_default(),
    }
}

/// Longest line read; a longer one is reported as bad and skipped, so that a file without
/// line breaks is never loaded whole.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Redirects followed when downloading (local mode).
const MAX_REDIRECTS: usize = 5;
/// Time to open a connection to an origin.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes from an origin.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The CSV columns and JSON fields a row may have.
const COLUMNS: &[&str] = &["url", "id", "metadata", "require_signed_urls", "creator"];

/// How a manifest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    /// One URL per line; `#` starts a comment line; blank lines are ignored.
    Text,
    /// CSV with a header row: `url` and optionally `id`, `metadata`, `require_signed_urls`, `creator`.
    Csv,
    /// JSON Lines: one object per line with the same fields as the CSV columns.
    Jsonl,
}

impl ManifestFormat {
    /// The format a file name's extension says, if it says one.
    pub fn from_path(path: &Path) -> Option<ManifestFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" | "urls" => ManifestFormat::Text,
            "csv" => ManifestFormat::Csv,
            "jsonl" | "ndjson" => ManifestFormat::Jsonl,
            _ => return None,
        })
    }
}

/// Where the manifest is read from.
#[derive(Debug, Clone)]
enum Input {
    File(PathBuf),
    Stdin,
}

/// A prepared manifest source.
#[derive(Debug)]
pub struct Manifest {
    id: SourceId,
    input: Input,
    format: ManifestFormat,
    fetcher: Option<Fetcher>,
}

impl Manifest {
    /// Checks the manifest (it exists, its format is known, a CSV header names known
    /// columns) and prepares the downloader of local mode. `-` reads stdin.
    pub fn new(
        path: &Path,
        format: Option<ManifestFormat>,
        mode: UrlMode,
        retry: Option<Arc<dyn Retrier>>,
        bounds: Bounds,
    ) -> Result<Manifest> {
        let fetcher = match mode {
            UrlMode::Remote => None,
            UrlMode::Local => Some(Fetcher::new(retry, bounds)?),
        };
        if path == Path::new("-") {
            return Ok(Manifest {
                // One source whatever is piped: a file is the way to resumable runs.
                id: SourceId::new(SourceKind::Manifest, "stdin"),
                input: Input::Stdin,
                format: format.unwrap_or(ManifestFormat::Text),
                fetcher,
            });
        }
        let format = format
            .or_else(|| ManifestFormat::from_path(path))
            .ok_or_else(|| {
                Error::Config(vec![format!(
                    "cannot tell the format of the manifest {} from its extension (.txt, .csv, .jsonl, .ndjson): \
                     give --manifest-format text|csv|jsonl",
                    path.display()
                )])
            })?;
        let unreadable = |e: std::io::Error| {
            Error::Config(vec![format!(
                "the manifest {} cannot be read: {e}",
                path.display()
            )])
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.is_dir() {
            return Err(Error::Config(vec![format!(
                "the manifest {} is a folder: give a file (or migrate the folder without --manifest)",
                path.display()
            )]));
        }
        let canonical = std::fs::canonicalize(path).map_err(unreadable)?;
        let location = canonical.to_str().map(str::to_string).ok_or_else(|| {
            Error::Config(vec![format!(
                "{} is not valid UTF-8: give a manifest whose path is",
                canonical.display()
            )])
        })?;
        if format == ManifestFormat::Csv {
            // A bad header is reported now, once, before anything is sent.
            let file = std::fs::File::open(path).map_err(unreadable)?;
            Rows::new(BufReader::new(file), format).map_err(|e| match e {
                Error::Config(mut problems) => {
                    for p in &mut problems {
                        *p = format!("the manifest {}: {p}", path.display());
                    }
                    Error::Config(problems)
                }
                other => other,
            })?;
        }
        Ok(Manifest {
            id: SourceId::new(SourceKind::Manifest, location),
            input: Input::File(path.to_path_buf()),
            format,
            fetcher,
        })
    }

    /// The source's identity: the manifest's canonical path, or `stdin`.
    pub fn id(&self) -> &SourceId {
        &self.id
    }

    /// Lists every row into `out` on a thread of the blocking pool.
    pub async fn run(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        super::run_blocking(move || self.list(&out, &stop)).await
    }

    /// A file is read again cheaply; stdin cannot be read twice.
    pub fn recount(&self) -> Recount {
        match self.input {
            Input::File(_) => Recount::Cheap,
            Input::Stdin => Recount::Never,
        }
    }

    /// Lists every row into `out` (blocking) until done or stopped. A read error of the
    /// manifest itself ends the run; a bad row does not.
    pub fn list(&self, out: &mpsc::Sender<Found>, stop: &CancellationToken) -> Result<()> {
        let reader: Box<dyn BufRead> = match &self.input {
            Input::File(path) => {
                let file = std::fs::File::open(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                Box::new(BufReader::with_capacity(256 * 1024, file))
            }
            Input::Stdin => Box::new(BufReader::with_capacity(256 * 1024, std::io::stdin())),
        };
        let mut rows = Rows::new(reader, self.format)?;
        while let Some(found) = rows.next_found().map_err(|e| self.read_error(e))? {
            if stop.is_cancelled() || out.blocking_send(found).is_err() {
                break;
            }
        }
        Ok(())
    }

    fn read_error(&self, e: Error) -> Error {
        match (e, &self.input) {
            // The manifest's own read errors; the duplicate check's spill names its folder.
            (Error::Io { source, path: p }, Input::File(path))
                if p == Path::new("the manifest") =>
            {
                Error::Io {
                    path: path.clone(),
                    source,
                }
            }
            (e, _) => e,
        }
    }

    /// The upload body of a row: the URL itself (remote mode) or a downloaded copy.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        let Locator::Url(url) = &item.locator else {
            return Err(Error::Invalid(format!(
                "a manifest cannot read {:?}",
                item.locator
            )));
        };
        match &self.fetcher {
            None => Ok(Body::Url(url.clone())),
            Some(f) => f.fetch(url).await,
        }
    }
}

/// Normalizes a URL into an item key: scheme and host lowercased, the default port and
/// the fragment dropped, the query kept. Only http and https are accepted.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let mut url =
        reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e}): {}", snippet(raw)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "not an http(s) URL (the scheme is {:?}): {}",
            url.scheme(),
            snippet(raw)
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL has no host: {}", snippet(raw)));
    }
    url.set_fragment(None);
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url.into())
}

/// The start of a long value, for a reason.
fn snippet(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut:?}…")
}

/// Which CSV column holds which field.
#[derive(Debug, Default)]
struct Columns {
    url: usize,
    id: Option<usize>,
    metadata: Option<usize>,
    require_signed_urls: Option<usize>,
    creator: Option<usize>,
    count: usize,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Columns> {
        let mut problems = Vec::new();
        let mut cols = Columns {
            count: header.len(),
            ..Columns::default()
        };
        let mut url = None;
        for (i, raw) in header.iter().enumerate() {
            let name = String::from_utf8_lossy(raw)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase();
            let slot = match name.as_str() {
                "url" => &mut url,
                "id" => &mut cols.id,
                "metadata" => &mut cols.metadata,
                "require_signed_urls" => &mut cols.require_signed_urls,
                "creator" => &mut cols.creator,
                _ => {
                    problems.push(format!(
                        "unknown column {name:?} in the CSV header (line 1); the columns are {} (only url is required)",
                        COLUMNS.join(", ")
                    ));
                    continue;
                }
            };
            if slot.is_some() {
                problems.push(format!(
                    "the column {name:?} appears twice in the CSV header"
                ));
            }
            *slot = Some(i);
        }
        match url {
            Some(i) => cols.url = i,
            None => problems.push(format!(
                "the CSV header (line 1) has no url column; the columns are {}",
                COLUMNS.join(", ")
            )),
        }
        if problems.is_empty() {
            Ok(cols)
        } else {
            Err(Error::Config(problems))
        }
    }
}

/// A row's fields as JSON Lines write them.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    url: Option<String>,
    id: Option<String>,
    metadata: Option<Value>,
    require_signed_urls: Option<Value>,
    creator: Option<String>,
}

enum Reader<R: BufRead> {
    Lines {
        reader: R,
        buf: Vec<u8>,
    },
    Csv {
        reader: Box<csv::Reader<LineBreaks<R>>>,
        cols: Columns,
        record: csv::ByteRecord,
    },
}

/// Passes bytes through and notes where each line break is, so that a CSV record's byte
/// offset becomes its line number: the csv crate's own line count, and its record offsets,
/// are off after blank lines (it counts them into the next record). Only the breaks of
/// the bytes read ahead are held.
struct LineBreaks<R> {
    inner: R,
    offset: u64,
    prev_cr: bool,
    /// Offsets of `\n` bytes not yet passed, each with whether a `\r` came just before.
    breaks: std::collections::VecDeque<(u64, bool)>,
    /// Line breaks before the last record.
    passed: u64,
}

impl<R: Read> Read for LineBreaks<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                self.breaks
                    .push_back((self.offset + i as u64, self.prev_cr));
            }
            self.prev_cr = *b == b'\r';
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R> LineBreaks<R> {
    /// The line of a record the csv crate says starts at `offset`.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.breaks.front().is_some_and(|(o, _)| *o < offset) {
            self.breaks.pop_front();
            self.passed += 1;
        }
        // Blank lines the offset still includes.
        let mut start = offset;
        while let Some(&(o, cr)) = self.breaks.front()
            && (o == start || (cr && o == start + 1))
        {
            self.breaks.pop_front();
            self.passed += 1;
            start = o + 1;
        }
        self.passed + 1
    }
}

/// The rows of a manifest, one [`Found`] at a time.
struct Rows<R: BufRead> {
    reader: Reader<R>,
    format: ManifestFormat,
    line: u64,
    seen: Seen,
}

impl<R: BufRead> Rows<R> {
    /// Starts reading; a CSV header is read and checked here.
    fn new(reader: R, format: ManifestFormat) -> Result<Rows<R>> {
        let reader = match format {
            ManifestFormat::Text | ManifestFormat::Jsonl => Reader::Lines {
                reader,
                buf: Vec::with_capacity(1024),
            },
            ManifestFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(LineBreaks {
                        inner: reader,
                        offset: 0,
                        prev_cr: false,
                        breaks: Default::default(),
                        passed: 0,
                    });
                let header = reader.byte_headers().map_err(csv_error)?.clone();
                if header.is_empty() {
                    return Err(Error::Config(vec![
                        "the CSV manifest is empty: it needs a header row naming a url column"
                            .into(),
                    ]));
                }
                Reader::Csv {
                    reader: Box::new(reader),
                    cols: Columns::from_header(&header)?,
                    record: csv::ByteRecord::new(),
                }
            }
        };
        Ok(Rows {
            reader,
            format,
            line: 0,
            seen: Seen::default(),
        })
    }

    /// The next row, or `None` at the end. An error is a read error of the manifest.
    fn next_found(&mut self) -> Result<Option<Found>> {
        loop {
            let (line, row, raw) = match &mut self.reader {
                Reader::Lines { reader, buf } => {
                    let Some(too_long) = read_line(reader, buf)? else {
                        return Ok(None);
                    };
                    self.line += 1;
                    if too_long {
                        return Ok(Some(bad(
                            self.line,
                            buf,
                            format!("the line is longer than {MAX_LINE_BYTES} bytes"),
                        )));
                    }
                    let Ok(text) = std::str::from_utf8(buf) else {
                        return Ok(Some(bad(
                            self.line,
                            buf,
                            "the line is not valid UTF-8".into(),
                        )));
                    };
                    let text = text.trim_start_matches('\u{feff}').trim();
                    if text.is_empty() {
                        continue;
                    }
                    let row = match self.format {
                        ManifestFormat::Text if text.starts_with('#') => continue,
                        ManifestFormat::Text => Ok((text.to_string(), ItemOptions::default())),
                        _ => json_row(text),
                    };
                    (self.line, row, text.as_bytes().to_vec())
                }
                Reader::Csv {
                    reader,
                    cols,
                    record,
                } => {
                    match reader.read_byte_record(record) {
                        Ok(false) => return Ok(None),
                        Ok(true) => {}
                        Err(e) => match e.kind() {
                            csv::ErrorKind::Io(_) => return Err(csv_error(e)),
                            _ => {
                                self.line += 1;
                                let why = format!("not valid CSV: {e}");
                                return Ok(Some(bad(self.line, why.as_bytes(), why.clone())));
                            }
                        },
                    }
                    let offset = record.position().map_or(0, |p| p.byte());
                    let line = reader.get_mut().line_at(offset);
                    self.line = line;
                    if record.iter().all(|f| f.trim_ascii().is_empty()) {
                        continue;
                    }
                    let raw = record.iter().collect::<Vec<_>>().join(&b"\x1f"[..]);
                    (line, csv_row(record, cols), raw)
                }
            };
            return Ok(Some(match row {
                Err(reason) => bad(line, &raw, reason),
                Ok((url, options)) => self.item(line, &url, options)?,
            }));
        }
    }

    /// A row's item, or why it is passed over. An error is one of the duplicate check's
    /// spill file.
    fn item(&mut self, line: u64, url: &str, options: ItemOptions) -> Result<Found> {
        let key = match normalize_url(url) {
            Ok(k) => k,
            Err(reason) => return Ok(bad(line, url.as_bytes(), reason)),
        };
        if let Some(first) = self.seen.first_line(&key, line)? {
            // Named by its line: under the URL it would overwrite the first row's record.
            return Ok(Found::Ignored {
                key: format!("line {line}"),
                reason: format!("a duplicate of line {first}: {key} is listed already"),
            });
        }
        Ok(Found::Item(Item {
            locator: Locator::Url(key.clone()),
            key,
            fingerprint: None,
            options,
            ticket: Default::default(),
        }))
    }
}

/// How the keys of bad lines begin; the rest is a hash of the line's text.
pub const BAD_LINE_PREFIX: &str = "bad line #";

/// A row that cannot be used, keyed by its content, not its line number: a line inserted
/// above it must not make it a new item, and a fixed line must not leave its record behind
/// under a number another line now has. The reason names the line where it was found.
fn bad(line: u64, content: &[u8], reason: String) -> Found {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(content);
    Found::Bad {
        key: format!("{BAD_LINE_PREFIX}{}", hex::encode(&hash[..8])),
        reason: format!("line {line}: {reason}"),
    }
}

/// Whether a key is a bad line's (or, from older versions and for duplicates, a line
/// number's): records a complete run of the manifest did not see again are stale.
pub fn is_line_key(key: &str) -> bool {
    key.starts_with(BAD_LINE_PREFIX)
        || key
            .strip_prefix("line ")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn csv_error(e: csv::Error) -> Error {
    // The error's own text (the line and what is wrong), not its kind's Debug form.
    if !e.is_io_error() {
        return Error::Config(vec![format!("the CSV header is not valid: {e}")]);
    }
    match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Io {
            path: PathBuf::from("the manifest"),
            source,
        },
        _ => Error::Config(vec!["the CSV header could not be read".into()]),
    }
}

/// Reads one line into `buf` (without its line break). `None` at the end; `Some(true)`
/// when the line was longer than [`MAX_LINE_BYTES`] (the rest of it is skipped).
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<Option<bool>> {
    let io = |source| Error::Io {
        path: PathBuf::from("the manifest"),
        source,
    };
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(false));
    }
    if buf.len() <= MAX_LINE_BYTES {
        // The last line, without a line break.
        return Ok(Some(false));
    }
    // Too long: skip to the next line break without keeping it.
    loop {
        let chunk = reader.fill_buf().map_err(io)?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
    buf.clear();
    Ok(Some(true))
}

/// A CSV record's URL and settings, or why it cannot be used.
fn csv_row(record: &csv::ByteRecord, cols: &Columns) -> Result<(String, ItemOptions), String> {
    if record.len() != cols.count {
        return Err(format!(
            "the row has {} fields and the header {}",
            record.len(),
            cols.count
        ));
    }
    let field = |i: Option<usize>| -> Result<Option<&str>, String> {
        let Some(i) = i else { return Ok(None) };
        let raw = record.get(i).unwrap_or_default();
        let text = std::str::from_utf8(raw).map_err(|_| {
            format!(
                "the {} field is not valid UTF-8",
                header_name(cols, i).unwrap_or("?")
            )
        })?;
        let text = text.trim();
        Ok((!text.is_empty()).then_some(text))
    };
    let url = field(Some(cols.url))?.ok_or("the url field is empty")?;
    let metadata = match field(cols.metadata)? {
        Some(text) => Some(metadata(serde_json::from_str(text).map_err(|e| {
            format!("the metadata is not valid JSON ({e}): {}", snippet(text))
        })?)?),
        None => None,
    };
    let require_signed_urls = match field(cols.require_signed_urls)? {
        Some(text) => Some(boolean(text)?),
        None => None,
    };
    Ok((
        url.to_string(),
        options(
            field(cols.id)?.map(str::to_string),
            metadata,
            require_signed_urls,
            field(cols.creator)?.map(str::to_string),
        )?,
    ))
}

fn header_name(cols: &Columns, i: usize) -> Option<&'static str> {
    [
        (Some(cols.url), "url"),
        (cols.id, "id"),
        (cols.metadata, "metadata"),
        (cols.require_signed_urls, "require_signed_urls"),
        (cols.creator, "creator"),
    ]
    .into_iter()
    .find(|(c, _)| *c == Some(i))
    .map(|(_, n)| n)
}

/// A JSON line's URL and settings, or why it cannot be used.
fn json_row(text: &str) -> Result<(String, ItemOptions), String> {
    let row: JsonRow = serde_json::from_str(text).map_err(|e| {
        let e = e.to_string();
        if e.contains("unknown field") {
            e
        } else {
            format!("not a JSON object with a url ({e}): {}", snippet(text))
        }
    })?;
    let url = row
        .url
        .filter(|u| !u.trim().is_empty())
        .ok_or("the object has no url")?;
    let metadata = match row.metadata {
        None | Some(Value::Null) => None,
        // A JSON text in a string, as a CSV cell would hold it.
        Some(Value::String(s)) => {
            Some(metadata(serde_json::from_str(&s).map_err(|e| {
                format!("the metadata is not valid JSON ({e}): {}", snippet(&s))
            })?)?)
        }
        Some(v) => Some(metadata(v)?),
    };
    let require_signed_urls = match row.require_signed_urls {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(Value::String(s)) => Some(boolean(&s)?),
        Some(other) => {
            return Err(format!(
                "require_signed_urls must be true or false, not {other}"
            ));
        }
    };
    let empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Ok((
        url,
        options(
            empty(row.id),
            metadata,
            require_signed_urls,
            empty(row.creator),
        )?,
    ))
}

fn metadata(v: Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(map) => {
            crate::stamp::check_user_metadata(&map)
                .map_err(|why| format!("the metadata: {why}"))?;
            Ok(map)
        }
        other => Err(format!(
            "the metadata must be a JSON object, like {{\"k\": \"v\"}}, not {}",
            snippet(&other.to_string())
        )),
    }
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "require_signed_urls must be true or false, not {}",
            snippet(text)
        )),
    }
}

fn options(
    id: Option<String>,
    metadata: Option<Map<String, Value>>,
    require_signed_urls: Option<bool>,
    creator: Option<String>,
) -> Result<ItemOptions, String> {
    if let Some(c) = &creator
        && c.chars().count() > crate::rules::MAX_CREATOR_CHARS
    {
        return Err(format!(
            "the creator is longer than {} characters",
            crate::rules::MAX_CREATOR_CHARS
        ));
    }
    Ok(ItemOptions {
        id,
        metadata,
        require_signed_urls,
        creator,
    })
}

/// One attempt of a URL's download, as a [`Retrier`] runs it.
pub type Attempt<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Body>> + Send + 'a>>;

/// Tries a URL's download again after a transient failure, with the crate's backoff. The
/// command hands it in, so that a source never reaches the transport (which reads `config`,
/// which composes the sources' settings).
pub trait Retrier: Send + Sync + std::fmt::Debug {
    /// Runs `attempt` until it succeeds, fails for good or the attempts are spent.
    fn run<'a>(&'a self, attempt: &'a (dyn Fn() -> Attempt<'a> + Send + Sync)) -> Attempt<'a>;
}

/// Downloads URL items into temporary files (local mode).
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    /// `None`: one attempt, and the next run tries again.
    retry: Option<Arc<dyn Retrier>>,
    bounds: Bounds,
}

impl Fetcher {
    /// A client with timeouts and a bounded number of redirects, over http(s) only.
    pub fn new(retry: Option<Arc<dyn Retrier>>, bounds: Bounds) -> Result<Fetcher> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if !matches!(attempt.url().scheme(), "http" | "https") {
                let scheme = attempt.url().scheme().to_string();
                attempt.error(format!("a redirect to a {scheme}: URL"))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("cfimg/", env!("CARGO_PKG_VERSION")))
            .redirect(redirects)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(vec![format!("cannot build the download client: {e}")]))?;
        Ok(Fetcher {
            client,
            retry,
            bounds,
        })
    }

    /// Downloads a URL, retrying transient failures a few times with backoff.
    pub async fn fetch(&self, url: &str) -> Result<Body> {
        let attempts = AtomicU32::new(0);
        let attempt = || -> Attempt<'_> {
            attempts.fetch_add(1, Ordering::Relaxed);
            Box::pin(self.fetch_once(url))
        };
        let result = match &self.retry {
            Some(retry) => retry.run(&attempt).await,
            None => attempt().await,
        };
        match result {
            Err(Error::Origin {
                url,
                reason,
                retryable: true,
            }) => Err(Error::Origin {
                url,
                reason: format!(
                    "{reason} (after {} attempts; the next run tries again)",
                    attempts.load(Ordering::Relaxed)
                ),
                retryable: true,
            }),
            other => other,
        }
    }

    async fn fetch_once(&self, url: &str) -> Result<Body> {
        let deadline = tokio::time::Instant::now() + self.bounds.deadline;
        let resp = match tokio::time::timeout_at(deadline, self.client.get(url).send()).await {
            Ok(sent) => sent.map_err(|e| transport(url, &e))?,
            Err(_) => {
                return Err(Error::DownloadTooSlow {
                    what: url.to_string(),
                    reason: format!(
                        "no answer within {} s (download.deadline_secs)",
                        self.bounds.deadline.as_secs_f64()
                    ),
                });
            }
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Origin {
                url: url.to_string(),
                reason: format!("the origin answered {status}"),
                retryable: status.is_server_error() || matches!(status.as_u16(), 408 | 429),
            });
        }
        if let Some(len) = resp.content_length()
            && len > MAX_FILE_BYTES
        {
            return Err(too_large(url, len));
        }
        crate::download::spool(
            "cfimg-fetch-",
            resp.bytes_stream(),
            self.bounds,
            deadline,
            MAX_FILE_BYTES,
            url,
            |e| transport(url, &e),
            |n| too_large(url, n),
        )
        .await
    }
}

fn too_large(url: &str, bytes: u64) -> Error {
    Error::Origin {
        url: url.to_string(),
        reason: format!(
            "the origin sent more than {MAX_FILE_BYTES} bytes ({bytes} so far); Cloudflare Images accepts at most 10 MB"
        ),
        retryable: false,
    }
}

/// A failure to talk to the origin: transient unless it is about redirects.
fn transport(url: &str, e: &reqwest::Error) -> Error {
    let mut causes = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if causes.last() != Some(&text) {
            causes.push(text);
        }
        cause = c.source();
    }
    let why = if e.is_timeout() {
        "the origin timed out".to_string()
    } else if e.is_redirect() {
        "the origin redirected too often or elsewhere than http(s)".to_string()
    } else if e.is_connect() {
        "cannot connect to the origin".to_string()
    } else if e.is_body() || e.is_decode() {
        "the origin's answer broke off".to_string()
    } else {
        "the request to the origin failed".to_string()
    };
    let reason = if causes.is_empty() {
        why
    } else {
        format!("{why}: {}", causes.join(": "))
    };
    Error::Origin {
        url: url.to_string(),
        reason,
        retryable: !e.is_redirect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, format: ManifestFormat) -> Vec<String> {
        let mut rows = Rows::new(text.as_bytes(), format).unwrap();
        let mut out = Vec::new();
        while let Some(f) = rows.next_found().unwrap() {
            out.push(match f {
                Found::Item(i) => {
                    assert_eq!(i.locator, Locator::Url(i.key.clone()));
                    assert!(i.fingerprint.is_none());
                    if i.options.is_empty() {
                        i.key
                    } else {
                        format!("{} {:?}", i.key, i.options)
                    }
                }
                Found::Bad { key, reason } => {
                    assert!(key.starts_with(BAD_LINE_PREFIX), "{key}");
                    format!("BAD {reason}")
                }
                Found::Ignored { key, reason } => format!("IGNORED {key}: {reason}"),
                Found::Gone { key, .. } => format!("GONE {key}"),
            });
        }
        out
    }

    #[test]
    fn urls_are_normalized() {
        for (raw, want) in [
            (
                "HTTP://Example.COM:80/a/B.png",
                "http://example.com/a/B.png",
            ),
            (
                "https://example.com:443/x.png#frag",
                "https://example.com/x.png",
            ),
            (
                "https://example.com:8443/x.png?w=1&h=2",
                "https://example.com:8443/x.png?w=1&h=2",
            ),
            (
                "https://example.com/a b.png?",
                "https://example.com/a%20b.png",
            ),
            (
                "  https://example.com/./a/../b.png  ",
                "https://example.com/b.png",
            ),
            ("https://example.com", "https://example.com/"),
        ] {
            assert_eq!(normalize_url(raw).as_deref(), Ok(want), "{raw}");
        }
        for (raw, why) in [
            ("example.com/a.png", "not a URL"),
            ("ftp://example.com/a.png", "not an http(s) URL"),
            ("file:///etc/passwd", "not an http(s) URL"),
            ("http://", "not a URL"),
        ] {
            let err = normalize_url(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn text_skips_comments_and_blank_lines_and_names_bad_lines() {
        let text = "\u{feff}# images\nhttps://a.example/1.png\n\n   \n  # indented comment\nnot a url\r\nHTTPS://A.EXAMPLE:443/1.png#x\nftp://a.example/2.png\nhttps://a.example/3.png";
        assert_eq!(
            all(text, ManifestFormat::Text),
            [
                "https://a.example/1.png",
                "BAD line 6: not a URL (relative URL without a base): \"not a url\"",
                "IGNORED line 7: a duplicate of line 2: https://a.example/1.png is listed already",
                "BAD line 8: not an http(s) URL (the scheme is \"ftp\"): \"ftp://a.example/2.png\"",
                "https://a.example/3.png",
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_bad_and_the_next_one_is_read() {
        let text = format!(
            "https://a.example/1.png\nhttps://a.example/{}.png\nhttps://a.example/2.png\n",
            "x".repeat(MAX_LINE_BYTES * 3)
        );
        let rows = all(&text, ManifestFormat::Text);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(
            rows[1].starts_with("BAD line 2: the line is longer"),
            "{rows:?}"
        );
        assert_eq!(rows[2], "https://a.example/2.png");
        let bytes = b"https://a.example/\xff.png\nhttps://a.example/ok.png\n";
        let mut r = Rows::new(&bytes[..], ManifestFormat::Text).unwrap();
        assert!(
            matches!(r.next_found().unwrap(), Some(Found::Bad { key, reason }) if key.starts_with(BAD_LINE_PREFIX) && reason.starts_with("line 1:") && reason.contains("UTF-8"))
        );
        assert!(matches!(r.next_found().unwrap(), Some(Found::Item(_))));
    }

    #[test]
    fn csv_reads_its_columns_and_reports_bad_rows_with_their_line() {
        let text = "URL,id,metadata,require_signed_urls,creator\n\
                    https://a.example/1.png,,,,\n\
                    https://a.example/2.png,legacy/two.png,\"{\"\"k\"\":\"\"v\"\"}\",false,alice\n\
                    \n\
                    \r\n\
                    ,, ,,\n\
                    https://a.example/3.png,,\"{bad\",,\r\n\
                    https://a.example/4.png,,\"[1,2]\",,\n\
                    https://a.example/5.png,,,yes,\n\
                    https://a.example/6.png,,,TRUE,\n\
                    https://a.example/7.png,only-two-fields\n\
                    \"https://a.example/8.png\",\"multi\nline\",,,\n\
                    not-a-url,,,,\n\
                    ,,,,\n\
                    ,id-only,,,\n";
        let rows = all(text, ManifestFormat::Csv);
        let want_2 = ItemOptions {
            id: Some("legacy/two.png".into()),
            metadata: Some(serde_json::from_str(r#"{"k":"v"}"#).unwrap()),
            require_signed_urls: Some(false),
            creator: Some("alice".into()),
        };
        let want_6 = ItemOptions {
            require_signed_urls: Some(true),
            ..ItemOptions::default()
        };
        let want_8 = ItemOptions {
            id: Some("multi\nline".into()),
            ..ItemOptions::default()
        };
        assert_eq!(rows[0], "https://a.example/1.png");
        assert_eq!(rows[1], format!("https://a.example/2.png {want_2:?}"));
        assert!(
            rows[2].starts_with("BAD line 7: the metadata is not valid JSON"),
            "{}",
            rows[2]
        );
        assert!(
            rows[3].starts_with("BAD line 8: the metadata must be a JSON object"),
            "{}",
            rows[3]
        );
        assert!(
            rows[4].starts_with("BAD line 9: require_signed_urls must be true or false"),
            "{}",
            rows[4]
        );
        assert_eq!(rows[5], format!("https://a.example/6.png {want_6:?}"));
        assert_eq!(
            rows[6],
            "BAD line 11: the row has 2 fields and the header 5"
        );
        assert_eq!(rows[7], format!("https://a.example/8.png {want_8:?}"));
        assert!(rows[8].starts_with("BAD line 14: not a URL"), "{}", rows[8]);
        assert_eq!(rows[9], "BAD line 16: the url field is empty");
        assert_eq!(rows.len(), 10, "{rows:#?}");
    }

    #[test]
    fn a_csv_header_with_unknown_or_missing_columns_is_refused_at_once() {
        let err = |text: &str| match Rows::new(text.as_bytes(), ManifestFormat::Csv) {
            Err(Error::Config(p)) => p.join("\n"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {text:?}"),
        };
        let e = err("url,title,colour\nhttps://a.example/1.png,x,y\n");
        assert!(e.contains("\"title\"") && e.contains("\"colour\""), "{e}");
        assert!(err("id,metadata\nx,{}\n").contains("no url column"));
        assert!(err("url,url\n").contains("twice"));
        assert!(err("").contains("empty"));
        // A BOM from a spreadsheet export is not part of the first name.
        assert_eq!(
            all(
                "\u{feff}url\nhttps://a.example/1.png\n",
                ManifestFormat::Csv
            ),
            ["https://a.example/1.png"]
        );
    }

    #[test]
    fn json_lines_read_the_same_fields() {
        let text = r#"{"url": "https://a.example/1.png"}
{"url": "https://a.example/2.png", "id": "two.png", "metadata": {"k": 1}, "require_signed_urls": false, "creator": "bob"}

{"url": "https://a.example/3.png", "metadata": "{\"s\": true}", "require_signed_urls": "true"}
{"url": "https://a.example/4.png", "metadata": [1]}
{"url": "https://a.example/5.png", "colour": "red"}
{"url": "https://a.example/6.png", "require_signed_urls": 1}
not json
{"id": "x"}
{"url": "https://a.example/1.png#again"}
"#;
        let rows = all(text, ManifestFormat::Jsonl);
        let want_2 = ItemOptions {
            id: Some("two.png".into()),
            metadata: Some(serde_json::from_str(r#"{"k":1}"#).unwrap()),
            require_signed_urls: Some(false),
            creator: Some("bob".into()),
        };
        let want_3 = ItemOptions {
            metadata: Some(serde_json::from_str(r#"{"s":true}"#).unwrap()),
            require_signed_urls: Some(true),
            ..ItemOptions::default()
        };
        assert_eq!(rows[0], "https://a.example/1.png");
        assert_eq!(rows[1], format!("https://a.example/2.png {want_2:?}"));
        assert_eq!(rows[2], format!("https://a.example/3.png {want_3:?}"));
        assert!(
            rows[3].starts_with("BAD line 5: the metadata must be a JSON object"),
            "{}",
            rows[3]
        );
        assert!(
            rows[4].starts_with("BAD line 6: unknown field `colour`"),
            "{}",
            rows[4]
        );
        assert!(
            rows[5].starts_with("BAD line 7: require_signed_urls must be"),
            "{}",
            rows[5]
        );
        assert!(
            rows[6].starts_with("BAD line 8: not a JSON object"),
            "{}",
            rows[6]
        );
        assert_eq!(rows[7], "BAD line 9: the object has no url");
        assert!(
            rows[8].starts_with("IGNORED line 10: a duplicate of line 1"),
            "{}",
            rows[8]
        );
        assert_eq!(rows.len(), 9, "{rows:#?}");
    }

    #[test]
    fn the_format_comes_from_the_extension_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("list.CSV");
        std::fs::write(&p, "url,extra\n").unwrap();
        let err = Manifest::new(&p, None, UrlMode::Remote, None, Bounds::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"extra\"") && err.contains("list.CSV"),
            "{err}"
        );
        let m = Manifest::new(
            &p,
            Some(ManifestFormat::Text),
            UrlMode::Remote,
            None,
            Bounds::default(),
        )
        .unwrap();
        assert_eq!(m.format, ManifestFormat::Text);
        assert_eq!(m.id().kind, SourceKind::Manifest);
        assert_eq!(
            m.id().location,
            std::fs::canonicalize(&p).unwrap().to_str().unwrap()
        );
        let p = dir.path().join("list.dat");
        std::fs::write(&p, "").unwrap();
        let err = Manifest::new(&p, None, UrlMode::Remote, None, Bounds::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--manifest-format"), "{err}");
        let stdin = Manifest::new(
            Path::new("-"),
            None,
            UrlMode::Local,
            None,
            Bounds::default(),
        )
        .unwrap();
        assert_eq!(stdin.id().location, "stdin");
        assert_eq!(stdin.format, ManifestFormat::Text);
        assert!(
            Manifest::new(
                &dir.path().join("missing.txt"),
                None,
                UrlMode::Remote,
                None,
                Bounds::default()
            )
            .is_err()
        );
    }
}
