//! `cfimg migrate DIR|s3://BUCKET/PREFIX` and `cfimg migrate --manifest FILE`: configuration,
//! the source, the optional in-process emulator, the run, the summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{EXIT_INCOMPLETE, EXIT_OK, exit_code};
use crate::cli::{Cli, MigrateArgs};
use crate::config::{self, Config, IdMode, UrlMode};
use crate::emulator::{self, EmulatorConfig};
use crate::error::{Error, Result};
use crate::ledger::Destination;
use crate::metrics;
use crate::pipeline::{self, MigrateOptions};
use crate::quota;
use crate::secret::Secret;
use crate::shutdown::{INTERRUPTED_EXIT, Shutdown};
use crate::source::manifest::{Attempt, Retrier};
use crate::source::{Settings, Source, Spec};
use crate::transport::retry;

use super::ledger_hint::EMULATOR_LEDGER;

/// Runs a migration and returns the exit code.
pub async fn run(cli: &Cli, args: &MigrateArgs) -> Result<i32> {
    let mut cfg = configure(cli, args)?;
    let shards = args.shard.map_or(1, |s| s.count);
    if let Some(w) = crate::transport::limit::over_account_limit(cfg.upload.rate, shards) {
        tracing::warn!("{w}");
    }
    // Checked before the emulator starts or any request leaves.
    let source = source(args, &cfg)?;
    // Two more instances for the quota check's counting passes (see `quota.rs`).
    let counting = match args.dry_run || args.force {
        true => None,
        false => Some((self::source(args, &cfg)?, self::source(args, &cfg)?)),
    };

    let emulator = if args.emulator {
        Some(start_emulator(&mut cfg).await?)
    } else {
        None
    };

    let destination = Destination {
        account_id: cfg.account_id.clone(),
        // The emulator's address changes every run; what matters is that it is not a
        // real account, so that neither ever writes into the other's ledger.
        api_base: if emulator.is_some() {
            "emulator".into()
        } else {
            cfg.api_base_url.to_string()
        },
    };
    // A job that cannot fit is stopped before its first upload (see `quota.rs`).
    let scope = quota::Scope {
        shard: args.shard,
        retry_failed: args.retry_failed,
        keep_replaced: cfg.upload.keep_replaced,
    };
    let gate = counting.map(|c| Arc::new(quota::Gate::new(&cfg, c, scope, destination.clone())));
    let observed = pipeline::Observed::default();
    // Stops the metrics endpoint when this function returns, however it returns.
    let metrics_stop = CancellationToken::new();
    let _metrics_stop = metrics_stop.clone().drop_guard();
    if let Some(addr) = args.metrics_addr {
        let sources = metrics::Sources {
            stats: observed.stats.clone(),
            traffic: observed.traffic.clone(),
            watch: None,
            ledger: cfg.ledger.clone(),
            source: source.id().clone(),
            unhealthy_after: Duration::from_secs_f64(args.unhealthy_after.max(0.0)),
        };
        if let Err(e) = metrics::serve(addr, sources, metrics_stop).await {
            if let Some((handle, _)) = emulator {
                handle.shutdown().await;
            }
            return Err(e);
        }
    }
    let shutdown = Shutdown::new();
    shutdown.listen(cfg.upload.shutdown_grace);
    let opts = MigrateOptions {
        dry_run: args.dry_run,
        retry: if args.retry_failed {
            crate::plan::Retry::Always
        } else {
            crate::plan::Retry::Local
        },
        live: None,
        observed: args.metrics_addr.map(|_| observed),
        progress_every: Duration::from_secs(10),
        destination,
        shard: args.shard,
        ignore_existing: args.ignore_existing,
    };
    let result = pipeline::migrate_gated(&cfg, source, &opts, shutdown, gate).await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some((handle, _)) = emulator {
                handle.shutdown().await;
            }
            return Err(e);
        }
    };

    report(args, &cfg, &result, emulator).await
}

/// Prints the summary (and the emulator's follow-ups) and turns the run's end into the
/// exit code.
async fn report(
    args: &MigrateArgs,
    cfg: &Config,
    result: &pipeline::RunResult,
    emulator: Option<(emulator::EmulatorHandle, PathBuf)>,
) -> Result<i32> {
    if args.json {
        let json = serde_json::to_string_pretty(&result.summary).unwrap_or_default();
        print_out(&format!("{json}\n"));
    } else {
        print_out(&result.summary.to_text());
    }
    if let Some((handle, data_dir)) = emulator {
        let stored = handle.inspect().images.len();
        handle.shutdown().await;
        if !args.json {
            print_out(&format!(
                "the emulator now holds {}; browse them with: cfimg emulator --data {}\n",
                crate::progress::plural(stored as u64, "image", "images"),
                data_dir.display()
            ));
            // The ledger is not the default one, so every later command needs its name;
            // a dry run recorded nothing there, so it sends nobody to look.
            if !args.dry_run {
                print_out(&format!(
                    "{}\n",
                    super::ledger_hint::follow_ups(&cfg.ledger)
                ));
            }
        }
    }
    if let Some(e) = &result.fatal {
        eprintln!("cfimg: {e}");
        if let Some(h) = e.hint() {
            eprintln!("cfimg: {h}");
        }
        if e.is_quota_reached()
            && let Some(figures) = super::quota_figures(cfg).await
        {
            eprintln!("cfimg: {figures}");
        }
        return Ok(exit_code(e));
    }
    if result.interrupted {
        return Ok(INTERRUPTED_EXIT);
    }
    Ok(if result.summary.has_problems() {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    })
}

