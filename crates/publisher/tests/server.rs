//! The server over real loopback TCP. Every wait has a deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

mod common;

use common::*;
use ivrstate_model::{AgentStatus, Availability, ConfigOption, ConfigValue, IvrName};
use ivrstate_publisher::frame::{encode_frame, Frame, FrameKind};
use ivrstate_publisher::session::{ERROR_BAD_FRAME, ERROR_BAD_XML};
use ivrstate_publisher::xml::{self, GctiMsg, LoginResult, LoginStatus, Message};
use ivrstate_publisher::{Change, HubConfig, MonitorInfo};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

#[tokio::test]
async fn login_outcomes() {
    let srv = start(HubConfig::default(), true).await;
    let mut c = Client::connect(srv.addr).await;
    let m = c.login("1", "IVR_1", false).await;
    assert_eq!(m.call_id, "1");
    assert_eq!(
        m.msg,
        Message::LoginResp {
            version: "8.5.000.01".into(),
            result: LoginResult::Success,
            status: Some(LoginStatus::Ok),
            config_options: Some(vec![ConfigOption {
                name: "Timeout".into(),
                value: ConfigValue::Str("30".into())
            }]),
        }
    );
    assert_eq!(
        status_of(&c.login("2", "IVR_X", false).await),
        Some(LoginStatus::NoSuchClient)
    );
    c.send(
        "3",
        Message::LoginReq {
            version: "9.0".into(),
            client_name: "IVR_1".into(),
            report_status: None,
            server_monitor: false,
        },
    )
    .await;
    assert!(matches!(
        c.msg().await.msg,
        Message::LoginResp {
            result: LoginResult::InvalidProtocolVer,
            ..
        }
    ));

    srv.hub.set_ready(false);
    assert_eq!(
        status_of(&c.login("4", "IVR_1", false).await),
        Some(LoginStatus::InitInProgress)
    );
    srv.hub.set_ready(true);
    assert_eq!(
        status_of(&c.login("5", "IVR_1", false).await),
        Some(LoginStatus::Ok)
    );
}

#[tokio::test]
async fn server_monitor_pushes_used_tservers() {
    let srv = start(HubConfig::default(), true).await;
    let mut c = Client::connect(srv.addr).await;
    c.login("1", "IVR_2", true).await;
    assert_eq!(
        c.msg().await,
        GctiMsg {
            call_id: "1".into(),
            msg: Message::MonitorInfo {
                req_id: None,
                info: MonitorInfo::Server {
                    name: "TS_2".into(),
                    status: Availability::Ok,
                    switch: None
                }
            }
        }
    );
}

#[tokio::test]
async fn publish_goes_only_to_the_ivrs_clients_with_their_call_id() {
    let srv = start(HubConfig::default(), true).await;
    let mut a = Client::connect(srv.addr).await;
    let mut b = Client::connect(srv.addr).await;
    let mut idle = Client::connect(srv.addr).await; // never logs in: gets nothing
    a.login("A1", "IVR_1", false).await;
    b.login("B1", "IVR_2", false).await;
    srv.hub.publish(&[
        agent("IVR_1", "01", AgentStatus::NotReady),
        agent("IVR_2", "07", AgentStatus::Ready),
    ]);
    srv.hub
        .publish(&[agent("IVR_1", "02", AgentStatus::LoggedOut)]);
    let got_a = [a.msg().await, a.msg().await];
    assert_eq!(got_a[0].call_id, "A1");
    assert_eq!(
        got_a[0].msg,
        Message::MonitorInfo {
            req_id: None,
            info: MonitorInfo::Agent {
                port: "01".into(),
                status: AgentStatus::NotReady
            }
        }
    );
    assert!(
        matches!(&got_a[1].msg, Message::MonitorInfo { info: MonitorInfo::Agent { port, .. }, .. } if port.as_str() == "02")
    );
    let got_b = b.msg().await;
    assert_eq!(got_b.call_id, "B1");
    assert!(
        matches!(&got_b.msg, Message::MonitorInfo { info: MonitorInfo::Agent { port, .. }, .. } if port.as_str() == "07")
    );
    // Nothing else arrived for B (a keep-alive round trip proves the pipe is empty) nor for idle.
    for c in [&mut b, &mut idle] {
        c.s.write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
            .await
            .unwrap();
        assert_eq!(c.next().await.unwrap().kind, FrameKind::KeepAliveResponse);
    }
    // A re-login to another IVR moves the client.
    a.login("A2", "IVR_2", false).await;
    srv.hub.publish(&[
        agent("IVR_1", "01", AgentStatus::Ready),
        agent("IVR_2", "09", AgentStatus::Ready),
    ]);
    let m = a.msg().await;
    assert_eq!(m.call_id, "A2");
    assert!(
        matches!(&m.msg, Message::MonitorInfo { info: MonitorInfo::Agent { port, .. }, .. } if port.as_str() == "09")
    );
    let m = srv.hub.metrics();
    assert_eq!(m.logged_in, vec![(IvrName::from("IVR_2"), 2)]);
    assert_eq!(m.connected, 3);
}

