//! Tests of the store as a whole: the log, dedup, tail, verify, migrations on open, derived
//! trees. (Codec and dedup-index details are tested beside their code.)

use crate::*;
use ivrstate_model::*;
use proptest::prelude::*;
use std::path::Path;

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn agent(ts: &str, source_seq: Option<u64>, time: i64, dn: &str, kind: AgentEventKind) -> Envelope {
    Envelope {
        time: Micros(time),
        recorded: Micros(1_700_000_000_000_000),
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from(ts),
            source_seq,
            kind: TLibKind::Agent(AgentEvent {
                kind,
                dn: Dn::from(dn),
                agent_id: Some(AgentId::from("1001")),
                queue: None,
                work_mode: Some(WorkMode::ManualIn),
                reasons: KvList(vec![("ReasonCode".into(), "Break".into())]),
                extensions: KvList::default(),
            }),
        }),
    }
}

fn events(ts: &str, from_seq: u64, n: u64) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            agent(
                ts,
                Some(from_seq + i),
                1_439_853_377_000_000 + i as i64 * 1000,
                "7001",
                AgentEventKind::Ready,
            )
        })
        .collect()
}

fn read_all(log: &EventLog) -> Vec<Record> {
    log.read(1, Seq::MAX).collect::<Result<_, _>>().unwrap()
}

// ---- round trips -------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[0-9]{1,4}", "\\PC{0,6}"]
}

fn arb_event() -> impl Strategy<Value = Event> {
    let kv = || {
        prop::collection::vec((arb_text(), arb_text()), 0..3).prop_map(|pairs| {
            KvList(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            )
        })
    };
    let work_mode = prop::option::of(prop_oneof![
        prop::sample::select(vec![
            WorkMode::Unknown,
            WorkMode::ManualIn,
            WorkMode::AutoIn,
            WorkMode::AfterCallWork,
            WorkMode::AuxWork,
            WorkMode::NoCallDisconnect,
            WorkMode::WalkAway,
            WorkMode::ReturnBack,
        ]),
        any::<i32>().prop_map(WorkMode::Other),
    ]);
    let agent = (
        0..5u8,
        arb_text(),
        prop::option::of(arb_text()),
        prop::option::of(arb_text()),
        work_mode,
        kv(),
        kv(),
    )
        .prop_map(|(k, dn, agent_id, queue, work_mode, reasons, extensions)| {
            let kind = [
                AgentEventKind::Login,
                AgentEventKind::Logout,
                AgentEventKind::Ready,
                AgentEventKind::NotReady,
                AgentEventKind::AfterCallWork,
            ][k as usize];
            TLibKind::Agent(AgentEvent {
                kind,
                dn: Dn::from(dn),
                agent_id: agent_id.map(AgentId::from),
                queue: queue.map(Queue::from),
                work_mode,
                reasons,
                extensions,
            })
        });
    let kind = prop_oneof![4 => agent, 1 => Just(TLibKind::LinkConnected), 1 => Just(TLibKind::LinkDisconnected)];
    let tlib = (
        prop::sample::select(vec!["TS_A", "TS_B"]),
        prop::option::of(prop_oneof![4 => 0..12u64, 1 => any::<u64>()]),
        kind,
    )
        .prop_map(|(ts, source_seq, kind)| {
            Event::TLib(TLibEvent {
                tserver: TServerName::from(ts),
                source_seq,
                kind,
            })
        });
    let config = arb_text().prop_map(|name| {
        Event::Config(ConfigEvent::TServerRemoved {
            name: TServerName::from(name),
        })
    });
    let anomaly = (arb_text(), prop::option::of(arb_text())).prop_map(|(detail, dn)| {
        Event::Anomaly(Anomaly {
            tserver: None,
            dn: dn.map(Dn::from),
            kind: AnomalyKind::OutOfOrder,
            detail,
        })
    });
    prop_oneof![6 => tlib, 1 => config, 1 => anomaly]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (0..3i64, any::<i64>(), arb_event()).prop_map(|(time, recorded, event)| Envelope {
        time: Micros(time),
        recorded: Micros(recorded),
        event,
    })
}

/// The naive model of dedup: an event is a duplicate iff an equal event (same source key, time
/// and event) was kept before it.
fn model_keep(all: &[Envelope]) -> Vec<bool> {
    let mut kept: Vec<&Envelope> = Vec::new();
    all.iter()
        .map(|e| {
            let dup = e.source_key().is_some()
                && kept.iter().any(|k| k.time == e.time && k.event == e.event);
            if !dup {
                kept.push(e);
            }
            !dup
        })
        .collect()
}

