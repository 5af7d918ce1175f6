//! Tests of the T-Server log parser on realistic printouts and on bad input.

use super::*;
use ivrstate_model::{AgentStatus, Record};
use proptest::prelude::*;

const RECORDED: Micros = Micros(1_700_000_000_000_000);

const HEADER: &str = "\
2015-08-17T23:10:00.013 Std 05060 Log file opened\n\
Application name:       TS_SIP\n\
Application type:       TServer (SIP Server)\n\
Host name:              sip-host\n\
Local time:             2015-08-17T23:10:00.013\n\
\n";

fn parse(input: &[u8], tserver: Option<&str>) -> Vec<Parsed> {
    TlogReader::new(input, "ts.log", tserver.map(TServerName::from), RECORDED).collect()
}

fn events(items: &[Parsed]) -> Vec<&Envelope> {
    items
        .iter()
        .filter_map(|p| match p {
            Parsed::Event { envelope, .. } => Some(envelope),
            _ => None,
        })
        .collect()
}

fn errors(items: &[Parsed]) -> Vec<&ParseError> {
    items
        .iter()
        .filter_map(|p| match p {
            Parsed::Malformed(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn skipped(items: &[Parsed]) -> Vec<(u64, &str)> {
    items
        .iter()
        .filter_map(|p| match p {
            Parsed::Skipped { line, what } => Some((*line, what.as_str())),
            _ => None,
        })
        .collect()
}

fn agent(env: &Envelope) -> &AgentEvent {
    match &env.event {
        Event::TLib(TLibEvent {
            kind: TLibKind::Agent(a),
            ..
        }) => a,
        other => panic!("not an agent event: {other:?}"),
    }
}

fn tlib(env: &Envelope) -> &TLibEvent {
    match &env.event {
        Event::TLib(t) => t,
        other => panic!("not a T-Library event: {other:?}"),
    }
}

fn kv(pairs: &[(&str, &str)]) -> KvList {
    KvList(
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    )
}

/// The protocol document's own example.
pub(crate) const READY: &str = "\
@23:16:17.4586 [0] 8.1.101.33 distribute_event: message EventAgentReady\n\
\tAttributeEventSequenceNumber\t00000000010c9288\n\
\tAttributeTimeinuSecs\t458658\n\
\tAttributeTimeinSecs\t1439853377 (23:16:17)\n\
\tAttributeThisDN\t'7001'\n\
\tAttributeAgentID\t'1001'\n\
\tAttributeAgentWorkMode\t1 (ManualIn)\n\
2015-08-17T23:16:17.458 Int 04545 Interaction message \"EventAgentReady\" sent to 24 (\"ICON_localdb\")\n";

#[test]
fn parses_the_protocol_example() {
    let items = parse(format!("{HEADER}{READY}").as_bytes(), None);
    assert_eq!(items.len(), 1, "{items:?}");
    let expected = Envelope {
        time: Micros::from_secs_micros(1_439_853_377, 458_658),
        recorded: RECORDED,
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from("TS_SIP"),
            source_seq: Some(0x10c9288),
            kind: TLibKind::Agent(AgentEvent {
                kind: AgentEventKind::Ready,
                dn: Dn::from("7001"),
                agent_id: Some(AgentId::from("1001")),
                queue: None,
                work_mode: Some(WorkMode::ManualIn),
                reasons: KvList::default(),
                extensions: KvList::default(),
            }),
        }),
    };
    assert_eq!(
        items[0],
        Parsed::Event {
            // After the 6 lines of the header: where the printout's `@` line is.
            line: 7,
            envelope: expected
        }
    );
}

#[test]
fn tserver_argument_wins_over_the_header() {
    let items = parse(format!("{HEADER}{READY}").as_bytes(), Some("TS_OTHER"));
    assert_eq!(tlib(events(&items)[0]).tserver.as_str(), "TS_OTHER");
}

#[test]
fn no_tserver_name_makes_every_event_malformed() {
    let items = parse(READY.as_bytes(), None);
    let errs = errors(&items);
    assert_eq!(errs.len(), 1, "{items:?}");
    assert!(
        errs[0].reason.contains("no T-Server name: pass --tserver"),
        "{}",
        errs[0]
    );
    assert_eq!((errs[0].line, errs[0].byte_offset), (1, 0));
}

#[test]
fn header_variants_and_all_state_events() {
    let log = "\
@10:00:00.0000 [0] 8.1.101.33 send_to_client: message EventAgentLogin
\tAttributeEventSequenceNumber\t0000000000000001
\tAttributeTimeinSecs\t1439805600 (10:00:00)
\tAttributeThisDN\t'7001'
\tAttributeAgentID\t'1001'
\tAttributeThisQueue\t'8001'
\tAttributeAgentWorkMode\t0 (Unknown)

@10:00:01.0000 [0] 8.1.101.33 distribute call event: message EventAgentNotReady
\tAttributeEventSequenceNumber\t0000000000000002
\tAttributeTimeinSecs\t1439805601
\tAttributeThisDN\t7001
\tAttributeAgentWorkMode\tAuxWork
@10:00:02.0000 [0] 8.1.101.33 distribute party event: EventAgentAfterCallWork
\tAttributeEventSequenceNumber\t0x3
\tAttributeTimeinSecs\t1439805602
\tAttributeThisDN\t'7001'
@10:00:03.0000 [0] 8.1.101.33 message EventAgentLogout
\tAttributeEventSequenceNumber\t000000000000000A
\tAttributeTimeinSecs\t1439805603
\tAttributeThisDN\t'7001'
@10:00:04.0000 [0] 8.1.101.33 distribute_event: message EventLinkDisconnected
\tAttributeEventSequenceNumber\t000000000000000b
\tAttributeTimeinSecs\t1439805604
@10:00:05.0000 [0] 8.1.101.33 distribute_event: message EventLinkConnected
\tAttributeEventSequenceNumber\t000000000000000c
\tAttributeTimeinSecs\t1439805605
";
    let items = parse(log.as_bytes(), Some("TS"));
    assert!(errors(&items).is_empty(), "{items:?}");
    let evs = events(&items);
    let names: Vec<_> = evs.iter().map(|e| tlib(e).kind.event_name()).collect();
    assert_eq!(
        names,
        [
            "EventAgentLogin",
            "EventAgentNotReady",
            "EventAgentAfterCallWork",
            "EventAgentLogout",
            "EventLinkDisconnected",
            "EventLinkConnected"
        ]
    );
    let seqs: Vec<_> = evs.iter().map(|e| tlib(e).source_seq.unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 10, 11, 12]);
    let times: Vec<_> = evs.iter().map(|e| e.time.split().0).collect();
    assert_eq!(times, (1_439_805_600..=1_439_805_605).collect::<Vec<_>>());
    let login = agent(evs[0]);
    assert_eq!(login.queue.as_ref().map(|q| q.as_str()), Some("8001"));
    assert_eq!(login.work_mode, Some(WorkMode::Unknown));
    assert_eq!(agent(evs[1]).dn.as_str(), "7001");
    assert_eq!(agent(evs[1]).work_mode, Some(WorkMode::AuxWork));
}

#[test]
fn key_value_lists_reasons_extensions_and_address_info() {
    let log = "\
@23:20:00.0000 [0] 8.1.101.33 distribute_event: message EventAgentNotReady
\tAttributeEventSequenceNumber\t0000000000000010
\tAttributeTimeinuSecs\t5
\tAttributeTimeinSecs\t1439853600 (23:20:00)
\tAttributeThisDN\t'7002'
\tAttributeAgentWorkMode\t4 (AuxWork)
\tAttributeReasons\t[19] 00 01 00 00..
\t\t'ReasonCode'\t'Break'
\t\t'Count'\t3
\tAttributeExtensions\t[38] 00 02 01 00..
\t\t'ReasonCode'\t'Lunch'
\t\t'Nested'\t[10] 00 01..
\t\t\t'Inner'\t'ignored'
\t\t'After'\t'kept'
\tAttributeUserData\t[14] 00 01 00 00..
\t\t'Customer'\t'not kept'
@23:20:01.0000 [0] 8.1.101.33 distribute_event: message EventAddressInfo
\tAttributeEventSequenceNumber\t0000000000000011
\tAttributeTimeinSecs\t1439853601
\tAttributeThisDN\t'7002'
\tAttributeAgentID\t'1002'
\tAttributeExtensions\t[30] 00 01 01 00..
\t\t'AgentStatus'\t3
\t\t'AgentSessionID'\t'S1'
";
    let items = parse(log.as_bytes(), Some("TS"));
    assert!(errors(&items).is_empty(), "{items:?}");
    let evs = events(&items);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].time, Micros::from_secs_micros(1_439_853_600, 5));
    let nr = agent(evs[0]);
    assert_eq!(nr.reasons, kv(&[("ReasonCode", "Break"), ("Count", "3")]));
    assert_eq!(
        nr.extensions,
        kv(&[
            ("ReasonCode", "Lunch"),
            ("Nested", "[10] 00 01.."),
            ("After", "kept")
        ])
    );
    assert_eq!(nr.reason(), Some("Break"));
    match &tlib(evs[1]).kind {
        TLibKind::AddressInfo(ai) => {
            assert_eq!(ai.dn.as_str(), "7002");
            assert_eq!(ai.agent_status, Some(3));
            assert_eq!(ai.status(), AgentStatus::NotReady);
            assert_eq!(ai.extensions.get("AgentSessionID"), Some("S1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_events_requests_and_log_lines_are_skipped() {
    let log = format!(
        "{HEADER}\
2015-08-17T23:16:17.001 Trc 04541 Message RequestAgentReady received from 24 (ICON)
@23:16:17.0010 [0] 8.1.101.33 handle_request: message RequestAgentReady
\tAttributeThisDN\t'7001'
\tAttributeReferenceID\t5
@23:16:17.2000 [0] 8.1.101.33 distribute_event: message EventDialing
\tAttributeEventSequenceNumber\t0000000000000001
\tAttributeThisDN\t'7001'
\tAttributeOtherDN\t'unterminated
23:16:17.300 Dbg 09900 something else
@23:16:17.3000 [BSYNC] Trace: sync done
@23:16:17.3100 [0] 8.1 got message from client 24
{READY}"
    );
    let items = parse(log.as_bytes(), None);
    assert_eq!(
        skipped(&items),
        vec![(8, "RequestAgentReady"), (11, "EventDialing")]
    );
    assert!(errors(&items).is_empty(), "{items:?}");
    assert_eq!(events(&items).len(), 1);
}

#[test]
fn at_times_with_midnight_rollover() {
    // No TimeinSecs at all: the date comes from the header, then the @ times roll over.
    let log = format!(
        "{HEADER}\
@23:59:59.9000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
@00:00:00.1000 [0] 8.1 distribute_event: message EventAgentNotReady
\tAttributeThisDN\t'7001'
@00:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
@23:59:59.0000 [0] 8.1 distribute_event: message EventAgentLogout
\tAttributeThisDN\t'7001'
"
    );
    let items = parse(log.as_bytes(), None);
    assert!(errors(&items).is_empty(), "{items:?}");
    let times: Vec<String> = events(&items).iter().map(|e| e.time.to_rfc3339()).collect();
    assert_eq!(
        times,
        [
            "2015-08-17T23:59:59.900000Z",
            "2015-08-18T00:00:00.100000Z",
            "2015-08-18T00:00:01.000000Z",
            "2015-08-18T23:59:59.000000Z"
        ]
    );
}

#[test]
fn date_from_the_iso_line_after_the_printout() {
    // No header: the Int line after each printout gives the date, even across midnight.
    let log = "\
@23:59:59.9000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
2015-08-18T00:00:00.010 Int 04545 Interaction message \"EventAgentReady\" sent
@00:00:00.2000 [0] 8.1 distribute_event: message EventAgentNotReady
\tAttributeThisDN\t'7001'
";
    let items = parse(log.as_bytes(), Some("TS"));
    let times: Vec<String> = events(&items).iter().map(|e| e.time.to_rfc3339()).collect();
    assert_eq!(
        times,
        ["2015-08-17T23:59:59.900000Z", "2015-08-18T00:00:00.200000Z"]
    );
}

#[test]
fn no_time_at_all_is_malformed() {
    let log = "@10:00:00.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'7001'\n";
    let items = parse(log.as_bytes(), Some("TS"));
    let errs = errors(&items);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].reason.contains("no time"), "{}", errs[0]);
}

#[test]
fn malformed_printouts_are_located_and_the_rest_is_kept() {
    let log = format!(
        "{HEADER}\
@23:16:17.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeEventSequenceNumber\t0000000000000001
\tAttributeThisDN\t'7001
\tAttributeAgentID\t'1001'
@23:16:18.0000 [0] 8.1 distribute_event: message EventAgentNotReady
\tAttributeEventSequenceNumber\t0000000000000002
\tAttributeAgentID\t'1001'
@23:16:19.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeEventSequenceNumber\tzz01
\tAttributeThisDN\t'7001'
@23:16:20.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeTimeinSecs\tlater
\tAttributeThisDN\t'7001'
@23:16:21.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7\u{0}01'
\tAttributeAgentWorkMode\tsideways
@23:16:22.0000 [0] 8.1 distribute_event: message EventAgentNotReady
\tAttributeThisDN\t'7001'
\tAttributeReasons\t[19] 00 01 00 00..
\t\t'ReasonCode\t'Break'
@23:16:23.0000 [0] 8.1 distribute_event: message EventAddressInfo
\tAttributeThisDN\t'7001'
\tAttributeExtensions\t[19] 00 01 00 00..
\t\t'AgentStatus'\t'busy'
{READY}"
    );
    let items = parse(log.as_bytes(), None);
    let errs = errors(&items);
    let located: Vec<(u64, &str)> = errs
        .iter()
        .map(|e| {
            let what = [
                "AgentStatus",
                "unterminated quote",
                "no AttributeThisDN",
                "not a hex number",
                "not a number",
                "not a work mode",
            ]
            .into_iter()
            .find(|w| e.reason.contains(w))
            .unwrap_or(&e.reason);
            (e.line, what)
        })
        .collect();
    assert_eq!(
        located,
        vec![
            (7, "unterminated quote"),
            (11, "no AttributeThisDN"),
            (14, "not a hex number"),
            (17, "not a number"),
            (20, "not a work mode"),
            (23, "unterminated quote"),
            (27, "AgentStatus"),
        ]
    );
    assert!(
        errs[0]
            .reason
            .starts_with("EventAgentReady: AttributeThisDN"),
        "{}",
        errs[0]
    );
    let offset = HEADER.len() as u64;
    assert_eq!(errs[0].byte_offset, offset);
    assert_eq!(
        errs[0].to_string(),
        format!("ts.log:7: {} (byte {offset})", errs[0].reason)
    );
    assert_eq!(
        events(&items).len(),
        1,
        "the good printout after the bad ones is kept"
    );
}

#[test]
fn invalid_utf8_in_a_kept_value_is_malformed_elsewhere_ignored() {
    let mut log = HEADER.as_bytes().to_vec();
    log.extend_from_slice(
        b"@23:16:17.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'70\xff1'\n",
    );
    log.extend_from_slice(
        b"@23:16:18.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'7001'\n\tAttributeOther\t\xfe\xff\n",
    );
    log.extend_from_slice(b"\xff\xfe garbage line \xc3\n");
    let items = parse(&log, None);
    let errs = errors(&items);
    assert_eq!(errs.len(), 1, "{items:?}");
    assert!(errs[0].reason.contains("invalid UTF-8"), "{}", errs[0]);
    assert_eq!(events(&items).len(), 1);
}

#[test]
fn truncated_printout_at_eof() {
    // Cut inside a quoted value: malformed.
    let cut =
        format!("{HEADER}@23:16:17.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'70");
    let items = parse(cut.as_bytes(), None);
    assert_eq!(errors(&items).len(), 1, "{items:?}");
    // Cut before the DN: malformed.
    let cut =
        format!("{HEADER}@23:16:17.0000 [0] 8.1 message EventAgentReady\n\tAttributeEventSeq");
    let items = parse(cut.as_bytes(), None);
    assert!(errors(&items)[0].reason.contains("no AttributeThisDN"));
    // Cut after the DN (no final newline): the event is complete enough.
    let cut = format!(
        "{HEADER}@23:16:17.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'7001'"
    );
    let items = parse(cut.as_bytes(), None);
    assert_eq!(events(&items).len(), 1, "{items:?}");
    // Cut inside the @ line.
    let cut = format!("{HEADER}@23:16:1");
    assert!(parse(cut.as_bytes(), None).is_empty());
}

#[test]
fn huge_lines_are_located_errors_and_memory_stays_bounded() {
    let huge = "x".repeat(super::super::MAX_LINE + 10);
    // A huge line inside a printout spoils that printout only.
    let log = format!(
        "{HEADER}@23:16:17.0000 [0] 8.1 message EventAgentReady\n\tAttributeThisDN\t'7001'\n\tAttributeBlob\t{huge}\n{huge}\n{READY}"
    );
    let items = parse(log.as_bytes(), None);
    let errs = errors(&items);
    assert_eq!(errs.len(), 2, "{:?}", errs);
    assert!(
        errs[0]
            .reason
            .contains("line 9 is longer than the line limit"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[0].line, 7, "the printout's own line");
    assert_eq!(errs[1].line, 10);
    assert_eq!(events(&items).len(), 1);
}

#[test]
fn binary_garbage_gives_nothing_and_no_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let items = parse(&garbage, Some("TS"));
    assert!(events(&items).is_empty());
}

#[test]
fn push_core_emits_when_the_printout_ends() {
    let mut p = TlogParser::new("live", Some(TServerName::from("TS")), RECORDED);
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (i, line) in READY.lines().enumerate() {
        let before = out.len();
        p.push_line(line.as_bytes(), i as u64 + 1, offset, &mut out);
        offset += line.len() as u64 + 1;
        // Nothing is emitted until the line after the printout arrives.
        if i < 6 {
            assert_eq!(out.len(), before, "line {i}");
        }
    }
    assert_eq!(out.len(), 1);
    p.finish(&mut out);
    assert_eq!(
        out.len(),
        1,
        "finish after a completed printout adds nothing"
    );
}

#[test]
fn ndjson_export_of_parsed_events_is_stable() {
    // A parsed event survives the export format unchanged (export then ingest).
    let items = parse(format!("{HEADER}{READY}").as_bytes(), None);
    let env = events(&items)[0].clone();
    let mut buf = Vec::new();
    crate::parse::write_ndjson(
        &mut buf,
        &Record {
            seq: 1,
            envelope: env.clone(),
        },
    )
    .unwrap();
    let back: Vec<Parsed> = crate::parse::NdjsonReader::new(&buf[..], "x", RECORDED).collect();
    assert_eq!(
        back,
        vec![Parsed::Event {
            line: 1,
            envelope: env
        }]
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse(&bytes, None);
        let _ = parse(&bytes, Some("TS"));
    }

    #[test]
    fn mutated_printouts_never_panic(
        cut in 0usize..READY.len(),
        pos in 0usize..READY.len(),
        byte in any::<u8>(),
    ) {
        let mut b = format!("{HEADER}{READY}").into_bytes();
        let at = HEADER.len() + pos;
        b[at] = byte;
        b.truncate(HEADER.len() + cut);
        let _ = parse(&b, None);
    }

    #[test]
    fn log_like_lines_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            Just("@23:16:17.4586 [0] 8.1 message EventAgentReady".to_string()),
            Just("\tAttributeThisDN\t'7001'".to_string()),
            Just("\t\t'ReasonCode'\t'Break'".to_string()),
            Just("\tAttributeReasons\t[1]".to_string()),
            Just("2015-08-17T23:16:17.458 Int".to_string()),
            Just(String::new()),
            "[\\t @0-9A-Za-z':.()\\-]{0,40}",
        ],
        0..40,
    )) {
        let _ = parse(lines.join("\n").as_bytes(), Some("TS"));
    }
}

