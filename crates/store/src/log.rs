//! The append-only event log.
//!
//! Invariants kept here (docs/design.md 2-4):
//! - seqs start at 1 and are contiguous: one writer (a mutex) assigns them, and a block's key is
//!   its first seq, so the next block's key is always the previous key + its record count;
//! - acknowledged means durable: an append is its blocks' bytes written to a segment and synced
//!   (see `log/segments.rs`), then their pointers and their dedup entries inserted into sled in
//!   that order, followed by a flush that covers them; the report, `last_seq` and
//!   the tail move only after that flush returned. Reads never go past the tail, so nothing
//!   unflushed is visible;
//! - why not one atomic sled batch for a block and its entries: sled's `apply_batch` takes a
//!   lock that its flush holds for the whole disk write, so no append could be written while
//!   another was being flushed, and group commit grouped nothing. Separate inserts need no such
//!   lock; sled recovers a prefix of its log, so the only state a crash can leave is a last
//!   block or two without their entries, which `open` completes ([`complete_index`]);
//! - group commit: writing (under the writer lock) and flushing (under the sync lock) are two
//!   steps. While one append waits for the disk, others write their batches into sled and then
//!   wait for the sync lock; the next flush covers all of them, so N concurrent appenders pay
//!   for about one flush, not N. A lone appender writes and flushes as before;
//! - idempotent: see [`crate::dedup`]. An event is reported duplicate only after comparing it
//!   with a stored copy; an error while looking fails the append instead of guessing.
//!
//! Layout: one block of up to [`MAX_BLOCK_RECORDS`] records (see [`crate::codec`]) per key
//! `b'L' + first seq (u64 BE)`, whose value points to the block's bytes in a segment file (or,
//! in a store from before format 5, is the block), and the dedup entries beside them in the
//! same tree.

use crate::codec::{self, CodecError, MAX_BLOCK_RECORDS};
use crate::dedup::{self, BlockCache, DecodedBlock, DedupIndex, SourceRange, DEDUP_PREFIX};
use crate::error::StoreError;
use crate::provenance::{Provenance, SourceRun, SourceTable, UNSPECIFIED_SOURCE};
use ivrstate_model::{Envelope, Record, Seq};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

mod disk_sync;
mod segments;
pub(crate) use disk_sync::DiskSync;
pub(crate) use segments::SegmentReader;
use segments::SegmentWriter;

const BLOCK_PREFIX: u8 = b'L';
const CACHED_BLOCKS: usize = 8;

/// Whether an append waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// An append returns after a flush that covers it (the default; concurrent appends may
    /// share one: group commit). sled's own flush is not enough on Linux: sled 0.34 writes its
    /// log with `pwrite` + `sync_file_range`, which neither flushes the drive's cache nor
    /// commits a grown file size (its `fsync` runs only on a 500 ms timer); and it writes a
    /// page larger than a quarter of its segment (128 KiB: a large derived value) to a file of
    /// its own under `blobs/` with no fsync at all. (The blocks' own bytes are in segments,
    /// synced before sled names them.) So after sled's flush the log calls `fdatasync` on sled's data file
    /// (fsync acts on the file, whichever descriptor wrote it), on every blob file not synced
    /// before (a blob file is complete once sled's flush returned and never changes after, so
    /// each is synced once; which ones were is remembered), on `blobs/` and the store
    /// directory when they gained entries, and once on the store directory's parent.
    /// Acknowledged means on stable storage, whatever size sled's pages grow to.
    #[default]
    Full,
    /// No flush per append: sled's own timer (every 500 ms) and [`crate::Store::flush`] write
    /// the pointers (the segment bytes are still synced before sled names them). A crash may
    /// lose the last appends, never corrupt the log.
    Relaxed,
}

/// What happened to one appended envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored at this seq.
    New(Seq),
    /// Already in the log (or earlier in the same call) at this seq; not stored again.
    Duplicate(Seq),
}

/// The result of one [`EventLog::append`]; returned only once the records are durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendReport {
    pub appended: u64,
    pub duplicates: u64,
    /// The seq of the first record stored by this call, if any.
    pub first_seq: Option<Seq>,
    /// The log's last seq after this call.
    pub last_seq: Seq,
    /// One per input envelope, in input order.
    pub outcomes: Vec<AppendOutcome>,
}

