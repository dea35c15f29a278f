//! The router: both Cloudflare hosts, delivery, direct-upload URLs and the inspection
//! endpoints; and the per-request pipeline auth -> rate limit -> route -> faults -> handler.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use super::admission::Admission;
use super::app::App;
use super::faults::{Draw, EdgeError};
use super::reply::{ApiError, edge_html, edge_rate_limited, json, unauthorized_write};
use super::server::ConnKill;
use super::util::percent_decode;
use super::{auth, delivery, direct_upload, images, inspect, keys, variants};
use crate::api::types::{Envelope, codes};
use crate::rules::SERVICE_MAX_FILE_BYTES;

/// Which Cloudflare host a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `api.cloudflare.com/client/v4/accounts/{id}/images`.
    Api,
    /// `batch.imagedelivery.net/images`.
    Batch,
}

/// A resolved API route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Upload,
    ListV1,
    ListV2,
    DirectUpload,
    DirectUploadV1,
    Stats,
    BatchToken,
    GetConfig,
    PatchConfig,
    ListVariants,
    CreateVariant,
    GetVariant(String),
    GetVariantFlat(String),
    PatchVariant(String),
    DeleteVariant(String),
    ListKeys,
    PutKey(String),
    DeleteKey(String),
    GetImage(String),
    PatchImage(String),
    DeleteImage(String),
    Blob(String),
}

impl Route {
    /// Whether a read-only token is refused this route: every change, plus the routes that
    /// hand out credentials (`batch_token`, `direct_upload`).
    fn writes(&self) -> bool {
        !matches!(
            self,
            Route::ListV1
                | Route::ListV2
                | Route::Stats
                | Route::GetConfig
                | Route::ListVariants
                | Route::GetVariant(_)
                | Route::GetVariantFlat(_)
                | Route::ListKeys
                | Route::GetImage(_)
                | Route::Blob(_)
        )
    }
}

macro_rules! template {
    ($host:expr, $path:literal) => {
        match $host {
            Host::Api => concat!("/client/v4/accounts/{account_id}/images/", $path),
            Host::Batch => concat!("/images/", $path),
        }
    };
}

/// The router over shared state `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/client/v4/{*rest}", any(api_entry))
        .route("/images/{*rest}", any(batch_entry))
        .route("/cdn/{*rest}", get(delivery_entry))
        .route(
            "/upload/{*rest}",
            post(upload_entry).options(upload_preflight),
        )
        .route("/__emulator/webhook/test", post(webhook_test_entry))
        .route("/__emulator/state", get(state_entry))
        .route(
            "/__emulator/faults",
            get(get_faults_entry).put(put_faults_entry),
        )
        .fallback(fallback)
        // Room for a 10 MB file plus form overhead, so the 10 MB limit is ours to answer
        // with 5413; far larger bodies hit this limit and get 5413 too.
        .layer(DefaultBodyLimit::max(
            2 * SERVICE_MAX_FILE_BYTES as usize + 1024 * 1024,
        ))
        .with_state(app)
}

