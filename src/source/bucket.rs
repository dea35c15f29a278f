//! An S3-compatible bucket (AWS S3, R2, MinIO, ...) as a source, read through the
//! `object_store` crate (it signs every request; cfimg signs nothing by hand). cfimg only
//! reads the bucket: it lists and gets objects, or presigns GETs for Cloudflare to fetch.
//!
//! The prefix is a folder: `s3://b/media/2019` and `s3://b/media/2019/` both mean the
//! objects whose key starts with `media/2019/` (never `media/2019-old/...`, never
//! `Media/2019/...`: keys are compared byte for byte, as S3 does). `object_store` lists a
//! prefix at `/` boundaries in just this way; the keys are filtered again by raw string
//! prefix so the rule never depends on the server. An item's key is the object key
//! relative to the prefix, so path ids look like those of a folder.
//!
//! The listing is streamed page by page (S3 pages hold at most 1000 keys) into the
//! pipeline's bounded channel; it is never collected. Folder placeholders (zero-byte keys
//! such as `photos/`, which `object_store` shows without their trailing `/`) are passed
//! over with their reason; an empty object is rejected with its reason, as an empty file
//! is, without a GET.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, ObjectMeta, ObjectStore, RetryConfig};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// Cloudflare fetches a presigned GET URL (valid one hour); cfimg never holds the bytes.
    Presign,
}

raw_section! {
/// `[bucket]` as written; the credentials come from the environment only.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    /// The S3 API endpoint of an S3-compatible service (R2, MinIO); AWS when unset.
    pub endpoint_url: Option<String>,
    /// The region to sign for.
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
}
}

/// Checked `[bucket]` settings and credentials.
#[derive(Debug, Clone, Default)]
pub struct BucketConfig {
    /// The endpoint; AWS when `None`.
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
}

