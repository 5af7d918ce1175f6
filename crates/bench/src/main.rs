//! `cargo run --release -p ivrstate-bench -- --events 1000000 [--json]`: see the crate docs.

use clap::Parser;
use ivrstate_bench::{run, Options};
use std::io::Write;
use std::path::PathBuf;

/// ivrstate side by side with SQLite and the disk's limit, on the same simulated events.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// State-carrying printouts to simulate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Print one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Repetitions of each scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// GLI clients for agent_query and fanout.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Where to put the temporary stores (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only the `end_to_end` scenario (the user's whole ingest path; e.g. at 10 M events).
    #[arg(long)]
    end_to_end_only: bool,
    /// Repetitions of `end_to_end` (its SQLite part alone takes minutes at 1 M events).
    #[arg(long, default_value_t = 1)]
    end_to_end_runs: usize,
}

fn main() -> anyhow::Result<()> {
    ivrstate_store::limit_malloc_arenas();
    let args = Args::parse();
    let opts = Options {
        events: args.events,
        runs: args.runs,
        clients: args.clients,
        dir: args.dir,
        end_to_end_only: args.end_to_end_only,
        end_to_end_runs: args.end_to_end_runs,
        ..Options::default()
    };
    let start = std::time::Instant::now();
    let report = run(&opts, &mut |line| {
        eprintln!(
            "[{:6.1}s, peak {:.0} MB] {line}",
            start.elapsed().as_secs_f64(),
            ivrstate_bench::peak_rss_mb()
        )
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_table())?;
    }
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
