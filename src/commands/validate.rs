//! `cfimg validate`: configuration and credentials, checked with two requests: one read
//! (`GET /v1/stats`) and one write that cannot change anything (`PATCH` of an id that
//! cannot exist), which tells a token that may upload from a read-only one.

use std::sync::atomic::AtomicU32;

use super::{EXIT_FATAL_API, EXIT_OK};
use crate::cli::Cli;
use crate::config::{self, RawConfig};
use crate::error::Result;
use crate::transport::ApiLane;
use crate::transport::retry::RetryPolicy;

/// Checks the configuration, then the token and account with `GET /v1/stats`, then the
/// token's write permission.
pub async fn run(cli: &Cli) -> Result<i32> {
    let flags = RawConfig {
        ledger: cli.ledger(),
        ..RawConfig::default()
    };
    let cfg = config::load(cli.config.as_deref(), flags, true)?;
    let lane = ApiLane {
        policy: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        ..ApiLane::from_config(&cfg)?
    };
    let stats = lane.check().await?;
    // A 404 for an id nobody can have used proves the write was allowed; a 403 says the
    // token is read-only. Nothing is written either way.
    let probe = format!("cfimg-write-check-{}", uuid::Uuid::new_v4().simple());
    let spent = AtomicU32::new(0);
    let nothing = crate::api::client::ImageUpdate::default();
    let write = lane
        .call(&spent, || lane.client.update(&probe, &nothing))
        .await;
    match write {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) if e.is_forbidden() => {
            println!(
                "read-only token: account {} at {} can be read ({} images of {} allowed), but the token may not write: {e}",
                cfg.account_id, cfg.api_base_url, stats.count.current, stats.count.allowed,
            );
            eprintln!(
                "cfimg: uploads need a token with the Account > Cloudflare Images > Edit permission"
            );
            return Ok(EXIT_FATAL_API);
        }
        Err(e) => return Err(e),
    }
    println!(
        "ok: account {} at {} holds {} images of {} allowed; the token may write (Images Edit); ledger {}",
        cfg.account_id,
        cfg.api_base_url,
        stats.count.current,
        stats.count.allowed,
        cfg.ledger.display()
    );
    Ok(EXIT_OK)
}
