//! Version 1: the meta tree and the (empty) log tree of a new store.
//!
//! The version record itself is written by [`crate::migrate`] once this step returns.

use crate::{MigrationError, LOG_TREE, META_TREE};

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    db.open_tree(META_TREE)?;
    db.open_tree(LOG_TREE)?;
    Ok(())
}
