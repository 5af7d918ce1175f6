//! `ivrstate serve` end to end: the real binary, GLI over real TCP sockets, live events through
//! `--follow` and `--feed-listen`, replay.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{
    attr, frame, wait_for, Gli, Ivrstate, Running, ERROR, KEEPALIVE_REQUEST, KEEPALIVE_RESPONSE,
};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

const CONFIG: &str = r#"
[server]
version = "8.5.000.01"

[[tserver]]
name = "TS_A"
switch = "SwitchA"

[[tserver]]
name = "TS_B"

[[ivr]]
name = "IVR_1"
tservers = ["TS_A"]
options = { Timeout = "30", Mode = "Legacy" }

[[ivr.port]]
num = "01"
dn = "7001"

[[ivr.port]]
num = "02"
dn = "7002"

[[ivr]]
name = "IVR_2"
tservers = ["TS_B"]

[[ivr.port]]
num = "01"
dn = "7001"
"#;

/// One T-Server printout as T-Server writes it, followed by an Int line.
fn printout(event: &str, seq: u64, secs: u64, dn: Option<&str>, extra: &str) -> String {
    let mut s = format!(
        "@{h:02}:{m:02}:{s:02}.0000 [0] 8.1.101.33 distribute_event: message {event}\n\
         \tAttributeEventSequenceNumber\t{seq:016x}\n\
         \tAttributeTimeinuSecs\t0\n\
         \tAttributeTimeinSecs\t{secs}\n",
        h = secs % 86400 / 3600,
        m = secs % 3600 / 60,
        s = secs % 60,
    );
    if let Some(dn) = dn {
        s.push_str(&format!("\tAttributeThisDN\t'{dn}'\n"));
    }
    s.push_str(extra);
    s.push_str("2015-08-17T08:00:00.000 Int 04545 Interaction message sent\n");
    s
}

const T0: u64 = 1_439_798_400; // 2015-08-17T08:00:00Z

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
}

/// Logs in, retrying while the server says InitInProgress; returns the LoginResp.
fn login_ok(gli: &mut Gli, call_id: &str, ivr: &str, monitor: bool) -> String {
    wait_for("the server to finish opening (Status='OK')", || {
        let resp = gli.login(call_id, ivr, "4.0", monitor);
        (attr(&resp, "Status").as_deref() == Some("OK")).then_some(resp)
    })
}

struct Served {
    t: Ivrstate,
    serve: Running,
    a_log: std::path::PathBuf,
}

fn start(t: Ivrstate, extra: &[&str]) -> Served {
    let cfg = t.path("ivr.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let a_log = t.path("a.log");
    if !a_log.exists() {
        append(
            &a_log,
            "Application name:\tTS_A\nLocal time:\t2015-08-17T08:00:00.000\n\n",
        );
    }
    let cfg_s = cfg.display().to_string();
    let a_s = a_log.display().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        &cfg_s,
        "--follow",
        &a_s,
    ];
    args.extend_from_slice(extra);
    let serve = t.spawn(&args);
    Served { t, serve, a_log }
}

