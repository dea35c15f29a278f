//! `ImagesClient`: one HTTP request per call, no retries and no rate limiting of its own
//! (those belong to `upload` and `limit`), every answer turned into a typed result or a
//! classified [`Error`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use tokio_util::io::ReaderStream;

use super::types::{
    AccountStats, BatchGrant, DirectUpload, Envelope, Image, ImageListV2, SigningKeys, Variant,
    VariantList, VariantResult, codes,
};
use crate::error::{Error, Result};
use crate::item::Body;
use crate::secret::Secret;

/// The `filename` a part may carry for a file of this name. Control characters (a CR, LF
/// or ESC inside a part header makes the whole body malformed to a strict parser, and
/// Cloudflare answers 5400) and the backslash (parsers disagree on quoted-string escapes)
/// are percent-encoded, as RFC 7578 section 4.2 allows; everything else, non-ASCII
/// included, is kept. The ledger keeps the original key.
fn part_filename(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_control() || c == '\\' {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A form whose parts are all in memory as one body, in reqwest's own format: hyper then
/// writes it in one go instead of polling a stream of a dozen small pieces, which cost a
/// small upload more CPU than copying its bytes once.
async fn in_one_piece(form: Form) -> Result<(String, bytes::Bytes)> {
    let content_type = format!("multipart/form-data; boundary={}", form.boundary());
    let mut body = bytes::BytesMut::new();
    let mut pieces = form.into_stream();
    while let Some(piece) = pieces.next().await {
        let piece =
            piece.map_err(|e| Error::Invalid(format!("cannot build the upload form: {e}")))?;
        body.extend_from_slice(&piece);
    }
    Ok((content_type, body.freeze()))
}

/// Read size for streamed upload bodies: large enough to keep syscalls few, small enough
/// that 16 concurrent 10 MB uploads stay a few MB of buffers.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Bodies up to this size are read in one go rather than streamed: the file is already
/// in memory once (one [`UPLOAD_CHUNK`] buffer), and each streamed read of a `tokio::fs`
/// file is a round trip through the blocking pool, which costs a small upload more CPU
/// than everything else it does.
const READ_WHOLE_UP_TO: u64 = UPLOAD_CHUNK as u64;

/// An upload body's file, opened: read whole when small, else to be streamed.
enum Opened {
    /// Already in memory: the examination's bytes.
    Held(bytes::Bytes),
    Read(Vec<u8>),
    Stream(tokio::fs::File),
}

/// Opens a file body in one trip to the blocking pool: its size (at most `examined`, the
/// bytes that were hashed when planning) and either its bytes or the open file.
async fn open_body(path: std::path::PathBuf, examined: Option<u64>) -> Result<(Opened, u64)> {
    let io = |path: &std::path::Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let blocking = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        let size = file.metadata().map_err(|e| io(&path, e))?.len();
        let size = examined.map_or(size, |s| s.min(size));
        if size > READ_WHOLE_UP_TO {
            return Ok((Opened::Stream(tokio::fs::File::from_std(file)), size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&path, e))?;
        // The part declares `size` bytes: a file that shrank meanwhile is read short, and
        // sending fewer bytes than declared would fail as a malformed request.
        let size = bytes.len() as u64;
        Ok((Opened::Read(bytes), size))
    });
    blocking
        .await
        .map_err(|_| Error::Panicked("opening an upload body".into()))?
}

/// The longest wait any server hint can impose (a huge `Retry-After` or a far date is
/// clamped to this rather than trusted, and never overflows).
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// A request's result, with what the response's rate-limit headers said about the budget:
/// the limiter that sent the request reads [`Answered::exhausted`] and holds every worker
/// back until the budget resets, slowing down before a 429 rather than after.
#[derive(Debug)]
#[must_use]
pub struct Answered<T> {
    /// The result.
    pub result: Result<T>,
    /// No request is left until this has passed (`Ratelimit: ...;r=0;t=<reset>`), clamped
    /// to [`MAX_WAIT`]; `None` when the headers said nothing of the kind or there was no
    /// response.
    pub exhausted: Option<Duration>,
    /// The quota `Ratelimit-Policy` announced, for the limiter to pace by.
    pub policy: Option<crate::api::policy::Policy>,
}

impl<T> Answered<T> {
    /// A result without a response (or without rate-limit headers): nothing to report.
    pub fn plain(result: Result<T>) -> Answered<T> {
        Answered {
            result,
            exhausted: None,
            policy: None,
        }
    }

    /// The same answer with its value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answered<U> {
        Answered {
            result: self.result.map(f),
            exhausted: self.exhausted,
            policy: self.policy,
        }
    }

    /// The same answer with its error mapped.
    fn map_err(self, f: impl FnOnce(Error) -> Error) -> Answered<T> {
        Answered {
            result: self.result.map_err(f),
            exhausted: self.exhausted,
            policy: self.policy,
        }
    }
}

