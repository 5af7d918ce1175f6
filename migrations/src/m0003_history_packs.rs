//! Version 3: derived history keeps its chunks in pack files beside sled, and sled holds a
//! tagged value (the chunk inline, or a pointer into a pack) where it held the chunk itself.
//!
//! Derived data is recomputable from the log, so this step does not convert it: it drops every
//! derived tree (sled trees named `derived:...`), and the engine derives them again, in the new
//! layout, when it opens the store. Dropping is idempotent, so an interrupted run is simply
//! repeated on the next open (the version is recorded only at the end).

use crate::MigrationError;

/// The name prefix of the engine's derived trees.
const DERIVED_PREFIX: &[u8] = b"derived:";

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    for name in db.tree_names() {
        if name.starts_with(DERIVED_PREFIX) {
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}
