//! `cfimg migrate` end to end: the real binary against the in-process emulator.

mod api21;
mod backup_onto_itself;
mod basics;
mod batch;
mod bucket;
mod bucket_clouds;
mod crash;
mod exactly_once;
mod exit_codes;
mod faults;
mod ledger_not_a_file;
mod ledger_safety;
mod lost_ledger;
mod manifest;
mod messages;
mod noop_rerun;
mod quota;
mod rate_warning;
mod rejects;
mod shards;
mod sources;
