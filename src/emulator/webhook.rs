//! The webhook a real deployment gets from Cloudflare's Notifications: one POST per
//! completed or failed direct upload, in Cloudflare's notification envelope (`name`,
//! `text`, `data`, `ts`, `account_id`, `policy_id`, `policy_name`, `alert_type:
//! "image_notification"`, `alert_correlation_id`, `alert_event`), with the destination's
//! secret in `cf-webhook-auth`; and the dashboard's test POST (`{"text": "..."}`) on demand.
//! The fields inside `data` are undocumented at Cloudflare; the emulator sends `image_id`,
//! `status` (`uploaded` or `failed`), `filename` and, for failures, `error`, so that a
//! receiver is tested against plausible fields, and must still confirm what it cannot read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Where notifications go: a URL and the optional secret sent as `cf-webhook-auth`.
#[derive(Clone, Default)]
pub struct Destination {
    /// The receiver's URL.
    pub url: String,
    /// Sent in `cf-webhook-auth` when set.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The notification sender of one emulator.
pub struct Webhooks {
    destination: Mutex<Option<Destination>>,
    http: reqwest::Client,
    /// Deliveries that got any HTTP answer.
    delivered: Arc<AtomicU64>,
}

/// What a direct upload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The image is stored.
    Uploaded,
    /// The service refused the file.
    Failed,
}

impl Webhooks {
    /// A sender to `destination`, if any.
    pub fn new(destination: Option<Destination>, http: reqwest::Client) -> Webhooks {
        Webhooks {
            destination: Mutex::new(destination),
            http,
            delivered: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Points notifications elsewhere (`None`: send none, as a deployment without webhooks).
    pub fn set(&self, destination: Option<Destination>) {
        if let Ok(mut d) = self.destination.lock() {
            *d = destination;
        }
    }

    /// Deliveries that reached the receiver, whatever it answered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn target(&self) -> Option<Destination> {
        self.destination.lock().ok().and_then(|d| d.clone())
    }

    /// Sends the notification of one direct upload in the background, as Cloudflare does
    /// some time after the upload was answered.
    pub fn notify(
        &self,
        account_id: &str,
        id: &str,
        outcome: Outcome,
        filename: Option<&str>,
        error: Option<&str>,
    ) {
        let Some(dest) = self.target() else {
            return;
        };
        let status = match outcome {
            Outcome::Uploaded => "uploaded",
            Outcome::Failed => "failed",
        };
        let body = json!({
            "name": "Cloudflare Images",
            "text": format!("Direct creator upload of image {id}: {status}"),
            "data": {
                "image_id": id,
                "status": status,
                "filename": filename,
                "error": error,
            },
            "ts": chrono::Utc::now().timestamp(),
            "account_id": account_id,
            "alert_type": "image_notification",
            "alert_event": "image_notification",
            "policy_id": uuid::Uuid::new_v4().to_string(),
            "policy_name": "cfimg emulator: image notifications",
            "alert_correlation_id": uuid::Uuid::new_v4().to_string(),
        });
        let (http, delivered) = (self.http.clone(), self.delivered.clone());
        tokio::spawn(async move {
            let _ = post(&http, &dest, &body, &delivered).await;
        });
    }

    /// The dashboard's "Test" button: one POST now; returns the receiver's status.
    pub async fn send_test(&self) -> Result<u16, String> {
        let dest = self
            .target()
            .ok_or_else(|| "no webhook destination is configured (--webhook-url)".to_string())?;
        // The dashboard's test is the bare text, none of the envelope's other fields.
        let body = json!({
            "text": "Hello World! This is a test message sent from https://cloudflare.com. If you can see this, your webhook is configured properly.",
        });
        post(&self.http, &dest, &body, &self.delivered).await
    }
}

async fn post(
    http: &reqwest::Client,
    dest: &Destination,
    body: &Value,
    delivered: &AtomicU64,
) -> Result<u16, String> {
    let mut req = http.post(&dest.url).json(body);
    if let Some(s) = &dest.secret {
        req = req.header("cf-webhook-auth", s);
    }
    match req.send().await {
        Ok(resp) => {
            delivered.fetch_add(1, Ordering::Relaxed);
            Ok(resp.status().as_u16())
        }
        Err(e) => {
            tracing::warn!(url = %dest.url, error = %e, "the emulator's webhook could not be delivered");
            Err(format!("the webhook to {} failed: {e}", dest.url))
        }
    }
}
