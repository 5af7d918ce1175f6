//! The engine over a real store: as-of equals folding the records up to that time, derived data
//! catches up on open, rebuild reproduces it, verify catches damage.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_engine::{Engine, HistorySelector, StatusView};
use ivrstate_model::*;
use ivrstate_projection::{Applied, State};
use ivrstate_store::StoreOptions;
use proptest::prelude::*;

fn agent(
    tserver: &str,
    seq: u64,
    secs: i64,
    kind: AgentEventKind,
    dn: &str,
    id: &str,
    reason: Option<&str>,
) -> Envelope {
    let reasons = KvList(
        reason
            .map(|r| vec![("ReasonCode".into(), r.into())])
            .unwrap_or_default(),
    );
    Envelope {
        time: Micros::from_secs(secs),
        recorded: Micros::from_secs(2_000_000_000),
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from(tserver),
            source_seq: Some(seq),
            kind: TLibKind::Agent(AgentEvent {
                kind,
                dn: Dn::from(dn),
                agent_id: Some(AgentId::from(id)),
                queue: None,
                work_mode: None,
                reasons,
                extensions: KvList::default(),
            }),
        }),
    }
}

fn link(tserver: &str, seq: u64, secs: i64, up: bool) -> Envelope {
    Envelope {
        time: Micros::from_secs(secs),
        recorded: Micros::from_secs(2_000_000_000),
        event: Event::TLib(TLibEvent {
            tserver: TServerName::from(tserver),
            source_seq: Some(seq),
            kind: if up {
                TLibKind::LinkConnected
            } else {
                TLibKind::LinkDisconnected
            },
        }),
    }
}

const CONFIG: &str = r#"
[[tserver]]
name = "TS_A"
[[tserver]]
name = "TS_B"
[[ivr]]
name = "IVR_1"
tservers = ["TS_A", "TS_B"]
[[ivr.port]]
num = "01"
dn = "7001"
tserver = "TS_A"
[[ivr.port]]
num = "02"
dn = "7001"
tserver = "TS_B"
"#;

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, StoreOptions::default()).unwrap()
}

/// The state at `at` by definition: fold, in log order, every record whose time is <= at.
fn fold_until(engine: &Engine, at: Micros) -> StatusView {
    let mut state = State::default();
    let mut applied = Applied::state_only();
    for record in engine.log().read(1, engine.log().last_seq()) {
        let record = record.unwrap();
        if record.envelope.time <= at {
            applied.clear();
            state.apply(&record, &mut applied);
        }
    }
    ivrstate_engine::status_of(&state, Some(at))
}

fn without_seq(mut v: StatusView) -> StatusView {
    v.seq = 0;
    v
}

