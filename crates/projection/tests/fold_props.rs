//! Properties of the fold over random record sequences (config events, unknown DNs, out-of-order
//! times, removals of things never added): it never panics, rebuild == incremental through a
//! snapshot, `touched` names every entity that changed, and the history built from the touched
//! agents' snapshots covers time without gaps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_model::*;
use ivrstate_projection::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn pick(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(names).prop_map(str::to_owned)
}

fn tserver() -> impl Strategy<Value = TServerName> {
    pick(&["TS_A", "TS_B", "TS_C"]).prop_map(TServerName::from)
}
fn dn() -> impl Strategy<Value = Dn> {
    pick(&["7001", "7002", "7003", "9999"]).prop_map(Dn::from)
}
fn ivr_name() -> impl Strategy<Value = IvrName> {
    pick(&["IVR_1", "IVR_2"]).prop_map(IvrName::from)
}
fn port_num() -> impl Strategy<Value = PortNum> {
    pick(&["01", "02", "03"]).prop_map(PortNum::from)
}
fn kv() -> impl Strategy<Value = KvList> {
    prop::collection::vec(
        (
            pick(&["ReasonCode", "Other"]),
            pick(&["Break", "Lunch", "7"]),
        ),
        0..2,
    )
    .prop_map(|pairs| {
        KvList(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    })
}
fn work_mode() -> impl Strategy<Value = Option<WorkMode>> {
    prop::option::of((-1i32..9).prop_map(WorkMode::from_code))
}

fn agent_event() -> impl Strategy<Value = AgentEvent> {
    let kind = prop::sample::select(vec![
        AgentEventKind::Login,
        AgentEventKind::Logout,
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
    ]);
    (
        kind,
        dn(),
        prop::option::of(pick(&["1001", "1002"]).prop_map(AgentId::from)),
        work_mode(),
        kv(),
        kv(),
    )
        .prop_map(
            |(kind, dn, agent_id, work_mode, reasons, extensions)| AgentEvent {
                kind,
                dn,
                agent_id,
                queue: None,
                work_mode,
                reasons,
                extensions,
            },
        )
}

fn tlib() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        6 => agent_event().prop_map(TLibKind::Agent),
        1 => (dn(), prop::option::of(-2i64..8), work_mode(), kv()).prop_map(|(dn, code, work_mode, reasons)| {
            TLibKind::AddressInfo(AddressInfo { dn, agent_id: None, agent_status: code, work_mode, reasons, extensions: KvList::default() })
        }),
        1 => Just(TLibKind::LinkConnected),
        1 => Just(TLibKind::LinkDisconnected),
    ];
    (tserver(), kind).prop_map(|(tserver, kind)| {
        Event::TLib(TLibEvent {
            tserver,
            source_seq: None,
            kind,
        })
    })
}

fn port_config() -> impl Strategy<Value = PortConfig> {
    (ivr_name(), port_num(), dn(), tserver()).prop_map(|(ivr, port, dn, tserver)| PortConfig {
        ivr,
        port,
        dn,
        tserver,
    })
}

fn ivr_config() -> impl Strategy<Value = IvrConfig> {
    (ivr_name(), prop::collection::vec(tserver(), 0..3)).prop_map(|(name, tservers)| IvrConfig {
        name,
        tservers,
        options: vec![],
    })
}

fn config() -> impl Strategy<Value = Event> {
    let switch = || prop::option::of(pick(&["SW1", "SW2"]));
    prop_oneof![
        prop::option::of(pick(&["8.5"]))
            .prop_map(|version| ConfigEvent::ServerSettings { version }),
        (tserver(), switch()).prop_map(|(name, switch)| ConfigEvent::TServerAdded { name, switch }),
        (tserver(), switch())
            .prop_map(|(name, switch)| ConfigEvent::TServerChanged { name, switch }),
        tserver().prop_map(|name| ConfigEvent::TServerRemoved { name }),
        ivr_config().prop_map(ConfigEvent::IvrAdded),
        ivr_config().prop_map(ConfigEvent::IvrChanged),
        ivr_name().prop_map(|name| ConfigEvent::IvrRemoved { name }),
        port_config().prop_map(ConfigEvent::PortAdded),
        port_config().prop_map(ConfigEvent::PortAdded),
        port_config().prop_map(ConfigEvent::PortChanged),
        (ivr_name(), port_num()).prop_map(|(ivr, port)| ConfigEvent::PortRemoved { ivr, port }),
    ]
    .prop_map(Event::Config)
}

fn other() -> impl Strategy<Value = Event> {
    prop_oneof![
        ivr_name().prop_map(|ivr| Event::Request(ClientRequest {
            ivr,
            client: "127.0.0.1:1".into(),
            request: "AgentReady".into(),
            req_id: None,
            port: None,
            attributes: vec![],
        })),
        Just(Event::Anomaly(Anomaly {
            tserver: None,
            dn: None,
            kind: AnomalyKind::SourceRestart,
            detail: String::new()
        })),
    ]
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    let event = prop_oneof![8 => tlib(), 3 => config(), 1 => other()];
    // Times mostly increase but may go back (out-of-order input must not break anything).
    prop::collection::vec((event, -20i64..60), 0..80).prop_map(|evs| {
        let mut t = 1_439_800_000i64;
        evs.into_iter()
            .enumerate()
            .map(|(i, (event, step))| {
                t += step;
                Record {
                    seq: i as Seq + 1,
                    envelope: Envelope {
                        time: Micros::from_secs(t),
                        recorded: Micros::from_secs(0),
                        event,
                    },
                }
            })
            .collect()
    })
}

