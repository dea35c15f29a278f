//! Stage 2: each candidate's body is fetched, read and hashed on the blocking pool (the
//! candidates already waiting together, in one trip), and decided; uploads go on to the
//! workers.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::quick::Candidate;
use super::run::Run;
use super::sink::Sink;
use crate::error::{Error, Result, Stage};
use crate::item::{Body, Fingerprint, Locator};
use crate::ledger::{Failure, Ledger, SharedReader, Version};
use crate::outcome::{How, Outcome, Stored};
use crate::plan::{self, Decision, Examined, Job, Policy};
use crate::source::Source;
use crate::upload::Queued;

/// Stage 2: fetch each candidate's body, read and hash it on the blocking pool, decide,
/// and hand uploads to the workers; several groups of candidates at once.
pub(super) async fn plan_stage(
    run: Run,
    source: Arc<Source>,
    policy: Policy,
    candidates: mpsc::Receiver<Candidate>,
    jobs: async_channel::Sender<Queued>,
    workers: usize,
) -> Result<()> {
    let reader = run.reader.clone();
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut decisions = ReceiverStream::new(candidates)
        .ready_chunks(EXAMINED_TOGETHER)
        .map(|chunk| examine_and_decide(&run, &source, &policy, reader.as_deref(), chunk))
        .buffer_unordered(readers);
    loop {
        // A stop abandons downloads in flight at once (their temporary files go with
        // them): no new upload starts after it, so finishing them is wasted time.
        let decided = tokio::select! {
            biased;
            _ = run.shutdown.intake.cancelled() => break,
            decided = decisions.next() => decided,
        };
        let Some(decided) = decided else { break };
        for decided in decided? {
            let (version, decision) = decided?;
            route(&run, decision, version, &jobs, workers).await?;
        }
    }
    Ok(())
}

/// Candidates already waiting are examined together, in one trip to the blocking pool:
/// for small files the trip and its wake-ups cost more than the reading.
const EXAMINED_TOGETHER: usize = 8;

