//! cfimg moves images into Cloudflare Images and keeps them there in sync.
//!
//! The flow of a migration (see `pipeline`):
//! source (`source::walk`, `source::manifest`) -> quick check and hashing (`plan`) -> upload workers (`upload`,
//! every request through `limit`, retried by `retry`, errors classified in `error`) ->
//! the SQLite ledger (`ledger`), whose commit is the acknowledgement.
//!
//! After a migration, `commands` reads the mapping back (`export`), checks it against the
//! account in one listing pass (`verify`), rebuilds a lost ledger from the stamps
//! (`rebuild`; both algorithms in `reconcile`), and drives the rest of the Images API (`images`, `settings`, `sign_url`).
//! Direct creator uploads: `direct` (checks, mint, refresh) behind `cfimg direct-upload`
//! and `serve` (the HTTP service for apps: mint, status, webhook, reconciler, demo page).

pub mod api;
pub mod cli;
pub mod codes;
pub mod commands;
pub mod config;
pub mod direct;
pub mod download;
pub mod emulator;
pub mod error;
pub mod existing;
pub mod image_check;
pub mod item;
pub mod layer;
pub mod ledger;
pub mod metrics;
pub mod old_url;
pub mod outcome;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod quota;
pub mod recheck;
pub mod reconcile;
pub mod redirects;
pub mod remove;
pub mod replace;
pub mod rewrite;
pub mod rules;
pub mod secret;
pub mod serve;
pub mod service;
pub mod shard;
pub mod shown;
pub mod shutdown;
pub mod source;
pub mod stamp;
pub mod toml_error;
pub mod transport;
pub mod upload;