/// A header shaped as a SIP Server log writes it (labels padded with spaces), India: UTC+05:30.
/// Written for this test; the real log it is modelled on stays in ../shared/real.
const LOCAL_HEADER: &str = "\
Application name: SIP_P
Application type: TServer (1)
Command line:     /opt/genesys/sip_p/sip_server -host sip-a -port 5000 -app SIP_P
Host name:        sip-a
DST:              TZ = 0, timeb = 0
Time zone:        -19800, Test Standard Time, Test Daylight Time
UTC time:         2026-02-02T08:24:59.000
Local time:       2026-02-02T13:54:59.000
Start time (UTC): 2026-02-02T08:24:59

2026-02-02T13:54:59.100 Trc 04110 Option 'time-convert' has been set to the value 'local'
";

/// SIP Server lines that are not T-Library printouts: internal 3-digit-millisecond lines, a
/// SIP trace, a backup-sync printout, a check point.
const SIP_NOISE: &str = "\
13:54:59.856: SIPTR: Received [0,UDP] 467 bytes from 10.0.0.1:5060 <<<<<
INVITE sip:3001@10.0.0.2 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1
\tAOR: \tsip:3001@10.0.0.2
13:54:59.857: Sending  [0,UDP] 300 bytes to 10.0.0.1:5060 >>>>>
SIP/2.0 100 Trying

