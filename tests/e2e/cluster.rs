//! Cluster mode end to end: real `nats-server` processes (a 3-node JetStream cluster, see
//! tests/src/nats.rs), real `ivrstate serve --cluster` nodes, GLI and the feed over real
//! sockets, and failures made with SIGKILL. The tests run one at a time (they share the
//! machine's two cores with the NATS nodes) and each waits on conditions with a deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::nats::{nats_server_or_skip, NatsCluster, Subscriber};
use ivrstate_tests::{attr, wait_for, Gli, Ivrstate, Running};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

const STREAM: &str = "IVRSTATE";

/// One cluster test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

fn nats(test: &str) -> Option<NatsCluster> {
    nats_server_or_skip(test).map(|bin| NatsCluster::start(&bin, 3))
}

fn example(name: &str) -> String {
    ivrstate_tests::repo_root()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// A `serve --cluster` node on its own store: GLI, feed and metrics on free ports.
struct Node {
    t: Ivrstate,
    serve: Option<Running>,
    gli: SocketAddr,
    feed: SocketAddr,
    metrics: SocketAddr,
}

impl Node {
    fn start(urls: &str) -> Node {
        Node::start_on(ivrstate(), urls)
    }

    fn start_on(t: Ivrstate, urls: &str) -> Node {
        let mut serve = t.spawn(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--feed-listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--cluster",
            urls,
            "--stream",
            STREAM,
        ]);
        let gli = serve.addr("gli");
        let feed = serve.addr("feed");
        let metrics = serve.addr("metrics");
        Node {
            t,
            serve: Some(serve),
            gli,
            feed,
            metrics,
        }
    }

    /// (last stream sequence applied, log's last seq), from the metrics endpoint.
    fn applied(&self) -> Option<(u64, u64)> {
        let mut s = TcpStream::connect(self.metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let value = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        Some((
            value("ivrstate_stream_applied")?,
            value("ivrstate_log_seq")?,
        ))
    }

    fn wait_applied(&self, stream_seq: u64) -> u64 {
        wait_for(
            &format!("the node to apply stream message {stream_seq}"),
            || {
                self.applied()
                    .filter(|(s, _)| *s >= stream_seq)
                    .map(|(_, log)| log)
            },
        )
    }

    /// Stops the node (SIGTERM) so that its store can be read.
    fn stop(&mut self) {
        if let Some(serve) = self.serve.take() {
            let status = serve.terminate();
            assert!(status.success(), "serve exited with {status}");
        }
    }

    fn kill(&mut self) {
        if let Some(serve) = self.serve.take() {
            serve.kill();
        }
    }

    fn export(&self) -> String {
        self.t.ok(&["export"])
    }
}

/// A feed connection: batches in, `{"committed":N}` acks out.
struct Feed {
    out: TcpStream,
    acks: BufReader<TcpStream>,
}

impl Feed {
    fn connect(addr: SocketAddr, tserver: &str) -> Feed {
        let out = TcpStream::connect(addr).unwrap();
        let acks = BufReader::new(out.try_clone().unwrap());
        let mut feed = Feed { out, acks };
        feed.out
            .write_all(format!("Application name:\t{tserver}\n").as_bytes())
            .unwrap();
        feed
    }

    fn send(&mut self, text: &str) {
        self.out.write_all(text.as_bytes()).unwrap();
    }

    /// The next ack's running count, or None if none came within `limit`.
    fn ack_within(&mut self, limit: Duration) -> Option<u64> {
        self.acks.get_ref().set_read_timeout(Some(limit)).unwrap();
        let mut line = String::new();
        match self.acks.read_line(&mut line) {
            Ok(n) if n > 0 => {
                let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
                v["committed"].as_u64()
            }
            _ => None,
        }
    }
}

const T0: u64 = 1_439_798_400; // 2015-08-17T08:00:00Z

/// One T-Server printout: agent `agent` on DN `dn` changes state (Ready when `seq` is even).
fn printout(seq: u64, dn: &str, agent: &str) -> String {
    let secs = T0 + 3600 + seq;
    let (event, mode) = if seq & 1 == 0 {
        ("EventAgentReady", "1 (ManualIn)")
    } else {
        ("EventAgentNotReady", "3 (AfterCallWork)")
    };
    format!(
        "@{h:02}:{m:02}:{s:02}.0000 [0] 8.1.101.33 distribute_event: message {event}\n\
         \tAttributeEventSequenceNumber\t{seq:016x}\n\
         \tAttributeTimeinuSecs\t0\n\
         \tAttributeTimeinSecs\t{secs}\n\
         \tAttributeThisDN\t'{dn}'\n\
         \tAttributeAgentID\t'{agent}'\n\
         \tAttributeAgentWorkMode\t{mode}\n\
         2015-08-17T08:00:00.000 Int 04545 Interaction message sent\n",
        h = secs % 86400 / 3600,
        m = secs % 3600 / 60,
        s = secs % 60,
    )
}

/// Sets up the cluster's configuration (examples/ivr.toml) and ingests examples/ts_sip.log.
fn seed(urls: &str) {
    let t = ivrstate();
    let out = t.ok(&[
        "config",
        "apply",
        "--cluster",
        urls,
        "--effective",
        "2015-08-17T00:00:00Z",
        &example("ivr.toml"),
    ]);
    assert!(out.contains("recorded"), "{out}");
    let summary = t.json(&[
        "ingest",
        "--cluster",
        urls,
        "--json",
        &example("ts_sip.log"),
    ]);
    assert!(summary["appended"].as_u64().unwrap() > 100, "{summary}");
}

fn login(gli: SocketAddr) -> (Gli, String) {
    let mut c = Gli::connect(gli);
    let resp = wait_for("LoginResp Status='OK'", || {
        let resp = c.login("7", "IVR_1", "4.0", true);
        (attr(&resp, "Status").as_deref() == Some("OK")).then_some(resp)
    });
    (c, resp)
}

/// The answers a client gets for every port of IVR_1 (AgentQuery per port).
fn answers(c: &mut Gli, req: &mut u32) -> Vec<String> {
    let mut out = Vec::new();
    for port in ["01", "02", "03", "04"] {
        *req += 1;
        c.send(
            "7",
            &format!("<AgentQuery ReqId='{req}' PortNum='{port}'/>"),
        );
        let answer = c.recv_until(&format!("ReqId='{req}'"));
        out.push(answer.replace(&format!("ReqId='{req}'"), "ReqId"));
    }
    out
}

fn lines_with_seq(export: &str, needle: &str) -> usize {
    export.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn two_nodes_apply_one_stream_and_answer_alike() {
    let _serial = serial();
    let Some(nats) = nats("two_nodes_apply_one_stream_and_answer_alike") else {
        return;
    };
    let urls = nats.urls();
    seed(&urls);
    // The same file again: new messages (recorded now), every event a duplicate in the log.
    let t = ivrstate();
    t.ok(&["ingest", "--cluster", &urls, &example("ts_sip.log")]);
    let mut a = Node::start(&urls);
    let mut b = Node::start(&urls);
    let target = nats.stream_last_seq(STREAM).unwrap();
    let log_a = a.wait_applied(target);
    let log_b = b.wait_applied(target);
    assert_eq!(log_a, log_b);

    // A client of B sees a change fed into A (stored by both before it is pushed).
    let (mut on_b, _) = login(b.gli);
    let (mut on_a, _) = login(a.gli);
    let mut feed = Feed::connect(a.feed, "TS_SIP");
    let feed_from = feed.out.local_addr().unwrap();
    feed.send(&printout(0x7000_0000, "7001", "1001"));
    assert_eq!(feed.ack_within(Duration::from_secs(30)), Some(1));
    let pushed = on_b.recv_until("PortNum='01'");
    assert!(pushed.contains("Status='Ready'"), "{pushed}");

    // Both answer every query alike, once each has applied the change (each node applies the
    // stream on its own time).
    let target = nats.stream_last_seq(STREAM).unwrap();
    a.wait_applied(target);
    b.wait_applied(target);
    let mut req = 0;
    let from_a = answers(&mut on_a, &mut req);
    let from_b = answers(&mut on_b, &mut req);
    assert_eq!(from_a, from_b);

    // A dies; its client moves to B and gets the same answers.
    a.kill();
    assert!(on_a.closed());
    let (mut moved, _) = login(b.gli);
    assert_eq!(answers(&mut moved, &mut req), from_a);

    // Restarted, A catches up; stopped, both stores hold the same bytes and the same state.
    let target = nats.stream_last_seq(STREAM).unwrap();
    let mut a = Node::start_on(std::mem::replace(&mut a.t, ivrstate()), &urls);
    a.wait_applied(target);
    b.wait_applied(target);
    a.stop();
    b.stop();
    let export_a = a.export();
    assert_eq!(export_a, b.export(), "the two nodes' logs differ");
    assert_eq!(a.t.ok(&["status", "--json"]), b.t.ok(&["status", "--json"]));
    // Ingested twice, stored once.
    assert_eq!(lines_with_seq(&export_a, "\"source_seq\":17563905,"), 1);
    sources_came_through_the_stream(&export_a, feed_from);
}

/// Every record of a node's export names the source it had where it was published: the
/// command for the configuration, the file and the line of its printout for `ingest --cluster`,
/// the feed connection of node A for the fed event (not "cluster stream").
fn sources_came_through_the_stream(export: &str, feed_from: SocketAddr) {
    let file = example("ts_sip.log");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (mut config, mut from_file, mut fed) = (0, 0, 0);
    for record in export.lines() {
        let record: serde_json::Value = serde_json::from_str(record).unwrap();
        let source = record["source"].as_str().unwrap();
        let seq = record["event"]["TLib"]["source_seq"].as_u64();
        if record["event"].get("Config").is_some() {
            assert_eq!(
                source,
                format!("ivrstate config apply {}", example("ivr.toml"))
            );
            config += 1;
        } else if seq == Some(0x7000_0000) {
            assert_eq!(source, format!("feed {feed_from} #1"));
            fed += 1;
        } else {
            let line: usize = source
                .strip_prefix(&format!("file {file}:"))
                .unwrap_or_else(|| panic!("{source:?} for {record}"))
                .parse()
                .unwrap();
            // The printout that starts at that line is this event's.
            assert!(lines[line - 1].starts_with('@'), "{source}");
            let hex = format!("{:016x}", seq.unwrap());
            assert!(
                lines[line..]
                    .iter()
                    .take_while(|l| l.starts_with('\t'))
                    .any(|l| l.contains(&hex)),
                "{source} is not the printout of {hex}"
            );
            from_file += 1;
        }
    }
    assert!(
        config > 0 && from_file > 100 && fed == 1,
        "{config} {from_file} {fed}"
    );
}

#[test]
fn the_stream_leader_killed_during_a_feed_loses_no_acknowledged_event() {
    let _serial = serial();
    let Some(mut nats) = nats("the_stream_leader_killed_during_a_feed_loses_no_acknowledged_event")
    else {
        return;
    };
    let urls = nats.urls();
    seed(&urls);
    let mut a = Node::start(&urls);
    let mut b = Node::start(&urls);
    let mut feed = Feed::connect(a.feed, "TS_SIP");
    let mut acked = 0;
    let mut killed = None;
    let mut longest = Duration::ZERO;
    for seq in 1..=120u64 {
        feed.send(&printout(0x7100_0000 + seq, "7002", "1002"));
        let sent = std::time::Instant::now();
        let n = feed.ack_within(Duration::from_secs(60)).expect("an ack");
        longest = longest.max(sent.elapsed());
        assert_eq!(n, seq);
        acked = n;
        if seq == 40 {
            let leader = wait_for("a stream leader", || nats.stream_leader(STREAM));
            nats.kill(leader);
            killed = Some(leader);
        }
    }
    assert_eq!(acked, 120);
    // What the README quotes as the cost of losing the stream leader.
    eprintln!("stream leader killed: the longest wait for an ack was {longest:?}");
    nats.restart(killed.unwrap());
    let target = nats.stream_last_seq(STREAM).unwrap();
    a.wait_applied(target);
    b.wait_applied(target);
    a.stop();
    b.stop();
    let export = a.export();
    assert_eq!(export, b.export());
    for seq in 1..=120u64 {
        let needle = format!("\"source_seq\":{},", 0x7100_0000 + seq);
        assert_eq!(lines_with_seq(&export, &needle), 1, "event {seq}");
    }
}

#[test]
fn two_nats_nodes_down_nothing_is_acknowledged_serving_goes_on_then_everything_flows() {
    let _serial = serial();
    let Some(mut nats) = nats("two_nats_nodes_down") else {
        return;
    };
    let urls = nats.urls();
    seed(&urls);
    let a = Node::start(&urls);
    let target = nats.stream_last_seq(STREAM).unwrap();
    a.wait_applied(target);
    let (mut client, _) = login(a.gli);
    let mut req = 0;
    let before = answers(&mut client, &mut req);

    nats.kill(1);
    nats.kill(2);
    let mut feed = Feed::connect(a.feed, "TS_SIP");
    feed.send(&printout(0x7200_0000, "7001", "1001"));
    assert_eq!(
        feed.ack_within(Duration::from_secs(3)),
        None,
        "acknowledged without a quorum"
    );
    // Serving goes on from the last state: logins and queries are answered as before.
    let (mut late, _) = login(a.gli);
    assert_eq!(answers(&mut late, &mut req), before);

    let restarted = std::time::Instant::now();
    nats.restart_no_wait(1);
    nats.wait_healthy(1);
    assert_eq!(feed.ack_within(Duration::from_secs(60)), Some(1));
    eprintln!(
        "2 of 3 NATS nodes down: acknowledged {:?} after one was restarted",
        restarted.elapsed()
    );
    let pushed = client.recv_until("PortNum='01'");
    assert!(pushed.contains("Status='Ready'"), "{pushed}");
}

#[test]
fn a_node_killed_mid_apply_catches_up_to_the_same_bytes() {
    let _serial = serial();
    let Some(nats) = nats("a_node_killed_mid_apply_catches_up_to_the_same_bytes") else {
        return;
    };
    let urls = nats.urls();
    let t = ivrstate();
    let log = t.path("sim.log");
    let sim = t.ok(&[
        "simulate", "--agents", "200", "--events", "60000", "--seed", "3",
    ]);
    std::fs::write(&log, sim).unwrap();
    t.ok(&["config", "apply", "--cluster", &urls, &example("ivr.toml")]);
    t.ok(&[
        "ingest",
        "--cluster",
        &urls,
        "--tserver",
        "TS_SIP",
        log.to_str().unwrap(),
    ]);
    let target = nats.stream_last_seq(STREAM).unwrap();

    let mut a = Node::start(&urls);
    let mut b = Node::start(&urls);
    // Kill B once it has applied part of the stream.
    wait_for("B to be part-way through the stream", || {
        b.applied().filter(|(s, _)| *s > 0)
    });
    b.kill();
    let b = Node::start_on(std::mem::replace(&mut b.t, ivrstate()), &urls);
    let mut b = b;
    a.wait_applied(target);
    b.wait_applied(target);
    a.stop();
    b.stop();
    let export = a.export();
    assert!(export.lines().count() > 50_000);
    assert!(export == b.export(), "the restarted node's log differs");
}

#[test]
fn every_nats_node_killed_and_restarted_loses_nothing_acknowledged() {
    let _serial = serial();
    let Some(mut nats) = nats("every_nats_node_killed_and_restarted") else {
        return;
    };
    let urls = nats.urls();
    seed(&urls);
    let before = nats.stream_last_seq(STREAM).unwrap();
    for i in 0..3 {
        nats.kill(i);
    }
    for i in 0..3 {
        nats.restart_no_wait(i);
    }
    for i in 0..3 {
        nats.wait_healthy(i);
    }
    // A node that starts now applies everything acknowledged before the restart (a NATS
    // node's own report lags while it catches up with the others, so the node is the judge).
    let mut a = Node::start(&urls);
    a.wait_applied(before);
    a.stop();
    let seeded = {
        let t = ivrstate();
        t.ok(&[
            "config",
            "apply",
            "--effective",
            "2015-08-17T00:00:00Z",
            &example("ivr.toml"),
        ]);
        t.ok(&["ingest", &example("ts_sip.log")]);
        t.ok(&["status", "--json"])
    };
    assert_eq!(a.t.ok(&["status", "--json"]), seeded);
}

/// Issue 14.2: the node holding a T-Server's feed dies; each survivor records the T-Server's
/// link as lost (Server Unavailable) within 10 s, and the stream stores that event once.
#[test]
fn a_dead_nodes_tservers_are_recorded_unavailable_once_by_the_survivors() {
    let _serial = serial();
    let Some(nats) = nats("a_dead_nodes_tservers_are_recorded_unavailable_once") else {
        return;
    };
    let urls = nats.urls();
    let t = ivrstate();
    t.ok(&["config", "apply", "--cluster", &urls, &example("ivr.toml")]);
    let mut a = Node::start(&urls);
    let mut b = Node::start(&urls);
    let mut c = Node::start(&urls);
    let mut feed = Feed::connect(a.feed, "TS_SIP");
    let secs = T0 + 3600;
    feed.send(&format!(
        "@{h:02}:{m:02}:{s:02}.0000 [0] 8.1.101.33 distribute_event: message EventLinkConnected\n\
         \tAttributeEventSequenceNumber\t{seq:016x}\n\
         \tAttributeTimeinuSecs\t0\n\
         \tAttributeTimeinSecs\t{secs}\n\
         2015-08-17T08:00:00.000 Int 04545 Interaction message sent\n",
        h = secs % 86400 / 3600,
        m = secs % 3600 / 60,
        s = secs % 60,
        seq = 0x7300_0000u64,
    ));
    assert_eq!(feed.ack_within(Duration::from_secs(30)), Some(1));
    let target = nats.stream_last_seq(STREAM).unwrap();
    b.wait_applied(target);
    c.wait_applied(target);
    let (mut on_b, resp) = login(b.gli);
    assert!(resp.contains("LoginResp"), "{resp}");
    // Wait until A has announced that it holds TS_SIP (it does so every second): only then do
    // the survivors know what A held.
    let first_url = urls.split(',').next().unwrap();
    let mut presence = Subscriber::subscribe(first_url, &format!("_ivrstate.presence.{STREAM}.*"));
    wait_for("A's announcement that it holds TS_SIP", || {
        presence
            .next_within(Duration::from_millis(500))
            .filter(|(_, body)| String::from_utf8_lossy(body).contains("TS_SIP"))
    });
    // Every message on the stream's subjects from now on is a survivor's link-lost event.
    let mut stream_messages = Subscriber::subscribe(first_url, &format!("{STREAM}.>"));

    a.kill();
    let killed = std::time::Instant::now();
    let lost = on_b.recv_until("Status='Unavailable'");
    let took = killed.elapsed();
    eprintln!("a dead node's T-Server recorded unavailable after {took:?}");
    assert!(
        lost.contains("<Server") && lost.contains("TS_SIP"),
        "{lost}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Wait until both survivors have published the event (two messages: the same bytes and
    // Msg-Id from each); the stream must hold it once.
    let mut published = 0;
    wait_for("both survivors' link-lost publications", || {
        if stream_messages
            .next_within(Duration::from_millis(500))
            .is_some()
        {
            published += 1;
        }
        (published >= 2).then_some(())
    });
    let target = nats.stream_last_seq(STREAM).unwrap();
    b.wait_applied(target);
    c.wait_applied(target);
    b.stop();
    c.stop();
    let export = b.export();
    assert_eq!(export, c.export());
    let lost: Vec<&str> = export
        .lines()
        .filter(|l| l.contains("LinkDisconnected") && l.contains("TS_SIP"))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
}

/// `serve --cluster --http`: a node serves the API, SSE and readiness from its replica. While it
/// cannot read the stream (2 of 3 NATS nodes down: no quorum) it has not caught up: `/readyz`
/// and the API answer 503 and logins get InitInProgress. Once caught up, an event fed to node
/// A is in node B's `/api/v1/status` and on B's SSE stream.
#[test]
fn a_cluster_node_serves_http_from_its_replica_once_caught_up() {
    use ivrstate_tests::http::{get, Sse};
    let _serial = serial();
    let Some(mut nats) = nats("a_cluster_node_serves_http_from_its_replica_once_caught_up") else {
        return;
    };
    let urls = nats.urls();
    seed(&urls);
    let a = Node::start(&urls);
    nats.kill(1);
    nats.kill(2);
    let t = ivrstate();
    let mut b = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--cluster",
        &urls,
        "--stream",
        STREAM,
    ]);
    let gli = b.addr("gli");
    let http = b.addr("http");
    let not_ready = get(http, "/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(get(http, "/api/v1/status").status, 503);
    let mut early = Gli::connect(gli);
    let resp = early.login("7", "IVR_1", "4.0", true);
    assert_eq!(
        attr(&resp, "Status").as_deref(),
        Some("InitInProgress"),
        "{resp}"
    );

    nats.restart(1);
    nats.restart(2);
    let ready = wait_for("B's /readyz to say ready", || {
        let r = get(http, "/readyz");
        (r.status == 200).then_some(r)
    });
    assert_eq!(ready.json()["ready"], true);
    let seeded = get(http, "/api/v1/status").json();
    let mut sse = Sse::open(http, "/api/v1/events", &[]);
    assert_eq!(sse.status, 200);

    let mut feed = Feed::connect(a.feed, "TS_SIP");
    // A DN and agent the seeded log does not have: certainly a change.
    feed.send(&printout(0x7400_0000, "7099", "1099"));
    assert_eq!(feed.ack_within(Duration::from_secs(30)), Some(1));
    let change = sse.next_event().expect("B's SSE stream open");
    assert_eq!(change.event, "change");
    let data: serde_json::Value = serde_json::from_str(&change.data).unwrap();
    assert_eq!(data["agents"][0]["dn"], "7099");
    assert_eq!(data["agents"][0]["status"], "Ready");
    let seq = data["seq"].as_u64().unwrap();
    assert!(seq > seeded["seq"].as_u64().unwrap());
    // Stored before published: B's status already has it.
    let status = get(http, "/api/v1/status").json();
    assert!(status["seq"].as_u64().unwrap() >= seq);
    let agent = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dn"] == "7099")
        .unwrap();
    assert_eq!(agent["status"], "Ready");
    assert_eq!(agent["agent_id"], "1099", "{agent}");
}
