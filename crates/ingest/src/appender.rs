//! The appender: one thread that takes batches of envelopes from every source (followers, feed
//! connections, client requests) and appends everything queued at that moment as ONE group
//! commit, then tells each source how its part went.
//!
//! What "append" means is the caller's ([`Commit`]): `serve` appends through the engine, folds,
//! and publishes before it returns, so every ack says "stored (flushed) and published". The
//! appender only batches and hands out the acks, in the order the jobs arrived.

use ivrstate_model::Envelope;
use ivrstate_store::{AppendOutcome, AppendReport, SourceRun};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How much one group commit takes at most, in envelopes (more stays queued for the next).
pub const MAX_COMMIT: usize = crate::BATCH * 8;

/// A batch for the appender, where it came from, and where to say how it went.
pub struct Job {
    pub envelopes: Vec<Envelope>,
    /// Recorded as the source of every record of the batch (see `ivrstate_store::Provenance`).
    pub source: Arc<str>,
    /// The line each envelope starts at in `source` (a followed file), or empty.
    pub lines: Vec<u64>,
    pub ack: Option<oneshot::Sender<Result<Committed, String>>>,
}

impl Job {
    /// A job nobody waits for (client requests, followed files).
    pub fn unacknowledged(envelopes: Vec<Envelope>, source: Arc<str>) -> Self {
        Job {
            envelopes,
            source,
            lines: Vec::new(),
            ack: None,
        }
    }

    /// This job's envelopes come from these lines of its source.
    pub fn at_lines(mut self, lines: Vec<u64>) -> Self {
        self.lines = lines;
        self
    }
}

/// A job's part of a commit: how many of its envelopes were new, how many already stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub new: u64,
    pub duplicates: u64,
}

