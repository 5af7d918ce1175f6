//! The one bincode configuration of everything ivrstate stores: the log's blocks, the engine's
//! history chunks and derived entries, the fold's snapshots.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

/// The most one decode may claim. bincode allocates a string or a vector of the length its
/// input claims before reading it, so a damaged length would otherwise ask for hundreds of GB and
/// abort the process; with a limit it is a decode error. Far above anything real (an envelope
/// is a few KB, a history chunk some KB, the whole state of a large site some MB).
pub const DECODE_LIMIT: usize = 256 << 20;

/// bincode 2's standard encoding (little endian, variable-length integers) with
/// [`DECODE_LIMIT`]. The limit is not part of the bytes: encoding ignores it.
pub type BincodeConfig = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

/// The configuration of every bincode encode and decode of stored bytes.
pub const fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}
