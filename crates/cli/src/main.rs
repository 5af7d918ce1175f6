//! `ivrstate`: the command line. A thin layer: flags, output formats and progress bars over the
//! engine (store + fold), the parsers and the publisher.

mod cluster;
mod ingest;
mod output;
mod progress;
mod query;
mod replay;
mod serve;
mod svg;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ivrstate_engine::{Engine, EngineError};
use ivrstate_model::{Micros, Seq};
use ivrstate_store::{Durability, StoreError, StoreOptions};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Examples:
  ivrstate simulate --agents 200 --events 20000 > ts.log
  ivrstate ingest --tserver TS_SIP ts.log
  ivrstate config apply examples/ivr.toml
  ivrstate status --at 2015-08-17T10:42:00Z
  ivrstate history --agent 1001 --from 2015-08-17 --to 2015-08-18
  ivrstate audit --from 2015-08-17 --to 2015-08-18 --csv
  ivrstate serve --listen 127.0.0.1:7050 --config examples/ivr.toml --follow ts.log

Exit status: 0 success, 1 error (one line on stderr saying what and where), 2 usage error.";

#[derive(Parser)]
#[command(
    name = "ivrstate",
    version,
    about = "An event-sourced state store for Genesys IVR Server monitoring",
    long_about = "Records T-Library agent and link events from T-Server logs or a live feed into a durable, \
                  checksummed, deduplicated log; folds them into the server, port and agent state that the IVR \
                  Server reports; serves it to IVR clients over GLI; and answers audit questions about any past moment.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The store directory (created on first use).
    #[arg(
        long,
        global = true,
        env = "IVRSTATE_DB",
        default_value = "./ivrstate-data",
        value_name = "DIR"
    )]
    db: PathBuf,
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse T-Server logs or NDJSON and append their events to the log.
    ///
    /// Example: ivrstate ingest --tserver TS_SIP examples/ts_sip.log
    Ingest(ingest::IngestArgs),
    /// Record or show the configuration (T-Servers, IVRs, ports).
    ///
    /// Example: ivrstate config apply --effective 2015-08-17T00:00:00Z examples/ivr.toml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve GLI clients (IVRs) live: login, MonitorInfo pushes, AgentQuery.
    ///
    /// Example: ivrstate serve --listen 127.0.0.1:7050 --config examples/ivr.toml --follow ts.log
    Serve(Box<serve::ServeArgs>),
    /// Current or past state of servers, ports and agents.
    ///
    /// Example: ivrstate status --at 2015-08-17T10:42:00Z --json
    Status(query::StatusArgs),
    /// Agent-state intervals of one agent, DN or port.
    ///
    /// Example: ivrstate history --agent 1001 --from 2015-08-17T08:00:00Z --csv
    History(query::HistoryArgs),
    /// Per agent: time in each state, logins, NotReady time by reason and work mode.
    ///
    /// Example: ivrstate audit --from 2015-08-17 --to 2015-08-18
    Audit(query::AuditArgs),
    /// Re-emit what IVR clients were sent in a past window.
    ///
    /// Example: ivrstate replay --from 2015-08-17T08:00:00Z --to 2015-08-17T09:00:00Z --xml
    Replay(replay::ReplayArgs),
    /// Check every record's checksum, seq contiguity and that derived data equals a rebuild.
    ///
    /// Example: ivrstate verify
    Verify(VerifyArgs),
    /// Drop and recompute all derived data (history index, snapshots) from the log.
    ///
    /// Example: ivrstate rebuild
    Rebuild,
    /// Write the log as NDJSON (re-ingestable with `ingest --format ndjson`).
    ///
    /// Example: ivrstate export --from 2015-08-17 > backup.ndjson
    Export(ExportArgs),
    /// Write a realistic, deterministic T-Server log to stdout (for demos, load and tests).
    ///
    /// Example: ivrstate simulate --agents 300 --events 100000 --seed 7 > ts.log
    Simulate(SimulateArgs),
    /// Print shell completions.
    ///
    /// Example: ivrstate completions bash > /etc/bash_completion.d/ivrstate
    Completions {
        /// The shell to write completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Record the difference between FILE and the stored configuration as events.
    ///
    /// Example: ivrstate config apply examples/ivr.toml
    Apply {
        /// The TOML file (see examples/ivr.toml).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Record the changes as in force from TIME instead of now (for importing a past
        /// setup beside past T-Server logs, so that `status --at` and `replay` see its ports).
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        effective: Option<Micros>,
        #[command(flatten)]
        cluster: cluster::ClusterArgs,
    },
    /// Show the stored configuration.
    ///
    /// Example: ivrstate config show --json
    Show {
        /// One JSON object on stdout instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct VerifyArgs {
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// Only records whose event time is at or after TIME (RFC 3339 or epoch seconds).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    from: Option<Micros>,
    /// Only records whose event time is at or before TIME.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    to: Option<Micros>,
}

#[derive(Args)]
struct SimulateArgs {
    /// Number of agents (DNs 7001.., agent ids 1001..).
    #[arg(long, default_value_t = 300)]
    agents: u32,
    /// Number of state-carrying events to write.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The T-Server application name written in the header.
    #[arg(long, default_value = "TS_SIP")]
    tserver: String,
    /// Time of the first event.
    #[arg(long, value_parser = parse_time, default_value = "2015-08-17T08:00:00Z", value_name = "TIME")]
    start: Micros,
}

/// `--durability`: `full` flushes every batch before reporting it stored; `relaxed` leaves
/// flushing to sled's background timer (faster, loses the last half second on a crash).
#[derive(Clone, Copy, ValueEnum, Default)]
pub enum DurabilityArg {
    #[default]
    Full,
    Relaxed,
}

/// `--format` of `ingest` and `serve`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    /// T-Server log printouts.
    Tlog,
    /// One JSON record per line, as `export` writes.
    Ndjson,
}

