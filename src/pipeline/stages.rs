//! The spawned stages of a run, and the one way to wait for them.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::MigrateOptions;
use super::quick::{self, Candidate};
use super::run::Run;
use super::sink::Sink;
use super::{plan_stage, upkeep, workers};
use crate::config::Config;
use crate::error::Result;
use crate::ledger::{BatchedReader, Ledger};
use crate::plan::Policy;
use crate::quota::Gate;
use crate::remove::Removal;
use crate::source::{Found, Source};
use crate::upload::Queued;

/// Items waiting between the quick check and reading.
const CANDIDATE_QUEUE: usize = 256;
/// Listed items waiting for the quick check.
const FOUND_QUEUE: usize = 4096;

/// The running stages, each named for the error that stops the run if it fails, in the
/// order they are waited for (each ends once the one before it has).
pub(super) struct Stages {
    running: Vec<(&'static str, JoinHandle<Result<()>>)>,
    /// The workers' queue, for the jobs a stop leaves in it.
    queue: async_channel::Receiver<Queued>,
}

impl Stages {
    /// Spawns every stage, wired by bounded channels.
    pub fn start(
        run: &Run,
        cfg: &Config,
        source: &Arc<Source>,
        opts: &MigrateOptions,
        gate: Option<Arc<Gate>>,
    ) -> Result<Stages> {
        let reader = Ledger::open_read_only(&cfg.ledger)?
            .map(BatchedReader::new)
            .transpose()?;
        let (found_tx, found_rx) = mpsc::channel::<Found>(FOUND_QUEUE);
        let (cand_tx, cand_rx) = mpsc::channel::<Candidate>(CANDIDATE_QUEUE);
        let (gone_tx, gone_rx) = mpsc::channel::<Removal>(CANDIDATE_QUEUE);
        // Many workers take from it: a channel with many receivers wakes one of them per
        // job, where one receiver behind a lock woke two.
        let (job_tx, job_rx) = async_channel::bounded::<Queued>(cfg.upload.concurrency * 2);
        let queue = job_rx.clone();
        let stop = run.shutdown.intake.clone();
        let lister = match (&**source, &reader) {
            // A folder's unchanged files are settled in the walk's thread, on a read
            // connection of its own.
            (Source::Walk(walk), Some(_)) => match Ledger::open_read_only(&cfg.ledger)? {
                Some(ledger) => {
                    let settled = quick::Unchanged::new(run.clone(), BatchedReader::new(ledger)?);
                    tokio::spawn(walk.clone().run_settled(found_tx, stop, Box::new(settled)))
                }
                None => tokio::spawn(source.clone().list(found_tx, stop)),
            },
            _ => tokio::spawn(source.clone().list(found_tx, stop)),
        };
        let checker = {
            let run = run.clone();
            let retry = opts.retry;
            tokio::task::spawn_blocking(move || {
                quick::check(&run, found_rx, reader, retry, &cand_tx, &gone_tx)
            })
        };
        let policy = Policy {
            id_mode: cfg.upload.id_mode,
            id_prefix: cfg.upload.id_prefix.clone(),
            require_signed_urls: cfg.upload.require_signed_urls,
            follow_content: run.daemon,
        };
        let planner = tokio::spawn(plan_stage::plan_stage(
            run.clone(),
            source.clone(),
            policy,
            cand_rx,
            job_tx,
            cfg.upload.concurrency,
        ));
        let mut stages = vec![
            ("listing", lister),
            ("quick check", checker),
            ("planning", planner),
        ];
        match &run.sink {
            Sink::Upload(up) => {
                let started = workers::start(run, up, job_rx, cfg.upload.concurrency, gate);
                stages.extend(started.into_iter().map(|w| ("upload", w)));
            }
            Sink::Dry => drop(job_rx),
        }
        let remover = tokio::spawn(workers::remove_stage(run.clone(), gone_rx));
        stages.push(("removal", remover));
        if let (Some(live), Sink::Upload(up)) = (&opts.live, &run.sink) {
            let task = upkeep::upkeep(run.clone(), live.clone(), up.clone());
            stages.push(("upkeep", tokio::spawn(task)));
        }
        Ok(Stages {
            running: stages,
            queue,
        })
    }

    /// Waits for every stage in order; a failed or panicked one stops the run.
    /// Then withdraws the intents of jobs a stop left queued: no item is left half-done.
    pub async fn wait(self, run: &Run) {
        for (stage, task) in self.running {
            run.join(stage, task).await;
        }
        let Sink::Upload(up) = &run.sink else { return };
        while let Ok(queued) = self.queue.try_recv() {
            workers::withdraw(run, up, queued).await;
        }
    }
}
