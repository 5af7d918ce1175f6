//! One test per rule of the fold (docs/design.md "Agent-state rules"), plus queries and snapshots.

use crate::*;
use ivrstate_model::*;

const TS: &str = "TS_SIP";

pub(crate) fn rec(seq: Seq, secs: i64, event: Event) -> Record {
    Record {
        seq,
        envelope: Envelope {
            time: Micros::from_secs(secs),
            recorded: Micros::from_secs(0),
            event,
        },
    }
}

fn tlib(ts: &str, kind: TLibKind) -> Event {
    Event::TLib(TLibEvent {
        tserver: TServerName::from(ts),
        source_seq: None,
        kind,
    })
}

fn agent_ev(
    kind: AgentEventKind,
    dn: &str,
    agent: Option<&str>,
    mode: Option<WorkMode>,
) -> AgentEvent {
    AgentEvent {
        kind,
        dn: Dn::from(dn),
        agent_id: agent.map(AgentId::from),
        queue: None,
        work_mode: mode,
        reasons: KvList::default(),
        extensions: KvList::default(),
    }
}

fn agent(kind: AgentEventKind, dn: &str) -> Event {
    tlib(TS, TLibKind::Agent(agent_ev(kind, dn, Some("1001"), None)))
}

fn address(dn: &str, code: Option<i64>) -> Event {
    tlib(
        TS,
        TLibKind::AddressInfo(AddressInfo {
            dn: Dn::from(dn),
            agent_id: Some(AgentId::from("1001")),
            agent_status: code,
            work_mode: None,
            reasons: KvList::default(),
            extensions: KvList::default(),
        }),
    )
}

fn cfg(c: ConfigEvent) -> Event {
    Event::Config(c)
}

fn ivr(name: &str, tservers: &[&str]) -> IvrConfig {
    IvrConfig {
        name: IvrName::from(name),
        tservers: tservers.iter().map(|t| TServerName::from(*t)).collect(),
        options: vec![],
    }
}

fn port(ivr: &str, port: &str, dn: &str, ts: &str) -> PortConfig {
    PortConfig {
        ivr: IvrName::from(ivr),
        port: PortNum::from(port),
        dn: Dn::from(dn),
        tserver: TServerName::from(ts),
    }
}

fn agent_change(ivr: &str, p: &str, status: AgentStatus) -> Change {
    Change {
        ivr: IvrName::from(ivr),
        info: MonitorInfo::Agent {
            port: PortNum::from(p),
            status,
        },
    }
}

fn port_change(ivr: &str, p: &str, status: Availability) -> Change {
    Change {
        ivr: IvrName::from(ivr),
        info: MonitorInfo::Port {
            port: PortNum::from(p),
            status,
        },
    }
}

/// A state with T-Server TS_SIP (connected), IVR_1 (ports 01 -> 7001, 02 -> 7002) and IVR_2
/// (port 01 -> 7001), folded at seqs 1..=7.
fn configured() -> (State, Seq) {
    let mut s = State::new();
    let evs = [
        cfg(ConfigEvent::TServerAdded {
            name: TS.into(),
            switch: Some("SIP_Switch".into()),
        }),
        cfg(ConfigEvent::IvrAdded(ivr("IVR_1", &[TS]))),
        cfg(ConfigEvent::IvrAdded(ivr("IVR_2", &[TS]))),
        cfg(ConfigEvent::PortAdded(port("IVR_1", "01", "7001", TS))),
        cfg(ConfigEvent::PortAdded(port("IVR_1", "02", "7002", TS))),
        cfg(ConfigEvent::PortAdded(port("IVR_2", "01", "7001", TS))),
        tlib(TS, TLibKind::LinkConnected),
    ];
    let mut seq = 0;
    for e in evs {
        seq += 1;
        s.apply_record(&rec(seq, 100, e));
    }
    (s, seq)
}

fn fold(s: &mut State, seq: &mut Seq, secs: i64, e: Event) -> Applied {
    *seq += 1;
    let mut out = Applied::new();
    s.apply(&rec(*seq, secs, e), &mut out);
    out
}

