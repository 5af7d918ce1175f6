//! A feed connection guarded by a token, fed arbitrary bytes in arbitrary chunks (quiet
//! periods and the end of input between them): never panics, and nothing is parsed unless the
//! first line was exactly `AUTH <token>`.
#![no_main]

use ivrstate_ingest::feed::{FeedSession, FeedTokens};
use ivrstate_model::{Micros, TServerName};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

const TOKEN: &[u8] = b"fuzz-token-0123456789";

fuzz_target!(|data: &[u8]| {
    let tokens = FeedTokens::parse("fuzzer fuzz-token-0123456789\n", Path::new("tokens"))
        .expect("the token file parses");
    let mut session = FeedSession::new(
        "feed fuzz".into(),
        Some(TServerName::from("TS")),
        Micros(0),
        Some(Arc::new(tokens)),
    );
    // The first byte chooses the chunk size; a zero-length chunk is a quiet period.
    let (step, rest) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 64), rest),
        None => (1, data),
    };
    let mut parsed = 0;
    let mut at = 0;
    while at < rest.len() {
        let end = (at + step).min(rest.len());
        if step == 0 {
            session.handle_idle();
            session.handle_bytes(&rest[at..]);
            at = rest.len();
        } else {
            session.handle_bytes(&rest[at..end]);
            at = end;
        }
        parsed += session.poll_parsed().len();
    }
    session.handle_eof();
    parsed += session.poll_parsed().len();
    let first_line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    let authenticated = first_line.strip_prefix(b"AUTH ").map(<[u8]>::trim_ascii) == Some(TOKEN);
    if !authenticated {
        assert_eq!(parsed, 0, "parsed without authenticating");
        assert!(session.refusal().is_some());
    } else {
        assert_eq!(session.token_name(), Some("fuzzer"));
    }
});
