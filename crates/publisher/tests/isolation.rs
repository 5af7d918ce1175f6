//! No client ever receives a message about a port or T-Server of another IVR, across logins,
//! re-logins and configuration changes: a property test over random sequences of operations
//! against a real server over loopback TCP, checking every frame every client receives
//! against a model of what it must receive.
//!
//! Names carry their IVR (`IVR_2-07`, `IVR_2-TS_a`), so each received MonitorInfo says whose
//! it is, and its CallId says which login it was sent under.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

mod common;

use common::*;
use ivrstate_model::{AgentStatus, Availability, IvrConfig, IvrName, PortNum, TServerName};
use ivrstate_publisher::frame::{Frame, FrameKind};
use ivrstate_publisher::xml::{self, GctiMsg, LoginStatus, Message};
use ivrstate_publisher::{Change, HubConfig, MonitorInfo, StateView};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const IVRS: [&str; 4] = ["IVR_1", "IVR_2", "IVR_3", "IVR_9"]; // IVR_9 is never configured
const CLIENTS: usize = 4;

/// IVR name -> its T-Servers; ports `<ivr>-01..03` of configured IVRs exist.
#[derive(Clone, Default)]
struct Config {
    ivrs: BTreeMap<String, IvrConfig>,
}

impl Config {
    fn initial() -> Self {
        let mut c = Config::default();
        for i in &IVRS[..3] {
            c.set(i, 1);
        }
        c
    }
    fn set(&mut self, ivr: &str, tservers: usize) {
        let ts = (0..tservers)
            .map(|k| TServerName::from(format!("{ivr}-TS_{k}")))
            .collect();
        self.ivrs.insert(
            ivr.to_owned(),
            IvrConfig {
                name: IvrName::from(ivr),
                tservers: ts,
                options: vec![],
            },
        );
    }
}