fn kinds(out: &Applied) -> Vec<AnomalyKind> {
    out.anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn login_publishes_logged_in_and_the_next_ready_follows() {
    let (mut s, mut seq) = configured();
    let out = fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7001"));
    assert_eq!(
        out.changes,
        vec![
            agent_change("IVR_1", "01", AgentStatus::LoggedIn),
            agent_change("IVR_2", "01", AgentStatus::LoggedIn)
        ]
    );
    assert!(out.anomalies.is_empty());
    assert_eq!(s.agent(TS, "7001").unwrap().login_count, 1);
    let out = fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7001"));
    assert_eq!(
        out.changes,
        vec![
            agent_change("IVR_1", "01", AgentStatus::Ready),
            agent_change("IVR_2", "01", AgentStatus::Ready)
        ]
    );
    assert!(out.anomalies.is_empty());
    let a = s.agent(TS, "7001").unwrap();
    assert_eq!(
        (a.status, a.since, a.since_seq),
        (AgentStatus::Ready, Micros::from_secs(201), seq)
    );
}

#[test]
fn ready_or_not_ready_without_login_is_accepted_as_logged_in_and_recorded() {
    for kind in [
        AgentEventKind::Ready,
        AgentEventKind::NotReady,
        AgentEventKind::AfterCallWork,
    ] {
        let (mut s, mut seq) = configured();
        let out = fold(&mut s, &mut seq, 200, agent(kind, "7002"));
        assert_eq!(
            kinds(&out),
            vec![AnomalyKind::StateWithoutLogin],
            "{kind:?}"
        );
        assert_eq!(out.anomalies[0].dn, Some(Dn::from("7002")));
        assert_eq!(out.anomalies[0].seq, seq);
        let want = if kind == AgentEventKind::Ready {
            AgentStatus::Ready
        } else {
            AgentStatus::NotReady
        };
        assert_eq!(out.changes, vec![agent_change("IVR_1", "02", want)]);
        assert_eq!(s.agent(TS, "7002").unwrap().status, want);
    }
}

#[test]
fn after_call_work_is_not_ready_with_work_mode_after_call_work() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7002"));
    let out = fold(
        &mut s,
        &mut seq,
        202,
        agent(AgentEventKind::AfterCallWork, "7002"),
    );
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::NotReady)]
    );
    let a = s.agent(TS, "7002").unwrap();
    assert_eq!(
        (a.status, a.work_mode),
        (AgentStatus::NotReady, Some(WorkMode::AfterCallWork))
    );
}

#[test]
fn not_ready_keeps_walk_away_and_after_call_work_modes() {
    for mode in [
        WorkMode::WalkAway,
        WorkMode::AfterCallWork,
        WorkMode::AuxWork,
    ] {
        let (mut s, mut seq) = configured();
        fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
        let ev = tlib(
            TS,
            TLibKind::Agent(agent_ev(
                AgentEventKind::NotReady,
                "7002",
                Some("1001"),
                Some(mode),
            )),
        );
        let out = fold(&mut s, &mut seq, 201, ev);
        assert_eq!(
            out.changes,
            vec![agent_change("IVR_1", "02", AgentStatus::NotReady)]
        );
        assert_eq!(s.agent(TS, "7002").unwrap().work_mode, Some(mode));
    }
}

#[test]
fn reason_comes_from_reasons_else_extensions_reason_code() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    let mut ev = agent_ev(
        AgentEventKind::NotReady,
        "7002",
        Some("1001"),
        Some(WorkMode::AuxWork),
    );
    ev.extensions = KvList(vec![("ReasonCode".into(), "Lunch".into())]);
    fold(&mut s, &mut seq, 201, tlib(TS, TLibKind::Agent(ev.clone())));
    assert_eq!(
        s.agent(TS, "7002").unwrap().reason.as_deref(),
        Some("Lunch")
    );
    ev.reasons = KvList(vec![("ReasonCode".into(), "Break".into())]);
    let out = fold(&mut s, &mut seq, 202, tlib(TS, TLibKind::Agent(ev)));
    let a = s.agent(TS, "7002").unwrap();
    assert_eq!(a.reason.as_deref(), Some("Break"));
    // A new reason is a new interval (touched) but not a new MonitorInfo status.
    assert_eq!((a.since, a.since_seq), (Micros::from_secs(202), seq));
    assert!(out.changes.is_empty());
    assert_eq!(
        out.touched,
        vec![EntityKey::Agent(TS.into(), "7002".into())]
    );
}

