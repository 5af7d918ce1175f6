//! The store: one sled database per directory, brought to the current format on open.
//!
//! Trees: `meta` (format version and applied migrations, owned by the migrations crate), `log`
//! (the [`EventLog`]), `derived:<name>` for each [`DerivedTree`], and `replica` (a cluster
//! node's position in the stream it applies; created on first use).

use crate::derived::DerivedTree;
use crate::error::StoreError;
use crate::log::{DiskSync, Durability, EventLog};
use ivrstate_migrations::{LOG_TREE, PROVENANCE_TREE};
use std::path::{Path, PathBuf};

/// sled's default cache is 1 GiB, which cost 330 MB of memory; the log is written once and read
/// sequentially, so a small cache loses little.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

const DERIVED_PREFIX: &str = "derived:";
const REPLICA_TREE: &str = "replica";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// An open store. Cheap to clone; the database closes when the last clone (and every
/// [`EventLog`] and [`DerivedTree`] taken from it) is dropped.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    log: EventLog,
    path: PathBuf,
}

impl Store {
    /// Opens the store in `dir`, creating it if needed and migrating an older one. A store from a
    /// newer ivrstate is refused (and not written to); a directory holding something else is
    /// refused with [`StoreError::NotAStore`].
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        check_dir(dir)?;
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        remove_unfinished_snapshots(dir).map_err(io)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes);
        let db = open_sled(dir, &config)?;
        let applied =
            ivrstate_migrations::migrate(&db).map_err(|source| StoreError::Migration {
                path: dir.to_path_buf(),
                source,
            })?;
        if !applied.is_empty() {
            tracing::info!(store = %dir.display(), steps = ?applied, "migrated the store");
        }
        // sled has created `db` (the file its log lives in) and `blobs/` by now.
        let disk = DiskSync::open(dir)?;
        let log = EventLog::open(
            dir,
            db.open_tree(LOG_TREE)?,
            db.open_tree(PROVENANCE_TREE)?,
            opts.durability,
            Some(disk),
        )?;
        Ok(Store {
            db,
            log,
            path: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The derived tree `name` (created empty if new).
    pub fn derived(&self, name: &str) -> Result<DerivedTree, StoreError> {
        if name.is_empty() {
            return Err(StoreError::InvalidName(name.into()));
        }
        Ok(DerivedTree::new(
            self.db.open_tree(format!("{DERIVED_PREFIX}{name}"))?,
        ))
    }

    /// Drops every derived tree. Handles taken before must not be used afterwards; take new ones.
    pub fn drop_derived(&self) -> Result<(), StoreError> {
        for name in self.db.tree_names() {
            if name.starts_with(DERIVED_PREFIX.as_bytes()) {
                self.db.drop_tree(&name)?;
            }
        }
        Ok(())
    }

    /// A value a cluster node keeps beside its log (where it is in the stream). Not derived
    /// data: `rebuild` leaves it. Written without a flush; durable with the next one.
    pub fn replica_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .open_tree(REPLICA_TREE)?
            .get(key)?
            .map(|v| v.to_vec()))
    }

    pub fn replica_put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.open_tree(REPLICA_TREE)?.insert(key, value)?;
        Ok(())
    }

    /// Makes everything written so far durable: sled's flush, then the fsyncs sled leaves out
    /// (see [`Durability::Full`] for why sled's flush alone is not enough). The log's flush is
    /// the whole database's: every tree writes into the one sled log it flushes.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.log.sync()
    }

    /// Bytes of every file in the store directory.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.path)
    }
}

/// How long opening waits for sled's lock on the database file: long enough for sled to let
/// go of a store just closed in this process (milliseconds), short enough that a command run
/// while `serve` holds the store says so at once.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// `config.open()`, waiting up to [`LOCK_WAIT`] while the database file is locked: sled
/// releases its lock only when the last of its I/O threads lets go of the file, a moment after
/// the last handle of a store closed in this process is dropped. Another process that holds the
/// store keeps it locked: [`StoreError::Locked`] after the wait.
///
/// sled reports most damage as an error, but some as a panic; neither may take down the caller,
/// so a panic while opening is turned into an error too.
fn open_sled(dir: &Path, config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let reason = match opened {
            Ok(Ok(db)) => return Ok(db),
            // sled says "could not acquire lock" only in words; whether the file is locked is
            // asked of the OS instead.
            Ok(Err(sled::Error::Io(_))) if db_file_locked(dir) => {
                if std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Ok(Err(e)) => format!(
                "cannot open the database: {}",
                crate::error::describe_sled(&e)
            ),
            Err(_) => "the database is damaged (sled panicked while opening it)".to_owned(),
        };
        return Err(StoreError::NotAStore {
            path: dir.to_path_buf(),
            reason,
        });
    }
}

/// Whether another open file description holds the exclusive lock sled takes on `dir/db`
/// (`flock`, as sled's `fs2` does).
#[cfg(unix)]
fn db_file_locked(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        return false;
    };
    // SAFETY: `file` owns a valid open descriptor for the duration of both calls; flock does
    // not touch memory. The lock, if taken, is released at once (and with the descriptor).
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if taken == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return false;
    }
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(not(unix))]
fn db_file_locked(_: &Path) -> bool {
    false
}

/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, syncs it, then renames it to
/// `snap.<lsn>`; but when it opens a database it takes the last `snap.*` file by name, and a
/// `.generating` one sorts after the finished snapshot of the same lsn. A process killed while
/// writing one, or a write that failed on a full disk, leaves a partial file behind, and every
/// later open then fails with "Read corrupted data" (sled issue #1527): the store is lost
/// although its log is intact. The rename never happened, so the file was never the current
/// snapshot: removing it puts the directory back where it was before sled began writing it,
/// which is a state sled recovers from (its log holds everything the snapshot would).
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing an unfinished sled snapshot");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Refuses a path that is a file, or a non-empty directory that holds no sled database: opening
/// one would scatter sled files among someone else's.
fn check_dir(dir: &Path) -> Result<(), StoreError> {
    let not_a_store = |reason: String| StoreError::NotAStore {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(not_a_store("it is a file, not a directory".into()));
    }
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    // sled creates `blobs/` before `conf` and `db`: a process killed in between (the first open
    // of a new store) leaves an empty `blobs/`, perhaps `conf`, and nothing stored.
    let creation_interrupted = !has("db")
        && names.iter().all(|n| n == "blobs" || n == "conf")
        && std::fs::read_dir(dir.join("blobs")).map_or(true, |mut e| e.next().is_none());
    let complete = has("db") && has("conf");
    if !(complete || creation_interrupted) {
        let mut shown: Vec<&str> = names.iter().map(String::as_str).take(3).collect();
        shown.sort_unstable();
        return Err(not_a_store(format!(
            "the directory is not empty and holds no database (it has {})",
            shown.join(", ")
        )));
    }
    Ok(())
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