impl<T> From<Result<T>> for Answered<T> {
    fn from(result: Result<T>) -> Answered<T> {
        Answered::plain(result)
    }
}

/// A client of the Images API of one account.
#[derive(Clone)]
pub struct ImagesClient {
    http: reqwest::Client,
    images: Url,
    auth: HeaderValue,
    /// The account id the API host's URLs name (none on the batch host), so that a refusal
    /// of the start-up check can say which id was refused.
    account: Option<String>,
}

impl std::fmt::Debug for ImagesClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagesClient")
            .field("images", &self.images.as_str())
            .finish_non_exhaustive()
    }
}

/// An upload through `POST /v1`: a file streamed from disk, or a URL Cloudflare fetches.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// What to send.
    pub body: &'a Body,
    /// The part's filename (becomes the image's `filename`).
    pub filename: &'a str,
    /// The part's content type (file bodies).
    pub mime: &'a str,
    /// Custom id, or `None` for a Cloudflare-assigned one.
    pub id: Option<&'a str>,
    /// `metadata` JSON text.
    pub metadata: &'a str,
    /// Upload as private.
    pub require_signed_urls: bool,
    /// The `creator` field.
    pub creator: Option<&'a str>,
    /// A file body's bytes already read (and hashed) by the examination: sent as they
    /// are, the file is not opened again.
    pub held: Option<&'a bytes::Bytes>,
    /// Bytes of a file body to send: the length that was hashed. A file that grew since
    /// (an append) still sends the version that was checked; one that changed otherwise
    /// fails the hash comparison after sending.
    pub size: Option<u64>,
    /// What must hold before the request goes (the item's intent durable in the ledger):
    /// awaited once the request's turn in the limiter has come, so the two waits overlap.
    pub ready: Option<&'a Ready>,
}

/// A precondition of an upload, awaited by every attempt (at once after the first);
/// `Err` holds the message of an [`Error::LedgerWrite`].
pub type Ready = futures_util::future::Shared<
    futures_util::future::BoxFuture<'static, std::result::Result<(), String>>,
>;

/// The sha256 of a file body as it is streamed, taken once the upload has been answered.
type Hasher = Arc<Mutex<Option<Sha256>>>;

/// What an upload stored, and the sha256 of the bytes actually sent (file bodies).
#[derive(Debug)]
pub struct Sent {
    /// The image.
    pub image: Image,
    /// sha256 of what was streamed, hex.
    pub sha256: Option<String>,
}

/// The settings `PATCH /v1/{id}` changes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageUpdate {
    /// New metadata (replaces the old).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Private or not.
    #[serde(rename = "requireSignedURLs", skip_serializing_if = "Option::is_none")]
    pub require_signed_urls: Option<bool>,
    /// The creator tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
}

/// The fields of `POST /v2/direct_upload`; every one is optional at Cloudflare.
#[derive(Debug, Clone, Default)]
pub struct DraftRequest {
    /// Custom id (not with `require_signed_urls`).
    pub id: Option<String>,
    /// Expiry, RFC 3339.
    pub expiry: Option<String>,
    /// `metadata` JSON text.
    pub metadata: Option<String>,
    /// Private image.
    pub require_signed_urls: bool,
    /// The `creator` field.
    pub creator: Option<String>,
}

/// Parameters of `GET /v2`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size (10..10000).
    pub per_page: Option<u32>,
    /// Token from the previous page.
    pub continuation_token: Option<String>,
    /// `asc` or `desc`.
    pub sort_order: Option<String>,
    /// Only images of this creator.
    pub creator: Option<String>,
    /// `meta.<field>[eq]=<value>` filters.
    pub meta_eq: Vec<(String, String)>,
}

impl ImagesClient {
    /// A client for `{api_base}/accounts/{account_id}/images`.
    pub fn new(
        api_base: &Url,
        account_id: &str,
        token: &Secret,
        timeout: Duration,
    ) -> Result<Self> {
        let images = images_url(
            api_base,
            "api_base_url",
            &["accounts", account_id, "images"],
        )?;
        let auth = bearer(token, "the API token")?;
        Ok(ImagesClient {
            http: http_client(timeout)?,
            images,
            auth,
            account: Some(account_id.to_string()),
        })
    }

    /// A client of the batch host: `{batch_base}/images` (no `/client/v4/accounts/{id}`
    /// prefix), authorised by a batch token. Requests are built as by [`ImagesClient::new`].
    pub fn batch(batch_base: &Url, token: &Secret, timeout: Duration) -> Result<Self> {
        Ok(ImagesClient {
            http: http_client(timeout)?,
            images: images_url(batch_base, "batch_base_url", &["images"])?,
            auth: bearer(token, "the batch token")?,
            account: None,
        })
    }