/// One envelope of every event shape the model has, for the encoding tests.
fn every_event_shape() -> Vec<Envelope> {
    let at = |event| Envelope {
        time: Micros(-5),
        recorded: Micros(1_439_769_600_000_000),
        event,
    };
    let kv = KvList(vec![("ReasonCode".into(), "Break".into())]);
    let ivr = IvrConfig {
        name: IvrName::from("IVR_1"),
        tservers: vec![
            TServerName::from("TS_SIP"),
            TServerName::from("a-name-longer-than-24-bytes"),
        ],
        options: vec![ConfigOption {
            name: "list".into(),
            value: ConfigValue::List(vec![
                ConfigOption {
                    name: "n".into(),
                    value: ConfigValue::Int(-7),
                },
                ConfigOption {
                    name: "s".into(),
                    value: ConfigValue::Str("x".into()),
                },
            ]),
        }],
    };
    let port = PortConfig {
        ivr: IvrName::from("IVR_1"),
        port: PortNum::from("1"),
        dn: Dn::from("7001"),
        tserver: TServerName::from("TS_SIP"),
    };
    let tlib = |kind| {
        Event::TLib(TLibEvent {
            tserver: TServerName::from("TS_SIP"),
            source_seq: Some(u64::MAX),
            kind,
        })
    };
    vec![
        at(tlib(TLibKind::Agent(AgentEvent {
            kind: AgentEventKind::NotReady,
            dn: Dn::from("7001"),
            agent_id: Some(AgentId::from("5001")),
            queue: Some(Queue::from("8001")),
            work_mode: Some(WorkMode::AfterCallWork),
            reasons: kv.clone(),
            extensions: kv.clone(),
        }))),
        at(tlib(TLibKind::AddressInfo(AddressInfo {
            dn: Dn::from("7001"),
            agent_id: None,
            agent_status: Some(-3),
            work_mode: None,
            reasons: KvList::default(),
            extensions: kv,
        }))),
        at(tlib(TLibKind::LinkConnected)),
        at(Event::TLib(TLibEvent {
            tserver: TServerName::from("TS_SIP"),
            source_seq: None,
            kind: TLibKind::LinkDisconnected,
        })),
        at(Event::Config(ConfigEvent::ServerSettings {
            version: Some("8.5".into()),
        })),
        at(Event::Config(ConfigEvent::TServerAdded {
            name: TServerName::from("TS_SIP"),
            switch: None,
        })),
        at(Event::Config(ConfigEvent::TServerChanged {
            name: TServerName::from("TS_SIP"),
            switch: Some("SIP".into()),
        })),
        at(Event::Config(ConfigEvent::TServerRemoved {
            name: TServerName::from("TS_SIP"),
        })),
        at(Event::Config(ConfigEvent::IvrAdded(ivr.clone()))),
        at(Event::Config(ConfigEvent::IvrChanged(ivr))),
        at(Event::Config(ConfigEvent::IvrRemoved {
            name: IvrName::from("IVR_1"),
        })),
        at(Event::Config(ConfigEvent::PortAdded(port.clone()))),
        at(Event::Config(ConfigEvent::PortChanged(port))),
        at(Event::Config(ConfigEvent::PortRemoved {
            ivr: IvrName::from("IVR_1"),
            port: PortNum::from("1"),
        })),
        at(Event::Request(ClientRequest {
            ivr: IvrName::from("IVR_1"),
            client: "127.0.0.1:5000".into(),
            request: "AgentReady".into(),
            req_id: Some("7".into()),
            port: Some(PortNum::from("1")),
            attributes: vec![("ReasonCode".into(), "x".into())],
        })),
        at(Event::Anomaly(Anomaly {
            tserver: Some(TServerName::from("TS_SIP")),
            dn: None,
            kind: AnomalyKind::SourceRestart,
            detail: "restart".into(),
        })),
    ]
}

/// The bytes bincode's serde path writes: what every store before the native derive holds.
fn serde_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, ivrstate_model::bincode_config()).unwrap()
}

#[test]
fn the_native_encoding_writes_and_reads_the_bytes_serde_wrote() {
    let all = every_event_shape();
    for env in &all {
        let old = serde_bytes(env);
        assert_eq!(codec::encode_envelope(env).unwrap(), old, "{env:?}");
        assert_eq!(&codec::decode_envelope(&old).unwrap(), env);
    }
    // A block's payload too (a slice of references encodes as a Vec of envelopes).
    let refs: Vec<&Envelope> = all.iter().collect();
    let block = codec::encode_block(&refs).unwrap();
    assert_eq!(codec::open_block(&block).unwrap(), serde_bytes(&all));
    assert_eq!(codec::decode_block(&block).unwrap(), all);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_decoder_agrees_with_bincode_on_good_and_damaged_bytes(
        envs in prop::collection::vec(arb_envelope(), 1..20),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        garbage in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let bincode_only = |bytes: &[u8]| -> Option<Envelope> {
            match bincode::borrow_decode_from_slice::<Envelope, _>(bytes, codec::decode_config()) {
                Ok((env, used)) if used == bytes.len() => Some(env),
                _ => None,
            }
        };
        for env in &envs {
            let bytes = codec::encode_envelope(env).unwrap();
            prop_assert_eq!(&codec::decode_envelope(&bytes).unwrap(), env);
            let mut damaged = bytes.clone();
            let i = at.index(damaged.len());
            damaged[i] = byte;
            prop_assert_eq!(codec::decode_envelope(&damaged).ok(), bincode_only(&damaged));
            prop_assert_eq!(codec::decode_envelope(&bytes[..i]).ok(), bincode_only(&bytes[..i]));
        }
        prop_assert_eq!(codec::decode_envelope(&garbage).ok(), bincode_only(&garbage));
        // A block decodes envelope by envelope, the fast path and bincode mixed.
        let refs: Vec<&Envelope> = envs.iter().collect();
        prop_assert_eq!(codec::decode_block(&codec::encode_block(&refs).unwrap()).unwrap(), envs);
    }

    #[test]
    fn random_envelopes_encode_as_serde_did(envs in prop::collection::vec(arb_envelope(), 0..20)) {
        for env in &envs {
            let old = serde_bytes(env);
            prop_assert_eq!(&codec::encode_envelope(env).unwrap(), &old);
            prop_assert_eq!(&codec::decode_envelope(&old).unwrap(), env);
        }
    }

    #[test]
    fn random_batches_read_back_identical_after_reopen(batches in prop::collection::vec(prop::collection::vec(arb_envelope(), 0..40), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Envelope> = batches.concat();
        let keep = model_keep(&all);
        let expected: Vec<Envelope> = all.iter().zip(&keep).filter(|(_, k)| **k).map(|(e, _)| e.clone()).collect();
        {
            let store = open(dir.path());
            let mut i = 0;
            for b in &batches {
                let report = store.log().append(b).unwrap();
                for (o, e) in report.outcomes.iter().zip(b) {
                    prop_assert_eq!(matches!(o, AppendOutcome::New(_)), keep[i]);
                    if let AppendOutcome::Duplicate(seq) = o {
                        let stored = store.log().read(*seq, *seq).next().unwrap().unwrap();
                        prop_assert!(stored.envelope.time == e.time && stored.envelope.event == e.event);
                    }
                    i += 1;
                }
            }
        }
        let store = open(dir.path());
        let records = read_all(store.log());
        prop_assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=expected.len() as Seq).collect::<Vec<_>>());
        prop_assert_eq!(records.into_iter().map(|r| r.envelope).collect::<Vec<_>>(), expected);
        prop_assert!(store.log().verify().unwrap().is_ok());
    }

    #[test]
    fn envelopes_round_trip_through_the_codec(env in arb_envelope()) {
        let bytes = codec::encode_envelope(&env).unwrap();
        prop_assert_eq!(codec::decode_envelope(&bytes).unwrap(), env.clone());
        let block = codec::encode_block(std::slice::from_ref(&env)).unwrap();
        prop_assert_eq!(codec::decode_block(&block).unwrap(), vec![env]);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = codec::decode_block(&bytes);
        let _ = codec::decode_envelope(&bytes);
    }
}

