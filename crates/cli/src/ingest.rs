//! `ivrstate ingest`: parse files (or stdin) and append their events in group-committed batches.

use crate::cluster::{self, BulkPublisher, ClusterArgs};
use crate::{format_of, now, open_engine, progress, DurabilityArg, Format};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_engine::bulk::{self, IngestSummary};
use ivrstate_engine::Engine;
use ivrstate_ingest::follow::spawn_follower;
use ivrstate_ingest::parse::{ndjson::NdjsonReader, tlog::TlogReader, Parsed};
use ivrstate_model::TServerName;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(db: &Path, args: IngestArgs) -> Result<ExitCode> {
    if let Some(config) = args.cluster.config()? {
        return publish(config, &args);
    }
    let engine = open_engine(db, args.durability)?;
    let mut summary = IngestSummary::default();
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
    bulk::complete(engine).context("updating derived data")?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, started.elapsed());
    }
    Ok(ExitCode::SUCCESS)
}

/// `ingest --cluster`: the files' events go into the stream (the nodes' stores apply them from
/// there); `appended` counts events newly in the stream, `duplicates` those of batches the
/// stream already held (same bytes, same Msg-Id).
fn publish(config: ivrstate_cluster::ClusterConfig, args: &IngestArgs) -> Result<ExitCode> {
    if args.follow {
        anyhow::bail!(
            "--follow with --cluster: follow the files with `serve --cluster --follow` instead"
        );
    }
    let tserver = args.tserver.as_deref().map(TServerName::from);
    let started = std::time::Instant::now();
    let mut summary = IngestSummary::default();
    cluster::runtime()?.block_on(async {
        let mut publisher = BulkPublisher::connect(config).await?;
        for path in &args.files {
            let format = format_of(args.format, path);
            let (reader, bar) = open_input(path)?;
            let parsed = parse_reader(reader, &path.display().to_string(), format, tserver.clone());
            publisher.add(parsed, &mut summary).await?;
            bar.finish_and_clear();
        }
        publisher.finish(&mut summary).await
    })?;
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
    summary: &mut IngestSummary,
) -> Result<()> {
    let name = path.display().to_string();
    let (reader, bar) = open_input(path)?;
    let parsed = parse_reader(reader, &name, format, tserver);
    bulk::append_parsed(engine, parsed, summary).with_context(|| format!("ingesting {name}"))?;
    bar.finish_and_clear();
    Ok(())
}

/// A file (or stdin for `-`), buffered, with a progress bar over its bytes.
fn open_input(path: &Path) -> Result<(impl BufRead, indicatif::ProgressBar)> {
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
    Ok((reader, bar))
}

/// `--follow`: after the initial read, keep appending what the files grow by until Ctrl-C.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn follow(
    engine: &mut Engine,
    args: &IngestArgs,
    tserver: Option<TServerName>,
    summary: &mut IngestSummary,
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
                    bulk::append_parsed(engine, items.into_iter(), summary)?;
                    engine.catch_up(|_, _| {})?;
                    tracing::info!(read = summary.read, appended = summary.appended, "followed");
                }
            }
        }
        anyhow::Ok(())
    })
}

fn print_summary(s: &IngestSummary, elapsed: std::time::Duration) {
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
