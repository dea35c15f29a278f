//! Configuration: the TOML file, the environment and the command line merged into one
//! checked [`Config`]. Flags beat the environment, the environment beats the file, the file
//! beats the defaults. Every problem is reported at once, each with its key and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::layer::{Layer, raw_section, secs};
use crate::rules;
use crate::secret::Secret;
use crate::source::bucket::validate_bucket;
use crate::source::manifest::validate_manifest;
use crate::source::walk::validate_walk;
use crate::source::watch::validate_watch;
use crate::stamp;

// Each source's section lives with the source; named here too, for the commands and the
// CLI that reach them through `config::`.
pub use crate::source::bucket::{BucketConfig, RawBucket, S3Mode};
pub use crate::source::manifest::{ManifestConfig, RawManifest, UrlMode};
pub use crate::source::walk::{RawWalk, WalkConfig};
pub use crate::source::watch::{MaxDelete, OnDelete, RawWatch, WatchConfig};

/// Default request rate: Cloudflare allows 1200 requests per 300 s (4/s) per user, counted
/// over every client of that user; 3.5/s leaves an eighth of it for the dashboard and others.
pub const DEFAULT_RATE: f64 = 3.5;

/// Where images go when no `api_base_url` is set.
pub const DEFAULT_API_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
/// Where batch uploads go when no `batch_base_url` is set.
pub const DEFAULT_BATCH_BASE_URL: &str = "https://batch.imagedelivery.net";
/// The ledger file used when none is configured.
pub const DEFAULT_LEDGER: &str = "cfimg.sqlite";
/// Default list lag: lists have been seen lagging uploads by seconds, so look for
/// duplicates of an ambiguous upload half a minute later.
pub const DEFAULT_LIST_LAG_SECS: f64 = 30.0;

/// Requests per second per batch token: the batch host allows 200; just under it so that
/// timer jitter never tips a token over.
pub const DEFAULT_BATCH_RATE: f64 = 195.0;
/// The most batch tokens one run may hold.
pub const MAX_BATCH_TOKENS: u32 = 32;

/// Which host uploads (`POST /v1`) go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The API host, within the account's 1200 requests per 5 minutes.
    #[default]
    Api,
    /// The batch host, 200 requests/s per batch token; everything else stays on the API host.
    Batch,
}

/// How image ids are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdMode {
    /// Prefix + the file's path relative to the folder.
    Path,
    /// Prefix + the sha256 of the content + extension; identical files share one image.
    Hash,
    /// Cloudflare assigns the id (required for private images).
    Auto,
}

impl IdMode {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IdMode::Path => "path",
            IdMode::Hash => "hash",
            IdMode::Auto => "auto",
        }
    }
}

raw_section! {
/// The configuration file as written: every key optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Cloudflare account id.
    pub account_id: Option<String>,
    /// API token (better: `CLOUDFLARE_API_TOKEN` or `api_token_file`).
    pub api_token: Option<Secret>,
    /// A file holding the API token (systemd credentials).
    pub api_token_file: Option<PathBuf>,
    /// Base URL of the API host.
    pub api_base_url: Option<String>,
    /// Base URL of the batch host.
    pub batch_base_url: Option<String>,
    /// Path of the SQLite ledger.
    pub ledger: Option<PathBuf>,
    /// `[upload]` section.
    #[serde(default)]
    pub upload: RawUpload,
    /// `[walk]` section.
    #[serde(default)]
    pub walk: RawWalk,
    /// `[manifest]` section.
    #[serde(default)]
    pub manifest: RawManifest,
    /// `[bucket]` section.
    #[serde(default)]
    pub bucket: RawBucket,
    /// `[download]` section.
    #[serde(default)]
    pub download: RawDownload,
    /// `[watch]` section.
    #[serde(default)]
    pub watch: RawWatch,
    /// `[serve]` section.
    #[serde(default)]
    pub serve: RawServe,
}
}

raw_section! {
/// `[download]` as written: time limits of cfimg's own downloads (manifest URLs in local
/// mode, bucket objects in download mode).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    /// Fewest bytes each window must bring, or the download is cut off.
    pub floor_bytes: Option<u64>,
    /// The window of the floor, in seconds.
    pub floor_window_secs: Option<f64>,
    /// Longest time one download may take, in seconds.
    pub deadline_secs: Option<f64>,
}
}