#[test]
fn seqs_are_contiguous_across_many_appends_blocks_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0u64;
    let sizes = [1u64, 7, 4096, 4097, 9000, 3, 0, 250];
    for round in 0..3u64 {
        let store = open(dir.path());
        assert_eq!(store.log().last_seq(), total);
        for (i, n) in sizes.iter().enumerate() {
            let r = store
                .log()
                .append(&events("TS", (round * 100 + i as u64) * 100_000, *n))
                .unwrap();
            assert_eq!(r.appended, *n);
            assert_eq!(r.first_seq, (*n > 0).then_some(total + 1));
            total += n;
            assert_eq!(r.last_seq, total);
        }
    }
    let store = open(dir.path());
    let seqs: Vec<Seq> = read_all(store.log()).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // Point reads and ranges that start inside a block and cross block boundaries.
    for k in [1, 2, 4096, 4097, 4104, 4105, 8201, total - 1, total] {
        let r: Vec<Record> = store.log().read(k, k).collect::<Result<_, _>>().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].seq, k);
    }
    let r: Vec<Seq> = store
        .log()
        .read(4000, 8300)
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(r, (4000..=8300).collect::<Vec<_>>());
    // Reads stop at the tail.
    assert_eq!(store.log().read(total, total + 10).count(), 1);
    assert_eq!(store.log().read(total + 1, Seq::MAX).count(), 0);
    let report = store.log().verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert_eq!(report.records, total);
}

// ---- dedup -------------------------------------------------------------------------------

#[test]
fn the_same_batch_twice_appends_nothing_even_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events("TS_SIP", 0x10c9288, 1500);
    {
        let store = open(dir.path());
        assert_eq!(store.log().append(&batch).unwrap().appended, 1500);
        let again = store.log().append(&batch).unwrap();
        assert_eq!(
            (
                again.appended,
                again.duplicates,
                again.first_seq,
                again.last_seq
            ),
            (0, 1500, None, 1500)
        );
        assert_eq!(again.outcomes[10], AppendOutcome::Duplicate(11));
    }
    let store = open(dir.path());
    // A re-fed file also differs in `recorded`, which is not part of the identity.
    let refed: Vec<Envelope> = batch
        .iter()
        .map(|e| Envelope {
            recorded: Micros(5),
            ..e.clone()
        })
        .collect();
    let again = store.log().append(&refed).unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 1500));
    assert_eq!(store.log().last_seq(), 1500);
}

#[test]
fn a_restart_reusing_source_numbers_is_not_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = events("TS", 1, 100);
    store.log().append(&first).unwrap();
    // Same T-Server and number, different time (the T-Server restarted).
    let later: Vec<Envelope> = first
        .iter()
        .map(|e| Envelope {
            time: Micros(e.time.0 + 3_600_000_000),
            ..e.clone()
        })
        .collect();
    assert_eq!(store.log().append(&later).unwrap().appended, 100);
    // Same number and time, different content.
    let other = agent(
        "TS",
        Some(5),
        first[4].time.0,
        "7002",
        AgentEventKind::Ready,
    );
    let other_kind = agent(
        "TS",
        Some(5),
        first[4].time.0,
        "7001",
        AgentEventKind::NotReady,
    );
    // Same number on another T-Server.
    let other_ts = Envelope {
        event: match &first[4].event {
            Event::TLib(t) => Event::TLib(TLibEvent {
                tserver: TServerName::from("TS2"),
                ..t.clone()
            }),
            e => e.clone(),
        },
        ..first[4].clone()
    };
    let r = store
        .log()
        .append(&[
            other,
            other_kind,
            other_ts,
            first[4].clone(),
            later[4].clone(),
        ])
        .unwrap();
    assert_eq!(
        r.outcomes,
        vec![
            AppendOutcome::New(201),
            AppendOutcome::New(202),
            AppendOutcome::New(203),
            AppendOutcome::Duplicate(5),
            AppendOutcome::Duplicate(105)
        ]
    );
    drop(store);
    // After reopen the index is rebuilt from disk and still tells them apart.
    let store = open(dir.path());
    let r = store
        .log()
        .append(&[
            first[99].clone(),
            later[0].clone(),
            agent("TS", Some(50), 0, "9", AgentEventKind::Login),
        ])
        .unwrap();
    assert_eq!(
        r.outcomes,
        vec![
            AppendOutcome::Duplicate(100),
            AppendOutcome::Duplicate(101),
            AppendOutcome::New(204)
        ]
    );
    assert!(store.log().verify().unwrap().is_ok());
}

#[test]
fn duplicates_within_one_call_are_stored_once_and_unnumbered_events_always() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let e = agent("TS", Some(9), 10, "7001", AgentEventKind::Ready);
    let e_other_time = agent("TS", Some(9), 11, "7001", AgentEventKind::Ready);
    let unnumbered = agent("TS", None, 10, "7001", AgentEventKind::Ready);
    let r = store
        .log()
        .append(&[
            e.clone(),
            e_other_time.clone(),
            e.clone(),
            unnumbered.clone(),
            unnumbered.clone(),
            e_other_time,
        ])
        .unwrap();
    assert_eq!(
        r.outcomes,
        vec![
            AppendOutcome::New(1),
            AppendOutcome::New(2),
            AppendOutcome::Duplicate(1),
            AppendOutcome::New(3),
            AppendOutcome::New(4),
            AppendOutcome::Duplicate(2)
        ]
    );
    assert_eq!((r.appended, r.duplicates), (4, 2));
    assert_eq!(store.log().append(&[unnumbered]).unwrap().appended, 1);
}

