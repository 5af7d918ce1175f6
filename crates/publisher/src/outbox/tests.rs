//! The outbox over real loopback sockets: who writes, order, stale pushes, slow clients.

use super::*;
use crate::frame::{encode_frame, Frame, FrameDecoder};
use crate::view::MonitorInfo;
use ivrstate_model::Availability;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

/// The server side's write half (shared, as `serve` shares it), its read half (kept open) and
/// the client's socket.
async fn pair() -> (Arc<OwnedWriteHalf>, OwnedReadHalf, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (read, write) = server.into_split();
    // As at login time in `serve`: the reactor has seen the socket writable.
    timeout(DEADLINE, write.writable()).await.unwrap().unwrap();
    (Arc::new(write), read, client)
}

fn ivr(name: &str) -> IvrName {
    IvrName::from(name)
}

/// A Server MonitorInfo named `#n`, padded to about `pad` bytes.
fn element(n: usize, pad: usize) -> Vec<u8> {
    xml::encode_monitor_info(
        None,
        &MonitorInfo::Server {
            name: format!("{}#{n}", "P".repeat(pad)).into(),
            status: Availability::Ok,
            switch: None,
        },
    )
}

fn marker() -> Vec<u8> {
    encode_frame(FrameKind::KeepAliveResponse, b"").unwrap()
}

/// What a frame is, in short: `#n@callid` for a push, `marker` for the answer.
fn describe(f: &Frame) -> String {
    if f.kind == FrameKind::KeepAliveResponse {
        return "marker".into();
    }
    let m = xml::decode(&f.body).unwrap();
    let xml::Message::MonitorInfo {
        info: MonitorInfo::Server { name, .. },
        ..
    } = m.msg
    else {
        panic!("unexpected {m:?}");
    };
    let n = name.as_str().rsplit('#').next().unwrap().to_owned();
    format!("#{n}@{}", m.call_id)
}

/// Reads frames until `count` have come.
async fn read_frames(client: &mut TcpStream, count: usize) -> Vec<String> {
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    timeout(DEADLINE, async {
        while got.len() < count {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {got:?}");
            decoder.push(&buf[..n]);
            while let Some(f) = decoder.next_frame() {
                got.push(describe(&f.unwrap()));
            }
        }
    })
    .await
    .expect("frames before the deadline");
    got
}