    /// The same client (same connection pool, same host) with another token: a renewed
    /// batch token.
    pub fn with_token(&self, token: &Secret) -> Result<Self> {
        Ok(ImagesClient {
            http: self.http.clone(),
            images: self.images.clone(),
            auth: bearer(token, "the batch token")?,
            account: self.account.clone(),
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.images.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded on its own, so an id's '/' travels as %2F.
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// Uploads a body: a file streamed from disk (hashing what is sent), or the `url` form.
    pub async fn upload(&self, up: &Upload<'_>) -> Answered<Sent> {
        if let Some(ready) = up.ready
            && let Err(why) = ready.clone().await
        {
            return Answered::plain(Err(Error::LedgerWrite(why)));
        }
        let (form, hashed, streamed) = match Self::upload_form(up).await {
            Ok(built) => built,
            Err(e) => return Answered::plain(Err(e)),
        };
        let req = self.request(Method::POST, self.url(&["v1"]));
        let req = if streamed {
            req.multipart(form)
        } else {
            match in_one_piece(form).await {
                Ok((content_type, body)) => req.header(CONTENT_TYPE, content_type).body(body),
                Err(e) => return Answered::plain(Err(e)),
            }
        };
        parse::<Image>(req.send().await).await.map(|image| {
            let sha256 = hashed.and_then(|h| {
                h.lock()
                    .ok()
                    .and_then(|mut h| h.take())
                    .map(|h| hex::encode(h.finalize()))
            });
            Sent { image, sha256 }
        })
    }

    /// The multipart form of an upload, the hasher of a file body's bytes, and whether
    /// the file is streamed from disk (else every part is in memory).
    async fn upload_form(up: &Upload<'_>) -> Result<(Form, Option<Hasher>, bool)> {
        let mut form = Form::new();
        let mut hashed = None;
        let mut streamed = false;
        match up.body {
            Body::File { path, .. } => {
                let (opened, size) = match up.held {
                    Some(bytes) => (Opened::Held(bytes.clone()), bytes.len() as u64),
                    None => open_body(path.clone(), up.size).await?,
                };
                let part = match opened {
                    // The bytes examined and hashed are the bytes sent: nothing to compare.
                    Opened::Held(bytes) => {
                        Part::stream_with_length(reqwest::Body::from(bytes), size)
                    }
                    Opened::Read(bytes) => {
                        let mut h = Sha256::new();
                        h.update(&bytes);
                        hashed = Some(Arc::new(Mutex::new(Some(h))));
                        Part::bytes(bytes)
                    }
                    Opened::Stream(file) => {
                        let hasher = Arc::new(Mutex::new(Some(Sha256::new())));
                        let tap = hasher.clone();
                        let file = tokio::io::AsyncReadExt::take(file, size);
                        let stream =
                            ReaderStream::with_capacity(file, UPLOAD_CHUNK).map(move |chunk| {
                                if let (Ok(bytes), Ok(mut h)) = (&chunk, tap.lock())
                                    && let Some(h) = h.as_mut()
                                {
                                    h.update(bytes);
                                }
                                chunk
                            });
                        hashed = Some(hasher);
                        streamed = true;
                        Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                    }
                };
                let part = part
                    .file_name(part_filename(up.filename))
                    .mime_str(up.mime)
                    .map_err(|e| Error::Invalid(format!("bad content type {}: {e}", up.mime)))?;
                form = form.part("file", part);
            }
            Body::Url(url) => form = form.text("url", url.clone()),
        }
        form = form.text("metadata", up.metadata.to_string());
        if let Some(id) = up.id {
            form = form.text("id", id.to_string());
        }
        if up.require_signed_urls {
            form = form.text("requireSignedURLs", "true");
        }
        if let Some(c) = up.creator {
            form = form.text("creator", c.to_string());
        }
        Ok((form, hashed, streamed))
    }

    /// `POST /v2/direct_upload`: a draft and its one-time upload URL. The answer's body
    /// never goes into an error, since it holds the URL, a credential until it is used.
    pub async fn direct_upload(&self, d: &DraftRequest) -> Answered<DirectUpload> {
        let mut form = Form::new();
        if let Some(id) = &d.id {
            form = form.text("id", id.clone());
        }
        if let Some(e) = &d.expiry {
            form = form.text("expiry", e.clone());
        }
        if let Some(m) = &d.metadata {
            form = form.text("metadata", m.clone());
        }
        if d.require_signed_urls {
            form = form.text("requireSignedURLs", "true");
        }
        if let Some(c) = &d.creator {
            form = form.text("creator", c.clone());
        }
        let req = self
            .request(Method::POST, self.url(&["v2", "direct_upload"]))
            .multipart(form);
        parse(req.send().await).await.map_err(|e| match e {
            Error::Protocol { status, .. } => Error::Protocol {
                status,
                snippet: "(the direct upload answer, not shown)".into(),
            },
            other => other,
        })
    }

    /// `PATCH /v1/{id}`.
    pub async fn update(&self, id: &str, update: &ImageUpdate) -> Answered<Image> {
        parse(
            self.request(Method::PATCH, self.url(&["v1", id]))
                .json(update)
                .send()
                .await,
        )
        .await
    }

    /// `GET /v1/{id}/blob`, streamed into `out`: the original bytes.
    pub async fn blob_to(&self, id: &str, out: &mut tokio::fs::File) -> Answered<()> {
        let resp = match self
            .request(Method::GET, self.url(&["v1", id, "blob"]))
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) => return Answered::plain(Err(Error::Transport(e))),
        };
        if !resp.status().is_success() {
            return parse::<serde_json::Value>(Ok(resp)).await.map(|_| ());
        }
        let exhausted = RateHints::read(resp.headers(), SystemTime::now()).exhausted();
        let policy = crate::api::policy::Policy::from_headers(resp.headers());
        Answered {
            result: Self::copy_body(resp, out).await,
            exhausted,
            policy,
        }
    }

    /// Streams a response's body into `out`.
    async fn copy_body(resp: Response, out: &mut tokio::fs::File) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::Transport)?;
            out.write_all(&chunk).await.map_err(|source| Error::Io {
                path: "blob copy".into(),
                source,
            })?;
        }
        out.flush().await.map_err(|source| Error::Io {
            path: "blob copy".into(),
            source,
        })
    }

    /// `GET /v1/{id}`.
    pub async fn get(&self, id: &str) -> Answered<Image> {
        parse(
            self.request(Method::GET, self.url(&["v1", id]))
                .send()
                .await,
        )
        .await
    }

    /// `DELETE /v1/{id}`.
    pub async fn delete(&self, id: &str) -> Answered<()> {
        parse::<serde_json::Value>(
            self.request(Method::DELETE, self.url(&["v1", id]))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/stats`: also the cheapest way to check the token and the account. A
    /// refusal that the account id may have caused names that id.
    pub async fn stats(&self) -> Answered<AccountStats> {
        parse(
            self.request(Method::GET, self.url(&["v1", "stats"]))
                .send()
                .await,
        )
        .await
        .map_err(|e| match &self.account {
            Some(account) => e.naming_account(account),
            None => e,
        })
    }

    /// `GET /v1/batch_token`: a token for the batch host. The answer's body never goes into
    /// an error, since it holds the token.
    pub async fn batch_token(&self) -> Answered<BatchGrant> {
        parse(
            self.request(Method::GET, self.url(&["v1", "batch_token"]))
                .send()
                .await,
        )
        .await
        .map_err(|e| match e {
            Error::Protocol { status, .. } => Error::Protocol {
                status,
                snippet: "(the batch token answer, not shown)".into(),
            },
            e => e,
        })
    }

    /// `GET /v2`: one page of images.
    pub async fn list_v2(&self, q: &ListQuery) -> Answered<ImageListV2> {
        let mut url = self.url(&["v2"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(n) = q.per_page {
                pairs.append_pair("per_page", &n.to_string());
            }
            if let Some(t) = &q.continuation_token {
                pairs.append_pair("continuation_token", t);
            }
            if let Some(s) = &q.sort_order {
                pairs.append_pair("sort_order", s);
            }
            if let Some(c) = &q.creator {
                pairs.append_pair("creator", c);
            }
            for (field, value) in &q.meta_eq {
                pairs.append_pair(&format!("meta.{field}[eq]"), value);
            }
        }
        parse(self.request(Method::GET, url).send().await).await
    }
}

/// The account-management calls: variants, the image config, signing keys.
impl ImagesClient {
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Answered<T> {
        let mut req = self.request(method, self.url(segments));
        if let Some(b) = body {
            req = req.json(b);
        }
        parse(req.send().await).await
    }

    /// `GET /v1/variants`.
    pub async fn variants(&self) -> Answered<VariantList> {
        self.json(Method::GET, &["v1", "variants"], None).await
    }

    /// `GET /v1/variants/{id}`.
    pub async fn variant(&self, id: &str) -> Answered<VariantResult> {
        self.json(Method::GET, &["v1", "variants", id], None).await
    }

    /// `POST /v1/variants`.
    pub async fn create_variant(&self, v: &Variant) -> Answered<VariantResult> {
        let body = serde_json::to_value(v).unwrap_or_default();
        self.json(Method::POST, &["v1", "variants"], Some(&body))
            .await
    }

    /// `PATCH /v1/variants/{id}`.
    pub async fn update_variant(&self, v: &Variant) -> Answered<VariantResult> {
        let mut body = serde_json::to_value(v).unwrap_or_default();
        if let Some(o) = body.as_object_mut() {
            o.remove("id");
        }
        self.json(Method::PATCH, &["v1", "variants", &v.id], Some(&body))
            .await
    }

    /// `DELETE /v1/variants/{id}`.
    pub async fn delete_variant(&self, id: &str) -> Answered<()> {
        self.json::<serde_json::Value>(Method::DELETE, &["v1", "variants", id], None)
            .await
            .map(|_| ())
    }

    /// `PATCH /v1/config`: flexible variants on or off.
    pub async fn set_flexible_variants(&self, on: bool) -> Answered<serde_json::Value> {
        let body = serde_json::json!({ "flexible_variants": on });
        self.json(Method::PATCH, &["v1", "config"], Some(&body))
            .await
    }

    /// `GET /v1/keys`.
    pub async fn keys(&self) -> Answered<SigningKeys> {
        self.json(Method::GET, &["v1", "keys"], None).await
    }

    /// `PUT /v1/keys/{name}`: creates or rotates a key.
    pub async fn put_key(&self, name: &str) -> Answered<SigningKeys> {
        self.json(Method::PUT, &["v1", "keys", name], None).await
    }

    /// `DELETE /v1/keys/{name}`.
    pub async fn delete_key(&self, name: &str) -> Answered<SigningKeys> {
        self.json(Method::DELETE, &["v1", "keys", name], None).await
    }
}

/// `{api_base}/<tail...>`, for a base without a path of its own beyond its prefix.
fn images_url(base: &Url, key: &str, tail: &[&str]) -> Result<Url> {
    let mut images = base.clone();
    images
        .path_segments_mut()
        .map_err(|()| Error::Config(vec![format!("`{key}` {base} cannot have a path")]))?
        .pop_if_empty()
        .extend(tail);
    Ok(images)
}

/// The `Authorization` header of a token, marked sensitive.
fn bearer(token: &Secret, what: &str) -> Result<HeaderValue> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        Error::Config(vec![format!(
            "{what} contains characters that cannot go in an HTTP header"
        )])
    })?;
    // Keeps the header out of reqwest's and hyper's debug output.
    auth.set_sensitive(true);
    Ok(auth)
}

fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .user_agent(concat!("cfimg/", env!("CARGO_PKG_VERSION")))
        // The API answers where it is asked. A redirect means a wrong base URL or a proxy:
        // it is reported (a fatal 3xx), not followed with the token and a changed method.
        // Not following also spares the redirect policy's URL parse on every request.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::Transport)
}

/// A bare refusal without the envelope: `{"code":"103","message":"forbidden endpoint"}`.
#[derive(serde::Deserialize)]
struct Bare {
    code: serde_json::Value,
    message: String,
}

/// Turns a response into the envelope's result or a classified error. Every 429, and every
/// rate-limit code under any status, becomes [`Error::RateLimited`], whatever the body.
/// The answer carries the reset of a budget the headers say is used up, for the limiter.
async fn parse<T: DeserializeOwned>(sent: reqwest::Result<Response>) -> Answered<T> {
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => return Answered::plain(Err(Error::Transport(e))),
    };
    let hints = RateHints::read(resp.headers(), SystemTime::now());
    Answered {
        exhausted: hints.exhausted(),
        policy: crate::api::policy::Policy::from_headers(resp.headers()),
        result: read(resp, &hints).await,
    }
}

/// A response's body as the envelope's result or a classified error.
async fn read<T: DeserializeOwned>(resp: Response, hints: &RateHints) -> Result<T> {
    let status = resp.status().as_u16();
    // A redirect is not followed (see `http_client`): where it points is what to report.
    let redirect = resp
        .status()
        .is_redirection()
        .then(|| {
            resp.headers()
                .get(LOCATION)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten();
    let body = resp.bytes().await.map_err(Error::Transport)?;
    let envelope = serde_json::from_slice::<Envelope<T>>(&body);
    if let Ok(e) = &envelope
        && (200..300).contains(&status)
        && e.success
    {
        // A success envelope without a result is not what the API promises.
        if let Ok(Envelope {
            result: Some(result),
            ..
        }) = envelope
        {
            return Ok(result);
        }
        return Err(Error::Protocol {
            status,
            snippet: snippet(&body),
        });
    }
    let parsed_envelope = envelope.is_ok();
    let first = match envelope {
        Ok(e) => e.errors.into_iter().next(),
        // A well-formed error envelope whose `result` has an unexpected shape.
        Err(_) => serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
            .ok()
            .and_then(|e| e.errors.into_iter().next()),
    };
    if status == 429 || first.as_ref().is_some_and(|f| codes::is_rate_limit(f.code)) {
        let (code, message) = match first {
            Some(f) => (f.code, f.message),
            None if body.is_empty() => (0, "(empty body)".to_string()),
            None => (0, snippet(&body)),
        };
        return Err(Error::RateLimited {
            status,
            code,
            message,
            retry_after: hints.retry_after.or(hints.reset),
        });
    }
    if first.is_none()
        && let Ok(bare) = serde_json::from_slice::<Bare>(&body)
        && (bare.code.is_string() || bare.code.is_number())
    {
        let code = match bare.code {
            serde_json::Value::String(c) => c,
            other => other.to_string(),
        };
        return Err(Error::EndpointRefused {
            status,
            code,
            message: bare.message,
        });
    }
    match first {
        Some(f) => Err(Error::Api {
            status,
            code: f.code,
            message: f.message,
            retry_after: hints.retry_after,
        }),
        None if parsed_envelope => Err(Error::Api {
            status,
            code: 0,
            message: format!("HTTP {status} without an error item"),
            retry_after: hints.retry_after,
        }),
        None => Err(Error::Protocol {
            status,
            snippet: match redirect {
                Some(to) => format!("a redirect to {to}"),
                None => snippet(&body),
            },
        }),
    }
}

/// What a response's headers say about the rate limit. None of them is required.
#[derive(Debug, Default, PartialEq)]
struct RateHints {
    /// `Retry-After`, in seconds or as an HTTP date, clamped to [`MAX_WAIT`].
    retry_after: Option<Duration>,
    /// Requests left in the window: `Ratelimit: ...;r=<n>` or `x-ratelimit-remaining`.
    remaining: Option<u64>,
    /// Until the window resets: `Ratelimit: ...;t=<s>` or `x-ratelimit-reset` (seconds, or
    /// a Unix time), clamped to [`MAX_WAIT`].
    reset: Option<Duration>,
}

impl RateHints {
    fn read(headers: &HeaderMap, now: SystemTime) -> RateHints {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut hints = RateHints {
            retry_after: text(RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now)),
            ..RateHints::default()
        };
        if let Some((remaining, reset)) = text("ratelimit").and_then(parse_ratelimit) {
            hints.remaining = remaining;
            hints.reset = reset.map(seconds);
        }
        if hints.remaining.is_none() {
            hints.remaining = text("x-ratelimit-remaining").and_then(|v| v.trim().parse().ok());
        }
        if hints.reset.is_none() {
            hints.reset = text("x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| {
                    // Some servers send the Unix time of the reset rather than a delay.
                    if v > 1e9 {
                        let epoch = now
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64();
                        v - epoch
                    } else {
                        v
                    }
                })
                .map(seconds);
        }
        hints
    }

    /// The reset of a budget with no request left (`r=0` and a reset time), if so.
    fn exhausted(&self) -> Option<Duration> {
        self.reset.filter(|_| self.remaining == Some(0))
    }
}

/// A delay in seconds from a header, bounded: negative or NaN is zero, huge is [`MAX_WAIT`].
fn seconds(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64()))
    }
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP date>` (RFC 9110 section 10.2.3).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(s) = value.parse::<f64>() {
        return (!s.is_nan()).then(|| seconds(s));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT),
    )
}