/// An append written into sled but not yet known durable: see [`EventLog::begin_append`].
#[must_use = "the records are not durable until wait_durable returns"]
pub struct PendingAppend<'a> {
    log: &'a EventLog,
    report: AppendReport,
}

impl PendingAppend<'_> {
    /// Returns the report once the records (and any stored copy a duplicate names) are durable.
    pub fn wait_durable(self) -> Result<AppendReport, StoreError> {
        if self.log.inner.durability == Durability::Full {
            // Through `last_seq`, not only this call's records: a duplicate may name a seq that
            // a concurrent append wrote and has not flushed yet.
            self.log.sync_through(self.report.last_seq)?;
        }
        Ok(self.report)
    }
}

/// One fault found by [`EventLog::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFault {
    /// The block (its first seq) or record the fault is about, when it has one.
    pub seq: Option<Seq>,
    pub what: String,
}

impl std::fmt::Display for VerifyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// The result of [`EventLog::verify`]: the counts, and every fault found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub blocks: u64,
    /// Bytes of stored block values.
    pub bytes: u64,
    pub index_entries: u64,
    pub last_seq: Seq,
    pub faults: Vec<VerifyFault>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.faults.is_empty()
    }
}

/// The event log. Cheap to clone: every clone is the same log.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Tree,
    /// The bytes of the blocks (see `segments.rs`): sled holds pointers to them.
    segments: Arc<SegmentReader>,
    /// Where each record came from (see `provenance.rs`).
    provenance: sled::Tree,
    durability: Durability,
    /// What sled's flush leaves unsynced (its data file, blob files, directories).
    disk: Option<DiskSync>,
    writer: Mutex<Writer>,
    /// The last seq written into sled (durable or not). Set after each write, under the writer
    /// lock, so a flush that starts after reading it covers every seq up to it.
    written: AtomicU64,
    /// Taken by the one append that flushes at a time (see [`EventLog::sync_through`]).
    syncer: Mutex<Synced>,
    /// The last durable seq; receivers are woken when it moves.
    tail: watch::Sender<Seq>,
}

/// What the flushes so far made durable.
struct Synced {
    /// Every seq up to this one is durable.
    through: Seq,
    /// A flush failed: nothing written after `through` can be called durable any more (a
    /// retried fsync may succeed without the lost pages being on disk).
    failed: Option<String>,
}

struct Writer {
    last: Seq,
    sources: SourceTable,
    /// Set when the log cannot be appended to safely (damaged tail, failed flush).
    damaged: Option<String>,
    dedup: DedupIndex,
    cache: BlockCache,
    candidates: Vec<Seq>,
    segments: SegmentWriter,
}

/// Adds the index entries the last blocks lack. An append writes its blocks, then their index
/// entries, as separate sled inserts, and sled recovers a prefix of its log: a crash between the
/// two leaves the newest blocks without entries (never an entry without its block). Walks back
/// from the last block until one whose entries are all there. The entries added are flushed
/// with the next append (or found missing again, and added again, at the next open).
fn complete_index(
    tree: &sled::Tree,
    segments: &SegmentReader,
    index: &mut DedupIndex,
) -> Result<(), StoreError> {
    for entry in tree.scan_prefix([BLOCK_PREFIX]).rev() {
        let (key, value) = entry?;
        let Some(first) = parse_block_key(&key) else {
            return Ok(());
        };
        // A damaged block is for verify to report, not for this to guess around.
        let Ok(envs) = read_block(segments, first, value) else {
            return Ok(());
        };
        let mut complete = true;
        for (ts, min, max) in dedup::block_ranges(envs.iter()) {
            let key = dedup::entry_key(ts.as_str(), min, first);
            if tree.get(&key)?.is_none() {
                complete = false;
                tracing::warn!(block = first, tserver = %ts, "adding a dedup index entry a crash left out");
                tree.insert(key, &max.to_be_bytes())?;
                index.insert(
                    ts,
                    SourceRange {
                        min,
                        max,
                        block: first,
                    },
                );
            }
        }
        if complete {
            return Ok(());
        }
    }
    Ok(())
}