/// One T-Server's events: a link-up then agent events on its DNs, times increasing.
fn source(tserver: &'static str, n: usize, start: i64) -> impl Strategy<Value = Vec<Envelope>> {
    let kinds = prop::sample::select(vec![
        AgentEventKind::Login,
        AgentEventKind::Logout,
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
    ]);
    let step = (
        kinds,
        prop::sample::select(vec!["7001", "7002"]),
        prop::sample::select(vec!["1001", "1002", "1003"]),
        1i64..300,
        prop::option::of(prop::sample::select(vec!["Break", "Lunch"])),
        prop::bool::weighted(0.05),
    );
    prop::collection::vec(step, 1..n).prop_map(move |steps| {
        let mut t = start;
        let mut out = vec![link(tserver, 1, t, true)];
        for (i, (kind, dn, id, dt, reason, link_flip)) in steps.into_iter().enumerate() {
            t += dt;
            let seq = i as u64 + 2;
            if link_flip {
                out.push(link(tserver, seq, t, i % 2 == 0));
            } else {
                out.push(agent(tserver, seq, t, kind, dn, id, reason));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two T-Servers ingested in batches, interleaved in any order: status_at(T) is the fold of
    /// the records up to T, whatever the ingestion order.
    #[test]
    fn as_of_equals_folding_records_up_to_that_time(
        a in source("TS_A", 60, 1_000),
        b in source("TS_B", 60, 1_100),
        chunk in 1usize..20,
        a_first in any::<bool>(),
        probes in prop::collection::vec(900i64..20_000, 8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = open(dir.path());
        let config = ivrstate_engine::config::parse(CONFIG, "c.toml").unwrap();
        engine.apply_config(&config, Micros::from_secs(0)).unwrap();
        let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
        for batch in first.chunks(chunk).chain(second.chunks(chunk)) {
            engine.append(batch, |_, _| {}).unwrap();
        }
        for secs in probes {
            let at = Micros::from_secs(secs);
            prop_assert_eq!(without_seq(engine.status_at(at).unwrap()), without_seq(fold_until(&engine, at)), "at {}", at);
        }
        // At the newest time, as-of is the current state.
        let now = engine.state().last_time().unwrap();
        prop_assert_eq!(without_seq(engine.status_at(now).unwrap()), without_seq(engine.status()));
        let faults = engine.verify_derived(|_| {}).unwrap();
        prop_assert!(faults.is_empty(), "{:?}", faults);
    }
}

#[test]
fn derived_data_catches_up_on_open_and_rebuild_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut engine = open(dir.path());
        engine
            .append(
                &[agent(
                    "TS_A",
                    1,
                    100,
                    AgentEventKind::Login,
                    "7001",
                    "1001",
                    None,
                )],
                |_, _| {},
            )
            .unwrap();
        // Appended behind the engine's back (as a crash between append and fold would leave it).
        engine
            .log()
            .append(&[agent(
                "TS_A",
                2,
                200,
                AgentEventKind::Ready,
                "7001",
                "1001",
                None,
            )])
            .unwrap();
    }
    let mut engine = open(dir.path());
    assert_eq!(engine.derived_seq(), 2);
    let history = engine
        .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
        .unwrap();
    let statuses: Vec<AgentStatus> = history.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [AgentStatus::LoggedIn, AgentStatus::Ready]);
    let before = engine.status();
    engine.rebuild(|_| {}).unwrap();
    assert_eq!(engine.status(), before);
    assert_eq!(
        engine
            .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
            .unwrap(),
        history
    );
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
}

#[test]
fn history_by_agent_follows_the_agent_across_dns_and_by_port_maps_through_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path());
    let config = ivrstate_engine::config::parse(CONFIG, "c.toml").unwrap();
    engine.apply_config(&config, Micros::from_secs(0)).unwrap();
    let events = [
        agent("TS_A", 1, 100, AgentEventKind::Login, "7001", "1001", None),
        agent(
            "TS_A",
            2,
            110,
            AgentEventKind::NotReady,
            "7001",
            "1001",
            Some("Break"),
        ),
        agent("TS_A", 3, 130, AgentEventKind::Logout, "7001", "1001", None),
        agent("TS_B", 1, 140, AgentEventKind::Login, "7001", "1001", None),
        agent("TS_B", 2, 150, AgentEventKind::Ready, "7001", "1001", None),
        agent("TS_A", 4, 160, AgentEventKind::Login, "7001", "2002", None),
    ];
    engine.append(&events, |_, _| {}).unwrap();
    let by_agent = engine
        .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
        .unwrap();
    let summary: Vec<(&str, AgentStatus)> = by_agent
        .iter()
        .map(|i| (i.tserver.as_str(), i.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("TS_A", AgentStatus::LoggedIn),
            ("TS_A", AgentStatus::NotReady),
            ("TS_A", AgentStatus::LoggedOut),
            ("TS_B", AgentStatus::LoggedIn),
            ("TS_B", AgentStatus::Ready),
        ]
    );
    assert_eq!(by_agent[1].reason.as_deref(), Some("Break"));
    assert_eq!(by_agent[1].duration_s, Some(20.0));

    let by_port = engine
        .history(
            &HistorySelector::Port {
                ivr: IvrName::from("IVR_1"),
                port: PortNum::from("02"),
            },
            None,
            None,
        )
        .unwrap();
    assert!(
        by_port.iter().all(|i| i.tserver.as_str() == "TS_B"),
        "{by_port:?}"
    );
    let by_dn = engine
        .history(
            &HistorySelector::Dn {
                dn: Dn::from("7001"),
                tserver: None,
            },
            None,
            None,
        )
        .unwrap();
    assert_eq!(by_dn.len(), 6, "{by_dn:?}");
    // Clipped: only what overlaps [115, 145].
    let clipped = engine
        .history(
            &HistorySelector::Agent(AgentId::from("1001")),
            Some(Micros::from_secs(115)),
            Some(Micros::from_secs(145)),
        )
        .unwrap();
    assert_eq!(
        clipped.first().map(|i| (i.status, i.start)),
        Some((AgentStatus::NotReady, Micros::from_secs(115)))
    );
    assert!(clipped
        .iter()
        .all(|i| i.end.is_none_or(|e| e <= Micros::from_secs(145))));
    let unknown = engine.history(
        &HistorySelector::Port {
            ivr: IvrName::from("IVR_9"),
            port: PortNum::from("01"),
        },
        None,
        None,
    );
    assert!(unknown.is_err());
}