raw_section! {
/// `[upload]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    /// Uploads in flight at once.
    pub concurrency: Option<usize>,
    /// Requests per second over every HTTP attempt.
    pub rate: Option<f64>,
    /// Requests that may go at once after an idle spell.
    pub burst: Option<u32>,
    /// HTTP attempts per request before the item is deferred.
    pub max_attempts: Option<u32>,
    /// Timeout of one HTTP request, in seconds.
    pub request_timeout_secs: Option<f64>,
    /// `path`, `hash` or `auto`.
    pub id_mode: Option<IdMode>,
    /// Prepended to custom ids.
    pub id_prefix: Option<String>,
    /// Metadata added to every image.
    pub metadata: Option<Map<String, Value>>,
    /// Upload private images (needs `id_mode = "auto"`).
    pub require_signed_urls: Option<bool>,
    /// Seconds in-flight uploads get to finish after Ctrl-C or SIGTERM.
    pub shutdown_grace_secs: Option<f64>,
    /// Leave replaced images in place, recorded as superseded.
    pub keep_replaced: Option<bool>,
    /// Seconds lists may lag behind uploads: after an ambiguous answer, duplicates are
    /// looked for again once this has passed (`settle_secs`, its old name, is accepted).
    #[serde(alias = "settle_secs")]
    pub list_lag_secs: Option<f64>,
    /// `api` or `batch`: where uploads go.
    pub transport: Option<Transport>,
    /// Batch tokens used in parallel (`transport = "batch"`).
    pub batch_tokens: Option<u32>,
    /// Requests per second per batch token.
    pub batch_rate: Option<f64>,
}
}

/// A checked configuration; only [`load`] makes one.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cloudflare account id (empty when credentials were not needed).
    pub account_id: String,
    /// API token (empty when credentials were not needed).
    pub api_token: Secret,
    /// Base URL of the API host.
    pub api_base_url: Url,
    /// Base URL of the batch host.
    pub batch_base_url: Url,
    /// Path of the SQLite ledger.
    pub ledger: PathBuf,
    /// Upload settings.
    pub upload: UploadConfig,
    /// Folder-walk settings.
    pub walk: WalkConfig,
    /// URL-manifest settings.
    pub manifest: ManifestConfig,
    /// Bucket-source settings.
    pub bucket: BucketConfig,
    /// Time limits of downloads.
    pub download: crate::download::Bounds,
    /// Watch settings.
    pub watch: WatchConfig,
    /// `cfimg serve` settings.
    pub serve: ServeConfig,
}

/// Checked `[upload]` settings.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Uploads in flight at once.
    pub concurrency: usize,
    /// Requests per second over every HTTP attempt.
    pub rate: f64,
    /// Requests that may go at once after an idle spell.
    pub burst: u32,
    /// HTTP attempts per request before the item is deferred.
    pub max_attempts: u32,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How ids are chosen.
    pub id_mode: IdMode,
    /// Prepended to custom ids.
    pub id_prefix: String,
    /// Metadata added to every image, besides cfimg's stamp.
    pub metadata: Map<String, Value>,
    /// Upload private images.
    pub require_signed_urls: bool,
    /// Time in-flight uploads get to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// Leave replaced images in place, recorded as superseded.
    pub keep_replaced: bool,
    /// How long lists may lag behind uploads.
    pub list_lag: Duration,
    /// Where uploads go.
    pub transport: Transport,
    /// Batch tokens used in parallel.
    pub batch_tokens: u32,
    /// Requests per second per batch token.
    pub batch_rate: f64,
}

impl Config {
    /// What opening a source takes from these settings.
    pub fn source_settings(&self) -> crate::source::Settings {
        crate::source::Settings {
            walk: self.walk.clone(),
            bucket: self.bucket.clone(),
            url_mode: self.manifest.url_mode,
            download: self.download,
            // Set by the command that downloads URLs (`migrate`): the retry policy is the
            // transport's, which config does not reach.
            fetch_retry: None,
        }
    }
}

/// Reads the environment variables cfimg honours into a partial configuration.
pub fn from_env() -> RawConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    RawConfig {
        account_id: var("CLOUDFLARE_ACCOUNT_ID"),
        api_token: var("CLOUDFLARE_API_TOKEN").map(Secret::new),
        // systemd's LoadCredential=api_token:... puts it here, readable by the service only.
        api_token_file: var("CREDENTIALS_DIRECTORY")
            .map(|d| Path::new(&d).join("api_token"))
            .filter(|p| p.is_file() && var("CLOUDFLARE_API_TOKEN").is_none()),
        api_base_url: var("CFIMG_API_BASE_URL"),
        batch_base_url: var("CFIMG_BATCH_BASE_URL"),
        ledger: var("CFIMG_LEDGER").map(PathBuf::from),
        serve: RawServe {
            webhook_secret: var("CFIMG_WEBHOOK_SECRET").map(Secret::new),
            ..RawServe::default()
        },
        bucket: RawBucket {
            endpoint_url: var("AWS_ENDPOINT_URL"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            mode: None,
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            google_service_account: var("GOOGLE_SERVICE_ACCOUNT")
                .or_else(|| var("GOOGLE_SERVICE_ACCOUNT_PATH")),
            google_service_account_key: var("GOOGLE_SERVICE_ACCOUNT_KEY").map(Secret::new),
            google_application_credentials: var("GOOGLE_APPLICATION_CREDENTIALS"),
            storage_emulator_host: var("STORAGE_EMULATOR_HOST"),
            azure_account: var("AZURE_STORAGE_ACCOUNT_NAME")
                .or_else(|| var("AZURE_STORAGE_ACCOUNT")),
            azure_access_key: var("AZURE_STORAGE_ACCOUNT_KEY")
                .or_else(|| var("AZURE_STORAGE_KEY"))
                .map(Secret::new),
            azure_sas_token: var("AZURE_STORAGE_SAS_TOKEN").map(Secret::new),
            azure_client_id: var("AZURE_CLIENT_ID"),
            azure_client_secret: var("AZURE_CLIENT_SECRET").map(Secret::new),
            azure_tenant_id: var("AZURE_TENANT_ID"),
        },
        ..RawConfig::default()
    }
}

