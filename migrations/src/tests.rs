use super::*;

fn open(dir: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .cache_capacity(1 << 20)
        .open()
        .unwrap()
}

fn frame(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![version];
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Every step, in order: a store at version N has applied the first N.
const ALL_STEPS: [&str; 5] = [
    "m0001_initial",
    "m0002_compress_blocks",
    "m0003_history_packs",
    "m0004_provenance",
    "m0005_history_columns",
];

/// A store as version `version` left it: that version, and the steps up to it applied.
fn at_version(db: &sled::Db, version: u32) {
    set_version(db, version, &ALL_STEPS[..version as usize]);
}

fn set_version(db: &sled::Db, version: u32, steps: &[&str]) {
    let meta = db.open_tree(META_TREE).unwrap();
    meta.insert(FORMAT_VERSION_KEY, &version.to_be_bytes())
        .unwrap();
    for (i, s) in steps.iter().enumerate() {
        meta.insert(
            [APPLIED_PREFIX, s.as_bytes()].concat(),
            &(i as u32 + 1).to_be_bytes(),
        )
        .unwrap();
    }
}

#[test]
fn a_new_store_gets_every_step_and_is_then_current() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let all = ALL_STEPS.to_vec();
    assert_eq!(migrate(&db).unwrap(), all);
    assert_eq!(format_version(&db).unwrap(), Some(CURRENT_VERSION));
    assert_eq!(applied(&db).unwrap(), all);
    assert!(migrate(&db).unwrap().is_empty());
}

#[test]
fn a_newer_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    set_version(&db, CURRENT_VERSION + 1, &["m0001_initial"]);
    db.open_tree(LOG_TREE)
        .unwrap()
        .insert(b"Lxxxxxxxx", b"future bytes".as_slice())
        .unwrap();
    let before: Vec<_> = db
        .open_tree(META_TREE)
        .unwrap()
        .iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let err = migrate(&db).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, MigrationError::NewerVersion { found, supported } if found == CURRENT_VERSION + 1 && supported == CURRENT_VERSION)
    );
    assert!(
        msg.contains(&format!("{}", CURRENT_VERSION + 1))
            && msg.contains(&CURRENT_VERSION.to_string()),
        "{msg}"
    );
    let after: Vec<_> = db
        .open_tree(META_TREE)
        .unwrap()
        .iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(before, after);
    let log = db.open_tree(LOG_TREE).unwrap();
    assert_eq!(
        log.get(b"Lxxxxxxxx").unwrap().unwrap().as_ref(),
        b"future bytes"
    );
}

#[test]
fn version_1_blocks_are_compressed_by_m0002() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    at_version(&db, 1);
    let log = db.open_tree(LOG_TREE).unwrap();
    let payloads: Vec<Vec<u8>> = (0..600u32)
        .map(|i| format!("payload {i} ").repeat(20).into_bytes())
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        let mut key = vec![b'L'];
        key.extend_from_slice(&(i as u64 + 1).to_be_bytes());
        log.insert(key, frame(1, p)).unwrap();
    }
    // A dedup index entry is not a block and must be left alone.
    log.insert(b"D\x00\x00\x00\x01x", b"keep".as_slice())
        .unwrap();
    assert_eq!(migrate(&db).unwrap(), ALL_STEPS[1..]);
    assert_eq!(format_version(&db).unwrap(), Some(CURRENT_VERSION));
    assert_eq!(applied(&db).unwrap(), ALL_STEPS);
    for (i, p) in payloads.iter().enumerate() {
        let mut key = vec![b'L'];
        key.extend_from_slice(&(i as u64 + 1).to_be_bytes());
        let v = log.get(key).unwrap().unwrap();
        let (body, crc) = v.split_at(v.len() - 4);
        assert_eq!(crc32fast::hash(body).to_le_bytes(), crc);
        assert_eq!(body[0], 2);
        assert!(body.len() < p.len(), "compressed");
        assert_eq!(&lz4_flex::decompress_size_prepended(&body[1..]).unwrap(), p);
    }
    assert_eq!(
        log.get(b"D\x00\x00\x00\x01x").unwrap().unwrap().as_ref(),
        b"keep"
    );
}

