//! `ivrstate ingest`: parse files (or stdin) and append their events in group-committed batches.

use crate::cluster::{self, BulkPublisher, ClusterArgs};
use crate::{format_of, now, open_engine, progress, DurabilityArg, Format};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_engine::bulk::{self, IngestSummary};
use ivrstate_engine::Engine;
use ivrstate_ingest::follow::spawn_follower;
use ivrstate_ingest::parse::{ndjson::NdjsonReader, tlog::TlogReader, Parsed};
use ivrstate_model::{TServerName, Zone};
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
    /// The zone the logs' times are written in (`Europe/Berlin`, `+05:30`, `local`), for logs
    /// whose header does not say (no `Time zone:` line); it also wins over the header. Times
    /// from `AttributeTimeinSecs` are UTC whatever the zone.
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    log_tz: Option<Zone>,
    /// Files to read: T-Server logs or NDJSON, plain or gzip'd (told by content); a directory
    /// stands for every file in it, in name order; `-` for stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub(crate) fn parse_zone(s: &str) -> Result<Zone, String> {
    Zone::parse(s).map_err(|e| e.to_string())
}

pub fn run(db: &Path, args: IngestArgs) -> Result<ExitCode> {
    if let Some(config) = args.cluster.config()? {
        return publish(config, &args);
    }
    let engine = open_engine(db, args.durability)?;
    let mut summary = IngestSummary::default();
    let tserver = args.tserver.as_deref().map(TServerName::from);
    let started = std::time::Instant::now();
    let files = if args.follow {
        args.files.clone()
    } else {
        ivrstate_ingest::input::expand(&args.files)?
    };
    for path in &files {
        // A followed file is read from its start by its follower; reading it here too would
        // count every event twice (once read, once as a duplicate). Stdin is never followed.
        if args.follow && !is_stdin(path) {
            continue;
        }
        let format = format_of(args.format, strip_gz(path).as_path());
        let source = Source {
            path,
            format,
            tserver: tserver.clone(),
            log_tz: args.log_tz.clone(),
        };
        ingest_file(engine, &source, &mut summary)?;
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
    let files = ivrstate_ingest::input::expand(&args.files)?;
    cluster::runtime()?.block_on(async {
        let mut publisher = BulkPublisher::connect(config).await?;
        for path in &files {
            let source = Source {
                path,
                format: format_of(args.format, strip_gz(path).as_path()),
                tserver: tserver.clone(),
                log_tz: args.log_tz.clone(),
            };
            let (parsed, bar) = read_source(&source)?;
            publisher
                .add(parsed, &source_text(path), &mut summary)
                .await?;
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

/// One input of `ingest`.
struct Source<'a> {
    path: &'a Path,
    format: ivrstate_ingest::Format,
    tserver: Option<TServerName>,
    log_tz: Option<Zone>,
}

/// `a.ndjson.gz` is NDJSON: the format is the name's without `.gz`.
fn strip_gz(path: &Path) -> PathBuf {
    match path.extension() {
        Some(ext) if ext == "gz" => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

fn ingest_file(
    engine: &mut Engine,
    source: &Source<'_>,
    summary: &mut IngestSummary,
) -> Result<()> {
    let (parsed, bar) = read_source(source)?;
    bulk::append_parsed_from(engine, parsed, &source_text(source.path), summary)
        .with_context(|| format!("ingesting {}", source.path.display()))?;
    bar.finish_and_clear();
    Ok(())
}

/// Where the records of an input come from, as provenance records it.
fn source_text(path: &Path) -> String {
    if is_stdin(path) {
        "stdin (ivrstate ingest -)".to_owned()
    } else {
        format!("file {}", path.display())
    }
}

/// The events of one input (decompressed, parsed), with a progress bar over its bytes.
fn read_source(
    source: &Source<'_>,
) -> Result<(Box<dyn Iterator<Item = Parsed>>, indicatif::ProgressBar)> {
    let path = source.path;
    let name = path.display().to_string();
    let (raw, len): (Box<dyn Read + Send>, u64) = if is_stdin(path) {
        (Box::new(std::io::stdin()), 0)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    // The bar counts the bytes of the file (compressed ones for a .gz), as its length does.
    let bar = progress::bytes_bar(len, "ingest");
    let counted = Counting {
        inner: raw,
        bar: bar.clone(),
    };
    let (text, _) = ivrstate_ingest::input::open_text(counted, &name)?;
    let reader = BufReader::with_capacity(1 << 16, text);
    let parsed = parse_reader(
        reader,
        &name,
        source.format,
        source.tserver.clone(),
        source.log_tz.clone(),
    );
    Ok((parsed, bar))
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
        // Each follower's batches come tagged with the file they are from.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<Parsed>)>(64);
        for path in args.files.iter().filter(|p| !is_stdin(p)) {
            let (file_tx, mut file_rx) = tokio::sync::mpsc::channel::<Vec<Parsed>>(64);
            spawn_follower(
                path.clone(),
                format_of(args.format, path),
                tserver.clone(),
                args.log_tz.clone(),
                file_tx,
            );
            let from = format!("file {} (followed)", path.display());
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(items) = file_rx.recv().await {
                    if tx.send((from.clone(), items)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                items = rx.recv() => {
                    let Some((from, items)) = items else { break };
                    bulk::append_parsed_from(engine, items.into_iter(), &from, summary)?;
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

/// Reads everything a `BufRead` holds in the given format; `log_tz` is the zone of a T-Server
/// log's wall-clock times (`--log-tz`).
fn parse_reader<'a>(
    reader: impl BufRead + 'a,
    name: &str,
    format: ivrstate_ingest::Format,
    tserver: Option<TServerName>,
    log_tz: Option<Zone>,
) -> Box<dyn Iterator<Item = Parsed> + 'a> {
    match format {
        ivrstate_ingest::Format::Tlog => {
            Box::new(TlogReader::new(reader, name, tserver, now()).with_log_zone(log_tz))
        }
        ivrstate_ingest::Format::Ndjson => Box::new(NdjsonReader::new(reader, name, now())),
    }
}
