//! `end_to_end`: the user's whole path, from the simulator's T-Server log text to a store that
//! answers every query, timed as one piece.
//!
//! ivrstate runs exactly what `ivrstate ingest` runs (`ivrstate_engine::bulk`: parse, dedup,
//! durable appends in batches, then derived data brought up to the log and flushed). SQLite is
//! fed by the same parser, in the same process, into an events table with the indexes that
//! answer as-of (`(tserver, dn, time)`) and history (`(agent, time)`), one transaction per 1000
//! events, WAL with synchronous=FULL.

use crate::ingest::{disk_bytes, sqlite_bytes, sqlite_open};
use anyhow::{Context, Result};
use ivrstate_engine::bulk::{self, IngestSummary};
use ivrstate_engine::Engine;
use ivrstate_ingest::parse::{Parsed, TlogReader};
use ivrstate_model::{Envelope, Event, Micros, TLibKind};
use ivrstate_simulate::{simulate, SimConfig};
use ivrstate_store::codec;
use ivrstate_store::StoreOptions;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Agents in the simulated site (the size the goals are stated for).
pub const AGENTS: u32 = 5000;
const SQLITE_BATCH: usize = 1000;

/// One run of both systems.
pub struct Run {
    pub ivrstate: f64,
    pub sqlite: f64,
    pub events: u64,
    pub bytes_per_event: f64,
    pub sqlite_bytes_per_event: f64,
    /// Peak resident memory of the process during ivrstate's ingest.
    pub peak_rss_mb: f64,
    /// What `serve` (any command) pays on start once the ingest is done: `Engine::open` of the
    /// complete store, in ms.
    pub reopen_ms: f64,
    /// `serve` catching up on start from every stored event (derived data dropped, as after
    /// `rebuild`'s reset or a store migrated to a new derived layout), in seconds.
    pub catch_up_all_s: f64,
}

/// Writes the simulated log the scenario reads (5000 agents).
pub fn simulate_log(dir: &Path, events: u64) -> Result<PathBuf> {
    let path = dir.join("end_to_end.log");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    simulate(
        SimConfig {
            agents: AGENTS,
            events,
            ..SimConfig::default()
        },
        &mut w,
    )?;
    w.flush()?;
    Ok(path)
}

fn reader(log: &Path) -> Result<TlogReader<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(log).with_context(|| format!("opening {log:?}"))?;
    Ok(TlogReader::new(
        BufReader::with_capacity(1 << 16, file),
        "end_to_end.log",
        None,
        Micros(0),
    ))
}

/// Both systems on `log`, each into a fresh store under `work`.
pub fn run(log: &Path, work: &Path) -> Result<Run> {
    let dir = work.join("end_to_end.ivrstate");
    let db = work.join("end_to_end.sqlite");
    let _ = std::fs::remove_dir_all(&dir);
    crate::remove_sqlite(&db);

    reset_peak_rss();
    let t = Instant::now();
    let mut engine = Engine::open(&dir, StoreOptions::default())?;
    let mut summary = IngestSummary::default();
    bulk::append_parsed(&mut engine, reader(log)?, &mut summary)?;
    bulk::complete(&mut engine)?;
    let ivr_secs = t.elapsed().as_secs_f64();
    drop(engine);
    let peak_rss_mb = crate::peak_rss_mb();
    let events = summary.read;
    let store_bytes = disk_bytes(&dir);

    let t = Instant::now();
    let mut engine = Engine::open(&dir, StoreOptions::default())?;
    let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    engine.rebuild(|_| {})?;
    engine.store().flush()?;
    let catch_up_all_s = t.elapsed().as_secs_f64();
    drop(engine);

    let t = Instant::now();
    let stored = sqlite(log, &db)?;
    let sql_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        stored == events,
        "SQLite stored {stored} events, ivrstate read {events}"
    );

    let n = events.max(1) as f64;
    let run = Run {
        ivrstate: n / ivr_secs,
        sqlite: n / sql_secs,
        events,
        bytes_per_event: store_bytes as f64 / n,
        sqlite_bytes_per_event: sqlite_bytes(&db) as f64 / n,
        peak_rss_mb,
        reopen_ms,
        catch_up_all_s,
    };
    let _ = std::fs::remove_dir_all(&dir);
    crate::remove_sqlite(&db);
    Ok(run)
}

/// The parser's events into SQLite; returns how many were stored.
fn sqlite(log: &Path, path: &Path) -> Result<u64> {
    let mut conn = sqlite_open(path)?;
    // A 64 MB page cache rather than the default 2 MB, so that the indexes' hot pages stay in it.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.execute_batch(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, \
             tserver TEXT, dn TEXT, agent TEXT, body BLOB NOT NULL);
         CREATE INDEX events_as_of ON events (tserver, dn, time);
         CREATE INDEX events_history ON events (agent, time);",
    )?;
    let mut batch: Vec<Envelope> = Vec::with_capacity(SQLITE_BATCH);
    let mut seq = 0i64;
    let mut store = |batch: &mut Vec<Envelope>, seq: &mut i64| -> Result<()> {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, time, tserver, dn, agent, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for env in batch.iter() {
                *seq += 1;
                let (tserver, dn, agent) = columns(env);
                insert.execute(rusqlite::params![
                    *seq,
                    env.time.0,
                    tserver,
                    dn,
                    agent,
                    codec::encode_envelope(env)?
                ])?;
            }
        }
        tx.commit()?;
        batch.clear();
        Ok(())
    };
    for item in reader(log)? {
        if let Parsed::Event { envelope: env, .. } = item {
            batch.push(env);
            if batch.len() == SQLITE_BATCH {
                store(&mut batch, &mut seq)?;
            }
        }
    }
    if !batch.is_empty() {
        store(&mut batch, &mut seq)?;
    }
    conn.close().map_err(|(_, e)| e)?;
    Ok(seq as u64)
}

/// The indexed columns of an event: T-Server, DN, agent id.
fn columns(env: &Envelope) -> (Option<&str>, Option<&str>, Option<&str>) {
    match &env.event {
        Event::TLib(t) => match &t.kind {
            TLibKind::Agent(a) => (
                Some(t.tserver.as_str()),
                Some(a.dn.as_str()),
                a.agent_id.as_ref().map(|id| id.as_str()),
            ),
            TLibKind::AddressInfo(a) => (
                Some(t.tserver.as_str()),
                Some(a.dn.as_str()),
                a.agent_id.as_ref().map(|id| id.as_str()),
            ),
            TLibKind::LinkConnected | TLibKind::LinkDisconnected | TLibKind::SocketClosed => {
                (Some(t.tserver.as_str()), None, None)
            }
        },
        _ => (None, None, None),
    }
}

/// Resets the process's peak resident set (VmHWM) so that it measures what follows (Linux: 5
/// written to clear_refs); where it cannot, the peak stays the process's whole-life peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