/// Does what the connection task does as the writer: takes and writes until nothing waits.
async fn task_writes(outbox: &Outbox, direct: &OwnedWriteHalf) -> Take {
    let mut out = Vec::new();
    loop {
        match outbox.take(&mut out) {
            Take::Write => {
                let mut rest = &out[..];
                while !rest.is_empty() {
                    direct.writable().await.unwrap();
                    match direct.try_write(rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn pushes_to_a_client_that_keeps_up_are_written_at_once() {
    let (direct, _read, mut client) = pair().await;
    let outbox = Outbox::new(Some(direct.clone()));
    let mut scratch = Scratch::default();
    outbox.answer(Some(Some((&ivr("A"), "c1"))), [marker().as_slice()]);
    // Answers are the task's to write (after it has registered the login).
    assert_eq!(task_writes(&outbox, &direct).await, Take::Done);
    let pushed = outbox.push(
        &ivr("A"),
        &[element(0, 10), element(1, 10)],
        8,
        &mut scratch,
    );
    assert_eq!(pushed, Pushed::Written);
    // Nothing is left for the task, which was not woken.
    assert_eq!(outbox.take(&mut Vec::new()), Take::Done);
    assert!(timeout(Duration::from_millis(1), outbox.wake.notified())
        .await
        .is_err());
    assert_eq!(
        read_frames(&mut client, 3).await,
        ["marker", "#0@c1", "#1@c1"]
    );
}

#[tokio::test]
async fn a_write_that_would_block_falls_back_to_the_task_and_order_is_kept() {
    let (direct, _read, mut client) = pair().await;
    let outbox = Outbox::new(Some(direct.clone()));
    let mut scratch = Scratch::default();
    outbox.answer(Some(Some((&ivr("A"), "c1"))), []);
    // The client does not read: big pushes fill the socket buffers until one must wait.
    let mut n = 0;
    loop {
        let pushed = outbox.push(&ivr("A"), &[element(n, 8000)], 1 << 20, &mut scratch);
        n += 1;
        match pushed {
            Pushed::Written => assert!(n < 10_000, "the socket never filled"),
            Pushed::Queued => break,
            other => panic!("{other:?}"),
        }
    }
    // The task was woken to write; everything after waits behind, answers included.
    timeout(DEADLINE, outbox.wake.notified()).await.unwrap();
    let first_waiting = n;
    for _ in 0..3 {
        let pushed = outbox.push(&ivr("A"), &[element(n, 8000)], 1 << 20, &mut scratch);
        assert_eq!(pushed, Pushed::Queued);
        n += 1;
    }
    outbox.answer(None, [marker().as_slice()]);
    let pushed = outbox.push(&ivr("A"), &[element(n, 10)], 1 << 20, &mut scratch);
    assert_eq!(pushed, Pushed::Queued);
    n += 1;

    let reader = tokio::spawn(async move { read_frames(&mut client, n + 1).await });
    assert_eq!(task_writes(&outbox, &direct).await, Take::Done);
    let got = reader.await.unwrap();
    let mut want: Vec<String> = (0..n).map(|i| format!("#{i}@c1")).collect();
    want.insert(n - 1, "marker".into());
    assert_eq!(got, want, "first waiting: #{first_waiting}");

    // The task gave the writer's role back: the next push goes straight out again.
    let pushed = outbox.push(&ivr("A"), &[element(n, 10)], 1 << 20, &mut scratch);
    assert_eq!(pushed, Pushed::Written);
}

#[tokio::test]
async fn pushes_for_an_ivr_the_client_left_are_refused() {
    let (direct, _read, mut client) = pair().await;
    let outbox = Outbox::new(Some(direct.clone()));
    let mut scratch = Scratch::default();
    assert_eq!(
        outbox.push(&ivr("A"), &[element(0, 0)], 8, &mut scratch),
        Pushed::Stale,
        "not logged in"
    );
    outbox.answer(Some(Some((&ivr("A"), "c1"))), []);
    assert_eq!(
        outbox.push(&ivr("B"), &[element(1, 0)], 8, &mut scratch),
        Pushed::Stale
    );
    assert_eq!(
        outbox.push(&ivr("A"), &[element(2, 0)], 8, &mut scratch),
        Pushed::Written
    );
    // Re-login to B with another CallId, LoginResp (the marker) in the same step; a push for B
    // published before the task has written the LoginResp waits behind it.
    outbox.answer(Some(Some((&ivr("B"), "c2"))), [marker().as_slice()]);
    assert_eq!(
        outbox.push(&ivr("A"), &[element(3, 0)], 8, &mut scratch),
        Pushed::Stale
    );
    assert_eq!(
        outbox.push(&ivr("B"), &[element(4, 0)], 8, &mut scratch),
        Pushed::Queued
    );
    assert_eq!(task_writes(&outbox, &direct).await, Take::Done);
    assert_eq!(
        outbox.push(&ivr("B"), &[element(5, 0)], 8, &mut scratch),
        Pushed::Written
    );
    assert_eq!(
        read_frames(&mut client, 4).await,
        ["#2@c1", "marker", "#4@c2", "#5@c2"]
    );
    outbox.answer(Some(None), []);
    assert_eq!(
        outbox.push(&ivr("B"), &[element(6, 0)], 8, &mut scratch),
        Pushed::Stale,
        "logged out"
    );
}

#[tokio::test]
async fn more_than_capacity_waiting_kills_the_client_without_waiting() {
    let (direct, _read, _client) = pair().await;
    let outbox = Outbox::new(Some(direct));
    let mut scratch = Scratch::default();
    outbox.answer(Some(Some((&ivr("A"), "c1"))), []);
    let mut waiting = 0;
    let killed_at = loop {
        match outbox.push(&ivr("A"), &[element(0, 8000)], 4, &mut scratch) {
            Pushed::Written => {}
            Pushed::Queued => waiting += 1,
            Pushed::Killed => break waiting,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(killed_at, 4, "killed at the fifth push waiting");
    // The task is told, wherever it waits, and the outbox takes nothing more.
    timeout(DEADLINE, outbox.kill.notified()).await.unwrap();
    assert_eq!(outbox.take(&mut Vec::new()), Take::Killed);
    assert_eq!(
        outbox.push(&ivr("A"), &[element(1, 0)], 4, &mut scratch),
        Pushed::Ended
    );
}

#[tokio::test]
async fn without_a_direct_writer_the_task_writes_everything() {
    // TLS: only the connection task can write.
    let outbox = Outbox::new(None);
    let mut scratch = Scratch::default();
    outbox.answer(Some(Some((&ivr("A"), "c1"))), [marker().as_slice()]);
    let mut out = Vec::new();
    assert_eq!(outbox.take(&mut out), Take::Write);
    assert_eq!(out, marker());
    assert_eq!(outbox.take(&mut out), Take::Done);
    assert_eq!(
        outbox.push(&ivr("A"), &[element(0, 0)], 8, &mut scratch),
        Pushed::Queued
    );
    timeout(DEADLINE, outbox.wake.notified()).await.unwrap();
    assert_eq!(
        outbox.push(&ivr("A"), &[element(1, 0)], 8, &mut scratch),
        Pushed::Queued
    );
    assert_eq!(outbox.take(&mut out), Take::Write);
    let mut decoder = FrameDecoder::new();
    decoder.push(&out);
    let frames: Vec<String> = std::iter::from_fn(|| decoder.next_frame())
        .map(|f| describe(&f.unwrap()))
        .collect();
    assert_eq!(frames, ["#0@c1", "#1@c1"]);
    assert_eq!(outbox.take(&mut out), Take::Done);
    outbox.close();
    assert_eq!(
        outbox.push(&ivr("A"), &[element(2, 0)], 8, &mut scratch),
        Pushed::Ended
    );
}