#[tokio::test]
async fn agent_query_and_agent_control() {
    let mut srv = start(HubConfig::default(), true).await;
    let mut c = Client::connect(srv.addr).await;
    c.login("1", "IVR_1", false).await;
    c.send(
        "1",
        Message::AgentQuery {
            req_id: "42".into(),
            port: "01".into(),
        },
    )
    .await;
    assert_eq!(
        c.msg().await.msg,
        Message::MonitorInfo {
            req_id: Some("42".into()),
            info: MonitorInfo::Agent {
                port: "01".into(),
                status: AgentStatus::Ready
            }
        }
    );
    let ctl = xml::AgentControl {
        req_id: "705".into(),
        port: "01".into(),
        attributes: vec![("Queue".into(), "q".into())],
    };
    c.send("1", Message::AgentReady(ctl)).await;
    assert_eq!(
        c.msg().await.msg,
        Message::CallError {
            failed_req: "AgentControl".into(),
            tlib_err_code: Some("50".into()),
            req_id: Some("705".into())
        }
    );
    let rec = with_deadline(srv.requests.recv()).await.unwrap();
    assert_eq!(rec.request, "AgentReady");
    assert_eq!(rec.ivr.as_str(), "IVR_1");
    assert_eq!(rec.client, c.s.local_addr().unwrap().to_string());
}

#[tokio::test]
async fn keep_alive_is_answered() {
    let srv = start(HubConfig::default(), false).await;
    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
        .await
        .unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::KeepAliveResponse, vec![]))
    );
}

#[tokio::test]
async fn garbage_gets_an_error_frame_and_close() {
    let srv = start(HubConfig::default(), true).await;
    let mut good = Client::connect(srv.addr).await;
    good.login("1", "IVR_1", false).await;

    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME]))
    );
    assert!(c.closed().await);

    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(&encode_frame(FrameKind::Data, b"<GctiMsg><nope").unwrap())
        .await
        .unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_XML]))
    );
    assert!(c.closed().await);

    // Declared length over 64 KiB: refused from the header alone.
    let mut c = Client::connect(srv.addr).await;
    c.s.write_all(&[0, 3, 0xff, 0xff, 2, 0]).await.unwrap();
    assert_eq!(
        c.next().await,
        Some(Frame::new(FrameKind::Error, vec![ERROR_BAD_FRAME]))
    );
    assert!(c.closed().await);

    // The good client is undisturbed.
    srv.hub.publish(&[agent("IVR_1", "01", AgentStatus::Ready)]);
    assert!(matches!(good.msg().await.msg, Message::MonitorInfo { .. }));
}

