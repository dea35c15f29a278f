//! `ImagesClient`: one HTTP request per call, no retries and no rate limiting of its own
//! (those belong to `upload` and `limit`), every answer turned into a typed result or a
//! classified [`Error`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use tokio_util::io::ReaderStream;

use super::types::{Envelope, Image, ImageListV2, Stats};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::source::Body;

/// Read size for streamed upload bodies: large enough to keep syscalls few, small enough
/// that 16 concurrent 10 MB uploads stay a few MB of buffers.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// A client of the Images API of one account.
#[derive(Clone)]
pub struct ImagesClient {
    http: reqwest::Client,
    images: Url,
    auth: HeaderValue,
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
}

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
        let mut images = api_base.clone();
        images
            .path_segments_mut()
            .map_err(|()| {
                Error::Config(vec![format!(
                    "`api_base_url` {api_base} cannot have a path"
                )])
            })?
            .pop_if_empty()
            .extend(["accounts", account_id, "images"]);
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                Error::Config(vec![
                    "the API token contains characters that cannot go in an HTTP header".into(),
                ])
            })?;
        // Keeps the header out of reqwest's and hyper's debug output.
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("cfimg/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Transport)?;
        Ok(ImagesClient { http, images, auth })
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
    pub async fn upload(&self, up: &Upload<'_>) -> Result<Sent> {
        let mut form = Form::new();
        let mut hashed = None;
        match up.body {
            Body::File { path, .. } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                let size = file
                    .metadata()
                    .await
                    .map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?
                    .len();
                let hasher = Arc::new(Mutex::new(Some(Sha256::new())));
                let tap = hasher.clone();
                let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK).map(move |chunk| {
                    if let (Ok(bytes), Ok(mut h)) = (&chunk, tap.lock())
                        && let Some(h) = h.as_mut()
                    {
                        h.update(bytes);
                    }
                    chunk
                });
                hashed = Some(hasher);
                let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                    .file_name(up.filename.to_string())
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
        let req = self
            .request(Method::POST, self.url(&["v1"]))
            .multipart(form);
        let image: Image = parse(req.send().await).await?;
        let sha256 = hashed.and_then(|h| {
            h.lock()
                .ok()
                .and_then(|mut h| h.take())
                .map(|h| hex::encode(h.finalize()))
        });
        Ok(Sent { image, sha256 })
    }

    /// `PATCH /v1/{id}`.
    pub async fn update(&self, id: &str, update: &ImageUpdate) -> Result<Image> {
        parse(
            self.request(Method::PATCH, self.url(&["v1", id]))
                .json(update)
                .send()
                .await,
        )
        .await
    }

    /// `GET /v1/{id}/blob`, streamed into `out`: the original bytes.
    pub async fn blob_to(&self, id: &str, out: &mut tokio::fs::File) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let resp = self
            .request(Method::GET, self.url(&["v1", id, "blob"]))
            .send()
            .await
            .map_err(Error::Transport)?;
        if !resp.status().is_success() {
            return parse::<serde_json::Value>(Ok(resp)).await.map(|_| ());
        }
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
    pub async fn get(&self, id: &str) -> Result<Image> {
        parse(
            self.request(Method::GET, self.url(&["v1", id]))
                .send()
                .await,
        )
        .await
    }

    /// `DELETE /v1/{id}`.
    pub async fn delete(&self, id: &str) -> Result<()> {
        parse::<serde_json::Value>(
            self.request(Method::DELETE, self.url(&["v1", id]))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/stats`: also the cheapest way to check the token and the account.
    pub async fn stats(&self) -> Result<Stats> {
        parse(
            self.request(Method::GET, self.url(&["v1", "stats"]))
                .send()
                .await,
        )
        .await
    }

    /// `GET /v2`: one page of images.
    pub async fn list_v2(&self, q: &ListQuery) -> Result<ImageListV2> {
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

/// Turns a response into the envelope's result or a classified error.
async fn parse<T: DeserializeOwned>(sent: reqwest::Result<Response>) -> Result<T> {
    let resp = sent.map_err(Error::Transport)?;
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = resp.bytes().await.map_err(Error::Transport)?;
    let envelope: Envelope<T> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(_) => {
            // Tell a well-formed error envelope with an unexpected `result` apart from a non-JSON body.
            if let Ok(e) = serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
                && let Some(first) = e.errors.first()
            {
                return Err(Error::Api {
                    status,
                    code: first.code,
                    message: first.message.clone(),
                    retry_after,
                });
            }
            return Err(Error::Protocol {
                status,
                snippet: snippet(&body),
            });
        }
    };
    if (200..300).contains(&status) && envelope.success {
        if let Some(result) = envelope.result {
            return Ok(result);
        }
        return Err(Error::Protocol {
            status,
            snippet: snippet(&body),
        });
    }
    let (code, message) = envelope
        .errors
        .first()
        .map(|e| (e.code, e.message.clone()))
        .unwrap_or((0, format!("HTTP {status} without an error item")));
    Err(Error::Api {
        status,
        code,
        message,
        retry_after,
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
