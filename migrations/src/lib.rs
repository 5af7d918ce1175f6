//! The store's format version and the numbered steps that bring an older store up to date.
//!
//! The `meta` tree records the format version (`format_version`, u32 big-endian) and one key per
//! applied step (`applied:<name>` = the version it produced, u32 big-endian). [`migrate`] reads
//! the version, refuses a store from a newer ivrstate *before writing anything*, and applies the
//! pending steps in order, recording each one together with the new version in one atomic batch.
//!
//! Steps are append-only: once released, a step's code never changes (it describes the bytes of
//! the format it migrates from, which is why the block framing is written out here and not
//! borrowed from the ingest crate's codec, which only knows the current format).

mod m0001_initial;
mod m0002_compress_blocks;
mod m0003_history_packs;
mod m0004_provenance;
mod m0005_history_columns;
mod meta;

pub use meta::{applied, format_version, APPLIED_PREFIX, FORMAT_VERSION_KEY, META_TREE};

/// The format version this build writes. A store at a lower version is migrated on open; one
/// at a higher version is refused.
pub const CURRENT_VERSION: u32 = 5;

/// The sled tree that holds the event log (blocks and the dedup index).
pub const LOG_TREE: &str = "log";

/// The sled tree that says where each record came from (see `m0004_provenance`).
pub const PROVENANCE_TREE: &str = "provenance";

/// Source 0: the records of a store from before provenance was kept.
pub const UNKNOWN_SOURCE: &str = "unknown, from before provenance";

/// Why a store could not be brought to the current format.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the store has format version {found}, newer than the version {supported} this ivrstate \
         supports; use a newer ivrstate (the store was left untouched)"
    )]
    NewerVersion { found: u32, supported: u32 },
    #[error("not an ivrstate store: {0}")]
    NotAStore(String),
    #[error("migration {step} failed: {reason}")]
    Step { step: &'static str, reason: String },
    #[error("database error during migration: {0}")]
    Db(String),
}

impl From<sled::Error> for MigrationError {
    fn from(e: sled::Error) -> Self {
        MigrationError::Db(e.to_string())
    }
}

/// One numbered step: it takes a store at `version - 1` to `version`.
struct Step {
    name: &'static str,
    version: u32,
    apply: fn(&sled::Db) -> Result<(), MigrationError>,
}

/// Every step, in order. Append only; never edit or reorder a released step.
const STEPS: &[Step] = &[
    Step {
        name: "m0001_initial",
        version: 1,
        apply: m0001_initial::apply,
    },
    Step {
        name: "m0002_compress_blocks",
        version: 2,
        apply: m0002_compress_blocks::apply,
    },
    Step {
        name: "m0003_history_packs",
        version: 3,
        apply: m0003_history_packs::apply,
    },
    Step {
        name: "m0004_provenance",
        version: 4,
        apply: m0004_provenance::apply,
    },
    Step {
        name: "m0005_history_columns",
        version: 5,
        apply: m0005_history_columns::apply,
    },
];

/// Brings the store to [`CURRENT_VERSION`] and returns the names of the steps it applied (empty
/// when the store was already current). A store from a newer version, or a database that is not
/// an ivrstate store, is refused before anything is written.
pub fn migrate(db: &sled::Db) -> Result<Vec<&'static str>, MigrationError> {
    let found = match meta::format_version(db)? {
        Some(v) => v,
        None => {
            ensure_empty(db)?;
            0
        }
    };
    if found > CURRENT_VERSION {
        return Err(MigrationError::NewerVersion {
            found,
            supported: CURRENT_VERSION,
        });
    }
    let mut applied = Vec::new();
    for step in STEPS.iter().filter(|s| s.version > found) {
        tracing::info!(
            step = step.name,
            version = step.version,
            "applying store migration"
        );
        (step.apply)(db)?;
        meta::record(db, step.name, step.version)?;
        applied.push(step.name);
    }
    Ok(applied)
}

/// A database without a format version must be empty: anything else is someone else's data,
/// which we must not adopt (or write into).
fn ensure_empty(db: &sled::Db) -> Result<(), MigrationError> {
    if !db.is_empty() {
        return Err(MigrationError::NotAStore(
            "the database has data but no format version".into(),
        ));
    }
    for name in db.tree_names() {
        // The default tree is always listed; a tree we would create ourselves is only a sign of
        // an interrupted first open if it is still empty.
        if name.as_ref() == b"__sled__default" {
            continue;
        }
        let tree = db.open_tree(&name)?;
        if !tree.is_empty() {
            return Err(MigrationError::NotAStore(format!(
                "tree {:?} has data but the store has no format version",
                String::from_utf8_lossy(&name)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