/// The source keys of the fresh envelopes of one append, for finding a repeat within the call:
/// the newest fresh index per key, and a chain to older ones with the same key (no allocation
/// per key).
struct InCallKeys<'a> {
    heads: HashMap<(&'a str, u64), u32, ahash::RandomState>,
    /// Per fresh index: the previous fresh index with the same key (`u32::MAX`: none).
    older: Vec<u32>,
}

impl<'a> InCallKeys<'a> {
    fn of(fresh: &[&'a Envelope]) -> Self {
        let mut keys = InCallKeys {
            heads: HashMap::with_capacity_and_hasher(fresh.len(), ahash::RandomState::new()),
            older: Vec::with_capacity(fresh.len()),
        };
        for (i, env) in fresh.iter().enumerate() {
            keys.add(env, i as u32);
        }
        keys
    }

    /// Records the fresh envelope `env` at index `i` (the next one).
    fn add(&mut self, env: &'a Envelope, i: u32) {
        let older = match env.source_key() {
            Some((ts, s)) => self.heads.insert((ts.as_str(), s), i),
            None => None,
        };
        self.older.push(older.unwrap_or(u32::MAX));
    }

    /// The fresh index of an envelope equal to `env` (key `ts`, `s`), if any.
    fn find(&self, fresh: &[&Envelope], env: &Envelope, ts: &str, s: u64) -> Option<u32> {
        let mut i = self.heads.get(&(ts, s)).copied().unwrap_or(u32::MAX);
        while i != u32::MAX {
            if dedup::same_event(fresh[i as usize], env) {
                return Some(i);
            }
            i = self.older[i as usize];
        }
        None
    }
}

/// What an append writes about where its new records came from (see `provenance.rs`).
#[derive(Default)]
struct Origins {
    /// (first seq, source id) wherever the source of the new records changes, in seq order.
    runs: Vec<(Seq, u32)>,
    /// (first seq, lines): the lines of consecutive new records that have one.
    lines: Vec<(Seq, Vec<u64>)>,
}

/// The origins of an append's new records. `sources` are runs over the `n` input envelopes
/// (see [`EventLog::append_from`]).
fn origins(
    w: &mut Writer,
    outcomes: &[AppendOutcome],
    n: usize,
    sources: &[SourceRun<'_>],
) -> Result<Origins, StoreError> {
    let given: usize = sources.iter().map(|run| run.count).sum();
    let rest = SourceRun::new(n.saturating_sub(given), UNSPECIFIED_SOURCE);
    let mut out = Origins::default();
    let mut outcomes = outcomes.iter();
    for run in sources.iter().chain(std::iter::once(&rest)) {
        let mut id = None;
        for (i, outcome) in outcomes.by_ref().take(run.count).enumerate() {
            let AppendOutcome::New(seq) = *outcome else {
                continue;
            };
            let id = match id {
                Some(id) => id,
                None => *id.insert(w.sources.id(run.source)?),
            };
            if out.runs.last().map(|&(_, last)| last) != Some(id) {
                out.runs.push((seq, id));
            }
            match (run.lines.get(i), out.lines.last_mut()) {
                (Some(&line), Some((first, lines))) if *first + lines.len() as Seq == seq => {
                    lines.push(line)
                }
                (Some(&line), _) => out.lines.push((seq, vec![line])),
                (None, _) => {}
            }
        }
    }
    Ok(out)
}

/// The envelopes of the block starting at `first`, whose sled value is `value` (a pointer into a
/// segment, or the block itself in an older store).
fn read_block(
    segments: &SegmentReader,
    first: Seq,
    value: sled::IVec,
) -> Result<Vec<Envelope>, StoreError> {
    let bytes = segments.block(value)?;
    codec::decode_block(&bytes).map_err(|source| StoreError::Corrupt { seq: first, source })
}

pub(crate) fn block_key(first: Seq) -> [u8; 9] {
    let mut k = [BLOCK_PREFIX; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

pub(crate) fn parse_block_key(key: &[u8]) -> Option<Seq> {
    match key {
        [BLOCK_PREFIX, rest @ ..] => <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

impl EventLog {
    /// Opens the log in `tree`: finds the last seq from the last block and loads the dedup index.
    /// A damaged last block or index entry does not stop the open (so `verify` can report it),
    /// but appends are refused until it is repaired.
    pub(crate) fn open(
        dir: &std::path::Path,
        tree: sled::Tree,
        provenance: sled::Tree,
        durability: Durability,
        disk: Option<DiskSync>,
    ) -> Result<EventLog, StoreError> {
        let segments = Arc::new(SegmentReader::new(dir));
        let mut damaged = None;
        let mut last = 0;
        if let Some(entry) = tree.scan_prefix([BLOCK_PREFIX]).next_back() {
            let (key, value) = entry?;
            match parse_block_key(&key) {
                None => damaged = Some(format!("malformed block key {:02x?}", key.as_ref())),
                Some(first) => match read_block(&segments, first, value) {
                    Ok(envs) if !envs.is_empty() => last = first + envs.len() as Seq - 1,
                    Ok(_) => {
                        last = first.saturating_sub(1);
                        damaged = Some(format!("log block at seq {first} is empty"));
                    }
                    Err(e) => {
                        last = first.saturating_sub(1);
                        damaged = Some(format!("log block at seq {first} is damaged: {e}"));
                    }
                },
            }
        }
        let mut index = DedupIndex::default();
        for entry in tree.scan_prefix([DEDUP_PREFIX]) {
            let (key, value) = entry?;
            match dedup::parse_entry(&key, &value) {
                Some((ts, range)) => index.insert(&ts, range),
                None => {
                    damaged = Some(format!("malformed dedup index entry {:02x?}", key.as_ref()))
                }
            }
        }
        if damaged.is_none() {
            complete_index(&tree, &segments, &mut index)?;
        }
        if let Some(why) = &damaged {
            tracing::error!(%why, "the event log is damaged; appends are refused");
        }
        let sources = SourceTable::open(provenance.clone(), last)?;
        let (tail, _) = watch::channel(last);
        Ok(EventLog {
            inner: Arc::new(Inner {
                tree,
                segments,
                provenance,
                durability,
                disk,
                written: AtomicU64::new(last),
                syncer: Mutex::new(Synced {
                    through: last,
                    failed: None,
                }),
                writer: Mutex::new(Writer {
                    last,
                    sources,
                    damaged,
                    dedup: index,
                    cache: BlockCache::new(CACHED_BLOCKS),
                    candidates: Vec::new(),
                    segments: SegmentWriter::open(dir)?,
                }),
                tail,
            }),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock happens before any shared state is changed (it is
        // changed only after the batch is durable), so the state behind a poisoned lock is sound.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the log cannot be appended to, if it cannot (a damaged last block or index entry, a
    /// failed write): its records from there on cannot be read either.
    pub fn damaged(&self) -> Option<String> {
        self.writer().damaged.clone()
    }

    /// The last durable seq (0 for an empty log).
    pub fn last_seq(&self) -> Seq {
        *self.inner.tail.borrow()
    }

    /// The tail: its value is the last durable seq, and it changes after each durable append.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.inner.tail.subscribe()
    }

    /// Appends the envelopes that are not already stored. Returns after the records are durable
    /// (unless [`Durability::Relaxed`]), sharing the flush with concurrent appends (group commit).
    pub fn append(&self, envs: &[Envelope]) -> Result<AppendReport, StoreError> {
        self.begin_append(envs)?.wait_durable()
    }

    /// [`EventLog::append`], saying where the envelopes came from: `sources` are runs over
    /// `envs` (how many envelopes, their source, their lines), in order; envelopes past them
    /// are [`UNSPECIFIED_SOURCE`].
    pub fn append_from(
        &self,
        envs: &[Envelope],
        sources: &[SourceRun<'_>],
    ) -> Result<AppendReport, StoreError> {
        self.begin_append_from(envs, sources)?.wait_durable()
    }

    /// Where every record came from (the table of sources and runs, read now).
    pub fn provenance(&self) -> Result<Provenance, StoreError> {
        Provenance::load(&self.inner.provenance)
    }

    /// The first half of [`EventLog::append`]: dedup, encode and write into sled, in the order
    /// of the calls, without waiting for the disk. The report is released by
    /// [`PendingAppend::wait_durable`] only, so nothing can call these records stored before
    /// they are; meanwhile this thread (or another) can begin the next append, which the same
    /// flush may then cover.
    pub fn begin_append(&self, envs: &[Envelope]) -> Result<PendingAppend<'_>, StoreError> {
        self.begin_append_from(envs, &[])
    }

    /// [`EventLog::begin_append`] with sources, as [`EventLog::append_from`].
    pub fn begin_append_from(
        &self,
        envs: &[Envelope],
        sources: &[SourceRun<'_>],
    ) -> Result<PendingAppend<'_>, StoreError> {
        Ok(PendingAppend {
            log: self,
            report: self.write(envs, sources)?,
        })
    }

    fn write(
        &self,
        envs: &[Envelope],
        sources: &[SourceRun<'_>],
    ) -> Result<AppendReport, StoreError> {
        // Encoded before the writer lock is taken, so that appends from several threads encode
        // in parallel. Used as is when every envelope turns out fresh (the usual case); else
        // the fresh ones are encoded again under the lock.
        let mut pre_encoded = match envs.len() {
            1..=MAX_BLOCK_RECORDS => Some(codec::encode_block(envs).map_err(StoreError::Encode)?),
            _ => None,
        };
        let mut guard = self.writer();
        let w = &mut *guard;
        if let Some(why) = &w.damaged {
            return Err(StoreError::Damaged(why.clone()));
        }
        let base = w.last;
        let mut fresh: Vec<&Envelope> = Vec::with_capacity(envs.len());
        let mut outcomes = Vec::with_capacity(envs.len());
        // Per T-Server in this call: the highest source seq seen so far, and the highest stored
        // before it (the dedup index's). While each T-Server's seqs only rise, as a T-Server
        // writes them, no key can repeat within the call and nothing more is kept.
        let mut seen: Vec<(&str, Option<u64>, Option<u64>)> = Vec::new();
        // Else, from the first key that does not rise on: the call's fresh keys indexed.
        let mut in_call: Option<InCallKeys> = None;
        'next: for env in envs {
            if let Some((ts, s)) = env.source_key() {
                let slot = match seen.iter().position(|(name, ..)| *name == ts.as_str()) {
                    Some(i) => i,
                    None => {
                        seen.push((ts.as_str(), None, w.dedup.high(ts.as_str())));
                        seen.len() - 1
                    }
                };
                let (_, highest_here, highest_stored) = &mut seen[slot];
                if highest_here.is_some_and(|h| s <= h) && in_call.is_none() {
                    in_call = Some(InCallKeys::of(&fresh));
                }
                if let Some(keys) = &in_call {
                    if let Some(i) = keys.find(&fresh, env, ts.as_str(), s) {
                        outcomes.push(AppendOutcome::Duplicate(base + 1 + Seq::from(i)));
                        continue 'next;
                    }
                }
                if highest_stored.is_some_and(|high| s <= high) {
                    if let Some(seq) = self.find_stored(w, env, s)? {
                        outcomes.push(AppendOutcome::Duplicate(seq));
                        continue 'next;
                    }
                }
                *highest_here = Some(highest_here.map_or(s, |h| h.max(s)));
            }
            if let Some(keys) = &mut in_call {
                keys.add(env, fresh.len() as u32);
            }
            outcomes.push(AppendOutcome::New(base + 1 + fresh.len() as Seq));
            fresh.push(env);
        }
        let appended = fresh.len() as u64;
        let duplicates = envs.len() as u64 - appended;
        if fresh.is_empty() {
            return Ok(AppendReport {
                appended,
                duplicates,
                first_seq: None,
                last_seq: base,
                outcomes,
            });
        }

        // Blocks first, then their index entries, each its own sled insert (why: the module
        // docs): after a crash an entry never names a missing block, and `open` completes the
        // entries of the last blocks if the crash came between.
        let mut blocks = Vec::new();
        let mut entries = Vec::new();
        let mut ranges = Vec::new();
        let mut first = base + 1;
        if fresh.len() < envs.len() {
            pre_encoded = None;
        }
        for chunk in fresh.chunks(MAX_BLOCK_RECORDS) {
            let value = match pre_encoded.take() {
                Some(v) => v,
                None => codec::encode_block(chunk).map_err(StoreError::Encode)?,
            };
            blocks.push((first, value));
            for (ts, min, max) in dedup::block_ranges(chunk.iter().copied()) {
                entries.push((dedup::entry_key(ts.as_str(), min, first), max.to_be_bytes()));
                ranges.push((
                    ts,
                    SourceRange {
                        min,
                        max,
                        block: first,
                    },
                ));
            }
            first += chunk.len() as Seq;
        }
        let last = base + appended;
        let origins = origins(w, &outcomes, envs.len(), sources)?;
        let tree = &self.inner.tree;
        // Sources first (see `provenance.rs`), then blocks, then their index entries.
        let written = w
            .sources
            .write_runs(&origins.runs)
            .and_then(|()| w.sources.write_lines(&origins.lines))
            .map_err(|e| match e {
                StoreError::Db(why) => why,
                other => other.to_string(),
            });
        if let Err(why) = written {
            let why = format!(
                "writing the sources of seqs {}..={last} failed: {why}",
                base + 1
            );
            tracing::error!(%why, "append failed");
            w.damaged = Some(why.clone());
            return Err(StoreError::Damaged(why));
        }
        // The blocks' bytes are durable before sled names them (see `segments.rs`).
        let pointers = blocks
            .into_iter()
            .map(|(first, block)| Ok((block_key(first), w.segments.append(first, &block)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .and_then(|pointers| w.segments.sync().map(|()| pointers));
        let written = pointers.and_then(|pointers| {
            pointers
                .into_iter()
                .try_for_each(|(k, v)| tree.insert(k, v).map(drop))
                .and_then(|()| {
                    entries
                        .into_iter()
                        .try_for_each(|(k, v)| tree.insert(k, &v).map(drop))
                })
                .map_err(StoreError::from)
        });
        // After a failed write or flush we no longer know what the disk holds: stop appending
        // rather than reuse seqs that may already be stored.
        if let Err(e) = written {
            let why = format!("writing seqs {}..={last} failed: {e}", base + 1);
            tracing::error!(%why, "append failed");
            w.damaged = Some(why);
            return Err(e);
        }
        w.last = last;
        w.sources.stored(&origins.runs);
        for (ts, r) in ranges {
            w.dedup.insert(ts, r);
        }
        self.inner.written.store(last, Ordering::Release);
        if self.inner.durability == Durability::Relaxed {
            self.inner.tail.send_replace(last);
        }
        Ok(AppendReport {
            appended,
            duplicates,
            first_seq: Some(base + 1),
            last_seq: last,
            outcomes,
        })
    }

    /// Returns once every seq up to `seq` is durable: at once if a flush already covered it,
    /// else after the flush this call makes (or waits for, holding the sync lock in turn), which
    /// covers everything written by then. The tail moves after each successful flush.
    fn sync_through(&self, seq: Seq) -> Result<(), StoreError> {
        let mut synced = self.inner.syncer.lock().unwrap_or_else(|p| p.into_inner());
        if synced.through >= seq {
            return Ok(());
        }
        if let Some(why) = &synced.failed {
            return Err(StoreError::Damaged(why.clone()));
        }
        // Read before the flush: the flush covers every write that completed before it started.
        let upto = self.inner.written.load(Ordering::Acquire);
        if let Err(e) = self.sync() {
            let why = format!("flushing seqs {}..={upto} failed: {e}", synced.through + 1);
            tracing::error!(%why, "flush failed");
            synced.failed = Some(why.clone());
            drop(synced);
            // The writer lock is never held while waiting for this one, so no deadlock.
            self.writer().damaged.get_or_insert(why);
            return Err(e);
        }
        synced.through = upto;
        self.inner.tail.send_replace(upto);
        Ok(())
    }

    /// sled's flush, then the fsyncs it leaves out: see [`Durability::Full`].
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let flush = || self.inner.tree.flush().map(drop).map_err(StoreError::from);
        match &self.inner.disk {
            Some(d) => d.sync(flush),
            None => flush(),
        }
    }

    /// The seq of a stored event equal to `env`, looking only in the blocks the index names.
    fn find_stored(
        &self,
        w: &mut Writer,
        env: &Envelope,
        source_seq: u64,
    ) -> Result<Option<Seq>, StoreError> {
        let Some((ts, _)) = env.source_key() else {
            return Ok(None);
        };
        w.dedup
            .candidates(ts.as_str(), source_seq, &mut w.candidates);
        for i in 0..w.candidates.len() {
            let first = w.candidates[i];
            let block = match w.cache.get(first) {
                Some(b) => b,
                None => {
                    let value = self.inner.tree.get(block_key(first))?.ok_or_else(|| {
                        StoreError::Corrupt {
                            seq: first,
                            source: CodecError::Decode(
                                "the dedup index names a block that does not exist".into(),
                            ),
                        }
                    })?;
                    let envs = read_block(&self.inner.segments, first, value)?;
                    let b = Arc::new(DecodedBlock::new(first, envs));
                    w.cache.put(b.clone());
                    b
                }
            };
            if let Some(seq) = block.find(env, source_seq) {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    /// The records `from..=to`, decoded a block at a time as the iterator advances. Stops at the
    /// last durable seq; yields an error (and then ends) at a damaged block or a gap.
    pub fn read(&self, from: Seq, to: Seq) -> ReadIter {
        let to = to.min(self.last_seq());
        ReadIter {
            tree: self.inner.tree.clone(),
            segments: self.inner.segments.clone(),
            blocks: None,
            current: Vec::new().into_iter(),
            next: from.max(1),
            to,
        }
    }

    /// Checks every block (checksum, version, decodability, seq contiguity) and that the dedup
    /// index is exactly what the blocks call for. Holds the writer lock: appends wait.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let guard = self.writer();
        let mut report = VerifyReport {
            last_seq: guard.last,
            ..VerifyReport::default()
        };
        let mut fault =
            |seq: Option<Seq>, what: String| report_fault(&mut report.faults, seq, what);
        let mut expected_index: BTreeMap<Vec<u8>, [u8; 8]> = BTreeMap::new();
        let mut stored_index: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // The seq the next block must start at; `None` after a damaged block (length unknown).
        let mut next: Option<Seq> = Some(1);
        let mut end = 0;
        let (mut records, mut blocks, mut bytes) = (0u64, 0u64, 0u64);
        for entry in self.inner.tree.iter() {
            let (key, value) = entry?;
            match key.first() {
                Some(&BLOCK_PREFIX) => {
                    let Some(first) = parse_block_key(&key) else {
                        fault(None, format!("malformed block key {:02x?}", key.as_ref()));
                        continue;
                    };
                    blocks += 1;
                    let value = match self.inner.segments.block(value) {
                        Ok(value) => value,
                        Err(e) => {
                            fault(Some(first), format!("block cannot be read: {e}"));
                            next = None;
                            continue;
                        }
                    };
                    bytes += value.len() as u64;
                    match next {
                        Some(n) if first > n => fault(Some(first), format!("gap: seqs {n}..={} are missing", first - 1)),
                        Some(n) if first < n => fault(
                            Some(first),
                            format!("overlap: the block starts at {first} but the previous block holds seqs up to {}", n - 1),
                        ),
                        _ => {}
                    }
                    next = None;
                    match codec::decode_block(&value) {
                        Ok(envs) if envs.is_empty() => fault(Some(first), "empty block".into()),
                        Ok(envs) => {
                            records += envs.len() as u64;
                            end = first + envs.len() as Seq - 1;
                            next = Some(end + 1);
                            for (ts, min, max) in dedup::block_ranges(&envs) {
                                expected_index.insert(
                                    dedup::entry_key(ts.as_str(), min, first),
                                    max.to_be_bytes(),
                                );
                            }
                        }
                        Err(e) => fault(Some(first), format!("block is damaged: {e}")),
                    }
                }
                Some(&DEDUP_PREFIX) => {
                    stored_index.insert(key.to_vec(), value.to_vec());
                }
                _ => fault(
                    None,
                    format!("unexpected key {:02x?} in the log tree", key.as_ref()),
                ),
            }
        }
        if next.is_some() && end != guard.last {
            fault(
                None,
                format!(
                    "the blocks end at seq {end} but the log's tail is {}",
                    guard.last
                ),
            );
        }
        for (key, value) in &stored_index {
            match (dedup::parse_entry(key, value), expected_index.get(key)) {
                (None, _) => fault(None, format!("malformed dedup index entry {key:02x?}")),
                (Some((ts, r)), None) => fault(
                    Some(r.block),
                    format!(
                        "dedup index entry for {ts} {}..={} names no such block range",
                        r.min, r.max
                    ),
                ),
                (Some((ts, r)), Some(max)) if max.as_slice() != value.as_slice() => fault(
                    Some(r.block),
                    format!(
                        "dedup index entry for {ts} from {} has max {} but the block's is {}",
                        r.min,
                        r.max,
                        u64::from_be_bytes(*max)
                    ),
                ),
                _ => {}
            }
        }
        for key in expected_index
            .keys()
            .filter(|k| !stored_index.contains_key(*k))
        {
            if let Some((ts, r)) = dedup::parse_entry(key, &[0; 8]) {
                fault(
                    Some(r.block),
                    format!("dedup index entry for {ts} from {} is missing", r.min),
                );
            }
        }
        report.records = records;
        report.blocks = blocks;
        report.bytes = bytes;
        report.index_entries = stored_index.len() as u64;
        Ok(report)
    }

    #[cfg(test)]
    pub(crate) fn raw_tree(&self) -> &sled::Tree {
        &self.inner.tree
    }

    #[cfg(test)]
    pub(crate) fn disk_sync(&self) -> Option<&DiskSync> {
        self.inner.disk.as_ref()
    }
}

fn report_fault(faults: &mut Vec<VerifyFault>, seq: Option<Seq>, what: String) {
    faults.push(VerifyFault { seq, what });
}

/// The iterator of [`EventLog::read`].
pub struct ReadIter {
    pub(crate) tree: sled::Tree,
    pub(crate) segments: Arc<SegmentReader>,
    /// The blocks after the first, opened on the first call to `next`.
    pub(crate) blocks: Option<sled::Iter>,
    pub(crate) current: std::vec::IntoIter<Envelope>,
    /// The seq of the next record to yield.
    pub(crate) next: Seq,
    pub(crate) to: Seq,
}

impl ReadIter {
    /// The same records, decoded on other threads up to `depth` blocks ahead of the caller:
    /// see [`crate::ReadAhead`].
    pub fn read_ahead(self, depth: usize) -> crate::ReadAhead {
        crate::ReadAhead::start(self, depth)
    }

    fn fail(&mut self, err: StoreError) -> Option<Result<Record, StoreError>> {
        self.to = 0;
        Some(Err(err))
    }

    /// Loads the block that holds `self.next`.
    fn load(&mut self) -> Result<(), StoreError> {
        let (first, value) = match &mut self.blocks {
            None => {
                // The block holding `next` is the last one whose key is <= next.
                let found = self
                    .tree
                    .range(block_key(0)..=block_key(self.next))
                    .next_back()
                    .transpose()?;
                let Some((key, value)) = found else {
                    return Err(missing(self.next));
                };
                let first = parse_block_key(&key).ok_or_else(|| missing(self.next))?;
                self.blocks = Some(
                    self.tree
                        .range(block_key(first.saturating_add(1))..=block_key(self.to)),
                );
                (first, value)
            }
            Some(iter) => {
                let (key, value) = iter.next().transpose()?.ok_or_else(|| missing(self.next))?;
                let first = parse_block_key(&key).ok_or_else(|| missing(self.next))?;
                if first != self.next {
                    return Err(missing(self.next));
                }
                (first, value)
            }
        };
        let envs = read_block(&self.segments, first, value)?;
        let end = first + envs.len() as Seq;
        if end <= self.next {
            return Err(missing(self.next));
        }
        let mut it = envs.into_iter();
        for _ in first..self.next {
            it.next();
        }
        self.current = it;
        Ok(())
    }
}

pub(crate) fn missing(seq: Seq) -> StoreError {
    StoreError::Corrupt {
        seq,
        source: CodecError::Decode(format!("no block holds seq {seq} (gap in the log)")),
    }
}

impl Iterator for ReadIter {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next > self.to {
            return None;
        }
        if self.current.len() == 0 {
            if let Err(e) = self.load() {
                return self.fail(e);
            }
        }
        let envelope = self.current.next()?;
        let seq = self.next;
        self.next += 1;
        Some(Ok(Record { seq, envelope }))
    }
}
