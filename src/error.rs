//! The library's error type and the one place that decides what each error means for an
//! item: retry it, leave it for a later run, reject it, or stop the whole run.

use std::path::PathBuf;
use std::time::Duration;

use crate::codes;

/// Exit status: everything went as asked.
pub const EXIT_OK: i32 = 0;
/// Exit status: the run finished, but some items failed or were rejected.
pub const EXIT_INCOMPLETE: i32 = 1;
/// Exit status: usage or configuration error; a person must fix the command or the file
/// (a missing, damaged or unreadable ledger included).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: fatal API error (authentication, account, quota, permissions); needs a person.
pub const EXIT_FATAL_API: i32 = 3;
/// Exit status: try again later (EX_TEMPFAIL): the API could not be reached at start, the
/// ledger was busy (locked by another run) or hit a passing I/O error, or the account stayed
/// rate-limited for 30 minutes. A service manager may restart on it.
pub const EXIT_TEMPFAIL: i32 = 75;
/// Exit status: stopped by a signal (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

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

/// How an item that did not make it ended (what its failure record says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retries ran out: tried again with `--retry-failed`.
    Deferred,
    /// A local failure (I/O, a file changing under us): the next run tries again.
    Local,
    /// The item itself is bad: tried again only when it changes.
    Rejected,
}

/// Where an item met an error: reading it from its source, or sending it to Cloudflare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Fetching or reading its body, before any request of the account was spent on it.
    Reading,
    /// Uploading it (or updating its image), requests of the account spent.
    Sending,
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
    /// A host refused the endpoint with a bare `{"code": .., "message": ..}` body and no
    /// envelope, as the batch host has answered `{"code":"103","message":"forbidden
    /// endpoint"}`: the operation is not served there, whatever the item.
    #[error("the host refused the endpoint (HTTP {status}, code {code}): {message}")]
    EndpointRefused {
        /// HTTP status.
        status: u16,
        /// The code as sent (a string on the batch host).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The API asked cfimg to slow down: any 429 whatever its body (JSON with 971, 10100 or
    /// 10429, the edge's HTML "Error 1015" page, an empty body), or a rate-limit code under
    /// any status. The limiter turns it into the shared cool-off; it never counts against an
    /// item's attempts.
    #[error("rate limited by Cloudflare (HTTP {status}, code {code}): {message}")]
    RateLimited {
        /// HTTP status (429, or whatever carried a rate-limit code).
        status: u16,
        /// The rate-limit code of the envelope (0 when the body had none).
        code: u32,
        /// The server's message, or the start of a non-JSON body.
        message: String,
        /// How long the server asked to wait, when it said so.
        retry_after: Option<Duration>,
    },
    /// Every request has met a 429 for this long: something else is spending the token's
    /// budget. Waiting on would hold the run forever, so it ends (and a later run resumes).
    #[error(
        "Cloudflare has answered nothing but 429 (rate limited) for {} minutes: another client probably uses up this token's budget; stop it or lower its rate, then run again (the ledger resumes)",
        .0.as_secs() / 60
    )]
    ThrottledTooLong(Duration),
    /// The answer was not the JSON envelope the API promises (e.g. an HTML page from the edge).
    #[error("unexpected answer from the API (HTTP {status}): {snippet}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// The start of the body, for the log.
        snippet: String,
    },
    /// The request never got a complete answer: connect, timeout, reset.
    #[error("network error talking to the API: {}", network_cause(.0))]
    Transport(#[source] reqwest::Error),
    /// The origin of a URL item did not hand over its bytes (local URL mode).
    #[error("could not fetch {url}: {reason}")]
    Origin {
        /// The URL.
        url: String,
        /// What happened: the origin's status, a timeout, a refused connection.
        reason: String,
        /// A 5xx, 408, 429, timeout or connection failure: it may work later.
        retryable: bool,
    },
    /// A download (a manifest URL in local mode, a bucket object) came in under the rate
    /// floor or missed its deadline, and was cut off.
    #[error("{what}: the download was cut off, too slow: {reason}; the next run tries again")]
    DownloadTooSlow {
        /// The URL or object.
        what: String,
        /// Which limit it missed.
        reason: String,
    },
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
    /// The ledger is damaged (found when it was opened, before anything was written to it,
    /// or by `cfimg ledger check`).
    #[error(
        "the ledger {} is damaged: {damage}. Nothing was written to it. Restore your latest copy \
         (`cfimg ledger backup` makes them), or move the damaged file aside and recreate the mappings \
         from the account's images with `cfimg ledger rebuild --source DIR|s3://BUCKET/PREFIX` \
         (or `--manifest FILE`); `cfimg ledger check` lists every problem",
        .path.display()
    )]
    LedgerDamaged {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong, as SQLite or the header check named it.
        damage: String,
    },
    /// The ledger writer failed or stopped; nothing more can be recorded.
    #[error("the ledger could not be written: {0}; check the disk and the file's permissions")]
    LedgerWrite(String),
    /// The item changed between hashing and upload; what was stored was deleted.
    #[error("{0} changed while it was being uploaded; it is left for the next pass")]
    ChangedWhileUploading(String),
    /// A task of the run panicked: the run cannot say what it did.
    #[error("internal error: {0} panicked; the run stopped (please report this)")]
    Panicked(String),
    /// Another process holds the ledger's lock.
    #[error(
        "another cfimg run is using the ledger {}: wait for it to finish, or give this run its own --ledger",
        .0.display()
    )]
    LedgerBusy(PathBuf),
    /// The command was given something it cannot work with (not configuration).
    #[error("{0}")]
    Usage(String),
    /// A bucket could not be listed (bad credentials, no such bucket, no route to the
    /// endpoint): nothing in it can be migrated.
    #[error("cannot list {location}: {message}")]
    BucketListing {
        /// `s3://bucket/prefix/` (or `gs://`, `az://`).
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
    /// `migrate`'s pre-flight check: the job needs more images than the account has room for.
    #[error(
        "this migration would add {}{to_add} images, but the account holds {current} of the {allowed} its plan allows \
         ({} free), so nothing was uploaded: delete images the account no longer needs (`cfimg images delete`), \
         raise the quota (dashboard: Images > Plans), or run again with --force to upload until the quota is reached \
         (the ledger resumes where it stopped)",
        if *.exact { "" } else { "at least " },
        .allowed.saturating_sub(*.current)
    )]
    WouldExceedQuota {
        /// Images the job would add (counted before deduplication).
        to_add: u64,
        /// False when the count stopped early, once it was past the room left.
        exact: bool,
        /// Images the account holds.
        current: u64,
        /// Images it may hold.
        allowed: u64,
    },
    /// The configuration is wrong; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
}

