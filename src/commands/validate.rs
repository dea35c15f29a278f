//! `cfimg validate`: configuration and credentials, checked with one request.

use std::sync::atomic::AtomicU32;

use super::EXIT_OK;
use crate::api::client::ImagesClient;
use crate::cli::Cli;
use crate::config::{self, RawConfig};
use crate::error::Result;
use crate::limit::Limiter;
use crate::retry;

/// Checks the configuration, then the token and account with `GET /v1/stats`.
pub async fn run(cli: &Cli) -> Result<i32> {
    let flags = RawConfig {
        ledger: cli.ledger.clone(),
        ..RawConfig::default()
    };
    let cfg = config::load(cli.config.as_deref(), flags, true)?;
    let client = ImagesClient::new(
        &cfg.api_base_url,
        &cfg.account_id,
        &cfg.api_token,
        cfg.upload.request_timeout,
    )?;
    let limiter = Limiter::new(cfg.upload.rate, cfg.upload.burst);
    let spent = AtomicU32::new(0);
    let policy = retry::Policy {
        max_attempts: 3,
        ..retry::Policy::default()
    };
    let stats = retry::call(policy, || limiter.send(&spent, client.stats())).await?;
    println!(
        "ok: account {} at {} holds {} images of {} allowed; ledger {}",
        cfg.account_id,
        cfg.api_base_url,
        stats.count.current,
        stats.count.allowed,
        cfg.ledger.display()
    );
    Ok(EXIT_OK)
}
