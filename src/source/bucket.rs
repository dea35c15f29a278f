//! A bucket as a source: Amazon S3 or an S3-compatible service (`s3://`, R2, MinIO, ...),
//! Google Cloud Storage (`gs://`) or Azure Blob Storage (`az://`), read through the
//! `object_store` crate (it signs every request; cfimg signs nothing by hand; GCS is listed
//! and read through its JSON API, see `gcs.rs`). The URL's scheme picks the store; all
//! else is one code path. cfimg only reads the bucket: it lists and gets objects, or has
//! Cloudflare fetch signed GET URLs.
//!
//! The prefix is a folder: `s3://b/media/2019` and `s3://b/media/2019/` both mean the
//! objects whose key starts with `media/2019/` (never `media/2019-old/...`, never
//! `Media/2019/...`: keys are compared byte for byte, as the stores do). The stores list a
//! prefix at `/` boundaries in just this way; the keys are filtered again by raw string
//! prefix so the rule never depends on the server. An item's key is the object key
//! relative to the prefix, so path ids look like those of a folder.
//!
//! The listing is streamed page by page (S3 and GCS pages hold at most 1000 keys, Azure's
//! 5000) into the pipeline's bounded channel; it is never collected. Folder placeholders
//! (zero-byte keys such as `photos/`) are passed over with their reason; an empty object is
//! rejected with its reason, as an empty file is, without a GET.
//!
//! The quick check: an object whose size and change token (S3's and Azure's ETag, GCS's
//! generation) the ledger already holds is skipped without being read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, ObjectMeta, ObjectStore, RetryConfig, StaticCredentialProvider,
};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gcs::{self, Gcs};
use super::{Found, Recount};
use crate::download::Bounds;
use crate::error::{Error, Result};
use crate::item::{Body, Fingerprint, Item, ItemOptions, Locator, SourceId, SourceKind};
use crate::layer::raw_section;
use crate::secret::Secret;

/// How a bucket object's bytes reach Cloudflare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum S3Mode {
    /// cfimg downloads each object, checks and hashes it, then uploads it.
    #[default]
    Download,
    /// Cloudflare fetches a signed GET URL (valid one hour); cfimg never holds the bytes.
    Presign,
}

raw_section! {
/// `[bucket]` as written; the credentials come from the environment only.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    /// The API endpoint: of an S3-compatible service (R2, MinIO), a GCS base URL, or an
    /// Azure storage account's blob endpoint; the store's public one when unset.
    pub endpoint_url: Option<String>,
    /// The region to sign for (S3).
    pub region: Option<String>,
    /// `download` or `presign`.
    pub mode: Option<S3Mode>,
    /// `AWS_ACCESS_KEY_ID`.
    #[serde(skip)]
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    #[serde(skip)]
    pub secret_access_key: Option<Secret>,
    /// `AWS_SESSION_TOKEN`.
    #[serde(skip)]
    pub session_token: Option<Secret>,
    /// `GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_SERVICE_ACCOUNT_PATH`): a service-account key file.
    #[serde(skip)]
    pub google_service_account: Option<String>,
    /// `GOOGLE_SERVICE_ACCOUNT_KEY`: a service-account key, the JSON itself.
    #[serde(skip)]
    pub google_service_account_key: Option<Secret>,
    /// `GOOGLE_APPLICATION_CREDENTIALS`: application default credentials (a file).
    #[serde(skip)]
    pub google_application_credentials: Option<String>,
    /// `STORAGE_EMULATOR_HOST`: a GCS emulator's URL; requests carry no token.
    #[serde(skip)]
    pub storage_emulator_host: Option<String>,
    /// `AZURE_STORAGE_ACCOUNT_NAME` (or `AZURE_STORAGE_ACCOUNT`).
    #[serde(skip)]
    pub azure_account: Option<String>,
    /// `AZURE_STORAGE_ACCOUNT_KEY` (or `AZURE_STORAGE_KEY`).
    #[serde(skip)]
    pub azure_access_key: Option<Secret>,
    /// `AZURE_STORAGE_SAS_TOKEN`.
    #[serde(skip)]
    pub azure_sas_token: Option<Secret>,
    /// `AZURE_CLIENT_ID` (a service principal, with the secret and the tenant).
    #[serde(skip)]
    pub azure_client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    #[serde(skip)]
    pub azure_client_secret: Option<Secret>,
    /// `AZURE_TENANT_ID`.
    #[serde(skip)]
    pub azure_tenant_id: Option<String>,
}
}

