//! Version 5: a history chunk holds each state once (per DN; the per-agent copy became an index
//! of the DNs an agent used), written as what changed since the state before instead of lz4 of
//! its bincode (issue 13: the history was half of the store's bytes).
//!
//! Derived data is recomputable from the log, so, as in version 3, the step drops the derived
//! trees and the engine derives them again in the new layout when it opens the store (the
//! packs of the old chunks are removed then, being past the new `derived_seq`).

use crate::MigrationError;

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    crate::m0003_history_packs::apply(db)
}
