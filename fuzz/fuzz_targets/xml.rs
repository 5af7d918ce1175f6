//! The GctiMsg XML decoder over arbitrary bytes: never panics, and whatever it accepts encodes
//! to a document it accepts again, after which encode/decode is the identity.
#![no_main]

use ivrstate_publisher::xml::{decode, encode, MAX_DOCUMENT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = decode(data) else {
        return;
    };
    // Encoding may drop what the protocol cannot carry (control characters), so the first
    // round may normalise; from then on nothing may change.
    let doc = encode(&first);
    if doc.len() > MAX_DOCUMENT_LEN {
        return;
    }
    let second = decode(&doc).unwrap_or_else(|e| {
        panic!(
            "own encoding refused: {e}\n{}",
            String::from_utf8_lossy(&doc)
        )
    });
    let doc2 = encode(&second);
    let third = decode(&doc2).expect("own encoding refused (second round)");
    assert_eq!(second, third);
    // Bytes are compared from the second round: the first may still hold what encoding drops
    // (control characters) next to what decoding trims (whitespace around text).
    assert_eq!(doc2, encode(&third));
});