// ---- tail --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_wakes_a_waiter_when_its_seq_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rx = store.log().subscribe();
    assert_eq!(*rx.borrow(), 0);
    let waiter = tokio::spawn(async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            rx.wait_for(|s| *s >= 150),
        )
        .await
        .map(|r| r.map(|s| *s))
    });
    let log = store.log().clone();
    tokio::task::spawn_blocking(move || {
        log.append(&events("TS", 1, 100)).unwrap();
        log.append(&events("TS", 101, 100)).unwrap();
    })
    .await
    .unwrap();
    let seen = waiter
        .await
        .unwrap()
        .expect("the waiter was not woken before the deadline")
        .unwrap();
    assert_eq!(seen, 200);
    assert_eq!(store.log().last_seq(), 200);
}

// ---- verify ------------------------------------------------------------------------------

/// Where the bytes of the block starting at `first` are: sled holds `b'S'` + segment (u64 BE)
/// + offset (u64 BE) + length (u32 BE), and the segment is `log/<segment, 20 digits>.seg`.
fn block_bytes_at(
    store: &Store,
    dir: &std::path::Path,
    first: u64,
) -> (std::path::PathBuf, u64, usize) {
    let pointer = store
        .log()
        .raw_tree()
        .get(log::block_key(first))
        .unwrap()
        .unwrap();
    assert_eq!(
        (pointer.len(), pointer[0]),
        (21, b'S'),
        "a pointer into a segment"
    );
    let field = |at: usize, len: usize| {
        pointer[at..at + len]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    let path = dir.join("log").join(format!("{:020}.seg", field(1, 8)));
    (path, field(9, 8), field(17, 4) as usize)
}

#[test]
fn verify_catches_a_changed_byte_anywhere_in_a_block() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.log().append(&events("TS", 1, 3)).unwrap();
    store.log().append(&events("TS", 4, 2)).unwrap();
    assert!(store.log().verify().unwrap().is_ok());
    let (path, offset, len) = block_bytes_at(&store, dir.path(), 4);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut original = vec![0; len];
    file.read_exact_at(&mut original, offset).unwrap();
    for i in 0..original.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = original.clone();
            bad[i] ^= flip;
            file.write_all_at(&bad, offset).unwrap();
            let report = store.log().verify().unwrap();
            assert!(
                report.faults.iter().any(|f| f.seq == Some(4)),
                "byte {i} flipped by {flip:#x} went unnoticed"
            );
            let r: Vec<_> = store.log().read(4, 5).collect();
            assert!(
                r[0].is_err(),
                "byte {i}: a damaged block must not be read back"
            );
        }
    }
    file.write_all_at(&original, offset).unwrap();
    assert!(store.log().verify().unwrap().is_ok());
    // A pointer that names bytes that are not there is a fault too, not a panic.
    let tree = store.log().raw_tree();
    let pointer = tree.get(log::block_key(4)).unwrap().unwrap().to_vec();
    for i in 1..pointer.len() {
        let mut bad = pointer.clone();
        bad[i] ^= 0x40;
        tree.insert(log::block_key(4), bad).unwrap();
        assert!(
            store
                .log()
                .verify()
                .unwrap()
                .faults
                .iter()
                .any(|f| f.seq == Some(4)),
            "pointer byte {i} changed went unnoticed"
        );
    }
    tree.insert(log::block_key(4), pointer).unwrap();
    assert!(store.log().verify().unwrap().is_ok());
}

#[test]
fn bytes_a_crash_left_after_the_last_block_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.log().append(&events("TS", 1, 5)).unwrap();
        // What a crash after an append's segment sync and before sled kept its pointers leaves.
        let (path, ..) = block_bytes_at(&store, dir.path(), 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"half of a block that was never named").unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.log().last_seq(), 5);
    store.log().append(&events("TS", 6, 5)).unwrap();
    assert!(store.log().verify().unwrap().is_ok());
    assert_eq!(read_all(store.log()).len(), 10);
    // The log's bytes are in the segment, not in sled: sled holds 21-byte pointers.
    let (_, offset, _) = block_bytes_at(&store, dir.path(), 6);
    assert!(offset > 36, "the new block went after the dead bytes");
}

#[test]
fn verify_catches_gaps_and_index_faults() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..3 {
        store.log().append(&events("TS", i * 10 + 1, 10)).unwrap();
    }
    let tree = store.log().raw_tree();
    let middle = tree.remove(log::block_key(11)).unwrap().unwrap();
    let report = store.log().verify().unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.seq == Some(21) && f.what.contains("gap") && f.what.contains("11..=20")),
        "{:?}",
        report.faults
    );
    let err = store.log().read(1, 30).find_map(Result::err).unwrap();
    assert!(err.to_string().contains("seq 11"), "{err}");
    tree.insert(log::block_key(11), middle).unwrap();
    assert!(store.log().verify().unwrap().is_ok());
    let d: Vec<u8> = tree.scan_prefix(b"D").next().unwrap().unwrap().0.to_vec();
    tree.remove(&d).unwrap();
    let report = store.log().verify().unwrap();
    assert!(
        report
            .faults
            .iter()
            .any(|f| f.seq == Some(1) && f.what.contains("missing")),
        "{:?}",
        report.faults
    );
}

#[test]
fn a_damaged_last_block_opens_for_verify_but_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.log().append(&events("TS", 1, 5)).unwrap();
        store.log().append(&events("TS", 6, 5)).unwrap();
        let tree = store.log().raw_tree();
        let mut v = tree.get(log::block_key(6)).unwrap().unwrap().to_vec();
        v[7] ^= 0xff;
        tree.insert(log::block_key(6), v).unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.log().last_seq(), 5);
    assert!(matches!(
        store.log().append(&events("TS", 100, 1)),
        Err(StoreError::Damaged(_))
    ));
    assert!(store
        .log()
        .verify()
        .unwrap()
        .faults
        .iter()
        .any(|f| f.seq == Some(6)));
    assert_eq!(read_all(store.log()).len(), 5);
}