#[test]
fn a_damaged_version_1_block_stops_the_migration_without_recording_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    at_version(&db, 1);
    let log = db.open_tree(LOG_TREE).unwrap();
    let mut bad = frame(1, b"abcdef");
    bad[3] ^= 0x40;
    log.insert([b"L".as_slice(), &7u64.to_be_bytes()].concat(), bad)
        .unwrap();
    let err = migrate(&db).unwrap_err().to_string();
    assert!(
        err.contains("m0002_compress_blocks") && err.contains("seq 7") && err.contains("checksum"),
        "{err}"
    );
    assert_eq!(format_version(&db).unwrap(), Some(1));
}

#[test]
fn a_database_with_foreign_data_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.insert(b"someone", b"else".as_slice()).unwrap();
    assert!(matches!(migrate(&db), Err(MigrationError::NotAStore(_))));
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = open(dir2.path());
    db2.open_tree("theirs")
        .unwrap()
        .insert(b"k", b"v".as_slice())
        .unwrap();
    assert!(matches!(migrate(&db2), Err(MigrationError::NotAStore(_))));
    assert_eq!(format_version(&db2).unwrap(), None);
}

#[test]
fn m0003_drops_the_derived_trees_and_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    at_version(&db, 2);
    let log = db.open_tree(LOG_TREE).unwrap();
    log.insert(b"L\0\0\0\0\0\0\0\x01", frame(2, b"block"))
        .unwrap();
    let derived = db.open_tree("derived:derived").unwrap();
    derived.insert(b"Cchunk", b"old layout").unwrap();
    assert_eq!(migrate(&db).unwrap(), ALL_STEPS[2..]);
    assert_eq!(format_version(&db).unwrap(), Some(CURRENT_VERSION));
    assert!(!db.tree_names().iter().any(|n| n.starts_with(b"derived:")));
    let log = db.open_tree(LOG_TREE).unwrap();
    assert_eq!(log.len(), 1);
}

#[test]
fn m0004_gives_the_records_of_an_older_store_the_unknown_source() {
    for records in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        at_version(&db, 3);
        if records {
            let mut key = vec![b'L'];
            key.extend_from_slice(&1u64.to_be_bytes());
            db.open_tree(LOG_TREE)
                .unwrap()
                .insert(key, frame(2, b"x"))
                .unwrap();
        }
        assert_eq!(migrate(&db).unwrap(), ALL_STEPS[3..]);
        let tree = db.open_tree(PROVENANCE_TREE).unwrap();
        assert_eq!(
            tree.get(b"S\0\0\0\0").unwrap().unwrap().as_ref(),
            UNKNOWN_SOURCE.as_bytes()
        );
        let run = tree.get(b"R\0\0\0\0\0\0\0\x01").unwrap();
        assert_eq!(
            run.is_some(),
            records,
            "a run from seq 1 only when there are records"
        );
        if let Some(id) = run {
            assert_eq!(id.as_ref(), 0u32.to_be_bytes());
        }
    }
}

#[test]
fn m0005_drops_the_derived_trees_and_keeps_the_log_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    at_version(&db, 4);
    let log = db.open_tree(LOG_TREE).unwrap();
    log.insert(b"L\0\0\0\0\0\0\0\x01", frame(2, b"block"))
        .unwrap();
    db.open_tree(PROVENANCE_TREE)
        .unwrap()
        .insert(b"S\0\0\0\0", b"file x.log")
        .unwrap();
    let derived = db.open_tree("derived:derived").unwrap();
    derived.insert(b"Gagent-copy", b"lz4 layout").unwrap();
    assert_eq!(migrate(&db).unwrap(), ALL_STEPS[4..]);
    assert_eq!(format_version(&db).unwrap(), Some(5));
    assert!(!db.tree_names().iter().any(|n| n.starts_with(b"derived:")));
    assert_eq!(db.open_tree(LOG_TREE).unwrap().len(), 1);
    assert_eq!(db.open_tree(PROVENANCE_TREE).unwrap().len(), 1);
}
