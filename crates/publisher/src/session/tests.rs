use super::*;
use crate::frame::{Frame, FrameDecoder};
use crate::xml::AgentControl;
use ivrstate_model::{
    AgentStatus, Availability, ConfigOption, ConfigValue, IvrConfig, PortNum, TServerName,
};
use std::collections::HashMap;
use std::time::Duration;

/// What a session asked for after one input, in the order the driver carries it out.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Output {
    Send(Vec<u8>),
    Record(ClientRequest),
    Close { reason: String },
}

/// The time the tests start at: the session never reads a clock, so any instant will do.
fn t0() -> Instant {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn session(client: &str) -> Session {
    Session::new(client, t0(), Timers::default())
}

/// Everything the session queued: frames first, then records and the close.
fn drain(s: &mut Session) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(f) = s.poll_transmit() {
        out.push(Output::Send(f));
    }
    while let Some(e) = s.poll_event() {
        out.push(match e {
            SessionEvent::Record(r) => Output::Record(r),
            SessionEvent::Close { reason } => Output::Close { reason },
        });
    }
    out
}

/// One frame in, its bytes handed to the session as a driver would.
trait FeedFrame {
    fn on_frame(&mut self, f: Frame, st: &FakeState, ready: bool) -> Vec<Output>;
    fn on_bytes(&mut self, bytes: &[u8], st: &FakeState, ready: bool) -> Vec<Output>;
}

impl FeedFrame for Session {
    fn on_frame(&mut self, f: Frame, st: &FakeState, ready: bool) -> Vec<Output> {
        let bytes = encode_frame(f.kind, &f.body).unwrap();
        self.on_bytes(&bytes, st, ready)
    }
    fn on_bytes(&mut self, bytes: &[u8], st: &FakeState, ready: bool) -> Vec<Output> {
        self.handle_bytes(t0(), bytes, st, ready);
        drain(self)
    }
}

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
    let mut s = session("127.0.0.1:5000");
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
    let mut s = session("c");
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
    let mut s = session("c");
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
    let mut s = session("c");
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
    let mut s = session("c");
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
        let mut s = session("10.0.0.9:4000").with_allowed_clients(allowed.clone());
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
    let mut s = session("c").with_allowed_clients(allowed);
    let out = s.on_frame(login("1", "4.0", "IVR_1", false), &st, true);
    assert!(!out.iter().any(|o| matches!(o, Output::Close { .. })));
    assert_eq!(s.logged_in_ivr(), Some(&IvrName::from("IVR_1")));
}

#[test]
fn not_ready_gets_init_in_progress() {
    let st = FakeState::default();
    let mut s = session("c");
    let msgs = sent(&s.on_frame(login("1", "4.0", "IVR_1", true), &st, false));
    assert_eq!(
        msgs.len(),
        2,
        "LoginResp and FlowControl, no server statuses"
    );
    assert!(matches!(
        msgs[0].msg,
        Message::LoginResp {
            status: Some(LoginStatus::InitInProgress),
            ..
        }
    ));
    assert_eq!(msgs[1], flow_control_off("1"));
    assert_eq!(s.logged_in_ivr(), None);
}

#[test]
fn server_monitor_sends_each_used_tserver_after_the_login_resp() {
    let st = FakeState::default();
    let mut s = session("c");
    let msgs = sent(&s.on_frame(login("3", "4.0", "IVR_1", true), &st, true));
    assert_eq!(msgs.len(), 4);
    assert!(matches!(msgs[0].msg, Message::LoginResp { .. }));
    assert_eq!(msgs[1], flow_control_off("3"));
    let msgs = &msgs[1..];
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
    let mut s = session("c");
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
    let mut s = session("c");
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
fn monitoring_and_agent_requests_on_another_call_id_are_answered_on_theirs() {
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
            call_id: "2".into(),
            msg: Message::MonitorInfo {
                req_id: Some("8".into()),
                info: MonitorInfo::Agent {
                    port: "01".into(),
                    status: AgentStatus::Ready
                }
            }
        }]
    );
    let out = s.on_frame(
        data("3", Message::AgentReady(control("9", "01"))),
        &st,
        true,
    );
    let msgs = sent(&out);
    assert_eq!(msgs[0].call_id, "3");
    assert!(
        matches!(&msgs[0].msg, Message::CallError { failed_req, req_id: Some(r), .. } if failed_req == "AgentControl" && r == "9")
    );
    assert!(out.iter().any(|o| matches!(o, Output::Record(_))));
    // The login and its CallId are unchanged: pushes keep going out on "1".
    assert_eq!(s.call_id(), Some("1"));
}

#[test]
fn keep_alive_request_is_answered() {
    let st = FakeState::default();
    let mut s = session("c");
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
    let mut s = session("c");
    let out = s.on_bytes(b"GET / HTTP/1.0\r\n", &FakeState::default(), true);
    assert_eq!(
        out[0],
        Output::Send(vec![0, 2, 0, 3, 2, 0, ERROR_BAD_FRAME])
    );
    assert!(matches!(&out[1], Output::Close { reason } if reason.contains("at byte 0")));
}