#[test]
fn logout_makes_logged_out_and_keeps_the_agent_id() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7002"));
    let out = fold(&mut s, &mut seq, 202, agent(AgentEventKind::Logout, "7002"));
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::LoggedOut)]
    );
    assert!(out.anomalies.is_empty());
    let a = s.agent(TS, "7002").unwrap();
    assert_eq!(
        (a.status, a.work_mode, a.reason.clone()),
        (AgentStatus::LoggedOut, None, None)
    );
    assert_eq!(a.agent_id, Some(AgentId::from("1001")));
}

#[test]
fn logout_without_login_is_recorded_and_changes_nothing() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Logout, "7002"));
    let before = s.agent(TS, "7002").cloned();
    let out = fold(&mut s, &mut seq, 202, agent(AgentEventKind::Logout, "7002"));
    assert_eq!(kinds(&out), vec![AnomalyKind::LogoutWithoutLogin]);
    assert!(out.changes.is_empty() && out.touched.is_empty());
    assert_eq!(s.agent(TS, "7002").cloned(), before);
}

#[test]
fn login_while_logged_in_is_a_double_login() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7002"));
    let out = fold(&mut s, &mut seq, 202, agent(AgentEventKind::Login, "7002"));
    assert_eq!(kinds(&out), vec![AnomalyKind::DoubleLogin]);
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::LoggedIn)]
    );
    assert_eq!(s.agent(TS, "7002").unwrap().login_count, 2);
}

#[test]
fn address_info_that_agrees_with_the_state_changes_nothing() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7002"));
    let before = s.clone();
    let out = fold(&mut s, &mut seq, 202, address("7002", Some(2)));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.agent(TS, "7002"), before.agent(TS, "7002"));
}

#[test]
fn address_info_unknown_counts_as_logged_out() {
    let (mut s, mut seq) = configured();
    for code in [None, Some(0), Some(-1), Some(9)] {
        let out = fold(&mut s, &mut seq, 200, address("7002", code));
        assert!(out.changes.is_empty(), "{code:?}: {out:?}");
        assert_eq!(s.agent(TS, "7002").unwrap().status, AgentStatus::LoggedOut);
    }
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 202, agent(AgentEventKind::Ready, "7002"));
    let out = fold(&mut s, &mut seq, 203, address("7002", Some(0)));
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::LoggedOut)]
    );
    assert_eq!(kinds(&out), vec![AnomalyKind::Other]);
    assert_eq!(s.agent(TS, "7002").unwrap().status, AgentStatus::LoggedOut);
}

#[test]
fn address_info_that_disagrees_sets_its_status() {
    let (mut s, mut seq) = configured();
    // A DN first learnt through EventAddressInfo: not an anomaly, just the start of knowledge.
    let out = fold(&mut s, &mut seq, 200, address("7002", Some(4)));
    assert!(out.anomalies.is_empty());
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::NotReady)]
    );
    let out = fold(&mut s, &mut seq, 201, address("7002", Some(2)));
    assert_eq!(kinds(&out), vec![AnomalyKind::Other]);
    assert_eq!(s.agent(TS, "7002").unwrap().status, AgentStatus::Ready);
}

#[test]
fn a_configured_tserver_that_never_connected_is_unavailable() {
    let mut s = State::new();
    let out = s.apply_record(&rec(
        1,
        10,
        cfg(ConfigEvent::TServerAdded {
            name: "TS_B".into(),
            switch: None,
        }),
    ));
    assert!(out.is_empty(), "no IVR uses it yet");
    let st = s.server("TS_B").unwrap();
    assert_eq!(
        (st.status, st.configured),
        (Availability::Unavailable, true)
    );
    s.apply_record(&rec(
        2,
        11,
        cfg(ConfigEvent::IvrAdded(ivr("IVR_9", &["TS_B"]))),
    ));
    let unavailable = MonitorInfo::Server {
        name: "TS_B".into(),
        status: Availability::Unavailable,
        switch: None,
    };
    assert_eq!(
        s.server_statuses_for(&IvrName::from("IVR_9")),
        vec![unavailable]
    );
}