// ---- durability, open, migrations ---------------------------------------------------------

#[test]
fn relaxed_durability_stores_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durability: Durability::Relaxed,
                cache_bytes: 1 << 20,
            },
        )
        .unwrap();
        let r = store.log().append(&events("TS", 1, 300)).unwrap();
        assert_eq!(r.last_seq, 300);
        assert_eq!(store.log().last_seq(), 300);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(read_all(store.log()).len(), 300);
}

#[test]
fn a_store_whose_creation_was_interrupted_opens() {
    // What a kill during the first open leaves: sled made `blobs/`, not yet `conf` and `db`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("blobs")).unwrap();
    let store = open(dir.path());
    store.log().append(&events("TS", 1, 3)).unwrap();
    assert_eq!(read_all(store.log()).len(), 3);

    // A `blobs/` with something in it is not an interrupted creation.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("blobs")).unwrap();
    std::fs::write(other.path().join("blobs").join("1"), "x").unwrap();
    assert!(matches!(
        Store::open(other.path(), StoreOptions::default()),
        Err(StoreError::NotAStore { .. })
    ));
}

#[test]
fn garbage_directories_and_files_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was written"
    );

    let file = dir.path().join("notes.txt");
    assert!(matches!(
        Store::open(&file, StoreOptions::default()),
        Err(StoreError::NotAStore { .. })
    ));

    // Files with sled's names but garbage inside.
    let fake = tempfile::tempdir().unwrap();
    let mut junk = Vec::new();
    for i in 0..100_000u32 {
        junk.push((i.wrapping_mul(2_654_435_761) >> 13) as u8);
    }
    std::fs::write(fake.path().join("db"), &junk).unwrap();
    std::fs::write(fake.path().join("conf"), &junk[..300]).unwrap();
    assert!(Store::open(fake.path(), StoreOptions::default()).is_err());

    // A sled database that is someone else's.
    let foreign = tempfile::tempdir().unwrap();
    {
        let db = sled::open(foreign.path()).unwrap();
        db.insert(b"k", b"v".as_slice()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(foreign.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an ivrstate store"), "{err}");
}

#[test]
fn an_unfinished_sled_snapshot_does_not_lose_the_store() {
    // What a process killed while sled writes a snapshot (or a write that failed on a full
    // disk) leaves behind: sled 0.34 would take this partial file as the newest snapshot and
    // refuse every later open.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.log().append(&events("TS", 1, 10)).unwrap();
    }
    for partial in [&b""[..], &[7u8; 40][..]] {
        let name = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&name, partial).unwrap();
        let store = open(dir.path());
        assert_eq!(read_all(store.log()).len(), 10);
        assert!(store.log().verify().unwrap().is_ok());
        assert!(!name.exists(), "the partial snapshot is removed");
    }
}

fn raw_db(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .cache_capacity(1 << 20)
        .open()
        .unwrap()
}

#[test]
fn a_store_from_a_newer_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.log().append(&events("TS", 1, 10)).unwrap();
    }
    let newer = CURRENT_VERSION + 1;
    type Trees = Vec<(String, Vec<Entry>)>;
    let snapshot = |db: &sled::Db| -> Trees {
        db.tree_names()
            .into_iter()
            .map(|n| {
                let t = db.open_tree(&n).unwrap();
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    t.iter()
                        .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                        .collect::<Result<_, _>>()
                        .unwrap(),
                )
            })
            .collect()
    };
    let before = {
        let db = raw_db(dir.path());
        db.open_tree("meta")
            .unwrap()
            .insert(b"format_version", &newer.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
        snapshot(&db)
    };
    let err = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("format version {newer}"))
            && msg.contains(&format!("version {CURRENT_VERSION}")),
        "{msg}"
    );
    assert!(matches!(
        err,
        StoreError::Migration {
            source: MigrationError::NewerVersion { .. },
            ..
        }
    ));
    let db = raw_db(dir.path());
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_version_1_store_is_migrated_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = events("TS", 1, 700);
    let second = events("TS", 701, 300);
    {
        // The layout before m0002: uncompressed blocks, written by hand.
        let db = raw_db(dir.path());
        let meta = db.open_tree("meta").unwrap();
        meta.insert(b"format_version", &1u32.to_be_bytes()).unwrap();
        meta.insert(b"applied:m0001_initial", &1u32.to_be_bytes())
            .unwrap();
        let log = db.open_tree("log").unwrap();
        log.insert(log::block_key(1), codec::encode_block_v1(&first))
            .unwrap();
        log.insert(log::block_key(701), codec::encode_block_v1(&second))
            .unwrap();
        log.insert(dedup::entry_key("TS", 1, 1), &700u64.to_be_bytes())
            .unwrap();
        log.insert(dedup::entry_key("TS", 701, 701), &1000u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let got: Vec<Envelope> = read_all(store.log())
        .into_iter()
        .map(|r| r.envelope)
        .collect();
    assert_eq!(got, [first.clone(), second].concat());
    assert_eq!(store.log().last_seq(), 1000);
    assert!(store.log().verify().unwrap().is_ok());
    assert_eq!(store.log().append(&first).unwrap().appended, 0);
    drop(store);
    let db = raw_db(dir.path());
    assert_eq!(
        ivrstate_migrations::applied(&db).unwrap(),
        vec![
            "m0001_initial",
            "m0002_compress_blocks",
            "m0003_history_packs",
            "m0004_provenance",
            "m0005_history_columns"
        ]
    );
    assert_eq!(
        ivrstate_migrations::format_version(&db).unwrap(),
        Some(CURRENT_VERSION)
    );
}

// ---- derived trees and metadata ------------------------------------------------------------

#[test]
fn derived_trees_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let t = store.derived("history").unwrap();
        for i in 0u8..10 {
            t.insert(&[b'a', i], &[i]).unwrap();
        }
        t.insert(b"b1", b"x").unwrap();
        assert_eq!(t.get(&[b'a', 3]).unwrap(), Some(vec![3]));
        let fwd: Vec<u8> = t
            .range([b'a', 2]..[b'a', 5])
            .map(|e| e.unwrap().1[0])
            .collect();
        assert_eq!(fwd, vec![2, 3, 4]);
        let rev: Vec<u8> = t
            .range([b'a', 2]..=[b'a', 5])
            .rev()
            .map(|e| e.unwrap().1[0])
            .collect();
        assert_eq!(rev, vec![5, 4, 3, 2]);
        assert_eq!(t.scan_prefix(b"a").count(), 10);
        assert_eq!(
            t.scan_prefix(b"a").next_back().unwrap().unwrap().0,
            vec![b'a', 9]
        );
        let mut batch = DerivedBatch::new();
        batch.remove(&[b'a', 0]);
        batch.insert(b"c", b"y");
        t.apply_batch(batch).unwrap();
        assert_eq!(t.get(&[b'a', 0]).unwrap(), None);
        assert_eq!(t.last().unwrap(), Some((b"c".to_vec(), b"y".to_vec())));
        t.remove(b"c").unwrap();
        t.flush().unwrap();
        store.flush().unwrap();
        assert!(matches!(store.derived(""), Err(StoreError::InvalidName(_))));
    }
    let store = open(dir.path());
    let t = store.derived("history").unwrap();
    assert_eq!(t.iter().count(), 10);
    t.clear().unwrap();
    assert!(t.is_empty());
    store.derived("other").unwrap().insert(b"k", b"v").unwrap();
    store.drop_derived().unwrap();
    assert!(store.derived("other").unwrap().is_empty());
    assert!(store.size_on_disk() > 0);
}