fn fold(state: &mut State, recs: &[Record]) -> Vec<Applied> {
    recs.iter()
        .map(|r| {
            let mut out = Applied::new();
            state.apply(r, &mut out);
            out
        })
        .collect()
}

type Entities = BTreeMap<EntityKey, String>;

/// Every entity's state, as comparable text.
fn entities(s: &State) -> Entities {
    let mut m = Entities::new();
    for (n, st) in s.servers() {
        m.insert(EntityKey::Server(n.clone()), format!("{st:?}"));
    }
    for (i, p, st) in s.ports() {
        m.insert(EntityKey::Port(i.clone(), p.clone()), format!("{st:?}"));
    }
    for (t, d, st) in s.agents() {
        m.insert(EntityKey::Agent(t.clone(), d.clone()), format!("{st:?}"));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rebuild_through_a_snapshot_equals_incremental(recs in records(), cut in 0usize..80) {
        let cut = cut.min(recs.len());
        let mut all = State::new();
        let all_out = fold(&mut all, &recs);

        let mut prefix = State::new();
        fold(&mut prefix, &recs[..cut]);
        let bytes = prefix.to_bytes();
        let mut resumed = State::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&resumed, &prefix);
        let rest_out = fold(&mut resumed, &recs[cut..]);

        prop_assert_eq!(&resumed, &all);
        prop_assert_eq!(resumed.to_bytes(), all.to_bytes());
        prop_assert_eq!(&rest_out[..], &all_out[cut..]);
        prop_assert_eq!(all.last_seq(), recs.last().map_or(0, |r| r.seq));
    }

    #[test]
    fn damaged_snapshots_are_errors_not_panics(recs in records(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut s = State::new();
        fold(&mut s, &recs);
        let mut bytes = s.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        // Either it still decodes (a byte changed into another valid value) or it is an error.
        let _ = State::from_bytes(&bytes);
        let _ = State::from_bytes(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn narrowed_collection_folds_the_same_state(recs in records()) {
        let mut full = State::new();
        let full_out = fold(&mut full, &recs);
        for (mut out, keeps_touched) in [(Applied::without_changes(), true), (Applied::state_only(), false)] {
            let mut s = State::new();
            for (r, want) in recs.iter().zip(&full_out) {
                out.clear();
                s.apply(r, &mut out);
                prop_assert!(out.changes.is_empty());
                prop_assert_eq!(&out.anomalies, &want.anomalies);
                if keeps_touched {
                    prop_assert_eq!(&out.touched, &want.touched);
                } else {
                    prop_assert!(out.touched.is_empty());
                }
            }
            prop_assert_eq!(&s, &full);
        }
    }

    #[test]
    fn touched_names_every_changed_entity_and_state_stays_sane(recs in records()) {
        let mut s = State::new();
        for r in &recs {
            let before = entities(&s);
            let mut out = Applied::new();
            s.apply(r, &mut out);
            let after = entities(&s);
            for (k, v) in &after {
                if before.get(k) != Some(v) {
                    prop_assert!(out.touched.contains(k), "{:?} changed but was not touched by {:?}", k, r);
                }
            }
            prop_assert!(before.keys().all(|k| after.contains_key(k)), "entities are never forgotten");
            for c in &out.changes {
                if let MonitorInfo::Agent { port, .. } = &c.info {
                    prop_assert!(s.config().port(c.ivr.as_str(), port.as_str()).is_some());
                }
            }
            for a in &out.anomalies {
                prop_assert_eq!(a.seq, r.seq);
            }
        }
        for (_, _, a) in s.agents() {
            prop_assert!(a.status != AgentStatus::Unknown);
        }
        for (ivr, ports) in &s.config().ports {
            for p in ports.keys() {
                prop_assert!(s.agent_query(ivr.as_str(), p.as_str()).is_some());
                prop_assert_eq!(s.port(ivr.as_str(), p.as_str()).is_some(), true);
            }
        }
    }

    #[test]
    fn history_of_the_fold_covers_each_dn_without_gaps(recs in records(), from_off in 0i64..2000, len in 0i64..2000) {
        let mut s = State::new();
        let mut transitions = Vec::new();
        for r in &recs {
            let mut out = Applied::new();
            s.apply(r, &mut out);
            for k in &out.touched {
                if let EntityKey::Agent(t, d) = k {
                    transitions.extend(s.agent_snapshot(t.as_str(), d.as_str()));
                }
            }
        }
        let first: BTreeMap<(TServerName, Dn), Micros> = transitions.iter().fold(BTreeMap::new(), |mut m, t| {
            m.entry((t.tserver.clone(), t.dn.clone())).or_insert(t.start);
            m
        });
        let from = Micros::from_secs(1_439_800_000 - 100 + from_off);
        let to = Micros::from_secs(1_439_800_000 - 100 + from_off + len);
        let ivs = intervals(transitions, Some(from), Some(to));
        let mut covered: BTreeMap<(TServerName, Dn), f64> = BTreeMap::new();
        for iv in &ivs {
            prop_assert!(iv.start >= from && iv.duration_s.is_some_and(|d| d >= 0.0));
            *covered.entry((iv.tserver.clone(), iv.dn.clone())).or_default() += iv.duration_s.unwrap_or(0.0);
        }
        for (k, start) in first {
            let want = (to.0 - start.max(from).0).max(0) as f64 / 1e6;
            let got = covered.get(&k).copied().unwrap_or(0.0);
            prop_assert!((got - want).abs() < 1e-6, "{:?}: covered {} of {}", k, got, want);
        }
    }
}
