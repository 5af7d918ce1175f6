//! Version 4: where each record came from.
//!
//! A `provenance` tree holds the table of sources (`S` + id, u32 big-endian -> the source in
//! words, UTF-8) and runs of records (`R` + first seq, u64 big-endian -> source id, u32
//! big-endian: that record and every one after it up to the next run came from that source).
//! Records stored before this step get source 0, "unknown, from before provenance".

use crate::{MigrationError, LOG_TREE, PROVENANCE_TREE, UNKNOWN_SOURCE};

pub fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    let tree = db.open_tree(PROVENANCE_TREE)?;
    let log = db.open_tree(LOG_TREE)?;
    let mut batch = sled::Batch::default();
    batch.insert(&[b'S', 0, 0, 0, 0][..], UNKNOWN_SOURCE.as_bytes());
    // The first block's key is `L` + the seq of its first record.
    if let Some(first) = log.scan_prefix([b'L']).next() {
        let (key, _) = first?;
        let mut run = vec![b'R'];
        run.extend_from_slice(key.get(1..9).unwrap_or(&[0, 0, 0, 0, 0, 0, 0, 1]));
        batch.insert(run, &0u32.to_be_bytes()[..]);
    }
    tree.apply_batch(batch)?;
    Ok(())
}
