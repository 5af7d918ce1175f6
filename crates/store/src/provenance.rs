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
//!
//! Lines: records from a file (`ingest`, `--follow`) also carry the line their printout starts
//! at, kept as `L` + first seq (u64 BE) -> the lines of that record and the ones right after it,
//! each as the zigzag varint of its difference from the line before (the first from 0), stored
//! deflated when that is shorter (tag byte 1, else 0). A printout is ~10-20 lines, so a varint
//! is one byte and deflate makes it ~0.4 (measured on a simulated log). Records without a line
//! (feed, GLI client, configuration) end such an entry. A record's line is in the entry at or
//! before it, if that entry reaches it. Small appends (a followed file, a few records at a
//! time) extend the last entry, up to [`GATHER_LINES`], rather than each costing a key. A separate key space rather than a new
//! run value: stores written before lines, and binaries from before them, read and append as
//! they did (they ignore `L`); nothing to migrate.

use crate::error::StoreError;
use ivrstate_migrations::UNKNOWN_SOURCE;
use ivrstate_model::Seq;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

const SOURCE_PREFIX: u8 = b'S';
const RUN_PREFIX: u8 = b'R';
const LINES_PREFIX: u8 = b'L';

/// Appends extend the last lines entry while it then holds at most this many lines.
const GATHER_LINES: usize = 1024;
/// Lines a stored entry may hold at most when read back (an append's records: far fewer), so a
/// damaged deflate stream cannot ask for unbounded memory.
const MAX_ENTRY_LINES: u64 = 1 << 24;

/// A lines entry's value: tag 0 + varints, or tag 1 + the varints deflated.
pub(crate) fn encode_entry(lines: &[u64]) -> Vec<u8> {
    use std::io::Write;
    let mut plain = vec![0];
    encode_lines(lines, &mut plain);
    let mut deflate = flate2::write::DeflateEncoder::new(vec![1], flate2::Compression::default());
    let deflated = deflate
        .write_all(plain.get(1..).unwrap_or_default())
        .and_then(|()| deflate.finish());
    match deflated {
        Ok(d) if d.len() < plain.len() => d,
        _ => plain,
    }
}

/// The lines of an entry's value; `None` if damaged.
fn decode_entry(value: &[u8]) -> Option<Vec<u64>> {
    use std::io::Read;
    match value.split_first()? {
        (0, varints) => decode_lines(varints),
        (1, deflated) => {
            let mut varints = Vec::new();
            flate2::read::DeflateDecoder::new(deflated)
                .take(MAX_ENTRY_LINES * 10)
                .read_to_end(&mut varints)
                .ok()?;
            decode_lines(&varints)
        }
        _ => None,
    }
}

/// Where a run of envelopes handed to an append came from: `count` envelopes from `source`,
/// and the line each starts at in it (1-based), or no lines (`lines` empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRun<'a> {
    pub count: usize,
    pub source: &'a str,
    /// Empty, or one line per envelope of the run.
    pub lines: &'a [u64],
}

impl<'a> SourceRun<'a> {
    /// `count` envelopes from `source`, without lines.
    pub fn new(count: usize, source: &'a str) -> Self {
        SourceRun {
            count,
            source,
            lines: &[],
        }
    }

    /// The envelopes of `lines`, one each, from `source`.
    pub fn with_lines(source: &'a str, lines: &'a [u64]) -> Self {
        SourceRun {
            count: lines.len(),
            source,
            lines,
        }
    }
}

