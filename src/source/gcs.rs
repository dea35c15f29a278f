//! Google Cloud Storage read through its JSON API: the listing and the object reads of a
//! `gs://` bucket source. `object_store`'s GCS store still does what it is good at here:
//! it resolves the credentials (a service-account key, application default credentials)
//! into bearer tokens and signs URLs. Listing and reading go through the JSON API instead of
//! its XML API because the JSON API is what every GCS client library speaks and what
//! emulators serve (gcp-storage-emulator has no XML bucket listing, and its XML downloads
//! carry no ETag, which `object_store` requires); real GCS serves both alike.
//!
//! An object's change token is its generation (a new one on every overwrite), and a read
//! asks for that generation only (`ifGenerationMatch`), as an S3 read asks `If-Match`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::gcp::GoogleCloudStorage;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// The store named in `object_store` errors.
const STORE: &str = "GCS";

/// Characters of an object name sent as they are in a URL path segment (everything else,
/// `/` included, is percent-encoded: the name is one segment).
const NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The public GCS endpoint.
pub const DEFAULT_BASE_URL: &str = "https://storage.googleapis.com";

/// A `gs://` bucket's JSON API client.
pub struct Gcs {
    http: reqwest::Client,
    /// The API's base URL, without a trailing `/`.
    base: String,
    bucket: String,
    /// Credentials (bearer tokens) and the URL signer.
    pub store: GoogleCloudStorage,
    /// The emulator: requests carry no token.
    anonymous: bool,
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct GcsObject {
    /// Its full name, as stored (a folder placeholder keeps its trailing `/`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Its generation, when the service sent one.
    pub generation: Option<String>,
    /// Last change (RFC 3339), when the service sent one.
    pub updated: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    items: Vec<RawObject>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct RawObject {
    name: String,
    /// A decimal string in the real API; a number in some emulators.
    #[serde(default)]
    size: serde_json::Value,
    #[serde(default)]
    generation: Option<serde_json::Value>,
    #[serde(default)]
    updated: Option<String>,
}

fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An HTTP refusal as the `object_store` error the dispositions already classify.
fn status_error(status: reqwest::StatusCode, path: &str, body: &str) -> object_store::Error {
    let source = format!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    )
    .into();
    let path = path.to_string();
    match status.as_u16() {
        404 => object_store::Error::NotFound { path, source },
        401 => object_store::Error::Unauthenticated { path, source },
        403 => object_store::Error::PermissionDenied { path, source },
        304 | 412 => object_store::Error::Precondition { path, source },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

fn transport_error(e: reqwest::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

impl Gcs {
    /// A client of `bucket` at `base` with `store`'s credentials (none when `anonymous`).
    pub fn new(
        base: &str,
        bucket: &str,
        store: GoogleCloudStorage,
        anonymous: bool,
        timeout: Duration,
    ) -> Result<Gcs, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()?;
        Ok(Gcs {
            http,
            base: base.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            store,
            anonymous,
        })
    }

    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> object_store::Result<reqwest::RequestBuilder> {
        if self.anonymous {
            return Ok(request);
        }
        let credential = self.store.credentials().get_credential().await?;
        Ok(request.bearer_auth(&credential.bearer))
    }

    fn bucket_url(&self) -> String {
        format!(
            "{}/storage/v1/b/{}/o",
            self.base,
            utf8_percent_encode(&self.bucket, NAME)
        )
    }

    /// One page of the objects whose name starts with `prefix`, and the next page's token.
    async fn page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> object_store::Result<(Vec<GcsObject>, Option<String>)> {
        let mut query = vec![("prefix", prefix)];
        if let Some(t) = token {
            query.push(("pageToken", t));
        }
        // A few quick tries on a server's or the network's hiccup: a listing of millions
        // should not end on one lost page; a refusal (401, 403, 404) ends it at once.
        let mut wait = Duration::from_millis(200);
        let mut tries = 0;
        let response = loop {
            tries += 1;
            let request = self
                .authorize(self.http.get(self.bucket_url()).query(&query))
                .await?;
            match request.send().await {
                Ok(r) if r.status().is_success() => break r,
                Ok(r) if tries < 5 && (r.status().is_server_error() || r.status() == 429) => {}
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    return Err(status_error(status, prefix, &body));
                }
                Err(e) if tries < 5 && (e.is_connect() || e.is_timeout()) => {}
                Err(e) => return Err(transport_error(e)),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        };
        let page: Page = response.json().await.map_err(transport_error)?;
        let objects = page
            .items
            .into_iter()
            .map(|o| GcsObject {
                size: text_of(&o.size)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
                generation: o.generation.as_ref().and_then(text_of),
                updated: o.updated,
                name: o.name,
            })
            .collect();
        Ok((objects, page.next_page_token.filter(|t| !t.is_empty())))
    }

    /// Every object whose name starts with `prefix`, page by page (one request each).
    pub fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, object_store::Result<GcsObject>> {
        // `None`: done; `Some(token)`: the next page (the first has no token).
        futures_util::stream::try_unfold(Some(None::<String>), move |next| async move {
            let Some(token) = next else {
                return Ok::<_, object_store::Error>(None);
            };
            let (objects, token) = self.page(prefix, token.as_deref()).await?;
            let page = futures_util::stream::iter(objects.into_iter().map(Ok));
            Ok(Some((page, token.map(Some))))
        })
        .try_flatten()
        .boxed()
    }

    /// The bytes of the object `name`, of this generation only when one is given.
    pub async fn get(
        &self,
        name: &str,
        generation: Option<&str>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let url = format!(
            "{}/download/storage/v1/b/{}/o/{}",
            self.base,
            utf8_percent_encode(&self.bucket, NAME),
            utf8_percent_encode(name, NAME)
        );
        let mut query = vec![("alt", "media")];
        if let Some(g) = generation {
            query.push(("ifGenerationMatch", g));
        }
        let request = self.authorize(self.http.get(url).query(&query)).await?;
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error(status, name, &body));
        }
        Ok(response.bytes_stream().map_err(transport_error).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_the_errors_the_dispositions_know() {
        let e = |s: u16| status_error(reqwest::StatusCode::from_u16(s).unwrap(), "k", "");
        assert!(matches!(e(404), object_store::Error::NotFound { .. }));
        assert!(matches!(
            e(403),
            object_store::Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            e(401),
            object_store::Error::Unauthenticated { .. }
        ));
        assert!(matches!(e(412), object_store::Error::Precondition { .. }));
        assert!(matches!(e(503), object_store::Error::Generic { .. }));
    }

    #[test]
    fn an_object_name_is_one_path_segment() {
        assert_eq!(
            utf8_percent_encode("a b/ü+%20.jpg", NAME).to_string(),
            "a%20b%2F%C3%BC%2B%2520.jpg"
        );
    }
}
