//! Backward compatibility on committed bytes (as redb's test does): a store written by an
//! earlier format version, committed under `tests/fixtures/`, is opened by this version
//! (migrating it), verifies, and answers what the old version answered. Later versions may add
//! fields to the answers; none may drop or change one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use std::path::Path;

use ivrstate_tests::{repo_root, Ivrstate};
use serde_json::Value;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every field of `old` is in `new` with the same value (objects recursively; arrays element by
/// element and of the same length).
fn assert_contains(old: &Value, new: &Value, at: &str) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                let Some(nv) = n.get(k) else {
                    panic!("{at}: field `{k}` is gone (was {v})")
                };
                assert_contains(v, nv, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            assert_eq!(o.len(), n.len(), "{at}: length changed");
            for (i, (ov, nv)) in o.iter().zip(n).enumerate() {
                assert_contains(ov, nv, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(old, new, "{at}: value changed"),
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures/store-format-2").join(name)
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

#[test]
fn a_format_2_store_opens_verifies_and_answers_as_it_did() {
    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    copy_dir(&fixture("store"), &t.db());
    // sled keeps an (empty) blobs directory that git cannot carry.
    std::fs::create_dir_all(t.db().join("blobs")).unwrap();

    let verified = t.ok(&["verify"]);
    assert!(verified.contains("1208 records"), "{verified}");

    let exported = t.ok(&["export"]);
    let old_export = std::fs::read_to_string(fixture("export.ndjson")).unwrap();
    let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
        (old_export.lines().collect(), exported.lines().collect());
    assert_eq!(old_lines.len(), new_lines.len(), "record count changed");
    for (i, (o, n)) in old_lines.iter().zip(&new_lines).enumerate() {
        let o: Value = serde_json::from_str(o).unwrap();
        let n: Value = serde_json::from_str(n).unwrap();
        assert_contains(&o, &n, &format!("export line {}", i + 1));
    }

    assert_contains(
        &read_json("status.json"),
        &t.json(&["status", "--json"]),
        "status",
    );
    assert_contains(
        &read_json("status-at-noon.json"),
        &t.json(&["status", "--at", "2015-08-17T12:00:00Z", "--json"]),
        "status --at",
    );
    assert_contains(
        &read_json("history-2001.json"),
        &t.json(&["history", "--agent", "2001", "--json"]),
        "history",
    );

    // The migrated store takes new events and still verifies.
    let more = repo_root().join("examples/ts_sip.log");
    t.ok(&["ingest", more.to_str().unwrap()]);
    let verified = t.ok(&["verify"]);
    assert!(verified.contains("derived data matches"), "{verified}");
}