#[test]
fn error_frame_from_client_closes() {
    let st = FakeState::default();
    let mut s = session("c");
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
        Message::CallError {
            failed_req: "x".into(),
            tlib_err_code: None,
            req_id: None,
        },
    ] {
        assert!(s.on_frame(data("1", m), &st, true).is_empty());
    }
}

fn flow_control_off(call_id: &str) -> GctiMsg {
    GctiMsg {
        call_id: call_id.into(),
        msg: Message::FlowControl {
            status: Some("Off".into()),
        },
    }
}

/// A frame holding `doc` as sent, byte for byte.
fn raw(doc: &str) -> Frame {
    Frame::new(FrameKind::Data, doc.as_bytes().to_vec())
}

/// The prolog a real IVR driver (a C++ GLI client) sends: double quotes, a newline after the
/// declaration and after the DOCTYPE.
fn driver_doc(call_id: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<!DOCTYPE GctiMsg SYSTEM \"IServer.dtd\">\n<GctiMsg><CallId>{call_id}</CallId>{inner}</GctiMsg>\n"
    )
}

#[test]
fn a_real_drivers_login_is_followed_by_flow_control_off_on_its_call_id() {
    let st = FakeState::default();
    let mut s = session("c");
    let out = s.on_frame(
        raw(&driver_doc(
            "IAdapter1_11271556520004900002",
            r#"<LoginReq Version="4.0" ClientName="IVR_1" ReportStatus="true" ServerMonitor="clear"></LoginReq>"#,
        )),
        &st,
        true,
    );
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(matches!(
        msgs[0].msg,
        Message::LoginResp {
            status: Some(LoginStatus::Ok),
            ..
        }
    ));
    assert_eq!(msgs[0].call_id, "IAdapter1_11271556520004900002");
    assert_eq!(msgs[1], flow_control_off("IAdapter1_11271556520004900002"));
    // Versions before 4.0 get no FlowControl (the IVR Server sends it to 4.0 clients).
    let out = s.on_frame(login("2", "3.0", "IVR_1", false), &st, true);
    assert_eq!(sent(&out).len(), 1);
}

/// A real driver's call-control requests, as captured, each on its call's own CallId.
#[test]
fn call_control_is_answered_call_error_on_the_requests_own_call_id() {
    let (mut s, st) = logged_in("IVR_1");
    let cases = [
        (
            "NewCall",
            r#"<NewCall CallControlMode="Network" Version="4.0"><CalledNum>2</CalledNum><DNIS>*3002</DNIS><ANI>4022</ANI></NewCall>"#,
            None,
        ),
        ("CallInfoReq", "<CallInfoReq></CallInfoReq>", None),
        (
            "UDataGet",
            r#"<UDataGet Keys="UEI"><RequestId>100000001</RequestId></UDataGet>"#,
            Some("100000001"),
        ),
        (
            "UDataSet",
            r#"<UDataSet Action="Add" Keys="UEI"><RequestId>100000002</RequestId><UDataEx><Node Name="aaa" Type="Str" Val="111"/><Node Name="bbb" Type="Str" Val="222"/></UDataEx></UDataSet>"#,
            Some("100000002"),
        ),
        (
            "UDataDel",
            r#"<UDataDel Keys="UEI"><RequestId>100000003</RequestId></UDataDel>"#,
            Some("100000003"),
        ),
        (
            "OneStepXfer",
            r#"<OneStepXfer DestDN="3084"><UDataEx><Node Name="aaa" Type="Str" Val="111"/></UDataEx><ExtnsEx><Node Name="fff" Type="Str" Val="555"/></ExtnsEx></OneStepXfer>"#,
            None,
        ),
        (
            "RouteRequest",
            r#"<RouteRequest RouteDN="7900"><CED>this is CED Test</CED><UDataEx><Node Name="aaa" Type="Str" Val="111"/></UDataEx></RouteRequest>"#,
            None,
        ),
        (
            "EndCall",
            r#"<EndCall EndCause="Normal"><ExtnsEx><Node Name="GCTIActiveRelease" Type="Str" Val="false"/></ExtnsEx></EndCall>"#,
            None,
        ),
        ("StatusReq", "<StatusReq/>", None),
    ];
    for (i, (name, inner, req_id)) in cases.into_iter().enumerate() {
        let call_id = format!("IAdapter1_1127160905000179000{i}");
        let out = s.on_frame(raw(&driver_doc(&call_id, inner)), &st, true);
        assert_eq!(
            sent(&out),
            vec![GctiMsg {
                call_id: call_id.clone(),
                msg: Message::CallError {
                    failed_req: name.into(),
                    tlib_err_code: None,
                    req_id: req_id.map(str::to_owned),
                }
            }],
            "{name}"
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Close { .. } | Output::Record(_))),
            "{name}: the connection stays open, nothing recorded"
        );
    }
    // The session is still logged in on its own CallId and answers as before.
    assert_eq!(s.call_id(), Some("1"));
    let out = s.on_frame(
        data(
            "1",
            Message::AgentQuery {
                req_id: "5".into(),
                port: "01".into(),
            },
        ),
        &st,
        true,
    );
    assert!(matches!(sent(&out)[0].msg, Message::MonitorInfo { .. }));
}

