//! Reconciling the ledger with the account: the algorithms behind `cfimg verify` and
//! `cfimg ledger rebuild`, apart from their flags and printing (in `commands/`).
//!
//! - `rebuild.rs`: match a source's items to stamped images, and record them.
//! - `verify.rs`: judge a listing against the ledger, and repair.
//! - `deep.rs`: `verify --deep`, the stored originals against their sources.
//! - `likeness.rs`: whether two files show the same picture (dimensions, frames, a
//!   perceptual hash).

pub mod deep;
pub mod likeness;
pub mod rebuild;
pub mod verify;
