//! `cfimg serve`: loads the configuration, optionally starts the built-in emulator with its
//! webhook pointed at this service, opens the drafts ledger, and serves until SIGINT or
//! SIGTERM. The first lines on stdout name the addresses (tests and scripts read them).

use std::io::Write;
use std::path::PathBuf;

use super::{EXIT_OK, direct_upload::open_book};
use crate::cli::{Cli, ServeArgs};
use crate::config::{self, Config, RawConfig, RawServe};
use crate::emulator::WebhookDestination;
use crate::error::{Error, Result};

use super::ledger_hint::EMULATOR_LEDGER;

/// Runs the service until a stop signal.
pub async fn run(cli: &Cli, args: &ServeArgs) -> Result<i32> {
    let mut cfg = configure(cli, args)?;
    let emulator = if args.emulator {
        let (handle, _) = super::migrate::start_emulator(&mut cfg).await?;
        if cfg.serve.webhook_secret.is_none() {
            cfg.serve.webhook_secret = Some(super::serve_secret());
        }
        Some(handle)
    } else {
        None
    };
    let lane = crate::transport::ApiLane::from_config(&cfg)?;
    // A wrong token or account shows now, with its exit code, not at the first app's mint.
    let spent = std::sync::atomic::AtomicU32::new(0);
    lane.call(&spent, || lane.client.stats()).await?;
    let api_base = if emulator.is_some() {
        "emulator".to_string()
    } else {
        cfg.api_base_url.to_string()
    };
    let book = open_book(&cfg, api_base)?;
    let demo_key = args.demo.then(crate::serve::demo_key);
    let handle = crate::serve::start(&cfg.serve, lane, book, demo_key)
        .await
        .map_err(|e| {
            Error::Config(vec![format!(
                "cfimg serve could not listen on {}: {e} (is `serve.listen` / --listen free?)",
                cfg.serve.listen
            )])
        })?;
    let origin = handle.origin();
    if let Some(emu) = &emulator {
        emu.set_webhook(Some(WebhookDestination {
            url: format!("{origin}/v1/webhook"),
            secret: cfg
                .serve
                .webhook_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
        }));
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "serving on {origin}");
        if let Some(emu) = &emulator {
            let _ = writeln!(out, "emulator at {}", emu.batch_base());
        }
        if args.demo {
            let _ = writeln!(out, "demo page at {origin}/");
        }
        let _ = out.flush();
    }
    tracing::info!(%origin, ledger = %cfg.ledger.display(), "cfimg serve is up");
    wait_for_signal().await;
    handle.shutdown().await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(EXIT_OK)
}

/// The validated configuration, refused at start when no app could be served: unreadable
/// key files, no app keys (without --demo), a connection cap the open-file limit cannot hold.
fn configure(cli: &Cli, args: &ServeArgs) -> Result<Config> {
    let flags = RawConfig {
        ledger: cli.ledger(),
        serve: RawServe {
            listen: args.listen.clone(),
            ..RawServe::default()
        },
        ..RawConfig::default()
    };
    let mut raw = config::load_raw(cli.config.as_deref(), flags)?;
    if args.emulator && raw.ledger.is_none() {
        raw.ledger = Some(PathBuf::from(EMULATOR_LEDGER));
    }
    let mut cfg = config::validate(raw, !args.emulator)?;
    if !cfg.serve.unreadable.is_empty() {
        return Err(Error::Config(cfg.serve.unreadable.clone()));
    }
    // Without a key every mint would be refused: a service that cannot serve anyone is a
    // configuration error, said at start rather than in every app's 401.
    if cfg.serve.app_keys.is_empty() && !args.demo {
        return Err(Error::Config(vec![
            "cfimg serve has no app keys: set `serve.app_keys_file` to a file of `name = key` lines \
             (under systemd: LoadCredential=app_keys:/etc/cfimg/app_keys and \
             app_keys_file = \"/run/credentials/cfimg-serve.service/app_keys\"), or \
             `serve.app_keys = { web = \"...\" }` in the config; for a local try-out, --demo makes a key"
                .to_string(),
        ]));
    }
    let nofile = crate::serve::open_file_limit();
    let cap = crate::serve::connection_cap(cfg.serve.max_connections, nofile)
        .map_err(|e| Error::Config(vec![e]))?;
    cfg.serve.max_connections = Some(cap);
    Ok(cfg)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