/// `Ratelimit: "default";r=<remaining>;t=<reset s>` (IETF draft); with several items, the
/// one with the fewest requests left.
fn parse_ratelimit(value: &str) -> Option<(Option<u64>, Option<f64>)> {
    value
        .split(',')
        .map(|item| {
            let mut r = None;
            let mut t = None;
            for param in item.split(';') {
                match param.trim().split_once('=') {
                    Some(("r", v)) => r = v.trim().parse::<u64>().ok(),
                    Some(("t", v)) => t = v.trim().parse::<f64>().ok(),
                    _ => {}
                }
            }
            (r, t)
        })
        .filter(|(r, t)| r.is_some() || t.is_some())
        .min_by_key(|(r, _)| r.unwrap_or(u64::MAX))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::{HeaderName, StatusCode};
    use axum::response::IntoResponse;

    #[test]
    fn part_filenames_carry_no_control_characters() {
        assert_eq!(part_filename("cr\rname.png"), "cr%0Dname.png");
        assert_eq!(part_filename("esc\u{1b}[2K.png"), "esc%1B[2K.png");
        assert_eq!(part_filename("nl\nname.png"), "nl%0Aname.png");
        assert_eq!(part_filename("back\\slash.png"), "back%5Cslash.png");
        // Everything else, spaces, quotes, percent signs and non-ASCII included, is kept.
        assert_eq!(part_filename("été 100% \"x\".png"), "été 100% \"x\".png");
    }

    const EDGE_1015: &str = "<!DOCTYPE html><html><head><title>Access denied | api.cloudflare.com used Cloudflare to restrict access</title></head><body><h1>Error 1015</h1><h2>You are being rate limited</h2></body></html>";

    /// A client of a server on 127.0.0.1:0 that answers every request with one canned reply.
    pub(crate) async fn serving(
        status: u16,
        headers: &[(&'static str, &str)],
        body: &'static str,
    ) -> ImagesClient {
        let headers: Vec<(&'static str, String)> =
            headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let app = axum::Router::new().fallback(move || {
            let headers = headers.clone();
            async move {
                let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (k, v) in headers {
                    resp.headers_mut()
                        .insert(HeaderName::from_static(k), v.parse().unwrap());
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base: Url = format!("http://{addr}/client/v4").parse().unwrap();
        ImagesClient::new(&base, "acc", &Secret::new("t"), Duration::from_secs(5)).unwrap()
    }

    async fn error_of(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Error {
        serving(status, headers, body)
            .await
            .stats()
            .await
            .result
            .unwrap_err()
    }

    fn json_429(code: u32) -> &'static str {
        match code {
            971 => {
                r#"{"success":false,"errors":[{"code":971,"message":"Please wait and consider throttling your request speed"}],"messages":[],"result":null}"#
            }
            10100 => {
                r#"{"success":false,"errors":[{"code":10100,"message":"More than 1200 requests per 300 seconds reached. Please wait and consider throttling your request speed"}]}"#
            }
            _ => r#"{"success":false,"errors":[{"code":10429,"message":"Too many requests"}]}"#,
        }
    }

    #[tokio::test]
    async fn every_429_is_a_rate_limit_whatever_its_body() {
        for code in [971, 10100, 10429] {
            let e = error_of(429, &[("retry-after", "12")], json_429(code)).await;
            assert!(
                matches!(e, Error::RateLimited { status: 429, code: c, retry_after: Some(d), .. } if c == code && d == Duration::from_secs(12)),
                "{e:?}"
            );
            assert!(e.is_rate_limited());
        }
        let e = error_of(429, &[("retry-after", "30")], EDGE_1015).await;
        assert!(
            matches!(&e, Error::RateLimited { code: 0, retry_after: Some(d), message, .. } if *d == Duration::from_secs(30) && message.contains("Error 1015")),
            "{e:?}"
        );
        let e = error_of(429, &[], EDGE_1015).await;
        assert!(
            matches!(
                e,
                Error::RateLimited {
                    retry_after: None,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = error_of(429, &[], "").await;
        assert!(
            matches!(&e, Error::RateLimited { code: 0, retry_after: None, message, .. } if message == "(empty body)"),
            "{e:?}"
        );
        // A rate-limit code under another status is a rate limit too.
        let e = error_of(400, &[], json_429(10100)).await;
        assert!(
            matches!(
                e,
                Error::RateLimited {
                    status: 400,
                    code: 10100,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            e.disposition(),
            crate::error::Disposition::Retry { .. }
        ));
    }

    #[tokio::test]
    async fn other_errors_keep_their_kind() {
        let e = error_of(502, &[], "<html>bad gateway</html>").await;
        assert!(matches!(e, Error::Protocol { status: 502, .. }), "{e:?}");
        let e = error_of(
            404,
            &[],
            r#"{"success":false,"errors":[{"code":5404,"message":"Image not found"}]}"#,
        )
        .await;
        assert!(e.is_not_found() && !e.is_rate_limited(), "{e:?}");
    }

    #[tokio::test]
    async fn the_wait_comes_from_retry_after_or_the_reset_headers_and_is_bounded() {
        let wait = |e: Error| e.rate_limit_wait();
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let w = wait(error_of(429, &[("retry-after", &soon)], EDGE_1015).await).unwrap();
        assert!(
            w > Duration::from_secs(110) && w <= Duration::from_secs(120),
            "{w:?}"
        );
        let far = "Fri, 31 Dec 9999 23:59:59 GMT";
        assert_eq!(
            wait(error_of(429, &[("retry-after", far)], "").await),
            Some(MAX_WAIT)
        );
        assert_eq!(
            wait(error_of(429, &[("retry-after", "99999999999")], json_429(971)).await),
            Some(MAX_WAIT)
        );
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            wait(error_of(429, &[("retry-after", past)], "").await),
            Some(Duration::ZERO)
        );
        // Without Retry-After: the reset of the rate-limit headers.
        let ratelimit = [("ratelimit", "\"default\";r=0;t=42")];
        assert_eq!(
            wait(error_of(429, &ratelimit, json_429(971)).await),
            Some(Duration::from_secs(42))
        );
        let old = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "17")];
        assert_eq!(
            wait(error_of(429, &old, EDGE_1015).await),
            Some(Duration::from_secs(17))
        );
        // Nonsense is ignored, not trusted.
        assert_eq!(
            wait(error_of(429, &[("retry-after", "soon")], "").await),
            None
        );
    }

    #[test]
    fn reads_the_rate_limit_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut h = HeaderMap::new();
        h.insert("ratelimit", "\"default\";r=3;t=30".parse().unwrap());
        let hints = RateHints::read(&h, now);
        assert_eq!(
            (hints.remaining, hints.reset),
            (Some(3), Some(Duration::from_secs(30)))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "2000000060".parse().unwrap());
        let hints = RateHints::read(&h, now);
        assert_eq!(
            (hints.remaining, hints.reset),
            (Some(0), Some(Duration::from_secs(60)))
        );
        assert_eq!(
            RateHints::read(&HeaderMap::new(), now),
            RateHints::default()
        );
        assert_eq!(
            parse_ratelimit("\"a\";r=9;t=1, \"b\";r=0;t=50"),
            Some((Some(0), Some(50.0)))
        );
    }

    #[tokio::test]
    async fn a_bare_refusal_without_envelope_is_classified_not_fatal() {
        for status in [403, 404, 400] {
            let e = error_of(
                status,
                &[],
                r#"{"code":"103","message":"forbidden endpoint"}"#,
            )
            .await;
            assert!(
                matches!(&e, Error::EndpointRefused { code, message, .. } if code == "103" && message == "forbidden endpoint"),
                "{e:?}"
            );
            assert_eq!(e.disposition(), crate::error::Disposition::Defer);
            assert!(!e.is_ambiguous());
        }
    }

    /// An upload whose precondition (its intent durable in the ledger) fails sends
    /// nothing, and one whose precondition holds is sent; either way, only once the
    /// request is polled past it.
    #[tokio::test]
    async fn an_upload_goes_only_once_its_precondition_holds() {
        use futures_util::FutureExt;
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = served.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                r#"{"success":true,"errors":[],"messages":[],"result":{"id":"x","filename":"a.png","uploaded":"2026-01-01T00:00:00Z","requireSignedURLs":false,"variants":[]}}"#
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base: Url = format!("http://{addr}/client/v4").parse().unwrap();
        let client =
            ImagesClient::new(&base, "acc", &Secret::new("t"), Duration::from_secs(5)).unwrap();
        let body = Body::Url("https://example.com/a.png".into());
        let sent = |n| served.load(std::sync::atomic::Ordering::SeqCst) == n;
        for holds in [false, true] {
            let (settle, settled) = tokio::sync::oneshot::channel::<Result<(), String>>();
            let ready: Ready = async move { settled.await.unwrap_or(Err("dropped".into())) }
                .boxed()
                .shared();
            let form = Upload {
                body: &body,
                filename: "a.png",
                mime: "image/png",
                id: None,
                metadata: "{}",
                require_signed_urls: false,
                creator: None,
                held: None,
                size: None,
                ready: Some(&ready),
            };
            let mut upload = std::pin::pin!(client.upload(&form));
            assert!(futures_util::poll!(upload.as_mut()).is_pending());
            let before = served.load(std::sync::atomic::Ordering::SeqCst);
            settle
                .send(if holds {
                    Ok(())
                } else {
                    Err("disk full".into())
                })
                .unwrap();
            match (holds, upload.await.result) {
                (true, Ok(sent_image)) => {
                    assert_eq!(sent_image.image.id, "x");
                    assert!(sent(before + 1));
                }
                (false, Err(Error::LedgerWrite(why))) => {
                    assert_eq!(why, "disk full");
                    assert!(sent(before), "nothing may be sent without the intent");
                }
                (holds, other) => panic!("holds {holds}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_batch_token_answer_never_shows_in_an_error() {
        let client = serving(
            200,
            &[],
            r#"{"success":true,"result":{"token":"sekrit-tok"}}"#,
        )
        .await;
        let e = client.batch_token().await.result.unwrap_err();
        assert!(!format!("{e} {e:?}").contains("sekrit"), "{e:?}");
        let client = serving(
            200,
            &[],
            r#"{"success":true,"result":{"token":"sekrit-tok","expiresAt":"2030-01-01T00:00:00.000000000Z"}}"#,
        )
        .await;
        let grant = client.batch_token().await.result.unwrap();
        assert_eq!(grant.token.expose(), "sekrit-tok");
        assert!(!format!("{grant:?}").contains("sekrit"));
    }

    #[tokio::test]
    async fn a_read_only_token_s_write_is_forbidden_and_fatal() {
        let client = serving(
            403,
            &[],
            r#"{"success":false,"errors":[{"code":9109,"message":"Unauthorized to access requested resource"}]}"#,
        )
        .await;
        let e = client
            .update("cfimg-write-check", &ImageUpdate::default())
            .await
            .result
            .unwrap_err();
        assert!(e.is_forbidden(), "{e:?}");
        assert_eq!(e.disposition(), crate::error::Disposition::Fatal);
        let e = error_of(
            403,
            &[],
            r#"{"success":false,"errors":[{"code":5453,"message":"You have reached a service limit"}]}"#,
        )
        .await;
        assert!(e.is_quota_reached() && e.disposition() == crate::error::Disposition::Fatal);
    }
}
