//! `cfimg redirects` (rules from old URLs to delivery URLs, `redirects::write`),
//! `cfimg redirects check` (`redirects::check`), and `cfimg source set-old-base|list`,
//! which store the old bases those read.

use std::io::Write;

use super::ledger_views::ledger_path;
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{
    Cli, RedirectsArgs, RedirectsCheckArgs, RedirectsCommand, SetOldBaseArgs, SourceCommand,
};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::old_url::{OldBases, parse_base};
use crate::redirects::{self, check};

/// The source a `--source` names, or the error that lists where to look.
fn source_of(ledger: &Ledger, spec: Option<&str>) -> Result<Option<i64>> {
    match spec {
        Some(s) => Ok(Some(ledger.find_source(s)?.ok_or_else(|| {
            Error::Usage(format!(
                "the ledger has no source {s}: `cfimg source list` shows the sources it has"
            ))
        })?)),
        None => Ok(None),
    }
}

/// `cfimg redirects` and `cfimg redirects check`.
pub async fn run(cli: &Cli, args: &RedirectsArgs) -> Result<i32> {
    if let Some(RedirectsCommand::Check(a)) = &args.check {
        return check(cli, a).await;
    }
    let Some(format) = args.format else {
        return Err(Error::Usage(
            "give --format (cloudflare-bulk, cloudflare-rule, nginx, apache, caddy, netlify, json)"
                .into(),
        ));
    };
    let status = redirects::check_status(args.status)?;
    let path = ledger_path(cli)?;
    let ledger = Ledger::open_existing(&path)?;
    let source = source_of(&ledger, args.source.as_deref())?;
    let bases = OldBases::from_flags(&args.old_base)?.with_stored(&ledger, source)?;
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, sink);
    let mut fmt = redirects::format(format, status);
    let counts = redirects::write(
        &ledger,
        &bases,
        source,
        args.variant.as_deref(),
        fmt.as_mut(),
        &mut out,
    )?;
    drop(out);
    for line in counts.lines().into_iter().chain(fmt.notes(counts.rules)) {
        eprintln!("cfimg: {line}");
    }
    if let Some(p) = &args.output {
        eprintln!("cfimg: written to {}", p.display());
    }
    if bases.is_empty() && counts.rules == 0 && counts.no_base > 0 {
        return Err(Error::Usage(
            "no old base: give --old-base URL (where the files were served before the move), or store one with `cfimg source set-old-base SOURCE URL`".into(),
        ));
    }
    Ok(EXIT_OK)
}

/// `cfimg redirects check`.
async fn check(cli: &Cli, args: &RedirectsCheckArgs) -> Result<i32> {
    let sample = match &args.sample {
        Some(s) => check::Sample::parse(s)?,
        None => check::Sample::All,
    };
    let host = args.host.as_deref().map(check::parse_host).transpose()?;
    if args.concurrency == 0 {
        return Err(Error::Usage("--concurrency must be at least 1".into()));
    }
    let rate_ok = args.rate.is_finite() && args.rate >= 0.0;
    let timeout_ok = args.timeout.is_finite() && args.timeout > 0.0;
    if !rate_ok || !timeout_ok {
        return Err(Error::Usage(
            "--rate must be 0 (no limit) or more, --timeout more than 0".into(),
        ));
    }
    let path = ledger_path(cli)?;
    let (bases, source) = {
        let ledger = Ledger::open_existing(&path)?;
        let source = source_of(&ledger, args.source.as_deref())?;
        (
            OldBases::from_flags(&args.old_base)?.with_stored(&ledger, source)?,
            source,
        )
    };
    let opts = check::CheckOptions {
        host,
        sample,
        concurrency: args.concurrency,
        rate: args.rate,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
    };
    let done = check::run(
        path,
        bases,
        source,
        args.variant.clone(),
        opts,
        |f: &check::Failure| {
            println!(
                "FAIL {}: answered {}; want a redirect to {}",
                f.old_url, f.got, f.want
            );
        },
    )
    .await?;
    let plural = crate::progress::plural;
    eprintln!(
        "cfimg: checked {}: {} to the delivery URL, {} not",
        plural(done.checked, "old URL", "old URLs"),
        done.ok,
        done.failed
    );
    if done.checked == 0 {
        eprintln!(
            "cfimg: nothing to check: no uploaded item has an old URL (give --old-base URL, or store one with `cfimg source set-old-base`)"
        );
    }
    Ok(if done.failed > 0 {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    })
}

/// `cfimg source set-old-base` and `cfimg source list`.
pub fn source(cli: &Cli, cmd: &SourceCommand) -> Result<i32> {
    let path = ledger_path(cli)?;
    match cmd {
        SourceCommand::SetOldBase(a) => set_old_base(&path, a),
        SourceCommand::List(_) => {
            let ledger = Ledger::open_existing(&path)?;
            let stored = ledger.old_bases()?;
            for (id, kind, location) in ledger.sources()? {
                let (items, _) = ledger.item_counts(id)?;
                println!("{kind}:{location}\t{items} items");
                for (_, b) in stored.iter().filter(|(s, _)| *s == id) {
                    println!("\told base {b}");
                }
            }
            Ok(EXIT_OK)
        }
    }
}

fn set_old_base(path: &std::path::Path, a: &SetOldBaseArgs) -> Result<i32> {
    let bases = a
        .bases
        .iter()
        .map(|b| parse_base(b))
        .collect::<Result<Vec<_>>>()?;
    if !path.exists() {
        return Err(crate::ledger::missing(path));
    }
    let mut ledger = Ledger::open(path)?;
    let source = ledger.find_source(&a.source)?.ok_or_else(|| {
        Error::Usage(format!(
            "the ledger has no source {}: `cfimg source list` shows the sources it has",
            a.source
        ))
    })?;
    ledger.set_old_bases(source, &bases)?;
    if bases.is_empty() {
        eprintln!("cfimg: {}: old bases forgotten", a.source);
    }
    for b in &bases {
        println!("{b}");
    }
    Ok(EXIT_OK)
}
