//! Run counters, the live progress display (a bar with ETA on a terminal, a log line every
//! few seconds otherwise) and the end-of-run summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::ledger::RunCounts;
use crate::transport::Traffic;

/// Counters shared by every stage of a run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Items the source produced.
    pub discovered: AtomicU64,
    /// Unchanged items skipped.
    pub skipped: AtomicU64,
    /// Images uploaded.
    pub uploaded: AtomicU64,
    /// Of those, replacements.
    pub replaced: AtomicU64,
    /// Items pointed at an existing image with the same content.
    pub deduplicated: AtomicU64,
    /// Items whose retries ran out in this run.
    pub failed: AtomicU64,
    /// Items rejected in this run.
    pub rejected: AtomicU64,
    /// Entries passed over with a reason (symlinks not followed, FIFOs, ...).
    pub ignored: AtomicU64,
    /// Of the entries passed over, hidden and temporary files and hidden folders (counted
    /// in `ignored` too).
    pub hidden_or_temporary: AtomicU64,
    /// Images whose settings were updated in place.
    pub updated: AtomicU64,
    /// Duplicates deleted after ambiguous answers.
    pub duplicates_deleted: AtomicU64,
    /// Items still failed from an earlier run, not retried.
    pub failed_earlier: AtomicU64,
    /// Items still rejected from an earlier run (unchanged).
    pub rejected_earlier: AtomicU64,
    /// Bytes uploaded.
    pub bytes: AtomicU64,
    /// Dry run: uploads that would happen.
    pub would_upload: AtomicU64,
    /// Dry run: bytes that would be uploaded.
    pub would_upload_bytes: AtomicU64,
    /// Images deleted because their file left a watched folder.
    pub removed: AtomicU64,
    /// When the last upload succeeded (seconds since the epoch; 0: none yet).
    pub last_upload_unix: AtomicU64,
    /// Since when items have been failing without an upload succeeding (0: they are not).
    pub failing_since_unix: AtomicU64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Stats {
    /// Counts an upload.
    pub fn uploaded(&self, bytes: u64, replaced: bool) {
        self.last_upload_unix.store(unix_now(), Ordering::Relaxed);
        self.failing_since_unix.store(0, Ordering::Relaxed);
        add(&self.uploaded, 1);
        add(&self.bytes, bytes);
        if replaced {
            add(&self.replaced, 1);
        }
    }

    /// Counts a failure or a rejection.
    pub fn failed(&self, rejected: bool) {
        if !rejected {
            let _ = self.failing_since_unix.compare_exchange(
                0,
                unix_now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        add(
            if rejected {
                &self.rejected
            } else {
                &self.failed
            },
            1,
        );
    }

    /// Counts an increment of any counter.
    pub fn bump(counter: &AtomicU64) {
        add(counter, 1);
    }

    /// Items finished one way or another.
    pub fn finished(&self) -> u64 {
        get(&self.skipped)
            + get(&self.uploaded)
            + get(&self.deduplicated)
            + get(&self.failed)
            + get(&self.rejected)
            + get(&self.failed_earlier)
            + get(&self.rejected_earlier)
            + get(&self.would_upload)
            + get(&self.ignored)
            + get(&self.updated)
    }

    /// The counters as the ledger stores them and the summary shows them.
    pub fn counts(&self, traffic: &Traffic) -> RunCounts {
        RunCounts {
            uploaded: get(&self.uploaded),
            replaced: get(&self.replaced),
            updated: get(&self.updated),
            deduplicated: get(&self.deduplicated),
            skipped: get(&self.skipped),
            failed: get(&self.failed),
            rejected: get(&self.rejected),
            failed_earlier: get(&self.failed_earlier),
            rejected_earlier: get(&self.rejected_earlier),
            ignored: get(&self.ignored),
            duplicates_deleted: get(&self.duplicates_deleted),
            bytes: get(&self.bytes),
            requests: traffic.requests(),
            throttled: traffic.throttled(),
        }
    }
}

/// The end-of-run summary (printed, or emitted as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How the run ended: `done`, `incomplete` (failed or rejected items), `interrupted`, `fatal`.
    pub outcome: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Items the source produced.
    pub discovered: u64,
    /// The run's counters.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Uploads per second.
    pub files_per_sec: f64,
    /// Megabytes (10^6) uploaded per second.
    pub mb_per_sec: f64,
    /// Requests to the API host (`requests` is both hosts).
    pub api_requests: u64,
    /// 429s from the API host (`throttled` is both hosts).
    pub api_throttled: u64,
    /// Requests to the batch host.
    pub batch_requests: u64,
    /// 429s from the batch host.
    pub batch_throttled: u64,
    /// Batch tokens fetched: API-host requests spent on tokens (counted in `api_requests`).
    pub token_requests: u64,
    /// Requests per second to the batch host over the run.
    pub batch_req_per_sec: f64,
    /// Hidden and temporary files (and hidden folders) skipped, counted in `ignored`.
    pub hidden_or_temporary: u64,
    /// Dry run: uploads that would happen.
    pub would_upload: u64,
    /// Dry run: bytes they would send.
    pub would_upload_bytes: u64,
    /// Dry run: time the configured rate implies for them, seconds.
    pub estimated_secs: f64,
    /// The ledger file.
    pub ledger: String,
    /// Set when the configured rate is above the account's average (the dry run's
    /// estimate then uses that average, the fastest a run can go).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_warning: Option<String>,
}

impl Summary {
    /// Builds the summary of a run.
    pub fn new(
        stats: &Stats,
        traffic: &Traffic,
        elapsed: Duration,
        dry_run: bool,
        rate: f64,
        ledger: String,
    ) -> Summary {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let counts = stats.counts(traffic);
        let would_upload = get(&stats.would_upload);
        // Rejects of unchanged files were this run's news an earlier time: reminded, not counted.
        let problems = counts.failed + counts.rejected + counts.failed_earlier;
        Summary {
            outcome: if problems > 0 { "incomplete" } else { "done" }.to_string(),
            dry_run,
            discovered: get(&stats.discovered),
            hidden_or_temporary: get(&stats.hidden_or_temporary),
            files_per_sec: counts.uploaded as f64 / secs,
            mb_per_sec: counts.bytes as f64 / 1e6 / secs,
            api_requests: traffic.api.requests(),
            api_throttled: traffic.api.throttled_count(),
            batch_requests: traffic.batch_requests(),
            batch_throttled: traffic.batch_throttled(),
            token_requests: traffic.token_requests(),
            batch_req_per_sec: traffic.batch_requests() as f64 / secs,
            counts,
            elapsed_secs: secs,
            would_upload,
            would_upload_bytes: get(&stats.would_upload_bytes),
            estimated_secs: would_upload as f64 / rate,
            ledger,
            rate_warning: None,
        }
    }

    /// Whether some item did not make it in this run (exit 1). Items rejected by an earlier
    /// run and unchanged since are only reminded of: they would fail every rerun for good.
    pub fn has_problems(&self) -> bool {
        let c = &self.counts;
        c.failed + c.rejected + c.failed_earlier > 0
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.headline(&mut out);
        self.hosts(&mut out);
        self.passed_over(&mut out);
        self.reminders(&mut out);
        out
    }

    /// The first line: what the run did (or a dry run would do), and how fast.
    fn headline(&self, out: &mut String) {
        if self.dry_run {
            out.push_str(&format!(
                "dry run: {} to upload ({}), {} unchanged, {} rejected; at the configured rate that takes about {}\n",
                self.would_upload,
                human_bytes(self.would_upload_bytes),
                self.counts.skipped,
                self.counts.rejected + self.counts.rejected_earlier,
                human_duration(self.estimated_secs),
            ));
            if let Some(w) = &self.rate_warning {
                out.push_str(&format!(
                    "warning: {w} (the estimate counts at most 4 uploads a second on the API host)\n"
                ));
            }
        } else {
            out.push_str(&format!(
                "{}: {} uploaded ({} replaced), {} unchanged, {} deduplicated, {} failed, {} rejected; {} in {} ({:.1} files/s, {:.2} MB/s); {}, {} rate-limited\n",
                // A fatal outcome carries its error, which the command prints on its own.
                self.outcome.split(':').next().unwrap_or_default(),
                self.counts.uploaded,
                self.counts.replaced,
                self.counts.skipped,
                self.counts.deduplicated,
                self.counts.failed + self.counts.failed_earlier,
                self.counts.rejected + self.counts.rejected_earlier,
                human_bytes(self.counts.bytes),
                human_duration(self.elapsed_secs),
                self.files_per_sec,
                self.mb_per_sec,
                plural(self.counts.requests, "request", "requests"),
                self.counts.throttled,
            ));
        }
    }

    /// Requests per host, when the batch host was used.
    fn hosts(&self, out: &mut String) {
        if !self.dry_run && (self.batch_requests > 0 || self.token_requests > 0) {
            out.push_str(&format!(
                "API host: {} ({} for batch tokens), {} rate-limited; batch host: {} ({:.1}/s), {} rate-limited\n",
                plural(self.api_requests, "request", "requests"),
                self.token_requests,
                self.api_throttled,
                plural(self.batch_requests, "request", "requests"),
                self.batch_req_per_sec,
                self.batch_throttled,
            ));
        }
    }

    /// Entries the listing passed over, and where to see them.
    fn passed_over(&self, out: &mut String) {
        // A dry run records nothing, so no command can show its entries later.
        let listed_by = |what: &str| {
            if self.dry_run {
                "(their names are in the log above)".to_string()
            } else {
                format!(
                    "(list them with: cfimg failures --all --ledger {}){what}",
                    self.ledger
                )
            }
        };
        if self.hidden_or_temporary > 0 {
            out.push_str(&format!(
                "skipped: {} {}\n",
                plural(
                    self.hidden_or_temporary,
                    "hidden or temporary file",
                    "hidden or temporary files"
                ),
                listed_by("; --include-hidden takes hidden ones")
            ));
        }
        let other_ignored = self.counts.ignored.saturating_sub(self.hidden_or_temporary);
        if other_ignored > 0 {
            out.push_str(&format!(
                "passed over: {} (symlinks not followed, FIFOs, sockets, folder placeholders, ...) {}\n",
                plural(other_ignored, "entry", "entries"),
                listed_by("")
            ));
        }
    }

    /// Duplicates cleaned up, items left from earlier runs, and where to see why.
    fn reminders(&self, out: &mut String) {
        if self.counts.duplicates_deleted > 0 {
            out.push_str(&format!(
                "{} left by ambiguous answers {} deleted\n",
                plural(self.counts.duplicates_deleted, "duplicate", "duplicates"),
                if self.counts.duplicates_deleted == 1 {
                    "was"
                } else {
                    "were"
                }
            ));
        }
        if self.counts.failed_earlier > 0 {
            out.push_str(&format!(
                "{} in an earlier run and {} not retried: rerun with --retry-failed\n",
                plural(self.counts.failed_earlier, "item failed", "items failed"),
                if self.counts.failed_earlier == 1 {
                    "was"
                } else {
                    "were"
                }
            ));
        }
        if self.counts.rejected_earlier > 0 {
            let n = self.counts.rejected_earlier;
            let items = if n == 1 { "item" } else { "items" };
            out.push_str(&format!("{n} {items} rejected earlier (cfimg failures)\n"));
        }
        if self.has_problems() {
            if self.dry_run {
                out.push_str("the dry run recorded nothing: the reasons are in the log above\n");
            } else {
                out.push_str(&format!(
                    "see why with: cfimg failures --ledger {}\n",
                    self.ledger
                ));
            }
        }
    }
}

/// A count with its noun: `1 request`, `2 requests`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes in SI units.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Seconds as `1h02m03s`, `2m03s` or `4.5s`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else {
        format!("{m}m{sec:02}s")
    }
}

