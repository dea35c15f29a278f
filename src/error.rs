//! The library's error type and the one place that decides what each error means for an
//! item: retry it, leave it for a later run, reject it, or stop the whole run.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::types::codes;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: try again, after `after` when the server said how long.
    Retry {
        /// The server's `retry-after`, if it sent one.
        after: Option<Duration>,
    },
    /// The retry budget is spent: record the failure and try again in a later run.
    Defer,
    /// The item itself is bad: record the reason and never retry it unchanged.
    Reject,
    /// Nothing else can succeed either (bad token, account not enabled, ledger unwritable).
    Fatal,
}

/// Everything that can go wrong in cfimg's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error envelope or an error status.
    #[error("Cloudflare answered HTTP {status} with code {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// First error code of the envelope (0 when there was none).
        code: u32,
        /// The server's message.
        message: String,
        /// `retry-after`, when sent.
        retry_after: Option<Duration>,
    },
    /// The answer was not the JSON envelope the API promises (e.g. an HTML page from the edge).
    #[error("unexpected answer from the API (HTTP {status}): {snippet}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// The start of the body, for the log.
        snippet: String,
    },
    /// The request never got a complete answer: connect, timeout, reset.
    #[error("network error talking to the API: {0}")]
    Transport(#[source] reqwest::Error),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The item breaks a rule of the service; checked locally, no request was spent.
    #[error("{0}")]
    Invalid(String),
    /// The ledger could not be read or written.
    #[error("ledger error: {0}")]
    Ledger(#[from] rusqlite::Error),
    /// The ledger writer failed or stopped; nothing more can be recorded.
    #[error("the ledger could not be written: {0}; check the disk and the file's permissions")]
    LedgerWrite(String),
    /// The item changed between hashing and upload; what was stored was deleted.
    #[error("{0} changed while it was being uploaded; it is left for the next pass")]
    ChangedWhileUploading(String),
    /// A task of the run panicked: the run cannot say what it did.
    #[error("internal error: {0} panicked; the run stopped (please report this)")]
    Panicked(String),
    /// A bucket could not be listed (bad credentials, no such bucket, no route to the
    /// endpoint): nothing in it can be migrated.
    #[error("cannot list {location}: {message}")]
    BucketListing {
        /// `s3://bucket/prefix/`.
        location: String,
        /// What the store said.
        message: String,
    },
    /// One object of a bucket could not be read (deleted since the listing, access denied
    /// on that key, replaced while being read, a network failure after retries).
    #[error("cannot read the object {key:?}: {source}")]
    Object {
        /// The object key.
        key: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// The configuration is wrong; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
}

/// Shorthand for results of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The one classification of errors, following the table in `shared/API.md`.
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Api {
                status,
                code,
                retry_after,
                ..
            } => classify_api(*status, *code, *retry_after),
            Error::Protocol { status, .. } => {
                if *status >= 500 || *status == 429 || *status == 408 {
                    Disposition::Retry { after: None }
                } else if *status == 401 || *status == 403 {
                    Disposition::Fatal
                } else {
                    // A 2xx or 4xx that is not the API's JSON is a proxy or a client bug;
                    // it will not change by retrying.
                    Disposition::Reject
                }
            }
            Error::Transport(_) => Disposition::Retry { after: None },
            // Not the item's fault: a later run tries again.
            Error::Io { .. } | Error::ChangedWhileUploading(_) => Disposition::Defer,
            Error::Invalid(_) => Disposition::Reject,
            Error::BucketListing { .. } => Disposition::Fatal,
            Error::Object { source, .. } => match source {
                // object_store has already retried these with backoff.
                object_store::Error::Generic { .. } => Disposition::Retry { after: None },
                // A key object_store cannot address: it never will.
                object_store::Error::InvalidPath { .. } => Disposition::Reject,
                // Gone since the listing, forbidden on this key, or replaced while being
                // read: not the item's fault, and a later run looks again.
                _ => Disposition::Defer,
            },
            Error::Ledger(_) | Error::LedgerWrite(_) | Error::Config(_) | Error::Panicked(_) => {
                Disposition::Fatal
            }
        }
    }

    /// True when the server said the resource already exists (5409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { code, status, .. } if *code == codes::ALREADY_EXISTS || (*status == 409 && *code == 0))
    }

    /// True when the server said the image does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { code, status, .. } if *code == codes::NOT_FOUND || (*status == 404 && *code != codes::NO_ROUTE))
    }

    /// True for a 429 or one of the rate-limit codes.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::Api { status, code, .. }
            if *status == 429 || matches!(*code, codes::RATE_LIMITED | codes::RATE_LIMITED_OLD | codes::RATE_LIMITED_OLD2))
    }

    /// True when the request may have reached the server and been acted on although no
    /// success was seen (a reset mid-response, a timeout, a 5xx after storing).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Error::Transport(e) => !e.is_connect(),
            Error::Api { status, .. } | Error::Protocol { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn classify_api(status: u16, code: u32, retry_after: Option<Duration>) -> Disposition {
    match code {
        codes::RATE_LIMITED | codes::RATE_LIMITED_OLD | codes::RATE_LIMITED_OLD2 => {
            return Disposition::Retry { after: retry_after };
        }
        codes::UPLOAD_TIMEOUT | codes::URL_FETCH_FAILED => {
            return Disposition::Retry { after: None };
        }
        codes::AUTH | codes::NOT_AUTHORISED | codes::MALFORMED_AUTH => return Disposition::Fatal,
        _ => {}
    }
    match status {
        429 => Disposition::Retry { after: retry_after },
        408 => Disposition::Retry { after: None },
        401 => Disposition::Fatal,
        500.. => Disposition::Retry { after: None },
        _ => Disposition::Reject,
    }
}

/// An API error as the client would build it, for tests.
#[cfg(test)]
pub(crate) fn api_error(status: u16, code: u32, retry_after: Option<Duration>) -> Error {
    Error::Api {
        status,
        code,
        message: String::new(),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: u32) -> Error {
        api_error(status, code, Some(Duration::from_secs(7)))
    }

    #[test]
    fn follows_the_api_table() {
        let retry_7 = Disposition::Retry {
            after: Some(Duration::from_secs(7)),
        };
        let retry = Disposition::Retry { after: None };
        assert_eq!(api(429, 971).disposition(), retry_7);
        assert_eq!(api(429, 10100).disposition(), retry_7);
        assert_eq!(api(429, 0).disposition(), retry_7);
        assert_eq!(api(500, 0).disposition(), retry);
        assert_eq!(api(503, 0).disposition(), retry);
        assert_eq!(api(400, 5408).disposition(), retry);
        assert_eq!(api(401, 10000).disposition(), Disposition::Fatal);
        assert_eq!(api(403, 10000).disposition(), Disposition::Fatal);
        assert_eq!(api(403, 5403).disposition(), Disposition::Fatal);
        assert_eq!(api(400, 6003).disposition(), Disposition::Fatal);
        for code in [5400, 5409, 5410, 5411, 5413, 5415, 5443, 5455, 9422, 7003] {
            assert_eq!(
                api(400, code).disposition(),
                Disposition::Reject,
                "code {code}"
            );
        }
        assert_eq!(api(413, 7011).disposition(), Disposition::Reject);
        assert_eq!(
            Error::Protocol {
                status: 502,
                snippet: "<html>".into()
            }
            .disposition(),
            retry
        );
        assert_eq!(
            Error::Invalid("x".into()).disposition(),
            Disposition::Reject
        );
    }

    #[test]
    fn bucket_errors_stop_the_run_or_fail_one_object() {
        let listing = Error::BucketListing {
            location: "s3://b/".into(),
            message: "403".into(),
        };
        assert_eq!(listing.disposition(), Disposition::Fatal);
        let gone = Error::Object {
            key: "a.jpg".into(),
            source: object_store::Error::NotFound {
                path: "a.jpg".into(),
                source: "404".into(),
            },
        };
        assert_eq!(gone.disposition(), Disposition::Defer);
        let denied = Error::Object {
            key: "a.jpg".into(),
            source: object_store::Error::PermissionDenied {
                path: "a.jpg".into(),
                source: "403".into(),
            },
        };
        assert_eq!(denied.disposition(), Disposition::Defer);
    }

    #[test]
    fn recognises_conflicts_and_missing_images() {
        assert!(api(409, 5409).is_conflict());
        assert!(!api(400, 5411).is_conflict());
        assert!(api(404, 5404).is_not_found());
        assert!(!api(404, 7003).is_not_found());
        assert!(api(429, 971).is_rate_limited());
        assert!(api(502, 0).is_ambiguous());
        assert!(!api(400, 5455).is_ambiguous());
    }
}
