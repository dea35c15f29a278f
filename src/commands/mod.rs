//! The commands behind the CLI, and the mapping of their results to exit codes.

use crate::api::types::codes;
use crate::cli::{Cli, Command};
use crate::error::{Disposition, Error, Result};

mod ledger_views;
mod migrate;
mod validate;

/// Everything went as asked.
pub const EXIT_OK: i32 = 0;
/// The run finished, but some items failed or were rejected.
pub const EXIT_INCOMPLETE: i32 = 1;
/// Usage or configuration error.
pub const EXIT_CONFIG: i32 = 2;
/// Fatal API error: authentication, account; or a source bucket that cannot be listed.
pub const EXIT_FATAL_API: i32 = 3;

/// Runs the command and returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Migrate(args) => migrate::run(&cli, args).await,
        Command::Status(out) => ledger_views::status(&cli, out.json),
        Command::Failures(args) => ledger_views::failures(&cli, args.json, args.all),
        Command::Validate => validate::run(&cli).await,
        Command::Emulator(args) => {
            crate::emulator::run(args.clone()).await.map_err(|e| {
                Error::Config(vec![format!(
                    "the emulator could not start: {e} (is --listen free?)"
                )])
            })?;
            Ok(EXIT_OK)
        }
    }
}

/// The exit code for an error that ended a command.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Config(_) => EXIT_CONFIG,
        Error::BucketListing { .. } => EXIT_FATAL_API,
        Error::Api { code, .. }
            if matches!(
                *code,
                codes::AUTH | codes::NOT_AUTHORISED | codes::MALFORMED_AUTH
            ) =>
        {
            EXIT_FATAL_API
        }
        e if e.disposition() == Disposition::Fatal
            && matches!(e, Error::Api { .. } | Error::Protocol { .. }) =>
        {
            EXIT_FATAL_API
        }
        _ => EXIT_INCOMPLETE,
    }
}

/// A hint that follows a fatal error's message.
pub fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::Api {
            code: codes::AUTH | codes::MALFORMED_AUTH,
            ..
        } => Some(
            "check CLOUDFLARE_API_TOKEN: it needs the Account > Cloudflare Images > Edit permission for this account",
        ),
        Error::Api {
            code: codes::NOT_AUTHORISED,
            ..
        } => Some(
            "check CLOUDFLARE_ACCOUNT_ID, and that Cloudflare Images is enabled on that account",
        ),
        Error::Transport(_) => Some("check the network and `api_base_url`"),
        Error::BucketListing { .. } => Some(
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the bucket name, --endpoint-url and --region",
        ),
        _ => None,
    }
}