/// Reads a TOML configuration file.
pub fn from_file(path: &Path) -> Result<RawConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(vec![format!(
            "cannot read config file {}: {e}",
            path.display()
        )])
    })?;
    // Never the toml crate's Display: it quotes the line, which may hold a secret.
    toml::from_str(&text).map_err(|e| {
        Error::Config(vec![format!(
            "config file {}: {}",
            path.display(),
            crate::toml_error::describe(&text, &e)
        )])
    })
}

impl RawConfig {
    /// Layers `over` on top of `self`: every key `over` sets wins.
    pub fn merge(mut self, over: RawConfig) -> RawConfig {
        // A token from a higher layer replaces a token file from a lower one and vice versa.
        if over.api_token.is_some() || over.api_token_file.is_some() {
            self.api_token = None;
            self.api_token_file = None;
        }
        self.layer(over)
    }
}

/// Merges file, environment and flags, in rising precedence, without checking.
pub fn load_raw(file: Option<&Path>, flags: RawConfig) -> Result<RawConfig> {
    let base = match file {
        Some(path) => from_file(path)?,
        None => RawConfig::default(),
    };
    Ok(base.merge(from_env()).merge(flags))
}

/// Merges file, environment and flags and checks the result.
/// `needs_credentials` is false for commands that never call the API.
pub fn load(file: Option<&Path>, flags: RawConfig, needs_credentials: bool) -> Result<Config> {
    validate(load_raw(file, flags)?, needs_credentials)
}

/// Checks a merged configuration, collecting every problem. Each section is checked by its
/// own function, in the order their problems are reported.
pub fn validate(raw: RawConfig, needs_credentials: bool) -> Result<Config> {
    let mut problems = Vec::new();
    let (account_id, token) = validate_credentials(
        raw.account_id,
        raw.api_token,
        raw.api_token_file,
        needs_credentials,
        &mut problems,
    );
    let api_base_url = parse_url(
        "api_base_url",
        raw.api_base_url.as_deref().unwrap_or(DEFAULT_API_BASE_URL),
        &mut problems,
    );
    let batch_base_url = parse_url(
        "batch_base_url",
        raw.batch_base_url
            .as_deref()
            .unwrap_or(DEFAULT_BATCH_BASE_URL),
        &mut problems,
    );
    let upload = validate_upload(raw.upload, &mut problems);
    let walk = validate_walk(raw.walk, &mut problems);
    let bucket = validate_bucket(raw.bucket, &mut problems);
    let watch = validate_watch(raw.watch, &mut problems);
    let serve = validate_serve(raw.serve, &mut problems);
    let download = validate_download(&raw.download, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    Ok(Config {
        account_id,
        api_token: Secret::new(token),
        api_base_url: api_base_url
            .unwrap_or_else(|| Url::parse(DEFAULT_API_BASE_URL).expect("constant URL")),
        batch_base_url: batch_base_url
            .unwrap_or_else(|| Url::parse(DEFAULT_BATCH_BASE_URL).expect("constant URL")),
        ledger: raw.ledger.unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER)),
        upload,
        walk,
        manifest: validate_manifest(raw.manifest),
        bucket,
        download,
        watch,
        serve,
    })
}

/// The account id and the token (read from `api_token_file` if that is how it is given).
fn validate_credentials(
    account_id: Option<String>,
    api_token: Option<Secret>,
    api_token_file: Option<PathBuf>,
    needs_credentials: bool,
    problems: &mut Vec<String>,
) -> (String, String) {
    let account_id = account_id.unwrap_or_default().trim().to_string();
    if needs_credentials && account_id.is_empty() {
        problems.push(
            "account id is missing: set CLOUDFLARE_ACCOUNT_ID or `account_id` in the config file \
             (dashboard > Images > Overview > Account ID)"
                .to_string(),
        );
    } else if account_id.len() > 32 || !account_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        problems.push(format!(
            "`account_id` {account_id:?} is not an account id: at most 32 letters and digits"
        ));
    }

    let token = match (api_token, api_token_file) {
        (Some(_), Some(_)) => {
            problems.push(
                "both `api_token` and `api_token_file` are set: keep one of them".to_string(),
            );
            None
        }
        (Some(t), None) => Some(t),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(t) => Some(Secret::new(t)),
            Err(e) => {
                problems.push(format!(
                    "`api_token_file` {}: cannot read it ({e}); point it at a file holding only the token",
                    path.display()
                ));
                None
            }
        },
        (None, None) => None,
    };
    let token = token
        .map(|t| t.expose().trim().to_string())
        .unwrap_or_default();
    if needs_credentials && token.is_empty() {
        problems.push(
            "API token is missing: set CLOUDFLARE_API_TOKEN, or `api_token_file` in the config \
             file (a token with the Account > Cloudflare Images > Edit permission)"
                .to_string(),
        );
    }
    (account_id, token)
}

