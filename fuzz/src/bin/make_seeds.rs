//! Writes small valid inputs into `corpus/<target>/` for each fuzz target to start from:
//! simulated T-Server logs, their NDJSON export, GctiMsg documents and whole GLI sessions.
//! Run from `fuzz/`: `cargo run --bin make-seeds`.

use ivrstate_ingest::parse::{write_ndjson, Parsed, TlogReader};
use ivrstate_simulate::{simulate, SimConfig};
use ivrstate_model::{Micros, Record};
use ivrstate_publisher::frame::{encode_frame, FrameKind};
use ivrstate_publisher::xml::{encode, AgentControl, GctiMsg, Message};
use ivrstate_publisher::MonitorInfo;
use std::fs;
use std::path::Path;

fn put(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)
}

fn doc(call_id: &str, msg: Message) -> Vec<u8> {
    encode(&GctiMsg {
        call_id: call_id.into(),
        msg,
    })
}

fn data(call_id: &str, msg: Message) -> Vec<u8> {
    encode_frame(FrameKind::Data, &doc(call_id, msg)).expect("small")
}

fn login(name: &str) -> Message {
    Message::LoginReq {
        version: "4.0".into(),
        client_name: name.into(),
        report_status: Some(true),
        server_monitor: true,
    }
}

fn control(req: &str, port: &str) -> AgentControl {
    AgentControl {
        req_id: req.into(),
        port: port.into(),
        attributes: vec![
            ("Password".into(), "pw".into()),
            ("Queue".into(), "q".into()),
        ],
    }
}

fn main() -> std::io::Result<()> {
    // T-Server logs and their NDJSON export.
    for (i, (agents, events)) in [(2, 10), (5, 40), (20, 150)].into_iter().enumerate() {
        let mut log = Vec::new();
        simulate(
            SimConfig {
                agents,
                events,
                seed: i as u64 + 1,
                ..SimConfig::default()
            },
            &mut log,
        )?;
        put("tlog", &format!("sim-{i}"), &log)?;
        let mut nd = Vec::new();
        let reader = TlogReader::new(&log[..], "sim", None, Micros::from_secs(1_700_000_000));
        for (seq, item) in reader.enumerate() {
            if let Parsed::Event { envelope, .. } = item {
                write_ndjson(
                    &mut nd,
                    &Record {
                        seq: seq as u64 + 1,
                        envelope,
                    },
                )?;
            }
        }
        put("ndjson", &format!("sim-{i}"), &nd)?;
    }

    // GctiMsg documents, one per message kind, and the protocol's own spelling.
    let msgs = vec![
        login("IVR_1"),
        Message::AgentQuery {
            req_id: "42".into(),
            port: "01".into(),
        },
        Message::AgentLogin(control("5", "01")),
        Message::AgentReady(control("6", "02")),
        Message::LogMsg {
            attributes: vec![("Text".into(), "a&b <c>".into())],
        },
        Message::MonitorInfo {
            req_id: Some("9".into()),
            info: MonitorInfo::Agent {
                port: "01".into(),
                status: ivrstate_model::AgentStatus::Ready,
            },
        },
        Message::CallError {
            failed_req: "AgentControl".into(),
            tlib_err_code: Some("50".into()),
            req_id: Some("7".into()),
        },
        Message::Reset,
        Message::FlowControl {
            status: Some("on".into()),
        },
    ];
    for (i, m) in msgs.iter().enumerate() {
        put("xml", &format!("msg-{i}"), &doc("1", m.clone()))?;
    }
    put(
        "xml",
        "protocol-example",
        b"<?xml version='1.0' encoding='iso-8859-1'?><!DOCTYPE GctiMsg SYSTEM 'IServer.dtd'>\
<GctiMsg><CallId>1</CallId><LoginReq Version='4.0' ClientName='IVR_1' ReportStatus='true' ServerMonitor='set'/></GctiMsg>",
    )?;

    // Frame streams (first byte: the chunking seed) and sessions (first byte: flags).
    let keep_alive = encode_frame(FrameKind::KeepAliveRequest, b"").expect("small");
    let mut session = data("1", login("IVR_1"));
    session.extend(data(
        "1",
        Message::AgentQuery {
            req_id: "42".into(),
            port: "01".into(),
        },
    ));
    session.extend(data(
        "1",
        Message::AgentQuery {
            req_id: "43".into(),
            port: "03".into(),
        },
    ));
    session.extend(&keep_alive);
    session.extend(data("1", Message::AgentNotReady(control("8", "02"))));
    session.extend(data(
        "1",
        Message::LogMsg {
            attributes: vec![("Text".into(), "hi".into())],
        },
    ));
    session.extend(data("2", login("IVR_2")));
    session.extend(data(
        "2",
        Message::AgentQuery {
            req_id: "44".into(),
            port: "01".into(),
        },
    ));
    session.extend(data("3", login("IVR_9")));
    for flags in [0u8, 2, 1, 0x50] {
        let mut s = vec![flags];
        s.extend(&session);
        put("session", &format!("session-{flags}"), &s)?;
        put("frame", &format!("stream-{flags}"), &s)?;
    }
    let mut bad = vec![0u8];
    bad.extend(&keep_alive);
    bad.extend([0, 3, 0xff, 0xff, 2, 0]);
    put("frame", "too-long", &bad)?;
    Ok(())
}
