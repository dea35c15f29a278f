//! Hardened edges (issue 18): secrets kept out of error messages, file names that cannot
//! forge log lines, downloads bounded in time, and manifest lines fixed in place.

mod config_secrets;
mod control_names;
mod downloads;
mod forged_names;
mod manifest_lines;
mod manifest_sweep;
mod sigpipe_socket;
