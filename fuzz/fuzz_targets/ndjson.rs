//! The NDJSON reader over arbitrary bytes: never panics, and every event it accepts survives
//! export (write_ndjson) and re-import unchanged.
#![no_main]

use ivrstate_ingest::parse::{write_ndjson, NdjsonReader, Parsed};
use ivrstate_model::{Micros, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in NdjsonReader::new(data, "fuzz", Micros::from_secs(0)) {
        match item {
            Parsed::Event { envelope: env, .. } => {
                let mut line = Vec::new();
                write_ndjson(
                    &mut line,
                    &Record {
                        seq: 7,
                        envelope: env.clone(),
                    },
                )
                .expect("writing to a Vec");
                let back: Vec<Parsed> =
                    NdjsonReader::new(&line[..], "again", Micros::from_secs(0)).collect();
                assert_eq!(back, vec![Parsed::Event { line: 1, envelope: env }]);
            }
            Parsed::Skipped { .. } => {}
            Parsed::Malformed(e) => assert!(e.byte_offset <= data.len() as u64),
        }
    }
});