#[test]
fn audit_counts_to_the_newest_event_without_a_window_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path());
    let events = [
        agent("TS_A", 1, 100, AgentEventKind::Login, "7001", "1001", None),
        agent("TS_A", 2, 100, AgentEventKind::Ready, "7001", "1001", None),
        agent(
            "TS_A",
            3,
            160,
            AgentEventKind::NotReady,
            "7001",
            "1001",
            Some("Lunch"),
        ),
        agent("TS_A", 4, 190, AgentEventKind::Ready, "7001", "1001", None),
        agent("TS_A", 5, 200, AgentEventKind::Ready, "7002", "1002", None),
    ];
    engine.append(&events, |_, _| {}).unwrap();
    let audit = engine.audit(None, None).unwrap();
    let a = audit
        .iter()
        .find(|a| a.agent_id.as_str() == "1001")
        .unwrap();
    assert_eq!(a.logins, 1);
    assert_eq!(a.status_s.ready, 70.0);
    assert_eq!(a.status_s.not_ready, 30.0);
    assert_eq!(a.not_ready_reason_s.get("Lunch"), Some(&30.0));
}

#[test]
fn status_at_seq_uses_snapshots_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path());
    let events: Vec<Envelope> = (0..300)
        .map(|i| {
            let kind = if i % 2 == 0 {
                AgentEventKind::Ready
            } else {
                AgentEventKind::NotReady
            };
            agent("TS_A", i + 1, 100 + i as i64, kind, "7001", "1001", None)
        })
        .collect();
    engine.append(&events, |_, _| {}).unwrap();
    for seq in [1u64, 2, 150, 299, 300] {
        let view = engine.status_at_seq(seq).unwrap();
        assert_eq!(view.seq, seq);
        let expected = if seq % 2 == 1 {
            AgentStatus::Ready
        } else {
            AgentStatus::NotReady
        };
        assert_eq!(view.agents[0].status, expected, "seq {seq}");
    }
}

#[test]
fn verify_reports_derived_data_that_differs_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path());
    engine
        .append(
            &[
                agent("TS_A", 1, 100, AgentEventKind::Login, "7001", "1001", None),
                agent("TS_A", 2, 110, AgentEventKind::Ready, "7001", "1001", None),
            ],
            |_, _| {},
        )
        .unwrap();
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
    let tree = engine.store().derived("derived").unwrap();
    // An invented history entry, and a damaged one.
    tree.insert(b"Tinvented", b"x").unwrap();
    let faults = engine.verify_derived(|_| {}).unwrap();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].contains("rebuild"), "{faults:?}");
    tree.remove(b"Tinvented").unwrap();
    let (key, mut value) = tree.scan_prefix(b"T").next().unwrap().unwrap();
    value[0] ^= 0xff;
    tree.insert(&key, &value).unwrap();
    assert_eq!(engine.verify_derived(|_| {}).unwrap().len(), 1);
    engine.rebuild(|_| {}).unwrap();
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
}

/// Hundreds of states per DN, appended in small batches: the history chunks continue across
/// batches, as-of finds states in every chunk, and verify's one-pass rebuild gives the same bytes.
#[test]
fn long_histories_span_many_chunks_whatever_the_batching() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path());
    let kinds = [
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
    ];
    let events: Vec<Envelope> = (0..700u64)
        .map(|i| {
            let dn = if i % 3 == 0 { "7002" } else { "7001" };
            agent(
                "TS_A",
                i + 1,
                1_000 + 7 * i as i64,
                kinds[i as usize % 3],
                dn,
                "1001",
                Some(["Break", "Lunch"][i as usize % 2]),
            )
        })
        .collect();
    for batch in events.chunks(7) {
        engine.append(batch, |_, _| {}).unwrap();
    }
    for secs in (990..6_000).step_by(97) {
        let at = Micros::from_secs(secs);
        assert_eq!(
            without_seq(engine.status_at(at).unwrap()),
            without_seq(fold_until(&engine, at)),
            "at {at}"
        );
    }
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
    let all = engine
        .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
        .unwrap();
    assert!(all.len() > 400, "{}", all.len());
    let window = engine
        .history(
            &HistorySelector::Dn {
                dn: Dn::from("7001"),
                tserver: None,
            },
            Some(Micros::from_secs(3_000)),
            Some(Micros::from_secs(3_100)),
        )
        .unwrap();
    assert!(!window.is_empty());
    assert!(window.iter().all(|i| i.start >= Micros::from_secs(3_000)
        && i.end.is_some_and(|e| e <= Micros::from_secs(3_100))));
}

