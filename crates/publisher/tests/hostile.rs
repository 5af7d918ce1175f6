//! Hostile clients over real loopback TCP, next to a well-behaved one that must still be
//! served. Every wait has a deadline; nothing sleeps and hopes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

mod common;

use common::*;
use ivrstate_model::{AgentStatus, Availability, IvrName};
use ivrstate_publisher::frame::{encode_frame, Frame, FrameKind, MAX_FRAME_LEN};
use ivrstate_publisher::session::{ERROR_BAD_FRAME, ERROR_BAD_XML};
use ivrstate_publisher::xml::{self, GctiMsg, LoginStatus, Message};
use ivrstate_publisher::{Change, HubConfig, MonitorInfo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A deterministic stream of junk for garbage client `i`: random bytes, an HTTP request,
/// frames with bad XML, frames cut short, lengths over the limit.
fn garbage(i: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ i.wrapping_mul(0x85eb_ca6b);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    match i % 5 {
        0 => (0..1 + rnd() % 3000).map(|_| rnd() as u8).collect(),
        1 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        2 => encode_frame(FrameKind::Data, b"<GctiMsg><CallId>1</CallId><LoginReq").unwrap(),
        3 => {
            // A valid header promising more than is ever sent.
            let mut f = encode_frame(FrameKind::Data, &[b'x'; 500]).unwrap();
            f.truncate(6 + (rnd() % 400) as usize);
            f
        }
        _ => vec![0, 3, 0xff, 0xfd, 2, 0],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_garbage_clients_beside_a_good_one() {
    const N: u32 = 300;
    let cfg = HubConfig {
        login_timeout: Duration::from_millis(500),
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // The server may close before everything is written: that is its right.
            let _ = s.write_all(&garbage(i)).await;
            // Read until the server closes (an Error frame, or the login timeout).
            let mut buf = [0u8; 512];
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        }));
    }
    // The good client, meanwhile, logs in and is answered.
    let mut good = Client::connect(srv.addr).await;
    assert_eq!(
        status_of(&good.login("1", "IVR_1", false).await),
        Some(LoginStatus::Ok)
    );
    good.send(
        "1",
        Message::AgentQuery {
            req_id: "9".into(),
            port: "01".into(),
        },
    )
    .await;
    assert_eq!(
        good.msg().await.msg,
        Message::MonitorInfo {
            req_id: Some("9".into()),
            info: MonitorInfo::Agent {
                port: "01".into(),
                status: AgentStatus::Ready
            }
        }
    );
    // Every garbage client was closed; what it got before was at most one Error frame.
    for (i, t) in tasks.into_iter().enumerate() {
        let got = with_deadline(t).await.unwrap();
        let mut d = ivrstate_publisher::frame::FrameDecoder::new();
        d.push(&got);
        let frames: Vec<Frame> = std::iter::from_fn(|| d.next_frame())
            .map(|f| f.unwrap())
            .collect();
        match i % 5 {
            // Cut-short frames wait for more bytes and are closed by the login timeout.
            3 => assert!(frames.is_empty(), "client {i}: {frames:?}"),
            2 => assert_eq!(
                frames,
                vec![Frame::new(FrameKind::Error, vec![ERROR_BAD_XML])]
            ),
            1 | 4 => assert_eq!(
                frames,
                vec![Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME])],
                "client {i}"
            ),
            // Random bytes: refused at once, or (rarely) a prefix of a frame that times out.
            _ => assert!(frames.len() <= 1, "client {i}: {frames:?}"),
        }
    }
    wait_for("the garbage connections to close", || {
        srv.hub.metrics().connected == 1
    })
    .await;
    // The good client is still served.
    srv.hub
        .publish(&[agent("IVR_1", "02", AgentStatus::NotReady)]);
    assert!(matches!(
        good.msg().await.msg,
        Message::MonitorInfo { req_id: None, .. }
    ));
}