// ---- read-ahead ------------------------------------------------------------------------------

#[test]
fn read_ahead_yields_what_read_yields() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Several blocks, and more records than one read-ahead chunk (1024).
    for i in 0..5 {
        store.log().append(&events("TS", i * 700 + 1, 700)).unwrap();
    }
    for (from, to) in [
        (1, Seq::MAX),
        (1, 1),
        (650, 2900),
        (3500, 3500),
        (3501, 9000),
    ] {
        let plain: Vec<Record> = store
            .log()
            .read(from, to)
            .collect::<Result<_, _>>()
            .unwrap();
        let ahead: Vec<Record> = store
            .log()
            .read(from, to)
            .read_ahead(2)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ahead, plain, "{from}..={to}");
        let mut visited = Vec::new();
        store
            .log()
            .read(from, to)
            .read_ahead(2)
            .visit(|r| {
                visited.push(r.clone());
                Ok::<(), StoreError>(())
            })
            .unwrap();
        assert_eq!(visited, plain, "visit {from}..={to}");
    }
    // `visit` stops at the first error its function returns.
    let mut seen = 0;
    let stopped = store.log().read(1, Seq::MAX).read_ahead(2).visit(|r| {
        seen += 1;
        match r.seq {
            1200 => Err(StoreError::Db("stop here".into())),
            _ => Ok(()),
        }
    });
    assert!(matches!(stopped, Err(StoreError::Db(why)) if why == "stop here"));
    assert_eq!(seen, 1200);
    assert_eq!(store.log().read(1, Seq::MAX).read_ahead(1).count(), 3500);
    // An iterator already part-way through a block reads ahead too, from its next record.
    let mut started = store.log().read(1, 3000);
    assert_eq!(started.next().unwrap().unwrap().seq, 1);
    let rest: Vec<Record> = started.read_ahead(2).collect::<Result<_, _>>().unwrap();
    let plain: Vec<Record> = store.log().read(2, 3000).collect::<Result<_, _>>().unwrap();
    assert_eq!(rest, plain);
}

#[test]
fn read_ahead_reports_a_gap_after_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..3 {
        store.log().append(&events("TS", i * 10 + 1, 10)).unwrap();
    }
    store.log().raw_tree().remove(log::block_key(11)).unwrap();
    let items: Vec<_> = store.log().read(1, 30).read_ahead(4).collect();
    assert_eq!(items.len(), 11, "10 records, then the error, then nothing");
    assert!(items[..10].iter().all(Result::is_ok));
    let err = items[10].as_ref().unwrap_err();
    assert!(err.to_string().contains("seq 11"), "{err}");
    // `visit` sees the same records, then returns the error.
    let mut seen = 0;
    let visited = store.log().read(1, 30).read_ahead(4).visit(|_| {
        seen += 1;
        Ok::<(), StoreError>(())
    });
    assert_eq!(seen, 10);
    assert!(visited.unwrap_err().to_string().contains("seq 11"));
}

#[test]
fn dropping_a_read_ahead_early_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..4 {
            store
                .log()
                .append(&events("TS", i * 1000 + 1, 1000))
                .unwrap();
        }
        let mut it = store.log().read(1, Seq::MAX).read_ahead(1);
        assert_eq!(it.next().unwrap().unwrap().seq, 1);
        drop(it);
    }
    // The reading thread has let go of the database: it opens again.
    assert_eq!(open(dir.path()).log().last_seq(), 4000);
}

#[test]
fn store_flush_and_durable_appends_sync_the_data_file() {
    // The sync path runs (sled flush, then fdatasync of `db`) and the data survives a reopen.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.log().append(&events("TS", 1, 10)).unwrap();
        store.flush().unwrap();
    }
    assert!(dir.path().join("db").is_file());
    assert_eq!(read_all(open(dir.path()).log()).len(), 10);
}

// ---- group commit ----------------------------------------------------------------------------

