//! `agent_query` and `fanout`: GLI clients over loopback TCP against the publisher's real
//! server (`ivrstate_publisher::serve`) with a Hub holding the rebuilt State.
//!
//! - agent_query: every client is logged in; one AgentQuery at a time, each from a client
//!   chosen at random, is timed from the write of the request to the decoded answer (latency
//!   with that many connections open, not throughput under load).
//! - fanout: one `Hub::publish` of one agent change that every client's IVR shows, timed from
//!   the hand-over of the change to the publishing thread until the last client's reader has
//!   decoded its MonitorInfo frame. `publish` runs on a thread of its own, as in `ivrstate
//!   serve` (the appender thread): it writes to the clients' sockets itself, and on the
//!   clients' thread it would hold them up.

use crate::data::{Rng, IVR};
use crate::report::percentile;
use anyhow::{anyhow, bail, Context, Result};
use ivrstate_model::{AgentStatus, IvrName, PortNum};
use ivrstate_projection::State;
use ivrstate_publisher::frame::{encode_frame, Frame, FrameDecoder, FrameKind};
use ivrstate_publisher::xml::{self, GctiMsg, LoginStatus, Message};
use ivrstate_publisher::{serve, Change, Hub, HubConfig, MonitorInfo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

pub type Fields = Vec<(&'static str, f64)>;

pub struct Plan {
    pub clients: usize,
    pub runs: usize,
    /// AgentQuery round trips per run.
    pub queries: usize,
    /// Publishes per run.
    pub publishes: usize,
}

/// A GLI client (also the `cluster` scenario's client of node B).
pub(crate) struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(),
            buf: vec![0; 16 * 1024],
        })
    }

    async fn send(&mut self, msg: Message) -> Result<()> {
        let doc = xml::encode(&GctiMsg {
            call_id: "1".into(),
            msg,
        });
        self.stream
            .write_all(&encode_frame(FrameKind::Data, &doc)?)
            .await?;
        Ok(())
    }

    async fn frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Ok(frame?);
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    pub(crate) async fn message(&mut self) -> Result<Message> {
        let frame = timeout(DEADLINE, self.frame())
            .await
            .map_err(|_| anyhow!("no answer within {DEADLINE:?}"))??;
        Ok(xml::decode(&frame.body)?.msg)
    }

    async fn login(&mut self) -> Result<()> {
        self.login_as(IVR).await.map(|_| ())
    }

    /// Sends LoginReq (version 4.0) as `ivr`; returns the LoginResp's status, having read the
    /// FlowControl Off that follows an accepted one (OK or InitInProgress).
    pub(crate) async fn login_as(&mut self, ivr: &str) -> Result<Option<LoginStatus>> {
        self.send(Message::LoginReq {
            version: "4.0".into(),
            client_name: ivr.into(),
            report_status: None,
            server_monitor: false,
        })
        .await?;
        let status = match self.message().await? {
            Message::LoginResp { status, .. } => status,
            other => bail!("expected LoginResp, got {}", other.name()),
        };
        if matches!(status, Some(LoginStatus::Ok | LoginStatus::InitInProgress)) {
            match self.message().await? {
                Message::FlowControl { .. } => {}
                other => bail!("expected FlowControl, got {}", other.name()),
            }
        }
        Ok(status)
    }
}

/// Runs both scenarios; returns (agent_query runs, fanout runs), one field list per run.
///
/// The server gets a runtime of its own, built as `ivrstate serve` builds it (multi-threaded, a
/// worker per core); the clients run on another thread, as they would on other machines, so
/// that their tasks are not scheduled among the server's.
pub fn run(state: State, ports: &[PortNum], plan: &Plan) -> Result<(Vec<Fields>, Vec<Fields>)> {
    if ports.is_empty() {
        bail!("no ports configured");
    }
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let hub = Hub::with_state(
        HubConfig {
            max_clients: plan.clients + 16,
            ..HubConfig::default()
        },
        state,
    );
    hub.set_ready(true);
    let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    // Client requests (agent control) are not sent here; the receiver only keeps the channel open.
    let (requests, _requests_rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server_rt.spawn(serve(listener, hub.clone(), requests, async {
        let _ = stopped.await;
    }));

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = client_rt.block_on(scenarios(&hub, addr, ports, plan));
    let _ = stop.send(());
    let stopped = client_rt.block_on(async {
        match timeout(DEADLINE, server).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(e)) => Err(anyhow!("the server task failed: {e}")),
            Err(_) => Err(anyhow!("the server did not stop within {DEADLINE:?}")),
        }
    });
    let result = result?;
    stopped?;
    Ok(result)
}

