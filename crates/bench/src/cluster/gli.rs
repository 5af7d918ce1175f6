//! `gli_change_*`: the issue's own measure of the cluster's latency. Two real
//! `ivrstate serve --cluster` processes on the scenario's NATS nodes: printouts are written into
//! node A's feed port (as a T-Server feed does) at a steady rate, and a GLI client logged in on
//! node B times each from the write into A's feed until it has decoded the MonitorInfo that B
//! pushed for it. Everything between is in the figure: A's feed parser and publish, JetStream's
//! quorum write (fsync on every node), B's consumer, B's durable append and fold, B's push.
//!
//! Each change flips one agent between Ready and NotReady on one of [`PORTS`] ports in turn, so
//! each port's pushes alternate and each one is matched with the write it answers; a port gets
//! its next change only after the push of its last one arrived, so that matching is never
//! ambiguous (at [`PORTS`] ports that bounds nothing at realistic rates: a change per port
//! every 320 ms at 200 changes/s).
//!
//! Where the time goes, for the same writes: `published_*` until a plain NATS subscriber of
//! the stream's subjects saw A's message (A's feed parser, job queue and publish), `feed_ack_*`
//! until A's feed acknowledged them (`{"committed":N}`: JetStream stored them on a quorum,
//! every node fsynced). What is left of `gli_change_*` is B's: its consumer, durable append,
//! fold and push.

use crate::report::percentile;
use crate::server::Client;
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use ivrstate_cluster::{Cluster, ClusterConfig};
use ivrstate_model::{AgentStatus, Event};
use ivrstate_publisher::xml::{LoginStatus, Message};
use ivrstate_publisher::MonitorInfo;
use ivrstate_store::codec;
use ivrstate_tests::{Ivrstate, Running};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Ports (each with its own agent) that changes go round.
pub const PORTS: usize = 64;
const IVR: &str = "IVR_BENCH";
const TSERVER: &str = "TS_BENCH";
const STREAM: &str = "BENCHGLI";
/// How long a change may take before the run is declared broken.
const LOST_AFTER: Duration = Duration::from_secs(30);

/// How many changes and how fast.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub changes: usize,
    pub per_second: f64,
}

/// The measured figures, in milliseconds.
pub struct Figures {
    pub changes: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub published_p50_ms: f64,
    pub published_p99_ms: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
}