/// Checked `[bucket]` settings and credentials.
#[derive(Debug, Clone, Default)]
pub struct BucketConfig {
    /// The endpoint; the store's public one when `None`.
    pub endpoint_url: Option<Url>,
    /// The region; the source's default when `None`.
    pub region: Option<String>,
    /// How objects reach Cloudflare.
    pub mode: S3Mode,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret key.
    pub secret_access_key: Option<Secret>,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// GCS: a service-account key file.
    pub google_service_account: Option<String>,
    /// GCS: a service-account key (JSON).
    pub google_service_account_key: Option<Secret>,
    /// GCS: application default credentials (a file).
    pub google_application_credentials: Option<String>,
    /// GCS: an emulator's URL (no tokens).
    pub storage_emulator_host: Option<Url>,
    /// Azure: the storage account.
    pub azure_account: Option<String>,
    /// Azure: the account key.
    pub azure_access_key: Option<Secret>,
    /// Azure: a SAS token.
    pub azure_sas_token: Option<Secret>,
    /// Azure: a service principal's client id.
    pub azure_client_id: Option<String>,
    /// Azure: its secret.
    pub azure_client_secret: Option<Secret>,
    /// Azure: its tenant.
    pub azure_tenant_id: Option<String>,
}

fn http_url(value: &str) -> Option<Url> {
    Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// `[bucket]`: the endpoint and the region; the credentials are passed through.
pub fn validate_bucket(b: RawBucket, problems: &mut Vec<String>) -> BucketConfig {
    let endpoint_url = b.endpoint_url.as_deref().and_then(|e| match http_url(e) {
        Some(u) => Some(u),
        None => {
            problems.push(format!(
                "`bucket.endpoint_url` (--endpoint-url, AWS_ENDPOINT_URL) {e:?} is not an http(s) URL, \
                 e.g. https://ACCOUNT.r2.cloudflarestorage.com or http://127.0.0.1:9000"
            ));
            None
        }
    });
    let storage_emulator_host = b.storage_emulator_host.as_deref().and_then(|h| {
        // Google's clients take the emulator as host:port or as a URL.
        let url = if h.contains("://") {
            h.to_string()
        } else {
            format!("http://{h}")
        };
        match http_url(&url) {
            Some(u) => Some(u),
            None => {
                problems.push(format!(
                    "STORAGE_EMULATOR_HOST {h:?} is not a host:port or an http(s) URL, e.g. http://127.0.0.1:9023"
                ));
                None
            }
        }
    });
    let region = b.region.map(|r| r.trim().to_string());
    if let Some(r) = &region
        && (r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        problems.push(format!(
            "`bucket.region` (--region, AWS_REGION) {r:?} is not a region name, e.g. us-east-1 or auto"
        ));
    }
    let trim = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    BucketConfig {
        endpoint_url,
        region,
        mode: b.mode.unwrap_or_default(),
        access_key_id: trim(b.access_key_id),
        secret_access_key: b.secret_access_key,
        session_token: b.session_token,
        google_service_account: trim(b.google_service_account),
        google_service_account_key: b.google_service_account_key,
        google_application_credentials: trim(b.google_application_credentials),
        storage_emulator_host,
        azure_account: trim(b.azure_account),
        azure_access_key: b.azure_access_key,
        azure_sas_token: b.azure_sas_token,
        azure_client_id: trim(b.azure_client_id),
        azure_client_secret: b.azure_client_secret,
        azure_tenant_id: trim(b.azure_tenant_id),
    }
}

/// How long a signed GET stays valid: long enough for Cloudflare's fetch and every
/// retry of the upload that carries it.
pub const PRESIGN_TTL: Duration = Duration::from_secs(3600);

/// The region used when none is configured (AWS's default, and what R2 and MinIO accept).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Which store a bucket URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `s3://`: Amazon S3 or an S3-compatible service.
    S3,
    /// `gs://`: Google Cloud Storage.
    Gs,
    /// `az://`: Azure Blob Storage (the "bucket" is a container).
    Az,
}

impl Scheme {
    /// The URL scheme, e.g. `gs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gs => "gs",
            Scheme::Az => "az",
        }
    }

    fn of(location: &str) -> Option<Scheme> {
        [Scheme::S3, Scheme::Gs, Scheme::Az]
            .into_iter()
            .find(|s| location.starts_with(&format!("{}://", s.as_str())))
    }

    /// The longest bucket (container) name the store allows.
    fn max_name(self) -> usize {
        match self {
            Scheme::Gs => 222,
            Scheme::S3 | Scheme::Az => 63,
        }
    }
}

/// The client of one bucket, by store.
enum Store {
    S3(AmazonS3),
    Azure(MicrosoftAzure, Option<AzureSigner>),
    Gcs(Gcs),
}