fn resolve(app: &App, host: Host, method: &Method, tail: &str) -> Option<(Route, &'static str)> {
    let segs: Vec<&str> = tail.split('/').collect();
    let dec = |s: &str| percent_decode(s, false);
    let r = match (segs.as_slice(), method.as_str()) {
        (["v1"], "POST") => (Route::Upload, template!(host, "v1")),
        (["v1"], "GET") => (Route::ListV1, template!(host, "v1")),
        (["v2"], "GET") => (Route::ListV2, template!(host, "v2")),
        (["v2", "direct_upload"], "POST") => {
            (Route::DirectUpload, template!(host, "v2/direct_upload"))
        }
        (["v1", "direct_upload"], "POST") => {
            (Route::DirectUploadV1, template!(host, "v1/direct_upload"))
        }
        (["v1", "stats"], "GET") => (Route::Stats, template!(host, "v1/stats")),
        (["v1", "batch_token"], "GET") => (Route::BatchToken, template!(host, "v1/batch_token")),
        (["v1", "config"], "GET") => (Route::GetConfig, template!(host, "v1/config")),
        (["v1", "config"], "PATCH") => (Route::PatchConfig, template!(host, "v1/config")),
        (["v1", "variants"], "GET") => (Route::ListVariants, template!(host, "v1/variants")),
        (["v1", "variants"], "POST") => (Route::CreateVariant, template!(host, "v1/variants")),
        (["v1", "variants", v], m) => {
            let v = dec(v)?;
            let route = match m {
                "GET" => Route::GetVariant(v),
                "PATCH" => Route::PatchVariant(v),
                "DELETE" => Route::DeleteVariant(v),
                _ => return None,
            };
            (route, template!(host, "v1/variants/{variant_id}"))
        }
        (["v1", "variants", v, "flat"], "GET") => (
            Route::GetVariantFlat(dec(v)?),
            template!(host, "v1/variants/{variant_id}/flat"),
        ),
        (["v1", "keys"], "GET") => (Route::ListKeys, template!(host, "v1/keys")),
        (["v1", "keys", k], m) => {
            let k = dec(k)?;
            let route = match m {
                "PUT" => Route::PutKey(k),
                "DELETE" => Route::DeleteKey(k),
                _ => return None,
            };
            (route, template!(host, "v1/keys/{signing_key_name}"))
        }
        (["v1", rest @ ..], m) if !rest.is_empty() => {
            // Ids may contain '/', raw or as %2F. `.../x/blob` is the blob of `x` when
            // `x` exists; otherwise the whole path is the id.
            if m == "GET" && rest.len() >= 2 && rest[rest.len() - 1] == "blob" {
                let id = dec(&rest[..rest.len() - 1].join("/"))?;
                if app.store.get(&id).is_some() {
                    return Some((Route::Blob(id), template!(host, "v1/{image_id}/blob")));
                }
            }
            let id = dec(&rest.join("/"))?;
            let route = match m {
                "GET" => Route::GetImage(id),
                "PATCH" => Route::PatchImage(id),
                "DELETE" => Route::DeleteImage(id),
                _ => return None,
            };
            (route, template!(host, "v1/{image_id}"))
        }
        _ => return None,
    };
    let on_batch = matches!(
        r.0,
        Route::Upload
            | Route::ListV2
            | Route::DirectUpload
            | Route::GetImage(_)
            | Route::PatchImage(_)
            | Route::DeleteImage(_)
    );
    (host == Host::Api || on_batch).then_some(r)
}

async fn api_entry(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let parsed = path
        .strip_prefix("/client/v4/accounts/")
        .and_then(|r| r.split_once('/'))
        .and_then(|(account, r)| Some((account, r.strip_prefix("images/")?)));
    let Some((account, tail)) = parsed else {
        app.counters.record(req.method(), "(no route)", 404);
        let mut resp = ApiError::no_route().into_response();
        if let Some(b) = &app.api_buckets {
            b.unmetered_headers(resp.headers_mut());
        }
        return resp;
    };
    let auth = auth::api(&app, req.headers(), account);
    pipeline(&app, Host::Api, tail, auth, req).await
}

async fn batch_entry(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let tail = path.strip_prefix("/images/").unwrap_or_default();
    let auth = auth::batch(&app, req.headers());
    pipeline(&app, Host::Batch, tail, auth, req).await
}

async fn pipeline(
    app: &App,
    host: Host,
    tail: &str,
    auth: Result<auth::Caller, auth::Denied>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let target = resolve(app, host, &method, tail);
    let template = target.as_ref().map_or("(no route)", |t| t.1);
    let buckets = match host {
        Host::Api => app.api_buckets.as_ref(),
        Host::Batch => app.batch_buckets.as_ref(),
    };
    let response = async {
        let (token, read_only) = match auth {
            Ok(caller) => (caller.token, caller.read_only),
            Err(denied) => {
                // Not counted (there is no user to count it against), but described.
                let mut resp = denied.into_response();
                if let Some(b) = buckets {
                    b.unmetered_headers(resp.headers_mut());
                }
                return resp;
            }
        };
        let admission = buckets.map(|b| (b, b.check(&token)));
        if let Some((b, a @ Admission::Limited { retry_after })) = admission {
            let (edge, with_retry_after) = app.faults.edge_429();
            if edge {
                return edge_rate_limited(with_retry_after.then_some(retry_after));
            }
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                "Please wait and consider throttling your request speed",
            )
            .into_response();
            b.headers(a, resp.headers_mut());
            return resp;
        }
        // Every answer to a counted request describes the limit, refusals included.
        let mut resp = async {
            let Some((route, _)) = target else {
                return ApiError::no_route().into_response();
            };
            if read_only && route.writes() {
                return unauthorized_write();
            }
            let draw = app.faults.draw(route == Route::Upload);
            if let Some(latency) = draw.latency {
                tokio::time::sleep(latency).await;
            }
            match draw.error {
                Some(e) => edge_error(e),
                None => {
                    let kill = req.extensions().get::<ConnKill>().cloned();
                    dispatch(app, route, req, &draw, kill, &method, template)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                }
            }
        }
        .await;
        if let Some((b, a)) = admission {
            b.headers(a, resp.headers_mut());
        }
        resp
    }
    .await;
    app.counters
        .record(&method, template, response.status().as_u16());
    response
}

