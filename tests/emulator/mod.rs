//! The emulator, tested over HTTP: each file covers one area; helpers live here.

mod api2026;
mod auth;
mod command;
mod decode;
mod direct_upload;
mod edge429;
mod faults;
mod images;
mod lag;
mod misc;
mod ratelimit;
mod schema;
mod strict_batch;

use std::time::Duration;

use cfimg::emulator::{EmulatorConfig, EmulatorHandle, start};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// A small valid PNG; `n` makes payloads distinct.
pub fn png(n: u32) -> Vec<u8> {
    crate::common::png(n, 100)
}

/// A running emulator plus a client.
pub struct Emu {
    pub handle: EmulatorHandle,
    pub http: reqwest::Client,
}

impl Emu {
    /// Starts with rate limits off and no faults, unless `tweak` says otherwise.
    pub async fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> Emu {
        let mut config = EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            ..EmulatorConfig::default()
        };
        tweak(&mut config);
        let handle = start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .expect("emulator starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Emu { handle, http }
    }

    pub async fn start() -> Emu {
        Self::start_with(|_| {}).await
    }

    /// `.../accounts/{id}/images` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/accounts/{}/images{path}",
            self.handle.api_base(),
            self.handle.account_id()
        )
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .bearer_auth(self.handle.token())
    }

    /// The stored bytes of an image, through `GET /v1/{id}/blob`.
    pub async fn blob(&self, id: &str) -> bytes::Bytes {
        let resp = self
            .get(&format!("/v1/{id}/blob"))
            .send()
            .await
            .expect("blob request");
        assert_eq!(resp.status(), 200, "blob of {id}");
        resp.bytes().await.expect("blob body")
    }

    /// Sends a JSON body with the API token; returns the status and the JSON answer.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        status_json(
            self.req(method, path)
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.handle.token())
    }

    /// POSTs an upload form to the API host.
    pub async fn upload(&self, form: Form) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::POST, "/v1")
            .multipart(form)
            .send()
            .await
            .unwrap();
        status_json(resp).await
    }

    /// Uploads `png(n)` with the custom id `id` (or an assigned one).
    pub async fn upload_png(&self, n: u32, id: Option<&str>) -> Value {
        let mut form = Form::new().part("file", file_part(png(n), "a.png"));
        if let Some(id) = id {
            form = form.text("id", id.to_owned());
        }
        let (status, body) = self.upload(form).await;
        assert_eq!(status, 200, "{body}");
        body["result"].clone()
    }
}

pub fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The first error code of an envelope.
pub fn code(body: &Value) -> u64 {
    body["errors"][0]["code"].as_u64().unwrap_or(0)
}