#[test]
fn link_events_change_only_the_server_status_of_the_ivrs_using_it() {
    let (mut s, mut seq) = configured();
    fold(
        &mut s,
        &mut seq,
        150,
        cfg(ConfigEvent::TServerAdded {
            name: "TS_B".into(),
            switch: None,
        }),
    );
    fold(
        &mut s,
        &mut seq,
        150,
        cfg(ConfigEvent::IvrAdded(ivr("IVR_3", &["TS_B"]))),
    );
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7002"));
    let agent_before = s.agent(TS, "7002").cloned();
    let out = fold(&mut s, &mut seq, 300, tlib(TS, TLibKind::LinkDisconnected));
    let down = MonitorInfo::Server {
        name: TS.into(),
        status: Availability::Unavailable,
        switch: Some("SIP_Switch".into()),
    };
    assert_eq!(
        out.changes,
        vec![
            Change {
                ivr: "IVR_1".into(),
                info: down.clone()
            },
            Change {
                ivr: "IVR_2".into(),
                info: down
            }
        ]
    );
    assert_eq!(out.touched, vec![EntityKey::Server(TS.into())]);
    assert_eq!(s.agent(TS, "7002").cloned(), agent_before);
    assert_eq!(s.server(TS).unwrap().since, Micros::from_secs(300));
    let out = fold(&mut s, &mut seq, 301, tlib(TS, TLibKind::LinkConnected));
    assert_eq!(out.changes.len(), 2);
    assert_eq!(s.server(TS).unwrap().status, Availability::Ok);
    // Repeating a link event changes nothing.
    assert!(fold(&mut s, &mut seq, 302, tlib(TS, TLibKind::LinkConnected)).is_empty());
    // The feed socket that carried the T-Server closing takes it down as the link going down
    // does; the next EventLinkConnected brings it back.
    let out = fold(&mut s, &mut seq, 303, tlib(TS, TLibKind::SocketClosed));
    assert_eq!(out.changes.len(), 2);
    assert_eq!(s.server(TS).unwrap().status, Availability::Unavailable);
    assert_eq!(s.agent(TS, "7002").cloned(), agent_before);
    fold(&mut s, &mut seq, 304, tlib(TS, TLibKind::LinkConnected));
    assert_eq!(s.server(TS).unwrap().status, Availability::Ok);
}

#[test]
fn a_tserver_seen_only_in_tlib_events_is_tracked() {
    let mut s = State::new();
    let mut out = Applied::new();
    s.apply(
        &rec(
            1,
            10,
            tlib(
                "TS_X",
                TLibKind::Agent(agent_ev(AgentEventKind::Login, "9", None, None)),
            ),
        ),
        &mut out,
    );
    let st = s.server("TS_X").unwrap();
    assert_eq!(
        (st.status, st.configured),
        (Availability::Unavailable, false)
    );
    assert_eq!(
        out.touched,
        vec![
            EntityKey::Server("TS_X".into()),
            EntityKey::Agent("TS_X".into(), "9".into())
        ]
    );
    s.apply_record(&rec(2, 11, tlib("TS_Y", TLibKind::LinkConnected)));
    assert_eq!(s.server("TS_Y").unwrap().status, Availability::Ok);
    let names: Vec<_> = s.servers().map(|(n, _)| n.as_str().to_owned()).collect();
    assert_eq!(names, ["TS_X", "TS_Y"]);
}

#[test]
fn port_added_is_ok_and_publishes_its_dns_agent_status() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7003"));
    fold(&mut s, &mut seq, 201, agent(AgentEventKind::Ready, "7003"));
    let out = fold(
        &mut s,
        &mut seq,
        300,
        cfg(ConfigEvent::PortAdded(port("IVR_2", "05", "7003", TS))),
    );
    assert_eq!(
        out.changes,
        vec![
            port_change("IVR_2", "05", Availability::Ok),
            agent_change("IVR_2", "05", AgentStatus::Ready)
        ]
    );
    assert_eq!(
        out.touched,
        vec![EntityKey::Port("IVR_2".into(), "05".into())]
    );
    assert_eq!(s.port("IVR_2", "05").unwrap().status, Availability::Ok);
    // From now on the DN's changes reach the new port.
    let out = fold(
        &mut s,
        &mut seq,
        301,
        agent(AgentEventKind::NotReady, "7003"),
    );
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_2", "05", AgentStatus::NotReady)]
    );
}