/// Fetches, reads and decides candidates that were waiting together; their bodies are
/// fetched in turn and read in one trip to the blocking pool. Returns each one's
/// version for records, in order; `Err` only when the reading itself panicked.
async fn examine_and_decide(
    run: &Run,
    source: &Source,
    policy: &Policy,
    reader: Option<&SharedReader>,
    chunk: Vec<Candidate>,
) -> Result<Vec<Result<(Version, Decision)>>> {
    // One after another: as many downloads at once as chunks in flight, as before.
    let mut bodies = Vec::with_capacity(chunk.len());
    for c in &chunk {
        bodies.push(source.body(&c.item).await);
    }
    let reading: Vec<Option<(Body, Option<u64>)>> = bodies
        .iter()
        .zip(&chunk)
        .map(|(b, c)| b.as_ref().ok().map(|b| (b.clone(), c.item.size())))
        .collect();
    let examined = tokio::task::spawn_blocking(move || {
        reading
            .iter()
            .map(|b| b.as_ref().map(|(body, hint)| plan::examine(body, *hint)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| {
        let keys: Vec<&str> = chunk.iter().map(|c| c.item.key.as_str()).collect();
        Error::Panicked(format!("reading {}", keys.join(", ")))
    })?;
    let decide_all = |ledger: Option<&Ledger>| -> Vec<Result<(Version, Decision)>> {
        chunk
            .into_iter()
            .zip(bodies)
            .zip(examined)
            .map(|((c, body), examined)| decide_one(run, source, policy, ledger, c, body, examined))
            .collect()
    };
    // One read transaction for the chunk's lookups, not one per lookup: each start of one
    // takes and releases the shared-memory locks (two fcntl calls) and checks the WAL.
    Ok(match reader {
        Some(reader) => reader.snapshot(|ledger| decide_all(Some(ledger)))?,
        None => decide_all(None),
    })
}

/// Decides one candidate from its fetched body and what reading it found.
fn decide_one(
    run: &Run,
    source: &Source,
    policy: &Policy,
    ledger: Option<&Ledger>,
    c: Candidate,
    body: Result<Body>,
    examined: Option<std::io::Result<Examined>>,
) -> Result<(Version, Decision)> {
    let (body, examined) = match (body, examined) {
        (Ok(body), Some(Ok(examined))) => (body, examined),
        (Err(e), _) => {
            let v = plan::version(run.source_id, &c.item, &Examined::remote());
            return Ok((v, failure_decision(e)?));
        }
        (Ok(_), Some(Err(e))) => {
            let v = plan::version(run.source_id, &c.item, &Examined::remote());
            let reason = format!("cannot read {}: {e}", c.item.key);
            return Ok((v, Decision::Fail(reason)));
        }
        // Every fetched body is read.
        (Ok(_), None) => return Err(Error::Panicked(format!("reading {}", c.item.key))),
    };
    let version = plan::version(run.source_id, &c.item, &examined);
    // Read and hashed: a file that changed meanwhile is not the version that was hashed.
    if let (Locator::File(_), Some(Fingerprint::SizeMtime { size, mtime_ns })) =
        (&c.item.locator, &c.item.fingerprint)
        && examined
            .read_as
            .is_some_and(|read_as| read_as != (*size, *mtime_ns))
    {
        let reason = format!(
            "{} changed while it was read; it is tried again once it is stable",
            c.item.key
        );
        return Ok((version, Decision::Fail(reason)));
    }
    let source_id = run.source_id;
    let key = c.item.key.clone();
    let same_content = |sha: &str| {
        ledger.and_then(|l| l.uploaded_with_content(source_id, sha, &key).ok().flatten())
    };
    if let Some(decision) = plan::follow_content(policy, &examined, c.row.as_ref(), same_content) {
        return Ok((version, decision));
    }
    let holder = |id: &str| ledger.and_then(|l| l.holder_of(id, source_id, &key).ok().flatten());
    let decision = plan::decide(
        policy,
        c.item,
        source.id(),
        source_id,
        body,
        examined,
        c.row.as_ref(),
        holder,
    );
    Ok((version, decision))
}

/// What a source's error about one item means for it (see [`Error::failure`]); a fatal
/// one stops the run.
fn failure_decision(e: Error) -> Result<Decision> {
    Ok(match e.failure(Stage::Reading) {
        None => return Err(e),
        Some(Failure::Rejected) => Decision::Reject(e.to_string()),
        Some(Failure::Local | Failure::Deferred) => Decision::Fail(e.to_string()),
    })
}

/// Records a decision, or hands its job to the workers.
async fn route(
    run: &Run,
    decision: Decision,
    version: Version,
    jobs: &async_channel::Sender<Queued>,
    workers: usize,
) -> Result<()> {
    let outcome = match decision {
        Decision::Touch => Outcome::Touched(version),
        Decision::Share { image_id, url } => Outcome::Stored(Stored {
            how: How::Deduplicated,
            version,
            image_id,
            url,
            attempts: 0,
            replaced: false,
            stamp: None,
            check_after: None,
            superseded: None,
        }),
        Decision::Reject(reason) => return run.reject(version, reason, Failure::Rejected).await,
        Decision::Fail(reason) => return run.reject(version, reason, Failure::Local).await,
        Decision::Do(job) => return hand_over(run, *job, jobs, workers).await,
    };
    run.end(outcome).await
}

/// Hands a job to the `workers`, its intent recorded ahead of them when that is free, or
/// says what it would upload in a dry run.
async fn hand_over(
    run: &Run,
    job: Job,
    jobs: &async_channel::Sender<Queued>,
    workers: usize,
) -> Result<()> {
    let up = match &run.sink {
        Sink::Upload(up) => up,
        Sink::Dry => {
            let would = Outcome::WouldUpload {
                key: job.item.key,
                bytes: job.version.size,
                id: job.id,
                replaces: job.previous,
            };
            return run.end(would).await;
        }
    };
    let intent = match run.shutdown.intake.is_cancelled() {
        true => None,
        false => up.uploader.intent_ahead(&job, jobs.len(), workers).await?,
    };
    // What a withdrawal needs, kept here: a cancelled send drops the job with it.
    let ahead = intent.clone().map(|i| {
        let item = (job.version.source_id, job.version.key.clone());
        (item, job.stamp.source.clone(), i)
    });
    // Once intake stops, the workers take no more jobs: drop it rather than wait.
    tokio::select! {
        _ = jobs.send(Queued { job, intent }) => {}
        _ = run.shutdown.intake.cancelled() => {
            if let Some((item, stamp, intent)) = ahead {
                up.uploader.withdraw(item, stamp, intent).await?;
            }
        }
    }
    Ok(())
}