/// What signs an Azure blob's read URL (presign mode): the account key.
struct AzureSigner {
    endpoint: String,
    account: String,
    key: Secret,
}

/// A prepared bucket source.
pub struct Bucket {
    id: SourceId,
    scheme: Scheme,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    store: Store,
    mode: S3Mode,
    bounds: Bounds,
}

impl std::fmt::Debug for Bucket {
    // The store's own Debug would print its credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Whether a location names a bucket (`s3://`, `gs://`, `az://`) rather than a folder.
pub fn claims(location: &str) -> bool {
    Scheme::of(location).is_some()
}

/// Splits `s3://bucket/prefix` (or `gs://`, `az://CONTAINER/...`) into the store, the
/// bucket and the prefix (empty, or ending with `/`).
pub fn parse_url(url: &str) -> Result<(Scheme, String, String)> {
    let bad = |why: &str| {
        Error::Config(vec![format!(
            "{url:?} is not a bucket URL: {why}; write s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"
        )])
    };
    let scheme =
        Scheme::of(url).ok_or_else(|| bad("it does not start with s3://, gs:// or az://"))?;
    let rest = &url[scheme.as_str().len() + 3..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket name is missing"));
    }
    if bucket.len() > scheme.max_name()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad(&format!(
            "a bucket name is lowercase letters, digits, '-', '.' and '_', at most {} of them",
            scheme.max_name()
        )));
    }
    let mut prefix = prefix.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    if prefix.starts_with('/') || prefix.contains("//") {
        return Err(bad(
            "the prefix has an empty segment ('//'), which cannot be listed as a folder",
        ));
    }
    Ok((scheme, bucket.to_string(), prefix))
}

/// A few quick retries: a listing that cannot start should say so in seconds.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    }
}

/// A whole request, a GET's body included; the copy loop holds a GET to the tighter
/// download limits, this only stops a listing page that never ends.
fn request_timeout(bounds: Bounds) -> Duration {
    bounds.deadline.max(Duration::from_secs(120))
}

fn client_options(bounds: Bounds) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(request_timeout(bounds))
}

