//! The T-Server log reader over arbitrary bytes: never panics, and every error points inside
//! the input.
#![no_main]

use ivrstate_ingest::parse::{Parsed, TlogReader};
use ivrstate_model::{Micros, TServerName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    for tserver in [None, Some(TServerName::from("TS"))] {
        for item in TlogReader::new(data, "fuzz", tserver, Micros::from_secs(0)) {
            match item {
                Parsed::Event { .. } => {}
                Parsed::Skipped { line, .. } => assert!(line >= 1 && line <= lines),
                Parsed::Malformed(e) => {
                    assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
                    assert!(e.byte_offset <= data.len() as u64);
                }
            }
        }
    }
});
