//! Property tests for the parsers' public entry points, the same ones the fuzz targets drive
//! (`fuzz/`), so that CI exercises them on every run: arbitrary and damaged input never
//! panics, errors point inside the input, how the input is cut into reads does not matter,
//! the line-at-a-time core used by followed files and TCP feeds agrees with the streaming
//! reader, and every NDJSON event accepted survives export and re-import.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_ingest::parse::{
    parse_ndjson_line, write_ndjson, NdjsonReader, Parsed, TlogParser, TlogReader,
};
use ivrstate_model::{Micros, Record, TServerName};
use ivrstate_simulate::{simulate, SimConfig};
use proptest::prelude::*;
use std::io::BufReader;
use std::sync::OnceLock;

const RECORDED: Micros = Micros(1_700_000_000_000_000);

/// A small simulated T-Server log and its NDJSON export, made once.
fn samples() -> &'static (Vec<u8>, Vec<u8>) {
    static S: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    S.get_or_init(|| {
        let mut log = Vec::new();
        let cfg = SimConfig {
            agents: 4,
            events: 60,
            seed: 3,
            ..SimConfig::default()
        };
        simulate(cfg, &mut log).unwrap();
        let mut nd = Vec::new();
        for (i, item) in TlogReader::new(&log[..], "sim", None, RECORDED).enumerate() {
            if let Parsed::Event { envelope, .. } = item {
                write_ndjson(
                    &mut nd,
                    &Record {
                        seq: i as u64 + 1,
                        envelope,
                    },
                )
                .unwrap();
            }
        }
        (log, nd)
    })
}

fn tlog(input: &[u8], cap: Option<usize>) -> Vec<Parsed> {
    let ts = Some(TServerName::from("TS"));
    match cap {
        None => TlogReader::new(input, "f", ts, RECORDED).collect(),
        Some(c) => TlogReader::new(BufReader::with_capacity(c, input), "f", ts, RECORDED).collect(),
    }
}

fn ndjson(input: &[u8], cap: Option<usize>) -> Vec<Parsed> {
    match cap {
        None => NdjsonReader::new(input, "f", RECORDED).collect(),
        Some(c) => NdjsonReader::new(BufReader::with_capacity(c, input), "f", RECORDED).collect(),
    }
}

/// Lines as a follower or feed delivers them: split at `\n`, one trailing `\r` dropped, with
/// 1-based numbers and the byte offset of each line's start.
fn lines(input: &[u8]) -> Vec<(&[u8], u64, u64)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut rest = input;
    let mut n = 0;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        n += 1;
        let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        out.push((trimmed, n, offset));
        offset += (rest.len() - next.len()) as u64;
        rest = next;
    }
    out
}

/// Damages `base`: overwrites a few bytes and cuts it somewhere.
fn damage(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for (at, byte) in edits {
        let i = at % b.len().max(1);
        if let Some(x) = b.get_mut(i) {
            *x = *byte;
        }
    }
    b.truncate(cut % (b.len() + 1));
    b
}

fn check_located(items: &[Parsed], input: &[u8]) {
    let max_line = input.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    for item in items {
        if let Parsed::Malformed(e) = item {
            assert!(e.line >= 1 && e.line <= max_line, "{e}");
            assert!(e.byte_offset <= input.len() as u64, "{e}");
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn tlog_damaged_logs_are_read_the_same_whatever_the_read_size(
        edits in edits(), cut in any::<usize>(), cap in 1usize..64,
    ) {
        let input = damage(&samples().0, &edits, cut);
        let whole = tlog(&input, None);
        check_located(&whole, &input);
        prop_assert_eq!(&whole, &tlog(&input, Some(cap)));
    }

    #[test]
    fn tlog_push_core_agrees_with_the_reader(edits in edits(), cut in any::<usize>()) {
        let input = damage(&samples().0, &edits, cut);
        let mut parser = TlogParser::new("f", Some(TServerName::from("TS")), RECORDED);
        let mut pushed = Vec::new();
        for (line, no, offset) in lines(&input) {
            parser.push_line(line, no, offset, &mut pushed);
        }
        parser.finish(&mut pushed);
        prop_assert_eq!(pushed, tlog(&input, None));
    }

    #[test]
    fn ndjson_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), cap in 1usize..64) {
        let whole = ndjson(&bytes, None);
        check_located(&whole, &bytes);
        prop_assert_eq!(&whole, &ndjson(&bytes, Some(cap)));
    }

    #[test]
    fn ndjson_damaged_exports_round_trip_what_they_accept(
        edits in edits(), cut in any::<usize>(), cap in 1usize..64,
    ) {
        let input = damage(&samples().1, &edits, cut);
        let items = ndjson(&input, None);
        check_located(&items, &input);
        prop_assert_eq!(&items, &ndjson(&input, Some(cap)));
        // The line-at-a-time entry point (TCP feeds) agrees with the reader.
        let by_line: Vec<Parsed> = lines(&input)
            .into_iter()
            .filter_map(|(l, no, off)| parse_ndjson_line("f", l, no, off))
            .collect();
        prop_assert_eq!(&by_line, &items);
        for item in items {
            if let Parsed::Event { envelope: env, .. } = item {
                let mut line = Vec::new();
                write_ndjson(&mut line, &Record { seq: 1, envelope: env.clone() }).unwrap();
                prop_assert_eq!(ndjson(&line, None), vec![Parsed::Event { line: 1, envelope: env }]);
            }
        }
    }
}

/// The undamaged samples parse without errors (so the properties above start from valid input).
#[test]
fn samples_are_valid() {
    let (log, nd) = samples();
    let t = tlog(log, None);
    assert!(
        t.iter()
            .filter(|p| matches!(p, Parsed::Event { .. }))
            .count()
            >= 30
    );
    assert!(!t.iter().any(|p| matches!(p, Parsed::Malformed(_))));
    let n = ndjson(nd, None);
    assert!(n.iter().all(|p| matches!(p, Parsed::Event { .. })));
}