/// Builds the S3 client; returns it and where it points (`aws:REGION` or the endpoint).
fn s3_store(
    url: &str,
    bucket: &str,
    cfg: &BucketConfig,
    bounds: Bounds,
) -> Result<(AmazonS3, String)> {
    let (Some(key_id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) else {
        return Err(Error::Config(vec![format!(
            "{url} needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (and AWS_SESSION_TOKEN for temporary ones); AWS profiles and instance roles are not read"
        )]));
    };
    let region = cfg.region.as_deref().unwrap_or(DEFAULT_REGION);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret.expose())
        .with_retry(retry())
        .with_client_options(client_options(bounds));
    if let Some(token) = &cfg.session_token {
        builder = builder.with_token(token.expose());
    }
    let at = match &cfg.endpoint_url {
        Some(endpoint) => {
            let endpoint = endpoint.as_str().trim_end_matches('/').to_string();
            // R2, MinIO and most S3-compatible servers want path-style requests.
            builder = builder
                .with_endpoint(&endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
            endpoint
        }
        None => format!("aws:{region}"),
    };
    let store = builder.build().map_err(|e| {
        Error::Config(vec![format!(
            "cannot prepare a client for {url}: {e}; check --endpoint-url and --region"
        )])
    })?;
    Ok((store, at))
}

/// Builds the Azure client (and, in presign mode, its URL signer); returns them and the
/// blob endpoint they point at.
fn azure_store(
    url: &str,
    container: &str,
    cfg: &BucketConfig,
    bounds: Bounds,
) -> Result<(MicrosoftAzure, Option<AzureSigner>, String)> {
    let Some(account) = &cfg.azure_account else {
        return Err(Error::Config(vec![format!(
            "{url} needs the storage account: set AZURE_STORAGE_ACCOUNT_NAME (and its credentials: \
             AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID)"
        )]));
    };
    let endpoint = match &cfg.endpoint_url {
        Some(e) => e.as_str().trim_end_matches('/').to_string(),
        None => format!("https://{account}.blob.core.windows.net"),
    };
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name(container)
        .with_retry(retry())
        // After the client options, which would reset it.
        .with_client_options(client_options(bounds))
        .with_endpoint(endpoint.clone())
        .with_allow_http(endpoint.starts_with("http://"));
    builder = match (
        &cfg.azure_access_key,
        &cfg.azure_sas_token,
        (
            &cfg.azure_client_id,
            &cfg.azure_client_secret,
            &cfg.azure_tenant_id,
        ),
    ) {
        (Some(key), _, _) => builder.with_access_key(key.expose()),
        (None, Some(sas), _) => builder.with_config(AzureConfigKey::SasKey, sas.expose()),
        (None, None, (Some(id), Some(secret), Some(tenant))) => builder
            .with_client_id(id)
            .with_client_secret(secret.expose())
            .with_tenant_id(tenant),
        _ => {
            return Err(Error::Config(vec![format!(
                "{url} needs credentials: set AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_TOKEN, or \
                 AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID; the Azure CLI's login and managed identities are not read"
            )]));
        }
    };
    let signer = match (cfg.mode, &cfg.azure_access_key) {
        (S3Mode::Download, _) => None,
        (S3Mode::Presign, Some(key)) => {
            // A key that cannot sign is told now, not on every object.
            super::azure_sas::blob_read_url(
                &endpoint,
                account,
                key.expose(),
                container,
                "k",
                PRESIGN_TTL,
            )
            .map_err(|e| Error::Config(vec![format!("{url}: AZURE_STORAGE_ACCOUNT_KEY: {e}")]))?;
            Some(AzureSigner {
                endpoint: endpoint.clone(),
                account: account.clone(),
                key: key.clone(),
            })
        }
        (S3Mode::Presign, None) => {
            return Err(Error::Config(vec![format!(
                "{url} in presign mode signs its URLs with the account key: set AZURE_STORAGE_ACCOUNT_KEY, \
                 or use --s3-mode download"
            )]));
        }
    };
    let store = builder.build().map_err(|e| {
        Error::Config(vec![format!(
            "cannot prepare a client for {url}: {e}; check --endpoint-url and the AZURE_* variables"
        )])
    })?;
    Ok((store, signer, endpoint))
}

/// Builds the GCS client; returns it and the base URL it points at.
fn gcs_store(url: &str, bucket: &str, cfg: &BucketConfig, bounds: Bounds) -> Result<(Gcs, String)> {
    let config_error = |why: String| Error::Config(vec![format!("{url}: {why}")]);
    let emulator = cfg.storage_emulator_host.as_ref();
    let base = match (&cfg.endpoint_url, emulator) {
        (Some(e), _) | (None, Some(e)) => e.as_str().trim_end_matches('/').to_string(),
        (None, None) => gcs::DEFAULT_BASE_URL.to_string(),
    };
    // A service-account key is also what signs URLs; object_store reads the base URL of
    // those from the key's `gcs_base_url`, so a non-default endpoint is written into it.
    let key_json = match (&cfg.google_service_account_key, &cfg.google_service_account) {
        (Some(key), _) => Some(key.expose().to_string()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            config_error(format!(
                "cannot read the service-account key {path} (GOOGLE_SERVICE_ACCOUNT): {e}"
            ))
        })?),
        (None, None) => None,
    };
    let key_json = match key_json {
        Some(json) if base != gcs::DEFAULT_BASE_URL => {
            let mut key: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json)
                .map_err(|_| {
                    config_error(
                        "the service-account key is not a JSON object (GOOGLE_SERVICE_ACCOUNT_KEY or the file GOOGLE_SERVICE_ACCOUNT names)".into(),
                    )
                })?;
            key.insert("gcs_base_url".into(), base.clone().into());
            Some(serde_json::Value::Object(key).to_string())
        }
        other => other,
    };
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_retry(retry())
        .with_client_options(client_options(bounds));
    let can_sign = key_json.is_some() || cfg.google_application_credentials.is_some();
    match (&key_json, &cfg.google_application_credentials) {
        (Some(key), _) => builder = builder.with_service_account_key(key),
        (None, Some(path)) => builder = builder.with_application_credentials(path),
        (None, None) if emulator.is_some() => {}
        (None, None) => {
            return Err(config_error(
                "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT, a key file, or \
                 GOOGLE_SERVICE_ACCOUNT_KEY, the key itself); the metadata server of a GCE or GKE machine is not read"
                    .into(),
            ));
        }
    }
    if emulator.is_some() {
        // The emulator takes no token; a key given with it still signs URLs.
        builder =
            builder.with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential {
                bearer: String::new(),
            })));
    }
    if cfg.mode == S3Mode::Presign && !can_sign {
        return Err(config_error(
            "presign mode signs URLs with a service-account key: set GOOGLE_SERVICE_ACCOUNT or \
             GOOGLE_SERVICE_ACCOUNT_KEY, or use --s3-mode download"
                .into(),
        ));
    }
    let store = builder.build().map_err(|e| {
        config_error(format!(
            "cannot prepare a client: {e}; check GOOGLE_APPLICATION_CREDENTIALS, GOOGLE_SERVICE_ACCOUNT or GOOGLE_SERVICE_ACCOUNT_KEY"
        ))
    })?;
    let client = Gcs::new(
        &base,
        bucket,
        store,
        emulator.is_some(),
        request_timeout(bounds),
    )
    .map_err(|e| config_error(format!("cannot prepare an HTTP client: {e}")))?;
    Ok((client, base))
}

