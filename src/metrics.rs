//! `--metrics-addr`: Prometheus metrics and a health endpoint for `watch` and `migrate`. The
//! figures are read from the run's own counters at scrape time (no second set of counters to
//! keep in step); the exposition is `prometheus-client`'s OpenMetrics, or the classic text
//! format for a client that does not ask for OpenMetrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::item::SourceId;
use crate::ledger::Ledger;
use crate::progress::Stats;
use crate::source::watch::WatchStatus;
use crate::transport::Traffic;

/// What the endpoint reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The run's counters.
    pub stats: Arc<Stats>,
    /// Request and 429 counters per host, once the transports exist.
    pub traffic: Arc<OnceLock<Traffic>>,
    /// The watch loop's gauges (`None` for a migration: the folder's gauges are left out).
    pub watch: Option<Arc<WatchStatus>>,
    /// The ledger (for the failed items waiting for a retry) and the source in it.
    pub ledger: PathBuf,
    /// The source being migrated or watched.
    pub source: SourceId,
    /// Uploads failing without a success for this long make the daemon unhealthy.
    pub unhealthy_after: Duration,
}

impl Sources {
    /// Why the daemon is unhealthy, if it is: the watched folder is gone, or uploads have
    /// failed, and none succeeded, for longer than `unhealthy_after`.
    pub fn unhealthy(&self) -> Option<String> {
        if let Some(why) = self.watch.as_ref().and_then(|w| w.folder_missing()) {
            return Some(format!(
                "the watched folder is gone ({why}): nothing is uploaded until a folder is at its path again"
            ));
        }
        let since = self.stats.failing_since_unix.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let failing = now.saturating_sub(since);
        (failing >= self.unhealthy_after.as_secs()).then(|| {
            format!("uploads have been failing for {failing} s without one succeeding; see `cfimg failures`")
        })
    }

    fn pending_retries(&self) -> Option<u64> {
        let ledger = Ledger::open_read_only(&self.ledger).ok()??;
        let id = ledger.source_number(&self.source).ok()??;
        ledger.item_counts(id).ok().map(|(_, failed)| failed)
    }
}

