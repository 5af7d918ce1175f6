//! The bytes of the log: the one place that knows how envelopes and blocks are encoded.
//!
//! A *block* is the value stored for one commit (or up to [`MAX_BLOCK_RECORDS`] of it) under the
//! key `b'L' + first seq (u64 BE)`:
//!
//! ```text
//! [BLOCK_VERSION = 2][u32 LE uncompressed length][lz4 block of bincode(Vec<Envelope>)][crc32 LE]
//! ```
//!
//! The crc covers every preceding byte, so changing any byte of a stored value is detected.
//! Envelopes are encoded with bincode's own derive (`Encode`/`Decode` on the model types), which
//! writes exactly the bytes its serde path wrote before (a test holds them equal) at a fraction
//! of the cost; ids are decoded borrowed, without allocating. The bincode configuration is fixed
//! here (standard: little endian, varint integers) so a migration can move the format on by
//! adding a version; the benchmark decodes the same bytes through these functions.

use ivrstate_model::{Envelope, Record, Seq};
use std::borrow::Borrow;

mod fast;

/// The version byte this build writes (and the only one it reads; older ones are migrated).
pub const BLOCK_VERSION: u8 = 2;

/// At most this many records per block: a larger append writes several blocks in one batch, so
/// a point read never decodes more than this.
pub const MAX_BLOCK_RECORDS: usize = 4096;

/// Decoding refuses payloads claiming more than this (a corrupt length must not allocate GBs).
const MAX_PAYLOAD: usize = 256 << 20;

/// Every encode and decode of the log uses the one configuration (with its decode limit:
/// bincode's own `Vec` decoding preallocates the length it reads).
pub(crate) use ivrstate_model::bincode_config as config;
pub(crate) use ivrstate_model::bincode_config as decode_config;

/// Why bytes could not be turned back into envelopes (or envelopes into bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("block is too short ({0} bytes)")]
    TooShort(usize),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown block version {0} (this ivrstate reads version {BLOCK_VERSION})")]
    Version(u8),
    #[error("block claims {0} uncompressed bytes, more than any block can hold")]
    TooLarge(usize),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("undecodable envelopes: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the envelopes")]
    Trailing(usize),
    #[error("cannot encode an envelope: {0}")]
    Encode(String),
}

/// One envelope as bincode (the unit the benchmark compares against).
pub fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    append_envelope(env, &mut out)?;
    Ok(out)
}

/// Appends `env` as bincode: through the fast path (see [`fast`]) when it has the common shape,
/// else through bincode's derive. The same bytes either way (tested).
fn append_envelope(env: &Envelope, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if fast::encode_envelope(env, out) {
        return Ok(());
    }
    /// Writes straight into the Vec, in one pass (`bincode::encode_to_vec` encodes twice: once
    /// to count the bytes, once to write them).
    struct Appender<'a>(&'a mut Vec<u8>);
    impl bincode::enc::write::Writer for Appender<'_> {
        #[inline(always)]
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    bincode::encode_into_writer(env, Appender(out), config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// The inverse of [`encode_envelope`]; the whole slice must be one envelope.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, CodecError> {
    if let Some((env, [])) = fast::envelope(bytes) {
        return Ok(env);
    }
    let (env, used): (Envelope, usize) = bincode::borrow_decode_from_slice(bytes, decode_config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(env)
}

/// The stored value of a block holding `envs` (envelopes or references to them, so the log can
/// encode borrowed envelopes without cloning them).
pub fn encode_block<E: Borrow<Envelope>>(envs: &[E]) -> Result<Vec<u8>, CodecError> {
    // A `Vec<Envelope>` as bincode writes it: the count, then each envelope.
    let mut raw = Vec::with_capacity(64 * envs.len() + 9);
    fast::put_u64(&mut raw, envs.len() as u64);
    for env in envs {
        append_envelope(env.borrow(), &mut raw)?;
    }
    let compressed = lz4_flex::compress_prepend_size(&raw);
    let mut out = Vec::with_capacity(compressed.len() + 5);
    out.push(BLOCK_VERSION);
    out.extend_from_slice(&compressed);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks a block's checksum and version, and returns its bincode payload, decompressed.
pub fn open_block(value: &[u8]) -> Result<Vec<u8>, CodecError> {
    if value.len() < 9 {
        return Err(CodecError::TooShort(value.len()));
    }
    let (body, crc) = value.split_at(value.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    if body[0] != BLOCK_VERSION {
        return Err(CodecError::Version(body[0]));
    }
    let len = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(CodecError::TooLarge(len));
    }
    lz4_flex::block::decompress(&body[5..], len).map_err(|e| CodecError::Decompress(e.to_string()))
}

/// The envelopes of a stored block, after every check of [`open_block`].
pub fn decode_block(value: &[u8]) -> Result<Vec<Envelope>, CodecError> {
    decode_envelopes(&open_block(value)?, |env| env)
}

/// The records of a stored block whose first seq is `first`, after every check of
/// [`open_block`]: built in place, so a reader hands them on without moving each envelope.
pub fn decode_block_records(value: &[u8], first: Seq) -> Result<Vec<Record>, CodecError> {
    let mut seq = first;
    decode_envelopes(&open_block(value)?, |envelope| {
        seq += 1;
        Record {
            seq: seq - 1,
            envelope,
        }
    })
}

/// A bincode `Vec<Envelope>`, each envelope through the fast path (or bincode where it
/// declines) and then through `make`.
fn decode_envelopes<T>(
    raw: &[u8],
    mut make: impl FnMut(Envelope) -> T,
) -> Result<Vec<T>, CodecError> {
    let bad = |e: bincode::error::DecodeError| CodecError::Decode(e.to_string());
    let (count, used): (u64, usize) =
        bincode::decode_from_slice(raw, decode_config()).map_err(bad)?;
    let mut rest = &raw[used..];
    // Every envelope takes at least three bytes: a larger count is damage, not an allocation.
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= rest.len() / 3)
        .ok_or_else(|| CodecError::Decode(format!("a block claims {count} envelopes")))?;
    let mut envs = Vec::with_capacity(count);
    for _ in 0..count {
        let (env, after) = match fast::envelope(rest) {
            Some(decoded) => decoded,
            None => {
                let (env, used): (Envelope, usize) =
                    bincode::borrow_decode_from_slice(rest, decode_config()).map_err(bad)?;
                (env, &rest[used..])
            }
        };
        envs.push(make(env));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(envs)
}

/// The uncompressed payload of a version-1 block (`[1][bincode][crc]`): what a store written
/// before m0002 held. Only tests build such stores; kept here so they use the same bincode.
#[cfg(test)]
pub(crate) fn encode_block_v1(envs: &[Envelope]) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend(bincode::serde::encode_to_vec(envs, config()).unwrap_or_default());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}
