//! Where each record came from, stored compactly beside the log.
//!
//! The `provenance` tree (created by migration `m0004_provenance`) holds a table of sources,
//! `S` + id (u32 BE) -> the source in words ("file /var/log/ts.log", "feed 10.0.0.5:51234 #3
//! (token recorder)", ...), and runs, `R` + first seq (u64 BE) -> source id (u32 BE): that record
//! and every one after it up to the next run came from that source. An append writes a run only
//! where the source changes, so a file or a feed connection appending batch after batch costs
//! nothing per record; interleaved sources cost one 13-byte entry per switch. Source 0 is
//! "unknown, from before provenance": the records of a store migrated from before it was kept.
//!
//! Written under the log's writer lock, sources and runs before the blocks they describe: after a
//! crash a run can only name records that were never stored (removed on open), never leave a
//! stored record without its source.

use crate::error::StoreError;
use ivrstate_migrations::UNKNOWN_SOURCE;
use ivrstate_model::Seq;
use std::collections::HashMap;

const SOURCE_PREFIX: u8 = b'S';
const RUN_PREFIX: u8 = b'R';

/// What records appended without saying where they came from are attributed to.
pub const UNSPECIFIED_SOURCE: &str = "unspecified";

fn source_key(id: u32) -> [u8; 5] {
    let mut key = [SOURCE_PREFIX; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn run_key(seq: Seq) -> [u8; 9] {
    let mut key = [RUN_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn damaged(what: String) -> StoreError {
    StoreError::Damaged(format!("provenance: {what}"))
}

/// The writer's side: source ids by text, and the source of the last stored record.
#[derive(Debug)]
pub(crate) struct SourceTable {
    tree: sled::Tree,
    ids: HashMap<String, u32>,
    next: u32,
    /// The source of the last stored record, if it has one.
    last_run: Option<u32>,
}

impl SourceTable {
    /// Loads the table; drops runs that name records after `last` (left by a crash).
    pub(crate) fn open(tree: sled::Tree, last: Seq) -> Result<SourceTable, StoreError> {
        let mut ids = HashMap::new();
        let mut next = 0;
        for entry in tree.scan_prefix([SOURCE_PREFIX]) {
            let (key, value) = entry?;
            let id = key
                .get(1..)
                .and_then(be_u32)
                .ok_or_else(|| damaged(format!("malformed source key {:02x?}", key.as_ref())))?;
            ids.insert(String::from_utf8_lossy(&value).into_owned(), id);
            next = next.max(id.saturating_add(1));
        }
        let beyond: Vec<sled::IVec> = tree
            .range(run_key(last.saturating_add(1))..=run_key(Seq::MAX))
            .keys()
            .collect::<Result<_, _>>()?;
        for key in beyond {
            tree.remove(key)?;
        }
        let last_run = match tree.scan_prefix([RUN_PREFIX]).next_back() {
            Some(entry) => {
                Some(be_u32(&entry?.1).ok_or_else(|| damaged("malformed run value".to_owned()))?)
            }
            None => None,
        };
        Ok(SourceTable {
            tree,
            ids,
            next,
            last_run,
        })
    }

    /// The id of `source`, entered into the table if it is new.
    pub(crate) fn id(&mut self, source: &str) -> Result<u32, StoreError> {
        if let Some(&id) = self.ids.get(source) {
            return Ok(id);
        }
        let id = self.next;
        self.tree.insert(source_key(id), source.as_bytes())?;
        self.next += 1;
        self.ids.insert(source.to_owned(), id);
        Ok(id)
    }

    /// Writes the runs of an append: `(first seq, source id)` in seq order, the first of which
    /// follows the last stored record. A run that continues the source before it is not written.
    pub(crate) fn write_runs(&mut self, runs: &[(Seq, u32)]) -> Result<(), StoreError> {
        let mut last = self.last_run;
        for &(seq, id) in runs {
            if last != Some(id) {
                self.tree.insert(run_key(seq), &id.to_be_bytes())?;
                last = Some(id);
            }
        }
        Ok(())
    }

    /// The append that wrote `runs` is stored.
    pub(crate) fn stored(&mut self, runs: &[(Seq, u32)]) {
        if let Some(&(_, id)) = runs.last() {
            self.last_run = Some(id);
        }
    }
}

/// Where the records came from, read back: every source and run, in memory (a run per source
/// switch, so small next to the log).
#[derive(Debug, Default)]
pub struct Provenance {
    sources: HashMap<u32, String>,
    /// (first seq, source id), ascending.
    runs: Vec<(Seq, u32)>,
}

impl Provenance {
    pub(crate) fn load(tree: &sled::Tree) -> Result<Provenance, StoreError> {
        let mut sources = HashMap::new();
        for entry in tree.scan_prefix([SOURCE_PREFIX]) {
            let (key, value) = entry?;
            if let Some(id) = key.get(1..).and_then(be_u32) {
                sources.insert(id, String::from_utf8_lossy(&value).into_owned());
            }
        }
        let mut runs = Vec::new();
        for entry in tree.scan_prefix([RUN_PREFIX]) {
            let (key, value) = entry?;
            if let (Some(seq), Some(id)) = (key.get(1..).and_then(be_u64), be_u32(&value)) {
                runs.push((seq, id));
            }
        }
        Ok(Provenance { sources, runs })
    }

    /// The source of record `seq`: the run at or before it; records before any run are from
    /// before provenance.
    pub fn source(&self, seq: Seq) -> &str {
        let at = self.runs.partition_point(|&(first, _)| first <= seq);
        match at.checked_sub(1).and_then(|i| self.runs.get(i)) {
            Some((_, id)) => self
                .sources
                .get(id)
                .map_or("unknown source", String::as_str),
            None => UNKNOWN_SOURCE,
        }
    }

    /// How many runs are stored (for the size figures).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}