/// What went wrong on the network, down to its cause: reqwest's own text only says "error
/// sending request"; the refused connection, the DNS failure or the TLS problem is further
/// down its chain of sources. Names the host and port, never the path or the query.
pub fn network_cause(e: &reqwest::Error) -> String {
    let host = e
        .url()
        .and_then(|u| {
            let host = u.host_str()?;
            Some(match u.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            })
        })
        .unwrap_or_else(|| "the server".to_string());
    let mut text = if e.is_timeout() {
        format!("timed out talking to {host}")
    } else if e.is_connect() {
        format!("cannot connect to {host}")
    } else if e.is_body() || e.is_decode() {
        format!("the answer from {host} broke off")
    } else if e.is_redirect() {
        format!("too many redirects from {host}")
    } else {
        format!("the request to {host} failed")
    };
    let mut causes: Vec<String> = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cause {
        let t = c.to_string();
        // hyper's wrappers ("client error (Connect)") say less than what they wrap.
        if !t.starts_with("client error (") && !causes.contains(&t) {
            causes.push(t);
        }
        cause = c.source();
    }
    // Past the TCP connection (no "tcp connect error" or "dns error" layer), what fails in
    // connecting to an https URL is the TLS handshake; rustls's own text does not say so.
    let tls = e.is_connect() && e.url().is_some_and(|u| u.scheme() == "https") && causes.len() == 1;
    if let Some((root, between)) = causes.split_last() {
        text.push_str(": ");
        if tls {
            text.push_str("TLS handshake failed: ");
        }
        text.push_str(root);
        // The layers above the root name its kind: "(dns error)", "(tcp connect error)".
        if !between.is_empty() {
            text.push_str(&format!(" ({})", between.join(": ")));
        }
    }
    text
}

/// SQLite errors that no amount of waiting clears: a damaged file, one that is not a
/// database, one that cannot be opened or may not be written. Busy, locked, full or I/O
/// errors may pass.
fn ledger_needs_a_person(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DatabaseCorrupt
                | C::NotADatabase
                | C::CannotOpen
                | C::PermissionDenied
                | C::ReadOnly
                | C::AuthorizationForStatementDenied
        )
    )
}

