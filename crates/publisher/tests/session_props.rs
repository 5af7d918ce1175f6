//! The session state machine against the projection's real `State`, fed frames decoded from
//! random streams of valid and damaged GLI traffic cut at random places: the ordinary-suite
//! counterpart of the `session` fuzz target (`fuzz/fuzz_targets/session.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_model::{
    ConfigEvent, Dn, Envelope, Event, IvrConfig, IvrName, Micros, PortConfig, Record, TLibEvent,
    TLibKind, TServerName,
};
use ivrstate_projection::State;
use ivrstate_publisher::frame::{encode_frame, FrameDecoder, FrameKind};
use ivrstate_publisher::session::{Session, SessionEvent, Timers};
use ivrstate_publisher::xml::{self, AgentControl, GctiMsg, Message};
use ivrstate_publisher::MonitorInfo;
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;

/// IVR_1 (ports 01, 02 on TS_A, link up) and IVR_2 (port 01 on TS_B), folded from records.
fn state() -> State {
    let ivr = |n: &str, ts: &str| {
        Event::Config(ConfigEvent::IvrAdded(IvrConfig {
            name: n.into(),
            tservers: vec![TServerName::from(ts)],
            options: vec![],
        }))
    };
    let port = |i: &str, p: &str, dn: &str, ts: &str| {
        Event::Config(ConfigEvent::PortAdded(PortConfig {
            ivr: i.into(),
            port: p.into(),
            dn: Dn::from(dn),
            tserver: ts.into(),
        }))
    };
    let events = vec![
        Event::Config(ConfigEvent::TServerAdded {
            name: "TS_A".into(),
            switch: None,
        }),
        Event::Config(ConfigEvent::TServerAdded {
            name: "TS_B".into(),
            switch: None,
        }),
        ivr("IVR_1", "TS_A"),
        ivr("IVR_2", "TS_B"),
        port("IVR_1", "01", "7001", "TS_A"),
        port("IVR_1", "02", "7002", "TS_A"),
        port("IVR_2", "01", "8001", "TS_B"),
        Event::TLib(TLibEvent {
            tserver: "TS_A".into(),
            source_seq: None,
            kind: TLibKind::LinkConnected,
        }),
    ];
    let mut st = State::new();
    for (i, event) in events.into_iter().enumerate() {
        st.apply_record(&Record {
            seq: i as u64 + 1,
            envelope: Envelope {
                time: Micros::from_secs(i as i64),
                recorded: Micros::from_secs(0),
                event,
            },
        });
    }
    st
}

fn message() -> impl Strategy<Value = Message> {
    let name = prop_oneof![Just("IVR_1"), Just("IVR_2"), Just("IVR_9"), Just("")];
    let port = prop_oneof![Just("01"), Just("02"), Just("03"), Just("")];
    let version = prop_oneof![Just("4.0"), Just("1.0"), Just("5.0")];
    prop_oneof![
        (version, name, any::<bool>()).prop_map(|(v, n, m)| Message::LoginReq {
            version: v.into(),
            client_name: n.into(),
            report_status: None,
            server_monitor: m,
        }),
        port.clone().prop_map(|p| Message::AgentQuery {
            req_id: "q".into(),
            port: p.into()
        }),
        port.prop_map(|p| Message::AgentLogin(AgentControl {
            req_id: "c".into(),
            port: p.into(),
            attributes: vec![("Password".into(), "secret".into())],
        })),
        Just(Message::LogMsg {
            attributes: vec![("Text".into(), "t".into())]
        }),
        Just(Message::Reset),
    ]
}

/// One piece of traffic: a whole valid frame, a keep-alive, or raw bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let call_id = prop_oneof![Just("1"), Just("2")];
    prop_oneof![
        8 => (call_id, message()).prop_map(|(c, m)| {
            encode_frame(FrameKind::Data, &xml::encode(&GctiMsg { call_id: c.into(), msg: m })).unwrap()
        }),
        1 => Just(encode_frame(FrameKind::KeepAliveRequest, b"").unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sessions_only_ever_answer_about_their_own_ivr(
        pieces in proptest::collection::vec(piece(), 0..24),
        cuts in proptest::collection::vec(1usize..200, 1..8),
        ready: bool,
        allow_list: bool,
    ) {
        let st = state();
        let allowed: Option<Arc<HashSet<IvrName>>> =
            allow_list.then(|| Arc::new([IvrName::from("IVR_1")].into_iter().collect()));
        let now = std::time::Instant::now();
        let mut s = Session::new("127.0.0.1:9", now, Timers::default()).with_allowed_clients(allowed.clone());
        let stream: Vec<u8> = pieces.concat();
        // Chunks of random sizes, each handed over byte by byte: every frame is then handled
        // alone, so what it caused is checked against the login it saw.
        let mut rest = &stream[..];
        let mut k = 0;
        let mut bytes_in = Vec::new();
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].min(rest.len());
            k += 1;
            bytes_in.extend(rest[..n].iter().map(|&b| [b]));
            rest = &rest[n..];
        }
        'outer: for byte in bytes_in {
            s.handle_bytes(now, &byte, &st, ready);
            if let Some(ivr) = s.logged_in_ivr() {
                prop_assert!(ready);
                prop_assert!(st.ivr(ivr).is_some());
                if let Some(a) = &allowed {
                    prop_assert!(a.contains(ivr));
                }
            }
            while let Some(bytes) = s.poll_transmit() {
                let mut fd = FrameDecoder::new();
                fd.push(&bytes);
                let f = fd.next_frame().unwrap().unwrap();
                prop_assert_eq!(fd.buffered(), 0);
                if f.kind != FrameKind::Data {
                    continue;
                }
                let m = xml::decode(&f.body).unwrap();
                if let Message::MonitorInfo { req_id: Some(_), info: MonitorInfo::Agent { port, .. } } = &m.msg {
                    // Answers go out on the request's CallId: only the port is checked.
                    let ivr = s.logged_in_ivr().unwrap();
                    prop_assert!(st.agent_query(ivr.as_str(), port.as_str()).is_some());
                }
            }
            while let Some(event) = s.poll_event() {
                match event {
                    SessionEvent::Record(r) => {
                        prop_assert_eq!(Some(&r.ivr), s.logged_in_ivr());
                        prop_assert!(r.attributes.iter().all(|(_, v)| v != "secret"), "a password reached the audit log");
                    }
                    SessionEvent::Close { .. } => break 'outer,
                }
            }
        }
    }
}
