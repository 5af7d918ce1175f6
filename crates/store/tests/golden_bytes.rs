//! The log's bytes, pinned by literal test vectors: a record and a block written by format
//! version 2 must encode to exactly these bytes and these bytes must decode to the same records,
//! whatever the codec's code becomes. A change of format is a new block version with a
//! migration (and a new vector beside these), never a silent change of these bytes.
//! (`tests/e2e/compat.rs` holds a whole store of that version to the same standard.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_model::Envelope;
use ivrstate_store::codec;

/// An agent event (the hand-written fast path) and a configuration event (bincode's derive).
const AGENT: &str = r#"{"time":"2015-08-17T08:13:18.022448Z","recorded":"2026-11-29T19:54:41.269285Z","event":{"TLib":{"tserver":"TS_SIP_B","source_seq":17564169,"kind":{"Agent":{"kind":"NotReady","dn":"8012","agent_id":"2012","queue":null,"work_mode":"AuxWork","reasons":[["ReasonCode","Coaching"]],"extensions":[]}}}}}"#;
const CONFIG: &str = r#"{"time":"2015-08-17T00:00:00.000000Z","recorded":"2015-08-17T00:00:00.000000Z","event":{"Config":{"TServerAdded":{"name":"TS_SIP","switch":"SIP_Switch"}}}}"#;

const AGENT_RECORD_HEX: &str = "fd60f67dbffa3a0a00fd4a3cf453dfc20c00000854535f5349505f4201fc09020c0100030438303132010432303132000104010a526561736f6e436f646508436f616368696e6700";
const CONFIG_RECORD_HEX: &str =
    "fd000022f7ec3a0a00fd000022f7ec3a0a0001010654535f534950010a5349505f537769746368";
const BLOCK_HEX: &str = "0270000000a502fd000022f7ec3a0a000900f00c01010654535f534950010a5349505f537769746368fd60f67dbffa2700a24a3cf453dfc20c0000082600f01f5f4201fc09020c0100030438303132010432303132000104010a526561736f6e436f646508436f616368696e6700becc11e4";

fn envelope(json: &str) -> Envelope {
    serde_json::from_str(json).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn records_encode_to_the_pinned_bytes_and_back() {
    for (json, pinned) in [(AGENT, AGENT_RECORD_HEX), (CONFIG, CONFIG_RECORD_HEX)] {
        let env = envelope(json);
        let bytes = codec::encode_envelope(&env).unwrap();
        assert_eq!(hex(&bytes), pinned, "record bytes of {json}");
        assert_eq!(codec::decode_envelope(&unhex(pinned)).unwrap(), env);
    }
}

#[test]
fn a_block_encodes_to_the_pinned_bytes_and_back() {
    let envs = vec![envelope(CONFIG), envelope(AGENT)];
    let block = codec::encode_block(&envs).unwrap();
    assert_eq!(hex(&block), BLOCK_HEX, "block bytes");
    assert_eq!(codec::decode_block(&unhex(BLOCK_HEX)).unwrap(), envs);
}