@13:55:00.0010 [BSYNC] Trace: Send to backup (SIP_B) [508]:
message EventAgentReady
\tAttributeEventSequenceNumber\t0000000000000009
\tAttributeThisDN\t'3001'
2026-02-02T13:55:30.000 Trc 04120 Check point 2026-02-02T13:55:30
$+CTI:PRM:3001
";

#[test]
fn a_local_time_log_is_converted_to_utc_by_its_header() {
    let log = format!(
        "{LOCAL_HEADER}{SIP_NOISE}\
@13:56:00.5000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeEventSequenceNumber\t0000000000000010
\tAttributeThisDN\t'3001'
2026-02-02T13:56:00.501 Int 04545 Interaction message \"EventAgentReady\" sent
@13:57:00.0000 [0] 8.1 distribute_event: message EventAgentNotReady
\tAttributeEventSequenceNumber\t0000000000000011
\tAttributeThisDN\t'3001'
\tAttributeTimeinSecs\t1770019000
\tAttributeTimeinuSecs\t250000
"
    );
    let items = parse(log.as_bytes(), None);
    assert!(errors(&items).is_empty(), "{items:?}");
    assert!(
        skipped(&items).is_empty(),
        "noise is not counted: {items:?}"
    );
    let evs = events(&items);
    assert_eq!(evs.len(), 2, "{items:?}");
    assert_eq!(tlib(evs[0]).tserver.as_str(), "SIP_P");
    // 13:56:00.5 in India is 08:26:00.5 UTC.
    assert_eq!(evs[0].time.to_rfc3339(), "2026-02-02T08:26:00.500000Z");
    // AttributeTimeinSecs is an instant: it wins, unshifted.
    assert_eq!(
        evs[1].time,
        Micros::from_secs_micros(1_770_019_000, 250_000)
    );
}