#[test]
fn a_begun_append_is_invisible_until_durable_and_one_flush_covers_the_appends_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.log();
    let first = log.begin_append(&events("TS_A", 1, 3)).unwrap();
    let second = log.begin_append(&events("TS_A", 4, 2)).unwrap();
    // Written into sled, not yet flushed: neither the tail nor a read shows them.
    assert_eq!(log.last_seq(), 0);
    assert_eq!(read_all(log).len(), 0);
    // The second's flush covers the first as well (it was written before the flush started).
    let report = second.wait_durable().unwrap();
    assert_eq!((report.first_seq, report.last_seq), (Some(4), 5));
    assert_eq!(log.last_seq(), 5);
    assert_eq!(read_all(log).len(), 5);
    let report = first.wait_durable().unwrap();
    assert_eq!(
        (report.first_seq, report.last_seq, report.appended),
        (Some(1), 3, 3)
    );
    // A duplicate of a record begun but not flushed is reported only once that record is durable.
    let third = log.begin_append(&events("TS_A", 6, 1)).unwrap();
    let dup = log.begin_append(&events("TS_A", 6, 1)).unwrap();
    assert_eq!(log.last_seq(), 5);
    let report = dup.wait_durable().unwrap();
    assert_eq!(report.outcomes, vec![AppendOutcome::Duplicate(6)]);
    assert_eq!(log.last_seq(), 6);
    third.wait_durable().unwrap();
}

#[test]
fn concurrent_appenders_get_contiguous_seqs_and_every_event_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.log();
    const THREADS: u64 = 4;
    const APPENDS: u64 = 25;
    const EACH: u64 = 20;
    let reports: Vec<Vec<(Vec<Envelope>, AppendReport)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let ts = format!("TS_{t}");
                    (0..APPENDS)
                        .map(|a| {
                            let batch = events(&ts, 1 + a * EACH, EACH);
                            let report = log.append(&batch).unwrap();
                            // Acknowledged means durable, so visible to readers.
                            assert!(log.last_seq() >= report.last_seq);
                            (batch, report)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = THREADS * APPENDS * EACH;
    assert_eq!(log.last_seq(), total);
    let stored = read_all(log);
    assert_eq!(stored.len() as u64, total);
    for (i, r) in stored.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "seqs are contiguous");
    }
    // Every report names the seqs its own events were stored at.
    for (batch, report) in reports.iter().flatten() {
        assert_eq!(report.appended, EACH);
        for (env, outcome) in batch.iter().zip(&report.outcomes) {
            let AppendOutcome::New(seq) = outcome else {
                panic!("a fresh event was reported {outcome:?}");
            };
            assert_eq!(&stored[*seq as usize - 1].envelope, env);
        }
    }
    drop(store);
    let store = open(dir.path());
    assert_eq!(read_all(store.log()).len() as u64, total);
}

#[test]
fn a_crash_between_a_block_and_its_index_entries_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<Vec<Envelope>> = (0..4).map(|i| events("TS", 1 + i * 50, 50)).collect();
    {
        let store = open(dir.path());
        for b in &batches {
            store.log().append(b).unwrap();
        }
        // What a crash after the last two blocks' inserts and before their entries' leaves:
        // sled recovers a prefix of its log, and the entries are written after their block.
        let tree = store.log().raw_tree();
        for first in [101, 151] {
            let key = dedup::entry_key("TS", first, first);
            assert!(
                tree.remove(key).unwrap().is_some(),
                "entry of block {first}"
            );
        }
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let report = store.log().verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.faults);
    assert_eq!(report.index_entries, 4);
    // The completed index finds the stored copies: nothing is stored twice.
    for b in &batches {
        let again = store.log().append(b).unwrap();
        assert_eq!((again.appended, again.duplicates), (0, 50));
    }
    assert_eq!(store.log().last_seq(), 200);
}

#[test]
fn a_damaged_length_is_an_error_not_an_allocation_that_aborts() {
    // An agent event with empty lists ends with the two list lengths (0, 0); make the last one
    // claim 2^60 pairs (varint: 253, then 8 bytes little endian).
    let env = events("TS", 1, 1).pop().unwrap();
    let mut bytes = codec::encode_envelope(&Envelope {
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from("TS"),
            source_seq: Some(1),
            kind: TLibKind::Agent(AgentEvent {
                extensions: KvList::default(),
                reasons: KvList::default(),
                ..match env.event {
                    Event::TLib(TLibEvent {
                        kind: TLibKind::Agent(a),
                        ..
                    }) => a,
                    _ => unreachable!(),
                }
            }),
        }),
        ..env
    })
    .unwrap();
    assert_eq!(bytes.pop(), Some(0));
    bytes.push(253);
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    bytes.extend_from_slice(b"ab");
    assert!(codec::decode_envelope(&bytes).is_err());
}

#[test]
fn a_store_held_open_elsewhere_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let held = open(dir.path());
    match Store::open(dir.path(), StoreOptions::default()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("not Locked: {other}"),
        Ok(_) => panic!("opened twice"),
    }
    drop(held);
    // Once let go, it opens again (sled's threads release the lock a moment after the drop).
    open(dir.path());
}

#[test]
fn every_record_keeps_its_source_compactly_across_appends_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let log = store.log();
        // Two sources in one append; the second repeats one event of the first (a duplicate
        // gets no record, so no source).
        let a = events("TS", 1, 3);
        let mut b = events("TS", 10, 2);
        b.insert(0, a[2].clone());
        let both: Vec<Envelope> = a.iter().chain(&b).cloned().collect();
        let report = log
            .append_from(
                &both,
                &[
                    SourceRun::new(3, "file a.log"),
                    SourceRun::new(3, "feed 10.0.0.5:4000 #1"),
                ],
            )
            .unwrap();
        assert_eq!((report.appended, report.duplicates), (5, 1));
        // The same source again, in later appends: no new run.
        log.append_from(
            &events("TS", 20, 4),
            &[SourceRun::new(4, "feed 10.0.0.5:4000 #1")],
        )
        .unwrap();
        log.append_from(
            &events("TS", 30, 2),
            &[SourceRun::new(2, "feed 10.0.0.5:4000 #1")],
        )
        .unwrap();
        log.append(&events("TS", 40, 1)).unwrap();
        let p = log.provenance().unwrap();
        assert_eq!(p.runs(), 3, "a run only where the source changes");
        store.flush().unwrap();
    }
    let store = open(dir.path());
    let p = store.log().provenance().unwrap();
    let sources: Vec<String> = (1..=12).map(|seq| p.source(seq).into_owned()).collect();
    let feed = "feed 10.0.0.5:4000 #1";
    assert_eq!(
        sources,
        [
            "file a.log",
            "file a.log",
            "file a.log",
            feed,
            feed,
            feed,
            feed,
            feed,
            feed,
            feed,
            feed,
            UNSPECIFIED_SOURCE
        ]
    );
    // A source seen before a reopen keeps its id: no new run for it after the reopen either.
    store
        .log()
        .append_from(
            &events("TS", 50, 1),
            &[SourceRun::new(1, UNSPECIFIED_SOURCE)],
        )
        .unwrap();
    assert_eq!(store.log().provenance().unwrap().runs(), 3);
}

