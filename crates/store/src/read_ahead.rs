//! Reading the log on other threads: [`crate::ReadIter::read_ahead`].
//!
//! A full read (rebuild, catch-up) spends most of its time decoding blocks (crc, lz4, bincode)
//! and the rest in the caller's fold. Blocks are independent, so a fetcher thread hands the raw
//! blocks in turn to [`DECODERS`] decoder threads, and the caller takes the decoded blocks back
//! in the same turn: decoding uses every core while the caller folds, and the records and any
//! error arrive in log order, so the iterator yields exactly what [`crate::EventLog::read`]
//! yields (contiguity is checked as the blocks come back).

use crate::codec;
use crate::error::StoreError;
use crate::log::{block_key, missing, parse_block_key, ReadIter, SegmentReader};
use ivrstate_model::{Record, Seq};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// Threads decoding blocks in parallel (the caller folds on its own thread meanwhile).
pub const DECODERS: usize = 2;

/// A block as decoded by a decoder thread: its first seq and its records, or the error of
/// fetching or decoding it.
type Decoded = Result<(Seq, Vec<Record>), StoreError>;

/// Caps glibc's malloc arenas at the number of cores. Each read-ahead thread allocates the
/// records it decodes in a malloc arena of its own, which glibc keeps (untrimmed) after the
/// thread ends; a process that reads the whole log several times (a benchmark, a long-running
/// `serve` catching up) grew by ~22 MB per read. With the cap, later reads reuse the arenas.
/// Call it first thing in `main`, before any thread exists.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cores = i32::try_from(cores).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called before other threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores);
        }
    }
}

/// The iterator of [`ReadIter::read_ahead`].
pub struct ReadAhead {
    inner: Parallel,
}

impl ReadAhead {
    /// Starts the reading threads; at most `depth` blocks wait decoded per thread. An iterator
    /// already part-way through a block goes on from its next seq (that block is read again and
    /// the records before it skipped).
    pub(crate) fn start(inner: ReadIter, depth: usize) -> ReadAhead {
        ReadAhead {
            inner: Parallel::start(inner, depth),
        }
    }

    /// Calls `f` with every record in order, by reference, stopping at the first error (the
    /// read's or `f`'s). The same records as iterating, without moving each one out of the
    /// block it was decoded into: the way to fold a whole log.
    pub fn visit<E: From<StoreError>>(
        mut self,
        mut f: impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<(), E> {
        let p = &mut self.inner;
        for record in p.current.by_ref() {
            f(&record)?;
        }
        while let Some(block) = p.next_block() {
            let Block {
                records,
                skip,
                decoder,
            } = block?;
            for record in &records[skip..] {
                f(record)?;
            }
            // A decoder that has ended hands the block back: it is dropped here.
            if let Some(tx) = p.recycle.get(decoder) {
                let _ = tx.send(records);
            }
        }
        Ok(())
    }
}

impl Iterator for ReadAhead {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

/// A decoded block as [`Parallel::next_block`] hands it over.
struct Block {
    records: Vec<Record>,
    /// Records at its front to skip (the first block may start before `from`).
    skip: usize,
    /// The decoder that built it (which frees it, see `Parallel::recycle`).
    decoder: usize,
}

/// The fetcher + decoders path.
struct Parallel {
    /// One receiver per decoder; blocks come back in turn: 0, 1, 0, 1, ...
    decoded: Vec<Receiver<Decoded>>,
    /// Blocks [`ReadAhead::visit`] is done with go back to the decoder that made them, to be
    /// freed there: freeing into another thread's malloc arena contends for its lock.
    recycle: Vec<Sender<Vec<Record>>>,
    turn: usize,
    current: std::vec::IntoIter<Record>,
    /// Whether the first block (which may start before `from`) has arrived.
    started: bool,
    /// Seq of the next record to yield, and the last one wanted.
    next: Seq,
    to: Seq,
    done: bool,
    threads: Vec<JoinHandle<()>>,
}

impl Parallel {
    fn start(inner: ReadIter, depth: usize) -> Parallel {
        let (from, to, tree, segments) = (
            inner.next,
            inner.to,
            inner.tree.clone(),
            inner.segments.clone(),
        );
        let mut to_decoders: Vec<SyncSender<Result<(Seq, sled::IVec), StoreError>>> = Vec::new();
        let mut decoded = Vec::new();
        let mut recycle = Vec::new();
        let mut threads = Vec::new();
        let mut failed: Option<StoreError> = None;
        for i in 0..DECODERS {
            let (recycle_tx, recycle_rx) = channel::<Vec<Record>>();
            let (raw_tx, raw_rx) =
                sync_channel::<Result<(Seq, sled::IVec), StoreError>>(depth.max(1));
            let (out_tx, out_rx) = sync_channel::<Decoded>(depth.max(1));
            let spawned = std::thread::Builder::new()
                .name(format!("ivrstate-decode-{i}"))
                .spawn(move || {
                    for raw in raw_rx {
                        recycle_rx.try_iter().for_each(drop);
                        let item = raw.and_then(|(first, value)| {
                            codec::decode_block_records(&value, first)
                                .map(|records| (first, records))
                                .map_err(|source| StoreError::Corrupt { seq: first, source })
                        });
                        // A send fails only when the caller dropped the iterator: stop.
                        if out_tx.send(item).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    failed = Some(StoreError::Db(format!(
                        "cannot start a decoder thread: {e}"
                    )))
                }
            }
            to_decoders.push(raw_tx);
            decoded.push(out_rx);
            recycle.push(recycle_tx);
        }
        let fetcher = std::thread::Builder::new()
            .name("ivrstate-fetch".into())
            .spawn(move || fetch(&tree, &segments, from, to, &to_decoders));
        match fetcher {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                failed = Some(StoreError::Db(format!(
                    "cannot start the fetcher thread: {e}"
                )))
            }
        }
        let mut parallel = Parallel {
            decoded,
            recycle,
            turn: 0,
            current: Vec::new().into_iter(),
            started: false,
            next: from,
            to,
            done: from > to,
            threads,
        };
        if let Some(e) = failed {
            // No threads to be had: say so through the iterator, as any read error.
            parallel.decoded.clear();
            parallel.current = Vec::new().into_iter();
            parallel.done = false;
            parallel.threads_failed(e);
        }
        parallel
    }

