//! A tiny image origin on 127.0.0.1:0 for URL-manifest tests: it serves files from memory,
//! answers chosen statuses, redirects, streams an oversized body, and counts requests.
//!
//! Routes: `/img/<name>` a stored file (404 when absent); `/status/<code>/<name>` that
//! status; `/redirect/<n>/<name>` a chain of `n` redirects ending at `/img/<name>`;
//! `/big/<name>` 11 MB streamed without a length; `/trickle/<ms>/<name>` a PNG signature,
//! then one byte every `ms` milliseconds, for ever.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Shared {
    files: Mutex<HashMap<String, Vec<u8>>>,
    hits: Mutex<HashMap<String, u64>>,
}

/// A running origin; stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts an origin on a free loopback port.
    pub async fn start() -> Origin {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("origin binds");
        let addr = listener.local_addr().expect("origin addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin { addr, shared, task }
    }

    /// Stores a file served at `/img/<name>`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(name.to_string(), bytes);
    }

    /// Removes a file: `/img/<name>` answers 404 from now on.
    pub fn remove(&self, name: &str) {
        self.shared.files.lock().unwrap().remove(name);
    }

    /// The URL of a path on this origin (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of a stored file.
    pub fn img(&self, name: &str) -> String {
        self.url(&format!("/img/{name}"))
    }

    /// The `host:port` part of its URLs.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The host as path ids show it (ids drop the port).
    pub fn id_host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Requests served for a path (query excluded), whatever the answer.
    pub fn hits(&self, path: &str) -> u64 {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request served.
    pub fn total_hits(&self) -> u64 {
        self.shared.hits.lock().unwrap().values().sum()
    }
}

/// A URL on a loopback port nothing listens on.
pub async fn closed_port_url(path: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}{path}")
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    *shared.hits.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match parts.as_slice() {
        ["img", name] => match shared.files.lock().unwrap().get(*name) {
            Some(bytes) => (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes.clone(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        ["status", code, _] => StatusCode::from_u16(code.parse().unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        ["redirect", n, name] => {
            let n: u32 = n.parse().unwrap_or(0);
            let next = if n <= 1 {
                format!("/img/{name}")
            } else {
                format!("/redirect/{}/{name}", n - 1)
            };
            (StatusCode::FOUND, [(header::LOCATION, next)]).into_response()
        }
        ["big", _] => {
            // 11 MB in 64 kB chunks, PNG-signed, with no Content-Length.
            let chunks = (0..176).map(|i| {
                let mut c = vec![0u8; 64 * 1000];
                if i == 0 {
                    c[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from(c))
            });
            Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        ["trickle", ms, _] => {
            let every = std::time::Duration::from_millis(ms.parse().unwrap_or(1000));
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n"))
            });
            let drip = futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(every).await;
                Some((Ok(bytes::Bytes::from_static(b"\0")), ()))
            });
            Body::from_stream(futures_util::StreamExt::chain(head, drip)).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