/// Appends `lines` to `out` as zigzag varints of their differences (the first from 0).
pub fn encode_lines(lines: &[u64], out: &mut Vec<u8>) {
    let mut previous = 0u64;
    for &line in lines {
        let delta = line.wrapping_sub(previous) as i64;
        let mut z = ((delta << 1) ^ (delta >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
        previous = line;
    }
}

/// The lines [`encode_lines`] wrote; `None` for bytes it cannot have written.
pub fn decode_lines(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut lines = Vec::with_capacity(bytes.len());
    let (mut previous, mut z, mut shift) = (0u64, 0u64, 0u32);
    for &b in bytes {
        if shift > 63 {
            return None;
        }
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 != 0 {
            shift += 7;
            continue;
        }
        let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
        previous = previous.wrapping_add(delta as u64);
        lines.push(previous);
        (z, shift) = (0, 0);
    }
    (shift == 0).then_some(lines)
}

/// What records appended without saying where they came from are attributed to.
pub const UNSPECIFIED_SOURCE: &str = "unspecified";

fn source_key(id: u32) -> [u8; 5] {
    let mut key = [SOURCE_PREFIX; 5];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn run_key(seq: Seq) -> [u8; 9] {
    seq_key(RUN_PREFIX, seq)
}

fn lines_key(seq: Seq) -> [u8; 9] {
    seq_key(LINES_PREFIX, seq)
}

fn seq_key(prefix: u8, seq: Seq) -> [u8; 9] {
    let mut key = [prefix; 9];
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
    /// The last lines entry this table wrote (its first seq and lines), which the next
    /// append's lines extend when they follow on and it is small.
    gathering: Option<(Seq, Vec<u64>)>,
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
        let beyond: Vec<sled::IVec> = tree
            .range(lines_key(last.saturating_add(1))..=lines_key(Seq::MAX))
            .keys()
            .collect::<Result<_, _>>()?;
        for key in beyond {
            tree.remove(key)?;
        }
        // The last entry may reach past the last record (a multi-block append cut by a crash):
        // those seqs will be other records.
        if let Some(entry) = tree.scan_prefix([LINES_PREFIX]).next_back() {
            let (key, value) = entry?;
            if let (Some(first), Some(mut lines)) =
                (key.get(1..).and_then(be_u64), decode_entry(&value))
            {
                let keep = usize::try_from(last.saturating_sub(first).saturating_add(1))
                    .unwrap_or(usize::MAX);
                if lines.len() > keep {
                    lines.truncate(keep);
                    tree.insert(key, encode_entry(&lines))?;
                }
            }
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
            gathering: None,
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

    /// Writes the lines of an append: (first seq, the lines of it and the records after it).
    pub(crate) fn write_lines(&mut self, stretches: &[(Seq, Vec<u64>)]) -> Result<(), StoreError> {
        for (first, lines) in stretches {
            let entry = match self.gathering.take() {
                Some((start, mut gathered))
                    if start + gathered.len() as Seq == *first
                        && gathered.len() + lines.len() <= GATHER_LINES =>
                {
                    gathered.extend_from_slice(lines);
                    (start, gathered)
                }
                _ => (*first, lines.clone()),
            };
            self.tree
                .insert(lines_key(entry.0), encode_entry(&entry.1))?;
            self.gathering = Some(entry);
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

/// The lines entry at or before some records, and the seq where the next entry starts: the
/// line of every record from `first` to before `next` is known from it alone.
#[derive(Debug)]
struct LinesSpan {
    first: Seq,
    lines: Vec<u64>,
    next: Seq,
}

impl LinesSpan {
    fn covers(&self, seq: Seq) -> bool {
        self.first <= seq && seq < self.next
    }

    fn line(&self, seq: Seq) -> Option<u64> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.lines.get(i).copied()
    }
}

/// Where the records came from, read back: every source and run, in memory (a run per source
/// switch, so small next to the log); lines are read from the tree when asked for.
#[derive(Debug)]
pub struct Provenance {
    sources: HashMap<u32, String>,
    /// (first seq, source id), ascending.
    runs: Vec<(Seq, u32)>,
    tree: sled::Tree,
    /// What the last look-up found: `export` asks record after record.
    lines: Mutex<Option<LinesSpan>>,
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
        Ok(Provenance {
            sources,
            runs,
            tree: tree.clone(),
            lines: Mutex::new(None),
        })
    }

    /// The source of record `seq`, with `:LINE` when it came from a line of a file (`file
    /// /var/log/ts.log:1234`).
    pub fn source(&self, seq: Seq) -> Cow<'_, str> {
        let text = self.source_text(seq);
        match self.line(seq) {
            Some(line) => Cow::Owned(format!("{text}:{line}")),
            None => Cow::Borrowed(text),
        }
    }

    /// The line record `seq` starts at in its source, if it has one.
    pub fn line(&self, seq: Seq) -> Option<u64> {
        let mut cached = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(span) = cached.as_ref().filter(|span| span.covers(seq)) {
            return span.line(seq);
        }
        match self.span_of(seq) {
            Ok(span) => cached.insert(span).line(seq),
            Err(e) => {
                tracing::warn!(seq, "reading the line of a record: {e}");
                None
            }
        }
    }

    /// The lines entry at or before `seq` (none: an empty one from 0) and where the next begins.
    fn span_of(&self, seq: Seq) -> Result<LinesSpan, StoreError> {
        let (first, lines) = match self.tree.range(lines_key(0)..=lines_key(seq)).next_back() {
            None => (0, Vec::new()),
            Some(entry) => {
                let (key, value) = entry?;
                let first = key
                    .get(1..)
                    .and_then(be_u64)
                    .ok_or_else(|| damaged(format!("malformed lines key {:02x?}", key.as_ref())))?;
                let lines = decode_entry(&value)
                    .ok_or_else(|| damaged(format!("the lines entry at seq {first} is damaged")))?;
                (first, lines)
            }
        };
        let next = match self
            .tree
            .range(lines_key(seq.saturating_add(1))..=lines_key(Seq::MAX))
            .next()
        {
            None => Seq::MAX,
            Some(entry) => entry?.0.get(1..).and_then(be_u64).unwrap_or(Seq::MAX),
        };
        Ok(LinesSpan { first, lines, next })
    }

    /// The source of record `seq`, without its line: the run at or before it; records before
    /// any run are from before provenance.
    pub fn source_text(&self, seq: Seq) -> &str {
        let at = self.runs.partition_point(|&(first, _)| first <= seq);
        match at.checked_sub(1).and_then(|i| self.runs.get(i)) {
            Some((_, id)) => self
                .sources
                .get(id)
                .map_or("unknown source", String::as_str),
            None => UNKNOWN_SOURCE,
        }
    }

    /// The bytes of the provenance tree's keys and values (for the size figures).
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let mut bytes = 0;
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok(bytes)
    }

    /// How many runs are stored (for the size figures).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}