    fn threads_failed(&mut self, e: StoreError) {
        let (tx, rx) = sync_channel(1);
        let _ = tx.send(Err(e));
        self.decoded = vec![rx];
        self.turn = 0;
    }

    fn next(&mut self) -> Option<Result<Record, StoreError>> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(Ok(record));
            }
            match self.next_block()? {
                Ok(Block { records, skip, .. }) => {
                    let mut it = records.into_iter();
                    it.by_ref().take(skip).for_each(drop);
                    self.current = it;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next decoded block, checked and cut at `to`. `None` once `to` has been reached.
    fn next_block(&mut self) -> Option<Result<Block, StoreError>> {
        if self.done || self.next > self.to {
            return None;
        }
        let rx = self.decoded.get(self.turn)?;
        let decoder = self.turn;
        self.turn = (self.turn + 1) % self.decoded.len().max(1);
        let (first, mut records) = match rx.recv() {
            Ok(Ok(block)) => block,
            Ok(Err(e)) => return self.fail(e),
            // The fetcher ended before `to`: a block is missing.
            Err(_) => return self.fail(missing(self.next)),
        };
        // The first block may start before `from`; every later one must start right where the
        // previous ended (as `EventLog::read` checks).
        let end = first + records.len() as Seq;
        let misplaced = if self.started {
            first != self.next
        } else {
            first > self.next
        };
        if misplaced || end <= self.next {
            return self.fail(missing(self.next));
        }
        self.started = true;
        let skip = (self.next - first) as usize;
        let last = (end - 1).min(self.to);
        records.truncate((last - first + 1) as usize);
        self.next = last + 1;
        Some(Ok(Block {
            records,
            skip,
            decoder,
        }))
    }

    fn fail<T>(&mut self, e: StoreError) -> Option<Result<T, StoreError>> {
        self.done = true;
        self.decoded.clear();
        Some(Err(e))
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        // Closing the receivers makes the decoders' sends fail, which closes the fetcher's
        // channels in turn; joining means the database handles are gone with this iterator.
        self.decoded.clear();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Sends the raw blocks holding `from..=to` to the decoders in turn, or the error that stopped
/// it (to the decoder whose turn it was, so it arrives in order).
fn fetch(
    tree: &sled::Tree,
    segments: &SegmentReader,
    from: Seq,
    to: Seq,
    decoders: &[SyncSender<Result<(Seq, sled::IVec), StoreError>>],
) {
    if from > to || decoders.is_empty() {
        return;
    }
    let mut turn = 0;
    let mut send = |item: Result<(Seq, sled::IVec), StoreError>| -> bool {
        // The block's bytes, read here (the fetcher's thread) when sled holds a pointer.
        let item = item.and_then(|(first, value)| Ok((first, segments.block(value)?)));
        let ok = decoders[turn].send(item).is_ok();
        turn = (turn + 1) % decoders.len();
        ok
    };
    // The block holding `from` is the last one whose key is <= from.
    let first = match tree
        .range(block_key(0)..=block_key(from))
        .next_back()
        .transpose()
    {
        Ok(Some((key, value))) => match parse_block_key(&key) {
            Some(first) => (first, value),
            None => {
                send(Err(missing(from)));
                return;
            }
        },
        Ok(None) => {
            send(Err(missing(from)));
            return;
        }
        Err(e) => {
            send(Err(e.into()));
            return;
        }
    };
    let start = first.0;
    if !send(Ok(first)) {
        return;
    }
    for entry in tree.range(block_key(start.saturating_add(1))..=block_key(to)) {
        let item = match entry {
            Ok((key, value)) => match parse_block_key(&key) {
                Some(first) => Ok((first, value)),
                None => Err(missing(from)),
            },
            Err(e) => Err(e.into()),
        };
        let stop = item.is_err();
        if !send(item) || stop {
            return;
        }
    }
}