#[test]
fn the_time_zone_line_alone_gives_the_offset_and_tabs_pad_labels() {
    let log = "\
Application name:\tTS_WEST
Time zone:\t18000, Eastern Standard Time
Local time:\t2015-12-17T10:00:00.000

@10:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
";
    let items = parse(log.as_bytes(), None);
    assert_eq!(
        events(&items)[0].time.to_rfc3339(),
        "2015-12-17T15:00:01.000000Z"
    );
}

#[test]
fn log_tz_wins_and_follows_summer_time() {
    let log = "\
Application name: TS_BERLIN
Local time:       2015-08-17T10:00:00.000

@10:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
2015-12-17T10:00:00.000 Trc 04120 Check point 2015-12-17T10:00:00
@10:00:01.0000 [0] 8.1 distribute_event: message EventAgentReady
\tAttributeThisDN\t'7001'
";
    let berlin = Zone::parse("Europe/Berlin").unwrap();
    let items: Vec<Parsed> = TlogReader::new(log.as_bytes(), "b.log", None, RECORDED)
        .with_log_zone(Some(berlin))
        .collect();
    let times: Vec<String> = events(&items).iter().map(|e| e.time.to_rfc3339()).collect();
    assert_eq!(
        times,
        ["2015-08-17T08:00:01.000000Z", "2015-12-17T09:00:01.000000Z"]
    );
    // Without --log-tz and without a zone in the header: UTC, as before.
    let times: Vec<String> = events(&parse(log.as_bytes(), None))
        .iter()
        .map(|e| e.time.to_rfc3339())
        .collect();
    assert_eq!(times[0], "2015-08-17T10:00:01.000000Z");
}

