//! `ingest_durable` and `storage`: the same batches, durably, into ivrstate's log, into SQLite
//! and into a raw file.
//!
//! Every system is handed decoded `Envelope`s and must encode them itself (ivrstate inside
//! `append`, the others with the log's own bincode); only the call that stores a batch is timed,
//! not the decoding that prepares it.

use crate::data::Encoded;
use anyhow::{Context, Result};
use ivrstate_ingest::{codec, Store, StoreOptions};
use ivrstate_model::Envelope;
use rusqlite::Connection;
use std::io::Write;
use std::path::Path;
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

/// ivrstate's log with its default (durable: one flush per append) options.
pub fn ivrstate(events: &Encoded, dir: &Path) -> Result<f64> {
    let store = Store::open(dir, StoreOptions::default())?;
    let rate = feed(events, |batch| {
        store.log().append(batch)?;
        Ok(())
    })?;
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

/// The disk's limit: the batch's bincode (length-prefixed) in one write, then one fdatasync.
pub fn raw_file(events: &Encoded, path: &Path) -> Result<f64> {
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut buf = Vec::with_capacity(BATCH * 128);
    feed(events, |batch| {
        buf.clear();
        for env in batch {
            let bytes = codec::encode_envelope(env)?;
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&bytes);
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        Ok(())
    })
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