#[test]
fn port_changed_is_unavailable_and_remapped() {
    let (mut s, mut seq) = configured();
    let out = fold(
        &mut s,
        &mut seq,
        300,
        cfg(ConfigEvent::PortChanged(port("IVR_1", "02", "7009", TS))),
    );
    assert_eq!(
        out.changes,
        vec![port_change("IVR_1", "02", Availability::Unavailable)]
    );
    let p = s.port("IVR_1", "02").unwrap();
    assert_eq!(
        (p.status, p.dn.as_str(), p.since),
        (Availability::Unavailable, "7009", Micros::from_secs(300))
    );
    // The old DN no longer reaches the port; the new one does.
    assert!(
        fold(&mut s, &mut seq, 301, agent(AgentEventKind::Login, "7002"))
            .changes
            .is_empty()
    );
    let out = fold(&mut s, &mut seq, 302, agent(AgentEventKind::Login, "7009"));
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_1", "02", AgentStatus::LoggedIn)]
    );
    assert_eq!(s.agent_query("IVR_1", "02"), Some(AgentStatus::LoggedIn));
}

#[test]
fn port_removed_is_unavailable_and_no_longer_routed() {
    let (mut s, mut seq) = configured();
    let out = fold(
        &mut s,
        &mut seq,
        300,
        cfg(ConfigEvent::PortRemoved {
            ivr: "IVR_1".into(),
            port: "01".into(),
        }),
    );
    assert_eq!(
        out.changes,
        vec![port_change("IVR_1", "01", Availability::Unavailable)]
    );
    assert_eq!(
        s.port("IVR_1", "01").unwrap().status,
        Availability::Unavailable
    );
    assert_eq!(s.agent_query("IVR_1", "01"), None);
    let out = fold(&mut s, &mut seq, 301, agent(AgentEventKind::Login, "7001"));
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_2", "01", AgentStatus::LoggedIn)]
    );
}

#[test]
fn ivr_removed_makes_its_ports_unavailable() {
    let (mut s, mut seq) = configured();
    let out = fold(
        &mut s,
        &mut seq,
        300,
        cfg(ConfigEvent::IvrRemoved {
            name: "IVR_1".into(),
        }),
    );
    assert_eq!(
        out.changes,
        vec![
            port_change("IVR_1", "01", Availability::Unavailable),
            port_change("IVR_1", "02", Availability::Unavailable)
        ]
    );
    assert!(s.ivr(&IvrName::from("IVR_1")).is_none());
    assert!(!s.config().ports.contains_key("IVR_1"));
    let out = fold(&mut s, &mut seq, 301, agent(AgentEventKind::Login, "7001"));
    assert_eq!(
        out.changes,
        vec![agent_change("IVR_2", "01", AgentStatus::LoggedIn)]
    );
}

#[test]
fn agents_on_dns_no_port_maps_to_are_tracked() {
    let (mut s, mut seq) = configured();
    let out = fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "5555"));
    assert!(out.changes.is_empty());
    assert_eq!(
        out.touched,
        vec![EntityKey::Agent(TS.into(), "5555".into())]
    );
    assert_eq!(s.agent(TS, "5555").unwrap().status, AgentStatus::LoggedIn);
    assert_eq!(s.agents().count(), 1);
}

#[test]
fn client_requests_and_source_anomalies_change_no_state() {
    let (mut s, mut seq) = configured();
    let before = s.clone();
    let req = Event::Request(ClientRequest {
        ivr: "IVR_1".into(),
        client: "127.0.0.1:5000".into(),
        request: "AgentReady".into(),
        req_id: Some("7".into()),
        port: Some("01".into()),
        attributes: vec![],
    });
    assert!(fold(&mut s, &mut seq, 500, req).is_empty());
    let an = Event::Anomaly(Anomaly {
        tserver: None,
        dn: None,
        kind: AnomalyKind::SourceRestart,
        detail: "x".into(),
    });
    assert!(fold(&mut s, &mut seq, 501, an).is_empty());
    assert_eq!(s.agents().count(), before.agents().count());
    assert_eq!(s.config(), before.config());
    assert_eq!(s.last_seq(), seq);
    assert_eq!(s.last_time(), Some(Micros::from_secs(501)));
}

#[test]
fn removing_or_changing_what_was_never_added_is_an_anomaly() {
    let mut s = State::new();
    let evs = [
        cfg(ConfigEvent::PortRemoved {
            ivr: "I".into(),
            port: "1".into(),
        }),
        cfg(ConfigEvent::IvrRemoved { name: "I".into() }),
        cfg(ConfigEvent::TServerRemoved { name: "T".into() }),
        cfg(ConfigEvent::TServerChanged {
            name: "T".into(),
            switch: None,
        }),
        cfg(ConfigEvent::IvrChanged(ivr("I", &[]))),
        cfg(ConfigEvent::PortChanged(port("I", "1", "9", "T"))),
    ];
    for (i, e) in evs.into_iter().enumerate() {
        let mut out = Applied::new();
        s.apply(&rec(i as Seq + 1, 10, e), &mut out);
        assert_eq!(kinds(&out), vec![AnomalyKind::Other], "event {i}");
    }
}

