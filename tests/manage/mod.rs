//! The management commands end to end: export, verify, ledger rebuild, images, variants,
//! keys and signed URLs, with the real binary against the in-process emulator.

mod delete_named_ledger;
mod images;
mod ledger;
mod rebuild;
mod safe_commands;
mod verify_repair_says;
mod verify_shared_image;
mod verify_truth;
