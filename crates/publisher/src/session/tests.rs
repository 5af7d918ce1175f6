use super::*;
use crate::frame::{Frame, FrameDecoder};
use crate::xml::AgentControl;
use ivrstate_model::{
    AgentStatus, Availability, ConfigOption, ConfigValue, IvrConfig, PortNum, TServerName,
};
use std::collections::HashMap;

/// A state with IVR_1 (ports 01 Ready, 02 Unknown because its T-Server is down) and IVR_2.
pub(crate) struct FakeState {
    pub ivrs: Vec<IvrConfig>,
    pub agents: HashMap<(String, String), AgentStatus>,
    pub version: Option<String>,
}

impl Default for FakeState {
    fn default() -> Self {
        let ivr = |name: &str, ts: &[&str], options: Vec<ConfigOption>| IvrConfig {
            name: IvrName::from(name),
            tservers: ts.iter().map(|t| TServerName::from(*t)).collect(),
            options,
        };
        let mut agents = HashMap::new();
        agents.insert(("IVR_1".to_owned(), "01".to_owned()), AgentStatus::Ready);
        agents.insert(("IVR_1".to_owned(), "02".to_owned()), AgentStatus::Unknown);
        agents.insert(("IVR_2".to_owned(), "01".to_owned()), AgentStatus::NotReady);
        FakeState {
            ivrs: vec![
                ivr(
                    "IVR_1",
                    &["TS_A", "TS_B"],
                    vec![ConfigOption {
                        name: "Timeout".into(),
                        value: ConfigValue::Str("30".into()),
                    }],
                ),
                ivr("IVR_2", &["TS_C"], vec![]),
            ],
            agents,
            version: Some("8.5.000.01".into()),
        }
    }
}