impl Bucket {
    /// Checks the URL and the credentials and prepares the client; no request is made.
    pub fn new(url: &str, cfg: &BucketConfig, bounds: Bounds) -> Result<Bucket> {
        let (scheme, bucket, prefix) = parse_url(url)?;
        let (store, at) = match scheme {
            Scheme::S3 => {
                let (s, at) = s3_store(url, &bucket, cfg, bounds)?;
                (Store::S3(s), Some(at))
            }
            Scheme::Az => {
                let (s, signer, at) = azure_store(url, &bucket, cfg, bounds)?;
                (Store::Azure(s, signer), Some(at))
            }
            Scheme::Gs => {
                let (s, at) = gcs_store(url, &bucket, cfg, bounds)?;
                // The public GCS endpoint is the one GCS bucket namespace: no `@`.
                (
                    Store::Gcs(s),
                    Some(at).filter(|a| a != gcs::DEFAULT_BASE_URL),
                )
            }
        };
        let location = format!("{}://{bucket}/{prefix}", scheme.as_str());
        let location = match at {
            Some(at) => format!("{location}@{at}"),
            None => location,
        };
        Ok(Bucket {
            id: SourceId::new(SourceKind::Bucket, location),
            scheme,
            bucket,
            prefix,
            store,
            mode: cfg.mode,
            bounds,
        })
    }

    /// The source's identity: `s3://bucket/prefix/@endpoint` (or `@aws:region`),
    /// `gs://bucket/prefix/` (or `@endpoint`), `az://container/prefix/@blob-endpoint`.
    pub fn id(&self) -> &SourceId {
        &self.id
    }

    fn url(&self) -> String {
        format!("{}://{}/{}", self.scheme.as_str(), self.bucket, self.prefix)
    }

    /// The `object_store` client, for the stores read through it.
    fn object_store(&self) -> Option<&dyn ObjectStore> {
        match &self.store {
            Store::S3(s) => Some(s),
            Store::Azure(s, _) => Some(s),
            Store::Gcs(_) => None,
        }
    }

    /// Lists every object under the prefix into `out`, page by page, until done, stopped or
    /// the receiver is gone. A failed listing (bad credentials, no such bucket, no route to
    /// the endpoint) ends the run.
    pub async fn list(&self, out: &mpsc::Sender<Found>, stop: &CancellationToken) -> Result<()> {
        if let Store::Gcs(gcs) = &self.store {
            return self.list_gcs(gcs, out, stop).await;
        }
        let Some(store) = self.object_store() else {
            return Ok(());
        };
        let prefix = match self.prefix.strip_suffix('/') {
            Some(p) => Some(ObjectPath::parse(p).map_err(|e| self.listing_error(e.to_string()))?),
            None => None,
        };
        let mut pages = store.list(prefix.as_ref());
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = pages.next() => next,
            };
            let Some(meta) = next else { break };
            let meta = meta.map_err(|e| self.listing_error(e.to_string()))?;
            let placeholder = meta.size == 0 && self.is_placeholder(store, &meta.location).await;
            let Some(found) = self.found(meta, placeholder) else {
                continue;
            };
            if out.send(found).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// GCS's listing: its names are given as stored, so a placeholder shows its `/`.
    async fn list_gcs(
        &self,
        gcs: &Gcs,
        out: &mpsc::Sender<Found>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let mut pages = gcs.list(&self.prefix);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = pages.next() => next,
            };
            let Some(object) = next else { break };
            let object = object.map_err(|e| self.listing_error(e.to_string()))?;
            let (name, placeholder) = match object.name.strip_suffix('/') {
                Some(dir) if object.size == 0 => (dir, true),
                _ => (object.name.as_str(), false),
            };
            let token = match (&object.generation, &object.updated) {
                (Some(g), _) => format!("{GENERATION}{g}"),
                (None, Some(u)) => format!("mtime:{u}"),
                (None, None) => "mtime:unknown".into(),
            };
            let Some(found) = self.found_key(name, object.size, token, placeholder) else {
                continue;
            };
            if out.send(found).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    fn listing_error(&self, message: String) -> Error {
        Error::BucketListing {
            location: self.url(),
            message,
        }
    }

