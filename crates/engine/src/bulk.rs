//! Bulk ingest: what `ivrstate ingest` does with parsed input, as a library so that the
//! benchmark's `end_to_end` scenario runs exactly the user's path.
//!
//! Parsed events are appended in durable batches of [`BATCH`] (each one flushed before it is
//! counted), then [`complete`] brings derived data up to the log and makes it durable too.

use crate::{Engine, EngineError, Result};
use ivrstate_ingest::parse::{ParseError, Parsed};
use ivrstate_model::{Envelope, Seq};
use ivrstate_store::{PendingAppend, SourceRun};
use serde::Serialize;
use std::sync::mpsc;

pub use ivrstate_ingest::BATCH;
/// Locations of malformed input kept for the summary.
const MAX_ERRORS: usize = 100;

/// What an ingest read and stored (the `ingest --json` summary).
#[derive(Debug, Default, Serialize)]
pub struct IngestSummary {
    pub read: u64,
    pub appended: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub skipped: u64,
    pub errors: Vec<ErrorLocation>,
}

/// Where a malformed printout or line was.
#[derive(Debug, Serialize)]
pub struct ErrorLocation {
    pub file: String,
    pub line: u64,
    pub byte_offset: u64,
    pub reason: String,
}

impl IngestSummary {
    /// Counts one parser output; returns the envelope to append and its line, if any.
    pub fn count(&mut self, parsed: Parsed) -> Option<(Envelope, u64)> {
        match parsed {
            Parsed::Event { line, envelope } => {
                self.read += 1;
                Some((envelope, line))
            }
            Parsed::Skipped { .. } => {
                self.skipped += 1;
                None
            }
            Parsed::Malformed(error) => {
                self.malformed_at(&error);
                None
            }
        }
    }

    fn malformed_at(&mut self, e: &ParseError) {
        tracing::warn!("{e}");
        self.malformed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(ErrorLocation {
                file: e.file.clone(),
                line: e.line,
                byte_offset: e.byte_offset,
                reason: e.reason.clone(),
            });
        }
    }
}

/// Appends parsed events in durable batches of [`BATCH`], counting them into `summary`, and
/// derives while it appends.
///
/// A pipeline over the machine's cores: the caller's thread parses (its input need not be
/// `Send`: stdin is read here too); an appender thread dedups, encodes and writes each batch
/// into the log (`begin_append`) while a syncer thread waits for the previous one to be durable
/// (one flush covers every batch written while the one before ran); and a deriver thread folds
/// what is durable into derived data, a commit's worth at a time. A batch is counted as
/// appended only once it is durable. Derived data may trail the log when this returns: call
/// [`complete`] once every source is in.
pub fn append_parsed(
    engine: &mut Engine,
    parsed: impl Iterator<Item = Parsed>,
    summary: &mut IngestSummary,
) -> Result<()> {
    append_parsed_from(engine, parsed, ivrstate_store::UNSPECIFIED_SOURCE, summary)
}

/// [`append_parsed`], recording `source` (and the line of each event in it) as where every
/// record came from.
pub fn append_parsed_from(
    engine: &mut Engine,
    parsed: impl Iterator<Item = Parsed>,
    source: &str,
    summary: &mut IngestSummary,
) -> Result<()> {
    let log = engine.log().clone();
    std::thread::scope(|scope| {
        let (batches, to_append) = mpsc::sync_channel::<Batch>(PIPELINE_DEPTH);
        let (pending, to_sync) = mpsc::sync_channel::<PendingAppend<'_>>(PIPELINE_DEPTH);
        let (durable, to_derive) = mpsc::channel::<Seq>();
        let log = &log;
        let appender = scope.spawn(move || -> Result<()> {
            for (batch, lines) in to_append {
                let begun =
                    log.begin_append_from(&batch, &[SourceRun::with_lines(source, &lines)])?;
                if pending.send(begun).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let syncer = scope.spawn(move || -> Result<(u64, u64)> {
            let (mut appended, mut duplicates) = (0, 0);
            for begun in to_sync {
                let report = begun.wait_durable()?;
                appended += report.appended;
                duplicates += report.duplicates;
                // The deriver may have stopped on an error, which it reports itself.
                let _ = durable.send(report.last_seq);
            }
            Ok((appended, duplicates))
        });
        let deriver = scope.spawn(|| -> Result<()> {
            let mut seen = engine.derived_seq();
            for seq in to_derive {
                seen = seen.max(seq);
                if seen >= engine.derived_seq() + DERIVE_EVERY {
                    engine.catch_up(|_, _| {})?;
                }
            }
            Ok(())
        });

        let mut batch: Batch = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        for item in parsed {
            if let Some((envelope, line)) = summary.count(item) {
                batch.0.push(envelope);
                batch.1.push(line);
                if batch.0.len() == BATCH {
                    let empty = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
                    let full = std::mem::replace(&mut batch, empty);
                    if batches.send(full).is_err() {
                        // The appender stopped: its error is returned below.
                        break;
                    }
                }
            }
        }
        if !batch.0.is_empty() {
            let _ = batches.send(batch);
        }
        drop(batches);
        let appended = join(appender);
        let counts = join(syncer);
        let derived = join(deriver);
        appended?;
        let (appended, duplicates) = counts?;
        summary.appended += appended;
        summary.duplicates += duplicates;
        derived
    })
}

/// A batch of envelopes and the line each starts at in its input.
type Batch = (Vec<Envelope>, Vec<u64>);

/// Batches in flight between two stages of the pipeline.
const PIPELINE_DEPTH: usize = 4;
/// The deriver catches up once this many records are durable and not yet derived (about one
/// commit of derived data: fewer, larger commits).
const DERIVE_EVERY: Seq = 1 << 22;

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(EngineError::Query("an ingest thread panicked".into())))
}

/// Brings derived data up to the log and makes everything durable: after it returns, the
/// store answers every query for what was ingested.
pub fn complete(engine: &mut Engine) -> Result<()> {
    engine.catch_up(|_, _| {})?;
    engine.store().flush()?;
    Ok(())
}
