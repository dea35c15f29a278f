//! `cfimg watch DIR`: the daemon. It runs the migration pipeline on a watched folder until a
//! stop signal, speaks systemd's notify protocol, serves metrics, and reloads its
//! configuration on SIGHUP (saying what changed, and what needs a restart).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ledger_hint::EMULATOR_LEDGER;
use super::migrate::start_emulator;
use super::{EXIT_OK, exit_code};
use crate::cli::{Cli, WatchArgs};
use crate::config::{self, Config, RawConfig};
use crate::error::Result;
use crate::item::SourceId;
use crate::ledger::Destination;
use crate::ledger::Ledger;
use crate::metrics;
use crate::pipeline::{self, Live, MigrateOptions};
use crate::plan::Retry;
use crate::progress::Stats;
use crate::service;
use crate::shutdown::Shutdown;
use crate::source::watch::{LedgerReads, LedgerView, WatchStatus};
use crate::source::{Source, Spec};
use crate::transport::limit::Limiter;

/// Tombstones of removed files are kept this long, then pruned.
const KEEP_TOMBSTONES: Duration = Duration::from_secs(90 * 24 * 3600);
/// Runs kept in the ledger (a daemon adds one per start).
const KEEP_RUNS: u32 = 1000;

/// Runs the daemon until a stop signal; returns the exit code (0 after a clean stop).
pub async fn run(cli: &Cli, args: &WatchArgs) -> Result<i32> {
    let (mut cfg, flags) = configure(cli, args)?;
    let (settings_tx, settings) = tokio::sync::watch::channel(cfg.watch.clone());
    let status = Arc::new(WatchStatus::default());
    let watched = Spec::Watched {
        dir: args.dir.clone(),
        settings,
        ledger: Arc::new(LedgerFile(cfg.ledger.clone())),
        status: status.clone(),
    };
    let source = Source::open(watched, &cfg.source_settings())?;
    let emulator = if args.emulator {
        Some(start_emulator(&mut cfg).await?)
    } else {
        None
    };

    let stats = Arc::new(Stats::default());
    let limiter = crate::transport::api_limiter(&cfg);
    let traffic = Arc::new(OnceLock::new());
    let side = CancellationToken::new();

    if let Some(addr) = args.metrics_addr {
        let sources = metrics::Sources {
            stats: stats.clone(),
            traffic: traffic.clone(),
            watch: Some(status.clone()),
            ledger: cfg.ledger.clone(),
            source: source.id().clone(),
            unhealthy_after: Duration::from_secs_f64(args.unhealthy_after.max(0.0)),
        };
        metrics::serve(addr, sources, side.clone()).await?;
    }
    tokio::spawn(service::run(stats.clone(), status.clone(), side.clone()));
    tokio::spawn(reload_on_hangup(
        Reload {
            file: cli.config.clone(),
            flags,
            emulated: args.emulator,
            current: cfg.clone(),
            settings: settings_tx,
            limiter: limiter.clone(),
        },
        side.clone(),
    ));

    let shutdown = Shutdown::new();
    shutdown.listen(cfg.upload.shutdown_grace);
    let opts = MigrateOptions {
        dry_run: false,
        retry: Retry::WhenDue,
        progress_every: Duration::from_secs(60),
        destination: Destination {
            account_id: cfg.account_id.clone(),
            api_base: if emulator.is_some() {
                "emulator".into()
            } else {
                cfg.api_base_url.to_string()
            },
        },
        shard: None,
        ignore_existing: args.ignore_existing,
        observed: None,
        live: Some(Live {
            stats,
            limiter,
            traffic,
            upkeep_every: cfg
                .upload
                .list_lag
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            keep_tombstones: KEEP_TOMBSTONES,
            keep_runs: KEEP_RUNS,
        }),
    };
    tracing::info!(folder = %args.dir.display(), ledger = %cfg.ledger.display(), "watching the folder");
    let result = pipeline::migrate(&cfg, source, &opts, shutdown.clone()).await;
    service::stopping();
    side.cancel();
    if let Some((handle, _)) = emulator {
        handle.shutdown().await;
    }
    let result = result?;
    tracing::info!(summary = %result.summary.to_text().trim_end().replace('\n', "; "), "stopped");
    if let Some(e) = &result.fatal {
        eprintln!("cfimg: {e}");
        if let Some(h) = e.hint() {
            eprintln!("cfimg: {h}");
        }
        return Ok(exit_code(e));
    }
    // A stop signal is how a daemon ends: in-flight uploads finished or are recorded as
    // intents the next start resolves.
    Ok(EXIT_OK)
}

/// The validated configuration of file, environment and flags (with the emulator's ledger
/// under --emulator), and the flags, which a reload applies again.
fn configure(cli: &Cli, args: &WatchArgs) -> Result<(Config, RawConfig)> {
    let metadata = args.upload.metadata()?;
    let mut flags = args.overrides(cli.ledger(), metadata);
    if args.emulator && flags.ledger.is_none() {
        flags.ledger = Some(PathBuf::from(EMULATOR_LEDGER));
    }
    let raw = config::load_raw(cli.config.as_deref(), flags.clone())?;
    let cfg = config::validate(raw, !args.emulator)?;
    if let Some(w) = crate::transport::limit::over_account_limit(cfg.upload.rate, 1) {
        tracing::warn!("{w}");
    }
    Ok((cfg, flags))
}