/// The format of `path`: as given by `--format`, else by its extension.
pub fn format_of(flag: Option<Format>, path: &std::path::Path) -> ivrstate_ingest::Format {
    match flag {
        Some(Format::Tlog) => ivrstate_ingest::Format::Tlog,
        Some(Format::Ndjson) => ivrstate_ingest::Format::Ndjson,
        None => ivrstate_ingest::guess_format(path),
    }
}

pub fn parse_time(s: &str) -> Result<Micros, String> {
    Micros::parse(s).map_err(|e| e.to_string())
}

pub use ivrstate_ingest::now;

/// Opens the store for one command. The engine is leaked on purpose: it lives until the process
/// exits and is never dropped, because dropping sled flushes, and after an I/O error (a full
/// disk) sled's flush waits forever — the command would hang instead of reporting the error.
/// Commands that write flush explicitly before they report success ([`finish`]).
pub fn open_engine(db: &std::path::Path, durability: DurabilityArg) -> Result<&'static mut Engine> {
    leak_engine(db, Engine::open(db, store_options(durability)))
}

/// As [`open_engine`], without reading derived data: for `verify` and `rebuild`, which must
/// work whatever the derived data holds.
fn open_engine_without_derived(db: &std::path::Path) -> Result<&'static mut Engine> {
    leak_engine(
        db,
        Engine::open_without_derived(db, store_options(DurabilityArg::Full)),
    )
}

fn store_options(durability: DurabilityArg) -> StoreOptions {
    StoreOptions {
        durability: match durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Relaxed => Durability::Relaxed,
        },
        ..StoreOptions::default()
    }
}

fn leak_engine(
    db: &std::path::Path,
    opened: Result<Engine, EngineError>,
) -> Result<&'static mut Engine> {
    let engine = opened.map_err(|e| match e {
        // sled holds an exclusive lock on an open store: say who probably has it.
        EngineError::Store(StoreError::Locked { .. }) => anyhow::anyhow!(
            "cannot open store {}: it is in use by another ivrstate process (a running `serve`?); \
             stop it, or ask the running server over GLI",
            db.display()
        ),
        e => anyhow::Error::new(e).context(format!("cannot open store {}", db.display())),
    })?;
    Ok(Box::leak(Box::new(engine)))
}

/// Makes everything a command wrote durable (derived data included) before it reports success.
pub fn finish(engine: &Engine) -> Result<()> {
    engine.store().flush().context("flushing the store")
}

