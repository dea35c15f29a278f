//! `cfimg export`: the ledger as CSV or JSON lines, one row per item, streamed from a
//! cursor (rows are written as they are read; nothing is collected).
//!
//! Columns, in this order (stable; new ones are only ever appended):
//! `source, key, state, sha256, image_id, url, uploaded_at, variant, variant_url_base,
//! size, last_error`. `url` is the recorded delivery URL (the `public` variant when there
//! is one); its last segment is the variant, and `variant_url_base` is the URL without it,
//! so the URL of any variant is `variant_url_base + "/" + name` (`cfimg variants list`
//! names them). Empty cells are empty strings in CSV and `null` in JSON.

use std::io::Write;

use serde::Serialize;

use super::EXIT_OK;
use super::ledger_views::ledger_path;
use crate::cli::{Cli, ExportArgs, ExportFormat};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Row, State};

/// The header row.
pub const COLUMNS: [&str; 11] = [
    "source",
    "key",
    "state",
    "sha256",
    "image_id",
    "url",
    "uploaded_at",
    "variant",
    "variant_url_base",
    "size",
    "last_error",
];

/// One exported row.
#[derive(Debug, Serialize)]
struct Out<'a> {
    source: &'a str,
    key: &'a str,
    state: State,
    sha256: Option<&'a str>,
    image_id: Option<&'a str>,
    url: Option<&'a str>,
    uploaded_at: Option<&'a str>,
    variant: Option<&'a str>,
    variant_url_base: Option<&'a str>,
    size: u64,
    last_error: Option<&'a str>,
}

impl<'a> Out<'a> {
    fn of(r: &'a Row) -> Out<'a> {
        let split = r.url.as_deref().and_then(|u| u.rsplit_once('/'));
        Out {
            source: &r.source,
            key: &r.key,
            state: r.state,
            sha256: r.sha256.as_deref(),
            image_id: r.image_id.as_deref(),
            url: r.url.as_deref(),
            uploaded_at: r.uploaded_at.as_deref(),
            variant: split.map(|(_, v)| v),
            variant_url_base: split.map(|(b, _)| b),
            size: r.size,
            last_error: r.last_error.as_deref(),
        }
    }

    fn state(&self) -> String {
        serde_json::to_value(self.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn write_err(e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: "the export's output".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes every row (of one source) to the output.
pub fn run(cli: &Cli, args: &ExportArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    let ledger = Ledger::open_existing(&path)?;
    let source_id = match &args.source {
        Some(s) => Some(ledger.find_source(s)?.ok_or_else(|| {
            Error::Usage(format!(
                "the ledger has no source {s}: `cfimg status` and `cfimg export` show the sources it has"
            ))
        })?),
        None => None,
    };
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, sink);
    let mut rows = 0u64;
    match args.format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(COLUMNS).map_err(write_err)?;
            ledger.for_each_row(source_id, |r| {
                let o = Out::of(r);
                let size = o.size.to_string();
                let state = o.state();
                w.write_record([
                    o.source,
                    o.key,
                    &state,
                    o.sha256.unwrap_or(""),
                    o.image_id.unwrap_or(""),
                    o.url.unwrap_or(""),
                    o.uploaded_at.unwrap_or(""),
                    o.variant.unwrap_or(""),
                    o.variant_url_base.unwrap_or(""),
                    &size,
                    o.last_error.unwrap_or(""),
                ])
                .map_err(write_err)?;
                rows += 1;
                Ok(())
            })?;
            w.flush().map_err(write_err)?;
        }
        ExportFormat::Jsonl => {
            ledger.for_each_row(source_id, |r| {
                serde_json::to_writer(&mut out, &Out::of(r)).map_err(write_err)?;
                out.write_all(b"\n").map_err(write_err)?;
                rows += 1;
                Ok(())
            })?;
        }
    }
    out.flush().map_err(write_err)?;
    if let Some(p) = &args.output {
        eprintln!(
            "cfimg: exported {} to {}",
            crate::progress::plural(rows, "row", "rows"),
            p.display()
        );
    }
    Ok(EXIT_OK)
}
