//! State as bytes, for the engine's snapshots. The encoding lives only here so that a migration
//! could move it to another format: a version byte, then bincode 2 (standard configuration:
//! little endian, variable-length integers) of the serde form of [`State`].

use crate::state::State;
use thiserror::Error;

/// The first byte of every snapshot. Bump it when `State`'s serde form changes.
pub const SNAPSHOT_VERSION: u8 = 1;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("empty snapshot")]
    Empty,
    #[error("snapshot format version {found}, this build reads version {SNAPSHOT_VERSION}")]
    Version { found: u8 },
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("snapshot has {0} trailing bytes")]
    Trailing(usize),
    #[error("state does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

use ivrstate_model::bincode_config as config;

impl State {
    /// Encodes the state (the same state always gives the same bytes: every map is ordered).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // Encoding into a Vec cannot fail for this type (no maps with non-string-like keys, no
        // unsupported serde features); should it ever, an empty body fails loudly on decode.
        if let Err(e) = bincode::serde::encode_into_std_write(self, &mut out, config()) {
            debug_assert!(false, "State must always encode: {e}");
            out.truncate(1);
        }
        out
    }

    /// Decodes a snapshot made by [`State::to_bytes`]; any other input is an error, not a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<State, SnapshotError> {
        let (&version, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version { found: version });
        }
        let (state, used) = bincode::serde::decode_from_slice::<State, _>(body, config())?;
        if used != body.len() {
            return Err(SnapshotError::Trailing(body.len() - used));
        }
        Ok(state)
    }
}