#[test]
fn call_control_before_login_is_answered_too() {
    let st = FakeState::default();
    let mut s = session("c");
    let out = s.on_frame(raw(&driver_doc("call-7", "<CallInfoReq/>")), &st, true);
    assert_eq!(sent(&out)[0].call_id, "call-7");
    assert!(
        matches!(&sent(&out)[0].msg, Message::CallError { failed_req, .. } if failed_req == "CallInfoReq")
    );
}

#[test]
fn two_frames_in_one_read_and_a_frame_split_across_reads() {
    let st = FakeState::default();
    let mut s = session("c");
    let mut bytes = encode_frame(
        FrameKind::Data,
        driver_doc("1", r#"<LoginReq Version="4.0" ClientName="IVR_1"/>"#).as_bytes(),
    )
    .unwrap();
    bytes.extend(encode_frame(FrameKind::KeepAliveRequest, &[]).unwrap());
    let (a, b) = bytes.split_at(bytes.len() - 3);
    let first = s.on_bytes(a, &st, true);
    assert_eq!(sent(&first).len(), 2, "LoginResp and FlowControl");
    assert_eq!(
        s.on_bytes(b, &st, true),
        vec![Output::Send(vec![0, 1, 0, 2, 2, 0])]
    );
}

#[test]
fn login_timeout_closes_a_connection_that_never_logs_in() {
    let st = FakeState::default();
    let timers = Timers {
        login_timeout: Duration::from_secs(30),
        idle_timeout: None,
    };
    let mut s = Session::new("c", t0(), timers);
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(30)));
    // Bytes that are not a login do not move the login deadline.
    s.handle_bytes(
        t0() + Duration::from_secs(10),
        &encode_frame(FrameKind::KeepAliveRequest, &[]).unwrap(),
        &st,
        true,
    );
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(30)));
    s.handle_timeout(t0() + Duration::from_secs(29));
    assert!(drain(&mut s).is_empty(), "too early: nothing happens");
    s.handle_timeout(t0() + Duration::from_secs(30));
    assert_eq!(
        drain(&mut s),
        vec![Output::Close {
            reason: "no LoginReq before the login timeout".into()
        }]
    );
    assert!(s.is_closed());
    assert_eq!(s.poll_timeout(), None);
    // A closed session takes no more input.
    assert!(s
        .on_frame(login("1", "4.0", "IVR_1", false), &st, true)
        .is_empty());
}

#[test]
fn a_login_answered_ends_the_login_timeout_even_a_refused_one() {
    let st = FakeState::default();
    let mut s = Session::new("c", t0(), Timers::default());
    s.on_frame(login("1", "9.9", "IVR_1", false), &st, true);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0() + Duration::from_secs(3600));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn idle_timeout_counts_from_the_last_bytes_received_keep_alives_included() {
    let st = FakeState::default();
    let timers = Timers {
        login_timeout: Duration::from_secs(30),
        idle_timeout: Some(Duration::from_secs(60)),
    };
    let mut s = Session::new("c", t0(), timers);
    s.on_frame(login("1", "4.0", "IVR_1", false), &st, true);
    assert_eq!(s.poll_timeout(), Some(t0() + Duration::from_secs(60)));
    let keep_alive = encode_frame(FrameKind::KeepAliveRequest, &[]).unwrap();
    let t = t0() + Duration::from_secs(50);
    s.handle_bytes(t, &keep_alive, &st, true);
    assert_eq!(drain(&mut s), vec![Output::Send(vec![0, 1, 0, 2, 2, 0])]);
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(60)));
    s.handle_timeout(t0() + Duration::from_secs(100));
    assert!(
        drain(&mut s).is_empty(),
        "the keep-alive moved the deadline"
    );
    s.handle_timeout(t + Duration::from_secs(60));
    assert_eq!(
        drain(&mut s),
        vec![Output::Close {
            reason: "idle timeout".into()
        }]
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(kind in 0u8..4, body in proptest::collection::vec(any::<u8>(), 0..256), ready: bool) {
            let st = FakeState::default();
            let mut s = session("c");
            s.on_frame(login("1", "4.0", "IVR_1", true), &st, true);
            let f = Frame::new(FrameKind::from_code(kind).unwrap(), body);
            let _ = s.on_frame(f, &st, ready);
        }
    }
}
