//! `cfimg images list|get|update|delete|blob|stats`: the Images API from the command line,
//! every request through the account's limiter with retries.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicU32;

use serde_json::{Map, Value, json};

use super::{EXIT_INCOMPLETE, EXIT_OK, api_lane};
use crate::api::client::{ImageUpdate, ListQuery};
use crate::api::types::Image;
use crate::cli::{Cli, ImagesCommand, ImagesDeleteArgs, ImagesListArgs, ImagesUpdateArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Maintenance};
use crate::shown::Shown;
use crate::stamp;
use crate::transport::ApiLane;

/// Share of the quota above which `images stats` warns.
const NEAR_QUOTA: f64 = 0.9;

/// Runs an `images` subcommand.
pub async fn run(cli: &Cli, cmd: &ImagesCommand) -> Result<i32> {
    let (cfg, lane) = api_lane(cli)?;
    let spent = AtomicU32::new(0);
    match cmd {
        ImagesCommand::List(args) => list(&lane, &spent, args).await,
        ImagesCommand::Get { id, output } => {
            let image = lane.call(&spent, || lane.client.get(id)).await?;
            print_image(&image, output.json);
            Ok(EXIT_OK)
        }
        ImagesCommand::Update(args) => update(&cfg, &lane, &spent, args).await,
        ImagesCommand::Delete(args) => delete(&cfg, &lane, &spent, args).await,
        ImagesCommand::Blob { id, output } => {
            let mut file = tokio::fs::File::create(output)
                .await
                .map_err(|source| Error::Io {
                    path: output.clone(),
                    source,
                })?;
            // Not retried: a retry would have to start the file again.
            let got = lane.once(&spent, lane.client.blob_to(id, &mut file));
            if let Err(e) = got.await {
                drop(file);
                let _ = std::fs::remove_file(output);
                return Err(e);
            }
            let len = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            eprintln!("cfimg: wrote {len} bytes to {}", output.display());
            Ok(EXIT_OK)
        }
        ImagesCommand::Stats(out) => {
            let stats = lane.call(&spent, || lane.client.stats()).await?;
            let (current, allowed) = (stats.count.current, stats.count.allowed);
            let share = if allowed > 0 {
                current as f64 / allowed as f64
            } else {
                1.0
            };
            if out.json {
                println!(
                    "{}",
                    json!({ "current": current, "allowed": allowed, "left": allowed.saturating_sub(current), "near_quota": share >= NEAR_QUOTA })
                );
            } else {
                println!(
                    "{current} images of {allowed} allowed ({} left, {:.1}% used)",
                    allowed.saturating_sub(current),
                    share * 100.0
                );
            }
            if share >= NEAR_QUOTA {
                eprintln!(
                    "cfimg: warning: the account is near its image quota; uploads stop with code 5453 once it is reached (delete images, or raise the limit: dashboard Images > Plans)"
                );
            }
            Ok(EXIT_OK)
        }
    }
}

/// A one-line view of an image for tables.
fn line(i: &Image) -> String {
    let src = i
        .meta
        .as_ref()
        .and_then(|m| m.get(stamp::SOURCE_KEY))
        .and_then(Value::as_str)
        .unwrap_or("-");
    format!(
        "{}\t{}\t{}\t{}\t{}",
        // A custom id may hold a bidi override (control characters are refused).
        Shown(&i.id),
        Shown(i.uploaded.as_deref().unwrap_or("-")),
        if i.require_signed_urls {
            "private"
        } else {
            "public"
        },
        // A file name is anything a file system allows: escaped, it stays one line.
        Shown(i.filename.as_deref().unwrap_or("-")),
        Shown(src)
    )
}

fn print_image(i: &Image, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(i).unwrap_or_default());
        return;
    }
    println!("id          {}", Shown(&i.id));
    println!(
        "filename    {}",
        Shown(i.filename.as_deref().unwrap_or("-"))
    );
    println!(
        "uploaded    {}",
        Shown(i.uploaded.as_deref().unwrap_or("-"))
    );
    println!(
        "private     {}",
        if i.require_signed_urls { "yes" } else { "no" }
    );
    println!("creator     {}", Shown(i.creator.as_deref().unwrap_or("-")));
    println!(
        "meta        {}",
        // JSON escapes control characters but not a bidi override a creator may have sent.
        Shown(
            &i.meta
                .as_ref()
                .map(|m| Value::Object(m.clone()).to_string())
                .unwrap_or_else(|| "{}".into())
        )
    );
    for v in &i.variants {
        println!("variant     {}", Shown(v));
    }
}

