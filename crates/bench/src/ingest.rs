//! `ingest_durable` and `storage`: the same batches, durably, into ivrstate's log, into SQLite
//! and into a raw file.
//!
//! Every system is handed decoded `Envelope`s and must encode them itself (ivrstate inside
//! `append`, the others with the log's own bincode); only the call that stores a batch is timed,
//! not the decoding that prepares it.

use crate::data::Encoded;
use anyhow::{anyhow, Context, Result};
use ivrstate_model::Envelope;
use ivrstate_store::{codec, Store, StoreOptions};
use rusqlite::Connection;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BATCH: usize = 1000;

/// Feeds `events` in batches; `store` is timed, `decode` is not. Returns events per second.
fn feed(events: &Encoded, mut store: impl FnMut(&[Envelope]) -> Result<()>) -> Result<f64> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut spent = Duration::ZERO;
    let mut i = 0;
    while i < events.len() {
        let end = (i + BATCH).min(events.len());
        events.decode(i..end, &mut batch)?;
        let t = Instant::now();
        store(&batch)?;
        spent += t.elapsed();
        i = end;
    }
    Ok(events.len() as f64 / spent.as_secs_f64())
}

/// Concurrent writers for ivrstate's group commit.
pub const WRITERS: usize = 4;

/// ivrstate's log with its default (durable) options and group commit: [`WRITERS`] threads,
/// each taking the next batch of [`BATCH`], writing it in its turn (so the log holds the events
/// in the same order as the other systems) and waiting until it is durable before taking
/// another. A flush covers every batch written while the previous flush ran. Timed from the
/// first batch to the last acknowledgement, decoding included (the writers decode their own
/// batches, in parallel with the flushes: a cost the single-writer baselines do not pay).
pub fn ivrstate(events: &Encoded, dir: &Path) -> Result<f64> {
    let store = Store::open(dir, StoreOptions::default())?;
    let log = store.log();
    let batches = events.len().div_ceil(BATCH);
    let next = AtomicUsize::new(0);
    // The batch whose turn it is to be written.
    let turn = (Mutex::new(0usize), Condvar::new());
    let writer = || -> Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= batches {
                return Ok(());
            }
            let start = b * BATCH;
            // An error is returned only after this batch's turn has passed, or the others wait.
            let decoded = events.decode(start..(start + BATCH).min(events.len()), &mut batch);
            let pending = {
                let mut current = turn.0.lock().map_err(|_| anyhow!("a writer panicked"))?;
                while *current != b {
                    current = turn
                        .1
                        .wait(current)
                        .map_err(|_| anyhow!("a writer panicked"))?;
                }
                let pending = decoded.and_then(|()| Ok(log.begin_append(&batch)?));
                *current += 1;
                turn.1.notify_all();
                pending?
            };
            pending.wait_durable()?;
        }
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS).map(|_| s.spawn(writer)).collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("a writer panicked"))?)
    })?;
    let rate = events.len() as f64 / t.elapsed().as_secs_f64();
    store.flush()?;
    Ok(rate)
}

pub fn sqlite_open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {path:?}"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// SQLite in WAL mode with synchronous=FULL, one transaction per batch, one row per event.
pub fn sqlite(events: &Encoded, path: &Path) -> Result<f64> {
    let mut conn = sqlite_open(path)?;
    conn.execute_batch("CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let mut seq = 0i64;
    let rate = feed(events, |batch| {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO events (seq, body) VALUES (?1, ?2)")?;
            for env in batch {
                seq += 1;
                insert.execute(rusqlite::params![seq, codec::encode_envelope(env)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    })?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(rate)
}

/// The disk's limit, with the same writers and grouping as ivrstate: [`WRITERS`] threads take
/// batches in turn, each appends its batch's bincode (length-prefixed) to a shared buffer, and
/// one `write` + one `fdatasync` covers every batch buffered while the previous one ran (a
/// writer returns once a sync covering its batch has finished). Timed as [`ivrstate`] is.
pub fn raw_file(events: &Encoded, path: &Path) -> Result<f64> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let batches = events.len().div_ceil(BATCH);
    let next = AtomicUsize::new(0);
    let turn = (Mutex::new(0usize), Condvar::new());
    // (bytes waiting, batches buffered, batches durable, a sync is running)
    let group = (
        Mutex::new((Vec::<u8>::new(), 0usize, 0usize, false)),
        Condvar::new(),
    );
    let poisoned = || anyhow!("a writer panicked");
    let writer = || -> Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut bytes = Vec::with_capacity(BATCH * 128);
        let mut file = &file;
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= batches {
                return Ok(());
            }
            let start = b * BATCH;
            let encoded = events
                .decode(start..(start + BATCH).min(events.len()), &mut batch)
                .and_then(|()| {
                    bytes.clear();
                    for env in &batch {
                        let e = codec::encode_envelope(env)?;
                        bytes.extend_from_slice(&(e.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(&e);
                    }
                    Ok(())
                });
            let ticket = {
                let mut current = turn.0.lock().map_err(|_| poisoned())?;
                while *current != b {
                    current = turn.1.wait(current).map_err(|_| poisoned())?;
                }
                let mut g = group.0.lock().map_err(|_| poisoned())?;
                if encoded.is_ok() {
                    g.0.extend_from_slice(&bytes);
                    g.1 += 1;
                }
                *current += 1;
                turn.1.notify_all();
                g.1
            };
            encoded?;
            let mut g = group.0.lock().map_err(|_| poisoned())?;
            while g.2 < ticket {
                if g.3 {
                    g = group.1.wait(g).map_err(|_| poisoned())?;
                    continue;
                }
                let (pending, upto) = (std::mem::take(&mut g.0), g.1);
                g.3 = true;
                drop(g);
                let synced = file.write_all(&pending).and_then(|()| file.sync_data());
                g = group.0.lock().map_err(|_| poisoned())?;
                g.3 = false;
                group.1.notify_all();
                synced?;
                g.2 = upto;
            }
        }
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS).map(|_| s.spawn(writer)).collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("a writer panicked"))?)
    })?;
    Ok(events.len() as f64 / t.elapsed().as_secs_f64())
}

/// Bytes of every file under `path` (a file or a directory).
pub fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| disk_bytes(&e.path()))
        .sum()
}

/// SQLite's database and whatever WAL or shared-memory file it left.
pub fn sqlite_bytes(db: &Path) -> u64 {
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        disk_bytes(Path::new(&p))
    };
    disk_bytes(db) + side("-wal") + side("-shm")
}