/// The bar on screen, if any, so that log lines can be printed above it instead of
/// through it.
static ACTIVE_BAR: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// Where log lines go: stderr, with the progress bar lifted out of the way while they print.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Requests per second per host since the last look (and per token, in the debug log).
struct Rates {
    at: Instant,
    api: u64,
    batch: Vec<u64>,
}

impl Rates {
    fn new(t: &Traffic) -> Rates {
        Rates {
            at: Instant::now(),
            api: t.api.requests(),
            batch: t.batch.iter().map(|l| l.requests()).collect(),
        }
    }

    /// `, api 3.4 req/s, batch 580.1 req/s (12 429)` when there are batch lanes.
    fn line(&mut self, t: &Traffic) -> Option<String> {
        if t.batch.is_empty() {
            return None;
        }
        let now = Rates::new(t);
        let secs = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let api = (now.api - self.api) as f64 / secs;
        let per_token: Vec<f64> = now
            .batch
            .iter()
            .zip(&self.batch)
            .map(|(n, b)| (n - b) as f64 / secs)
            .collect();
        for (i, (rate, l)) in per_token.iter().zip(&t.batch).enumerate() {
            tracing::debug!(
                lane = i,
                req_per_sec = format!("{rate:.1}"),
                requests = l.requests(),
                throttled = l.throttled_count(),
                "batch token"
            );
        }
        *self = now;
        Some(format!(
            ", api {api:.1} req/s, batch {:.1} req/s ({} 429)",
            per_token.iter().sum::<f64>(),
            t.batch_throttled()
        ))
    }
}

