//! The command line: every command and flag, and how flags become configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    IdMode, RawBucket, RawConfig, RawDownload, RawManifest, RawUpload, RawWalk, S3Mode, Transport,
    UrlMode,
};
use crate::emulator::EmulatorArgs;
use crate::source::manifest::ManifestFormat;

#[path = "cli_help.rs"]
mod help;

/// The heading of the options every command (or every command with a ledger) shares, apart
/// from the command's own.
pub const GLOBAL: &str = "Global options";

/// cfimg moves images into Cloudflare Images and keeps them there in sync.
#[derive(Debug, Parser)]
#[command(name = "cfimg", version, about, long_about = None, after_help = help::CFIMG)]
pub struct Cli {
    /// Configuration file (TOML); see config.example.toml.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CFIMG_CONFIG",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub config: Option<PathBuf>,
    /// `--ledger` given before the command (`cfimg --ledger L status`), as older scripts do;
    /// hidden: help shows `--ledger` on the commands that use a ledger. See [`Cli::ledger`].
    #[arg(long = "ledger", value_name = "PATH", hide = true)]
    pub ledger_before_command: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Log lines as text, or as JSON objects for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT",
        help_heading = GLOBAL
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--ledger`, flattened into every command that reads or writes a ledger (and only those).
#[derive(Debug, Clone, Default, Args)]
pub struct LedgerArg {
    /// The SQLite ledger [env: CFIMG_LEDGER] [default: cfimg.sqlite; with --emulator: cfimg-emulator.sqlite; with --shard K/N: cfimg-shard-K-of-N.sqlite].
    #[arg(long = "ledger", value_name = "PATH", help_heading = GLOBAL)]
    pub path: Option<PathBuf>,
}

impl Cli {
    /// The `--ledger` given, after the command or before it; `None` leaves it to the
    /// configuration (`CFIMG_LEDGER`, `ledger = ...`, then `cfimg.sqlite`).
    pub fn ledger(&self) -> Option<PathBuf> {
        self.command
            .ledger_arg()
            .and_then(|l| l.path.clone())
            .or_else(|| self.ledger_before_command.clone())
    }

    /// A usage problem the parser cannot see: `--ledger` before a command that has no ledger.
    pub fn misplaced_ledger(&self) -> Option<String> {
        let name = match &self.command {
            Command::Emulator(_) => "emulator",
            // `images delete` has a ledger: the others are named on their own.
            Command::Images(ImagesCommand::List(_)) => "images list",
            Command::Images(ImagesCommand::Get { .. }) => "images get",
            Command::Images(ImagesCommand::Update(_)) => "images update",
            Command::Images(ImagesCommand::Blob { .. }) => "images blob",
            Command::Images(ImagesCommand::Stats(_)) => "images stats",
            Command::Variants(_) => "variants",
            Command::FlexibleVariants(_) => "flexible-variants",
            Command::Keys(_) => "keys",
            Command::SignUrl(_) => "sign-url",
            _ => "this command",
        };
        match (&self.ledger_before_command, self.command.ledger_arg()) {
            (Some(_), None) => Some(format!(
                "--ledger does nothing for `cfimg {name}` (it reads or writes no ledger): leave it out"
            )),
            _ => None,
        }
    }
}

impl Command {
    /// The command's `--ledger`, or `None` for a command that has no ledger. Every command is
    /// named, so that a new one must say whether it has a ledger.
    pub fn ledger_arg(&self) -> Option<&LedgerArg> {
        match self {
            Command::Migrate(a) => Some(&a.ledger),
            Command::Watch(a) => Some(&a.ledger),
            Command::Status(a) => Some(&a.ledger),
            Command::Failures(a) => Some(&a.ledger),
            Command::Validate(a) => Some(&a.ledger),
            Command::Export(a) => Some(&a.ledger),
            Command::Verify(a) => Some(&a.ledger),
            Command::Ledger(LedgerCommand::Rebuild(a)) => Some(&a.ledger),
            Command::Ledger(LedgerCommand::Backup(a)) => Some(&a.ledger),
            Command::Ledger(LedgerCommand::Check(a)) => Some(&a.ledger),
            Command::DirectUpload(DirectUploadCommand::Create(a)) => Some(&a.ledger),
            Command::DirectUpload(DirectUploadCommand::Status(a)) => Some(&a.ledger),
            Command::Serve(a) => Some(&a.ledger),
            Command::Images(ImagesCommand::Delete(a)) => Some(&a.ledger),
            Command::Redirects(RedirectsArgs {
                check: Some(RedirectsCommand::Check(a)),
                ..
            }) => Some(&a.ledger),
            Command::Redirects(a) => Some(&a.ledger),
            Command::Source(SourceCommand::SetOldBase(a)) => Some(&a.ledger),
            Command::Source(SourceCommand::List(a)) => Some(&a.ledger),
            Command::Rewrite(a) => Some(&a.ledger),
            Command::Emulator(_)
            | Command::Images(_)
            | Command::Variants(_)
            | Command::FlexibleVariants(_)
            | Command::Keys(_)
            | Command::SignUrl(_)
            | Command::Completions(_)
            | Command::Man(_) => None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per event.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a folder tree or a manifest of URLs into Cloudflare Images; reruns only do what is left.
    #[command(after_help = help::MIGRATE)]
    Migrate(MigrateArgs),
    /// Keep a folder in Cloudflare Images: upload new and changed files within seconds, as a daemon.
    #[command(after_help = help::WATCH)]
    Watch(WatchArgs),
    /// Show the ledger: items by state, bytes, the last run.
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// List every failed or rejected item with its reason (--all: also those passed over).
    #[command(after_help = help::FAILURES)]
    Failures(FailuresArgs),
    /// Check the configuration and the credentials, then exit.
    #[command(after_help = help::VALIDATE)]
    Validate(ValidateArgs),
    /// Run a local emulator of the Cloudflare Images API; it prints `export` lines that point cfimg at it.
    #[command(after_help = help::EMULATOR)]
    Emulator(EmulatorArgs),
    /// Write the ledger as CSV or JSON lines: one row per item, with its image and URL.
    #[command(after_help = help::EXPORT)]
    Export(ExportArgs),
    /// Compare the ledger with the account's images (one listing pass); --repair fixes what it can.
    #[command(after_help = help::VERIFY)]
    Verify(VerifyArgs),
    /// Maintain the ledger itself.
    #[command(subcommand, after_help = help::LEDGER)]
    Ledger(LedgerCommand),
    /// List, show, change, delete and download images; the account's image count.
    #[command(subcommand, after_help = help::IMAGES)]
    Images(ImagesCommand),
    /// The account's variants.
    #[command(subcommand, after_help = help::VARIANTS)]
    Variants(VariantsCommand),
    /// Turn flexible variants (width=...,height=... in delivery URLs) on or off.
    #[command(after_help = help::FLEXIBLE_VARIANTS)]
    FlexibleVariants(FlexibleArgs),
    /// The account's URL signing keys.
    #[command(subcommand, after_help = help::KEYS)]
    Keys(KeysCommand),
    /// Sign a delivery URL of a private image with a signing key (HMAC-SHA256).
    #[command(after_help = help::SIGN_URL)]
    SignUrl(SignUrlArgs),
    /// Direct creator uploads: mint one-time upload URLs, see which drafts completed.
    #[command(subcommand, after_help = help::DIRECT_UPLOAD)]
    DirectUpload(DirectUploadCommand),
    /// Serve apps: mint upload URLs for app keys, draft status, Cloudflare's webhooks, a demo page.
    #[command(after_help = help::SERVE)]
    Serve(ServeArgs),
    /// Redirect rules from every old URL to its delivery URL (nginx, Apache, Caddy, Cloudflare, ...); `check` proves them live.
    #[command(after_help = help::REDIRECTS)]
    Redirects(RedirectsArgs),
    /// Settings the ledger keeps per source: where its items were served before the move.
    #[command(subcommand, after_help = help::SOURCE)]
    Source(SourceCommand),
    /// Replace old image URLs in HTML, CSS, Markdown, JSON, XML and SQL dumps with their delivery URLs; undoable.
    #[command(after_help = help::REWRITE)]
    Rewrite(RewriteArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = help::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Write the man pages (cfimg.1 and one per command) into a folder.
    #[command(after_help = help::MAN)]
    Man(ManArgs),
}

/// Formats of `cfimg export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header row (UTF-8, RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Flags of `cfimg rewrite`.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Files or folders to rewrite (a folder: every file under it with a known extension).
    #[arg(value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// A public base the images used to be served under (repeatable); bases stored per source are added.
    #[arg(long = "old-base", value_name = "URL")]
    pub old_base: Vec<String>,
    /// Rewrite the files themselves (each through a temporary file renamed over it).
    #[arg(long, conflicts_with = "output")]
    pub in_place: bool,
    /// Write the rewritten files under this folder, same relative paths [default: neither: a dry run that only reports].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Undo a rewrite: every file the journal names gets its bytes back.
    #[arg(long, value_name = "JOURNAL", conflicts_with_all = ["paths", "in_place", "output", "old_base", "journal"])]
    pub undo: Option<PathBuf>,
    /// The variant of the new URLs [default: as recorded, `public`].
    #[arg(long, value_name = "V")]
    pub variant: Option<String>,
    /// A URL with a `srcset` width (`640w`) gets the flexible variant `w=640` (turn flexible variants on first).
    #[arg(long)]
    pub srcset_widths: bool,
    /// The journal of changes that --undo replays [default: cfimg-rewrite-<UTC time>.journal here].
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Bytes per read (tiny values test matches across reads).
    #[arg(long, hide = true, default_value_t = 1 << 20)]
    pub chunk: usize,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only this source (`dir:/path`, the folder, or a location as `status` shows it).
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-queue items whose image is missing (the next `migrate` uploads them) and delete
    /// duplicates, keeping the recorded image.
    #[arg(long)]
    pub repair: bool,
    /// Only this source (`dir:/path`, the folder, or a location as `status` shows it): its items and its images are judged; every other image is counted, not judged.
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// The ledger is shard K of N (`migrate --shard`): images of the other shards are counted, not judged [default: from a ledger named *-shard-K-of-N.sqlite].
    #[arg(long, value_name = "K/N", env = "CFIMG_SHARD", hide_env_values = true)]
    pub shard: Option<crate::shard::Shard>,
    /// Compare the stored pictures with their sources instead: download each mapped image's original (`GET v1/{id}/blob`) and read its source again; equal bytes are `ok`, the same picture re-encoded `recompressed`, another picture `different` (exit 1).
    #[arg(long, conflicts_with = "repair")]
    pub deep: bool,
    /// With --deep: check only a random sample, N images or PCT% of them (e.g. 200, 5%).
    #[arg(long, value_name = "PCT%|N", requires = "deep")]
    pub sample: Option<crate::reconcile::deep::Sample>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// `cfimg ledger ...`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Rebuild a lost ledger from the account's images and their stamps, listing the source (folder, manifest or bucket) again.
    #[command(after_help = help::LEDGER_REBUILD)]
    Rebuild(RebuildArgs),
    /// Copy the ledger to FILE with SQLite's online backup: consistent while a run or the daemon writes it.
    #[command(after_help = help::LEDGER_BACKUP)]
    Backup(BackupArgs),
    /// Run SQLite's full integrity check of the ledger (exit 0: whole, 2: damaged).
    #[command(after_help = help::LEDGER_CHECK)]
    Check(LedgerCheckArgs),
}

/// Flags of `cfimg ledger check`.
#[derive(Debug, Args)]
pub struct LedgerCheckArgs {
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg ledger backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (a new file; written beside it and renamed into place when whole).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg ledger rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The folder or bucket (s3://, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX) that was migrated: its items are matched to the stamps.
    #[arg(
        long,
        value_name = "DIR|s3://BUCKET/PREFIX",
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub source: Option<PathBuf>,
    /// The URL manifest that was migrated, instead of --source (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The manifest's format [default: from its extension].
    #[arg(long, value_enum, value_name = "FORMAT", requires = "manifest")]
    pub manifest_format: Option<ManifestFormat>,
    /// `--endpoint-url` and `--region`, as given to `migrate`.
    #[command(flatten)]
    pub bucket: BucketFlags,
    /// Only shard K of N's items, for a ledger of `migrate --shard K/N` (other shards' images stay theirs).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::shard::Shard>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// `cfimg images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List images (streamed page by page).
    #[command(after_help = help::IMAGES_LIST)]
    List(ImagesListArgs),
    /// Show one image.
    #[command(after_help = help::IMAGES_GET)]
    Get {
        /// Image id.
        id: String,
        /// `--json`.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Change an image's metadata, privacy or creator.
    #[command(after_help = help::IMAGES_UPDATE)]
    Update(ImagesUpdateArgs),
    /// Delete images.
    #[command(after_help = help::IMAGES_DELETE)]
    Delete(ImagesDeleteArgs),
    /// Download an image's original bytes.
    #[command(after_help = help::IMAGES_BLOB)]
    Blob {
        /// Image id.
        id: String,
        /// The file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// The account's image count and quota.
    #[command(after_help = help::IMAGES_STATS)]
    Stats(OutputArgs),
}

/// Flags of `cfimg images list`.
#[derive(Debug, Args)]
pub struct ImagesListArgs {
    /// Only images of this creator.
    #[arg(long, value_name = "C")]
    pub creator: Option<String>,
    /// Only images whose metadata has KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// One JSON array.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub jsonl: bool,
}

/// Flags of `cfimg images update`.
#[derive(Debug, Args)]
pub struct ImagesUpdateArgs {
    /// Image id.
    pub id: String,
    /// New metadata, a JSON object (replaces the old; cfimg's stamp is kept unless given).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Make the image private (true) or public (false).
    #[arg(long, value_name = "BOOL")]
    pub require_signed_urls: Option<bool>,
    /// The creator tag.
    #[arg(long, value_name = "C")]
    pub creator: Option<String>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Flags of `cfimg images delete`.
#[derive(Debug, Args)]
pub struct ImagesDeleteArgs {
    /// Image ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Do not ask.
    #[arg(long, short)]
    pub yes: bool,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete images the ledger maps too; their items are uploaded again by the next migrate.
    #[arg(long)]
    pub force: bool,
    /// The ledger whose mappings a delete must not break unasked.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// `cfimg variants ...`.
#[derive(Debug, Subcommand)]
pub enum VariantsCommand {
    /// List variants.
    #[command(after_help = help::VARIANTS_LIST)]
    List(OutputArgs),
    /// Show one variant.
    #[command(after_help = help::VARIANTS_GET)]
    Get {
        /// Variant name.
        id: String,
        /// `--json`.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create a variant.
    #[command(after_help = help::VARIANTS_CREATE)]
    Create(VariantArgs),
    /// Change the options given; the others keep their current values.
    #[command(after_help = help::VARIANTS_UPDATE)]
    Update(VariantUpdateArgs),
    /// Delete a variant (delivery URLs ending in /NAME stop working).
    #[command(after_help = help::VARIANTS_DELETE)]
    Delete {
        /// Variant name.
        id: String,
    },
}

/// The options `variants update` changes; what is not given stays as it is.
#[derive(Debug, Args)]
pub struct VariantUpdateArgs {
    /// Variant name.
    pub id: String,
    /// scale-down, contain, cover, crop or pad.
    #[arg(long)]
    pub fit: Option<String>,
    /// keep, copyright or none.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Width, px.
    #[arg(long)]
    pub width: Option<u32>,
    /// Height, px.
    #[arg(long)]
    pub height: Option<u32>,
    /// Serve this variant without a signature even for private images.
    #[arg(long, value_name = "BOOL")]
    pub never_require_signed_urls: Option<bool>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A variant's definition.
#[derive(Debug, Args)]
pub struct VariantArgs {
    /// Variant name (letters and digits).
    pub id: String,
    /// scale-down, contain, cover, crop or pad.
    #[arg(long, default_value = "scale-down")]
    pub fit: String,
    /// keep, copyright or none.
    #[arg(long, default_value = "none")]
    pub metadata: String,
    /// Width, px.
    #[arg(long)]
    pub width: Option<u32>,
    /// Height, px.
    #[arg(long)]
    pub height: Option<u32>,
    /// Serve this variant without a signature even for private images.
    #[arg(long, value_name = "BOOL")]
    pub never_require_signed_urls: Option<bool>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enable.
    On,
    /// Disable.
    Off,
}

/// Flags of `cfimg flexible-variants`.
#[derive(Debug, Args)]
pub struct FlexibleArgs {
    /// on or off.
    #[arg(value_enum)]
    pub state: OnOff,
}

/// `cfimg keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys (names; --show-values for the secrets).
    #[command(after_help = help::KEYS_LIST)]
    List {
        /// Print the key values too.
        #[arg(long)]
        show_values: bool,
        /// `--json`.
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create a key; an existing key is rotated only with --rotate.
    #[command(after_help = help::KEYS_ADD)]
    Add {
        /// Key name.
        name: String,
        /// Give an existing key a new value: every URL signed with the old value stops working.
        #[arg(long)]
        rotate: bool,
    },
    /// Delete a key (URLs signed with it stop working).
    #[command(after_help = help::KEYS_DELETE)]
    Delete {
        /// Key name.
        name: String,
    },
}

/// Flags of `cfimg sign-url`.
#[derive(Debug, Args)]
pub struct SignUrlArgs {
    /// The delivery URL, e.g. https://imagedelivery.net/HASH/ID/public.
    pub url: String,
    /// How long it stays valid: 90s, 30m, 12h, 7d, or seconds.
    #[arg(long, value_name = "DURATION", required_unless_present = "expires_at")]
    pub expires_in: Option<String>,
    /// Expiry as a Unix time instead.
    #[arg(long, value_name = "UNIX", conflicts_with = "expires_in")]
    pub expires_at: Option<i64>,
    /// The signing key's name [default: default, else the first].
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `cfimg status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg failures`.
#[derive(Debug, Args)]
pub struct FailuresArgs {
    /// Also list entries passed over (hidden and temporary files, symlinks not followed, FIFOs, sockets, devices, folder placeholders).
    #[arg(long)]
    pub all: bool,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Upload flags of `migrate` and `watch`.
#[derive(Debug, Args)]
pub struct UploadFlags {
    /// Uploads in flight at once [default: 8].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// API requests per second, retries included [default: 3.5, under Cloudflare's 1200 per 5 minutes].
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,
    /// Where uploads go: the API host, or the batch host with batch tokens (lookups, deletes and updates stay on the API host) [default: api].
    #[arg(long, value_enum, value_name = "HOST")]
    pub transport: Option<Transport>,
    /// Batch tokens used in parallel with --transport batch, 1 to 32 [default: 1].
    #[arg(long, value_name = "N")]
    pub batch_tokens: Option<u32>,
    /// Requests per second per batch token [default: 195, under the batch host's 200].
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub batch_rate: Option<f64>,
    /// How image ids are chosen [default: path].
    #[arg(long, value_enum)]
    pub id_mode: Option<IdMode>,
    /// Prefix of custom ids, e.g. `legacy/`.
    #[arg(long, value_name = "P")]
    pub id_prefix: Option<String>,
    /// Metadata for every image, a JSON object (cfimg adds its own stamp).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Upload private images (needs --id-mode auto).
    #[arg(long)]
    pub require_signed_urls: bool,
    /// Leave replaced images in place (hash and auto ids), recorded as superseded.
    #[arg(long)]
    pub keep_replaced: bool,
    /// HTTP attempts per request before an item is left as failed [default: 6].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
}

impl UploadFlags {
    /// `--metadata` parsed: a JSON object, or an error naming the flag.
    pub fn metadata(
        &self,
    ) -> crate::error::Result<Option<serde_json::Map<String, serde_json::Value>>> {
        self.metadata
            .as_deref()
            .map(crate::config::parse_metadata_flag)
            .transpose()
    }

    /// The `[upload]` settings these flags set; `metadata` is parsed by the caller.
    fn raw(&self, metadata: Option<serde_json::Map<String, serde_json::Value>>) -> RawUpload {
        RawUpload {
            concurrency: self.concurrency,
            rate: self.rate,
            max_attempts: self.max_attempts,
            id_mode: self.id_mode,
            id_prefix: self.id_prefix.clone(),
            metadata,
            require_signed_urls: self.require_signed_urls.then_some(true),
            keep_replaced: self.keep_replaced.then_some(true),
            transport: self.transport,
            batch_tokens: self.batch_tokens,
            batch_rate: self.batch_rate,
            ..RawUpload::default()
        }
    }
}

/// Where a bucket is, for `migrate` and `ledger rebuild` (which must be given the same).
#[derive(Debug, Args)]
pub struct BucketFlags {
    /// API endpoint of the bucket: S3-compatible (R2, MinIO, ...), a GCS base URL, or an Azure account's blob endpoint [env: AWS_ENDPOINT_URL] [default: the store's public one].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region of the bucket [env: AWS_REGION, AWS_DEFAULT_REGION] [default: us-east-1].
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
}

impl BucketFlags {
    /// The `[bucket]` settings these flags set.
    pub fn raw(&self) -> RawBucket {
        RawBucket {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            ..RawBucket::default()
        }
    }
}

/// Folder flags of `migrate` and `watch`.
#[derive(Debug, Args)]
pub struct WalkFlags {
    /// Only files whose relative path matches (glob, repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files whose relative path matches (glob, repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Follow symbolic links.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Include hidden files and folders.
    #[arg(long)]
    pub include_hidden: bool,
}

impl WalkFlags {
    /// Whether any is given.
    pub fn any(&self) -> bool {
        !self.include.is_empty()
            || !self.exclude.is_empty()
            || self.follow_symlinks
            || self.include_hidden
    }

    /// The `[walk]` settings these flags set.
    fn raw(&self) -> RawWalk {
        RawWalk {
            follow_symlinks: self.follow_symlinks.then_some(true),
            include_hidden: self.include_hidden.then_some(true),
            include: (!self.include.is_empty()).then(|| self.include.clone()),
            exclude: (!self.exclude.is_empty()).then(|| self.exclude.clone()),
        }
    }
}

/// Flags of `cfimg migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The folder to migrate, or a bucket: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (or give --manifest).
    #[arg(
        value_name = "DIR",
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub dir: Option<PathBuf>,
    /// Migrate the URLs listed in this file instead of a folder (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The manifest's format [default: from its extension: .txt, .csv, .jsonl/.ndjson; text for stdin].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub manifest_format: Option<ManifestFormat>,
    /// Who fetches a manifest's URLs: Cloudflare (remote) or cfimg, which checks them first (local) [default: remote].
    #[arg(long, value_enum, value_name = "MODE")]
    pub url_mode: Option<UrlMode>,
    /// Show what would be uploaded, skipped and rejected, and how long it would take; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Retry items that failed in earlier runs.
    #[arg(long)]
    pub retry_failed: bool,
    /// Take only shard K of N (K from 0): a stable hash of each item picks its shard; each shard has its own ledger.
    #[arg(long, value_name = "K/N", env = "CFIMG_SHARD", hide_env_values = true)]
    pub shard: Option<crate::shard::Shard>,
    /// Start even when the pre-flight check finds more new images than the account's quota has room for (the run stops at the quota).
    #[arg(long)]
    pub force: bool,
    /// Upload even when the ledger has no row for this source but the account holds images stamped by it (a lost ledger: `cfimg ledger rebuild` records them instead).
    #[arg(long)]
    pub ignore_existing: bool,
    /// Seconds lists may lag behind uploads: duplicates of an ambiguous upload are looked for after this [default: 30].
    #[arg(long, value_name = "SECS", alias = "settle-secs")]
    pub list_lag_secs: Option<f64>,
    /// `--endpoint-url` and `--region`.
    #[command(flatten)]
    pub bucket: BucketFlags,
    /// How bucket objects reach Cloudflare: downloaded and checked by cfimg, or fetched by Cloudflare through presigned URLs [default: download].
    #[arg(long, value_enum, value_name = "MODE")]
    pub s3_mode: Option<S3Mode>,
    /// A download (--url-mode local, a bucket in download mode) that brings fewer bytes than this per --download-floor-window is cut off [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub download_floor_bytes: Option<u64>,
    /// The window of --download-floor-bytes, in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub download_floor_window: Option<f64>,
    /// Longest time one download may take, in seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub download_deadline: Option<f64>,
    /// How uploads go.
    #[command(flatten)]
    pub upload: UploadFlags,
    /// Which files of a folder.
    #[command(flatten)]
    pub walk: WalkFlags,
    /// Start the built-in emulator and migrate into it (no account needed).
    #[arg(long)]
    pub emulator: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics at /metrics and health at /healthz on this address while the run lasts, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// With --metrics-addr: /healthz turns unhealthy after uploads have failed, without a success, for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "300")]
    pub unhealthy_after: f64,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

impl MigrateArgs {
    /// The configuration these flags set; `metadata` is parsed by the caller.
    pub fn overrides(
        &self,
        ledger: Option<PathBuf>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> RawConfig {
        RawConfig {
            ledger,
            upload: RawUpload {
                list_lag_secs: self.list_lag_secs,
                ..self.upload.raw(metadata)
            },
            walk: self.walk.raw(),
            manifest: RawManifest {
                url_mode: self.url_mode,
            },
            bucket: RawBucket {
                mode: self.s3_mode,
                ..self.bucket.raw()
            },
            download: RawDownload {
                floor_bytes: self.download_floor_bytes,
                floor_window_secs: self.download_floor_window,
                deadline_secs: self.download_deadline,
            },
            ..RawConfig::default()
        }
    }
}

/// Flags of `cfimg watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The folder to keep in Cloudflare Images.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Seconds a file's size and mtime must stay unchanged before it is uploaded [default: 2].
    #[arg(long, value_name = "SECS")]
    pub settle: Option<f64>,
    /// Upload a file that keeps changing after this many seconds anyway [default: 60].
    #[arg(long, value_name = "SECS")]
    pub max_settle: Option<f64>,
    /// Seconds between full rescans, the safety net under events (jittered) [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub rescan_interval: Option<f64>,
    /// What a deleted file does to its image [default: keep].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub on_delete: Option<crate::config::OnDelete>,
    /// With --on-delete delete: refuse a pass deleting more than N files or PCT% of the folder [default: 5%].
    #[arg(long, value_name = "N|PCT%")]
    pub max_delete: Option<String>,
    /// First delay before a failed file is retried; it doubles with each failure, up to 6 hours [default: 60].
    #[arg(long, value_name = "SECS")]
    pub retry_base: Option<f64>,
    /// Serve Prometheus metrics at /metrics and health at /healthz on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// /healthz turns unhealthy after uploads have failed, without a success, for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "300")]
    pub unhealthy_after: f64,
    /// Start even when the ledger has no row for this folder but the account holds images stamped by it (a lost ledger: `cfimg ledger rebuild` records them instead).
    #[arg(long)]
    pub ignore_existing: bool,
    /// How uploads go.
    #[command(flatten)]
    pub upload: UploadFlags,
    /// Which files of the folder.
    #[command(flatten)]
    pub walk: WalkFlags,
    /// Start the built-in emulator and keep the folder in it (no account needed).
    #[arg(long)]
    pub emulator: bool,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// `cfimg direct-upload ...`.
#[derive(Debug, Subcommand)]
pub enum DirectUploadCommand {
    /// Mint a one-time upload URL (a draft, recorded in the ledger) and print its id and URL.
    #[command(after_help = help::DIRECT_UPLOAD_CREATE)]
    Create(DirectUploadCreateArgs),
    /// Which drafts completed, expired unused or are pending (pending ones are looked up first).
    #[command(after_help = help::DIRECT_UPLOAD_STATUS)]
    Status(DirectUploadStatusArgs),
}

/// Flags of `cfimg direct-upload create`.
#[derive(Debug, Args)]
pub struct DirectUploadCreateArgs {
    /// Custom id (Cloudflare's custom-id rules; not with --require-signed-urls).
    #[arg(long)]
    pub id: Option<String>,
    /// When the URL stops working, RFC 3339 (2 minutes to 6 hours from now) [default: in 30 minutes].
    #[arg(long, value_name = "RFC3339", conflicts_with = "expires_in")]
    pub expiry: Option<String>,
    /// How long the URL works instead: 2m to 6h, e.g. 30m, 1h 30m.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Metadata of the image, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// A private image (delivered through signed URLs only; Cloudflare assigns the id).
    #[arg(long)]
    pub require_signed_urls: bool,
    /// The creator tag.
    #[arg(long, value_name = "C")]
    pub creator: Option<String>,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg direct-upload status`.
#[derive(Debug, Args)]
pub struct DirectUploadStatusArgs {
    /// Only this draft.
    pub id: Option<String>,
    /// Show the ledger as it is, without looking pending drafts up.
    #[arg(long)]
    pub no_refresh: bool,
    /// `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0: any free port) [default: 127.0.0.1:8788].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve a demo page at / that uploads a file through the whole flow.
    #[arg(long)]
    pub demo: bool,
    /// Start the built-in emulator, with its webhook pointed here (no account needed).
    #[arg(long)]
    pub emulator: bool,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

impl WatchArgs {
    /// The configuration these flags set; `metadata` is parsed by the caller.
    pub fn overrides(
        &self,
        ledger: Option<PathBuf>,
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> RawConfig {
        RawConfig {
            ledger,
            upload: self.upload.raw(metadata),
            walk: self.walk.raw(),
            watch: crate::config::RawWatch {
                settle_secs: self.settle,
                max_settle_secs: self.max_settle,
                rescan_interval_secs: self.rescan_interval,
                on_delete: self.on_delete,
                max_delete: self.max_delete.clone(),
                retry_base_secs: self.retry_base,
            },
            ..RawConfig::default()
        }
    }
}

/// The command line's one duration grammar (`--expires-in` of `sign-url` and
/// `direct-upload create`): humantime's (`90s`, `30m`, `1h 30m`, `7d`, ...), and a bare
/// number of seconds (`90`), which `sign-url` has always taken.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

// ---- `cfimg redirects` and `cfimg source` (issue 22) ----

/// Formats of `cfimg redirects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedirectFormat {
    /// CSV for a Cloudflare Bulk Redirect List import (no header; source, target, status).
    CloudflareBulk,
    /// One dynamic Cloudflare Single Redirect rule (JSON), when every id is a path id.
    CloudflareRule,
    /// One nginx `map` setting `$cfimg_redirect`, for the `http` context.
    Nginx,
    /// An Apache `RewriteMap` text file, the rules in its header.
    Apache,
    /// A Caddyfile snippet: one `map` and one `redir`.
    Caddy,
    /// A `_redirects` file (Netlify, Cloudflare Pages).
    Netlify,
    /// A JSON array for `wrangler kv bulk put` (a Worker with KV answers the redirects).
    Json,
}

/// Flags of `cfimg redirects`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RedirectsArgs {
    /// `check`: request every old URL and report those that do not redirect.
    #[command(subcommand)]
    pub check: Option<RedirectsCommand>,
    /// Output format.
    #[arg(long, value_enum, required = true)]
    pub format: Option<RedirectFormat>,
    /// Where the files were served before the move (repeatable; added to those stored with `cfimg source set-old-base`).
    #[arg(long = "old-base", value_name = "URL")]
    pub old_base: Vec<String>,
    /// Only this source (`dir:/path`, the folder, or a location as `status` shows it).
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// The variant of the delivery URLs [default: as recorded, `public` when there is one].
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// HTTP status of the redirects: 301, 302, 303, 307 or 308.
    #[arg(long, default_value_t = 301, value_name = "CODE")]
    pub status: u16,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Subcommands of `cfimg redirects`.
#[derive(Debug, Subcommand)]
pub enum RedirectsCommand {
    /// HEAD every old URL; report each that does not redirect to its delivery URL (exit 1 if any).
    #[command(after_help = help::REDIRECTS_CHECK)]
    Check(RedirectsCheckArgs),
}

/// Flags of `cfimg redirects check`.
#[derive(Debug, Args)]
pub struct RedirectsCheckArgs {
    /// Where the files were served before the move (repeatable; added to those stored with `cfimg source set-old-base`).
    #[arg(long = "old-base", value_name = "URL")]
    pub old_base: Vec<String>,
    /// Send the requests here (`http://127.0.0.1:8080`, a staging server) with the old URL's Host header.
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// Only this source (`dir:/path`, the folder, or a location as `status` shows it).
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// The variant the rules point at [default: as recorded].
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// Check N old URLs picked at random, or a share of them (`5%`) [default: all].
    #[arg(long, value_name = "N|PCT%")]
    pub sample: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
    /// At most this many requests per second (0: no limit).
    #[arg(long, default_value_t = 50.0, value_name = "PER_SEC")]
    pub rate: f64,
    /// Seconds before one request is given up.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Subcommands of `cfimg source`.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Store where a source's files were served before the move (replaces what was stored; no URL: forget).
    #[command(after_help = help::SOURCE_SET_OLD_BASE)]
    SetOldBase(SetOldBaseArgs),
    /// The ledger's sources, their items, and their old bases.
    #[command(after_help = help::SOURCE_LIST)]
    List(SourceListArgs),
}

/// Flags of `cfimg source set-old-base`.
#[derive(Debug, Args)]
pub struct SetOldBaseArgs {
    /// The source (`dir:/path`, the folder, or a location as `status` shows it).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Old public bases, e.g. https://www.example.com/uploads/ (several: the same files under several hosts).
    #[arg(value_name = "URL")]
    pub bases: Vec<String>,
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

/// Flags of `cfimg source list`.
#[derive(Debug, Args)]
pub struct SourceListArgs {
    /// `--ledger`.
    #[command(flatten)]
    pub ledger: LedgerArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_parses_its_typical_flags() {
        for line in [
            "cfimg emulator",
            "cfimg emulator --listen 127.0.0.1:0 --rate-limit off --batch-rate-limit 50/1s --fault-503 0.1",
            "cfimg migrate dir --dry-run --rate 2 --id-mode hash --include *.jpg --include *.png --json",
            "cfimg migrate --manifest urls.txt --url-mode local --id-mode hash",
            "cfimg migrate --manifest - --manifest-format csv",
            "cfimg migrate s3://b/p --endpoint-url http://127.0.0.1:9000 --region auto --s3-mode presign",
            "cfimg --ledger l.sqlite status --json",
            "cfimg status --ledger l.sqlite --json",
            "cfimg migrate dir --ledger l.sqlite -v --config c.toml",
            "cfimg failures",
            "cfimg validate",
            "cfimg export --format jsonl -o out.jsonl --source dir:/srv",
            "cfimg verify --repair --json",
            "cfimg ledger rebuild --source dir",
            "cfimg images list --creator c --meta a=b --meta c=d --jsonl",
            "cfimg images get ID --json",
            "cfimg images update ID --metadata {} --require-signed-urls true --creator c",
            "cfimg images delete A B --yes --dry-run",
            "cfimg images blob ID -o f.png",
            "cfimg images stats",
            "cfimg variants create thumb --fit cover --width 100 --height 100",
            "cfimg variants delete thumb",
            "cfimg flexible-variants on",
            "cfimg keys list --show-values",
            "cfimg keys add k2",
            "cfimg sign-url https://imagedelivery.net/h/i/public --expires-in 1h --key k2",
            "cfimg direct-upload create --id a/b.png --expires-in 1h --metadata {} --creator c --json",
            "cfimg direct-upload create --expiry 2030-01-01T00:00:00Z --require-signed-urls",
            "cfimg direct-upload status ID --json",
            "cfimg serve --listen 127.0.0.1:0 --demo --emulator",
        ] {
            let parsed = Cli::try_parse_from(line.split(' '));
            assert!(parsed.is_ok(), "{line}: {}", parsed.unwrap_err());
        }
        let Ok(Cli {
            command: Command::Emulator(args),
            ..
        }) = Cli::try_parse_from(["cfimg", "emulator", "--rate-limit", "off"])
        else {
            panic!("emulator args");
        };
        assert_eq!(args.rate_limit.0, None);
        for wrong in ["cfimg migrate", "cfimg migrate dir --manifest urls.txt"] {
            assert!(Cli::try_parse_from(wrong.split(' ')).is_err(), "{wrong}");
        }
        assert_eq!(
            args.batch_rate_limit.0,
            Some((200, std::time::Duration::from_secs(1)))
        );
    }

    #[test]
    fn durations_have_one_grammar() {
        let secs = |s: &str| parse_duration(s).ok().map(|d| d.as_secs());
        // sign-url's documented spellings, moved from its own parser.
        assert_eq!(secs("90"), Some(90));
        assert_eq!(secs("30m"), Some(1800));
        assert_eq!(secs("2d"), Some(172_800));
        assert_eq!(secs("h"), None);
        // humantime's, which direct-upload documents; weeks are humantime's too now.
        assert_eq!(secs("1h 30m"), Some(5400));
        assert_eq!(secs("1w"), Some(604_800));
        assert_eq!(secs("1x"), None);
        assert_eq!(secs(""), None);
        assert_eq!(secs("soon"), None);
    }
}

/// Flags of `cfimg completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Flags of `cfimg man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder the pages are written into (created if missing), e.g. /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}
