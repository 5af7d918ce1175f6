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
    /// Run only the `cluster` scenario (3 nats-server nodes of its own; see its module).
    #[arg(long)]
    cluster_only: bool,
    /// Simulated events `cluster` publishes and a new node catches up with.
    #[arg(long, default_value_t = 400_000)]
    cluster_events: u64,
    /// Single-event changes whose A -> B latency `cluster` measures.
    #[arg(long, default_value_t = 500)]
    cluster_changes: usize,
    /// Run only the `wallboard` scenario (headless Chromium on `serve --http`; see its module).
    #[arg(long)]
    wallboard_only: bool,
    /// Agents in the store `wallboard` serves.
    #[arg(long, default_value_t = 5000)]
    wallboard_agents: usize,
    /// Agent state changes a second `wallboard` writes to the feed.
    #[arg(long, default_value_t = 200)]
    wallboard_rate: u32,
    /// Seconds `wallboard` feeds changes for.
    #[arg(long, default_value_t = 60)]
    wallboard_seconds: u64,
    /// The `ivrstate` binary `wallboard` runs (default: as `cluster`, the one beside this
    /// benchmark, built first under `cargo run`).
    #[arg(long)]
    ivrstate: Option<PathBuf>,
    /// Changes `cluster` feeds into node A's feed port, each timed until node B's GLI client
    /// decoded its push.
    #[arg(long, default_value_t = 3000)]
    cluster_gli_changes: usize,
    /// The rate of those changes, per second.
    #[arg(long, default_value_t = 200.0)]
    cluster_gli_rate: f64,
}

fn main() -> anyhow::Result<()> {
    ivrstate_store::limit_malloc_arenas();
    let args = Args::parse();
    if args.cluster_only {
        let tmp = match &args.dir {
            Some(d) => tempfile::Builder::new()
                .prefix("ivrstate-bench")
                .tempdir_in(d),
            None => tempfile::Builder::new().prefix("ivrstate-bench").tempdir(),
        }?;
        let gli = ivrstate_bench::cluster::gli::Plan {
            changes: args.cluster_gli_changes,
            per_second: args.cluster_gli_rate,
        };
        let f = ivrstate_bench::cluster::run(
            tmp.path(),
            args.cluster_events,
            args.cluster_changes,
            gli,
        )?;
        let json = serde_json::json!({
            "scenario": "cluster",
            "events": f.events,
            "ingest_events_per_s": f.ingest_events_per_s,
            "catch_up_events_per_s": f.catch_up_events_per_s,
            "change_p50_ms": f.change_p50_ms,
            "change_p99_ms": f.change_p99_ms,
            "gli_changes": f.gli.changes,
            "gli_changes_per_s": f.gli.per_second,
            "gli_change_p50_ms": f.gli.p50_ms,
            "gli_change_p99_ms": f.gli.p99_ms,
            "gli_change_max_ms": f.gli.max_ms,
            "published_p50_ms": f.gli.published_p50_ms,
            "published_p99_ms": f.gli.published_p99_ms,
            "feed_ack_p50_ms": f.gli.ack_p50_ms,
            "feed_ack_p99_ms": f.gli.ack_p99_ms,
        });
        println!("{json}");
        return Ok(());
    }
    if args.wallboard_only {
        return wallboard(&args);
    }
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

/// `--wallboard-only`: the scenario's figures as a report of one scenario (or why it skipped).
fn wallboard(args: &Args) -> anyhow::Result<()> {
    let bin = match &args.ivrstate {
        Some(bin) => bin.clone(),
        None => ivrstate_bench::cluster::gli::ivrstate_binary()?,
    };
    let start = std::time::Instant::now();
    let figures = ivrstate_bench::wallboard::run(
        &bin,
        args.wallboard_agents,
        args.wallboard_rate,
        args.wallboard_seconds,
        &mut |line| eprintln!("[{:6.1}s] {line}", start.elapsed().as_secs_f64()),
    )?;
    let f = match figures {
        Ok(f) => f,
        Err(why) => {
            println!("wallboard: skipped: {why}");
            return Ok(());
        }
    };
    let report = ivrstate_bench::Report {
        events: f.changes,
        scenarios: vec![ivrstate_bench::Scenario {
            name: "wallboard",
            fields: vec![
                ("agents", f.agents as f64),
                ("changes_per_s", f.changes_per_s),
                ("lag_first_10s_ms_mean", f.lag_first_mean),
                ("lag_first_10s_ms_max", f.lag_first_max),
                ("lag_last_10s_ms_mean", f.lag_last_mean),
                ("lag_last_10s_ms_max", f.lag_last_max),
                ("filter_ms", f.filter_ms),
                ("longest_task_ms", f.longest_task_ms),
                ("long_tasks", f.long_tasks),
                ("browser_cpu_percent", f.browser_cpu_percent),
                ("browser_idle_cpu_percent", f.browser_idle_cpu_percent),
            ],
            note: "lag: from the server having a change to the page applying it".into(),
        }],
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_table())?;
    }
    Ok(())
}
