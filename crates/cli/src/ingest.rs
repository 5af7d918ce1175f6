//! `ivrstate ingest`: parse files (or stdin) and append their events in group-committed batches.

use crate::{format_of, now, open_engine, progress, DurabilityArg, Format};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_engine::Engine;
use ivrstate_ingest::follow::spawn_follower;
use ivrstate_ingest::parse::{ndjson::NdjsonReader, tlog::TlogReader, ParseError, Parsed};
use ivrstate_ingest::BATCH;
use ivrstate_model::{Envelope, TServerName};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Locations of malformed input kept for the summary.
const MAX_ERRORS: usize = 100;

#[derive(Args)]
pub struct IngestArgs {
    /// Input format; by default `ndjson` for *.ndjson / *.jsonl files, else `tlog`.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The T-Server these logs come from (else the log header's `Application name:` line).
    #[arg(long, value_name = "NAME")]
    tserver: Option<String>,
    /// Keep reading: follow the files as they grow (like `tail -f`), until Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// `relaxed` skips the flush per batch (faster; a crash may lose the last half second).
    #[arg(long, value_enum, default_value = "full")]
    durability: DurabilityArg,
    /// Files to read; `-` for stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// The summary docs/interface.md specifies for `ingest --json`.
#[derive(Default, Serialize)]
pub struct Summary {
    pub read: u64,
    pub appended: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub skipped: u64,
    pub errors: Vec<ErrorLocation>,
}

#[derive(Serialize)]
pub struct ErrorLocation {
    pub file: String,
    pub line: u64,
    pub byte_offset: u64,
    pub reason: String,
}

impl Summary {
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

pub fn run(db: &Path, args: IngestArgs) -> Result<ExitCode> {
    let engine = open_engine(db, args.durability)?;
    let mut summary = Summary::default();
    let tserver = args.tserver.as_deref().map(TServerName::from);
    let started = std::time::Instant::now();
    for path in &args.files {
        // A followed file is read from its start by its follower; reading it here too would
        // count every event twice (once read, once as a duplicate). Stdin is never followed.
        if args.follow && !is_stdin(path) {
            continue;
        }
        let format = format_of(args.format, path);
        ingest_file(engine, path, format, tserver.clone(), &mut summary)?;
    }
    if args.follow {
        follow(engine, &args, tserver, &mut summary)?;
    }
    engine
        .catch_up(|_, _| {})
        .context("updating derived data")?;
    crate::finish(engine)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, started.elapsed());
    }
    Ok(ExitCode::SUCCESS)
}

/// A reader that advances a progress bar by the bytes it hands out.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn ingest_file(
    engine: &mut Engine,
    path: &Path,
    format: ivrstate_ingest::Format,
    tserver: Option<TServerName>,
    summary: &mut Summary,
) -> Result<()> {
    let name = path.display().to_string();
    let (reader, len): (Box<dyn Read>, u64) = if is_stdin(path) {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    let bar = progress::bytes_bar(len, "ingest");
    let reader = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: reader,
            bar: bar.clone(),
        },
    );
    let parsed = parse_reader(reader, &name, format, tserver);
    append_all(engine, parsed, summary).with_context(|| format!("ingesting {name}"))?;
    bar.finish_and_clear();
    Ok(())
}

/// Appends parsed events in batches of [`BATCH`]; each batch is durable before the next is read.
pub fn append_all(
    engine: &mut Engine,
    parsed: impl Iterator<Item = Parsed>,
    summary: &mut Summary,
) -> Result<()> {
    let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH);
    for item in parsed {
        if let Some(envelope) = summary.count(item) {
            batch.push(envelope);
            if batch.len() == BATCH {
                append(engine, &mut batch, summary)?;
            }
        }
    }
    append(engine, &mut batch, summary)
}

fn append(engine: &mut Engine, batch: &mut Vec<Envelope>, summary: &mut Summary) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let report = engine.log().append(batch)?;
    summary.appended += report.appended;
    summary.duplicates += report.duplicates;
    batch.clear();
    Ok(())
}

/// `--follow`: after the initial read, keep appending what the files grow by until Ctrl-C.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn follow(
    engine: &mut Engine,
    args: &IngestArgs,
    tserver: Option<TServerName>,
    summary: &mut Summary,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Parsed>>(64);
        for path in args.files.iter().filter(|p| !is_stdin(p)) {
            spawn_follower(
                path.clone(),
                format_of(args.format, path),
                tserver.clone(),
                tx.clone(),
            );
        }
        drop(tx);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                items = rx.recv() => {
                    let Some(items) = items else { break };
                    append_all(engine, items.into_iter(), summary)?;
                    engine.catch_up(|_, _| {})?;
                    tracing::info!(read = summary.read, appended = summary.appended, "followed");
                }
            }
        }
        anyhow::Ok(())
    })
}

fn print_summary(s: &Summary, elapsed: std::time::Duration) {
    println!(
        "read {} events: {} appended, {} duplicates skipped, {} malformed, {} skipped (no state) in {:.2?}",
        s.read, s.appended, s.duplicates, s.malformed, s.skipped, elapsed
    );
    for e in s.errors.iter().take(5) {
        println!(
            "  malformed: {}:{}: {} (byte {})",
            e.file, e.line, e.reason, e.byte_offset
        );
    }
    if s.errors.len() > 5 {
        println!("  ... and {} more (see --json)", s.malformed - 5);
    }
}

/// Reads everything a `BufRead` holds in the given format (used by the feed and tests).
pub fn parse_reader<'a>(
    reader: impl BufRead + 'a,
    name: &str,
    format: ivrstate_ingest::Format,
    tserver: Option<TServerName>,
) -> Box<dyn Iterator<Item = Parsed> + 'a> {
    match format {
        ivrstate_ingest::Format::Tlog => Box::new(TlogReader::new(reader, name, tserver, now())),
        ivrstate_ingest::Format::Ndjson => Box::new(NdjsonReader::new(reader, name, now())),
    }
}
