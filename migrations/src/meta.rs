//! The records of the `meta` tree that belong to migrations: the format version and the list of
//! applied steps.

use crate::MigrationError;

pub const META_TREE: &str = "meta";
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";
pub const APPLIED_PREFIX: &[u8] = b"applied:";

/// The store's format version, or `None` for a store that never had one (a new, empty store).
/// Reads without creating the meta tree, so a refused store is not written to.
pub fn format_version(db: &sled::Db) -> Result<Option<u32>, MigrationError> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == META_TREE.as_bytes())
    {
        return Ok(None);
    }
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_VERSION_KEY)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                MigrationError::NotAStore(format!(
                    "format version record has {} bytes, not 4",
                    v.len()
                ))
            })?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
    }
}

/// The names of the applied steps, in the order they were applied.
pub fn applied(db: &sled::Db) -> Result<Vec<String>, MigrationError> {
    if format_version(db)?.is_none() {
        return Ok(Vec::new());
    }
    let meta = db.open_tree(META_TREE)?;
    let mut steps = Vec::new();
    for entry in meta.scan_prefix(APPLIED_PREFIX) {
        let (k, v) = entry?;
        let version = <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .unwrap_or(u32::MAX);
        steps.push((
            version,
            String::from_utf8_lossy(&k[APPLIED_PREFIX.len()..]).into_owned(),
        ));
    }
    steps.sort();
    Ok(steps.into_iter().map(|(_, name)| name).collect())
}

/// Records a step and the version it produced in one atomic batch, then makes it durable: a
/// crash never leaves a version without its step, or the reverse.
pub(crate) fn record(db: &sled::Db, step: &str, version: u32) -> Result<(), MigrationError> {
    let meta = db.open_tree(META_TREE)?;
    let mut batch = sled::Batch::default();
    let mut key = APPLIED_PREFIX.to_vec();
    key.extend_from_slice(step.as_bytes());
    batch.insert(key, &version.to_be_bytes());
    batch.insert(FORMAT_VERSION_KEY, &version.to_be_bytes());
    meta.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