#[tokio::test]
async fn half_sent_frames_are_completed_across_writes_or_closed_by_the_login_timeout() {
    let cfg = HubConfig {
        login_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let login = encode_frame(
        FrameKind::Data,
        &xml::encode(&GctiMsg {
            call_id: "5".into(),
            msg: Message::LoginReq {
                version: "4.0".into(),
                client_name: "IVR_2".into(),
                report_status: None,
                server_monitor: false,
            },
        }),
    )
    .unwrap();

    // Byte by byte, flushed one at a time: the decoder keeps the partial frame.
    let mut slow = Client::connect(srv.addr).await;
    for b in &login {
        slow.s.write_all(std::slice::from_ref(b)).await.unwrap();
        slow.s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let m = slow.msg().await;
    assert_eq!(status_of(&m), Some(LoginStatus::Ok));
    assert!(matches!(slow.msg().await.msg, Message::FlowControl { .. }));

    // Half a frame and then nothing: closed at the login timeout, without an answer.
    let mut stuck = Client::connect(srv.addr).await;
    stuck.s.write_all(&login[..login.len() / 2]).await.unwrap();
    assert_eq!(stuck.next().await, None);

    // After logging in there is no login timeout: a half frame then waits for its rest.
    slow.s.write_all(&login[..7]).await.unwrap();
    slow.s.flush().await.unwrap();
    wait_for("the stuck client to be closed", || {
        srv.hub.metrics().connected == 1
    })
    .await;
    slow.s.write_all(&login[7..]).await.unwrap();
    assert_eq!(status_of(&slow.msg().await), Some(LoginStatus::Ok));
}

#[tokio::test]
async fn declared_length_over_64_kib_is_refused_from_the_header_the_largest_frame_is_read() {
    let srv = start(HubConfig::default(), true).await;
    // The largest frame the protocol allows (64 KiB in all) is read whole: its body is not a
    // GctiMsg, so it is answered as bad XML, not as a bad frame.
    let body = vec![b'x'; MAX_FRAME_LEN - 6];
    let frame = encode_frame(FrameKind::Data, &body).unwrap();
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(&frame).await.unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_XML]))
    );
    assert_eq!(c.next().await, None);

    // One byte more is refused as soon as the length field arrives, before any body.
    let declared = (MAX_FRAME_LEN - 4 + 1) as u16;
    let mut c = Client::connect(srv.addr).await;
    let mut header = vec![0, 3];
    header.extend_from_slice(&declared.to_be_bytes());
    c.s.write_all(&header).await.unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME]))
    );
    assert_eq!(c.next().await, None);

    // Declared 0xffff with a body that keeps coming: refused, and the server stops reading.
    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(&[0, 3, 0xff, 0xff, 2, 0]).await.unwrap();
    let _ = c.s.write_all(&[b'y'; 100_000]).await;
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_are_dropped_while_a_good_one_gets_every_change() {
    const BAD: usize = 10;
    const CAPACITY: usize = 16;
    let cfg = HubConfig {
        queue_capacity: CAPACITY,
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut bad = Vec::new();
    for _ in 0..BAD {
        let mut c = Client::connect(srv.addr).await;
        c.login("1", "IVR_1", false).await;
        bad.push(c); // and never read again
    }
    let mut good = Client::connect(srv.addr).await;
    good.login("g", "IVR_1", false).await;

    // The good client reads in its own task and reports what it has received, in order.
    let (count_tx, count_rx) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(f) = good.next().await {
            let m = xml::decode(&f.body).unwrap();
            let Message::MonitorInfo {
                info: MonitorInfo::Server { name, .. },
                ..
            } = m.msg
            else {
                panic!("unexpected {m:?}");
            };
            assert_eq!(m.call_id, "g");
            // Changes arrive in the order they were published, none missing.
            assert!(name.as_str().ends_with(&format!("#{n}")), "{name} at {n}");
            n += 1;
            count_tx.send_replace(n);
        }
    });

    // Thousands of changes, each big enough that a few hundred fill a socket's buffers. Each
    // batch is smaller than the queue and waits for the good client, so only the clients
    // that never read can fall behind.
    let pad = "P".repeat(2000);
    let mut sent = 0u64;
    let batch = (CAPACITY / 2) as u64;
    while sent < 4000 || srv.hub.metrics().queue_drops < BAD as u64 {
        assert!(sent < 200_000, "the silent clients were never dropped");
        let changes: Vec<Change> = (sent..sent + batch)
            .map(|i| Change {
                ivr: IvrName::from("IVR_1"),
                info: MonitorInfo::Server {
                    name: format!("{pad}#{i}").into(),
                    status: Availability::Ok,
                    switch: None,
                },
            })
            .collect();
        srv.hub.publish(&changes);
        sent += batch;
        let mut rx = count_rx.clone();
        with_deadline(rx.wait_for(|n| *n >= sent)).await.unwrap();
    }
    let m = srv.hub.metrics();
    assert_eq!(m.queue_drops, BAD as u64, "each silent client dropped once");
    wait_for("the silent clients to be unregistered", || {
        srv.hub.metrics().logged_in == vec![(IvrName::from("IVR_1"), 1)]
            && srv.hub.metrics().connected == 1
    })
    .await;
    drop(bad);
    reader.abort();
}

#[tokio::test]
async fn a_client_name_not_on_the_allow_list_is_refused_and_closed() {
    let cfg = HubConfig {
        allowed_clients: Some(vec![IvrName::from("IVR_1")]),
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    // IVR_2 is configured, but not allowed.
    let mut refused = Client::connect(srv.addr).await;
    let m = refused.login("1", "IVR_2", true).await;
    assert_eq!(status_of(&m), Some(LoginStatus::NoSuchClient));
    assert_eq!(refused.next().await, None, "closed after the answer");
    // Pushes for IVR_2 reach no one.
    srv.hub.publish(&[agent("IVR_2", "01", AgentStatus::Ready)]);
    let mut ok = Client::connect(srv.addr).await;
    assert_eq!(
        status_of(&ok.login("1", "IVR_1", false).await),
        Some(LoginStatus::Ok)
    );
    assert_eq!(
        srv.hub.metrics().logged_in,
        vec![(IvrName::from("IVR_1"), 1)]
    );
}

#[tokio::test]
async fn the_error_frame_arrives_even_when_the_client_sent_more_than_was_read() {
    let srv = start(HubConfig::default(), true).await;
    for _ in 0..20 {
        let mut c = Client::connect(srv.addr).await;
        // Far more than one read: the server refuses at the first byte with bytes unread.
        c.s.write_all(&[b'G'; 50_000]).await.unwrap();
        assert_eq!(
            c.next().await,
            Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME]))
        );
    }
}
