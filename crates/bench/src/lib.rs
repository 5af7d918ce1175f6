//! The benchmark of issue 5: ivrstate side by side with SQLite and the disk's limit, on the same
//! simulated events, in one run. `run` measures every scenario `runs` times and reports the
//! median of each field; the binary prints it as a table or as one JSON object.
//!
//! Order matters: the stores written by the last ingest run are reused by `storage` (measured
//! before anything else is written into them), `rebuild`, `as_of` (which derives the engine's
//! history index into the ivrstate store) and the GLI scenarios (which serve the rebuilt State).

pub mod asof;
pub mod cluster;
pub mod data;
pub mod end_to_end;
pub mod ingest;
pub mod rebuild;
pub mod report;
pub mod server;
pub mod wallboard;

use anyhow::{Context, Result};
use report::median_fields;
pub use report::{Report, Scenario};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Options {
    /// State-carrying printouts the simulator writes.
    pub events: u64,
    /// Repetitions of each scenario (the median is reported).
    pub runs: usize,
    /// GLI clients for agent_query and fanout.
    pub clients: usize,
    /// AgentQuery round trips per run.
    pub queries: usize,
    /// Publishes per fanout run.
    pub publishes: usize,
    /// status_at queries per as_of run.
    pub as_of_queries: usize,
    /// Where the stores go (a temporary directory inside it, removed at the end).
    pub dir: Option<PathBuf>,
    /// Run only the `end_to_end` scenario (for 10 M events, where the rest would take long).
    pub end_to_end_only: bool,
    /// Repetitions of `end_to_end` (SQLite's part alone takes minutes at 1 M events).
    pub end_to_end_runs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            events: 1_000_000,
            runs: 3,
            clients: 1000,
            queries: 2000,
            publishes: 50,
            as_of_queries: 100,
            dir: None,
            end_to_end_only: false,
            end_to_end_runs: 1,
        }
    }
}