/// One durable append of a batch, with the sources of its runs of envelopes (as
/// `EventLog::append_from` takes them); the report's outcomes are in the envelopes' order.
pub trait Commit {
    type Error: Display;
    fn commit(
        &mut self,
        envelopes: &[Envelope],
        sources: &[SourceRun<'_>],
    ) -> Result<AppendReport, Self::Error>;
}

impl<E: Display, F: FnMut(&[Envelope], &[SourceRun<'_>]) -> Result<AppendReport, E>> Commit for F {
    type Error = E;
    fn commit(
        &mut self,
        envelopes: &[Envelope],
        sources: &[SourceRun<'_>],
    ) -> Result<AppendReport, E> {
        self(envelopes, sources)
    }
}

/// Runs until every sender is gone, or until `stopping` is set: then what is queued is
/// committed and the appender returns (wake it with an empty job after setting the flag).
pub fn run(mut jobs: mpsc::Receiver<Job>, stopping: &AtomicBool, sink: &mut impl Commit) {
    while let Some(first) = jobs.blocking_recv() {
        // Group commit: everything queued right now goes into one append and one flush.
        let mut total = first.envelopes.len();
        let mut batch = vec![first];
        while total < MAX_COMMIT {
            match jobs.try_recv() {
                Ok(job) => {
                    total += job.envelopes.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        commit(sink, batch);
        if stopping.load(Ordering::SeqCst) {
            jobs.close();
            let rest: Vec<Job> = std::iter::from_fn(|| jobs.try_recv().ok()).collect();
            if !rest.is_empty() {
                commit(sink, rest);
            }
            break;
        }
    }
}

/// Appends the jobs' envelopes as one batch and acknowledges each job with its part.
pub fn commit(sink: &mut impl Commit, batch: Vec<Job>) {
    // The jobs' envelopes are moved into one batch; each job keeps its count and its ack.
    let mut envelopes: Vec<Envelope> = Vec::new();
    let mut acks = Vec::with_capacity(batch.len());
    let mut sources: Vec<(usize, Arc<str>, Vec<u64>)> = Vec::with_capacity(batch.len());
    for job in batch {
        acks.push((job.envelopes.len(), job.ack));
        sources.push((job.envelopes.len(), job.source, job.lines));
        envelopes.extend(job.envelopes);
    }
    let sources: Vec<SourceRun<'_>> = sources
        .iter()
        .map(|(count, source, lines)| SourceRun {
            count: *count,
            source,
            lines,
        })
        .collect();
    match sink.commit(&envelopes, &sources) {
        Ok(report) => {
            let mut outcomes = report.outcomes.iter();
            for (count, ack) in acks {
                let mut part = Committed::default();
                for outcome in outcomes.by_ref().take(count) {
                    match outcome {
                        AppendOutcome::New(_) => part.new += 1,
                        AppendOutcome::Duplicate(_) => part.duplicates += 1,
                    }
                }
                if let Some(ack) = ack {
                    let _ = ack.send(Ok(part));
                }
            }
        }
        Err(e) => {
            tracing::error!("append failed, {} events not stored: {e}", envelopes.len());
            for (_, ack) in acks {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_model::{Micros, TLibEvent, TLibKind, TServerName};
    use ivrstate_store::{Store, StoreOptions};

    fn link(seq: u64) -> Envelope {
        Envelope {
            time: Micros(1_700_000_000_000_000 + seq as i64),
            recorded: Micros(1_700_000_000_000_000),
            event: ivrstate_model::Event::TLib(TLibEvent {
                tserver: TServerName::from("TS"),
                source_seq: Some(seq),
                kind: TLibKind::LinkConnected,
            }),
        }
    }

    fn job(envelopes: Vec<Envelope>) -> (Job, oneshot::Receiver<Result<Committed, String>>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                envelopes,
                source: Arc::from("test"),
                lines: Vec::new(),
                ack: Some(tx),
            },
            rx,
        )
    }

    #[test]
    fn queued_jobs_share_one_commit_and_each_gets_its_own_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.log().append(&[link(1)]).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let (a, a_ack) = job(vec![link(1), link(2)]);
        let (b, b_ack) = job(vec![link(3), link(4), link(5)]);
        tx.try_send(a).unwrap();
        tx.try_send(Job::unacknowledged(vec![link(6)], Arc::from("other")).at_lines(vec![42]))
            .unwrap();
        tx.try_send(b).unwrap();
        drop(tx);
        let mut commits = Vec::new();
        run(
            rx,
            &AtomicBool::new(false),
            &mut |envs: &[Envelope], sources: &[SourceRun<'_>]| {
                commits.push(envs.len());
                store.log().append_from(envs, sources)
            },
        );
        assert_eq!(commits, vec![6], "one group commit for everything queued");
        let a = a_ack.blocking_recv().unwrap().unwrap();
        assert_eq!(
            a,
            Committed {
                new: 1,
                duplicates: 1
            }
        );
        let b = b_ack.blocking_recv().unwrap().unwrap();
        assert_eq!(
            b,
            Committed {
                new: 3,
                duplicates: 0
            }
        );
        assert_eq!(store.log().last_seq(), 6);
        let p = store.log().provenance().unwrap();
        let sources: Vec<String> = (2..=6).map(|seq| p.source(seq).into_owned()).collect();
        assert_eq!(sources, ["test", "other:42", "test", "test", "test"]);
    }

    #[test]
    fn a_failed_append_is_reported_to_every_job() {
        let (tx, rx) = mpsc::channel(16);
        let (a, a_ack) = job(vec![link(1)]);
        let (b, b_ack) = job(vec![link(2)]);
        tx.try_send(a).unwrap();
        tx.try_send(b).unwrap();
        drop(tx);
        run(
            rx,
            &AtomicBool::new(false),
            &mut |_: &[Envelope], _: &[SourceRun<'_>]| Err::<AppendReport, _>("disk full"),
        );
        assert_eq!(a_ack.blocking_recv().unwrap(), Err("disk full".to_owned()));
        assert_eq!(b_ack.blocking_recv().unwrap(), Err("disk full".to_owned()));
    }

    #[test]
    fn stopping_commits_what_is_queued_then_returns_with_senders_alive() {
        let (tx, rx) = mpsc::channel(16);
        let (a, a_ack) = job(vec![link(1)]);
        tx.try_send(a).unwrap();
        let stopping = AtomicBool::new(true);
        let mut appended = 0;
        run(
            rx,
            &stopping,
            &mut |envs: &[Envelope], _: &[SourceRun<'_>]| {
                appended += envs.len();
                Ok::<_, String>(AppendReport {
                    appended: envs.len() as u64,
                    duplicates: 0,
                    outcomes: envs
                        .iter()
                        .enumerate()
                        .map(|(i, _)| AppendOutcome::New(i as u64 + 1))
                        .collect(),
                    first_seq: Some(1),
                    last_seq: envs.len() as u64,
                })
            },
        );
        assert_eq!(appended, 1);
        assert_eq!(a_ack.blocking_recv().unwrap().unwrap().new, 1);
        assert!(tx.is_closed(), "the appender closed its queue");
    }
}