/// `[upload]`: the limits, then the id settings ([`validate_ids`]).
fn validate_upload(u: RawUpload, problems: &mut Vec<String>) -> UploadConfig {
    let concurrency = u.concurrency.unwrap_or(8);
    if !(1..=512).contains(&concurrency) {
        problems.push(format!(
            "`upload.concurrency` (--concurrency) is {concurrency}: use 1 to 512"
        ));
    }
    let rate = u.rate.unwrap_or(DEFAULT_RATE);
    if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
        problems.push(format!(
            "`upload.rate` (--rate) is {rate}: use a number of requests per second above 0 \
             (Cloudflare allows 4/s per user on the API host; the default is {DEFAULT_RATE})"
        ));
    }
    let burst = u.burst.unwrap_or(1);
    if burst == 0 {
        problems.push("`upload.burst` is 0: use 1 or more".to_string());
    }
    let max_attempts = u.max_attempts.unwrap_or(6);
    if !(1..=100).contains(&max_attempts) {
        problems.push(format!(
            "`upload.max_attempts` is {max_attempts}: use 1 to 100"
        ));
    }
    let request_timeout = secs(
        "upload.request_timeout_secs",
        u.request_timeout_secs,
        120.0,
        problems,
    );
    let shutdown_grace = secs(
        "upload.shutdown_grace_secs",
        u.shutdown_grace_secs,
        30.0,
        problems,
    );
    let list_lag = secs(
        "upload.list_lag_secs",
        u.list_lag_secs,
        DEFAULT_LIST_LAG_SECS,
        problems,
    );
    let batch_tokens = u.batch_tokens.unwrap_or(1);
    if !(1..=MAX_BATCH_TOKENS).contains(&batch_tokens) {
        problems.push(format!(
            "`upload.batch_tokens` (--batch-tokens) is {batch_tokens}: use 1 to {MAX_BATCH_TOKENS}"
        ));
    }
    let batch_rate = u.batch_rate.unwrap_or(DEFAULT_BATCH_RATE);
    if !(batch_rate.is_finite() && batch_rate > 0.0 && batch_rate <= 200.0) {
        problems.push(format!(
            "`upload.batch_rate` (--batch-rate) is {batch_rate}: use requests per second per \
             batch token above 0 and at most 200, the batch host's limit (default {DEFAULT_BATCH_RATE})"
        ));
    }
    let id_mode = u.id_mode.unwrap_or(IdMode::Path);
    let require_signed_urls = u.require_signed_urls.unwrap_or(false);
    let id_prefix = u.id_prefix.unwrap_or_default();
    validate_ids(id_mode, require_signed_urls, &id_prefix, problems);
    let metadata = u.metadata.unwrap_or_default();
    if let Err(why) = stamp::check_user_metadata(&metadata) {
        problems.push(format!("`upload.metadata` (--metadata): {why}"));
    }
    UploadConfig {
        concurrency,
        rate,
        burst,
        max_attempts,
        request_timeout,
        id_mode,
        id_prefix,
        metadata,
        require_signed_urls,
        shutdown_grace,
        keep_replaced: u.keep_replaced.unwrap_or(false),
        list_lag,
        transport: u.transport.unwrap_or_default(),
        batch_tokens,
        batch_rate,
    }
}

/// How ids are chosen: private images and a prefix both need ids cfimg chooses.
fn validate_ids(
    id_mode: IdMode,
    require_signed_urls: bool,
    id_prefix: &str,
    problems: &mut Vec<String>,
) {
    if require_signed_urls && id_mode != IdMode::Auto {
        problems.push(format!(
            "private images (--require-signed-urls) cannot have custom ids, and `upload.id_mode` \
             (--id-mode) is {:?}: use --id-mode auto",
            id_mode.as_str()
        ));
    }
    if id_mode == IdMode::Auto && !id_prefix.is_empty() {
        problems.push(
            "`upload.id_prefix` (--id-prefix) is set but `id_mode` is auto: Cloudflare assigns \
             the ids, so drop the prefix or use --id-mode path|hash"
                .to_string(),
        );
    }
    if id_prefix.starts_with('/') {
        problems.push(format!(
            "`upload.id_prefix` {id_prefix:?} starts with '/': ids must not; drop the leading slash"
        ));
    }
}

fn validate_download(d: &RawDownload, problems: &mut Vec<String>) -> crate::download::Bounds {
    use crate::download::{DEFAULT_DEADLINE, DEFAULT_FLOOR_BYTES, DEFAULT_FLOOR_WINDOW};
    crate::download::Bounds {
        floor_bytes: d.floor_bytes.unwrap_or(DEFAULT_FLOOR_BYTES),
        floor_window: secs(
            "download.floor_window_secs",
            d.floor_window_secs,
            DEFAULT_FLOOR_WINDOW.as_secs_f64(),
            problems,
        ),
        deadline: secs(
            "download.deadline_secs",
            d.deadline_secs,
            DEFAULT_DEADLINE.as_secs_f64(),
            problems,
        ),
    }
}