/// Streams the listing page by page: each page is printed before the next is asked for.
async fn list(lane: &ApiLane, spent: &AtomicU32, args: &ImagesListArgs) -> Result<i32> {
    let mut meta_eq = Vec::new();
    for m in &args.meta {
        let (k, v) = m.split_once('=').ok_or_else(|| {
            Error::Usage(format!("--meta {m}: give KEY=VALUE, e.g. --meta team=web"))
        })?;
        meta_eq.push((k.to_string(), v.to_string()));
    }
    let mut query = ListQuery {
        per_page: Some(1000),
        creator: args.creator.clone(),
        meta_eq,
        ..ListQuery::default()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io = |source| Error::Io {
        path: "stdout".into(),
        source,
    };
    let mut first = true;
    let mut count = 0u64;
    if args.json {
        write!(out, "[").map_err(io)?;
    } else if !args.jsonl {
        writeln!(out, "id\tuploaded\tprivacy\tfilename\tcfimg_src").map_err(io)?;
    }
    loop {
        let page = lane.call(spent, || lane.client.list_v2(&query)).await?;
        for image in &page.images {
            count += 1;
            if args.json {
                if !first {
                    write!(out, ",").map_err(io)?;
                }
                serde_json::to_writer(&mut out, image).map_err(|e| io(e.into()))?;
            } else if args.jsonl {
                serde_json::to_writer(&mut out, image).map_err(|e| io(e.into()))?;
                writeln!(out).map_err(io)?;
            } else {
                writeln!(out, "{}", line(image)).map_err(io)?;
            }
            first = false;
        }
        out.flush().map_err(io)?;
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    if args.json {
        writeln!(out, "]").map_err(io)?;
    }
    out.flush().map_err(io)?;
    if !args.json && !args.jsonl {
        eprintln!(
            "cfimg: {}",
            crate::progress::plural(count, "image", "images")
        );
    }
    Ok(EXIT_OK)
}

async fn update(
    cfg: &Config,
    lane: &ApiLane,
    spent: &AtomicU32,
    args: &ImagesUpdateArgs,
) -> Result<i32> {
    let metadata = match &args.metadata {
        Some(text) => {
            let mut new: Map<String, Value> = serde_json::from_str(text)
                .map_err(|e| Error::Usage(format!("--metadata must be a JSON object: {e}")))?;
            // Keep cfimg's stamp, so that verify and later runs still know the image.
            let old = lane.call(spent, || lane.client.get(&args.id)).await?;
            if let Some(m) = old.meta {
                for k in [stamp::SOURCE_KEY, stamp::SET_KEY, stamp::SHA256_KEY] {
                    if let Some(v) = m.get(k)
                        && !new.contains_key(k)
                    {
                        new.insert(k.to_string(), v.clone());
                    }
                }
            }
            Some(Value::Object(new))
        }
        None => None,
    };
    let change = ImageUpdate {
        metadata,
        require_signed_urls: args.require_signed_urls,
        creator: args.creator.clone(),
    };
    if change.metadata.is_none() && change.require_signed_urls.is_none() && change.creator.is_none()
    {
        return Err(Error::Usage(
            "nothing to change: give --metadata, --require-signed-urls or --creator".into(),
        ));
    }
    if change.require_signed_urls == Some(true) {
        eprintln!(
            "cfimg: making {} private: its unsigned delivery URLs stop working (except variants that never require signed URLs); sign them with `cfimg sign-url`",
            args.id
        );
    }
    // "Returns a new UID on a change" (the API on requireSignedURLs): a ledger that maps
    // this image is locked first, so that the new id can be recorded once it is answered.
    let maintenance = match change.require_signed_urls {
        Some(_) if !mapped_items(cfg, std::slice::from_ref(&args.id))?.is_empty() => {
            Some(Maintenance::open(&cfg.ledger)?)
        }
        _ => None,
    };
    let image = lane
        .call(spent, || lane.client.update(&args.id, &change))
        .await?;
    if image.id != args.id {
        eprintln!(
            "cfimg: Cloudflare answered with a new id: {} is now {}",
            Shown(&args.id),
            Shown(&image.id)
        );
        if let Some(m) = &maintenance {
            let url = crate::upload::delivery_url(&image);
            let moved = m.move_image(&args.id, &image.id, url.as_deref())?;
            eprintln!(
                "cfimg: ledger {}: {moved} item(s) now record {}",
                cfg.ledger.display(),
                Shown(&image.id)
            );
        }
    }
    print_image(&image, args.output.json);
    Ok(EXIT_OK)
}

/// What the ledger records for an image: the items whose delivery URL dies with it.
struct Mapped {
    id: String,
    items: Vec<crate::ledger::Row>,
}

/// The items of the configured ledger that hold each of `ids`. Nothing when there is no
/// ledger (none is created) or when it belongs to another account.
fn mapped_items(cfg: &Config, ids: &[String]) -> Result<Vec<Mapped>> {
    // Said, since a ledger elsewhere is not protected: the user may have meant another.
    let Some(ledger) = Ledger::open_read_only(&cfg.ledger)? else {
        eprintln!(
            "cfimg: no ledger at {}: no mapping checked (give --ledger if a ledger maps these images)",
            cfg.ledger.display()
        );
        return Ok(Vec::new());
    };
    if let Some(d) = ledger
        .destination()?
        .filter(|d| d.account_id != cfg.account_id)
    {
        eprintln!(
            "cfimg: the ledger {} belongs to account {}, not this one: no mapping checked",
            cfg.ledger.display(),
            d.account_id
        );
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for id in ids {
        let items = ledger.items_holding(id)?;
        if !items.is_empty() {
            out.push(Mapped {
                id: id.clone(),
                items,
            });
        }
    }
    Ok(out)
}

/// "x.png (dir:/photos)" for the first items, and how many more.
fn items_named(items: &[crate::ledger::Row]) -> String {
    let mut names: Vec<String> = items
        .iter()
        .take(3)
        .map(|r| format!("{} ({})", Shown(&r.key), Shown(&r.source)))
        .collect();
    if items.len() > 3 {
        names.push(format!("and {} more", items.len() - 3));
    }
    names.join(", ")
}

async fn delete(
    cfg: &Config,
    lane: &ApiLane,
    spent: &AtomicU32,
    args: &ImagesDeleteArgs,
) -> Result<i32> {
    let mapped = mapped_items(cfg, &args.ids)?;
    let ledger = cfg.ledger.display();
    if args.dry_run {
        print_dry_delete(args, &mapped, &ledger.to_string());
        return Ok(EXIT_OK);
    }
    if !mapped.is_empty() && !args.force {
        let lines: Vec<String> = mapped
            .iter()
            .map(|m| format!("{} is the image of {}", Shown(&m.id), items_named(&m.items)))
            .collect();
        return Err(Error::Usage(format!(
            "not deleting: {} in ledger {ledger}; deleting breaks the delivery URLs the ledger records (`cfimg export`). Give --force to delete anyway: the ledger then marks those items so that the next `cfimg migrate` uploads them again (remove the files from the source first if they should stay gone)",
            lines.join("; ")
        )));
    }
    if !args.yes && !confirm_delete(&args.ids)? {
        eprintln!("cfimg: nothing deleted");
        return Ok(EXIT_OK);
    }
    // Locked before the first delete, so that a ledger that cannot be updated (a run
    // holds it) stops the command before any image is gone.
    let maintenance = if mapped.is_empty() {
        None
    } else {
        Some(Maintenance::open(&cfg.ledger)?)
    };
    // Said before acting, so that a script's log shows what the delete broke.
    eprintln!(
        "cfimg: deleting {} image(s): their delivery URLs stop working; this cannot be undone",
        args.ids.len()
    );
    for m in &mapped {
        eprintln!(
            "cfimg: {} is the image of {} in ledger {ledger}: the ledger marks it so that the next `cfimg migrate` uploads it again",
            Shown(&m.id),
            items_named(&m.items)
        );
    }
    let mut failed = 0;
    for id in &args.ids {
        let done = match lane.call(spent, || lane.client.delete(id)).await {
            Ok(()) => format!("deleted {}", Shown(id)),
            // Already gone: the ledger still must stop pointing at it.
            Err(e) if e.is_not_found() && mapped.iter().any(|m| m.id == *id) => {
                format!("{} was already gone", Shown(id))
            }
            Err(e) => {
                failed += 1;
                eprintln!("cfimg: {}: {}", Shown(id), Shown(&e.to_string()));
                if let Some(h) = e.hint() {
                    eprintln!("cfimg: {h}");
                }
                if e.disposition() == crate::error::Disposition::Fatal {
                    return Err(e);
                }
                continue;
            }
        };
        // The ledger first: a reader that closes stdout must not leave it pointing at nothing.
        let requeued = match &maintenance {
            Some(m) => m.forget_image(
                id,
                &format!(
                    "its image {id} was deleted with `cfimg images delete`; the next migrate uploads it again"
                ),
            )?,
            None => 0,
        };
        println!("{done}");
        if requeued > 0 {
            println!(
                "ledger: {requeued} item(s) of {} marked for upload by the next migrate",
                Shown(id)
            );
        }
    }
    Ok(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

/// What `images delete --dry-run` would do, and which ledger items it would break.
fn print_dry_delete(args: &ImagesDeleteArgs, mapped: &[Mapped], ledger: &str) {
    for id in &args.ids {
        println!("would delete {}", Shown(id));
    }
    for m in mapped {
        eprintln!(
            "cfimg: {} is the image of {} in ledger {ledger}: {}",
            Shown(&m.id),
            items_named(&m.items),
            if args.force {
                "its delivery URL would stop working and the next `cfimg migrate` would upload it again"
            } else {
                "refused without --force"
            }
        );
    }
}

/// Asks on the terminal before deleting; without a terminal, --yes is needed.
fn confirm_delete(ids: &[String]) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "deleting images needs --yes when not run on a terminal".into(),
        ));
    }
    eprint!(
        "delete {} image(s) ({})? This cannot be undone. [y/N] ",
        ids.len(),
        ids.join(", ")
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|source| Error::Io {
            path: "stdin".into(),
            source,
        })?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