/// The `ivrstate` binary the nodes run. Under `cargo run` it is built first (same profile as
/// this benchmark, so never a stale binary); otherwise it is the one beside the benchmark's.
pub fn ivrstate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark's binary")?;
    let dir = exe
        .parent()
        .context("the benchmark's binary has no directory")?;
    let bin = dir.join(format!("ivrstate{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "ivrstate", "--bin", "ivrstate"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        eprintln!("cluster: building the ivrstate binary ({build:?})");
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of the ivrstate binary failed ({status})");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p ivrstate` (or run the \
             benchmark with `cargo run`)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One T-Server printout: the agent of port `port` changes state (Ready when `ready`).
fn printout(n: u64, port: usize, ready: bool) -> String {
    let secs = 1_700_000_000 + n / 100;
    let (event, mode) = if ready {
        ("EventAgentReady", "1 (ManualIn)")
    } else {
        ("EventAgentNotReady", "3 (AfterCallWork)")
    };
    format!(
        "@{h:02}:{m:02}:{s:02}.0000 [0] 8.1.101.33 distribute_event: message {event}\n\
         \tAttributeEventSequenceNumber\t{n:016x}\n\
         \tAttributeTimeinuSecs\t{us}\n\
         \tAttributeTimeinSecs\t{secs}\n\
         \tAttributeThisDN\t'{dn}'\n\
         \tAttributeAgentID\t'{agent}'\n\
         \tAttributeAgentWorkMode\t{mode}\n\
         2023-11-14T22:13:20.000 Int 04545 Interaction message sent\n",
        h = secs % 86400 / 3600,
        m = secs % 3600 / 60,
        s = secs % 60,
        us = n % 100 * 10_000,
        dn = 5000 + port,
        agent = 3000 + port,
    )
}

fn config_toml() -> String {
    let mut s = format!(
        "[[tserver]]\nname = \"{TSERVER}\"\nswitch = \"SW_BENCH\"\n\n\
         [[ivr]]\nname = \"{IVR}\"\ntservers = [\"{TSERVER}\"]\n"
    );
    for p in 0..PORTS {
        s.push_str(&format!(
            "\n[[ivr.port]]\nnum = \"{:02}\"\ndn = \"{}\"\n",
            p + 1,
            5000 + p
        ));
    }
    s
}

fn port_index(port: &str) -> Option<usize> {
    port.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|&p| p < PORTS)
}

/// A push decoded by B's client: when, which port, which status.
type Push = (Instant, usize, AgentStatus);

/// Runs the measure against the NATS nodes at `urls`.
pub fn run(work: &Path, urls: &str, runtime: &Runtime, plan: Plan) -> Result<Figures> {
    let bin = ivrstate_binary()?;
    let setup = Ivrstate::in_dir(&bin, work);
    let config = setup.path("gli.toml");
    std::fs::write(&config, config_toml())?;
    let config = config.display().to_string();
    let cluster = ["--cluster", urls, "--stream", STREAM];
    let mut args = vec!["config", "apply"];
    args.extend_from_slice(&cluster);
    args.push(&config);
    let out = setup.run(&args);
    if !out.status.success() {
        bail!(
            "config apply --cluster failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let serve = |node: &Ivrstate| -> Running {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--feed-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(&cluster);
        node.spawn(&args)
    };
    let node_a = Ivrstate::in_dir(&bin, work);
    let node_b = Ivrstate::in_dir(&bin, work);
    let mut a = serve(&node_a);
    let mut b = serve(&node_b);
    let feed_addr = a.addr("feed");
    let gli_addr = b.addr("gli");

    // B's client: logged in once B has caught up (InitInProgress until then).
    let mut client = runtime.block_on(async {
        let started = Instant::now();
        loop {
            let mut c = Client::connect(gli_addr).await?;
            match c.login_as(IVR).await? {
                Some(LoginStatus::Ok) => return anyhow::Ok(c),
                _ if started.elapsed() < LOST_AFTER => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => bail!("node B answered LoginReq with {other:?} for {LOST_AFTER:?}"),
            }
        }
    })?;
    let (push_tx, push_rx) = std_mpsc::channel::<Push>();
    let reader = runtime.spawn(async move {
        loop {
            match client.message().await {
                Ok(Message::MonitorInfo {
                    info: MonitorInfo::Agent { port, status },
                    ..
                }) => {
                    let at = Instant::now();
                    if let Some(p) = port_index(port.as_str()) {
                        if push_tx.send((at, p, status)).is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                // No message for a while (the deadline of `message`) is not an end.
                Err(e) if e.to_string().starts_with("no answer within") => {}
                Err(_) => return,
            }
        }
    });

    // A's messages as they are published, each with the printouts' numbers (source seqs).
    let (published_tx, published_rx) = std_mpsc::channel::<(Instant, Vec<u64>)>();
    let watcher = runtime.block_on(async {
        let cluster = Cluster::connect(ClusterConfig::parse(urls, STREAM)?).await?;
        let mut subscription = cluster
            .client
            .subscribe(format!("{STREAM}.ts.>"))
            .await
            .context("subscribing to the stream's subjects")?;
        anyhow::Ok(runtime.spawn(async move {
            while let Some(message) = subscription.next().await {
                let at = Instant::now();
                let seqs = codec::decode_block(&message.payload)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|e| match &e.event {
                        Event::TLib(t) => t.source_seq,
                        _ => None,
                    })
                    .collect();
                if published_tx.send((at, seqs)).is_err() {
                    return;
                }
            }
            // The connection lives as long as the subscription is read.
            drop(cluster);
        }))
    })?;

    let mut feed = TcpStream::connect(feed_addr).context("connecting to node A's feed")?;
    feed.set_nodelay(true)?;
    feed.write_all(format!("Application name:\t{TSERVER}\n").as_bytes())?;
    let (ack_tx, ack_rx) = std_mpsc::channel::<(Instant, u64)>();
    let acks = BufReader::new(feed.try_clone()?);
    let ack_reader = std::thread::spawn(move || {
        for line in acks.lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            let committed = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["committed"].as_u64());
            if let Some(n) = committed {
                if ack_tx.send((at, n)).is_err() {
                    return;
                }
            }
        }
    });

    // Every port's agent made Ready first (not timed): the cluster, B's push path and the
    // client are then warm, and every later change is a flip.
    let mut written = 0u64;
    let mut status = [false; PORTS];
    let mut pending: Vec<Option<(Instant, bool)>> = vec![None; PORTS];
    for (p, ready) in status.iter_mut().enumerate() {
        written += 1;
        *ready = true;
        feed.write_all(printout(written, p, true).as_bytes())?;
        pending[p] = Some((Instant::now(), true));
    }
    let mut waiting = PORTS;
    while waiting > 0 {
        let (_, p, s) = push_rx
            .recv_timeout(LOST_AFTER)
            .context("node B's client got no push for the first changes")?;
        if s == AgentStatus::Ready && pending[p].take().is_some() {
            waiting -= 1;
        }
    }

    let mut latencies = Vec::with_capacity(plan.changes);
    let mut writes: Vec<(u64, Instant)> = Vec::with_capacity(plan.changes);
    let mut queue: VecDeque<usize> = (0..PORTS).collect();
    let interval = Duration::from_secs_f64(1.0 / plan.per_second);
    let started = Instant::now();
    let next_port_free = |pending: &mut Vec<Option<(Instant, bool)>>,
                          latencies: &mut Vec<f64>,
                          block: bool|
     -> Result<()> {
        loop {
            let push = if block {
                push_rx.recv_timeout(LOST_AFTER).ok()
            } else {
                push_rx.try_recv().ok()
            };
            let Some((at, p, s)) = push else {
                if block {
                    bail!("a change got no push within {LOST_AFTER:?}");
                }
                return Ok(());
            };
            match pending[p] {
                Some((sent, ready)) if (s == AgentStatus::Ready) == ready => {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
                    pending[p] = None;
                    if block {
                        return Ok(());
                    }
                }
                other => bail!("port {}: pushed {s:?}, expected {other:?}", p + 1),
            }
        }
    };
    for i in 0..plan.changes {
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next_port_free(&mut pending, &mut latencies, false)?;
        let p = queue.pop_front().context("no port")?;
        while pending[p].is_some() {
            next_port_free(&mut pending, &mut latencies, true)?;
        }
        queue.push_back(p);
        status[p] = !status[p];
        written += 1;
        let text = printout(written, p, status[p]);
        let sent = Instant::now();
        feed.write_all(text.as_bytes())?;
        pending[p] = Some((sent, status[p]));
        writes.push((written, sent));
    }
    while pending.iter().any(Option::is_some) {
        next_port_free(&mut pending, &mut latencies, true)?;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Each write's ack: the first `{"committed":N}` with N at or past its number.
    let mut acks: Vec<(Instant, u64)> = Vec::new();
    while acks.last().is_none_or(|(_, n)| *n < written) {
        acks.push(
            ack_rx
                .recv_timeout(LOST_AFTER)
                .context("node A's feed did not acknowledge every change")?,
        );
    }
    let mut ack_ms = Vec::with_capacity(writes.len());
    let mut k = 0;
    for (n, sent) in &writes {
        while acks.get(k).is_some_and(|(_, c)| c < n) {
            k += 1;
        }
        if let Some((at, _)) = acks.get(k) {
            ack_ms.push(at.duration_since(*sent).as_secs_f64() * 1e3);
        }
    }

    let mut published_at = std::collections::HashMap::new();
    for (at, seqs) in published_rx.try_iter() {
        for n in seqs {
            published_at.entry(n).or_insert(at);
        }
    }
    let published_ms: Vec<f64> = writes
        .iter()
        .filter_map(|(n, sent)| {
            let at: &Instant = published_at.get(n)?;
            Some(at.duration_since(*sent).as_secs_f64() * 1e3)
        })
        .collect();

    reader.abort();
    watcher.abort();
    drop(feed);
    a.kill();
    b.kill();
    let _ = ack_reader.join();
    drop((node_a, node_b, setup));
    Ok(Figures {
        changes: latencies.len(),
        per_second: plan.changes as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.iter().copied().fold(0.0, f64::max),
        published_p50_ms: percentile(&published_ms, 50.0),
        published_p99_ms: percentile(&published_ms, 99.0),
        ack_p50_ms: percentile(&ack_ms, 50.0),
        ack_p99_ms: percentile(&ack_ms, 99.0),
    })
}