#[test]
fn time_convert_utc_keeps_the_times_as_they_are() {
    let log = LOCAL_HEADER.replace("value 'local'", "value 'utc'")
        + "@08:30:00.0000 [0] 8.1 distribute_event: message EventAgentReady\n\tAttributeThisDN\t'3001'\n";
    let items = parse(log.as_bytes(), None);
    assert_eq!(
        events(&items)[0].time.to_rfc3339(),
        "2026-02-02T08:30:00.000000Z"
    );
}

/// The real SIP Server log of `../shared/real` (see its SOURCES.md), when present: its header
/// is understood and none of its ~13 000 lines of noise is malformed or counted.
#[test]
fn a_real_sip_server_log_is_all_noise_and_none_of_it_malformed() {
    let dir = std::env::var_os("IVRSTATE_REAL_CAPTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/real")
        });
    let path = dir.join("github-abhi2varma-webrtc-genesys-logs.txt-SIP_P-sipserver.log");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("skipped: {} is not here", path.display());
        return;
    };
    let mut parser = TlogParser::new("sip.log", None, RECORDED);
    let mut out = Vec::new();
    let mut lines = LineReader::new(&bytes[..]);
    while lines
        .next_line(|l| parser.push_line(l.bytes, l.line_no, l.byte_offset, &mut out))
        .unwrap()
        .is_some()
    {}
    parser.finish(&mut out);
    assert!(out.is_empty(), "{:?}", out.first());
    assert_eq!(parser.tserver().map(TServerName::as_str), Some("SIP_P"));
    assert_eq!(parser.clock.zone().map(Zone::name), Some("+05:30"));
}
