//! What records events: the T-Server log and NDJSON parsers (`parse`), what `ingest` opens
//! (directories, gzip, text: `input`), the sources (files followed as they grow: `follow`; the
//! TCP feed: `feed`) and the appender that batches what they produce into group commits of the
//! store (`appender`).

pub mod appender;
pub mod feed;
pub mod follow;
pub mod input;
pub mod parse;

use ivrstate_model::{Envelope, Micros};
use parse::Parsed;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Events per append of a file's events (`ingest`), and per batch a source hands on.
pub const BATCH: usize = 1000;

/// A printout is complete when the next line arrives; when a source goes quiet for this long,
/// the printout in progress is ended so that its event is not held back (latency goal: 50 ms
/// from the file to the client).
pub const IDLE_FLUSH: Duration = Duration::from_millis(10);

/// The two input formats.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// T-Server log printouts.
    Tlog,
    /// One JSON record per line, as `export` writes.
    Ndjson,
}

/// The format of a file by its extension: `ndjson` for *.ndjson / *.jsonl / *.json, else `tlog`.
pub fn guess_format(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ndjson" | "jsonl" | "json") => Format::Ndjson,
        _ => Format::Tlog,
    }
}

/// The wall clock as the store's time: when an event was recorded.
pub fn now() -> Micros {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

/// What the live sources (followers, feed connections) read, counted for metrics.
#[derive(Default, Debug)]
pub struct SourceCounters {
    ingested: AtomicU64,
    malformed: AtomicU64,
    skipped: AtomicU64,
}

impl SourceCounters {
    /// Counts parser output and returns the envelopes to append and the line each starts at;
    /// malformed input is logged.
    pub fn count(&self, parsed: Vec<Parsed>) -> (Vec<Envelope>, Vec<u64>) {
        let mut envelopes = Vec::with_capacity(parsed.len());
        let mut lines = Vec::with_capacity(parsed.len());
        for p in parsed {
            match p {
                Parsed::Event { line, envelope } => {
                    self.ingested.fetch_add(1, Relaxed);
                    envelopes.push(envelope);
                    lines.push(line);
                }
                Parsed::Skipped { .. } => {
                    self.skipped.fetch_add(1, Relaxed);
                }
                Parsed::Malformed(error) => {
                    tracing::warn!("{error}");
                    self.malformed.fetch_add(1, Relaxed);
                }
            }
        }
        (envelopes, lines)
    }

    pub fn ingested(&self) -> u64 {
        self.ingested.load(Relaxed)
    }

    pub fn malformed(&self) -> u64 {
        self.malformed.load(Relaxed)
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.load(Relaxed)
    }
}
