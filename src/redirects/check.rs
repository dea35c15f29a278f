//! `cfimg redirects check`: HEAD every old URL (or a sample) with bounded concurrency and
//! rate, and report each that does not answer a redirect to its recorded delivery URL.
//! The ledger is walked on a thread of its own, which feeds the requests through a small
//! channel: a million old URLs are checked in flat memory (a sample of N holds N).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use super::{Entry, Keyed, walk};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::old_url::OldBases;

/// Which old URLs are checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Every one.
    All,
    /// This many, picked at random.
    Count(u64),
    /// This share (0..=1) of them, each picked at random.
    Share(f64),
}

impl Sample {
    /// `N` or `PCT%`.
    pub fn parse(s: &str) -> Result<Sample> {
        let bad = || {
            Error::Usage(format!(
                "--sample {s:?}: give a number of old URLs (1000) or a share of them (5%)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Sample::Share(p / 100.0));
        }
        let n: u64 = s.trim().parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(Sample::Count(n))
    }
}

/// How the check runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Send the requests here (scheme and authority) with the old URL's Host header.
    pub host: Option<reqwest::Url>,
    /// Which old URLs.
    pub sample: Sample,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per second at most (0: no limit).
    pub rate: f64,
    /// Per request.
    pub timeout: Duration,
}

/// One old URL that does not redirect where it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The old URL.
    pub old_url: String,
    /// Its delivery URL.
    pub want: String,
    /// What it answered.
    pub got: String,
}

/// Old URLs checked, and how many redirect as they should.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Requested.
    pub checked: u64,
    /// Answered a redirect to their delivery URL.
    pub ok: u64,
    /// Did not.
    pub failed: u64,
}

fn key(e: &Entry<'_>) -> Keyed {
    Ok(e.old_url.to_string())
}

/// `--host`: an http(s) URL whose scheme and authority receive the requests.
pub fn parse_host(s: &str) -> Result<reqwest::Url> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        Error::Usage(format!(
            "--host {s:?} is not a URL ({e}): give where to send the requests, e.g. http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::Usage(format!(
            "--host {s:?}: give an http or https address, e.g. http://127.0.0.1:8080"
        )));
    }
    Ok(url)
}

/// The request URL and Host header for an old URL (unchanged without `--host`).
fn target(old: &str, host: Option<&reqwest::Url>) -> Option<(reqwest::Url, Option<String>)> {
    let url = reqwest::Url::parse(old).ok()?;
    let Some(h) = host else {
        return Some((url, None));
    };
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str()?),
        None => url.host_str()?.to_string(),
    };
    let mut to = h.clone();
    to.set_path(url.path());
    to.set_query(url.query());
    Some((to, Some(authority)))
}

/// Walks the ledger on its own thread and sends (old URL, delivery URL) pairs, sampled.
fn feed(
    ledger_path: PathBuf,
    bases: OldBases,
    source: Option<i64>,
    variant: Option<String>,
    sample: Sample,
    tx: mpsc::Sender<(String, String)>,
) -> std::thread::JoinHandle<Result<u64>> {
    std::thread::spawn(move || {
        let ledger = Ledger::open_existing(&ledger_path)?;
        let mut reservoir: Vec<(String, String)> = Vec::new();
        let mut seen = 0u64;
        let mut stopped = false;
        walk(&ledger, &bases, source, variant.as_deref(), key, |e, _| {
            let pair = (e.old_url.to_string(), e.mapped.delivery_url.clone());
            seen += 1;
            match sample {
                Sample::All => {
                    if !stopped && tx.blocking_send(pair).is_err() {
                        stopped = true;
                    }
                }
                Sample::Share(p) => {
                    if !stopped && fastrand::f64() < p && tx.blocking_send(pair).is_err() {
                        stopped = true;
                    }
                }
                Sample::Count(n) => {
                    if (reservoir.len() as u64) < n {
                        reservoir.push(pair);
                    } else {
                        let j = fastrand::u64(0..seen);
                        if j < n {
                            reservoir[j as usize] = pair;
                        }
                    }
                }
            }
            Ok(())
        })?;
        for pair in reservoir {
            if tx.blocking_send(pair).is_err() {
                break;
            }
        }
        Ok(seen)
    })
}