/// A mistake in how the command was called (exit status 2), found after clap parsed the flags:
/// say which flag, what is wrong, and what to write instead.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`, for `return Err(usage(...))`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

fn main() -> ExitCode {
    restore_sigpipe();
    ivrstate_store::limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e),
    };
    init_tracing(cli.verbose, cli.quiet);
    let serves = match &cli.command {
        Command::Serve(_) => true,
        Command::Replay(r) => r.listen.is_some(),
        _ => false,
    };
    if serves {
        ignore_sigpipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: what went wrong and where, outermost context first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Help and version go to stdout as clap writes them; a usage error becomes one line on stderr
/// (clap's message with its lines joined, and where to read more) with exit status 2.
fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!(
        "{}",
        one_line_usage_error(&e.render().to_string(), &subcommand_path())
    );
    ExitCode::from(2)
}

/// `error: ...` from clap's multi-line rendering: the message lines (before the blank line and
/// the usage block) joined into one, then a pointer to the right `--help`.
fn one_line_usage_error(rendered: &str, command: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.trim_end_matches(':');
    let message = message.strip_prefix("error: ").unwrap_or(message);
    format!("error: {message} (see `{command} --help`)")
}

/// `ivrstate` or `ivrstate <subcommand>` as typed, for pointing at the right help.
fn subcommand_path() -> String {
    let mut path = String::from("ivrstate");
    let command = Cli::command();
    let mut current = &command;
    for arg in std::env::args().skip(1) {
        if arg.starts_with('-') {
            continue;
        }
        match current.find_subcommand(&arg) {
            Some(sub) => {
                path.push(' ');
                path.push_str(sub.get_name());
                current = sub;
            }
            // A flag's value (`--db DIR`): look further.
            None => continue,
        }
    }
    path
}

/// Rust ignores SIGPIPE, so writing to a closed pipe (`ivrstate export | head`) would make every
/// `println!` panic. A command-line tool should end quietly instead, as `cat` does.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A server writes to peers that may vanish: a client that resets its connection must cost an
/// error on that connection, not the process. (rustls writes with `writev`, which, unlike
/// `send`, raises SIGPIPE on a reset socket.)
fn ignore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN is valid at any time, from any thread;
    // no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // sled reports damaged files on its own log before returning the error we print; the
    // error line says it all, so sled is quiet unless RUST_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},sled=off")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let db = cli.db;
    match cli.command {
        Command::Ingest(args) => ingest::run(&db, args),
        Command::Config(ConfigCommand::Apply {
            file,
            effective,
            cluster,
        }) => query::config_apply(&db, &file, effective, &cluster),
        Command::Config(ConfigCommand::Show { json }) => query::config_show(&db, json),
        Command::Serve(args) => serve::run(&db, *args),
        Command::Status(args) => query::status(&db, args),
        Command::History(args) => query::history(&db, args),
        Command::Audit(args) => query::audit(&db, args),
        Command::Replay(args) => replay::run(&db, args),
        Command::Verify(args) => verify(&db, args.json),
        Command::Rebuild => rebuild(&db),
        Command::Export(args) => export(&db, args),
        Command::Simulate(args) => simulate(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ivrstate",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(db: &std::path::Path, json: bool) -> Result<ExitCode> {
    let engine = open_engine_without_derived(db)?;
    let last = engine.log().last_seq();
    let bar = progress::bar(last, "verify log");
    let report = engine.log().verify().context("verify")?;
    bar.finish_and_clear();
    let bar = progress::bar(last, "verify derived");
    let derived = engine.verify_derived(|seq| bar.set_position(seq))?;
    bar.finish_and_clear();
    let mut faults: Vec<String> = report.faults.iter().map(ToString::to_string).collect();
    faults.extend(derived);
    if json {
        let out = serde_json::json!({
            "ok": faults.is_empty(),
            "records": report.records,
            "blocks": report.blocks,
            "last_seq": last,
            "faults": faults,
        });
        println!("{out}");
    } else if faults.is_empty() {
        println!("ok: {} records in {} blocks, seqs 1..={last} contiguous, checksums good, derived data matches the log", report.records, report.blocks);
    } else {
        for f in &faults {
            println!("FAULT: {f}");
        }
    }
    if faults.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: verify found {} fault(s) in {}; first: {}",
            faults.len(),
            db.display(),
            faults[0]
        );
        Ok(ExitCode::from(1))
    }
}

