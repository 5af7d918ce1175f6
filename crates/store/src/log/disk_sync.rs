//! What sled 0.34 leaves unsynced, synced: its data file, its blob files and the directories
//! that gained entries. Used by every durable append and [`crate::Store::flush`]; see
//! [`crate::Durability::Full`] for why sled's own flush is not enough.
//!
//! sled writes a page larger than a quarter of its segment to a file of its own,
//! `blobs/<lsn>` (`write_all`, no fsync), before the log entry pointing at it can be flushed;
//! so once sled's flush returned, every blob that flush made reachable is complete on the page
//! cache. A blob file is never changed after it is complete (sled creates it with
//! `create_new`, names it by a unique lsn, and only ever deletes it), so each needs one fsync;
//! which ones had it is remembered here. A file still being written by another thread when we
//! look (its crc does not match yet) is synced anyway but looked at again once its length
//! changes.

use crate::error::StoreError;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's data file, synced by every call: sled appends to it all the time.
const DATA_FILE: &str = "db";
const BLOB_DIR: &str = "blobs";
/// A sled blob file is `[crc32 LE of the rest][kind byte][page]`.
const BLOB_HEADER: usize = 5;

/// The sync state of one store directory.
pub(crate) struct DiskSync {
    dir: PathBuf,
    data: File,
    state: Mutex<Synced>,
}

/// What is already on stable storage. Changed only after every fsync of a call succeeded, so a
/// failed call is simply repeated by the next.
#[derive(Default)]
struct Synced {
    /// The entries of the store directory as of its last fsync. A new regular file (sled's
    /// `conf`, written once without a sync when the store is created; a snapshot) is fsynced
    /// once when first seen.
    top: HashSet<OsString>,
    blobs: HashMap<OsString, Blob>,
    /// The parent directory was fsynced once, so the store directory's own entry is durable
    /// (`Store::open` may just have created it).
    parent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blob {
    /// Complete (its crc matches) and fsynced: nothing about it can change any more.
    Synced,
    /// Fsynced at this length but incomplete: being written, or damaged. Checked again (and
    /// synced again) when its length differs from this.
    Partial(u64),
}

impl DiskSync {
    /// The store in `dir`, whose sled database is open (so `db` exists).
    pub(crate) fn open(dir: &Path) -> Result<DiskSync, StoreError> {
        let path = dir.join(DATA_FILE);
        let data = File::open(&path).map_err(|source| StoreError::Io { path, source })?;
        Ok(DiskSync {
            dir: dir.to_path_buf(),
            data,
            state: Mutex::new(Synced::default()),
        })
    }

    /// Runs `flush` (sled's), then makes everything sled has written so far durable: new and
    /// changed blob files, then `blobs/` if it gained entries, the data file, the new files of
    /// the store directory and the directory itself if it gained entries.
    ///
    /// A blob file already there before the flush started is complete once it returned, so it
    /// is synced without being read: sled writes a blob whole while it fills the log
    /// reservation that points at it, before that reservation can complete, and its flush
    /// waits for every reservation made before the flush started. A blob that appears during
    /// the flush may still be being written by another thread: it is read to tell.
    pub(crate) fn sync(
        &self,
        flush: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // The state is written only at the end, after every fsync succeeded: behind a poisoned
        // lock it is still a true (if stale) record.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let blob_dir = self.dir.join(BLOB_DIR);
        let before: HashSet<OsString> = list(&blob_dir)?
            .into_iter()
            .filter(|(name, is_file)| *is_file && !state.blobs.contains_key(name))
            .map(|(name, _)| name)
            .collect();
        flush()?;
        let (blobs, new_blobs) = sync_blobs(&blob_dir, &state.blobs, &before)?;
        if new_blobs {
            sync_dir(&blob_dir)?;
        }
        self.data.sync_data().map_err(|source| StoreError::Io {
            path: self.dir.join(DATA_FILE),
            source,
        })?;
        let (top, new_top) = sync_top(&self.dir, &state.top)?;
        if new_top {
            sync_dir(&self.dir)?;
        }
        if !state.parent {
            sync_parent(&self.dir)?;
        }
        state.blobs = blobs;
        state.top = top;
        state.parent = true;
        Ok(())
    }

