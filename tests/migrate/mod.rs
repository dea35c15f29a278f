//! `cfimg migrate` end to end: the real binary against the in-process emulator.

mod basics;
mod bucket;
mod crash;
mod faults;
mod rejects;