fn rebuild(db: &std::path::Path) -> Result<ExitCode> {
    let engine = open_engine_without_derived(db)?;
    let last = engine.log().last_seq();
    let bar = progress::bar(last, "rebuild");
    let started = std::time::Instant::now();
    engine.rebuild(|seq| bar.set_position(seq))?;
    finish(engine)?;
    bar.finish_and_clear();
    eprintln!(
        "rebuilt derived data from {last} records in {:.2?}",
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

fn export(db: &std::path::Path, args: ExportArgs) -> Result<ExitCode> {
    use std::io::Write;
    let engine = open_engine(db, DurabilityArg::Full)?;
    let last = engine.log().last_seq();
    let bar = progress::bar(last, "export");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut written: Seq = 0;
    let provenance = engine.log().provenance()?;
    /// A record as `export` writes it: its fields, then where it came from.
    #[derive(serde::Serialize)]
    struct Sourced<'a> {
        #[serde(flatten)]
        record: &'a ivrstate_model::Record,
        source: std::borrow::Cow<'a, str>,
    }
    for record in engine.log().read(1, last) {
        let record = record?;
        bar.set_position(record.seq);
        let t = record.envelope.time;
        if args.from.is_some_and(|f| t < f) || args.to.is_some_and(|to| t > to) {
            continue;
        }
        let line = Sourced {
            record: &record,
            source: provenance.source(record.seq),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {written} of {last} records");
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: SimulateArgs) -> Result<ExitCode> {
    use std::io::Write;
    let config = ivrstate_simulate::SimConfig {
        agents: args.agents,
        events: args.events,
        seed: args.seed,
        tserver: args.tserver,
        start: args.start,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    ivrstate_simulate::simulate(config, &mut out).context("writing the simulated log")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every flag that takes a time or a zone, as (subcommand path, `--flag`).
    fn time_flags() -> Vec<(Vec<String>, String)> {
        fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, String)>) {
            for arg in cmd.get_arguments() {
                let takes_time = arg
                    .get_value_names()
                    .is_some_and(|n| n.iter().any(|n| n.as_str() == "TIME"))
                    || matches!(arg.get_long(), Some("tz" | "log-tz"));
                if let (true, Some(long)) = (takes_time, arg.get_long()) {
                    out.push((path.to_vec(), format!("--{long}")));
                }
            }
            for sub in cmd.get_subcommands() {
                let mut p = path.to_vec();
                p.push(sub.get_name().to_owned());
                walk(sub, &p, out);
            }
        }
        let mut out = Vec::new();
        walk(&Cli::command(), &[], &mut out);
        out
    }

    #[test]
    fn the_time_flags_are_found() {
        let flags = time_flags();
        for (cmd, flag) in [("status", "--at"), ("status", "--tz"), ("audit", "--from")] {
            assert!(
                flags
                    .iter()
                    .any(|(p, f)| p.first().map(String::as_str) == Some(cmd) && f == flag),
                "{cmd} {flag} not among {flags:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// No string given to a time or zone flag makes the parser panic: it is taken or it is
        /// a usage error.
        #[test]
        fn time_and_zone_flags_never_panic(s in "\\PC{0,40}") {
            for (path, flag) in time_flags() {
                let args = std::iter::once("ivrstate".to_owned())
                    .chain(path)
                    .chain([flag, s.clone()]);
                let _ = Cli::try_parse_from(args);
            }
        }
    }

    /// Every command says what it does with an example, and every flag and argument has help.
    #[test]
    fn every_command_and_flag_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let about = cmd
                .get_long_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            let after = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            if cmd.get_name() != "help" && !about.contains("Example") && !after.contains("Example")
            {
                missing.push(format!("{path}: no example"));
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}: no help", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <--agent <ID>|--dn <DN>>\n\nUsage: ivrstate history\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered, "ivrstate history"),
            "error: the following required arguments were not provided: <--agent <ID>|--dn <DN>> (see `ivrstate history --help`)"
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
