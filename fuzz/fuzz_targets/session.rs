//! The session state machine fed the frames decoded from arbitrary bytes (cut into arbitrary
//! chunks), against a small projection State. Checks what a client may see: every frame sent
//! is whole and decodable, a login lands only on a configured (and allowed) IVR, and an
//! AgentQuery is answered only for a port of the client's own IVR.
#![no_main]

use ivrstate_fuzz::{chunks, small_state};
use ivrstate_model::IvrName;
use ivrstate_publisher::frame::{FrameDecoder, FrameKind};
use ivrstate_publisher::session::{Session, SessionEvent, Timers};
use ivrstate_publisher::xml::{self, Message};
use ivrstate_publisher::MonitorInfo;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

fn state() -> &'static ivrstate_projection::State {
    static STATE: OnceLock<ivrstate_projection::State> = OnceLock::new();
    STATE.get_or_init(small_state)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let st = state();
    let ready = flags & 1 == 0;
    let allowed: Option<Arc<HashSet<IvrName>>> =
        (flags & 2 != 0).then(|| Arc::new([IvrName::from("IVR_1")].into_iter().collect()));
    let now = std::time::Instant::now();
    let mut session =
        Session::new("127.0.0.1:1", now, Timers::default()).with_allowed_clients(allowed.clone());
    // Byte by byte: every frame is handled alone, so what it caused is checked against the
    // login it saw.
    for byte in chunks(flags >> 2, stream).into_iter().flatten() {
        session.handle_bytes(now, std::slice::from_ref(byte), st, ready);
        if let Some(ivr) = session.logged_in_ivr() {
            assert!(ready, "logged in while not ready");
            assert!(st.ivr(ivr).is_some(), "logged in to an unknown IVR {ivr}");
            if let Some(a) = &allowed {
                assert!(a.contains(ivr), "logged in to {ivr}, not on the allow-list");
            }
        }
        while let Some(bytes) = session.poll_transmit() {
            check_sent(&bytes, &session, st);
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Record(r) => assert_eq!(Some(&r.ivr), session.logged_in_ivr()),
                SessionEvent::Close { .. } => return,
            }
        }
    }
});

/// One whole frame; a Data frame holds a document our own decoder reads; an AgentQuery answer
/// names a port of the logged-in IVR only.
fn check_sent(bytes: &[u8], session: &Session, st: &ivrstate_projection::State) {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let frame = d
        .next_frame()
        .expect("a whole frame")
        .expect("a valid frame");
    assert_eq!(d.buffered(), 0, "one frame per Send");
    if frame.kind != FrameKind::Data {
        return;
    }
    let msg = xml::decode(&frame.body).unwrap_or_else(|e| {
        panic!(
            "sent a document we refuse: {e}\n{}",
            String::from_utf8_lossy(&frame.body)
        )
    });
    if let Message::MonitorInfo {
        req_id: Some(_),
        info: MonitorInfo::Agent { port, .. },
    } = &msg.msg
    {
        let ivr = session.logged_in_ivr().expect("answers only after login");
        assert!(
            st.agent_query(ivr.as_str(), port.as_str()).is_some(),
            "answered about port {port} not of {ivr}"
        );
    }
}
