//! The one copy loop from a remote body into a temporary file, bounded in size and in
//! time: a manifest URL in local mode and a bucket object in download mode both come
//! through here; and the one temporary file ([`Spool`]) that it and a replacement's
//! backup write into. A body that trickles (under `floor_bytes` over `floor_window`) or that
//! has not ended by the deadline is cut off, so one slow origin cannot hold a worker for
//! minutes per attempt; dropping the future (a stop signal) deletes what was written.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::item::Body;

/// Time limits of one download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Fewest bytes each `floor_window` must bring.
    pub floor_bytes: u64,
    /// The window the floor is measured over.
    pub floor_window: Duration,
    /// Longest time from the request to the last byte.
    pub deadline: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            floor_bytes: DEFAULT_FLOOR_BYTES,
            floor_window: DEFAULT_FLOOR_WINDOW,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// 16 kB per 30 s (about 0.5 kB/s): a link this slow would need over five hours for a
/// 10 MB image, and a stalled origin is noticed within half a minute.
pub const DEFAULT_FLOOR_BYTES: u64 = 16 * 1024;
/// See [`DEFAULT_FLOOR_BYTES`].
pub const DEFAULT_FLOOR_WINDOW: Duration = Duration::from_secs(30);
/// 10 MB (the largest image Cloudflare takes) at about 35 kB/s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// A new temporary file that is deleted when dropped, or, once it is an upload [`Body`],
/// when the last holder of that body lets it go: every spooled download, bucket object and
/// replacement backup is made here.
#[derive(Debug)]
pub struct Spool(tempfile::TempPath);

impl Spool {
    /// Creates an empty temporary file named `prefix…`, open for writing.
    pub fn create(prefix: &str) -> Result<(Spool, std::fs::File)> {
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let (file, path) = file.into_parts();
        Ok((Spool(path), file))
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The file as an upload body, deleted with the body's last clone.
    pub fn into_body(self) -> Body {
        Body::File {
            path: self.0.to_path_buf(),
            spool: Some(Arc::new(self.0)),
        }
    }
}

/// Copies `body` into a new temporary file named `prefix…`. `what` names the item in
/// errors; `max_bytes` caps the size (`too_large` says why); stream errors go through
/// `on_error`. `deadline` is when the whole transfer (request included) must be done.
#[allow(clippy::too_many_arguments)]
pub async fn spool<S, E>(
    prefix: &str,
    body: S,
    bounds: Bounds,
    deadline: Instant,
    max_bytes: u64,
    what: &str,
    on_error: impl Fn(E) -> Error,
    too_large: impl Fn(u64) -> Error,
) -> Result<Body>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
{
    let (spool, file) = Spool::create(prefix)?;
    let io = |source| Error::Io {
        path: spool.path().to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut body = std::pin::pin!(body);
    let mut written = 0u64;
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    loop {
        let window_end = window_start + bounds.floor_window;
        match tokio::time::timeout_at(window_end.min(deadline), body.next()).await {
            Ok(Some(Ok(chunk))) => {
                written += chunk.len() as u64;
                window_bytes += chunk.len() as u64;
                if written > max_bytes {
                    // Dropping `spool` deletes what was written.
                    return Err(too_large(written));
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            Ok(Some(Err(e))) => return Err(on_error(e)),
            Ok(None) => break,
            Err(_elapsed) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::DownloadTooSlow {
                what: what.to_string(),
                reason: format!(
                    "not done after {} s ({written} bytes so far; download.deadline_secs)",
                    bounds.deadline.as_secs_f64()
                ),
            });
        }
        if now >= window_end {
            if window_bytes < bounds.floor_bytes {
                return Err(Error::DownloadTooSlow {
                    what: what.to_string(),
                    reason: format!(
                        "only {window_bytes} bytes came in the last {} s, under the floor of {} bytes \
                         (download.floor_bytes per download.floor_window_secs)",
                        bounds.floor_window.as_secs_f64(),
                        bounds.floor_bytes
                    ),
                });
            }
            window_start = now;
            window_bytes = 0;
        }
    }
    file.flush().await.map_err(io)?;
    drop(file);
    Ok(spool.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trickle(n: usize, every: Duration) -> impl Stream<Item = std::result::Result<Bytes, ()>> {
        futures_util::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from_static(b"x"))
        })
    }

    async fn run(n: usize, every: Duration, bounds: Bounds) -> Result<Body> {
        spool(
            "cfimg-test-",
            trickle(n, every),
            bounds,
            Instant::now() + bounds.deadline,
            1000,
            "x",
            |()| Error::Invalid("stream".into()),
            |_| Error::Invalid("large".into()),
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_under_the_floor_is_cut_off_and_a_fast_body_is_kept() {
        let bounds = Bounds {
            floor_bytes: 10,
            floor_window: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        };
        let e = run(100, Duration::from_secs(1), bounds).await.unwrap_err();
        assert!(e.to_string().contains("under the floor"), "{e}");
        let ok = run(20, Duration::from_millis(10), bounds).await.unwrap();
        let Body::File { path, .. } = &ok else {
            panic!("a file")
        };
        assert_eq!(std::fs::read(path).unwrap().len(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_a_body_that_keeps_above_the_floor() {
        let bounds = Bounds {
            floor_bytes: 1,
            floor_window: Duration::from_secs(5),
            deadline: Duration::from_secs(8),
        };
        let e = run(500, Duration::from_millis(100), bounds)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("download.deadline_secs"), "{e}");
    }
}
