//! Bulk ingest: what `ivrstate ingest` does with parsed input, as a library so that the
//! benchmark's `end_to_end` scenario runs exactly the user's path.
//!
//! Parsed events are appended in durable batches of [`BATCH`] (each one flushed before it is
//! counted), then [`complete`] brings derived data up to the log and makes it durable too.

use crate::{Engine, Result};
use ivrstate_ingest::parse::{ParseError, Parsed};
use ivrstate_model::Envelope;
use serde::Serialize;

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
    /// Counts one parser output; returns the envelope to append, if any.
    pub fn count(&mut self, parsed: Parsed) -> Option<Envelope> {
        match parsed {
            Parsed::Event(envelope) => {
                self.read += 1;
                Some(envelope)
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

/// Appends parsed events in durable batches of [`BATCH`], counting them into `summary`.
/// Derived data is not brought up to date here: call [`complete`] once every source is in.
pub fn append_parsed(
    engine: &mut Engine,
    parsed: impl Iterator<Item = Parsed>,
    summary: &mut IngestSummary,
) -> Result<()> {
    append_parsed_from(engine, parsed, ivrstate_store::UNSPECIFIED_SOURCE, summary)
}

/// [`append_parsed`], recording `source` as where every record came from.
pub fn append_parsed_from(
    engine: &mut Engine,
    parsed: impl Iterator<Item = Parsed>,
    source: &str,
    summary: &mut IngestSummary,
) -> Result<()> {
    let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
    for item in parsed {
        if let Some(envelope) = summary.count(item) {
            batch.push(envelope);
            if batch.len() == BATCH {
                append(engine, &mut batch, source, summary)?;
            }
        }
    }
    append(engine, &mut batch, source, summary)
}

fn append(
    engine: &mut Engine,
    batch: &mut Vec<Envelope>,
    source: &str,
    summary: &mut IngestSummary,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let report = engine.log().append_from(batch, &[(batch.len(), source)])?;
    summary.appended += report.appended;
    summary.duplicates += report.duplicates;
    batch.clear();
    Ok(())
}

/// Brings derived data up to the log and makes everything durable: after it returns, the
/// store answers every query for what was ingested.
pub fn complete(engine: &mut Engine) -> Result<()> {
    engine.catch_up(|_, _| {})?;
    engine.store().flush()?;
    Ok(())
}