    /// The blob files known complete and synced, by name.
    #[cfg(test)]
    pub(crate) fn synced_blobs(&self) -> std::collections::BTreeSet<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .blobs
            .iter()
            .filter(|(_, b)| **b == Blob::Synced)
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The entries of `dir` (none if it does not exist), with whether each is a regular file.
fn list(dir: &Path) -> Result<Vec<(OsString, bool)>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let is_file = entry.file_type().map_err(io_err(dir))?.is_file();
        out.push((entry.file_name(), is_file));
    }
    Ok(out)
}

/// Syncs every blob file not yet known synced (those in `complete` without reading them);
/// returns the new record (only the files there now: sled deletes blobs it no longer needs) and
/// whether any name is new.
fn sync_blobs(
    dir: &Path,
    known: &HashMap<OsString, Blob>,
    complete: &HashSet<OsString>,
) -> Result<(HashMap<OsString, Blob>, bool), StoreError> {
    let mut out = HashMap::with_capacity(known.len() + 4);
    let mut new_names = false;
    for (name, is_file) in list(dir)? {
        if !is_file {
            continue;
        }
        let path = dir.join(&name);
        let state = match known.get(&name) {
            Some(Blob::Synced) => Blob::Synced,
            Some(Blob::Partial(len)) => match std::fs::metadata(&path) {
                Ok(m) if m.len() == *len => Blob::Partial(*len),
                Ok(_) => match sync_blob(&path)? {
                    Some(b) => b,
                    None => continue,
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            },
            None => {
                new_names = true;
                let synced = if complete.contains(&name) {
                    sync_complete_blob(&path)?
                } else {
                    sync_blob(&path)?
                };
                match synced {
                    Some(b) => b,
                    None => continue,
                }
            }
        };
        out.insert(name, state);
    }
    Ok((out, new_names))
}

/// Reads one blob file (to tell whether it is complete), then fsyncs it. `None` if sled
/// deleted it meanwhile.
fn sync_blob(path: &Path) -> Result<Option<Blob>, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    // What was read is what this fsync at least covers; anything written after it shows as a
    // new length next time.
    file.sync_data().map_err(io_err(path))?;
    Ok(Some(if blob_is_complete(&bytes) {
        Blob::Synced
    } else {
        Blob::Partial(bytes.len() as u64)
    }))
}