/// The daemon's ledger as the watched folder reads it: a read-only connection per reader,
/// opened once the ledger exists.
#[derive(Debug)]
struct LedgerFile(PathBuf);

impl LedgerView for LedgerFile {
    fn open(&self) -> Option<Box<dyn LedgerReads>> {
        let ledger = Ledger::open_read_only(&self.0).ok().flatten()?;
        Some(Box::new(ledger))
    }
}

impl LedgerReads for Ledger {
    fn source_number(&self, source: &SourceId) -> Result<Option<i64>> {
        Ledger::source_number(self, source)
    }

    fn failed_due(&self, source_id: i64, limit: u32) -> Result<Vec<String>> {
        Ledger::failed_due(self, source_id, limit)
    }

    fn item_counts(&self, source_id: i64) -> Result<(u64, u64)> {
        Ledger::item_counts(self, source_id)
    }

    fn keys_after(&self, source_id: i64, after: &str, limit: u32) -> Result<Vec<(String, bool)>> {
        Ledger::keys_after(self, source_id, after, limit)
    }
}

/// What a reload needs: where the configuration came from, and what it can change live.
struct Reload {
    file: Option<PathBuf>,
    flags: RawConfig,
    emulated: bool,
    current: Config,
    settings: tokio::sync::watch::Sender<config::WatchConfig>,
    limiter: Arc<Limiter>,
}

/// Reloads the configuration on each SIGHUP until `stop`.
async fn reload_on_hangup(mut reload: Reload, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reloading needs a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {}
            _ = stop.cancelled() => return,
        }
        service::reloading();
        reload.apply();
        service::ready("configuration reloaded");
    }
}

impl Reload {
    /// Reads the configuration again; applies what can change live, names what cannot.
    fn apply(&mut self) {
        let loaded = config::load_raw(self.file.as_deref(), self.flags.clone())
            .and_then(|raw| config::validate(raw, !self.emulated));
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        let (live, restart) = changes(&self.current, &new);
        if live.is_empty() && restart.is_empty() {
            tracing::info!("configuration reloaded: nothing changed");
            return;
        }
        if new.upload.rate != self.current.upload.rate {
            if let Some(w) = crate::transport::limit::over_account_limit(new.upload.rate, 1) {
                tracing::warn!("{w}");
            }
            self.limiter.set_rate(new.upload.rate);
            self.current.upload.rate = new.upload.rate;
        }
        if !live.is_empty() {
            self.current.watch = new.watch.clone();
            let _ = self.settings.send(new.watch);
            tracing::info!(changed = %live.join(", "), "configuration reloaded");
        }
        if !restart.is_empty() {
            tracing::warn!(changed = %restart.join(", "), "these settings changed but take effect only after a restart");
        }
    }
}

/// What differs between two configurations: what a reload applies, and what waits for a
/// restart. Secrets are named, never shown.
fn changes(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut restart = Vec::new();
    let note = |list: &mut Vec<String>, key: &str, a: String, b: String| {
        if a != b {
            list.push(format!("{key}: {a} -> {b}"));
        }
    };
    let (o, n) = (&old.upload, &new.upload);
    note(
        &mut live,
        "upload.rate",
        o.rate.to_string(),
        n.rate.to_string(),
    );
    let (ow, nw) = (&old.watch, &new.watch);
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    note(
        &mut live,
        "watch.settle_secs",
        secs(ow.settle),
        secs(nw.settle),
    );
    note(
        &mut live,
        "watch.max_settle_secs",
        secs(ow.max_settle),
        secs(nw.max_settle),
    );
    note(
        &mut live,
        "watch.rescan_interval_secs",
        secs(ow.rescan_interval),
        secs(nw.rescan_interval),
    );
    note(
        &mut live,
        "watch.on_delete",
        format!("{:?}", ow.on_delete),
        format!("{:?}", nw.on_delete),
    );
    note(
        &mut live,
        "watch.max_delete",
        ow.max_delete.to_string(),
        nw.max_delete.to_string(),
    );
    if old.api_token.expose() != new.api_token.expose() {
        restart.push("api_token: changed".into());
    }
    let mut later = |key: &str, a: String, b: String| note(&mut restart, key, a, b);
    later("account_id", old.account_id.clone(), new.account_id.clone());
    later(
        "api_base_url",
        old.api_base_url.to_string(),
        new.api_base_url.to_string(),
    );
    later(
        "ledger",
        old.ledger.display().to_string(),
        new.ledger.display().to_string(),
    );
    later(
        "upload.concurrency",
        o.concurrency.to_string(),
        n.concurrency.to_string(),
    );
    later(
        "upload.id_mode",
        o.id_mode.as_str().into(),
        n.id_mode.as_str().into(),
    );
    later("upload.id_prefix", o.id_prefix.clone(), n.id_prefix.clone());
    later(
        "upload.metadata",
        serde_json::Value::Object(o.metadata.clone()).to_string(),
        serde_json::Value::Object(n.metadata.clone()).to_string(),
    );
    later(
        "upload.transport",
        format!("{:?}", o.transport),
        format!("{:?}", n.transport),
    );
    later(
        "watch.retry_base_secs",
        secs(ow.retry_base),
        secs(nw.retry_base),
    );
    later("walk", format!("{:?}", old.walk), format!("{:?}", new.walk));
    (live, restart)
}
