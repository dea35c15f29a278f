//! `cfimg direct-upload create|status`: mint one-time upload URLs from the command line and
//! see what became of them. Drafts are recorded in the ledger (the `drafts` source); status
//! looks pending ones up (`GET /v1/{id}`, under the account's limiter) before it prints.

use std::sync::Mutex;

use serde_json::json;

use super::{EXIT_OK, api_lane};
use crate::cli::{Cli, DirectUploadCommand, DirectUploadCreateArgs, DirectUploadStatusArgs};
use crate::config::{self, Config};
use crate::direct::{self, MintRequest};
use crate::error::{Error, Result};
use crate::ledger::{Destination, DraftBook, DraftState};
use crate::transport::ApiLane;

/// Runs a `direct-upload` subcommand.
pub async fn run(cli: &Cli, cmd: &DirectUploadCommand) -> Result<i32> {
    match cmd {
        DirectUploadCommand::Create(args) => create(cli, args).await,
        DirectUploadCommand::Status(args) => status(cli, args).await,
    }
}

/// The drafts of the configured account in the configured ledger.
pub(crate) fn open_book(cfg: &Config, api_base: String) -> Result<DraftBook> {
    DraftBook::open(
        &cfg.ledger,
        &Destination {
            account_id: cfg.account_id.clone(),
            api_base,
        },
    )
}

/// The command-line flag of an HTTP field name, for messages.
fn flag(field: &str) -> &'static str {
    match field {
        "id" => "--id",
        "expiry" => "--expiry",
        "expiresIn" => "--expires-in",
        "metadata" => "--metadata",
        "creator" => "--creator",
        _ => "--require-signed-urls",
    }
}

async fn create(cli: &Cli, args: &DirectUploadCreateArgs) -> Result<i32> {
    let expiry = args
        .expiry
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    Error::Usage(format!(
                        "--expiry {t:?} is not an RFC 3339 time ({e}), e.g. 2030-01-01T12:00:00Z"
                    ))
                })
        })
        .transpose()?;
    let expires_in = args
        .expires_in
        .as_deref()
        .map(|d| {
            crate::cli::parse_duration(d).map_err(|e| {
                Error::Usage(format!(
                    "--expires-in {d:?} is not a duration ({e}), e.g. 30m or 2h"
                ))
            })
        })
        .transpose()?;
    let metadata = args
        .metadata
        .as_deref()
        .map(config::parse_metadata_flag)
        .transpose()?;
    let req = MintRequest {
        id: args.id.clone(),
        expiry,
        expires_in,
        metadata,
        creator: args.creator.clone(),
        private: args.require_signed_urls,
    };
    // Checked before the configuration, so that a wrong flag costs nothing at all.
    let checked = direct::check(&req, chrono::Utc::now())
        .map_err(|e| Error::Usage(format!("{}: {}", flag(e.field), e.message)))?;
    let (cfg, lane) = api_lane(cli)?;
    let book = Mutex::new(open_book(&cfg, cfg.api_base_url.to_string())?);
    let minted = direct::mint(&lane, &book, &checked, "cli").await?;
    if args.output.json {
        println!(
            "{}",
            json!({ "id": minted.id, "uploadURL": minted.upload_url, "expiry": minted.expiry })
        );
    } else {
        println!("id:         {}", minted.id);
        println!("upload URL: {}", minted.upload_url);
        println!("expires:    {}", minted.expiry);
        eprintln!(
            "cfimg: POST the file as multipart/form-data (field `file`) to the upload URL; it works once. `cfimg direct-upload status {}` shows when it arrived.",
            minted.id
        );
    }
    Ok(EXIT_OK)
}

async fn status(cli: &Cli, args: &DirectUploadStatusArgs) -> Result<i32> {
    let (cfg, lane) = api_lane(cli)?;
    // Status reads what `create` and `serve` recorded; it does not create a ledger.
    if !cfg.ledger.exists() {
        return Err(crate::ledger::missing(&cfg.ledger));
    }
    // A ledger that cannot be written (a read-only file system, a backup copy) still shows
    // its drafts, as recorded: looking pending ones up would have to record the answers.
    let (book, writable) = match open_book(&cfg, cfg.api_base_url.to_string()) {
        Ok(book) => (book, true),
        Err(e) if cannot_write(&e) => {
            let book = DraftBook::open_existing(
                &cfg.ledger,
                &Destination {
                    account_id: cfg.account_id.clone(),
                    api_base: cfg.api_base_url.to_string(),
                },
            )?;
            eprintln!(
                "cfimg: the ledger {} cannot be written ({e}): drafts are shown as recorded; pending ones are not looked up",
                cfg.ledger.display()
            );
            (book, false)
        }
        Err(e) => return Err(e),
    };
    let book = Mutex::new(book);
    let lock = || {
        book.lock()
            .map_err(|_| Error::LedgerWrite("the drafts ledger lock is poisoned".into()))
    };
    let mut drafts = match &args.id {
        Some(id) => vec![lock()?.get(id)?.ok_or_else(|| {
            Error::Usage(format!(
                "no draft {id:?} in the ledger {}: `cfimg direct-upload status` lists them",
                cfg.ledger.display()
            ))
        })?],
        None => lock()?.list(None)?,
    };
    if !args.no_refresh && writable {
        refresh_pending(&lane, &book, &mut drafts).await?;
    }
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&drafts).unwrap_or_default()
        );
        return Ok(EXIT_OK);
    }
    if drafts.is_empty() {
        println!("no drafts yet: `cfimg direct-upload create` or `cfimg serve` mints them");
        return Ok(EXIT_OK);
    }
    println!("{:<10} {:<38} {:<25} URL", "STATE", "ID", "EXPIRES");
    for d in &drafts {
        println!(
            "{:<10} {:<38} {:<25} {}",
            d.state.as_str(),
            d.id,
            d.expires_at,
            crate::shown::Shown(d.url.as_deref().or(d.last_error.as_deref()).unwrap_or("-"))
        );
    }
    let count = |s: DraftState| drafts.iter().filter(|d| d.state == s).count();
    println!(
        "{} completed, {} pending, {} expired unused, {} failed",
        count(DraftState::Completed),
        count(DraftState::Pending),
        count(DraftState::Expired),
        count(DraftState::Failed)
    );
    Ok(EXIT_OK)
}

/// Whether opening the ledger for writing failed because it may not be written.
fn cannot_write(e: &Error) -> bool {
    match e {
        Error::Ledger(e) => matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::PermissionDenied)
        ),
        Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
        ),
        _ => false,
    }
}

/// Looks every pending draft up, one request each through the limiter.
async fn refresh_pending(
    lane: &ApiLane,
    book: &Mutex<DraftBook>,
    drafts: &mut [crate::ledger::Draft],
) -> Result<()> {
    for d in drafts.iter_mut() {
        if d.state == DraftState::Pending {
            *d = direct::refresh(lane, book, d).await?;
        }
    }
    Ok(())
}