    /// Whether a zero-byte object is a folder placeholder (`photos/`) rather than an empty
    /// object: `object_store` lists both without the trailing `/`, so the key without it is
    /// asked for (one HEAD, only for zero-byte objects). Only when the store says that key
    /// does not exist is it the placeholder; an empty object goes on to be rejected with
    /// its reason, as an empty file is.
    async fn is_placeholder(&self, store: &dyn ObjectStore, location: &ObjectPath) -> bool {
        matches!(
            store.head(location).await,
            Err(object_store::Error::NotFound { .. })
        )
    }

    /// What one object listed by `object_store` becomes (see [`Bucket::found_key`]).
    fn found(&self, meta: ObjectMeta, placeholder: bool) -> Option<Found> {
        // S3 and Azure always send an ETag; without one, the modification time tells change.
        let etag = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| format!("mtime:{}", meta.last_modified.to_rfc3339()));
        self.found_key(meta.location.as_ref(), meta.size, etag, placeholder)
    }

    /// What one listed object becomes; `None` for keys outside the prefix. A folder
    /// placeholder is passed over with its reason; every other object, empty or not, is an
    /// item, fingerprinted by its size and change token.
    fn found_key(&self, full: &str, size: u64, etag: String, placeholder: bool) -> Option<Found> {
        // The prefix rule, byte for byte, whatever the server sent.
        let key = full.strip_prefix(self.prefix.as_str())?;
        if key.is_empty() {
            return None;
        }
        if size == 0 && placeholder {
            return Some(Found::Ignored {
                key: format!("{key}/"),
                reason: "a folder placeholder (a zero-byte key ending in '/'): nothing to upload"
                    .into(),
            });
        }
        Some(Found::Item(Item {
            key: key.to_string(),
            locator: Locator::Object(full.to_string()),
            fingerprint: Some(Fingerprint::ETagSize { etag, size }),
            options: ItemOptions::default(),
            ticket: Default::default(),
        }))
    }

    /// Lists every object under the prefix into `out` (see [`Bucket::list`]).
    pub async fn run(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        self.list(&out, &stop).await
    }

    /// The body of an item: its object's (see [`Bucket::object_body`]).
    pub async fn body(&self, item: &Item) -> Result<Body> {
        match &item.locator {
            Locator::Object(key) => self.object_body(item, key).await,
            other => Err(Error::Invalid(format!(
                "a bucket source cannot read {}",
                other.describe()
            ))),
        }
    }

    /// A bucket of millions is costly to list: counted only when the account is full.
    pub fn recount(&self) -> Recount {
        Recount::Costly
    }

    /// The body of an object: downloaded into a temporary file (`download`), or a signed
    /// GET URL that Cloudflare fetches (`presign`).
    pub async fn object_body(&self, item: &Item, key: &str) -> Result<Body> {
        let object_error = |source| Error::Object {
            key: key.to_string(),
            source,
        };
        match self.mode {
            S3Mode::Presign => {
                let path = ObjectPath::parse(key).map_err(|e| object_error(e.into()))?;
                let signed = match &self.store {
                    Store::S3(s) => s.signed_url(reqwest::Method::GET, &path, PRESIGN_TTL).await,
                    Store::Azure(_, signer) => self.azure_signed_url(signer.as_ref(), key),
                    Store::Gcs(g) => {
                        g.store
                            .signed_url(reqwest::Method::GET, &path, PRESIGN_TTL)
                            .await
                    }
                };
                Ok(Body::Url(signed.map_err(object_error)?.to_string()))
            }
            S3Mode::Download => self.download(item, key).await,
        }
    }

    /// A read URL of the blob `key` (see `azure_sas.rs` for why cfimg signs it itself).
    fn azure_signed_url(
        &self,
        signer: Option<&AzureSigner>,
        key: &str,
    ) -> object_store::Result<Url> {
        let unsigned = |why: String| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: why.into(),
        };
        let signer = signer.ok_or_else(|| unsigned("presign mode has no account key".into()))?;
        super::azure_sas::blob_read_url(
            &signer.endpoint,
            &signer.account,
            signer.key.expose(),
            &self.bucket,
            key,
            PRESIGN_TTL,
        )
        .map_err(|e| unsigned(e.to_string()))
    }

    async fn download(&self, item: &Item, key: &str) -> Result<Body> {
        let object_error = |source| Error::Object {
            key: key.to_string(),
            source,
        };
        // Only the version that was listed: a replaced object is left for the next run,
        // which lists its new change token, instead of being recorded under the old one.
        let token = match &item.fingerprint {
            Some(Fingerprint::ETagSize { etag, .. }) if !etag.starts_with("mtime:") => {
                Some(etag.clone())
            }
            _ => None,
        };
        let deadline = tokio::time::Instant::now() + self.bounds.deadline;
        let asked = async {
            match &self.store {
                Store::Gcs(gcs) => {
                    let generation = token.as_deref().and_then(|t| t.strip_prefix(GENERATION));
                    gcs.get(key, generation).await
                }
                Store::S3(s) => get_if_match(s, key, token).await,
                Store::Azure(s, _) => get_if_match(s, key, token).await,
            }
        };
        let got = match tokio::time::timeout_at(deadline, asked).await {
            Ok(got) => got.map_err(object_error)?,
            Err(_) => {
                return Err(Error::DownloadTooSlow {
                    what: format!("the object {key:?}"),
                    reason: format!(
                        "no answer within {} s (download.deadline_secs)",
                        self.bounds.deadline.as_secs_f64()
                    ),
                });
            }
        };
        crate::download::spool(
            "cfimg-bucket-",
            got,
            self.bounds,
            deadline,
            // The listing gave the size already; this guards against an object that grew.
            crate::rules::MAX_FILE_BYTES,
            &format!("the object {key:?}"),
            object_error,
            |n| {
                Error::Invalid(format!(
                    "the object {key:?} is larger than {} bytes ({n} read); Cloudflare Images accepts at most 10 MB",
                    crate::rules::MAX_FILE_BYTES
                ))
            },
        )
        .await
    }
}