impl StateView for Config {
    fn ivr(&self, name: &IvrName) -> Option<&IvrConfig> {
        self.ivrs.get(name.as_str())
    }
    fn agent_query(&self, ivr: &IvrName, port: &PortNum) -> Option<AgentStatus> {
        let ours = port
            .as_str()
            .strip_prefix(ivr.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|n| ["01", "02", "03"].contains(&n));
        (self.ivrs.contains_key(ivr.as_str()) && ours).then_some(AgentStatus::Ready)
    }
    fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo> {
        self.ivr(ivr)
            .map(|c| {
                c.tservers
                    .iter()
                    .map(|t| MonitorInfo::Server {
                        name: t.clone(),
                        status: Availability::Ok,
                        switch: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn server_version(&self) -> Option<&str> {
        None
    }
}

#[derive(Clone, Debug)]
enum Op {
    Login {
        client: usize,
        ivr: usize,
        monitor: bool,
    },
    Query {
        client: usize,
        ivr: usize,
        port: u8,
    },
    Publish(Vec<(usize, bool, u8)>),
    /// Remove an IVR (`None`) or (re)configure it with this many T-Servers.
    Configure {
        ivr: usize,
        tservers: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let i = 0..IVRS.len();
    prop_oneof![
        3 => (c.clone(), i.clone(), any::<bool>()).prop_map(|(client, ivr, monitor)| Op::Login { client, ivr, monitor }),
        2 => (c, i.clone(), 1u8..5).prop_map(|(client, ivr, port)| Op::Query { client, ivr, port }),
        4 => proptest::collection::vec((i.clone(), any::<bool>(), 1u8..4), 1..6).prop_map(Op::Publish),
        1 => (0..3usize, proptest::option::of(0..3usize)).prop_map(|(ivr, tservers)| Op::Configure { ivr, tservers }),
    ]
}

fn name_of(info: &MonitorInfo) -> String {
    match info {
        MonitorInfo::Agent { port, .. } | MonitorInfo::Port { port, .. } => port.to_string(),
        MonitorInfo::Server { name, .. } => name.to_string(),
    }
}

/// What one client has been sent, and what the model says it must have been sent.
#[derive(Default)]
struct Seen {
    /// CallId -> the IVR of that login if it succeeded.
    logins: HashMap<String, Option<String>>,
    /// The login in force: (CallId, IVR).
    current: Option<(String, String)>,
    /// Per CallId: the MonitorInfo pushes (no ReqId) expected and received, in order.
    expected: HashMap<String, Vec<MonitorInfo>>,
    received: HashMap<String, Vec<MonitorInfo>>,
}

impl Seen {
    /// Checks one frame the server sent and files it.
    fn take(&mut self, f: &Frame) {
        assert_eq!(f.kind, FrameKind::Data, "unexpected frame {f:?}");
        let m: GctiMsg = xml::decode(&f.body).unwrap();
        if let Message::MonitorInfo { req_id, info } = &m.msg {
            let ivr = self
                .logins
                .get(&m.call_id)
                .cloned()
                .flatten()
                .unwrap_or_else(|| {
                    panic!(
                        "a MonitorInfo under CallId {} of no successful login: {m:?}",
                        m.call_id
                    )
                });
            let name = name_of(info);
            assert!(
                name.starts_with(&format!("{ivr}-")),
                "a client of {ivr} was sent {name}"
            );
            if req_id.is_none() {
                self.received
                    .entry(m.call_id.clone())
                    .or_default()
                    .push(info.clone());
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let srv = start_with(HubConfig::default(), true, Config::initial(), None).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push((Client::connect(srv.addr).await, Seen::default()));
    }
    let mut next_call = 0u32;
    for op in ops {
        match op {
            Op::Login {
                client,
                ivr,
                monitor,
            } => {
                next_call += 1;
                let call_id = format!("L{next_call}");
                let name = IVRS[ivr];
                let (c, seen) = &mut clients[client];
                let configured = srv.hub.read(|s| s.ivr(&IvrName::from(name)).is_some());
                seen.logins
                    .insert(call_id.clone(), configured.then(|| name.to_owned()));
                let mut expect = Vec::new();
                if configured {
                    seen.current = Some((call_id.clone(), name.to_owned()));
                    if monitor {
                        expect = srv
                            .hub
                            .read(|s| s.server_statuses_for(&IvrName::from(name)));
                    }
                } else {
                    seen.current = None;
                }
                seen.expected.insert(call_id.clone(), expect);
                c.send(
                    &call_id,
                    Message::LoginReq {
                        version: "4.0".into(),
                        client_name: name.into(),
                        report_status: None,
                        server_monitor: monitor,
                    },
                )
                .await;
                // Frames before the answer belong to earlier logins.
                loop {
                    let f = c.next().await.expect("open");
                    let m = xml::decode(&f.body).unwrap();
                    if let Message::LoginResp { status, .. } = m.msg {
                        assert_eq!(m.call_id, call_id);
                        let want = if configured {
                            LoginStatus::Ok
                        } else {
                            LoginStatus::NoSuchClient
                        };
                        assert_eq!(status, Some(want));
                        break;
                    }
                    seen.take(&f);
                }
            }
            Op::Query { client, ivr, port } => {
                let (c, seen) = &mut clients[client];
                let port = format!("{}-{port:02}", IVRS[ivr]);
                let call_id = seen
                    .current
                    .as_ref()
                    .map_or("Q".to_owned(), |(c, _)| c.clone());
                c.send(
                    &call_id,
                    Message::AgentQuery {
                        req_id: "r".into(),
                        port: port.as_str().into(),
                    },
                )
                .await;
                loop {
                    let f = c.next().await.expect("open");
                    let m = xml::decode(&f.body).unwrap();
                    match &m.msg {
                        Message::MonitorInfo {
                            req_id: Some(_),
                            info,
                        } => {
                            let own = seen.current.as_ref().map(|(_, i)| i.as_str());
                            assert_eq!(own, Some(IVRS[ivr]), "answered about {}", name_of(info));
                            seen.take(&f);
                            break;
                        }
                        Message::CallError { .. } => break,
                        _ => seen.take(&f),
                    }
                }
            }
            Op::Publish(list) => {
                let changes: Vec<Change> = list
                    .into_iter()
                    .map(|(ivr, server, n)| {
                        let ivr = IVRS[ivr];
                        let info = if server {
                            MonitorInfo::Server {
                                name: format!("{ivr}-TS_{n}").into(),
                                status: Availability::Unavailable,
                                switch: None,
                            }
                        } else {
                            MonitorInfo::Agent {
                                port: format!("{ivr}-{n:02}").into(),
                                status: AgentStatus::NotReady,
                            }
                        };
                        Change {
                            ivr: IvrName::from(ivr),
                            info,
                        }
                    })
                    .collect();
                for (_, seen) in clients.iter_mut() {
                    if let Some((call_id, ivr)) = &seen.current {
                        let e = seen.expected.get_mut(call_id).expect("filed at login");
                        e.extend(
                            changes
                                .iter()
                                .filter(|c| c.ivr.as_str() == ivr)
                                .map(|c| c.info.clone()),
                        );
                    }
                }
                srv.hub.publish(&changes);
            }
            Op::Configure { ivr, tservers } => {
                srv.hub.update(|s| match tservers {
                    Some(n) => s.set(IVRS[ivr], n),
                    None => {
                        s.ivrs.remove(IVRS[ivr]);
                    }
                });
            }
        }
    }
    // Everything queued arrives before the keep-alive answer.
    for (c, seen) in clients.iter_mut() {
        for f in c.sync().await {
            seen.take(&f);
        }
        for (call_id, want) in &seen.expected {
            let got = seen.received.get(call_id).cloned().unwrap_or_default();
            assert_eq!(&got, want, "pushes under CallId {call_id}");
        }
        for call_id in seen.received.keys() {
            assert!(seen.expected.contains_key(call_id));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_client_ever_sees_another_ivrs_ports_or_tservers(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
