//! `cfimg validate`: configuration and credentials, checked with one request.

use super::EXIT_OK;
use crate::cli::Cli;
use crate::config::{self, RawConfig};
use crate::error::Result;
use crate::limit::Limiter;
use crate::pipeline;
use crate::retry;

/// Checks the configuration, then the token and account with `GET /v1/stats`.
pub async fn run(cli: &Cli) -> Result<i32> {
    let flags = RawConfig {
        ledger: cli.ledger.clone(),
        ..RawConfig::default()
    };
    let cfg = config::load(cli.config.as_deref(), flags, true)?;
    let limiter = Limiter::new(cfg.upload.rate, cfg.upload.burst);
    let policy = retry::Policy {
        max_attempts: 3,
        ..retry::Policy::default()
    };
    let (_, stats) = pipeline::connect(&cfg, &limiter, policy).await?;
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