raw_section! {
/// `[serve]` as written: the HTTP service for apps (`cfimg serve`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    /// Address to listen on.
    pub listen: Option<String>,
    /// App keys by app name (better: `app_keys_file`).
    pub app_keys: Option<std::collections::BTreeMap<String, Secret>>,
    /// A file of `name = key` lines (systemd credentials).
    pub app_keys_file: Option<PathBuf>,
    /// The secret Cloudflare sends in `cf-webhook-auth` (better: `webhook_secret_file` or
    /// `CFIMG_WEBHOOK_SECRET`).
    pub webhook_secret: Option<Secret>,
    /// A file holding only the webhook secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// Browser origins allowed to call the service (CORS).
    pub cors_origins: Option<Vec<String>>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: Option<usize>,
    /// Mints per second per app key.
    pub key_rate: Option<f64>,
    /// Mints an app key may make at once after an idle spell.
    pub key_burst: Option<u32>,
    /// Seconds between passes of the reconciler over pending drafts.
    pub reconcile_secs: Option<f64>,
    /// Longest wait for the account's limiter before a mint is answered 429.
    pub max_wait_secs: Option<f64>,
    /// Seconds a request head may take from its first byte.
    pub header_timeout_secs: Option<f64>,
    /// Seconds a connection may stay silent with no request in progress.
    pub idle_timeout_secs: Option<f64>,
    /// Seconds the next piece of a request body may take.
    pub body_timeout_secs: Option<f64>,
    /// Seconds from a request's head to its answer, body and handling included.
    pub request_timeout_secs: Option<f64>,
    /// Connections served at once (0 or absent: sized from the open-file limit).
    pub max_connections: Option<usize>,
}
}

/// Checked `[serve]` settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// App keys: (app name, key).
    pub app_keys: Vec<(String, Secret)>,
    /// The webhook secret; `None` accepts no webhook.
    pub webhook_secret: Option<Secret>,
    /// Browser origins allowed to call the service.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Mints per second per app key.
    pub key_rate: f64,
    /// Mints at once per app key.
    pub key_burst: u32,
    /// Time between reconciler passes.
    pub reconcile: Duration,
    /// Longest wait for the account's limiter before a mint is answered 429.
    pub max_wait: Duration,
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this long without a byte.
    pub idle_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Longest time from a request's head to its answer.
    pub request_timeout: Duration,
    /// Connections served at once; `None`: sized from the open-file limit at start.
    pub max_connections: Option<usize>,
    /// Secret files that could not be read: `cfimg serve` stops on them; other commands,
    /// which may run where the service's credentials are not visible, do not.
    pub unreadable: Vec<String>,
}

/// The address `cfimg serve` listens on by default.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8788";

fn validate_serve(s: RawServe, problems: &mut Vec<String>) -> ServeConfig {
    let mut unreadable = Vec::new();
    let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_SERVE_LISTEN);
    let listen = listen_text.parse().unwrap_or_else(|_| {
        problems.push(format!(
            "`serve.listen` (--listen) {listen_text:?} is not an address: use HOST:PORT, e.g. {DEFAULT_SERVE_LISTEN}"
        ));
        std::net::SocketAddr::from(([127, 0, 0, 1], 8788))
    });
    let app_keys = read_app_keys(s.app_keys, s.app_keys_file, problems, &mut unreadable);
    let webhook_secret = read_webhook_secret(
        s.webhook_secret,
        s.webhook_secret_file,
        problems,
        &mut unreadable,
    );
    let cors_origins = s.cors_origins.unwrap_or_default();
    for o in &cors_origins {
        let ok = Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.path() == "/" && !o.ends_with('/')
        });
        if !ok {
            problems.push(format!(
                "`serve.cors_origins` {o:?} is not an origin: use scheme://host[:port] with no path, e.g. https://app.example.com"
            ));
        }
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(16 * 1024);
    if !(1024..=1024 * 1024).contains(&max_body_bytes) {
        problems.push(format!(
            "`serve.max_body_bytes` is {max_body_bytes}: use 1024 to 1048576"
        ));
    }
    let key_rate = s.key_rate.unwrap_or(1.0);
    if !(key_rate.is_finite() && key_rate > 0.0) {
        problems.push(format!(
            "`serve.key_rate` is {key_rate}: use mints per second per app key above 0"
        ));
    }
    let key_burst = s.key_burst.unwrap_or(10);
    if key_burst == 0 {
        problems.push("`serve.key_burst` is 0: use 1 or more".to_string());
    }
    ServeConfig {
        listen,
        app_keys,
        webhook_secret,
        cors_origins,
        max_body_bytes,
        key_rate,
        key_burst,
        reconcile: secs("serve.reconcile_secs", s.reconcile_secs, 60.0, problems),
        max_wait: secs("serve.max_wait_secs", s.max_wait_secs, 2.0, problems),
        header_timeout: secs(
            "serve.header_timeout_secs",
            s.header_timeout_secs,
            10.0,
            problems,
        ),
        idle_timeout: secs(
            "serve.idle_timeout_secs",
            s.idle_timeout_secs,
            75.0,
            problems,
        ),
        body_timeout: secs(
            "serve.body_timeout_secs",
            s.body_timeout_secs,
            10.0,
            problems,
        ),
        request_timeout: secs(
            "serve.request_timeout_secs",
            s.request_timeout_secs,
            30.0,
            problems,
        ),
        max_connections: s.max_connections.filter(|n| *n > 0),
        unreadable,
    }
}

