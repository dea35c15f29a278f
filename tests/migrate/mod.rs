//! `cfimg migrate` end to end: the real binary against the in-process emulator.

mod basics;
mod crash;
mod faults;
mod manifest;
mod rejects;