#[test]
fn an_event_older_than_the_dns_state_is_out_of_order_and_clamped() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7002"));
    let out = fold(&mut s, &mut seq, 150, agent(AgentEventKind::Ready, "7002"));
    assert_eq!(kinds(&out), vec![AnomalyKind::OutOfOrder]);
    let a = s.agent(TS, "7002").unwrap();
    assert_eq!(
        (a.status, a.since),
        (AgentStatus::Ready, Micros::from_secs(200))
    );
    assert_eq!(s.last_time(), Some(Micros::from_secs(200)));
}

#[test]
fn agent_query_answers_per_port() {
    let (mut s, mut seq) = configured();
    assert_eq!(s.agent_query("IVR_1", "99"), None);
    assert_eq!(s.agent_query("NOPE", "01"), None);
    assert_eq!(s.agent_query("IVR_1", "01"), Some(AgentStatus::LoggedOut));
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7001"));
    fold(
        &mut s,
        &mut seq,
        201,
        agent(AgentEventKind::NotReady, "7001"),
    );
    assert_eq!(s.agent_query("IVR_2", "01"), Some(AgentStatus::NotReady));
    fold(&mut s, &mut seq, 202, tlib(TS, TLibKind::LinkDisconnected));
    assert_eq!(s.agent_query("IVR_2", "01"), Some(AgentStatus::Unknown));
    assert_eq!(s.agent(TS, "7001").unwrap().status, AgentStatus::NotReady);
}

#[test]
fn server_statuses_for_lists_the_ivrs_tservers() {
    let (s, _) = configured();
    let ok = MonitorInfo::Server {
        name: TS.into(),
        status: Availability::Ok,
        switch: Some("SIP_Switch".into()),
    };
    assert_eq!(s.server_statuses_for(&IvrName::from("IVR_1")), vec![ok]);
    assert!(s.server_statuses_for(&IvrName::from("NOPE")).is_empty());
    assert_eq!(
        s.ivr(&IvrName::from("IVR_2")).unwrap().tservers,
        vec![TServerName::from(TS)]
    );
}

#[test]
fn views_are_sorted_by_their_ids() {
    let (mut s, mut seq) = configured();
    for dn in ["7003", "7001", "7002"] {
        fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, dn));
    }
    let dns: Vec<_> = s.agents().map(|(_, d, _)| d.as_str().to_owned()).collect();
    assert_eq!(dns, ["7001", "7002", "7003"]);
    let ports: Vec<_> = s.ports().map(|(i, p, _)| format!("{i}:{p}")).collect();
    assert_eq!(ports, ["IVR_1:01", "IVR_1:02", "IVR_2:01"]);
}

#[test]
fn snapshots_round_trip_and_reject_garbage() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7001"));
    let bytes = s.to_bytes();
    assert_eq!(bytes[0], SNAPSHOT_VERSION);
    assert_eq!(State::from_bytes(&bytes).unwrap(), s);
    assert_eq!(State::from_bytes(&bytes).unwrap().to_bytes(), bytes);
    assert!(matches!(State::from_bytes(&[]), Err(SnapshotError::Empty)));
    let mut wrong = bytes.clone();
    wrong[0] = 99;
    assert!(matches!(
        State::from_bytes(&wrong),
        Err(SnapshotError::Version { found: 99 })
    ));
    assert!(State::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        State::from_bytes(&long),
        Err(SnapshotError::Trailing(1))
    ));
}

#[test]
fn agent_snapshot_carries_the_history_fields() {
    let (mut s, mut seq) = configured();
    fold(&mut s, &mut seq, 200, agent(AgentEventKind::Login, "7001"));
    let snap = s.agent_snapshot(TS, "7001").unwrap();
    assert_eq!(snap.status, AgentStatus::LoggedIn);
    assert_eq!((snap.start, snap.start_seq), (Micros::from_secs(200), seq));
    assert_eq!(snap.agent_id, Some(AgentId::from("1001")));
    assert!(s.agent_snapshot(TS, "0000").is_none());
}
