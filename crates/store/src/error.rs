//! The store's error type. sled's own error is kept as text so no sled type leaks into the API.

use crate::codec::CodecError;
use ivrstate_model::Seq;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process (a running `serve`?) has the store open: sled holds an exclusive lock.
    #[error("{path}: the store is in use by another process")]
    Locked { path: PathBuf },
    #[error("{path}: not an ivrstate store: {reason}")]
    NotAStore { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Migration {
        path: PathBuf,
        #[source]
        source: ivrstate_migrations::MigrationError,
    },
    #[error("database error: {0}")]
    Db(String),
    #[error("log block at seq {seq} is damaged: {source}")]
    Corrupt {
        seq: Seq,
        #[source]
        source: CodecError,
    },
    #[error(
        "log is damaged ({0}); appends are refused until it is repaired (run `ivrstate verify`)"
    )]
    Damaged(String),
    #[error("cannot encode envelopes: {0}")]
    Encode(#[source] CodecError),
    #[error("invalid derived tree name {0:?}")]
    InvalidName(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(describe_sled(&e))
    }
}

/// sled's errors in words for people: an I/O error as the OS says it ("No space left on
/// device"), corruption as damage, not sled's debug form.
pub(crate) fn describe_sled(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) => io.to_string(),
        sled::Error::Corruption { .. } => {
            "the store's files are damaged (sled found corrupted data)".to_owned()
        }
        other => other.to_string(),
    }
}
