//! JSON for a Cloudflare Worker with KV: the array `wrangler kv bulk put` takes, one
//! `{"key", "value", "metadata": {"status"}}` per old URL. The key is the lower-case host
//! plus the decoded path (`url.hostname + decodeURIComponent(url.pathname)` in the Worker);
//! a KV key is at most 512 bytes.

use std::io::Write;

use serde_json::json;

use super::{Entry, Format, KeyFn, Keyed};
use crate::error::Result;

/// Longest KV key.
const MAX_KEY: usize = 512;

/// The JSON writer.
#[derive(Debug)]
pub struct Json {
    status: u16,
    first: bool,
}

impl Json {
    /// A writer of redirects with this status.
    pub fn new(status: u16) -> Json {
        Json {
            status,
            first: true,
        }
    }
}

fn key(e: &Entry<'_>) -> Keyed {
    if e.has_query {
        return Err("has a query string (the Worker looks up the path only)");
    }
    let k = format!("{}{}", e.host, e.decoded);
    if k.len() > MAX_KEY {
        return Err("is longer than a Workers KV key (512 bytes)");
    }
    Ok(k)
}

impl Format for Json {
    fn keyer(&self) -> KeyFn {
        key
    }

    fn begin(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        write!(out, "[")
    }

    fn entry(&mut self, out: &mut dyn Write, e: &Entry<'_>, key: &str) -> std::io::Result<()> {
        if !self.first {
            write!(out, ",")?;
        }
        self.first = false;
        let v = json!({"key": key, "value": e.mapped.delivery_url, "metadata": {"status": self.status}});
        write!(out, "\n{v}")
    }

    fn end(&mut self, out: &mut dyn Write) -> Result<()> {
        writeln!(out, "\n]").map_err(super::write_err)
    }
}
