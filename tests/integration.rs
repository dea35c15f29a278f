//! One integration-test binary: every module shares the helpers in `common`.

mod cli;
mod common;
mod direct;
mod edges;
mod emulator;
mod manage;
mod migrate;
mod ops;
mod redirects;
mod rewrite;
mod verify;
mod watch;
