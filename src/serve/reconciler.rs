//! The background reconciler: for deployments without webhooks (or when one is lost), it
//! looks up pending drafts with `GET /v1/{id}` every `serve.reconcile_secs`, completing
//! those whose image arrived and expiring those past their expiry. It yields to mints:
//! a pass also looks up completed drafts whose delivery URL is not known yet (a completion
//! taken from a notice alone). A pass stops early when the account's limiter would make a request wait longer than
//! `serve.max_wait_secs`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Service;
use crate::ledger::DraftState;

/// Lookups per pass, at most, so that one pass never eats the account's budget.
const MAX_PER_PASS: usize = 50;

/// Runs until `stop`.
pub async fn run(svc: Arc<Service>, every: std::time::Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        pass(&svc).await;
    }
}

/// One pass over the pending drafts, oldest expiry first.
pub async fn pass(svc: &Service) {
    let listed = svc
        .book
        .lock()
        .map_err(|_| crate::error::Error::LedgerWrite("the drafts ledger lock is poisoned".into()))
        .and_then(|b| {
            Ok((
                b.list(Some(DraftState::Pending))?,
                b.list(Some(DraftState::Completed))?,
            ))
        });
    let pending = match listed {
        Ok((mut p, done)) => {
            p.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
            p.extend(done.into_iter().filter(|d| d.url.is_none()));
            p
        }
        _ => {
            tracing::warn!("the reconciler could not read the pending drafts");
            return;
        }
    };
    for draft in pending.iter().take(MAX_PER_PASS) {
        if svc.lane.limiter.delay() > svc.max_wait {
            tracing::debug!("reconciler pass cut short: the account's budget is busy");
            return;
        }
        match crate::direct::refresh(&svc.lane, &svc.book, draft).await {
            Ok(after) if after.state != draft.state || after.url != draft.url => {
                tracing::info!(id = %draft.id, state = after.state.as_str(), "draft reconciled");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id = %draft.id, error = %e, "the reconciler could not look up a draft")
            }
        }
    }
}
