//! Reconciling the ledger with the account: the algorithms behind `cfimg verify` and
//! `cfimg ledger rebuild`, apart from their flags and printing (in `commands/`).
//!
//! - `rebuild.rs`: match a source's items to stamped images, and record them.
//! - `verify.rs`: judge a listing against the ledger, and repair.

pub mod rebuild;
pub mod verify;
