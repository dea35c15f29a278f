//! `cfimg migrate` end to end: the real binary against the in-process emulator.

mod basics;
mod batch;
mod bucket;
mod crash;
mod exactly_once;
mod faults;
mod ledger_safety;
mod manifest;
mod quota;
mod rejects;
mod shards;
mod sources;