/// Checks the old URLs; `report` is called with each failure as it is found.
pub async fn run(
    ledger_path: PathBuf,
    bases: OldBases,
    source: Option<i64>,
    variant: Option<String>,
    opts: CheckOptions,
    report: impl FnMut(&Failure) + Send + 'static,
) -> Result<Checked> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout)
        .user_agent(concat!(
            "cfimg/",
            env!("CARGO_PKG_VERSION"),
            " (redirects check)"
        ))
        .build()
        .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
    let (tx, rx) = mpsc::channel::<(String, String)>(opts.concurrency.max(1) * 4);
    let feeder = feed(ledger_path, bases, source, variant, opts.sample, tx);
    let rx = Arc::new(Mutex::new(rx));
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    let counts = Arc::new(std::sync::Mutex::new(Checked::default()));
    let report = Arc::new(std::sync::Mutex::new(report));
    let gap = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (rx, client, next_slot, counts, report, host) = (
            rx.clone(),
            client.clone(),
            next_slot.clone(),
            counts.clone(),
            report.clone(),
            opts.host.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some((old, want)) = rx.lock().await.recv().await else {
                    break;
                };
                if let Some(gap) = gap {
                    let slot = {
                        let mut next = next_slot.lock().await;
                        let slot = (*next).max(Instant::now());
                        *next = slot + gap;
                        slot
                    };
                    tokio::time::sleep_until(slot.into()).await;
                }
                let got = head(&client, &old, host.as_ref()).await;
                let ok = matches!(&got, Ok((s, Some(loc))) if is_redirect(*s) && *loc == want);
                let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                c.checked += 1;
                if ok {
                    c.ok += 1;
                } else {
                    c.failed += 1;
                    drop(c);
                    let got = match got {
                        Ok((s, Some(loc))) => format!("{s} to {loc}"),
                        Ok((s, None)) => format!("{s} with no Location"),
                        Err(e) => e,
                    };
                    let f = Failure {
                        old_url: old,
                        want,
                        got,
                    };
                    (report.lock().unwrap_or_else(|p| p.into_inner()))(&f);
                }
            }
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| Error::Usage(format!("a check worker stopped: {e}")))?;
    }
    feeder
        .join()
        .map_err(|_| Error::Usage("the ledger walk stopped unexpectedly".into()))??;
    let c = *counts.lock().unwrap_or_else(|p| p.into_inner());
    Ok(c)
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// (status, Location) of a HEAD request, or what went wrong.
async fn head(
    client: &reqwest::Client,
    old: &str,
    host: Option<&reqwest::Url>,
) -> std::result::Result<(u16, Option<String>), String> {
    let Some((url, host_header)) = target(old, host) else {
        return Err("not a URL that can be requested".into());
    };
    let mut req = client.head(url);
    if let Some(h) = host_header {
        req = req.header(reqwest::header::HOST, h);
    }
    let resp = req.send().await.map_err(|e| format!("no answer ({e})"))?;
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), loc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse() {
        assert_eq!(Sample::parse("100").unwrap(), Sample::Count(100));
        assert_eq!(Sample::parse("5%").unwrap(), Sample::Share(0.05));
        for bad in ["0", "0%", "101%", "x", "-1"] {
            assert!(Sample::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_override_keeps_the_path_and_sends_the_old_host() {
        let h = parse_host("127.0.0.1:8080").unwrap();
        let (url, header) = target("https://www.example.com/up/a%20b.jpg?x=1", Some(&h)).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/up/a%20b.jpg?x=1");
        assert_eq!(header.as_deref(), Some("www.example.com"));
        assert!(parse_host("ftp://x").is_err());
    }
}