impl StateView for FakeState {
    fn ivr(&self, name: &IvrName) -> Option<&IvrConfig> {
        self.ivrs.iter().find(|i| &i.name == name)
    }
    fn agent_query(&self, ivr: &IvrName, port: &PortNum) -> Option<AgentStatus> {
        self.agents
            .get(&(ivr.to_string(), port.to_string()))
            .copied()
    }
    fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo> {
        self.ivr(ivr)
            .map(|c| {
                c.tservers
                    .iter()
                    .map(|t| MonitorInfo::Server {
                        name: t.clone(),
                        status: if t.as_str() == "TS_B" {
                            Availability::Unavailable
                        } else {
                            Availability::Ok
                        },
                        switch: Some("SW".into()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn server_version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

fn data(call_id: &str, msg: Message) -> Frame {
    Frame::new(
        FrameKind::Data,
        xml::encode(&GctiMsg {
            call_id: call_id.into(),
            msg,
        }),
    )
}

fn login(call_id: &str, version: &str, name: &str, monitor: bool) -> Frame {
    data(
        call_id,
        Message::LoginReq {
            version: version.into(),
            client_name: name.into(),
            report_status: None,
            server_monitor: monitor,
        },
    )
}

/// The messages sent, decoded back, and the other outputs.
fn sent(out: &[Output]) -> Vec<GctiMsg> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(bytes) => {
                let mut d = FrameDecoder::new();
                d.push(bytes);
                let f = d.next_frame().unwrap().unwrap();
                (f.kind == FrameKind::Data).then(|| xml::decode(&f.body).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn logged_in(name: &str) -> (Session, FakeState) {
    let st = FakeState::default();
    let mut s = Session::new("127.0.0.1:5000");
    let out = s.on_frame(login("1", "4.0", name, false), &st, true);
    assert!(matches!(
        &sent(&out)[0].msg,
        Message::LoginResp {
            status: Some(LoginStatus::Ok),
            ..
        }
    ));
    (s, st)
}

fn control(req_id: &str, port: &str) -> AgentControl {
    AgentControl {
        req_id: req_id.into(),
        port: PortNum::from(port),
        attributes: vec![
            ("Queue".into(), "q".into()),
            ("Password".into(), "secret".into()),
        ],
    }
}

#[test]
fn login_ok_returns_config_options_and_logs_in() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let out = s.on_frame(login("7", "3.0", "IVR_1", false), &st, true);
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].call_id, "7");
    assert_eq!(
        msgs[0].msg,
        Message::LoginResp {
            version: "8.5.000.01".into(),
            result: LoginResult::Success,
            status: Some(LoginStatus::Ok),
            config_options: Some(st.ivrs[0].options.clone()),
        }
    );
    assert_eq!(s.logged_in_ivr(), Some(&IvrName::from("IVR_1")));
    assert_eq!(s.call_id(), Some("7"));
}

#[test]
fn login_without_options_omits_config_options_and_reports_default_version() {
    let st = FakeState {
        version: None,
        ..FakeState::default()
    };
    let mut s = Session::new("c");
    let msgs = sent(&s.on_frame(login("1", "1.0", "IVR_2", false), &st, true));
    assert_eq!(
        msgs[0].msg,
        Message::LoginResp {
            version: DEFAULT_SERVER_VERSION.into(),
            result: LoginResult::Success,
            status: Some(LoginStatus::Ok),
            config_options: None
        }
    );
}

#[test]
fn unsupported_version_gets_invalid_protocol_ver() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    for v in ["5.0", "0.9", "4", ""] {
        let msgs = sent(&s.on_frame(login("1", v, "IVR_1", false), &st, true));
        assert!(
            matches!(
                msgs[0].msg,
                Message::LoginResp {
                    result: LoginResult::InvalidProtocolVer,
                    status: None,
                    ..
                }
            ),
            "{v}: {msgs:?}"
        );
        assert_eq!(s.logged_in_ivr(), None);
    }
}

#[test]
fn unknown_client_name_gets_no_such_client() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let msgs = sent(&s.on_frame(login("1", "4.0", "IVR_9", true), &st, true));
    assert_eq!(msgs.len(), 1, "no server statuses for an unknown client");
    assert!(matches!(
        msgs[0].msg,
        Message::LoginResp {
            result: LoginResult::Success,
            status: Some(LoginStatus::NoSuchClient),
            ..
        }
    ));
    assert_eq!(s.logged_in_ivr(), None);
}

#[test]
fn client_not_on_the_allow_list_gets_no_such_client_and_is_closed() {
    let st = FakeState::default();
    let allowed: std::collections::HashSet<IvrName> = [IvrName::from("IVR_1")].into();
    let allowed = Some(std::sync::Arc::new(allowed));
    // IVR_2 is configured but not allowed; the refusal comes before readiness is considered.
    for ready in [true, false] {
        let mut s = Session::new("10.0.0.9:4000").with_allowed_clients(allowed.clone());
        let out = s.on_frame(login("1", "4.0", "IVR_2", true), &st, ready);
        let msgs = sent(&out);
        assert_eq!(msgs.len(), 1, "no server statuses for a refused client");
        assert!(matches!(
            msgs[0].msg,
            Message::LoginResp {
                status: Some(LoginStatus::NoSuchClient),
                ..
            }
        ));
        assert!(matches!(out.last(), Some(Output::Close { reason }) if reason.contains("IVR_2")));
        assert_eq!(s.logged_in_ivr(), None);
    }
    // A name on the list logs in as usual.
    let mut s = Session::new("c").with_allowed_clients(allowed);
    let out = s.on_frame(login("1", "4.0", "IVR_1", false), &st, true);
    assert!(!out.iter().any(|o| matches!(o, Output::Close { .. })));
    assert_eq!(s.logged_in_ivr(), Some(&IvrName::from("IVR_1")));
}

#[test]
fn not_ready_gets_init_in_progress() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let msgs = sent(&s.on_frame(login("1", "4.0", "IVR_1", true), &st, false));
    assert_eq!(msgs.len(), 1);
    assert!(matches!(
        msgs[0].msg,
        Message::LoginResp {
            status: Some(LoginStatus::InitInProgress),
            ..
        }
    ));
    assert_eq!(s.logged_in_ivr(), None);
}

#[test]
fn server_monitor_sends_each_used_tserver_after_the_login_resp() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let msgs = sent(&s.on_frame(login("3", "4.0", "IVR_1", true), &st, true));
    assert_eq!(msgs.len(), 3);
    assert!(matches!(msgs[0].msg, Message::LoginResp { .. }));
    assert_eq!(msgs[1].call_id, "3");
    assert_eq!(
        msgs[1].msg,
        Message::MonitorInfo {
            req_id: None,
            info: MonitorInfo::Server {
                name: "TS_A".into(),
                status: Availability::Ok,
                switch: Some("SW".into())
            }
        }
    );
    assert!(matches!(
        &msgs[2].msg,
        Message::MonitorInfo { info: MonitorInfo::Server { name, status: Availability::Unavailable, .. }, .. }
            if name.as_str() == "TS_B"
    ));
}

#[test]
fn server_monitor_needs_version_4() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    assert_eq!(
        sent(&s.on_frame(login("3", "3.0", "IVR_1", true), &st, true)).len(),
        1
    );
}

#[test]
fn repeated_login_is_re_evaluated_and_may_switch_ivr() {
    let (mut s, st) = logged_in("IVR_1");
    s.on_frame(login("9", "4.0", "IVR_2", false), &st, true);
    assert_eq!(s.logged_in_ivr(), Some(&IvrName::from("IVR_2")));
    assert_eq!(s.call_id(), Some("9"));
    s.on_frame(login("10", "4.0", "nobody", false), &st, true);
    assert_eq!(s.logged_in_ivr(), None, "a failed re-login logs out");
}

#[test]
fn agent_query_answers_with_req_id_and_status() {
    let (mut s, st) = logged_in("IVR_1");
    let q = |r: &str, p: &str| {
        data(
            "1",
            Message::AgentQuery {
                req_id: r.into(),
                port: PortNum::from(p),
            },
        )
    };
    let msgs = sent(&s.on_frame(q("11", "01"), &st, true));
    assert_eq!(
        msgs,
        vec![GctiMsg {
            call_id: "1".into(),
            msg: Message::MonitorInfo {
                req_id: Some("11".into()),
                info: MonitorInfo::Agent {
                    port: "01".into(),
                    status: AgentStatus::Ready
                }
            }
        }]
    );
    let msgs = sent(&s.on_frame(q("12", "02"), &st, true));
    assert!(matches!(
        msgs[0].msg,
        Message::MonitorInfo {
            info: MonitorInfo::Agent {
                status: AgentStatus::Unknown,
                ..
            },
            ..
        }
    ));
}

#[test]
fn agent_query_on_an_unknown_port_gets_call_error() {
    let (mut s, st) = logged_in("IVR_1");
    let msgs = sent(&s.on_frame(
        data(
            "1",
            Message::AgentQuery {
                req_id: "5".into(),
                port: "77".into(),
            },
        ),
        &st,
        true,
    ));
    assert_eq!(
        msgs[0].msg,
        Message::CallError {
            failed_req: "AgentQuery".into(),
            tlib_err_code: None,
            req_id: Some("5".into())
        }
    );
}

#[test]
fn agent_query_never_sees_another_ivrs_port() {
    // IVR_2 has port 01 but no port 02: IVR_2's session must not get IVR_1's port 02.
    let (mut s, st) = logged_in("IVR_2");
    let msgs = sent(&s.on_frame(
        data(
            "1",
            Message::AgentQuery {
                req_id: "5".into(),
                port: "02".into(),
            },
        ),
        &st,
        true,
    ));
    assert!(matches!(msgs[0].msg, Message::CallError { .. }));
}

#[test]
fn agent_control_gets_call_error_and_is_recorded_without_password() {
    let (mut s, st) = logged_in("IVR_1");
    for (name, msg) in [
        ("AgentLogin", Message::AgentLogin(control("705", "01"))),
        ("AgentLogout", Message::AgentLogout(control("706", "01"))),
        ("AgentReady", Message::AgentReady(control("707", "01"))),
        (
            "AgentNotReady",
            Message::AgentNotReady(control("708", "01")),
        ),
    ] {
        let req_id = request_id(&msg).unwrap();
        let out = s.on_frame(data("1", msg), &st, true);
        assert_eq!(
            sent(&out)[0].msg,
            Message::CallError {
                failed_req: "AgentControl".into(),
                tlib_err_code: Some("50".into()),
                req_id: Some(req_id.clone())
            }
        );
        let rec = out
            .iter()
            .find_map(|o| {
                if let Output::Record(r) = o {
                    Some(r)
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(
            rec,
            &ClientRequest {
                ivr: "IVR_1".into(),
                client: "127.0.0.1:5000".into(),
                request: name.into(),
                req_id: Some(req_id),
                port: Some("01".into()),
                attributes: vec![
                    ("Queue".into(), "q".into()),
                    ("Password".into(), "***".into())
                ],
            }
        );
    }
}

#[test]
fn log_msg_is_recorded_without_answer() {
    let (mut s, st) = logged_in("IVR_1");
    let attrs = vec![
        ("MsgType".to_owned(), "Standard".to_owned()),
        ("Msg".to_owned(), "hello".to_owned()),
    ];
    let out = s.on_frame(
        data(
            "1",
            Message::LogMsg {
                attributes: attrs.clone(),
            },
        ),
        &st,
        true,
    );
    assert_eq!(
        out,
        vec![Output::Record(ClientRequest {
            ivr: "IVR_1".into(),
            client: "127.0.0.1:5000".into(),
            request: "LogMsg".into(),
            req_id: None,
            port: None,
            attributes: attrs,
        })]
    );
}

#[test]
fn request_before_login_gets_call_error_with_its_own_call_id() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let out = s.on_frame(
        data(
            "4",
            Message::AgentQuery {
                req_id: "1".into(),
                port: "01".into(),
            },
        ),
        &st,
        true,
    );
    assert_eq!(
        sent(&out),
        vec![GctiMsg {
            call_id: "4".into(),
            msg: Message::CallError {
                failed_req: "AgentQuery".into(),
                tlib_err_code: None,
                req_id: Some("1".into())
            }
        }]
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Close { .. } | Output::Record(_))));
    let out = s.on_frame(
        data("4", Message::AgentLogin(control("2", "01"))),
        &st,
        true,
    );
    assert!(
        matches!(&sent(&out)[0].msg, Message::CallError { failed_req, .. } if failed_req == "AgentLogin")
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Record(_))),
        "nothing recorded without an IVR"
    );
    assert!(s
        .on_frame(data("4", Message::LogMsg { attributes: vec![] }), &st, true)
        .is_empty());
}