/// `[bucket]`: the endpoint and the region; the credentials are passed through.
pub fn validate_bucket(b: RawBucket, problems: &mut Vec<String>) -> BucketConfig {
    let endpoint_url = b.endpoint_url.as_deref().and_then(|e| match Url::parse(e) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            problems.push(format!(
                "`bucket.endpoint_url` (--endpoint-url, AWS_ENDPOINT_URL) {e:?} is not an http(s) URL, \
                 e.g. https://ACCOUNT.r2.cloudflarestorage.com or http://127.0.0.1:9000"
            ));
            None
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
    BucketConfig {
        endpoint_url,
        region,
        mode: b.mode.unwrap_or_default(),
        access_key_id: b.access_key_id.map(|k| k.trim().to_string()),
        secret_access_key: b.secret_access_key,
        session_token: b.session_token,
    }
}

/// How long a presigned GET stays valid: long enough for Cloudflare's fetch and every
/// retry of the upload that carries it.
pub const PRESIGN_TTL: Duration = Duration::from_secs(3600);

/// The region used when none is configured (AWS's default, and what R2 and MinIO accept).
pub const DEFAULT_REGION: &str = "us-east-1";

/// A prepared bucket source.
pub struct Bucket {
    id: SourceId,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    store: AmazonS3,
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

/// Whether a location names a bucket (`s3://...`) rather than a folder.
pub fn claims(location: &str) -> bool {
    location.starts_with("s3://")
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (empty, or ending with `/`).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let bad = |why: &str| {
        Error::Config(vec![format!(
            "{url:?} is not a bucket URL: {why}; write s3://BUCKET or s3://BUCKET/PREFIX"
        )])
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket name is missing"));
    }
    if bucket.len() > 63
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad(
            "a bucket name is lowercase letters, digits, '-', '.' and '_', at most 63 of them",
        ));
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
    Ok((bucket.to_string(), prefix))
}

impl Bucket {
    /// Checks the URL and the credentials and prepares the client; no request is made.
    pub fn new(url: &str, cfg: &BucketConfig, bounds: Bounds) -> Result<Bucket> {
        let (bucket, prefix) = parse_url(url)?;
        let (Some(key_id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) else {
            return Err(Error::Config(vec![format!(
                "{url} needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (and AWS_SESSION_TOKEN for temporary ones); AWS profiles and instance roles are not read"
            )]));
        };
        let region = cfg.region.as_deref().unwrap_or(DEFAULT_REGION);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&bucket)
            .with_region(region)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret.expose())
            // A few quick retries: a listing that cannot start should say so in seconds.
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .with_client_options(
                // A whole request, a GET's body included; the copy loop holds a GET to the
                // tighter download limits, this only stops a listing page that never ends.
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(bounds.deadline.max(Duration::from_secs(120))),
            );
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
        Ok(Bucket {
            id: SourceId::new(SourceKind::Bucket, format!("s3://{bucket}/{prefix}@{at}")),
            bucket,
            prefix,
            store,
            mode: cfg.mode,
            bounds,
        })
    }

    /// The source's identity: `s3://bucket/prefix/@endpoint` (or `@aws:region`).
    pub fn id(&self) -> &SourceId {
        &self.id
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Lists every object under the prefix into `out`, page by page, until done, stopped or
    /// the receiver is gone. A failed listing (bad credentials, no such bucket, no route to
    /// the endpoint) ends the run.
    pub async fn list(&self, out: &mpsc::Sender<Found>, stop: &CancellationToken) -> Result<()> {
        let prefix = match self.prefix.strip_suffix('/') {
            Some(p) => Some(ObjectPath::parse(p).map_err(|e| self.listing_error(e.to_string()))?),
            None => None,
        };
        let mut pages = self.store.list(prefix.as_ref());
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = pages.next() => next,
            };
            let Some(meta) = next else { break };
            let meta = meta.map_err(|e| self.listing_error(e.to_string()))?;
            let placeholder = meta.size == 0 && self.is_placeholder(&meta.location).await;
            let Some(found) = self.found(meta, placeholder) else {
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
    async fn is_placeholder(&self, location: &ObjectPath) -> bool {
        matches!(
            self.store.head(location).await,
            Err(object_store::Error::NotFound { .. })
        )
    }

    /// What one listed object becomes; `None` for keys outside the prefix. A folder
    /// placeholder is passed over with its reason; every other object, empty or not, is an
    /// item.
    fn found(&self, meta: ObjectMeta, placeholder: bool) -> Option<Found> {
        let full = meta.location.as_ref();
        // S3's prefix rule, byte for byte, whatever the server sent.
        let key = full.strip_prefix(self.prefix.as_str())?;
        if key.is_empty() {
            return None;
        }
        if meta.size == 0 && placeholder {
            return Some(Found::Ignored {
                key: format!("{key}/"),
                reason: "a folder placeholder (a zero-byte key ending in '/'): nothing to upload"
                    .into(),
            });
        }
        // S3 always sends an ETag; without one, the modification time tells change.
        let etag = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| format!("mtime:{}", meta.last_modified.to_rfc3339()));
        Some(Found::Item(Item {
            key: key.to_string(),
            locator: Locator::Object(full.to_string()),
            fingerprint: Some(Fingerprint::ETagSize {
                etag,
                size: meta.size,
            }),
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

    /// The body of an object: downloaded into a temporary file (`download`), or a
    /// presigned GET URL that Cloudflare fetches (`presign`).
    pub async fn object_body(&self, item: &Item, key: &str) -> Result<Body> {
        let path = ObjectPath::parse(key).map_err(|e| Error::Object {
            key: key.to_string(),
            source: e.into(),
        })?;
        match self.mode {
            S3Mode::Presign => {
                let url = self
                    .store
                    .signed_url(reqwest::Method::GET, &path, PRESIGN_TTL)
                    .await
                    .map_err(|source| Error::Object {
                        key: key.to_string(),
                        source,
                    })?;
                Ok(Body::Url(url.to_string()))
            }
            S3Mode::Download => self.download(item, key, &path).await,
        }
    }

    async fn download(&self, item: &Item, key: &str, path: &ObjectPath) -> Result<Body> {
        let object_error = |source| Error::Object {
            key: key.to_string(),
            source,
        };
        // Only the version that was listed: a replaced object is left for the next run,
        // which lists its new ETag, instead of being recorded under the old one.
        let if_match = match &item.fingerprint {
            Some(Fingerprint::ETagSize { etag, .. }) if !etag.starts_with("mtime:") => {
                Some(etag.clone())
            }
            _ => None,
        };
        let deadline = tokio::time::Instant::now() + self.bounds.deadline;
        let asked = self.store.get_opts(
            path,
            GetOptions {
                if_match,
                ..GetOptions::default()
            },
        );
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
            "cfimg-s3-",
            got.into_stream(),
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
        }
    }

    #[test]
    fn bucket_urls_mean_folders() {
        let p = |u: &str| parse_url(u).unwrap();
        assert_eq!(p("s3://b"), ("b".into(), "".into()));
        assert_eq!(p("s3://b/"), ("b".into(), "".into()));
        assert_eq!(p("s3://b/media/2019"), ("b".into(), "media/2019/".into()));
        assert_eq!(p("s3://b/media/2019/"), ("b".into(), "media/2019/".into()));
        for bad in [
            "s3://",
            "s3:///x",
            "http://b/x",
            "s3://B/x",
            "s3://b//x",
            "s3://b/a//c",
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