/// A commit with many chunks writes them into a pack file beside sled (sled keeps pointers):
/// after a reopen, as-of and history equal folding the log; a changed byte in the pack is
/// reported by verify, and rebuild writes the packs again.
#[test]
fn chunks_of_a_large_commit_live_in_a_pack_that_verify_checks() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = [
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
    ];
    let events: Vec<Envelope> = (0..20_000u64)
        .map(|i| {
            let n = i % 400;
            agent(
                "TS_A",
                i + 1,
                1_000 + i as i64,
                kinds[(i / 400) as usize % 3],
                &format!("{}", 7000 + n),
                &format!("{}", 1000 + n),
                Some(["Break", "Lunch"][(i / 800) as usize % 2]),
            )
        })
        .collect();
    {
        let engine = open(dir.path());
        engine.log().append(&events).unwrap();
    }
    let mut engine = open(dir.path());
    let packs: Vec<_> = std::fs::read_dir(dir.path().join("history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    for secs in (990..21_500).step_by(1_013) {
        let at = Micros::from_secs(secs);
        assert_eq!(
            without_seq(engine.status_at(at).unwrap()),
            without_seq(fold_until(&engine, at)),
            "at {at}"
        );
    }
    let history = engine
        .history(&HistorySelector::Agent(AgentId::from("1123")), None, None)
        .unwrap();
    assert_eq!(history.len(), 50);
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());

    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&packs[0], &bytes).unwrap();
    let faults = engine.verify_derived(|_| {}).unwrap();
    assert!(faults.iter().any(|f| f.contains("checksum")), "{faults:?}");
    engine.rebuild(|_| {}).unwrap();
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
    assert_eq!(
        engine
            .history(&HistorySelector::Agent(AgentId::from("1123")), None, None)
            .unwrap(),
        history
    );
}

/// A commit writes its entries in several sled batches before the one that moves derived_seq;
/// a crash in between leaves a marker, and the next open derives everything again.
#[test]
fn an_interrupted_commit_is_derived_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Envelope> = (0..3_000u64)
        .map(|i| {
            let n = i % 300;
            agent(
                "TS_A",
                i + 1,
                1_000 + i as i64,
                [AgentEventKind::Ready, AgentEventKind::NotReady][(i / 300) as usize % 2],
                &format!("{}", 7000 + n),
                &format!("{}", 1000 + n),
                None,
            )
        })
        .collect();
    let expected = {
        let mut engine = open(dir.path());
        engine.append(&events, |_, _| {}).unwrap();
        let tree = engine.store().derived("derived").unwrap();
        // What an interrupted commit leaves: its marker and entries past derived_seq.
        tree.insert(b"Mcommitting", b"").unwrap();
        tree.insert(
            b"G\x00\x04zzzz\x00\x00\x00\x00\x00\x00\x00\x01",
            b"\x00junk",
        )
        .unwrap();
        engine.status()
    };
    let engine = open(dir.path());
    assert_eq!(engine.status(), expected);
    assert!(engine.verify_derived(|_| {}).unwrap().is_empty());
    let tree = engine.store().derived("derived").unwrap();
    assert!(tree.get(b"Mcommitting").unwrap().is_none());
}

/// One way derived data can be damaged, applied to the store's derived tree.
type Damage = fn(&ivrstate_store::DerivedTree, Seq);