#[test]
fn request_with_another_call_id_gets_call_error_with_the_login_call_id() {
    let (mut s, st) = logged_in("IVR_1");
    let out = s.on_frame(
        data(
            "2",
            Message::AgentQuery {
                req_id: "8".into(),
                port: "01".into(),
            },
        ),
        &st,
        true,
    );
    assert_eq!(
        sent(&out),
        vec![GctiMsg {
            call_id: "1".into(),
            msg: Message::CallError {
                failed_req: "AgentQuery".into(),
                tlib_err_code: None,
                req_id: Some("8".into())
            }
        }]
    );
    let out = s.on_frame(
        data("2", Message::AgentReady(control("9", "01"))),
        &st,
        true,
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Record(_))));
}

#[test]
fn keep_alive_request_is_answered() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let out = s.on_frame(Frame::new(FrameKind::KeepAliveRequest, vec![]), &st, false);
    assert_eq!(out, vec![Output::Send(vec![0, 1, 0, 2, 2, 0])]);
    assert!(s
        .on_frame(Frame::new(FrameKind::KeepAliveResponse, vec![]), &st, false)
        .is_empty());
}

#[test]
fn bad_xml_gets_an_error_frame_then_close() {
    let (mut s, st) = logged_in("IVR_1");
    let out = s.on_frame(
        Frame::new(FrameKind::Data, b"<GctiMsg><oops".to_vec()),
        &st,
        true,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], Output::Send(vec![0, 2, 0, 3, 2, 0, ERROR_BAD_XML]));
    assert!(matches!(&out[1], Output::Close { reason } if reason.starts_with("bad XML")));
}