/// `serve.app_keys` and the lines of `serve.app_keys_file`, checked: no reserved or repeated
/// app name, no short key. A file that cannot be read goes to `unreadable`.
fn read_app_keys(
    inline: Option<std::collections::BTreeMap<String, Secret>>,
    file: Option<PathBuf>,
    problems: &mut Vec<String>,
    unreadable: &mut Vec<String>,
) -> Vec<(String, Secret)> {
    let mut app_keys: Vec<(String, Secret)> = inline.unwrap_or_default().into_iter().collect();
    if let Some(path) = &file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    match line.split_once('=') {
                        Some((name, key)) if !name.trim().is_empty() && !key.trim().is_empty() => {
                            app_keys.push((name.trim().to_string(), Secret::new(key.trim())))
                        }
                        _ => problems.push(format!(
                            "`serve.app_keys_file` {} line {}: expected `name = key`",
                            path.display(),
                            n + 1
                        )),
                    }
                }
            }
            Err(e) => unreadable.push(format!(
                "`serve.app_keys_file` {}: cannot read it ({e}); point it at a file of `name = key` lines",
                path.display()
            )),
        }
    }
    for (name, key) in &app_keys {
        // A draft belongs to the app that minted it: `cli` is `cfimg direct-upload create`'s,
        // `demo` the key of `serve --demo`. A key with either name would read their drafts.
        if matches!(name.as_str(), "cli" | "demo") {
            problems.push(format!(
                "`serve.app_keys`: the app name {name:?} is reserved (`cli` names drafts minted by `cfimg direct-upload create`, `demo` the key of `serve --demo`); rename the app"
            ));
        }
        // Short keys can be guessed; the comparison is constant-time, the key space is not.
        if key.expose().len() < 16 {
            problems.push(format!(
                "`serve.app_keys` {name:?}: the key is shorter than 16 characters; use a random one (e.g. `openssl rand -hex 24`)"
            ));
        }
    }
    let mut names: Vec<&str> = app_keys.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        problems.push(format!(
            "`serve.app_keys`: the app {:?} is defined twice (in the file and in app_keys_file?); keep one",
            w[0]
        ));
    }
    app_keys
}

/// `serve.webhook_secret` or the file holding it; an empty secret is none.
fn read_webhook_secret(
    inline: Option<Secret>,
    file: Option<PathBuf>,
    problems: &mut Vec<String>,
    unreadable: &mut Vec<String>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(
                "both `serve.webhook_secret` (or CFIMG_WEBHOOK_SECRET) and `serve.webhook_secret_file` are set: keep one of them"
                    .to_string(),
            );
            None
        }
        (Some(v), None) => Some(v),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(v) => Some(Secret::new(v.trim())),
            Err(e) => {
                unreadable.push(format!(
                    "`serve.webhook_secret_file` {}: cannot read it ({e}); point it at a file holding only the secret",
                    path.display()
                ));
                None
            }
        },
        (None, None) => None,
    }
    .filter(|v| !v.expose().is_empty())
}

fn parse_url(key: &str, value: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(value.trim_end_matches('/')) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(_) | Err(_) => {
            problems.push(format!(
                "`{key}` {value:?} is not an http(s) URL, e.g. {DEFAULT_API_BASE_URL}"
            ));
            None
        }
    }
}