fn snapshot_at(seq: Seq) -> Vec<u8> {
    let mut key = vec![b'N'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn damaged_snapshot(tree: &ivrstate_store::DerivedTree, _: Seq) {
    tree.insert(&snapshot_at(1), b"\x01not a snapshot").unwrap();
}

fn snapshot_of_a_future_version(tree: &ivrstate_store::DerivedTree, _: Seq) {
    let mut bytes = State::default().to_bytes();
    bytes[0] = ivrstate_projection::SNAPSHOT_VERSION + 1;
    tree.insert(&snapshot_at(1), &bytes).unwrap();
}

fn damaged_stored_state(tree: &ivrstate_store::DerivedTree, _: Seq) {
    tree.insert(b"Mstate", b"\x01not a state").unwrap();
}

fn derived_seq_of_the_wrong_length(tree: &ivrstate_store::DerivedTree, _: Seq) {
    tree.insert(b"Mderived_seq", &[0, 0, 7]).unwrap();
}

fn derived_seq_ahead_of_the_log(tree: &ivrstate_store::DerivedTree, last: Seq) {
    tree.insert(b"Mderived_seq", &(last + 100).to_be_bytes())
        .unwrap();
}

fn history_truncated(tree: &ivrstate_store::DerivedTree, _: Seq) {
    let keys: Vec<Vec<u8>> = tree
        .iter()
        .map(|e| e.unwrap().0)
        .filter(|k| k.as_slice() != b"Mderived_seq")
        .collect();
    assert!(keys.len() > 2, "{keys:?}");
    for key in keys.iter().step_by(2) {
        tree.remove(key).unwrap();
    }
}

fn history_garbled(tree: &ivrstate_store::DerivedTree, _: Seq) {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = tree
        .iter()
        .map(|e| e.unwrap())
        .filter(|(k, _)| k.as_slice() != b"Mderived_seq")
        .collect();
    for (key, mut value) in entries {
        value.truncate(value.len() / 2);
        value.push(0xff);
        tree.insert(&key, &value).unwrap();
    }
}

fn everything_missing(tree: &ivrstate_store::DerivedTree, _: Seq) {
    tree.clear().unwrap();
}

/// `verify` and `rebuild` open the log without reading derived data: whatever was done to the
/// derived data, verify says so (without failing to open), rebuild repairs it, and afterwards
/// verify is clean and every answer is what it was.
#[test]
fn rebuild_recovers_each_kind_of_damaged_derived_data_and_verify_then_passes() {
    let damages: [(&str, Damage, bool); 8] = [
        ("a damaged stored state", damaged_stored_state, true),
        ("a damaged snapshot", damaged_snapshot, true),
        (
            "a snapshot of a future version",
            snapshot_of_a_future_version,
            true,
        ),
        (
            "derived_seq of the wrong length",
            derived_seq_of_the_wrong_length,
            true,
        ),
        (
            "derived_seq ahead of the log",
            derived_seq_ahead_of_the_log,
            true,
        ),
        ("history entries missing", history_truncated, true),
        ("history entries garbled", history_garbled, true),
        // Nothing derived is nothing wrong: it is recomputed.
        ("no derived data at all", everything_missing, false),
    ];
    for (what, damage, is_fault) in damages {
        let dir = tempfile::tempdir().unwrap();
        let (status, history, last) =
            {
                let mut engine = open(dir.path());
                engine
                    .apply_config(
                        &ivrstate_engine::config::parse(CONFIG, "c").unwrap(),
                        Micros::from_secs(50),
                    )
                    .unwrap();
                // (T-Server, seq, second, what, agent, reason) on DN 7001.
                let story = [
                    ("TS_A", 2, 100, AgentEventKind::Login, "1001", None),
                    (
                        "TS_A",
                        3,
                        110,
                        AgentEventKind::NotReady,
                        "1001",
                        Some("Break"),
                    ),
                    ("TS_A", 4, 120, AgentEventKind::Ready, "1001", None),
                    ("TS_B", 5, 130, AgentEventKind::Login, "1002", None),
                ];
                let mut events = vec![link("TS_A", 1, 90, true)];
                events.extend(story.into_iter().map(|(ts, seq, secs, kind, id, why)| {
                    agent(ts, seq, secs, kind, "7001", id, why)
                }));
                engine.append(&events, |_, _| {}).unwrap();
                let history = engine
                    .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
                    .unwrap();
                let tree = engine.store().derived("derived").unwrap();
                damage(&tree, engine.log().last_seq());
                engine.store().flush().unwrap();
                (engine.status(), history, engine.log().last_seq())
            };
        let mut engine = Engine::open_without_derived(dir.path(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("{what}: the log does not open: {e}"));
        let faults = engine.verify_derived(|_| {}).unwrap();
        assert_eq!(!faults.is_empty(), is_fault, "{what}: {faults:?}");
        engine.rebuild(|_| {}).unwrap();
        assert_eq!(engine.derived_seq(), last, "{what}");
        let faults = engine.verify_derived(|_| {}).unwrap();
        assert!(faults.is_empty(), "{what}: after rebuild: {faults:?}");
        engine.store().flush().unwrap();
        drop(engine);
        let engine = open(dir.path());
        assert_eq!(engine.status(), status, "{what}");
        assert_eq!(
            engine
                .history(&HistorySelector::Agent(AgentId::from("1001")), None, None)
                .unwrap(),
            history,
            "{what}"
        );
    }
}