/// fsyncs a blob file known complete. `None` if sled deleted it meanwhile.
fn sync_complete_blob(path: &Path) -> Result<Option<Blob>, StoreError> {
    match File::open(path) {
        Ok(file) => {
            file.sync_data().map_err(io_err(path))?;
            Ok(Some(Blob::Synced))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn blob_is_complete(bytes: &[u8]) -> bool {
    match bytes {
        [a, b, c, d, rest @ ..] if bytes.len() >= BLOB_HEADER => {
            u32::from_le_bytes([*a, *b, *c, *d]) == crc32fast::hash(rest)
        }
        _ => false,
    }
}

/// Fsyncs each regular file of the store directory seen for the first time (except the data
/// file, synced on every call); returns the directory's entries and whether any is new.
fn sync_top(
    dir: &Path,
    known: &HashSet<OsString>,
) -> Result<(HashSet<OsString>, bool), StoreError> {
    let mut out = HashSet::with_capacity(known.len() + 2);
    let mut new_names = false;
    for (name, is_file) in list(dir)? {
        if !known.contains(&name) {
            new_names = true;
            if is_file && name != DATA_FILE {
                let path = dir.join(&name);
                match File::open(&path) {
                    Ok(f) => f.sync_data().map_err(io_err(&path))?,
                    // A snapshot being renamed by sled: its new name is seen next time.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        out.insert(name);
    }
    Ok((out, new_names))
}

/// fsync of a directory, which makes its entries (new files' names) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The parent's entry for the store directory. A parent we may not read (a directory with only
/// search permission) cannot be opened for its fsync: that is warned about, not an error, so
/// such a deployment still works, with the one-time gap of a just-created store directory.
fn sync_parent(dir: &Path) -> Result<(), StoreError> {
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(()),
    };
    match File::open(parent) {
        Ok(d) => d.sync_all().map_err(io_err(parent)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(dir = %parent.display(), "cannot open the store's parent directory to sync it");
            Ok(())
        }
        Err(e) => Err(io_err(parent)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A blob file as sled writes it.
    fn blob_bytes(page: &[u8]) -> Vec<u8> {
        let mut rest = vec![1u8];
        rest.extend_from_slice(page);
        let mut out = crc32fast::hash(&rest).to_le_bytes().to_vec();
        out.extend(rest);
        out
    }

    fn fake_store() -> (tempfile::TempDir, DiskSync) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DATA_FILE), b"log").unwrap();
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288").unwrap();
        std::fs::create_dir(dir.path().join(BLOB_DIR)).unwrap();
        let sync = DiskSync::open(dir.path()).unwrap();
        (dir, sync)
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn complete_blobs_are_recorded_partial_ones_until_complete_and_deleted_ones_forgotten() {
        let (dir, sync) = fake_store();
        let blobs = dir.path().join(BLOB_DIR);
        let full = blob_bytes(b"page two, still being written");
        // Blobs that appear during the flush (another thread may still be writing them) are
        // read to tell.
        sync.sync(|| {
            std::fs::write(blobs.join("100"), blob_bytes(b"page one")).unwrap();
            std::fs::write(blobs.join("200"), &full[..10]).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(sync.synced_blobs(), names(&["100"]));
        {
            let state = sync.state.lock().unwrap();
            assert_eq!(
                state.blobs.get(&OsString::from("200")),
                Some(&Blob::Partial(10))
            );
            let top: BTreeSet<String> = state
                .top
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            assert_eq!(top, names(&["blobs", "conf", "db"]));
            assert!(state.parent);
        }

        // sled finishes writing the second, deletes the first, writes a third.
        sync.sync(|| {
            std::fs::write(blobs.join("200"), &full).unwrap();
            std::fs::remove_file(blobs.join("100")).unwrap();
            std::fs::write(blobs.join("300"), blob_bytes(b"page three")).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(sync.synced_blobs(), names(&["200", "300"]));
    }

    #[test]
    fn a_blob_there_before_the_flush_is_synced_without_being_read() {
        let (dir, sync) = fake_store();
        // Its bytes do not check out, yet it is taken as complete: sled's flush returning
        // means every blob that existed when it started was whole (see `DiskSync::sync`).
        let mut bytes = blob_bytes(b"page");
        bytes[0] ^= 1;
        std::fs::write(dir.path().join(BLOB_DIR).join("7"), &bytes).unwrap();
        sync.sync(|| Ok(())).unwrap();
        assert_eq!(sync.synced_blobs(), names(&["7"]));
    }

    #[test]
    fn a_failed_flush_syncs_nothing_and_records_nothing() {
        let (dir, sync) = fake_store();
        std::fs::write(dir.path().join(BLOB_DIR).join("7"), blob_bytes(b"page")).unwrap();
        let failed = sync.sync(|| Err(StoreError::Db("the flush failed".into())));
        assert!(matches!(failed, Err(StoreError::Db(_))));
        assert!(sync.synced_blobs().is_empty());
    }

    #[test]
    fn a_damaged_blob_is_never_recorded_as_synced() {
        let (dir, sync) = fake_store();
        let mut bytes = blob_bytes(b"page");
        bytes[0] ^= 1;
        let blob = dir.path().join(BLOB_DIR).join("7");
        sync.sync(|| {
            std::fs::write(&blob, &bytes).unwrap();
            Ok(())
        })
        .unwrap();
        sync.sync(|| Ok(())).unwrap();
        assert!(sync.synced_blobs().is_empty());
        assert!(!blob_is_complete(&[0, 0, 0]));
        assert!(blob_is_complete(&blob_bytes(b"")));
    }

    #[test]
    fn a_missing_data_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            DiskSync::open(dir.path()),
            Err(StoreError::Io { .. })
        ));
    }
}

#[cfg(test)]
mod store_tests {
    use ivrstate_model::*;
    use std::collections::BTreeSet;

    /// One envelope carrying `len` bytes that lz4 cannot shrink.
    fn big(len: usize) -> Envelope {
        let mut x: u64 = 1;
        let noise: String = (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'!' + ((x >> 33) % 90) as u8)
            })
            .collect();
        Envelope {
            time: Micros(1_439_853_377_000_000),
            recorded: Micros(1_700_000_000_000_000),
            event: Event::TLib(TLibEvent {
                tserver: TServerName::from("TS"),
                source_seq: Some(1),
                kind: TLibKind::Agent(AgentEvent {
                    kind: AgentEventKind::Ready,
                    dn: Dn::from("7001"),
                    agent_id: None,
                    queue: None,
                    work_mode: None,
                    reasons: KvList(vec![("Noise".into(), noise.into())]),
                    extensions: KvList::default(),
                }),
            }),
        }
    }

    fn blob_files(dir: &std::path::Path) -> BTreeSet<String> {
        std::fs::read_dir(dir.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A value over sled's 128 KiB blob threshold, which sled writes as a blob file (log blocks
    /// live in segments of their own; derived data, such as a snapshot of a large state, can
    /// still be this big).
    fn big_derived_value(store: &crate::Store, key: &[u8], len: usize) {
        let tree = store.derived("blobby").unwrap();
        tree.insert(key, &vec![0x5a; len]).unwrap();
    }

    #[test]
    fn a_durable_append_after_sled_wrote_a_blob_returns_after_the_blob_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path(), crate::StoreOptions::default()).unwrap();
        let log = store.log();
        big_derived_value(&store, b"a", 300_000);
        log.append(&[big(3_000)]).unwrap();
        let on_disk = blob_files(dir.path());
        assert!(
            !on_disk.is_empty(),
            "sled wrote no blob: the test covers nothing"
        );
        assert_eq!(log.disk_sync().unwrap().synced_blobs(), on_disk);

        // A second one is synced too, and the first is not synced again but still recorded.
        big_derived_value(&store, b"b", 250_000);
        let mut second = big(2_500);
        if let Event::TLib(t) = &mut second.event {
            t.source_seq = Some(2);
        }
        log.append(&[second]).unwrap();
        let on_disk = blob_files(dir.path());
        assert!(on_disk.len() >= 2);
        assert_eq!(log.disk_sync().unwrap().synced_blobs(), on_disk);
        drop(store);

        let store = crate::Store::open(dir.path(), crate::StoreOptions::default()).unwrap();
        assert_eq!(store.log().last_seq(), 2);
        let first = store.log().read(1, 1).next().unwrap().unwrap();
        assert_eq!(first.envelope, big(3_000));
        let value = store.derived("blobby").unwrap().get(b"a").unwrap().unwrap();
        assert_eq!(value.len(), 300_000);
    }

    #[test]
    fn store_flush_syncs_blobs_of_relaxed_appends() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::StoreOptions {
            durability: crate::Durability::Relaxed,
            ..crate::StoreOptions::default()
        };
        let store = crate::Store::open(dir.path(), opts).unwrap();
        big_derived_value(&store, b"a", 300_000);
        store.log().append(&[big(3_000)]).unwrap();
        store.flush().unwrap();
        let on_disk = blob_files(dir.path());
        assert!(!on_disk.is_empty());
        assert_eq!(store.log().disk_sync().unwrap().synced_blobs(), on_disk);
    }
}