/// The live display of a run.
#[derive(Debug)]
pub struct Display {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Display {
    /// Starts the display: a bar when stderr is a terminal, else a log line every `every`.
    pub fn start(stats: Arc<Stats>, traffic: Traffic, every: Duration) -> Display {
        let started = Instant::now();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} files  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        if let (Some(bar), Ok(mut slot)) = (&bar, ACTIVE_BAR.lock()) {
            *slot = Some(bar.clone());
        }
        let task_bar = bar.clone();
        let task = tokio::spawn(async move {
            let tick = if task_bar.is_some() {
                Duration::from_millis(200)
            } else {
                every
            };
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            let limiter = traffic.api.clone();
            let mut rates = Rates::new(&traffic);
            loop {
                interval.tick().await;
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let bytes = get(&stats.bytes);
                let mut line = format!(
                    "{} up ({}), {} unchanged, {} failed, {} rejected, {:.1} MB/s, {} req, {} 429",
                    get(&stats.uploaded),
                    human_bytes(bytes),
                    get(&stats.skipped),
                    get(&stats.failed) + get(&stats.failed_earlier),
                    get(&stats.rejected) + get(&stats.rejected_earlier),
                    bytes as f64 / 1e6 / secs,
                    traffic.requests(),
                    traffic.throttled(),
                );
                if let Some(per_host) = rates.line(&traffic) {
                    line.push_str(&per_host);
                }
                // After 429s the limiter runs slower for a while; say so.
                if limiter.rate() < limiter.configured_rate() {
                    line.push_str(&format!(
                        ", rate {:.2}/s of {:.2}/s",
                        limiter.rate(),
                        limiter.configured_rate()
                    ));
                }
                match &task_bar {
                    Some(bar) => {
                        bar.set_length(get(&stats.discovered));
                        bar.set_position(stats.finished());
                        bar.set_message(line);
                    }
                    None => tracing::info!(
                        done = stats.finished(),
                        found = get(&stats.discovered),
                        "progress: {line}"
                    ),
                }
            }
        });
        Display { task, bar }
    }

    /// Stops the display and clears the bar.
    pub fn finish(self) {
        self.task.abort();
        if let Ok(mut slot) = ACTIVE_BAR.lock() {
            *slot = None;
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_duration(4.54), "4.5s");
        assert_eq!(human_duration(3723.0), "1h02m03s");
    }
}
