//! The command line itself: `--help` of every command.

mod help;
mod readme;