/// How a GCS generation is written as an item's change token.
const GENERATION: &str = "generation:";

/// Reads an object through `object_store`, only while its ETag is still `if_match`.
async fn get_if_match(
    store: &dyn ObjectStore,
    key: &str,
    if_match: Option<String>,
) -> object_store::Result<
    futures_util::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
> {
    let path = ObjectPath::parse(key)?;
    let got = store
        .get_opts(
            &path,
            GetOptions {
                if_match,
                ..GetOptions::default()
            },
        )
        .await?;
    Ok(got.into_stream())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cfg() -> BucketConfig {
        BucketConfig {
            endpoint_url: Some("http://127.0.0.1:9/".parse().unwrap()),
            region: Some("eu-west-3".into()),
            mode: S3Mode::Download,
            access_key_id: Some("AKIDBUCKETTEST".into()),
            secret_access_key: Some(Secret::new("very-secret-key")),
            session_token: Some(Secret::new("very-secret-token")),
            ..BucketConfig::default()
        }
    }

    #[test]
    fn bucket_urls_mean_folders() {
        let p = |u: &str| parse_url(u).unwrap();
        let s3 = |b: &str, p: &str| (Scheme::S3, b.to_string(), p.to_string());
        assert_eq!(p("s3://b"), s3("b", ""));
        assert_eq!(p("s3://b/"), s3("b", ""));
        assert_eq!(p("s3://b/media/2019"), s3("b", "media/2019/"));
        assert_eq!(p("s3://b/media/2019/"), s3("b", "media/2019/"));
        assert_eq!(
            p("gs://b/media/2019"),
            (Scheme::Gs, "b".into(), "media/2019/".into())
        );
        assert_eq!(p("az://c/x"), (Scheme::Az, "c".into(), "x/".into()));
        for bad in [
            "s3://",
            "s3:///x",
            "http://b/x",
            "s3://B/x",
            "s3://b//x",
            "s3://b/a//c",
            "gs://",
            "az://C/x",
            "az://c//x",
            "wasb://c/x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_identity_names_the_endpoint_and_never_prints_secrets() {
        let b = Bucket::new("s3://photos/media/2019", &cfg(), Bounds::default()).unwrap();
        assert_eq!(
            b.id().location,
            "s3://photos/media/2019/@http://127.0.0.1:9"
        );
        let same = Bucket::new("s3://photos/media/2019/", &cfg(), Bounds::default()).unwrap();
        assert_eq!(same.id(), b.id());
        let aws = Bucket::new(
            "s3://photos",
            &BucketConfig {
                endpoint_url: None,
                ..cfg()
            },
            Bounds::default(),
        )
        .unwrap();
        assert_eq!(aws.id().location, "s3://photos/@aws:eu-west-3");
        let shown = format!("{b:?} {:?}", cfg());
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn gcs_and_azure_identities_name_their_endpoint_and_never_print_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let adc = dir.path().join("adc.json");
        std::fs::write(
            &adc,
            r#"{"type":"authorized_user","client_id":"c","client_secret":"very-secret","refresh_token":"very-secret-r"}"#,
        )
        .unwrap();
        let gcs = BucketConfig {
            google_application_credentials: Some(adc.display().to_string()),
            ..BucketConfig::default()
        };
        let g = Bucket::new("gs://photos/media/2019", &gcs, Bounds::default()).unwrap();
        // The public endpoint is GCS's one namespace: nothing after the prefix.
        assert_eq!(g.id().location, "gs://photos/media/2019/");
        let emulated = BucketConfig {
            storage_emulator_host: Some("http://127.0.0.1:9023".parse().unwrap()),
            ..BucketConfig::default()
        };
        let e = Bucket::new("gs://photos", &emulated, Bounds::default()).unwrap();
        assert_eq!(e.id().location, "gs://photos/@http://127.0.0.1:9023");

        let az = BucketConfig {
            azure_account: Some("acct".into()),
            azure_access_key: Some(Secret::new("dmVyeS1zZWNyZXQta2V5")),
            ..BucketConfig::default()
        };
        let a = Bucket::new("az://photos/x", &az, Bounds::default()).unwrap();
        assert_eq!(
            a.id().location,
            "az://photos/x/@https://acct.blob.core.windows.net"
        );
        let shown = format!("{g:?} {a:?} {gcs:?} {az:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("dmVyeS1z"),
            "{shown}"
        );
    }

    #[test]
    fn gcs_and_azure_without_credentials_name_the_variables_to_set() {
        let err = |url: &str, cfg: &BucketConfig| {
            let e = Bucket::new(url, cfg, Bounds::default()).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{e}");
            e.to_string()
        };
        let none = BucketConfig::default();
        assert!(err("gs://photos", &none).contains("GOOGLE_APPLICATION_CREDENTIALS"));
        assert!(err("az://photos", &none).contains("AZURE_STORAGE_ACCOUNT_NAME"));
        let account_only = BucketConfig {
            azure_account: Some("acct".into()),
            ..BucketConfig::default()
        };
        assert!(err("az://photos", &account_only).contains("AZURE_STORAGE_ACCOUNT_KEY"));
        // Presign needs what signs: Azure's account key (not a SAS), GCS's service-account key.
        let sas_presign = BucketConfig {
            azure_sas_token: Some(Secret::new("sv=2023&sig=x")),
            mode: S3Mode::Presign,
            ..account_only
        };
        assert!(err("az://photos", &sas_presign).contains("presign"));
        let emulated_presign = BucketConfig {
            storage_emulator_host: Some("http://127.0.0.1:9023".parse().unwrap()),
            mode: S3Mode::Presign,
            ..BucketConfig::default()
        };
        assert!(err("gs://photos", &emulated_presign).contains("GOOGLE_SERVICE_ACCOUNT"));
    }

    #[test]
    fn bucket_without_credentials_is_a_config_error() {
        let err = Bucket::new(
            "s3://photos",
            &BucketConfig {
                access_key_id: None,
                ..cfg()
            },
            Bounds::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn bucket_listing_keeps_only_the_prefix_and_passes_over_placeholders() {
        let b = Bucket::new("s3://photos/media/2019", &cfg(), Bounds::default()).unwrap();
        let meta = |key: &str, size: u64| ObjectMeta {
            location: ObjectPath::parse(key).unwrap(),
            last_modified: chrono::Utc::now(),
            size,
            e_tag: Some("\"abc\"".into()),
            version: None,
        };
        assert!(b.found(meta("media/2019-old/a.jpg", 5), false).is_none());
        assert!(b.found(meta("Media/2019/a.jpg", 5), false).is_none());
        assert!(b.found(meta("media/2019", 0), true).is_none());
        assert!(matches!(
            b.found(meta("media/2019/dir", 0), true),
            Some(Found::Ignored { key, .. }) if key == "dir/"
        ));
        assert!(matches!(
            b.found(meta("media/2019/empty.png", 0), false),
            Some(Found::Item(item)) if item.key == "empty.png" && item.size() == Some(0)
        ));
        let Some(Found::Item(item)) = b.found(meta("media/2019/a b/ü+%20.jpg", 5), false) else {
            panic!("an item");
        };
        assert_eq!(item.key, "a b/ü+%20.jpg");
        assert_eq!(
            item.locator,
            Locator::Object("media/2019/a b/ü+%20.jpg".into())
        );
        assert_eq!(
            item.fingerprint,
            Some(Fingerprint::ETagSize {
                etag: "\"abc\"".into(),
                size: 5
            })
        );
    }
}
