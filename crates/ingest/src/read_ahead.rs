//! Reading the log on a second thread: [`crate::ReadIter::read_ahead`].
//!
//! A full read (rebuild, catch-up) spends about half its time in the store (sled, crc, lz4,
//! bincode) and half in the caller's fold. Decoding the next blocks on another core while the
//! caller folds the current ones overlaps the two; the records and any error arrive in the
//! same order, so the iterator yields exactly what [`crate::EventLog::read`] yields.

use crate::error::StoreError;
use crate::log::ReadIter;
use ivrstate_model::Record;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

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

/// Records handed over per message: large enough that the channel costs nothing per record.
const CHUNK: usize = 1024;

/// The iterator of [`ReadIter::read_ahead`].
pub struct ReadAhead {
    rx: Option<Receiver<Result<Vec<Record>, StoreError>>>,
    current: std::vec::IntoIter<Record>,
    reader: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts the reading thread; at most `depth` chunks wait decoded.
    pub(crate) fn start(mut inner: ReadIter, depth: usize) -> ReadAhead {
        let (tx, rx) = sync_channel(depth.max(1));
        let reader = std::thread::Builder::new()
            .name("ivrstate-read-ahead".into())
            .spawn(move || loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let mut failed = None;
                for item in inner.by_ref() {
                    match item {
                        Ok(record) => {
                            chunk.push(record);
                            if chunk.len() == CHUNK {
                                break;
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let end = chunk.len() < CHUNK;
                // A send fails only when the caller dropped the iterator: stop reading.
                if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                if let Some(e) = failed {
                    let _ = tx.send(Err(e));
                    return;
                }
                if end {
                    return;
                }
            });
        match reader {
            Ok(handle) => ReadAhead {
                rx: Some(rx),
                current: Vec::new().into_iter(),
                reader: Some(handle),
            },
            // No thread to be had: say so through the iterator, as any read error.
            Err(e) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(StoreError::Db(format!(
                    "cannot start the read-ahead thread: {e}"
                ))));
                ReadAhead {
                    rx: Some(rx),
                    current: Vec::new().into_iter(),
                    reader: None,
                }
            }
        }
    }
}

impl Iterator for ReadAhead {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(Ok(record));
            }
            match self.rx.as_ref()?.recv() {
                Ok(Ok(chunk)) => self.current = chunk.into_iter(),
                Ok(Err(e)) => {
                    self.rx = None;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.rx = None;
                    return None;
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel makes the reader's next send fail, so it ends; joining it means
        // its handle on the database is gone when this iterator is.
        self.rx = None;
        if let Some(handle) = self.reader.take() {
            let _ = handle.join();
        }
    }
}
