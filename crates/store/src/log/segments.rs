//! The bytes of log blocks, in append-only files beside sled (`log/NNN.seg`); sled's `L` entry
//! of a block holds a 21-byte pointer to them.
//!
//! Why: sled 0.34 keeps every value it was given in memory for as long as the process runs
//! (its cache counts a page stored as a blob by the size of the blob's pointer, so a leaf of
//! ~25 KB blocks is never paged out): an ingest of 10 M events held all 250 MB of its blocks.
//! Rewriting a leaf of such values for every insert also made sled write each block about ten
//! times over and leave most of it as garbage in its file (issue 13).
//!
//! A pointer is `b'S'` + segment (u64 BE: the first seq of its first block, the file's name) +
//! offset (u64 BE) + length (u32 BE). A block's own frame carries its crc32, checked when it is
//! decoded. Blocks written before store format 5 stay in sled as they were (a value that is not
//! a pointer is the block itself), so older stores need no conversion.
//!
//! Durability: an append writes its blocks into the current segment and `fdatasync`s it (and the
//! directory when a file was created) *before* it inserts their pointers into sled. sled may
//! write a pointer to disk at any moment after the insert (its own timer, a full buffer), so this
//! order is what guarantees that every pointer sled recovers names bytes that are on disk. A
//! crash between the two leaves bytes no pointer names: dead, and never read.

use crate::error::StoreError;
use ivrstate_model::Seq;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const POINTER_TAG: u8 = b'S';
const POINTER_LEN: usize = 1 + 8 + 8 + 4;
/// A new segment is started once the current one holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
pub(crate) const SEGMENT_DIR: &str = "log";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, segment: Seq) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// Reads blocks through their pointers; shared by every reader of the log.
pub(crate) struct SegmentReader {
    dir: PathBuf,
    /// Open segment files, by name (reads use `pread`, so one handle serves every thread).
    files: Mutex<HashMap<Seq, Arc<File>>>,
}

impl SegmentReader {
    pub(crate) fn new(store_dir: &Path) -> SegmentReader {
        SegmentReader {
            dir: store_dir.join(SEGMENT_DIR),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The bytes of the block whose sled value is `value`: the pointed-to bytes, or the value
    /// itself for a block stored in sled (before format 5).
    pub(crate) fn block(&self, value: sled::IVec) -> Result<sled::IVec, StoreError> {
        let Some((segment, offset, len)) = parse_pointer(&value) else {
            return Ok(value);
        };
        let path = segment_path(&self.dir, segment);
        let file = self.file(segment, &path)?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset).map_err(io(&path))?;
        Ok(sled::IVec::from(bytes))
    }

    fn file(&self, segment: Seq, path: &Path) -> Result<Arc<File>, StoreError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = files.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(path).map_err(io(path))?);
        files.insert(segment, file.clone());
        Ok(file)
    }
}

fn parse_pointer(value: &[u8]) -> Option<(Seq, u64, usize)> {
    if value.len() != POINTER_LEN || value.first() != Some(&POINTER_TAG) {
        return None;
    }
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = value.get(at..at + len)?;
        Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    Some((
        field(1, 8)?,
        field(9, 8)?,
        usize::try_from(field(17, 4)?).ok()?,
    ))
}

/// Appends blocks to the current segment; owned by the log's writer (one at a time).
pub(crate) struct SegmentWriter {
    store_dir: PathBuf,
    dir: PathBuf,
    current: Option<Current>,
    /// Directories that gained an entry since the last sync.
    dirs_to_sync: Vec<PathBuf>,
}

struct Current {
    segment: Seq,
    file: File,
    len: u64,
    /// Bytes written since the last sync.
    unsynced: bool,
}

