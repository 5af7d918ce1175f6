//! History chunks kept in files the store owns (`history/` beside sled's files), with a small
//! pointer to each in the derived tree.
//!
//! Why: sled 0.34 keeps values inside its leaf pages, and every insert into a leaf eventually
//! rewrites the whole leaf; with chunks of ~700 bytes, a commit of a few thousand chunks made
//! sled rewrite (and hold in memory until its epoch ends) many times their size: the store was
//! ~3x its live data and the process's memory grew with the size of a commit (issue 13's
//! profile). A commit now writes its chunks once, one after another, into one *pack* file
//! (fdatasync'd before the commit's sled batch names it), and sled holds 26-byte pointers.
//!
//! A value of a chunk key is either
//! - `[0]` + the chunk's bytes (small commits, such as `serve`'s, keep their chunks inline
//!   rather than writing a file per commit), or
//! - `[1]` + pack (u64 BE: the commit's first seq, the file's name) + offset (u64 BE) + length
//!   (u32 BE) + crc32 of the bytes (u32 BE), checked on every read.
//!
//! A pack is written whole before any pointer to it is committed, and a pack whose name is past
//! `derived_seq` was left by a commit that did not happen: it is removed on open. A chunk
//! rewritten by a later commit (one still filling) leaves its old bytes behind in an older pack:
//! they are dead, not reclaimed (a few bytes per event for a bulk ingest, which commits rarely).

use crate::{EngineError, Result};
use ivrstate_model::Seq;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const INLINE: u8 = 0;
const PACKED: u8 = 1;
const POINTER_LEN: usize = 1 + 8 + 8 + 4 + 4;
/// A commit of fewer records than this keeps its chunks inline in sled.
pub(crate) const PACK_FROM: Seq = 4096;

pub(crate) struct Packs {
    dir: PathBuf,
    /// Open pack files, by name (reads go through `pread`, so one handle serves every reader).
    open: Mutex<HashMap<Seq, std::sync::Arc<File>>>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Derived(format!("{what} {}: {e}", path.display()))
}

impl Packs {
    pub(crate) fn new(store_dir: &Path) -> Packs {
        Packs {
            dir: store_dir.join("history"),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, pack: Seq) -> PathBuf {
        self.dir.join(format!("{pack:020}.pack"))
    }

    /// The value for a chunk stored inline.
    pub(crate) fn inline(chunk: &[u8]) -> Vec<u8> {
        let mut value = Vec::with_capacity(chunk.len() + 1);
        value.push(INLINE);
        value.extend_from_slice(chunk);
        value
    }

    /// Starts pack `pack`: chunks handed to the writer go straight to the file.
    pub(crate) fn create(&self, pack: Seq) -> Result<PackWriter> {
        let created = !self.dir.exists();
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error("cannot create", &self.dir, e))?;
        let path = self.path(pack);
        let file = File::create(&path).map_err(|e| io_error("cannot create", &path, e))?;
        if let Ok(mut open) = self.open.lock() {
            open.remove(&pack);
        }
        Ok(PackWriter {
            pack,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            path,
            offset: 0,
            new_dir: created.then(|| self.dir.clone()),
        })
    }

    /// The chunk bytes a value holds or points to.
    pub(crate) fn resolve<'v>(&self, value: &'v [u8]) -> Result<Cow<'v, [u8]>> {
        match value.split_first() {
            Some((&INLINE, chunk)) => Ok(Cow::Borrowed(chunk)),
            Some((&PACKED, rest)) if rest.len() == POINTER_LEN - 1 => {
                let field = |at: usize, len: usize| -> u64 {
                    rest[at..at + len]
                        .iter()
                        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
                };
                let (pack, offset) = (field(0, 8), field(8, 8));
                let (len, crc) = (field(16, 4) as usize, field(20, 4) as u32);
                let file = self.file(pack)?;
                let mut chunk = vec![0; len];
                file.read_exact_at(&mut chunk, offset)
                    .map_err(|e| io_error("cannot read", &self.path(pack), e))?;
                if crc32fast::hash(&chunk) != crc {
                    return Err(EngineError::Derived(format!(
                        "a history chunk in {} does not match its checksum (offset {offset})",
                        self.path(pack).display()
                    )));
                }
                Ok(Cow::Owned(chunk))
            }
            _ => Err(EngineError::Derived(
                "a history entry is neither a chunk nor a pointer to one".into(),
            )),
        }
    }

    fn file(&self, pack: Seq) -> Result<std::sync::Arc<File>> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| EngineError::Derived("the pack table is poisoned".into()))?;
        if let Some(file) = open.get(&pack) {
            return Ok(file.clone());
        }
        let path = self.path(pack);
        let file =
            std::sync::Arc::new(File::open(&path).map_err(|e| io_error("cannot open", &path, e))?);
        open.insert(pack, file.clone());
        Ok(file)
    }

    /// Removes the packs named past `derived_seq` (left by a commit that did not happen), or
    /// every pack (`None`).
    pub(crate) fn remove_after(&self, derived_seq: Option<Seq>) -> Result<()> {
        if let Ok(mut open) = self.open.lock() {
            open.clear();
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("cannot read", &self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot read", &self.dir, e))?;
            let name = entry.file_name();
            let pack = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| n.parse::<Seq>().ok());
            let orphan = match (pack, derived_seq) {
                (Some(pack), Some(seq)) => pack > seq,
                (Some(_), None) => true,
                // Not ours: left alone.
                (None, _) => false,
            };
            if orphan {
                std::fs::remove_file(entry.path())
                    .map_err(|e| io_error("cannot remove", &entry.path(), e))?;
            }
        }
        Ok(())
    }
}

/// A pack being written: see [`Packs::create`].
pub(crate) struct PackWriter {
    pack: Seq,
    file: std::io::BufWriter<File>,
    path: PathBuf,
    offset: u64,
    /// The pack directory, when this pack created it (its parent is synced too).
    new_dir: Option<PathBuf>,
}

impl PackWriter {
    /// Appends a chunk; returns the value (pointer) that names it.
    pub(crate) fn add(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        let mut value = Vec::with_capacity(POINTER_LEN);
        value.push(PACKED);
        value.extend_from_slice(&self.pack.to_be_bytes());
        value.extend_from_slice(&self.offset.to_be_bytes());
        value.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        value.extend_from_slice(&crc32fast::hash(chunk).to_be_bytes());
        self.file
            .write_all(chunk)
            .map_err(|e| io_error("cannot write", &self.path, e))?;
        self.offset += chunk.len() as u64;
        Ok(value)
    }

    /// Makes the pack durable (its bytes, its directory entry, and the directory's when it is
    /// new), so that it is there after a crash once a pointer to it is committed.
    pub(crate) fn finish(self) -> Result<()> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_error("cannot write", &self.path, e.into_error()))?;
        file.sync_data()
            .map_err(|e| io_error("cannot sync", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        if let Some(parent) = self.new_dir.as_deref().and_then(Path::parent) {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync", dir, e))
}