/// Parses the `--metadata` flag: a JSON object.
pub fn parse_metadata_flag(text: &str) -> Result<Map<String, Value>> {
    rules::validate_metadata(text).map_err(|why| Error::Config(vec![format!("--metadata: {why}")]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> RawConfig {
        RawConfig {
            account_id: Some("abc123".into()),
            api_token: Some(Secret::new("tok")),
            ..RawConfig::default()
        }
    }

    #[test]
    fn defaults_are_safe_under_cloudflare_limits() {
        let c = validate(creds(), true).unwrap();
        assert!(c.upload.rate * 300.0 < 1200.0);
        assert_eq!(c.upload.id_mode, IdMode::Path);
        assert_eq!(c.api_base_url.as_str(), DEFAULT_API_BASE_URL);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let raw = RawConfig {
            api_base_url: Some("ftp://x".into()),
            upload: RawUpload {
                concurrency: Some(0),
                rate: Some(-1.0),
                require_signed_urls: Some(true),
                ..RawUpload::default()
            },
            ..RawConfig::default()
        };
        let Err(Error::Config(problems)) = validate(raw, true) else {
            panic!("expected a config error");
        };
        let all = problems.join("\n");
        for needle in [
            "account id is missing",
            "API token is missing",
            "api_base_url",
            "upload.concurrency",
            "upload.rate",
            "--id-mode auto",
        ] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
    }

    #[test]
    fn a_duration_too_long_says_so() {
        let mut raw = creds();
        raw.download.deadline_secs = Some(1e12);
        let Err(Error::Config(problems)) = validate(raw, true) else {
            panic!("expected a config error");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("download.deadline_secs") && all.contains("below 86400"),
            "{all}"
        );
    }

    #[test]
    fn later_layers_win_and_token_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "from-file\n").unwrap();
        let file = RawConfig {
            api_token: Some(Secret::new("in-config")),
            upload: RawUpload {
                rate: Some(2.0),
                concurrency: Some(3),
                ..RawUpload::default()
            },
            ..creds()
        };
        let flags = RawConfig {
            api_token_file: Some(token_file),
            upload: RawUpload {
                rate: Some(1.0),
                ..RawUpload::default()
            },
            ..RawConfig::default()
        };
        let c = validate(file.merge(flags), true).unwrap();
        assert_eq!(c.api_token.expose(), "from-file");
        assert_eq!(c.upload.rate, 1.0);
        assert_eq!(c.upload.concurrency, 3);
    }

    #[test]
    fn every_section_layers_key_by_key() {
        let file: RawConfig = toml::from_str(
            r#"
            ledger = "file.sqlite"
            [upload]
            keep_replaced = true
            rate = 2.0
            [walk]
            include = ["*.jpg"]
            [manifest]
            url_mode = "local"
            [bucket]
            region = "eu-west-1"
            [download]
            deadline_secs = 9.0
            [watch]
            max_delete = "7"
            settle_secs = 3.0
            [serve]
            listen = "127.0.0.1:9001"
            key_burst = 4
            "#,
        )
        .unwrap();
        let flags: RawConfig = toml::from_str(
            r#"
            [upload]
            rate = 1.0
            [watch]
            settle_secs = 4.0
            [serve]
            key_burst = 5
            "#,
        )
        .unwrap();
        let c = validate(creds().merge(file).merge(flags), true).unwrap();
        // What the upper layer sets wins...
        assert_eq!(c.upload.rate, 1.0);
        assert_eq!(c.watch.settle, Duration::from_secs(4));
        assert_eq!(c.serve.key_burst, 5);
        // ...and what it leaves unset keeps the lower layer's value, in every section.
        assert_eq!(c.ledger, PathBuf::from("file.sqlite"));
        assert!(c.upload.keep_replaced);
        assert_eq!(c.walk.include, vec!["*.jpg".to_string()]);
        assert_eq!(c.manifest.url_mode, UrlMode::Local);
        assert_eq!(c.bucket.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.download.deadline, Duration::from_secs(9));
        assert_eq!(c.watch.max_delete, MaxDelete::Count(7));
        assert_eq!(c.serve.listen.port(), 9001);
        assert_eq!(c.account_id, creds().account_id.unwrap());

        // A token replaces a lower token file (and the other way round), never "both set".
        let lower = RawConfig {
            api_token_file: Some(PathBuf::from("/nonexistent/token")),
            ..RawConfig::default()
        };
        let merged = lower.merge(creds());
        assert!(merged.api_token_file.is_none());
        assert_eq!(validate(merged, true).unwrap().api_token.expose(), "tok");
    }

    #[test]
    fn the_example_config_parses_with_its_bucket_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let raw = from_file(&path).unwrap();
        assert_eq!(raw.bucket.mode, Some(S3Mode::Download));
        let watch = validate(raw.clone().merge(creds()), true).unwrap().watch;
        assert_eq!(watch.max_delete, MaxDelete::Percent(5.0));
        assert_eq!(watch.settle, Duration::from_secs(2));
        let bad = RawConfig {
            bucket: RawBucket {
                endpoint_url: Some("minio:9000".into()),
                region: Some("eu west".into()),
                ..RawBucket::default()
            },
            ..creds()
        };
        let err = validate(bad, true).unwrap_err().to_string();
        assert!(
            err.contains("bucket.endpoint_url") && err.contains("bucket.region"),
            "{err}"
        );
    }

    #[test]
    fn batch_settings_default_and_are_bounded() {
        let c = validate(creds(), true).unwrap();
        assert_eq!(c.upload.transport, Transport::Api);
        assert_eq!(
            (c.upload.batch_tokens, c.upload.batch_rate),
            (1, DEFAULT_BATCH_RATE)
        );
        let raw = RawConfig {
            upload: RawUpload {
                batch_tokens: Some(33),
                batch_rate: Some(250.0),
                ..RawUpload::default()
            },
            ..creds()
        };
        let err = validate(raw, true).unwrap_err().to_string();
        assert!(
            err.contains("upload.batch_tokens") && err.contains("upload.batch_rate"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[upload]\nconcurency = 4\n").unwrap();
        let err = from_file(&path).unwrap_err().to_string();
        assert!(err.contains("concurency"), "{err}");
    }

    #[test]
    fn serve_settings_are_checked_and_app_keys_come_from_a_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("app_keys");
        std::fs::write(&keys, "# apps\nios = k-ios-0123456789abcdef\nbroken line\n").unwrap();
        let raw = RawConfig {
            serve: RawServe {
                listen: Some("nowhere".into()),
                app_keys: Some([("web".to_string(), Secret::new("short"))].into()),
                app_keys_file: Some(keys.clone()),
                cors_origins: Some(vec![
                    "https://ok.example".into(),
                    "https://x.example/path".into(),
                ]),
                ..RawServe::default()
            },
            ..RawConfig::default()
        };
        let Err(Error::Config(problems)) = validate(raw, false) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        for needle in [
            "serve.listen",
            "line 3",
            "\"web\": the key is shorter",
            "x.example/path",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        assert!(!all.contains("k-ios-0123456789abcdef"), "{all}");
        std::fs::write(&keys, "ios = k-ios-0123456789abcdef\n").unwrap();
        let cfg = validate(
            RawConfig {
                serve: RawServe {
                    app_keys_file: Some(keys),
                    ..RawServe::default()
                },
                ..RawConfig::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(cfg.serve.app_keys[0].0, "ios");
        assert_eq!(cfg.serve.listen.to_string(), DEFAULT_SERVE_LISTEN);
        assert!(cfg.serve.webhook_secret.is_none());
        // A secret file only the service can see stops `serve`, not every other command.
        let elsewhere = validate(
            RawConfig {
                serve: RawServe {
                    app_keys_file: Some(dir.path().join("not-here")),
                    ..RawServe::default()
                },
                ..RawConfig::default()
            },
            false,
        )
        .unwrap();
        assert!(elsewhere.serve.unreadable[0].contains("serve.app_keys_file"));
    }
}

// These check `toml_error` against the real config schema; they live here so that
// `toml_error` (used by `config`) does not import `config` back (issue 19).
#[cfg(test)]
mod toml_error_tests {
    use crate::toml_error::describe;

    fn err(text: &str) -> String {
        match toml::from_str::<crate::config::RawConfig>(text) {
            Ok(_) => panic!("{text} parsed"),
            Err(e) => describe(text, &e),
        }
    }

    #[test]
    fn names_line_and_key_but_never_a_secret() {
        let secret = "S3CR3T-value-0123456789";
        for (text, line, key) in [
            (format!("api_token = \"{secret}\n"), 1, "api_token"),
            (
                format!("ledger = \"l\"\n[serve]\nwebhook_secret = {secret}\n"),
                3,
                "serve.webhook_secret",
            ),
            (
                format!("[serve.app_keys]\nweb = \"{secret}\" x\n"),
                2,
                "serve.app_keys.web",
            ),
            (
                format!("[serve]\napp_keys = \"{secret}\"\n"),
                2,
                "serve.app_keys",
            ),
            (
                "[serve]\nwebhook_secret = 12345678\n".to_string(),
                2,
                "serve.webhook_secret",
            ),
            (
                format!("[bucket]\nsecret_access_key = \"{secret}\"\n"),
                2,
                "bucket.secret_access_key",
            ),
        ] {
            let e = err(&text);
            assert!(
                !e.contains(secret) && !e.contains("12345678"),
                "{text}: {e}"
            );
            assert!(e.contains(&format!("line {line},")), "{text}: {e}");
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        // Inside a multi-line inline table or array: the key that opened it.
        for text in [
            "[serve]\napp_keys = {\n  web = 12345678,\n}\n",
            "[serve]\napp_keys = { # a '\"[ comment\n  web = 12345678,\n}\n",
            "[serve]\napp_keys = [\n  12345678,\n]\n",
        ] {
            let e = err(text);
            assert!(!e.contains("12345678"), "{text}: {e}");
            assert!(e.contains("`serve.app_keys`"), "{text}: {e}");
        }
        // Inside a multi-line string: nothing of the line, even if it looks like a key.
        let e = err(&format!("[serve]\nwebhook_secret = \"\"\"\nabc={secret}\n"));
        assert!(!e.contains("abc") && !e.contains("S3CR3T"), "{e}");
        // A token pasted on a line of its own: its line number only.
        let e = err(&format!("[upload]\nrate = 2\n{secret}==\n"));
        assert!(
            !e.contains("S3CR3T") && e.starts_with("line 3, column"),
            "{e}"
        );
    }

    #[test]
    fn ordinary_keys_keep_the_parsers_message() {
        let e = err("[upload]\nrate = \"fast\"\n");
        assert!(
            e.contains("line 2") && e.contains("upload.rate") && e.contains("fast"),
            "{e}"
        );
    }
}