impl SegmentWriter {
    /// Continues the newest segment in `store_dir/log`, if any. Bytes past the last block sled
    /// names (a crash between an append's sync and its pointers) stay, dead; new blocks go
    /// after them.
    pub(crate) fn open(store_dir: &Path) -> Result<SegmentWriter, StoreError> {
        let dir = store_dir.join(SEGMENT_DIR);
        let mut newest: Option<(Seq, PathBuf)> = None;
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(io(&dir))?.path();
                    let segment = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".seg"))
                        .and_then(|n| n.parse::<Seq>().ok());
                    if let Some(segment) = segment {
                        if newest.as_ref().is_none_or(|(s, _)| segment > *s) {
                            newest = Some((segment, path));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
        let current = match newest {
            Some((segment, path)) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                let len = file.metadata().map_err(io(&path))?.len();
                Some(Current {
                    segment,
                    file,
                    len,
                    unsynced: false,
                })
            }
            None => None,
        };
        Ok(SegmentWriter {
            store_dir: store_dir.to_path_buf(),
            dir,
            current,
            dirs_to_sync: Vec::new(),
        })
    }

    /// Writes a block whose first record is `first`; returns its pointer (not durable until
    /// [`SegmentWriter::sync`]).
    pub(crate) fn append(&mut self, first: Seq, block: &[u8]) -> Result<Vec<u8>, StoreError> {
        let full = self
            .current
            .as_ref()
            .is_none_or(|c| c.len > 0 && c.len + block.len() as u64 > SEGMENT_BYTES);
        if full {
            self.start(first)?;
        }
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::Db("no log segment to write to".into()));
        };
        let path = segment_path(&self.dir, current.segment);
        current
            .file
            .write_all_at(block, current.len)
            .map_err(io(&path))?;
        let mut pointer = Vec::with_capacity(POINTER_LEN);
        pointer.push(POINTER_TAG);
        pointer.extend_from_slice(&current.segment.to_be_bytes());
        pointer.extend_from_slice(&current.len.to_be_bytes());
        pointer.extend_from_slice(&(block.len() as u32).to_be_bytes());
        current.len += block.len() as u64;
        current.unsynced = true;
        Ok(pointer)
    }

    /// Starts segment `first`, after making the one before it durable.
    fn start(&mut self, first: Seq) -> Result<(), StoreError> {
        self.sync()?;
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
            self.dirs_to_sync.push(self.store_dir.clone());
        }
        let path = segment_path(&self.dir, first);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        self.dirs_to_sync.push(self.dir.clone());
        self.current = Some(Current {
            segment: first,
            file,
            len: 0,
            unsynced: false,
        });
        Ok(())
    }

    /// Makes every block appended so far durable, with the directory entries of new files.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(current) = self.current.as_mut().filter(|c| c.unsynced) {
            let path = segment_path(&self.dir, current.segment);
            current.file.sync_data().map_err(io(&path))?;
            current.unsynced = false;
        }
        // Children first: the store directory names `log/`, which names the segment.
        while let Some(dir) = self.dirs_to_sync.pop() {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_through_their_pointers_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::open(dir.path()).unwrap();
        let reader = SegmentReader::new(dir.path());
        let big = vec![7u8; (SEGMENT_BYTES / 2 + 1) as usize];
        let mut pointers = Vec::new();
        for (first, block) in [
            (1, b"one".to_vec()),
            (2, big.clone()),
            (3, big),
            (4, b"x".into()),
        ] {
            pointers.push((writer.append(first, &block).unwrap(), block));
        }
        writer.sync().unwrap();
        for (pointer, block) in &pointers {
            assert_eq!(pointer.len(), POINTER_LEN);
            let read = reader.block(sled::IVec::from(pointer.as_slice())).unwrap();
            assert_eq!(read.as_ref(), block.as_slice());
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join(SEGMENT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["00000000000000000001.seg", "00000000000000000003.seg"],
            "a segment is full once the next block would take it past its size"
        );
        // Reopened, the writer continues the newest segment after its last byte.
        drop(writer);
        let mut writer = SegmentWriter::open(dir.path()).unwrap();
        let pointer = writer.append(5, b"five").unwrap();
        writer.sync().unwrap();
        assert_eq!(parse_pointer(&pointer).unwrap().0, 3);
        let read = reader.block(sled::IVec::from(pointer)).unwrap();
        assert_eq!(read.as_ref(), b"five");
    }

    #[test]
    fn a_value_that_is_not_a_pointer_is_the_block_itself() {
        let reader = SegmentReader::new(Path::new("/nonexistent"));
        let legacy = sled::IVec::from(&[2u8, 1, 0, 0, 0][..]);
        assert_eq!(reader.block(legacy.clone()).unwrap(), legacy);
        let dangling = [POINTER_TAG; POINTER_LEN];
        assert!(matches!(
            reader.block(sled::IVec::from(&dangling[..])),
            Err(StoreError::Io { .. })
        ));
    }
}
