//! The store: one sled database per directory, migrated on open.
//!
//! - [`Store`]: the [`EventLog`] (append with dedup and group commit, read, tail, verify),
//!   [`DerivedTree`]s for the engine, metadata.
//! - [`codec`]: the bytes of the log, in one place.

pub mod codec;
mod dedup;
mod derived;
mod error;
mod log;
mod provenance;
mod read_ahead;
mod store;

pub use derived::{DerivedBatch, DerivedIter, DerivedTree, Entry};
pub use error::StoreError;
pub use ivrstate_migrations::{MigrationError, CURRENT_VERSION, UNKNOWN_SOURCE};
pub use log::{
    AppendOutcome, AppendReport, Durability, EventLog, PendingAppend, ReadIter, VerifyFault,
    VerifyReport,
};
pub use provenance::{decode_lines, encode_lines, Provenance, SourceRun, UNSPECIFIED_SOURCE};
pub use read_ahead::{limit_malloc_arenas, ReadAhead};
pub use store::{Store, StoreOptions, DEFAULT_CACHE_BYTES};

#[cfg(test)]
mod perf;
#[cfg(test)]
mod tests;