#[test]
fn records_from_a_file_keep_their_lines_in_about_a_byte_each() {
    let dir = tempfile::tempdir().unwrap();
    let file = "file /var/log/ts.log";
    {
        let store = open(dir.path());
        let log = store.log();
        // A batch of a file, printouts 15 lines apart; its second event repeats a stored one
        // (no record, so no line), and a feed's records between two batches have no lines.
        log.append(&events("TS", 2, 1)).unwrap();
        let lines: Vec<u64> = (0..1000).map(|i| 100 + i * 15).collect();
        let mut batch = events("TS", 1, 1000);
        batch[1] = events("TS", 2, 1)[0].clone();
        log.append_from(&batch, &[SourceRun::with_lines(file, &lines)])
            .unwrap();
        log.append_from(&events("TS", 2000, 2), &[SourceRun::new(2, "feed x #1")])
            .unwrap();
        // The next batch of the same file: a rotation restarts its lines at 1.
        log.append_from(
            &events("TS", 3000, 3),
            &[SourceRun::with_lines(file, &[20_000, 1, 16])],
        )
        .unwrap();
        store.flush().unwrap();
        let bytes = log.provenance().unwrap().stored_bytes().unwrap();
        assert!(
            bytes < 1100 + 200,
            "{bytes} bytes of provenance for ~1000 records"
        );
    }
    let store = open(dir.path());
    let p = store.log().provenance().unwrap();
    assert_eq!(p.source(1), "unspecified");
    assert_eq!(p.source(2), format!("{file}:100"));
    // Record 3 is the batch's third envelope (the second was a duplicate).
    assert_eq!(p.source(3), format!("{file}:130"));
    assert_eq!(p.source(1000), format!("{file}:{}", 100 + 999 * 15));
    assert_eq!(p.source(1001), "feed x #1");
    assert_eq!(p.source(1002), "feed x #1");
    assert_eq!(p.source(1003), format!("{file}:20000"));
    assert_eq!(p.source(1004), format!("{file}:1"));
    assert_eq!(p.source(1005), format!("{file}:16"));
    assert_eq!(p.line(1005), Some(16));
    assert_eq!(p.line(1006), None);
    // Read in any order, not only record after record.
    assert_eq!(p.source(500), format!("{file}:{}", 100 + 499 * 15));
    // Appended later without lines: no line is lent from the entry before.
    store
        .log()
        .append_from(&events("TS", 4000, 1), &[SourceRun::new(1, file)])
        .unwrap();
    let p = store.log().provenance().unwrap();
    assert_eq!(p.source(1006), file);
}

#[test]
fn lines_past_the_last_record_are_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = "file ts.log";
    {
        let store = open(dir.path());
        store
            .log()
            .append_from(&events("TS", 1, 2), &[SourceRun::with_lines(file, &[5, 9])])
            .unwrap();
        // What a crash between the provenance and the blocks of an append leaves (sled
        // recovers a prefix of its writes): the last entry extended over records 3 and 4,
        // or a new entry for them, that were never stored.
        let tree = store.db().open_tree("provenance").unwrap();
        let entry = crate::provenance::encode_entry;
        tree.insert(b"L\0\0\0\0\0\0\0\x01", entry(&[5, 9, 40, 41]))
            .unwrap();
        tree.insert(b"L\0\0\0\0\0\0\0\x03", entry(&[40, 41]))
            .unwrap();
        store.flush().unwrap();
    }
    let store = open(dir.path());
    store
        .log()
        .append_from(&events("TS", 10, 2), &[SourceRun::new(2, "feed y #2")])
        .unwrap();
    let p = store.log().provenance().unwrap();
    assert_eq!(p.source(1), format!("{file}:5"));
    assert_eq!(p.source(2), format!("{file}:9"));
    assert_eq!(p.source(3), "feed y #2");
    assert_eq!(p.source(4), "feed y #2");
}

proptest! {
    #[test]
    fn lines_round_trip_through_their_encoding(lines in proptest::collection::vec(any::<u64>(), 0..50)) {
        let mut bytes = Vec::new();
        encode_lines(&lines, &mut bytes);
        prop_assert_eq!(decode_lines(&bytes), Some(lines));
    }

    #[test]
    fn any_bytes_decode_to_lines_or_none_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Some(lines) = decode_lines(&bytes) {
            let mut again = Vec::new();
            encode_lines(&lines, &mut again);
            prop_assert_eq!(decode_lines(&again), Some(lines));
        }
    }
}

#[test]
fn small_appends_of_a_followed_file_gather_their_lines_into_few_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = store.log();
    let file = "file ts.log (followed)";
    let empty = log.provenance().unwrap().stored_bytes().unwrap();
    for i in 0..2000u64 {
        log.append_from(
            &events("TS", 10 + i, 1),
            &[SourceRun::with_lines(file, &[3 + i * 12])],
        )
        .unwrap();
    }
    let p = log.provenance().unwrap();
    let bytes = p.stored_bytes().unwrap() - empty;
    // Two entries of up to 1024 lines, not 2000 keys of 9 bytes.
    assert!(bytes < 2000, "{bytes} bytes for the lines of 2000 records");
    assert_eq!(p.source(1), format!("{file}:3"));
    assert_eq!(p.source(1500), format!("{file}:{}", 3 + 1499 * 12));
    assert_eq!(p.source(2000), format!("{file}:{}", 3 + 1999 * 12));
}