#[tokio::test]
async fn too_many_connections_are_refused() {
    let cfg = HubConfig {
        max_clients: 2,
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut a = Client::connect(srv.addr).await;
    let mut b = Client::connect(srv.addr).await;
    a.login("1", "IVR_1", false).await;
    b.login("1", "IVR_1", false).await;
    let mut c = Client::connect(srv.addr).await;
    assert!(c.closed().await);
    assert_eq!(srv.hub.metrics().refused, 1);
    // The first two still work.
    a.s.write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
        .await
        .unwrap();
    assert_eq!(a.next().await.unwrap().kind, FrameKind::KeepAliveResponse);
    // A slot frees up when a client leaves.
    drop(b);
    wait_for("the connection count to drop", || {
        srv.hub.metrics().connected == 1
    })
    .await;
    let mut d = Client::connect(srv.addr).await;
    assert_eq!(
        status_of(&d.login("1", "IVR_2", false).await),
        Some(LoginStatus::Ok)
    );
}

#[tokio::test]
async fn silent_client_is_closed_after_the_login_timeout() {
    let cfg = HubConfig {
        login_timeout: Duration::from_millis(200),
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut silent = Client::connect(srv.addr).await;
    // A keep-alive is not a login.
    let mut chatty = Client::connect(srv.addr).await;
    chatty
        .s
        .write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
        .await
        .unwrap();
    let mut good = Client::connect(srv.addr).await;
    good.login("1", "IVR_1", false).await;
    assert!(silent.closed().await);
    assert_eq!(
        chatty.next().await.unwrap().kind,
        FrameKind::KeepAliveResponse
    );
    assert!(chatty.closed().await);
    wait_for("two connections to close", || {
        srv.hub.metrics().connected == 1
    })
    .await;
    good.s
        .write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
        .await
        .unwrap();
    assert_eq!(
        good.next().await.unwrap().kind,
        FrameKind::KeepAliveResponse
    );
}

#[tokio::test]
async fn idle_client_is_closed_after_the_idle_timeout() {
    let cfg = HubConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut c = Client::connect(srv.addr).await;
    c.login("1", "IVR_1", false).await;
    assert!(c.closed().await);
    wait_for("the client to be unregistered", || {
        srv.hub.metrics().logged_in.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_while_a_good_one_keeps_receiving() {
    let cfg = HubConfig {
        queue_capacity: 64,
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut bad = Client::connect(srv.addr).await;
    bad.login("1", "IVR_1", false).await;
    let mut good = Client::connect(srv.addr).await;
    good.login("1", "IVR_1", false).await;

    // The good client reads in its own task and reports how many pushes it has.
    let (count_tx, count_rx) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(f) = good.next().await {
            if f.kind == FrameKind::Data {
                n += 1;
                count_tx.send_replace(n);
            }
        }
    });

    // Big pushes fill the bad client's socket buffers quickly; each batch is smaller than the
    // queue and waits for the good client, so only the bad client can fall behind.
    let big = "T".repeat(4000);
    let mut sent = 0u64;
    let overall = tokio::time::Instant::now() + Duration::from_secs(60);
    while srv.hub.metrics().queue_drops == 0 {
        assert!(
            tokio::time::Instant::now() < overall,
            "the bad client was never dropped"
        );
        let batch: Vec<Change> = (0..32)
            .map(|i| Change {
                ivr: IvrName::from("IVR_1"),
                info: MonitorInfo::Server {
                    name: format!("{big}{i}").into(),
                    status: Availability::Ok,
                    switch: None,
                },
            })
            .collect();
        srv.hub.publish(&batch);
        sent += batch.len() as u64;
        let mut rx = count_rx.clone();
        with_deadline(rx.wait_for(|n| *n >= sent)).await.unwrap();
    }
    assert_eq!(srv.hub.metrics().queue_drops, 1);
    wait_for("the bad client to be unregistered", || {
        srv.hub.metrics().logged_in == vec![(IvrName::from("IVR_1"), 1)]
    })
    .await;
    // The good client still receives.
    srv.hub
        .publish(&[agent("IVR_1", "01", AgentStatus::NotReady)]);
    let mut rx = count_rx.clone();
    with_deadline(rx.wait_for(|n| *n == sent + 1))
        .await
        .unwrap();
    drop(bad);
    reader.abort();
}

#[tokio::test]
async fn shutdown_closes_clients_and_returns() {
    let mut srv = start(HubConfig::default(), true).await;
    let mut c = Client::connect(srv.addr).await;
    c.login("1", "IVR_1", false).await;
    let _ = srv.stop.take().unwrap().send(());
    assert!(c.closed().await);
    with_deadline(&mut srv.task).await.unwrap().unwrap();
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "the listener is closed"
    );
}

/// A Server MonitorInfo named `#n` after `pad`, for tests that check order.
fn numbered(pad: &str, n: usize) -> Change {
    Change {
        ivr: IvrName::from("IVR_1"),
        info: MonitorInfo::Server {
            name: format!("{pad}#{n}").into(),
            status: Availability::Ok,
            switch: None,
        },
    }
}

/// The `n` of a push made by [`numbered`].
fn number_of(m: &GctiMsg) -> usize {
    match &m.msg {
        Message::MonitorInfo {
            req_id: None,
            info: MonitorInfo::Server { name, .. },
        } => name.as_str().rsplit('#').next().unwrap().parse().unwrap(),
        other => panic!("not a numbered push: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_to_hundreds_of_clients_gives_each_every_push_in_order() {
    const CLIENTS: usize = 300;
    let srv = start(HubConfig::default(), true).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Client::connect(srv.addr).await;
        c.login(&format!("c{i}"), "IVR_1", false).await;
        clients.push(c);
    }
    let mut n = 0;
    for _ in 0..20 {
        let batch: Vec<Change> = (n..n + 3).map(|i| numbered("", i)).collect();
        srv.hub.publish(&batch);
        n += batch.len();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for want in 0..n {
            let m = c.msg().await;
            assert_eq!(m.call_id, format!("c{i}"));
            assert_eq!(number_of(&m), want, "client {i}");
        }
    }
    assert_eq!(srv.hub.metrics().queue_drops, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_a_socket_cannot_take_wait_and_go_out_in_order_before_later_answers() {
    let cfg = HubConfig {
        queue_capacity: 100_000,
        ..HubConfig::default()
    };
    let srv = start(cfg, true).await;
    let mut c = Client::connect(srv.addr).await;
    c.login("1", "IVR_1", false).await;
    // The client reads nothing while far more is published than socket buffers hold: the
    // direct writes stop taking, the rest waits for the connection task.
    let pad = "P".repeat(8000);
    let mut n = 0;
    for _ in 0..100 {
        let batch: Vec<Change> = (n..n + 20).map(|i| numbered(&pad, i)).collect();
        srv.hub.publish(&batch);
        n += batch.len();
    }
    // An answer asked for now comes after everything published before.
    c.send(
        "1",
        Message::AgentQuery {
            req_id: "q".into(),
            port: "01".into(),
        },
    )
    .await;
    for want in 0..n {
        assert_eq!(number_of(&c.msg().await), want);
    }
    assert!(matches!(
        c.msg().await.msg,
        Message::MonitorInfo { req_id: Some(r), .. } if r == "q"
    ));
    // Caught up: pushes flow again.
    srv.hub.publish(&[numbered("", n)]);
    assert_eq!(number_of(&c.msg().await), n);
    assert_eq!(srv.hub.metrics().queue_drops, 0);
}