/// Runs every scenario; progress goes to `progress` (the binary sends it to stderr).
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let runs = opts.runs.max(1);
    let tmp = match &opts.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("ivrstate-bench")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("ivrstate-bench").tempdir(),
    }
    .context("creating the working directory")?;
    let work = tmp.path();
    let mut scenarios = Vec::new();

    // end_to_end first: its peak memory is then the ingest's, not the other scenarios' data.
    progress(&format!(
        "end_to_end: simulating {} events of {} agents",
        opts.events,
        end_to_end::AGENTS
    ));
    let log = end_to_end::simulate_log(work, opts.events)?;
    let mut e2e_runs = Vec::new();
    let mut e2e_events = 0;
    for r in 0..opts.end_to_end_runs.max(1) {
        let run = end_to_end::run(&log, work)?;
        progress(&format!(
            "end_to_end run {}: ivrstate {:.0}/s, sqlite {:.0}/s, {:.1} bytes/event (SQLite {:.1}), peak {:.0} MB",
            r + 1,
            run.ivrstate,
            run.sqlite,
            run.bytes_per_event,
            run.sqlite_bytes_per_event,
            run.peak_rss_mb
        ));
        e2e_events = run.events;
        e2e_runs.push(vec![
            ("ivrstate", run.ivrstate),
            ("sqlite", run.sqlite),
            ("ivrstate_us_per_event", 1e6 / run.ivrstate),
            ("sqlite_us_per_event", 1e6 / run.sqlite),
            ("bytes_per_event", run.bytes_per_event),
            ("sqlite_bytes_per_event", run.sqlite_bytes_per_event),
            ("peak_rss_mb", run.peak_rss_mb),
            ("reopen_ms", run.reopen_ms),
            ("catch_up_all_s", run.catch_up_all_s),
        ]);
    }
    let _ = std::fs::remove_file(&log);
    scenarios.push(Scenario {
        name: "end_to_end",
        fields: median_fields(&e2e_runs),
        note: format!(
            "events/s from T-Server log text ({} agents, {e2e_events} events) to a store with \
             complete derived data, as `ivrstate ingest` (durable); SQLite: same parser, \
             events table + 2 indexes, WAL, synchronous=FULL, a transaction per 1000; \
             reopen_ms: Engine::open of the complete store (serve's start); catch_up_all_s: \
             deriving everything again from the stored log (serve's start without derived data)",
            end_to_end::AGENTS
        ),
    });
    if opts.end_to_end_only {
        return Ok(Report {
            events: opts.events,
            scenarios,
        });
    }

    progress(&format!("simulating and parsing {} events", opts.events));
    let data = data::generate(work, opts.events)?;
    let n = data.events.len();
    progress(&format!(
        "{n} events to store ({} bytes of bincode; {} exact re-prints left out); log {} MB",
        data.events.bytes(),
        data.duplicates,
        data.tlog_bytes / 1_000_000
    ));

    // tlog_parse: the first parse above is one sample.
    let mut parse = vec![data.first_parse_secs];
    for _ in 1..runs {
        let t = Instant::now();
        let count = data::open_tlog(&data.tlog)?.count();
        std::hint::black_box(count);
        parse.push(t.elapsed().as_secs_f64());
    }
    let mb = data.tlog_bytes as f64 / 1e6;
    // The same log gzip'd (as sites keep old segments): parsed as `ingest` reads it (told by
    // content, decompressed on a thread of its own), and decompressed alone for comparison.
    let gz = data::gzip_copy(&data.tlog)?;
    let (mut gz_parse, mut gunzip) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(data::open_tlog_gz(&gz)?.count());
        gz_parse.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(data::gunzip_only(&gz)?);
        gunzip.push(t.elapsed().as_secs_f64());
    }
    let (plain_s, gz_s, gunzip_s) = (
        report::median(&parse),
        report::median(&gz_parse),
        report::median(&gunzip),
    );
    scenarios.push(Scenario {
        name: "tlog_parse",
        fields: vec![
            ("mb_per_s", mb / plain_s),
            ("gzip_mb_per_s", mb / gz_s),
            ("gunzip_only_mb_per_s", mb / gunzip_s),
            // gzip'd parse time over (plain parse + decompression alone): <= 1 means the
            // decompression costs no more than itself on top.
            ("gzip_cost_ratio", gz_s / (plain_s + gunzip_s)),
        ],
        note: format!(
            "TlogReader over the simulator's {mb:.0} MB log (page cache); gzip: the same log \
             compressed, MB/s of the text"
        ),
    });
    progress(&format!(
        "tlog_parse: {:.0} MB/s, gzip'd {:.0} MB/s (decompression alone {:.0} MB/s)",
        mb / plain_s,
        mb / gz_s,
        mb / gunzip_s
    ));

    // ingest_durable: fresh stores each run; the last run's stores are kept.
    let (ivr_dir, sql_path, raw_path) = (
        work.join("ivrstate"),
        work.join("sqlite.db"),
        work.join("raw.bin"),
    );
    let mut ingest_runs = Vec::new();
    for r in 0..runs {
        remove(&ivr_dir, &sql_path, &raw_path);
        let ivrstate = ingest::ivrstate(&data.events, &ivr_dir)?;
        let sqlite = ingest::sqlite(&data.events, &sql_path)?;
        let raw_file = ingest::raw_file(&data.events, &raw_path)?;
        progress(&format!(
            "ingest_durable run {}: ivrstate {ivrstate:.0}/s, sqlite {sqlite:.0}/s, raw {raw_file:.0}/s",
            r + 1
        ));
        ingest_runs.push(vec![
            ("ivrstate", ivrstate),
            ("sqlite", sqlite),
            ("raw_file", raw_file),
        ]);
    }
    scenarios.push(Scenario {
        name: "ingest_durable",
        fields: median_fields(&ingest_runs),
        note: format!(
            "events/s, batches of {}, each acknowledged once durable; ivrstate and raw file: {} \
             writers, group commit (one write + one fdatasync per group); SQLite: one writer",
            ingest::BATCH,
            ingest::WRITERS
        ),
    });

    // sled writes pages over 1/4 of a segment into `blobs/`, which neither its flush nor the
    // log's fdatasync covers: say how many there are.
    let blobs = std::fs::read_dir(ivr_dir.join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    progress(&format!("ivrstate store: {blobs} sled blob files"));

    // storage: the stores as the last ingest left them (closed).
    let n_f = n.max(1) as f64;
    scenarios.push(Scenario {
        name: "storage",
        fields: vec![
            ("bytes_per_event", ingest::disk_bytes(&ivr_dir) as f64 / n_f),
            (
                "sqlite_bytes_per_event",
                ingest::sqlite_bytes(&sql_path) as f64 / n_f,
            ),
        ],
        note: "all files of the closed store (ivrstate: sled dir, log only; SQLite: db+wal+shm)"
            .into(),
    });

    // rebuild
    let conn = ingest::sqlite_open(&sql_path)?;
    let mut rebuild_runs = Vec::new();
    let mut state = None;
    for r in 0..runs {
        let (ivrstate, s1) = rebuild::ivrstate(&ivr_dir)?;
        let (sqlite, s2) = rebuild::sqlite(&conn)?;
        let (in_memory, s3) = rebuild::in_memory(&data.events)?;
        rebuild::same(&s1, &s2, "ivrstate vs SQLite")?;
        rebuild::same(&s1, &s3, "ivrstate vs in-memory")?;
        progress(&format!(
            "rebuild run {}: ivrstate {ivrstate:.0}/s, sqlite {sqlite:.0}/s, in-memory {in_memory:.0}/s",
            r + 1
        ));
        rebuild_runs.push(vec![
            ("ivrstate", ivrstate),
            ("sqlite", sqlite),
            ("in_memory", in_memory),
        ]);
        state = Some(s1);
    }
    drop(conn);
    scenarios.push(Scenario {
        name: "rebuild",
        fields: median_fields(&rebuild_runs),
        note: "events/s into State (state-only fold)".into(),
    });

    // GLI: the rebuilt state behind the real server.
    let plan = server::Plan {
        clients: opts.clients,
        runs,
        queries: opts.queries,
        publishes: opts.publishes,
    };
    progress(&format!("GLI with {} clients", plan.clients));
    let (aq, fo) = server::run(state.unwrap_or_default(), &data.ports, &plan)?;
    scenarios.push(Scenario {
        name: "agent_query",
        fields: median_fields(&aq),
        note: format!("one at a time, {} per run, loopback TCP", opts.queries),
    });
    scenarios.push(Scenario {
        name: "fanout",
        fields: median_fields(&fo),
        note: format!(
            "Hub::publish to all, {} per run; baseline: the same frame to as many loopback \
             sockets by a plain non-blocking send loop, same readers, same run",
            opts.publishes
        ),
    });

    // as_of: the engine derives its history index on first open (not timed in the figures).
    progress("as_of: opening the engine (derives the history index)");
    let (open_secs, asof_runs) = asof::run(
        &ivr_dir,
        data.first_time,
        data.last_time,
        runs,
        opts.as_of_queries,
    )?;
    scenarios.push(Scenario {
        name: "as_of",
        fields: median_fields(&asof_runs),
        note: format!(
            "Engine::status_at, {} random times per run (first open took {open_secs:.1} s)",
            opts.as_of_queries
        ),
    });

    scenarios.push(Scenario {
        name: "peak_rss_mb",
        fields: vec![("peak_rss_mb", peak_rss_mb())],
        note: "VmHWM of this process at the end".into(),
    });
    Ok(Report {
        events: opts.events,
        scenarios,
    })
}