/// Shorthand for results of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The one classification of errors, following the table in `shared/API.md`.
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Api { code, message, .. }
                if *code == codes::URL_FETCH_FAILED && origin_refused(message) =>
            {
                Disposition::Reject
            }
            Error::Api {
                status,
                code,
                retry_after,
                ..
            } => classify_api(*status, *code, *retry_after),
            Error::RateLimited { retry_after, .. } => Disposition::Retry {
                after: *retry_after,
            },
            Error::Protocol { status, .. } => {
                if *status >= 500 || *status == 429 || *status == 408 {
                    Disposition::Retry { after: None }
                } else if *status == 401 || *status == 403 || self.is_redirect() {
                    Disposition::Fatal
                } else {
                    // A 2xx or 4xx that is not the API's JSON is a proxy or a client bug;
                    // it will not change by retrying.
                    Disposition::Reject
                }
            }
            Error::Transport(_) => Disposition::Retry { after: None },
            // Not the item's fault and not the token's: the lanes fall back to the API host;
            // anywhere else, a later run tries again.
            Error::EndpointRefused { .. } => Disposition::Defer,
            Error::ThrottledTooLong(_) => Disposition::Fatal,
            // Retried a few times within the run; then the item fails and the next run
            // tries again. A 404 or 410 will not change by retrying.
            Error::Origin { retryable, .. } => {
                if *retryable {
                    Disposition::Retry { after: None }
                } else {
                    Disposition::Reject
                }
            }
            // An origin this slow is slow again at once: not retried within the run (each
            // attempt would hold a worker for the whole window), the next run tries again.
            Error::DownloadTooSlow { .. } => Disposition::Defer,
            // Not the item's fault (permission denied, EIO, ESTALE, a file changing while it
            // is sent): a later run tries it again.
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
            Error::Ledger(_)
            | Error::LedgerDamaged { .. }
            | Error::LedgerWrite(_)
            | Error::LedgerBusy(_)
            | Error::Usage(_)
            | Error::Config(_)
            | Error::WouldExceedQuota { .. }
            | Error::Panicked(_) => Disposition::Fatal,
        }
    }

    /// What an item that met this error records; `None`: nothing, the run stops (Fatal).
    ///
    /// The two stages map `Retry` (retries ran out) and `Defer` differently, on purpose: an
    /// item its source could not hand over (a slow origin, a bucket object gone or
    /// forbidden, an unreadable file) spent none of the account's budget and its cause is
    /// outside Cloudflare, so the next run tries it again by itself (`Local`, as
    /// `DownloadTooSlow`'s message promises); an item whose requests ran out or that the
    /// service deferred waits for `--retry-failed` (`Deferred`), so that reruns do not spend
    /// the budget again on the same answer. Local I/O is `Local` at either stage.
    pub fn failure(&self, stage: Stage) -> Option<Failure> {
        match (self.disposition(), self) {
            (Disposition::Fatal, _) => None,
            (_, Error::Io { .. } | Error::ChangedWhileUploading(_)) => Some(Failure::Local),
            (Disposition::Reject, _) => Some(Failure::Rejected),
            (Disposition::Retry { .. } | Disposition::Defer, _) => Some(match stage {
                Stage::Reading => Failure::Local,
                Stage::Sending => Failure::Deferred,
            }),
        }
    }

    /// What to do about an error that ended a command: the line printed after its message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Api {
                code: codes::AUTH | codes::MALFORMED_AUTH,
                ..
            } => Some(
                "check CLOUDFLARE_API_TOKEN and the account id (CLOUDFLARE_ACCOUNT_ID or `account_id`, dashboard > Images > Overview): Cloudflare gives this answer both for a token it refuses and for an account id the token may not use; the token needs the Account > Cloudflare Images > Edit permission for that account",
            ),
            Error::Api {
                code: codes::NOT_AUTHORISED,
                ..
            } => Some(
                "check the account id (CLOUDFLARE_ACCOUNT_ID or `account_id`, dashboard > Images > Overview), and that Cloudflare Images is enabled on that account",
            ),
            Error::Api {
                status: 404,
                code: codes::NO_ROUTE,
                ..
            } => Some(
                "Cloudflare has no route for that URL: check that `api_base_url` (CFIMG_API_BASE_URL) ends in /client/v4 (the default is https://api.cloudflare.com/client/v4) and that the account id is the 32-character id from dashboard > Images > Overview",
            ),
            Error::Api {
                code: codes::QUOTA_REACHED,
                ..
            } => Some(
                "the account has reached its Cloudflare Images quota: delete images it no longer needs, or raise the limit (dashboard: Images > Plans), then run again; the ledger resumes where this run stopped",
            ),
            e if e.is_forbidden() => Some(
                "the token may not do this: uploads need a token with the Account > Cloudflare Images > Edit permission for this account id (a read-only token can only read, and a token of another account cannot use this one); `cfimg validate` checks it",
            ),
            Error::Api {
                code: codes::NOT_FOUND,
                ..
            } => Some(
                "no such image, variant or key in this account: check the id (`cfimg images list`, `cfimg variants list`, `cfimg keys list`)",
            ),
            Error::Api {
                code: codes::ALREADY_EXISTS,
                ..
            } => Some(
                "it exists already: choose another name, or change the existing one with `update`",
            ),
            Error::Api {
                code: codes::BAD_REQUEST,
                ..
            } => Some(
                "Cloudflare refused the request as given: see its message, fix the arguments, run again",
            ),
            Error::Transport(_) => Some("check the network and `api_base_url`"),
            e if e.is_redirect() => Some(
                "the API redirected the request, which cfimg does not follow with your token: check `api_base_url` (CFIMG_API_BASE_URL, default https://api.cloudflare.com/client/v4) and `batch_base_url`, and any proxy in between",
            ),
            Error::BucketListing { location, .. } if location.starts_with("gs://") => Some(
                "check GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY), the bucket name and --endpoint-url",
            ),
            Error::BucketListing { location, .. } if location.starts_with("az://") => Some(
                "check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_TOKEN, AZURE_CLIENT_*), the container name and --endpoint-url",
            ),
            Error::BucketListing { .. } => Some(
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the bucket name, --endpoint-url and --region",
            ),
            _ => None,
        }
    }

    /// The process exit status for an error that ended a command: the one mapping, next to
    /// the classification. 2 and 3 need a person; 75 is worth trying again later.
    pub fn exit_code(&self) -> i32 {
        match self {
            // Refused before anything was sent: a person decides (--force, the quota, deletes).
            Error::Config(_) | Error::Usage(_) | Error::WouldExceedQuota { .. } => EXIT_USAGE,
            // Damage does not heal by itself: a restart would fail the same way for ever.
            Error::LedgerDamaged { .. } => EXIT_USAGE,
            Error::Ledger(e) if ledger_needs_a_person(e) => EXIT_USAGE,
            Error::Ledger(_)
            | Error::LedgerWrite(_)
            | Error::LedgerBusy(_)
            | Error::ThrottledTooLong(_)
            | Error::Transport(_) => EXIT_TEMPFAIL,
            // A missing path, a permission or a directory where a file belongs (a ledger
            // path naming a folder) is for a person to fix; other local I/O errors (EIO,
            // ESTALE, a mount not there yet) may pass.
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::IsADirectory
                | std::io::ErrorKind::NotADirectory => EXIT_USAGE,
                _ => EXIT_TEMPFAIL,
            },
            // No route on the start-up request: the base URL or the account id is wrong.
            Error::Api {
                status: 404,
                code: codes::NO_ROUTE,
                ..
            } => EXIT_USAGE,
            Error::Api { .. }
            | Error::Protocol { .. }
            | Error::RateLimited { .. }
            | Error::EndpointRefused { .. } => {
                match self.disposition() {
                    Disposition::Fatal => EXIT_FATAL_API,
                    // Retries ran out (e.g. 5xx on the start-up request): try again later.
                    Disposition::Retry { .. } => EXIT_TEMPFAIL,
                    Disposition::Defer | Disposition::Reject => EXIT_INCOMPLETE,
                }
            }
            // Nothing in the bucket can be read: the credentials, bucket or endpoint need a person.
            Error::BucketListing { .. } => EXIT_FATAL_API,
            Error::Invalid(_)
            | Error::ChangedWhileUploading(_)
            | Error::Origin { .. }
            | Error::DownloadTooSlow { .. }
            | Error::Object { .. } => EXIT_INCOMPLETE,
            Error::Panicked(_) => EXIT_INCOMPLETE,
        }
    }

    /// The same error, saying which account id the request named when the refusal may be
    /// the account id's doing rather than the token's: Cloudflare answers 10000 and 9109 both
    /// for a token it refuses and for an account the token may not use, 5403 for an account
    /// without Images, 7003 for an id it cannot route.
    pub fn naming_account(self, account_id: &str) -> Error {
        match self {
            Error::Api {
                status,
                code,
                message,
                retry_after,
            } if matches!(status, 401 | 403 | 404)
                && matches!(
                    code,
                    0 | codes::AUTH
                        | codes::UNAUTHORIZED_RESOURCE
                        | codes::NOT_AUTHORISED
                        | codes::NO_ROUTE
                ) =>
            {
                Error::Api {
                    status,
                    code,
                    message: format!(
                        "{message} (the request was for the account id {account_id:?})"
                    ),
                    retry_after,
                }
            }
            other => other,
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

    /// True for any 429, whatever its body, and for the rate-limit codes under any status:
    /// all of them go through the limiter's shared cool-off.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            Error::RateLimited { .. } => true,
            Error::Api { status, code, .. } => *status == 429 || codes::is_rate_limit(*code),
            Error::Protocol { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// The wait a rate-limit answer asked for (`Retry-After`, or the reset of the server's
    /// rate-limit headers), if it said anything.
    pub fn rate_limit_wait(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Api { retry_after, .. }
                if self.is_rate_limited() =>
            {
                *retry_after
            }
            _ => None,
        }
    }

    /// True when the account reached its image quota (5453).
    pub fn is_quota_reached(&self) -> bool {
        matches!(self, Error::Api { code, .. } if *code == codes::QUOTA_REACHED)
    }

    /// True when the token was refused this operation with 403 for a reason other than
    /// the account (5403) or authentication (10000): typically a token without Images Edit.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Api { status: 403, code, .. }
            if !matches!(*code, codes::NOT_AUTHORISED | codes::AUTH))
    }

    /// The API answered with a redirect (3xx), which cfimg does not follow.
    pub fn is_redirect(&self) -> bool {
        matches!(self, Error::Protocol { status, .. } if (300..400).contains(status))
    }

    /// An authentication failure (10000, or a 401 without a code): on the batch host, the
    /// batch token is expired or revoked.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Error::Api { status, code, .. } if *code == codes::AUTH || (*status == 401 && *code == 0))
    }

    /// True when the request may have reached the server and been acted on although no
    /// success was seen (a reset mid-response, a timeout, a 5xx after storing).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Error::Transport(e) => !e.is_connect(),
            Error::Api { status, .. }
            | Error::Protocol { status, .. }
            | Error::RateLimited { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Whether a 5454 ("could not fetch the url") names a 4xx answer of the origin other than
/// 408 and 429: the origin refused the URL (404, 403, 410...), and asking Cloudflare to
/// fetch it again within the run would spend requests of the account's budget on the same
/// answer. Such an item is rejected at once, as the local URL mode rejects an origin's 404.
/// URLs and paths in the message are not read: `/photos/410/a.png` names no status.
fn origin_refused(message: &str) -> bool {
    message
        .split_whitespace()
        .filter(|word| !word.contains('/'))
        .flat_map(|word| word.split(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse::<u16>().ok())
        .any(|n| (400..500).contains(&n) && n != 408 && n != 429)
}

fn classify_api(status: u16, code: u32, retry_after: Option<Duration>) -> Disposition {
    match code {
        codes::RATE_LIMITED | codes::RATE_LIMITED_OLD | codes::RATE_LIMITED_OLD2 => {
            return Disposition::Retry { after: retry_after };
        }
        codes::UPLOAD_TIMEOUT | codes::URL_FETCH_FAILED => {
            return Disposition::Retry { after: None };
        }
        codes::AUTH | codes::NOT_AUTHORISED | codes::MALFORMED_AUTH | codes::QUOTA_REACHED => {
            return Disposition::Fatal;
        }
        _ => {}
    }
    match status {
        429 => Disposition::Retry { after: retry_after },
        408 => Disposition::Retry { after: None },
        // A 403 with any code (9109 for a read-only token's write, codes we do not know):
        // the token or the account may not do this, and no item will fare better.
        401 | 403 => Disposition::Fatal,
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
        assert_eq!(api(403, 5453).disposition(), Disposition::Fatal);
        assert_eq!(api(400, 5453).disposition(), Disposition::Fatal);
        assert!(api(400, 5453).is_quota_reached());
        // Any 403, known code or not, stops the run.
        for code in [9109, 0, 1234, 5400] {
            assert_eq!(api(403, code).disposition(), Disposition::Fatal, "{code}");
            assert!(api(403, code).is_forbidden());
        }
        assert!(!api(403, 10000).is_forbidden());
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
        for status in [301, 302, 307, 308] {
            let redirected = Error::Protocol {
                status,
                snippet: String::new(),
            };
            assert_eq!(redirected.disposition(), Disposition::Fatal, "{status}");
            assert!(
                redirected
                    .hint()
                    .is_some_and(|h| h.contains("api_base_url"))
            );
        }
        assert_eq!(
            Error::Invalid("x".into()).disposition(),
            Disposition::Reject
        );
        for kind in [
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::Other,
            std::io::ErrorKind::StaleNetworkFileHandle,
        ] {
            assert_eq!(io(kind).disposition(), Disposition::Defer, "{kind:?}");
        }
        let origin = |retryable| Error::Origin {
            url: "http://o/x.png".into(),
            reason: "the origin answered 404 Not Found".into(),
            retryable,
        };
        assert_eq!(origin(false).disposition(), Disposition::Reject);
        assert_eq!(origin(true).disposition(), retry);
        assert!(!origin(true).is_ambiguous());
    }

    #[test]
    fn an_origin_that_refused_the_url_is_not_fetched_again() {
        let fetch = |message: &str| Error::Api {
            status: 400,
            code: 5454,
            message: message.into(),
            retry_after: None,
        };
        let retry = Disposition::Retry { after: None };
        for refused in [
            "Failed to fetch the image from the url: the origin answered 404 Not Found",
            "could not fetch: HTTP 403",
            "origin status code 410",
        ] {
            assert_eq!(
                fetch(refused).disposition(),
                Disposition::Reject,
                "{refused}"
            );
        }
        for passing in [
            "Failed to fetch the image from the url: the origin answered 503 Service Unavailable",
            "the origin answered 429 Too Many Requests",
            "the origin answered 408 Request Timeout",
            "error sending request for url (http://o:8080/photos/404/a.png)",
            "Failed to fetch the image from the url",
        ] {
            assert_eq!(fetch(passing).disposition(), retry, "{passing}");
        }
    }

    #[test]
    fn a_refusal_the_account_id_may_cause_names_it() {
        for (status, code) in [
            (401, 10000),
            (403, 10000),
            (403, 9109),
            (403, 5403),
            (404, 7003),
        ] {
            let text = api(status, code).naming_account("0123abcd").to_string();
            assert!(text.contains("account id \"0123abcd\""), "{text}");
        }
        let text = api(400, 5455).naming_account("0123abcd").to_string();
        assert!(!text.contains("0123abcd"), "{text}");
        assert_eq!(api(404, 7003).exit_code(), EXIT_USAGE);
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
        assert!(api(400, 10429).is_rate_limited());
        let edge = Error::RateLimited {
            status: 429,
            code: 0,
            message: "<html>".into(),
            retry_after: None,
        };
        assert!(edge.is_rate_limited());
        assert_eq!(edge.disposition(), Disposition::Retry { after: None });
        assert!(
            Error::Protocol {
                status: 429,
                snippet: String::new()
            }
            .is_rate_limited()
        );
        assert!(api(502, 0).is_ambiguous());
        assert!(!api(400, 5455).is_ambiguous());
    }

    #[test]
    fn an_item_records_one_failure_kind_per_error_and_stage() {
        let slow = Error::DownloadTooSlow {
            what: "http://o/a.png".into(),
            reason: "under the rate floor".into(),
        };
        let refused = Error::EndpointRefused {
            status: 403,
            code: "103".into(),
            message: "forbidden endpoint".into(),
        };
        for (e, reading, sending) in [
            // Retries ran out on Cloudflare's side: only --retry-failed sends it again.
            (api(503, 0), Failure::Local, Failure::Deferred),
            (refused, Failure::Local, Failure::Deferred),
            // Before any request: the next run tries again by itself.
            (slow, Failure::Local, Failure::Deferred),
            (
                io(std::io::ErrorKind::Other),
                Failure::Local,
                Failure::Local,
            ),
            (
                Error::ChangedWhileUploading("a.png".into()),
                Failure::Local,
                Failure::Local,
            ),
            (api(400, 5455), Failure::Rejected, Failure::Rejected),
            (
                Error::Invalid("x".into()),
                Failure::Rejected,
                Failure::Rejected,
            ),
        ] {
            assert_eq!(e.failure(Stage::Reading), Some(reading), "{e}");
            assert_eq!(e.failure(Stage::Sending), Some(sending), "{e}");
        }
        // Fatal: nothing is recorded for the item, the run stops.
        assert_eq!(api(401, 10000).failure(Stage::Reading), None);
        assert_eq!(api(403, 9109).failure(Stage::Sending), None);
    }

    #[test]
    fn a_fatal_error_comes_with_what_to_do() {
        let hint = |e: Error| e.hint().unwrap_or_default();
        assert!(hint(api(401, 10000)).contains("CLOUDFLARE_API_TOKEN"));
        assert!(hint(api(403, 5403)).contains("Cloudflare Images is enabled"));
        assert!(hint(api(400, 5453)).contains("quota"));
        assert!(hint(api(403, 9109)).contains("Edit permission"));
        assert!(hint(api(404, 7003)).contains("/client/v4"));
        assert!(api(400, 5455).hint().is_none());
    }

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::Io {
            path: "x.png".into(),
            source: std::io::Error::from(kind),
        }
    }

    #[test]
    fn exit_codes_tell_a_person_from_try_again_later() {
        assert_eq!(Error::Config(vec!["x".into()]).exit_code(), EXIT_USAGE);
        assert_eq!(Error::Usage("not a folder".into()).exit_code(), EXIT_USAGE);
        let quota = Error::WouldExceedQuota {
            to_add: 5,
            exact: false,
            current: 8,
            allowed: 10,
        };
        assert_eq!(quota.exit_code(), EXIT_USAGE);
        let text = quota.to_string();
        assert!(
            text.contains("at least 5 images")
                && text.contains("8 of the 10")
                && text.contains("(2 free)"),
            "{text}"
        );
        assert!(text.contains("--force"), "{text}");
        assert_eq!(
            Error::LedgerBusy("l.sqlite".into()).exit_code(),
            EXIT_TEMPFAIL
        );
        assert_eq!(Error::LedgerWrite("disk".into()).exit_code(), EXIT_TEMPFAIL);
        assert_eq!(
            Error::Ledger(rusqlite::Error::InvalidQuery).exit_code(),
            EXIT_TEMPFAIL
        );
        // Damage does not pass by waiting: under systemd, 75 would restart it for ever.
        let sqlite = |code| {
            Error::Ledger(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_CORRUPT).exit_code(),
            EXIT_USAGE
        );
        assert_eq!(sqlite(rusqlite::ffi::SQLITE_NOTADB).exit_code(), EXIT_USAGE);
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_CANTOPEN).exit_code(),
            EXIT_USAGE
        );
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_BUSY).exit_code(),
            EXIT_TEMPFAIL
        );
        assert_eq!(
            sqlite(rusqlite::ffi::SQLITE_FULL).exit_code(),
            EXIT_TEMPFAIL
        );
        let damaged = Error::LedgerDamaged {
            path: "l.sqlite".into(),
            damage: "x".into(),
        };
        assert_eq!(damaged.exit_code(), EXIT_USAGE);
        assert_eq!(damaged.disposition(), Disposition::Fatal);
        assert_eq!(
            Error::ThrottledTooLong(Duration::from_secs(1800)).exit_code(),
            EXIT_TEMPFAIL
        );
        for code in [10000, 5403, 6003, 5453, 9109] {
            assert_eq!(api(403, code).exit_code(), EXIT_FATAL_API, "{code}");
        }
        assert_eq!(api(401, 0).exit_code(), EXIT_FATAL_API);
        // The start-up request's retries ran out on a transient error.
        assert_eq!(api(503, 0).exit_code(), EXIT_TEMPFAIL);
        assert_eq!(
            Error::Protocol {
                status: 502,
                snippet: String::new()
            }
            .exit_code(),
            EXIT_TEMPFAIL
        );
        assert_eq!(api(400, 5455).exit_code(), EXIT_INCOMPLETE);
        assert_eq!(io(std::io::ErrorKind::NotFound).exit_code(), EXIT_USAGE);
        assert_eq!(io(std::io::ErrorKind::Other).exit_code(), EXIT_TEMPFAIL);
        // A ledger on a read-only file system will not become writable by waiting.
        assert_eq!(
            io(std::io::ErrorKind::ReadOnlyFilesystem).exit_code(),
            EXIT_USAGE
        );
    }
}
