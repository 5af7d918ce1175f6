//! `rebuild`: the State folded from every stored event, three ways. All three fold with
//! `Applied::state_only()` (a rebuild publishes nothing) and must end in the same State.

use crate::data::Encoded;
use anyhow::{bail, Result};
use ivrstate_model::Record;
use ivrstate_projection::{Applied, State};
use ivrstate_store::{codec, Store, StoreOptions};
use rusqlite::Connection;
use std::path::Path;
use std::time::Instant;

/// From ivrstate's log (`EventLog::read` of every seq, read ahead on other threads). Returns (events/s, state).
pub fn ivrstate(dir: &Path) -> Result<(f64, State)> {
    let store = Store::open(dir, StoreOptions::default())?;
    let log = store.log();
    let t = Instant::now();
    let mut state = State::new();
    let mut applied = Applied::state_only();
    let mut n = 0u64;
    // The store decodes on other threads while this one folds (`ReadIter::read_ahead`), and
    // hands the records over block by block (`ReadAhead::visit`), as the engine's rebuild does.
    log.read(1, log.last_seq()).read_ahead(4).visit(|record| {
        applied.clear();
        state.apply(record, &mut applied);
        n += 1;
        Ok::<(), ivrstate_store::StoreError>(())
    })?;
    Ok((n as f64 / t.elapsed().as_secs_f64(), state))
}

/// From SQLite: one scan in seq order, decode each BLOB, fold.
pub fn sqlite(conn: &Connection) -> Result<(f64, State)> {
    let t = Instant::now();
    let mut state = State::new();
    let mut applied = Applied::state_only();
    let mut n = 0u64;
    let mut stmt = conn.prepare("SELECT seq, body FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let body = row.get_ref(1)?.as_blob()?;
        let envelope = codec::decode_envelope(body)?;
        applied.clear();
        state.apply(
            &Record {
                seq: seq as u64,
                envelope,
            },
            &mut applied,
        );
        n += 1;
    }
    Ok((n as f64 / t.elapsed().as_secs_f64(), state))
}

/// The same bincode bytes, already in memory: decode and fold only.
pub fn in_memory(events: &Encoded) -> Result<(f64, State)> {
    let t = Instant::now();
    let mut state = State::new();
    let mut applied = Applied::state_only();
    for (i, bytes) in events.iter().enumerate() {
        let envelope = codec::decode_envelope(bytes)?;
        applied.clear();
        state.apply(
            &Record {
                seq: i as u64 + 1,
                envelope,
            },
            &mut applied,
        );
    }
    Ok((events.len() as f64 / t.elapsed().as_secs_f64(), state))
}

pub fn same(a: &State, b: &State, what: &str) -> Result<()> {
    if a != b {
        bail!("{what}: the rebuilt states differ");
    }
    Ok(())
}