/// The validated configuration: file, environment and flags, with a shard's own ledger and
/// share of the rate, and the emulator's ledger.
fn configure(cli: &Cli, args: &MigrateArgs) -> Result<Config> {
    let metadata = args.upload.metadata()?;
    let mut raw = config::load_raw(
        cli.config.as_deref(),
        args.overrides(cli.ledger(), metadata),
    )?;
    if let Some(shard) = args.shard {
        // One ledger per shard, so that a restarted shard resumes its own items; and an
        // equal part of the account's API budget for each, unless a rate is given.
        if raw.ledger.is_none() {
            let base = if args.emulator {
                EMULATOR_LEDGER
            } else {
                config::DEFAULT_LEDGER
            };
            raw.ledger = Some(PathBuf::from(shard.ledger_name(base)));
        }
        if raw.upload.rate.is_none() {
            raw.upload.rate = Some(crate::config::DEFAULT_RATE / f64::from(shard.count));
        }
    }
    if args.emulator && raw.ledger.is_none() {
        raw.ledger = Some(PathBuf::from(EMULATOR_LEDGER));
    }
    let needs_credentials = !args.emulator && !args.dry_run;
    config::validate(raw, needs_credentials)
}

/// Prints to stdout. A reader that has gone away (`| head`) is not this run's failure: the
/// work is done and recorded, so the exit code stays the run's (`println!` would panic).
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("cfimg: could not print the summary to stdout: {e}");
    }
}

/// Starts the built-in emulator with its state beside the ledger and points `cfg` at it.
pub(super) async fn start_emulator(
    cfg: &mut Config,
) -> Result<(emulator::EmulatorHandle, PathBuf)> {
    let data_dir = pipeline::emulator_data_dir(&cfg.ledger);
    let emu_cfg = EmulatorConfig {
        data_dir: Some(data_dir.clone()),
        ..EmulatorConfig::default()
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let handle = emulator::start(listen, emu_cfg).await.map_err(|e| {
        Error::Config(vec![format!(
            "the built-in emulator could not start with its state in {}: {e}",
            data_dir.display()
        )])
    })?;
    cfg.account_id = handle.account_id().to_string();
    cfg.api_token = Secret::new(handle.token());
    cfg.api_base_url = handle.api_base().parse().map_err(|_| {
        Error::Invalid(format!(
            "the emulator's URL {} does not parse",
            handle.api_base()
        ))
    })?;
    eprintln!(
        "cfimg: emulator at {} (state in {})",
        handle.api_base(),
        data_dir.display()
    );
    Ok((handle, data_dir))
}

/// What opening the source takes: the settings, and the retries of a URL's download.
fn source_settings(cfg: &Config) -> Settings {
    // Downloads in local mode: a few attempts within the run, then the next run.
    let fetch = retry::RetryPolicy {
        max_attempts: cfg.upload.max_attempts.min(3),
        ..retry::RetryPolicy::default()
    };
    Settings {
        fetch_retry: Some(Arc::new(Backoff(fetch))),
        ..cfg.source_settings()
    }
}

/// The crate's backoff, for a manifest URL's download.
#[derive(Debug)]
struct Backoff(retry::RetryPolicy);

impl Retrier for Backoff {
    fn run<'a>(&'a self, attempt: &'a (dyn Fn() -> Attempt<'a> + Send + Sync)) -> Attempt<'a> {
        Box::pin(retry::call(self.0, attempt))
    }
}

/// The source the arguments name: a folder, a bucket (`s3://...`), or a manifest of URLs.
fn source(args: &MigrateArgs, cfg: &Config) -> Result<Source> {
    match (&args.dir, &args.manifest) {
        (Some(dir), None) => {
            if args.url_mode.is_some() || args.manifest_format.is_some() {
                return Err(Error::Config(vec![
                    "--url-mode and --manifest-format apply to manifests (--manifest FILE), not to folders"
                        .into(),
                ]));
            }
            Source::open(Spec::Location(dir.clone()), &source_settings(cfg))
        }
        (None, Some(manifest)) => {
            let mut problems = Vec::new();
            if cfg.upload.id_mode == IdMode::Hash && cfg.manifest.url_mode == UrlMode::Remote {
                problems.push(
                    "`upload.id_mode` (--id-mode) is hash, but in the remote URL mode Cloudflare fetches \
                     the URLs and cfimg never sees the bytes to hash: use --url-mode local, or --id-mode path|auto"
                        .to_string(),
                );
            }
            let walk_flags = args.walk.any();
            if walk_flags {
                problems.push(
                    "--include, --exclude, --follow-symlinks and --include-hidden apply to folders, not to manifests"
                        .to_string(),
                );
            }
            if !problems.is_empty() {
                return Err(Error::Config(problems));
            }
            Source::open(
                Spec::Manifest(manifest.clone(), args.manifest_format),
                &source_settings(cfg),
            )
        }
        _ => Err(Error::Config(vec![
            "give either a folder or --manifest FILE".into(),
        ])),
    }
}
