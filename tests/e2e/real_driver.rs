//! A real IVR driver's traffic, replayed against the real binary over a real socket.
//!
//! The driver's own logs of a session with a Genesys IVR Server 8.1 (`../shared/real/`, see its
//! `SOURCES.md`; the files are read where they are and never copied into the repository) hold
//! every document it sent, byte for byte, after `XmlData:(N)`. Each one is sent here as it was:
//! double-quoted attributes, a DOCTYPE with double quotes, newlines between the prolog and the
//! GctiMsg, `<LoginReq ...></LoginReq>`, child elements and `<UDataEx><Node .../></UDataEx>`.
//! Every LoginReq must get its LoginResp and `FlowControl Status='Off'` on its CallId, and each
//! call-control request (a new CallId per call) a `CallError` naming it, on its own CallId,
//! with the connection kept open.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{attr, frame, real_captures, wait_for, Gli, Ivrstate, DATA};
use std::path::PathBuf;

const CONFIG: &str = r#"
[[tserver]]
name = "TS_A"

[[ivr]]
name = "IAdapter1"
tservers = ["TS_A"]

[[ivr.port]]
num = "01"
dn = "3001"
"#;

/// The driver logs, when present.
fn driver_logs() -> Option<Vec<PathBuf>> {
    let dir = real_captures()?;
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("github-nicechangs") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    (!logs.is_empty()).then_some(logs)
}

/// The documents the driver sent, in order: `XmlData:(N)` followed by N bytes that start with
/// the driver's double-quoted prolog (what it received is single-quoted).
fn sent_documents(log: &[u8]) -> Vec<Vec<u8>> {
    let marker = b"XmlData:(";
    let mut docs = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&log[at..], marker) {
        let start = at + i + marker.len();
        let Some(close) = log[start..].iter().position(|&b| b == b')') else {
            break;
        };
        let len: usize = std::str::from_utf8(&log[start..start + close])
            .unwrap()
            .parse()
            .unwrap();
        let body = start + close + 1;
        let doc = &log[body..(body + len).min(log.len())];
        if doc.starts_with(b"<?xml version=\"") {
            docs.push(doc.to_vec());
        }
        at = body;
    }
    docs
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// (CallId, element name) of a document.
fn call_id_and_request(doc: &str) -> (String, String) {
    let call_id = doc
        .split("<CallId>")
        .nth(1)
        .and_then(|r| r.split("</CallId>").next())
        .unwrap()
        .to_owned();
    let element = doc
        .split("</CallId><")
        .nth(1)
        .unwrap()
        .split([' ', '>', '/'])
        .next()
        .unwrap()
        .to_owned();
    (call_id, element)
}

#[test]
fn a_real_drivers_requests_are_each_answered_on_their_own_call_id() {
    let Some(logs) = driver_logs() else {
        println!("skipped: no real IVR driver logs in ../shared/real (see SOURCES.md there)");
        return;
    };
    let docs: Vec<Vec<u8>> = logs
        .iter()
        .flat_map(|p| sent_documents(&std::fs::read(p).unwrap()))
        .collect();
    assert!(
        docs.len() > 20,
        "found only {} driver documents",
        docs.len()
    );

    let t = Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"));
    let cfg = t.path("ivr.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let cfg_s = cfg.display().to_string();
    let mut serve = t.spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &cfg_s]);
    let addr = serve.addr("gli");
    let mut gli = Gli::connect(addr);

    let (mut logins, mut refused) = (0, 0);
    for doc in &docs {
        let text: String = doc.iter().map(|&b| b as char).collect();
        let (call_id, request) = call_id_and_request(&text);
        let on_its_call_id = format!("<CallId>{call_id}</CallId>");
        if request == "LoginReq" {
            // Retry while the store opens (InitInProgress), as the driver does on reconnect.
            let resp = wait_for("a LoginResp OK", || {
                gli.send_raw(&frame(DATA, doc));
                let resp = gli.recv_until("LoginResp");
                let flow = gli.recv_xml();
                assert!(flow.contains(&on_its_call_id), "{flow}");
                assert!(flow.contains("<FlowControl Status='Off'/>"), "{flow}");
                (attr(&resp, "Status").as_deref() == Some("OK")).then_some(resp)
            });
            assert!(resp.contains(&on_its_call_id), "{resp}");
            logins += 1;
        } else {
            gli.send_raw(&frame(DATA, doc));
            let answer = gli.recv_xml();
            assert!(
                answer.contains(&on_its_call_id),
                "{request} answered on another CallId: {answer}"
            );
            assert!(answer.contains("<CallError"), "{request}: {answer}");
            assert_eq!(
                attr(&answer, "FailedReq").as_deref(),
                Some(request.as_str()),
                "{answer}"
            );
            refused += 1;
        }
    }
    assert!(
        logins >= 2 && refused >= 20,
        "{logins} logins, {refused} requests"
    );
    // The connection is still open and answers.
    gli.send_raw(&frame(ivrstate_tests::KEEPALIVE_REQUEST, b""));
    let (kind, _) = gli.recv_frame().expect("still open");
    assert_eq!(kind, ivrstate_tests::KEEPALIVE_RESPONSE);
    assert!(serve.terminate().success());
}
