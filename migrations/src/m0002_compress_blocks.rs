//! Version 2: log blocks are lz4-compressed.
//!
//! A log block is the value of a key `b'L' + first seq (u64 BE)` in the `log` tree.
//! Version 1: `[1][bincode of the envelopes][crc32 LE of the preceding bytes]`.
//! Version 2: `[2][u32 LE uncompressed length][lz4 block of the bincode][crc32 LE of the
//! preceding bytes]` (the lz4_flex "size prepended" layout).
//!
//! Byte level: the bincode payload is moved, never decoded, so this step needs no model types.
//! Blocks are rewritten in chunks; a block already at version 2 is skipped, so a run that was
//! interrupted is simply resumed on the next open (the version is recorded only at the end).

use crate::{MigrationError, LOG_TREE};

const STEP: &str = "m0002_compress_blocks";
const CHUNK: usize = 256;

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    let log = db.open_tree(LOG_TREE)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut rewritten = 0u64;
    for entry in log.scan_prefix(b"L") {
        let (key, value) = entry?;
        let Some(new) = rewrite(&key, &value)? else {
            continue;
        };
        batch.insert(key, new);
        pending += 1;
        if pending == CHUNK {
            log.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
        rewritten += 1;
    }
    if pending > 0 {
        log.apply_batch(batch)?;
    }
    db.flush()?;
    tracing::info!(blocks = rewritten, "compressed log blocks");
    Ok(())
}

/// The version-2 bytes of a version-1 block; `None` if it is already version 2.
fn rewrite(key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, MigrationError> {
    let fail = |reason: String| MigrationError::Step { step: STEP, reason };
    let seq = key
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes);
    let at = || match seq {
        Some(s) => format!("log block at seq {s}"),
        None => format!("log key {key:02x?}"),
    };
    if value.len() < 5 {
        return Err(fail(format!(
            "{} is too short ({} bytes)",
            at(),
            value.len()
        )));
    }
    let (body, crc) = value.split_at(value.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored {
        return Err(fail(format!(
            "{} fails its checksum; the store is damaged",
            at()
        )));
    }
    match body[0] {
        1 => {}
        2 => return Ok(None),
        v => return Err(fail(format!("{} has unknown block version {v}", at()))),
    }
    let compressed = lz4_flex::compress_prepend_size(&body[1..]);
    let mut out = Vec::with_capacity(compressed.len() + 5);
    out.push(2);
    out.extend_from_slice(&compressed);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(Some(out))
}