#[test]
fn live_session_login_pushes_queries_and_isolation() {
    let mut s = start(ivrstate(), &["--feed-listen", "127.0.0.1:0"]);
    let gli_addr = s.serve.addr("gli");
    let feed_addr = s.serve.addr("feed");

    // Login outcomes.
    let mut ivr1 = Gli::connect(gli_addr);
    let resp = login_ok(&mut ivr1, "11", "IVR_1", true);
    assert_eq!(attr(&resp, "Result").as_deref(), Some("Success"), "{resp}");
    assert_eq!(
        attr(&resp, "IServerVer").as_deref(),
        Some("8.5.000.01"),
        "{resp}"
    );
    assert!(
        resp.contains("Name='Timeout'") && resp.contains("Val='30'"),
        "ConfigOptions: {resp}"
    );
    // ServerMonitor='set': the Server status of each used T-Server at once; TS_A never connected.
    let server = ivr1.recv_until("<Server");
    assert!(
        server.contains("Name='TS_A'") && server.contains("Status='Unavailable'"),
        "{server}"
    );
    assert!(
        server.contains("<CallId>11</CallId>"),
        "all messages carry the login CallId: {server}"
    );

    let mut other = Gli::connect(gli_addr);
    let resp = other.login("1", "NO_SUCH_IVR", "4.0", false);
    assert_eq!(
        attr(&resp, "Status").as_deref(),
        Some("NoSuchClient"),
        "{resp}"
    );
    let resp = other.login("2", "IVR_1", "5.0", false);
    assert_eq!(
        attr(&resp, "Result").as_deref(),
        Some("InvalidProtocolVer"),
        "{resp}"
    );

    let mut ivr2 = Gli::connect(gli_addr);
    login_ok(&mut ivr2, "22", "IVR_2", false);

    // Live events through --follow reach IVR_1 (stored first, then pushed) ...
    append(
        &s.a_log,
        &[
            printout("EventLinkConnected", 1, T0, None, ""),
            printout(
                "EventAgentLogin",
                2,
                T0 + 1,
                Some("7001"),
                "\tAttributeAgentID\t'1001'\n",
            ),
            printout(
                "EventAgentReady",
                3,
                T0 + 2,
                Some("7001"),
                "\tAttributeAgentID\t'1001'\n\tAttributeAgentWorkMode\t1 (ManualIn)\n",
            ),
        ]
        .concat(),
    );
    let up = ivr1.recv_until("<Server");
    assert!(
        up.contains("Status='OK'") && up.contains("Switch='SwitchA'"),
        "{up}"
    );
    let logged_in = ivr1.recv_until("<Agent");
    assert!(
        logged_in.contains("PortNum='01'") && logged_in.contains("Status='LoggedIn'"),
        "{logged_in}"
    );
    let ready = ivr1.recv_until("<Agent");
    assert!(
        ready.contains("PortNum='01'") && ready.contains("Status='Ready'"),
        "{ready}"
    );

    // ... and not IVR_2, whose first message is about its own T-Server, sent through the feed.
    let mut feed = TcpStream::connect(feed_addr).unwrap();
    let mut acks = BufReader::new(feed.try_clone().unwrap());
    let b = format!(
        "Application name:\tTS_B\n{}",
        printout("EventLinkConnected", 1, T0 + 3, None, "")
    );
    feed.write_all(b.as_bytes()).unwrap();
    let mut ack = String::new();
    acks.read_line(&mut ack).unwrap();
    assert_eq!(ack.trim(), r#"{"committed":1}"#);
    let first = ivr2.recv_xml();
    assert!(
        first.contains("<Server Name='TS_B'") && first.contains("Status='OK'"),
        "IVR_2 saw: {first}"
    );
    assert!(first.contains("<CallId>22</CallId>"), "{first}");

    // AgentQuery: answered from current state with the same ReqId; an unknown port is an error.
    ivr1.send("11", "<AgentQuery ReqId='5' PortNum='01'/>");
    let answer = ivr1.recv_until("ReqId='5'");
    assert!(
        answer.contains("<MonitorInfo ReqId='5'>") && answer.contains("Status='Ready'"),
        "{answer}"
    );
    ivr1.send("11", "<AgentQuery ReqId='6' PortNum='99'/>");
    let error = ivr1.recv_until("ReqId='6'");
    assert!(error.contains("<CallError"), "{error}");
    // Agent control cannot be carried out (no switch link): CallError AgentControl, recorded.
    ivr1.send(
        "11",
        "<AgentNotReady ReqId='7' PortNum='01' Queue='8001' WorkMode='ManualIn'/>",
    );
    let refused = ivr1.recv_until("ReqId='7'");
    assert!(refused.contains("FailedReq='AgentControl'"), "{refused}");

    // Keep-alive.
    ivr1.send_raw(&frame(KEEPALIVE_REQUEST, b""));
    let (kind, _) = wait_for("a keep-alive response", || {
        ivr1.recv_frame().filter(|(k, _)| *k != 3)
    });
    assert_eq!(kind, KEEPALIVE_RESPONSE);

    // A hostile client gets an Error frame and is closed; the good client is undisturbed.
    let mut hostile = Gli::connect(gli_addr);
    hostile.send_raw(b"\x07\x07GET / HTTP/1.1\r\n\r\n");
    let (kind, _) = hostile
        .recv_frame()
        .expect("an Error frame before the close");
    assert_eq!(kind, ERROR);
    assert!(hostile.closed());
    ivr1.send("11", "<AgentQuery ReqId='8' PortNum='01'/>");
    assert!(ivr1.recv_until("ReqId='8'").contains("Status='Ready'"));

    // The feed acknowledges each batch with the running count.
    let more = printout(
        "EventAgentLogin",
        2,
        T0 + 4,
        Some("7001"),
        "\tAttributeAgentID\t'2001'\n",
    );
    feed.write_all(more.as_bytes()).unwrap();
    ack.clear();
    acks.read_line(&mut ack).unwrap();
    assert_eq!(ack.trim(), r#"{"committed":2}"#);
    let pushed = ivr2.recv_until("<Agent");
    assert!(
        pushed.contains("PortNum='01'") && pushed.contains("Status='LoggedIn'"),
        "{pushed}"
    );

    // SIGTERM: clean exit; a restart keeps the state (and the recorded request).
    let status = s.serve.terminate();
    assert!(status.success(), "serve exited with {status}");
    let status = s.t.json(&["status", "--json"]);
    let agents = status["agents"].as_array().unwrap();
    assert!(
        agents
            .iter()
            .any(|a| a["tserver"] == "TS_A" && a["dn"] == "7001" && a["status"] == "Ready"),
        "{status}"
    );
    let exported = s.t.ok(&["export"]);
    assert!(
        exported.contains("AgentNotReady"),
        "the refused request is in the log for audit"
    );

    let mut again = start(s.t, &[]);
    let addr = again.serve.addr("gli");
    let mut ivr1 = Gli::connect(addr);
    login_ok(&mut ivr1, "3", "IVR_1", false);
    ivr1.send("3", "<AgentQuery ReqId='9' PortNum='01'/>");
    assert!(ivr1.recv_until("ReqId='9'").contains("Status='Ready'"));
    assert!(again.serve.terminate().success());
}

#[test]
fn agent_query_answers_unknown_while_the_link_is_down() {
    let mut s = start(ivrstate(), &[]);
    let addr = s.serve.addr("gli");
    append(
        &s.a_log,
        &[
            printout("EventLinkConnected", 1, T0, None, ""),
            printout(
                "EventAgentLogin",
                2,
                T0 + 1,
                Some("7002"),
                "\tAttributeAgentID\t'1002'\n",
            ),
            printout(
                "EventAgentNotReady",
                3,
                T0 + 2,
                Some("7002"),
                "\tAttributeAgentWorkMode\t3 (AfterCallWork)\n",
            ),
        ]
        .concat(),
    );
    let mut gli = Gli::connect(addr);
    login_ok(&mut gli, "1", "IVR_1", false);
    // Unknown is also the answer before anything is folded (no link yet): first see the agent,
    // then take the link down.
    wait_for("the agent's state to be folded", || {
        gli.send("1", "<AgentQuery ReqId='1' PortNum='02'/>");
        gli.recv_until("ReqId='1'")
            .contains("Status='NotReady'")
            .then_some(())
    });
    append(
        &s.a_log,
        &printout("EventLinkDisconnected", 4, T0 + 3, None, ""),
    );
    let answer = wait_for("the link-down to be folded", || {
        gli.send("1", "<AgentQuery ReqId='1' PortNum='02'/>");
        let a = gli.recv_until("ReqId='1'");
        a.contains("Status='Unknown'").then_some(a)
    });
    assert!(answer.contains("PortNum='02'"), "{answer}");
    // The stored state keeps the agent's status: only the query answers Unknown.
    assert!(s.serve.terminate().success());
    let status = s.t.json(&["status", "--json"]);
    let agent = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dn"] == "7002")
        .cloned()
        .unwrap();
    assert_eq!(agent["status"], "NotReady", "{status}");
}

#[test]
fn replay_re_emits_a_window_as_xml_and_to_gli_clients() {
    let t = ivrstate();
    let cfg = t.path("ivr.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    t.ok(&[
        "config",
        "apply",
        "--effective",
        "2015-08-17T00:00:00Z",
        cfg.to_str().unwrap(),
    ]);
    let log = [
        "Application name:\tTS_A\n".to_owned(),
        printout("EventLinkConnected", 1, T0, None, ""),
        printout(
            "EventAgentLogin",
            2,
            T0 + 10,
            Some("7001"),
            "\tAttributeAgentID\t'1001'\n",
        ),
        printout("EventAgentReady", 3, T0 + 20, Some("7001"), ""),
        printout(
            "EventAgentNotReady",
            4,
            T0 + 30,
            Some("7001"),
            "\tAttributeReasons\t[10] 00\n\t\t'ReasonCode'\t'Break'\n",
        ),
        printout("EventAgentLogout", 5, T0 + 40, Some("7001"), ""),
    ]
    .concat();
    let path = t.path("a.log");
    std::fs::write(&path, log).unwrap();
    t.ok(&["ingest", path.to_str().unwrap()]);

    let xml = t.ok(&[
        "replay",
        "--from",
        "2015-08-17T08:00:15Z",
        "--to",
        "2015-08-17T08:00:35Z",
        "--max",
        "--xml",
    ]);
    let lines: Vec<&str> = xml.lines().collect();
    assert_eq!(lines.len(), 2, "Ready and NotReady, for IVR_1 only: {xml}");
    assert!(
        lines[0].contains("IVR_1") && lines[0].contains("<Agent PortNum='01' Status='Ready'/>"),
        "{xml}"
    );
    assert!(lines[1].contains("Status='NotReady'"), "{xml}");
    assert!(lines
        .iter()
        .all(|l| l.contains("<GctiMsg>") && l.ends_with("</GctiMsg>")));

    // The same window to a GLI client: it logs in, sees the state at --from, then the pushes.
    let mut replay = t.spawn(&[
        "replay",
        "--from",
        "2015-08-17T08:00:15Z",
        "--max",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = replay.addr("gli");
    let mut gli = Gli::connect(addr);
    login_ok(&mut gli, "4", "IVR_1", false);
    gli.send("4", "<AgentQuery ReqId='1' PortNum='01'/>");
    let first = gli.recv_xml();
    // Either the answer (state at --from: LoggedIn) or the first push (Ready) comes first.
    assert!(
        first.contains("Status='LoggedIn'") || first.contains("Status='Ready'"),
        "{first}"
    );
    let mut seen = vec![first];
    while !seen.iter().any(|m| m.contains("Status='LoggedOut'")) {
        seen.push(gli.recv_xml());
    }
    let order: Vec<&str> = seen
        .iter()
        .filter(|m| !m.contains("ReqId"))
        .map(|m| attr(m, "Status").unwrap_or_default().leak() as &str)
        .collect();
    assert_eq!(order, ["Ready", "NotReady", "LoggedOut"], "{seen:?}");
    drop(replay);
}

#[test]
fn only_allowed_clients_log_in() {
    let mut s = start(ivrstate(), &["--allow", "IVR_2"]);
    let addr = s.serve.addr("gli");
    let mut ok = Gli::connect(addr);
    login_ok(&mut ok, "1", "IVR_2", false);
    let mut refused = Gli::connect(addr);
    let resp = refused.login("2", "IVR_1", "4.0", false);
    assert_eq!(
        attr(&resp, "Status").as_deref(),
        Some("NoSuchClient"),
        "{resp}"
    );
    assert!(refused.closed(), "a client not on the list is disconnected");
    assert!(s.serve.terminate().success());
}

#[test]
fn gli_over_tls_with_a_real_tls_client() {
    use rustls::pki_types::ServerName;
    use std::io::Read;
    use std::sync::Arc;
    let t = ivrstate();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (t.path("cert.pem"), t.path("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut s = start(t, &["--tls-cert", &cert_s, "--tls-key", &key_s]);
    let addr = s.serve.addr("gli");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(ivrstate_tests::DEADLINE))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let status = wait_for("a TLS login answered OK", || {
        let login = ivrstate_tests::gcti("5", "<LoginReq Version='4.0' ClientName='IVR_1'/>");
        tls.write_all(&frame(3, login.as_bytes())).unwrap();
        let mut header = [0u8; 6];
        tls.read_exact(&mut header).unwrap();
        let len = u16::from_be_bytes([header[2], header[3]]) as usize - 2;
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body).unwrap();
        let xml: String = body.iter().map(|&b| b as char).collect();
        attr(&xml, "Status").filter(|s| s == "OK")
    });
    assert_eq!(status, "OK");
    drop(tls);

    // A missing key file is one clear error naming it.
    let out = s.t.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert_s,
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key.pem"));
    assert!(s.serve.terminate().success());
}

/// The T-Server socket closed: a feed connection that carried TS_B's events closes, and the
/// IVR that uses TS_B hears it Unavailable; a new connection's EventLinkConnected brings it back.
#[test]
fn a_closed_feed_socket_makes_its_tserver_unavailable() {
    let mut s = start(ivrstate(), &["--feed-listen", "127.0.0.1:0"]);
    let gli_addr = s.serve.addr("gli");
    let feed_addr = s.serve.addr("feed");
    let mut ivr2 = Gli::connect(gli_addr);
    login_ok(&mut ivr2, "22", "IVR_2", true);
    let never = ivr2.recv_until("<Server");
    assert!(
        never.contains("Name='TS_B'") && never.contains("Status='Unavailable'"),
        "{never}"
    );

    let connect_and_link_up = |seq: u64| {
        let mut feed = TcpStream::connect(feed_addr).unwrap();
        feed.set_read_timeout(Some(ivrstate_tests::DEADLINE))
            .unwrap();
        let text = format!(
            "Application name:\tTS_B\n\n{}",
            printout("EventLinkConnected", seq, T0 + seq, None, "")
        );
        feed.write_all(text.as_bytes()).unwrap();
        let mut ack = String::new();
        BufReader::new(feed.try_clone().unwrap())
            .read_line(&mut ack)
            .unwrap();
        assert!(ack.contains("\"committed\":1"), "{ack}");
        feed
    };
    let feed = connect_and_link_up(1);
    let up = ivr2.recv_until("<Server");
    assert!(
        up.contains("Name='TS_B'") && up.contains("Status='OK'"),
        "{up}"
    );

    drop(feed);
    let down = ivr2.recv_until("<Server");
    assert!(
        down.contains("Name='TS_B'") && down.contains("Status='Unavailable'"),
        "{down}"
    );
    assert!(
        down.contains("<CallId>22</CallId>"),
        "pushes keep the login's CallId: {down}"
    );

    // A new connection's EventLinkConnected brings it back.
    let _feed = connect_and_link_up(2);
    let again = ivr2.recv_until("<Server");
    assert!(again.contains("Status='OK'"), "{again}");
    assert!(s.serve.terminate().success());

    // The audit trail tells the socket closing apart from EventLinkDisconnected.
    let events = ivrstate_tests::exported_events(&s.t);
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|e| e["event"]["TLib"]["kind"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        kinds,
        ["LinkConnected", "SocketClosed", "LinkConnected"],
        "{events:?}"
    );
}
