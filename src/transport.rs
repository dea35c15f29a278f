//! Transports: the lanes requests go out through. Today one lane, the API host, with the
//! account's limiter and the retry policy; batch-token lanes join it here. A lane owns its
//! pacing and counting, so that callers ask for a lane, not for a host.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use crate::api::client::ImagesClient;
use crate::error::Result;
use crate::limit::Limiter;
use crate::retry::{self, Policy};

/// The API host: every attempt through the shared limiter, retried by the policy.
#[derive(Debug, Clone)]
pub struct ApiLane {
    /// The client.
    pub client: ImagesClient,
    /// The account's limiter.
    pub limiter: Arc<Limiter>,
    /// Retry settings.
    pub policy: Policy,
}

impl ApiLane {
    /// One API call with its retries; every attempt takes a limiter token and is counted
    /// in `spent`.
    pub async fn call<T, F, Fut>(&self, spent: &AtomicU32, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        retry::call(self.policy, || self.limiter.send(spent, request())).await
    }

    /// One attempt, no retry (the caller decides what an error means).
    pub async fn once<T>(
        &self,
        spent: &AtomicU32,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.limiter.send(spent, request).await
    }
}