fn remove(dir: &std::path::Path, sql: &std::path::Path, raw: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(raw);
    remove_sqlite(sql);
}

/// Removes an SQLite database and its WAL and shared-memory files.
pub(crate) fn remove_sqlite(sql: &std::path::Path) {
    let _ = std::fs::remove_file(sql);
    for suffix in ["-wal", "-shm"] {
        let mut p = sql.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The process's peak resident set (VmHWM), in MB; NaN where /proc is not there.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario runs end to end on a tiny input and reports every field as a number.
    #[test]
    fn smoke_every_scenario_reports_its_fields() {
        let opts = Options {
            events: 3000,
            runs: 1,
            clients: 20,
            queries: 20,
            publishes: 3,
            as_of_queries: 5,
            dir: None,
            end_to_end_only: false,
            end_to_end_runs: 1,
        };
        let report = run(&opts, &mut |_| {}).unwrap();
        let expect: [(&str, &[&str]); 9] = [
            (
                "end_to_end",
                &[
                    "ivrstate",
                    "sqlite",
                    "ivrstate_us_per_event",
                    "sqlite_us_per_event",
                    "bytes_per_event",
                    "sqlite_bytes_per_event",
                    "peak_rss_mb",
                    "reopen_ms",
                    "catch_up_all_s",
                ],
            ),
            ("ingest_durable", &["ivrstate", "sqlite", "raw_file"]),
            ("rebuild", &["ivrstate", "sqlite", "in_memory"]),
            ("agent_query", &["p50_us", "p99_us", "clients"]),
            (
                "fanout",
                &[
                    "p50_ms",
                    "p99_ms",
                    "clients",
                    "baseline_p50_ms",
                    "baseline_p99_ms",
                ],
            ),
            ("as_of", &["p50_ms", "p99_ms"]),
            ("storage", &["bytes_per_event", "sqlite_bytes_per_event"]),
            (
                "tlog_parse",
                &[
                    "mb_per_s",
                    "gzip_mb_per_s",
                    "gunzip_only_mb_per_s",
                    "gzip_cost_ratio",
                ],
            ),
            ("peak_rss_mb", &["peak_rss_mb"]),
        ];
        let json = report.to_json();
        assert_eq!(json["events"], 3000);
        let scenarios = json["scenarios"].as_array().unwrap();
        assert_eq!(scenarios.len(), expect.len());
        for (name, fields) in expect {
            let s = scenarios
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no scenario {name}"));
            for f in fields {
                assert!(s[f].is_number(), "{name}.{f} is {:?}", s[f]);
            }
            assert_eq!(s.as_object().unwrap().len(), fields.len() + 1, "{name}");
        }
        assert!(report.to_table().contains("AgentQuery p99"));
    }
}