#[test]
fn bad_frame_gets_an_error_frame_then_close() {
    let mut s = Session::new("c");
    let mut d = FrameDecoder::new();
    d.push(b"GET / HTTP/1.0\r\n");
    let err = d.next_frame().unwrap().unwrap_err();
    let out = s.on_frame_error(&err);
    assert_eq!(
        out[0],
        Output::Send(vec![0, 2, 0, 3, 2, 0, ERROR_BAD_FRAME])
    );
    assert!(matches!(&out[1], Output::Close { reason } if reason.contains("at byte 0")));
}

#[test]
fn error_frame_from_client_closes() {
    let st = FakeState::default();
    let mut s = Session::new("c");
    let out = s.on_frame(Frame::new(FrameKind::Error, vec![9]), &st, true);
    assert!(matches!(&out[..], [Output::Close { reason }] if reason.contains("code 9")));
}

#[test]
fn other_messages_get_no_answer() {
    let (mut s, st) = logged_in("IVR_1");
    for m in [
        Message::Reset,
        Message::FlowControl {
            status: Some("on".into()),
        },
        Message::Unknown("StatusReq".into()),
    ] {
        assert!(s.on_frame(data("1", m), &st, true).is_empty());
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(kind in 0u8..4, body in proptest::collection::vec(any::<u8>(), 0..256), ready: bool) {
            let st = FakeState::default();
            let mut s = Session::new("c");
            s.on_frame(login("1", "4.0", "IVR_1", true), &st, true);
            let f = Frame::new(FrameKind::from_code(kind).unwrap(), body);
            let _ = s.on_frame(f, &st, ready);
        }
    }
}