#[derive(Debug)]
struct Exposition(Sources);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counters_by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> std::fmt::Result {
    let first = ConstCounter::new(0u64);
    let mut family = e.encode_descriptor(name, help, None, first.metric_type())?;
    for (value, n) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter's value now.
fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Exposition {
    /// What became of the items: uploaded, shared, removed, refused, failed.
    fn outcomes(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0.stats;
        counter(
            e,
            "cfimg_items_discovered",
            "Items the source listed since the start.",
            load(&s.discovered),
        )?;
        counter(
            e,
            "cfimg_items_finished",
            "Items done with and recorded: uploaded, unchanged, deduplicated, updated, failed, rejected or passed over.",
            s.finished(),
        )?;
        counter(
            e,
            "cfimg_uploads",
            "Images uploaded (new files and new versions).",
            load(&s.uploaded),
        )?;
        counter(e, "cfimg_upload_bytes", "Bytes uploaded.", load(&s.bytes))?;
        counter(
            e,
            "cfimg_deduplicated",
            "Files pointed at an image with the same content, without an upload.",
            load(&s.deduplicated),
        )?;
        counter(
            e,
            "cfimg_removed",
            "Images deleted because their file left the folder.",
            load(&s.removed),
        )?;
        if let Some(w) = &self.0.watch {
            counter(
                e,
                "cfimg_deletes_refused",
                "Deletes refused by the --max-delete cap.",
                load(&w.deletes_refused),
            )?;
        }
        counters_by(
            e,
            "cfimg_failures",
            "Items that did not make it, by reason: failed (retried later with a growing delay) or rejected (the file itself is refused).",
            "reason",
            &[("failed", load(&s.failed)), ("rejected", load(&s.rejected))],
        )?;
        Ok(())
    }

    /// Requests and 429 answers per host.
    fn traffic(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let traffic = self.0.traffic.get();
        let (api_req, api_429) =
            traffic.map_or((0, 0), |t| (t.api.requests(), t.api.throttled_count()));
        let (batch_req, batch_429) =
            traffic.map_or((0, 0), |t| (t.batch_requests(), t.batch_throttled()));
        counters_by(
            e,
            "cfimg_requests",
            "HTTP requests sent, retries included, by host.",
            "host",
            &[("api", api_req), ("batch", batch_req)],
        )?;
        counters_by(
            e,
            "cfimg_throttled",
            "429 answers, by host.",
            "host",
            &[("api", api_429), ("batch", batch_429)],
        )?;
        Ok(())
    }

    /// The work waiting, and the last success.
    fn queue(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0.stats;
        // A migration has no settling files; its pipeline holds what was listed and is
        // not finished yet.
        let stages = match &self.0.watch {
            Some(w) => vec![
                ("settling", load(&w.settling)),
                ("in_flight", load(&w.in_flight)),
            ],
            None => vec![(
                "in_flight",
                load(&s.discovered).saturating_sub(s.finished()),
            )],
        };
        let depth = ConstGauge::new(0i64);
        let mut family = e.encode_descriptor(
            "cfimg_queue_depth",
            "Files waiting: settling (still changing) or in the pipeline.",
            None,
            depth.metric_type(),
        )?;
        for (stage, n) in stages {
            let labels = [("stage", stage)];
            ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            e,
            "cfimg_last_upload_timestamp_seconds",
            "When the last upload succeeded (Unix time; 0: none since the start).",
            load(&s.last_upload_unix) as i64,
        )?;
        if let Some(n) = self.0.pending_retries() {
            gauge(
                e,
                "cfimg_pending_retries",
                "Failed items waiting for their next retry.",
                n as i64,
            )?;
        }
        Ok(())
    }

    /// The watched folder's gauges, for `watch` only.
    fn folder(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some(w) = &self.0.watch else {
            return Ok(());
        };
        gauge(
            e,
            "cfimg_polling",
            "1 when the folder is scanned periodically instead of watched (network file system, watch limit).",
            i64::from(w.polling.load(Ordering::Relaxed)),
        )?;
        counter(
            e,
            "cfimg_rescans",
            "Full scans of the folder.",
            load(&w.scans),
        )?;
        gauge(
            e,
            "cfimg_folder_missing",
            "1 while the watched folder is gone (deleted, moved away, unmounted): nothing is uploaded or deleted until it is back.",
            i64::from(w.folder_missing().is_some()),
        )?;
        counter(
            e,
            "cfimg_held_back",
            "Times a file still changing past --max-settle was held back because it is not a complete image yet.",
            load(&w.held_back),
        )?;
        counter(
            e,
            "cfimg_event_overflows",
            "Times the kernel dropped folder events (each causes a rescan).",
            load(&w.overflows),
        )?;
        Ok(())
    }

    /// The health `/healthz` answers with.
    fn health(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        gauge(
            e,
            "cfimg_healthy",
            "0 when the watched folder is gone, or uploads have failed without a success for longer than the health window.",
            i64::from(self.0.unhealthy().is_none()),
        )
    }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.outcomes(&mut e)?;
        self.traffic(&mut e)?;
        self.queue(&mut e)?;
        self.folder(&mut e)?;
        self.health(&mut e)
    }
}

async fn metrics(
    State(registry): State<Arc<Registry>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "the metrics could not be encoded\n".to_string(),
        );
    }
    // Prometheus asks for OpenMetrics; a client that does not (curl, promtool, older
    // scrapers) gets the classic text format, as the Go client answers it.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
    } else {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            classic_text(&body),
        )
    }
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a counter family is
/// named with its `_total` suffix, and there is no `# EOF`, `# UNIT` or `_created`.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        let created = line
            .split(['{', ' '])
            .next()
            .and_then(|n| n.strip_suffix("_created"))
            .is_some_and(|n| counters.contains(n));
        if line == "# EOF" || line.starts_with("# UNIT ") || created {
            continue;
        }
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

async fn health(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    match sources.unhealthy() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

/// Binds `addr` (at start, so a taken port is a start-up error) and serves `/metrics` and
/// `/healthz` until `stop` is cancelled. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(vec![format!(
            "--metrics-addr {addr}: cannot listen there ({e}); choose a free port"
        )])
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(vec![format!("--metrics-addr {addr}: {e}")]))?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(sources.clone())));
    let app = Router::new()
        .route("/metrics", get(metrics).with_state(Arc::new(registry)))
        .route("/healthz", get(health).with_state(Arc::new(sources)));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "metrics at /metrics, health at /healthz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::classic_text;

    #[test]
    fn the_classic_format_names_counters_with_their_suffix_and_has_no_eof() {
        let om = "# HELP cfimg_uploads Images uploaded.\n# TYPE cfimg_uploads counter\ncfimg_uploads_total 3\ncfimg_uploads_created 1.5\n# HELP cfimg_healthy 1 when healthy.\n# TYPE cfimg_healthy gauge\ncfimg_healthy 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP cfimg_uploads_total Images uploaded.\n# TYPE cfimg_uploads_total counter\ncfimg_uploads_total 3\n# HELP cfimg_healthy 1 when healthy.\n# TYPE cfimg_healthy gauge\ncfimg_healthy 1\n"
        );
    }
}
