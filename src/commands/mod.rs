//! The commands behind the CLI. Exit codes ([`Error::exit_code`]) and the hints that follow
//! a fatal error ([`Error::hint`]) are decided in `error.rs`; the codes are re-exported here.
//!
//! - `completions.rs`: `completions` and `man`, generated from the command line's definitions.
//! - `direct_upload.rs`: `direct-upload create|status`, one-time upload URLs from the shell.
//! - `export.rs`: `export`, the ledger as CSV or JSON lines, streamed.
//! - `images.rs`: `images list|get|update|delete|blob|stats`, the Images API from the shell.
//! - `ledger_care.rs`: `ledger backup` and `ledger check`.
//! - `ledger_hint.rs`: where a read-only command's ledger probably is when it is not found.
//! - `ledger_views.rs`: `status` and `failures`, read-only views of the ledger.
//! - `migrate.rs`: `migrate`, from configuration and source to the run and its summary.
//! - `rebuild.rs`: `ledger rebuild`, its flags, source and printing (algorithm: `reconcile`).
//! - `redirects.rs`: `redirects`, `redirects check` and `source set-old-base|list` (issue 22).
//! - `rewrite.rs`: `rewrite`, old URLs in files replaced, reported and undone (algorithm: `rewrite`).
//! - `serve.rs`: `serve`, configuration, optional emulator and the drafts ledger, until a signal.
//! - `settings.rs`: `variants`, `flexible-variants` and `keys`, the account's delivery settings.
//! - `sign_url.rs`: `sign-url`, a signed delivery URL for a private image.
//! - `validate.rs`: `validate`, configuration and credentials checked with two requests.
//! - `verify.rs`: `verify`, its flags and printing (the algorithm is in `reconcile`).
//! - `watch.rs`: `watch`, the daemon: pipeline on a watched folder, notify, metrics, SIGHUP.

use crate::cli::{Cli, Command};
pub use crate::error::{
    EXIT_FATAL_API, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TEMPFAIL, EXIT_USAGE,
};
use crate::error::{Error, Result};

mod completions;
mod direct_upload;
mod export;
mod images;
mod ledger_care;
mod ledger_hint;
mod ledger_views;
mod migrate;
mod rebuild;
mod redirects;
mod rewrite;
mod serve;
mod settings;
mod sign_url;
mod validate;
mod verify;
mod watch;

/// Usage or configuration error (the older name of [`EXIT_USAGE`]).
pub const EXIT_CONFIG: i32 = EXIT_USAGE;

/// Runs the command and returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    if let Some(problem) = cli.misplaced_ledger() {
        return Err(Error::Config(vec![problem]));
    }
    match &cli.command {
        Command::Migrate(args) => migrate::run(&cli, args).await,
        Command::Watch(args) => watch::run(&cli, args).await,
        Command::Status(out) => ledger_views::status(&cli, out.output.json),
        Command::Failures(args) => ledger_views::failures(&cli, args.output.json, args.all),
        Command::Validate(_) => validate::run(&cli).await,
        Command::Export(args) => export::run(&cli, args),
        Command::Verify(args) => verify::run(&cli, args).await,
        Command::Ledger(crate::cli::LedgerCommand::Rebuild(args)) => rebuild::run(&cli, args).await,
        Command::Ledger(crate::cli::LedgerCommand::Backup(args)) => ledger_care::backup(&cli, args),
        Command::Ledger(crate::cli::LedgerCommand::Check(_)) => ledger_care::check(&cli),
        Command::Images(c) => images::run(&cli, c).await,
        Command::Variants(c) => settings::variants(&cli, c).await,
        Command::FlexibleVariants(a) => settings::flexible(&cli, a).await,
        Command::Keys(c) => settings::keys(&cli, c).await,
        Command::SignUrl(a) => sign_url::run(&cli, a).await,
        Command::DirectUpload(c) => direct_upload::run(&cli, c).await,
        Command::Serve(a) => serve::run(&cli, a).await,
        Command::Redirects(a) => redirects::run(&cli, a).await,
        Command::Source(c) => redirects::source(&cli, c),
        Command::Rewrite(a) => rewrite::run(&cli, a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
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

/// The validated configuration (credentials required) and the API lane every management
/// command sends through: the account's limiter, and retries of transient errors.
pub(crate) fn api_lane(cli: &Cli) -> Result<(crate::config::Config, crate::transport::ApiLane)> {
    api_lane_with(cli, crate::config::RawConfig::default())
}

/// [`api_lane`] with more settings from the command's flags (e.g. a bucket's endpoint).
pub(crate) fn api_lane_with(
    cli: &Cli,
    mut flags: crate::config::RawConfig,
) -> Result<(crate::config::Config, crate::transport::ApiLane)> {
    flags.ledger = cli.ledger();
    let cfg = crate::config::load(cli.config.as_deref(), flags, true)?;
    let lane = crate::transport::ApiLane::from_config(&cfg)?;
    Ok((cfg, lane))
}

/// The exit code for an error that ended a command (see [`Error::exit_code`]).
pub fn exit_code(e: &Error) -> i32 {
    e.exit_code()
}

/// The account's image count from `GET /v1/stats` (one request, no retry), e.g. to say by
/// how much a quota is exceeded: "the account holds 100000 images of 100000 allowed".
pub async fn quota_figures(cfg: &crate::config::Config) -> Option<String> {
    let lane = crate::transport::ApiLane::from_config(cfg).ok()?;
    let spent = std::sync::atomic::AtomicU32::new(0);
    let stats = lane.once(&spent, lane.client.stats()).await.ok()?;
    Some(format!(
        "the account holds {} of {} allowed",
        crate::progress::plural(stats.count.current, "image", "images"),
        stats.count.allowed
    ))
}

/// A random secret for the webhook between `serve --emulator` and its emulator.
pub(crate) fn serve_secret() -> crate::secret::Secret {
    crate::secret::Secret::new(uuid::Uuid::new_v4().simple().to_string())
}