async fn scenarios(
    hub: &Arc<Hub>,
    addr: SocketAddr,
    ports: &[PortNum],
    plan: &Plan,
) -> Result<(Vec<Fields>, Vec<Fields>)> {
    let mut clients = Vec::with_capacity(plan.clients);
    for i in 0..plan.clients {
        let mut c = Client::connect(addr)
            .await
            .with_context(|| format!("connecting client {i}"))?;
        c.login()
            .await
            .with_context(|| format!("logging in client {i}"))?;
        clients.push(c);
    }

    let mut rng = Rng(7);
    let mut agent_query = Vec::new();
    for _ in 0..plan.runs {
        let mut samples = Vec::with_capacity(plan.queries);
        for q in 0..plan.queries {
            let c = &mut clients[rng.below(plan.clients as u64) as usize];
            let port = ports[rng.below(ports.len() as u64) as usize].clone();
            let req_id = q.to_string();
            let t = Instant::now();
            c.send(Message::AgentQuery {
                req_id: req_id.clone(),
                port,
            })
            .await?;
            match c.message().await? {
                Message::MonitorInfo {
                    req_id: Some(r), ..
                } if r == req_id => {}
                other => bail!("AgentQuery answered with {other:?}"),
            }
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        agent_query.push(vec![
            ("p50_us", percentile(&samples, 50.0)),
            ("p99_us", percentile(&samples, 99.0)),
            ("clients", plan.clients as f64),
        ]);
    }

    let fanout = fanout(hub, clients, ports, plan).await?;
    Ok((agent_query, fanout))
}

/// Times `plan.publishes` publishes per run to `clients`: `publish(n)` hands publish number n
/// (from 1) to the sending thread, and each is timed until every client's reader has decoded it.
async fn time_publishes(
    clients: Vec<Client>,
    plan: &Plan,
    mut publish: impl FnMut(u64) -> Result<()>,
) -> Result<Vec<Vec<f64>>> {
    // Each reader counts the frames it decodes; the one that completes a publish (the count
    // reaches clients x publishes so far) wakes the timer. One wake-up per publish, not one per
    // client: the harness should cost as little as it can next to what it measures.
    let arrived = Arc::new(AtomicU64::new(0));
    let all_arrived = Arc::new(Notify::new());
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = tokio::task::JoinSet::new();
    let count = clients.len() as u64;
    for mut c in clients {
        let (arrived, all_arrived, target) = (arrived.clone(), all_arrived.clone(), target.clone());
        readers.spawn(async move {
            while let Ok(frame) = c.frame().await {
                if frame.kind == FrameKind::Data
                    && arrived.fetch_add(1, Ordering::AcqRel) + 1 == target.load(Ordering::Acquire)
                {
                    all_arrived.notify_one();
                }
            }
        });
    }
    let mut runs = Vec::new();
    let mut n = 0u64;
    for _ in 0..plan.runs {
        let mut samples = Vec::with_capacity(plan.publishes);
        for _ in 0..plan.publishes {
            n += 1;
            let goal = n * count;
            target.store(goal, Ordering::Release);
            let t = Instant::now();
            publish(n)?;
            while arrived.load(Ordering::Acquire) < goal {
                timeout(DEADLINE, all_arrived.notified())
                    .await
                    .map_err(|_| anyhow!("a client did not get the publish within {DEADLINE:?}"))?;
            }
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        runs.push(samples);
    }
    readers.abort_all();
    Ok(runs)
}

/// The change of publish `n`: one agent's status, alternating.
fn change(ports: &[PortNum], n: u64) -> Change {
    Change {
        ivr: IvrName::from(IVR),
        info: MonitorInfo::Agent {
            port: ports[0].clone(),
            status: if n & 1 == 0 {
                AgentStatus::Ready
            } else {
                AgentStatus::NotReady
            },
        },
    }
}

async fn fanout(
    hub: &Arc<Hub>,
    clients: Vec<Client>,
    ports: &[PortNum],
    plan: &Plan,
) -> Result<Vec<Fields>> {
    let count = clients.len();
    // The appender's stand-in: publishes each change it is handed.
    let (publish, changes) = std::sync::mpsc::channel::<Change>();
    let publisher = std::thread::Builder::new()
        .name("publisher".into())
        .spawn({
            let hub = hub.clone();
            move || {
                for change in changes {
                    hub.publish(std::slice::from_ref(&change));
                }
            }
        })?;
    let ivrstate = time_publishes(clients, plan, |n| {
        publish
            .send(change(ports, n))
            .map_err(|_| anyhow!("the publishing thread has stopped"))
    })
    .await?;
    drop(publish);
    publisher
        .join()
        .map_err(|_| anyhow!("the publishing thread panicked"))?;
    let baseline = baseline(count, ports, plan).await?;
    Ok(ivrstate
        .iter()
        .zip(&baseline)
        .map(|(ours, plain)| {
            vec![
                ("p50_ms", percentile(ours, 50.0)),
                ("p99_ms", percentile(ours, 99.0)),
                ("clients", count as f64),
                ("baseline_p50_ms", percentile(plain, 50.0)),
                ("baseline_p99_ms", percentile(plain, 99.0)),
            ]
        })
        .collect())
}

/// The floor of a fan-out on this machine: the bytes one publish puts on every connection (a
/// MonitorInfo frame), sent to as many loopback sockets by a plain loop of non-blocking `send`s
/// from one thread (what a socket does not take is retried until it does), received by the
/// same readers.
async fn baseline(count: usize, ports: &[PortNum], plan: &Plan) -> Result<Vec<Vec<f64>>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accepter = std::thread::spawn(move || -> std::io::Result<Vec<std::net::TcpStream>> {
        (0..count)
            .map(|_| {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                Ok(stream)
            })
            .collect()
    });
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(
            Client::connect(addr)
                .await
                .with_context(|| format!("connecting baseline client {i}"))?,
        );
    }
    let streams = accepter
        .join()
        .map_err(|_| anyhow!("the accepting thread panicked"))??;
    let (publish, frames) = std::sync::mpsc::channel::<Vec<u8>>();
    let sender = std::thread::Builder::new()
        .name("plain-send".into())
        .spawn(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut streams = streams;
            for frame in frames {
                let mut left: Vec<(usize, usize)> = Vec::new();
                for (i, s) in streams.iter_mut().enumerate() {
                    match s.write(&frame) {
                        Ok(n) if n == frame.len() => {}
                        Ok(n) => left.push((i, n)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => left.push((i, 0)),
                        Err(e) => return Err(e),
                    }
                }
                while !left.is_empty() {
                    left.retain_mut(|(i, sent)| match streams[*i].write(&frame[*sent..]) {
                        Ok(n) => {
                            *sent += n;
                            *sent < frame.len()
                        }
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    });
                }
            }
            Ok(())
        })?;
    let runs = time_publishes(clients, plan, |n| {
        let change = change(ports, n);
        let doc = xml::encode(&GctiMsg {
            call_id: "1".into(),
            msg: Message::MonitorInfo {
                req_id: None,
                info: change.info,
            },
        });
        publish
            .send(encode_frame(FrameKind::Data, &doc)?)
            .map_err(|_| anyhow!("the sending thread has stopped"))
    })
    .await?;
    drop(publish);
    sender
        .join()
        .map_err(|_| anyhow!("the sending thread panicked"))??;
    Ok(runs)
}