fn edge_error(e: EdgeError) -> Response {
    match e {
        EdgeError::Internal => ApiError::internal("Internal server error").into_response(),
        EdgeError::RateLimitedHtml { retry_after } => edge_rate_limited(retry_after.then_some(1)),
        EdgeError::BadGateway { html: true } => edge_html(StatusCode::BAD_GATEWAY),
        EdgeError::Unavailable { html: true } => edge_html(StatusCode::SERVICE_UNAVAILABLE),
        EdgeError::BadGateway { html: false } => {
            ApiError::new(StatusCode::BAD_GATEWAY, 5502, "Bad gateway").into_response()
        }
        EdgeError::Unavailable { html: false } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            5503,
            "Service temporarily unavailable",
        )
        .into_response(),
    }
}

async fn dispatch(
    app: &App,
    route: Route,
    req: Request,
    draw: &Draw,
    kill: Option<ConnKill>,
    method: &Method,
    template: &'static str,
) -> super::reply::Reply {
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    match route {
        Route::Upload => {
            // A dropped connection never reaches the pipeline's counter: count it here.
            let on_drop = || app.counters.record(method, template, 0);
            images::upload(app, req, draw, kill, on_drop).await
        }
        Route::ListV1 => images::list_v1(app, query),
        Route::ListV2 => images::list_v2(app, query),
        Route::DirectUpload => direct_upload::create(app, req).await,
        Route::DirectUploadV1 => direct_upload::create_v1(app, req).await,
        Route::Stats => images::stats(app),
        Route::BatchToken => images::batch_token(app),
        Route::GetConfig => keys::get_config(app),
        Route::PatchConfig => keys::patch_config(app, req).await,
        Route::ListVariants => variants::list(app),
        Route::CreateVariant => variants::create(app, req).await,
        Route::GetVariant(v) => variants::get(app, &v),
        Route::GetVariantFlat(v) => variants::get_flat(app, &v),
        Route::PatchVariant(v) => variants::patch(app, &v, req).await,
        Route::DeleteVariant(v) => variants::delete(app, &v),
        Route::ListKeys => keys::list(app),
        Route::PutKey(k) => keys::put(app, &k),
        Route::DeleteKey(k) => keys::delete(app, &k),
        Route::GetImage(id) => images::get(app, &id),
        Route::PatchImage(id) => images::patch(app, &id, req).await,
        Route::DeleteImage(id) => images::delete(app, &id),
        Route::Blob(id) => images::blob(app, &id),
    }
}

async fn delivery_entry(State(app): State<Arc<App>>, req: Request) -> Response {
    let resp = delivery::serve(&app, req.uri().path(), req.uri().query());
    app.counters.record(
        req.method(),
        "/cdn/{account_hash}/{image_id}/{variant}",
        resp.status().as_u16(),
    );
    resp
}

async fn upload_entry(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let rest = path.strip_prefix("/upload/").unwrap_or_default();
    let mut resp = direct_upload::upload(&app, rest, req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    // The creator's browser reads this answer from the app's origin.
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    app.counters.record(
        &method,
        "/upload/{account_hash}/{image_id}",
        resp.status().as_u16(),
    );
    resp
}

/// A browser's preflight before it POSTs a file to a one-time URL from another origin.
async fn upload_preflight(req: Request) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn webhook_test_entry(State(app): State<Arc<App>>) -> Response {
    match app.webhooks.send_test().await {
        Ok(status) => json(
            StatusCode::OK,
            &serde_json::json!({ "receiver_status": status }),
        ),
        Err(e) => ApiError::bad_request(e).into_response(),
    }
}

async fn state_entry(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, &inspect::inspect(&app))
}

async fn get_faults_entry(State(app): State<Arc<App>>) -> Response {
    json(StatusCode::OK, &app.faults.get())
}

async fn put_faults_entry(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice(&body) {
        Ok(faults) => {
            app.faults.set(faults);
            json(StatusCode::OK, &app.faults.get())
        }
        Err(e) => ApiError::bad_request(format!("invalid faults JSON: {e}")).into_response(),
    }
}

async fn fallback(State(app): State<Arc<App>>, method: Method) -> Response {
    app.counters.record(&method, "(no route)", 404);
    json(
        StatusCode::NOT_FOUND,
        &Envelope::<()>::err(codes::NO_ROUTE, "No route for that URI"),
    )
}
