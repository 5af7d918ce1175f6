//! `ivrstate serve`: the IVR Server side of GLI, live.
//!
//! Threads and tasks, and why:
//! - the **appender** thread owns the engine (sled is synchronous): it takes jobs (batches of
//!   envelopes from followers, the feed and client requests), appends everything queued as ONE
//!   group commit, folds it, then updates the hub's state and publishes the changes. Events are
//!   therefore stored (flushed) before any client hears of them;
//! - tokio tasks: the GLI server (publisher crate), one per followed file, the feed listener and
//!   its connections, the metrics endpoint. None of them touches the store.

use crate::ingest::{Format, BATCH};
use crate::metrics::Metrics;
use crate::{now, open_engine, DurabilityArg};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_engine::Engine;
use ivrstate_ingest::follow::{feed_tlog, follow_lines, FollowItem, LineSplitter};
use ivrstate_ingest::parse::{ndjson::parse_ndjson_line, tlog::TlogParser, Parsed, MAX_LINE};
use ivrstate_model::{ClientRequest, Envelope, Event, IvrName, Record, TServerName};
use ivrstate_projection::{Applied, Change};
use ivrstate_publisher::hub::{Hub, HubConfig};
use ivrstate_publisher::TlsConfig;
use ivrstate_store::AppendOutcome;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// A printout is complete when the next line arrives; when a source goes quiet for this long,
/// the printout in progress is ended so that its event is not held back (latency goal: 50 ms
/// from the file to the client).
const IDLE_FLUSH: Duration = Duration::from_millis(10);
/// How often a followed file is polled when it has nothing new.
const FOLLOW_POLL: Duration = Duration::from_millis(5);

#[derive(Args)]
pub struct ServeArgs {
    /// Address for GLI clients (IVRs). Loopback by default; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7050", value_name = "ADDR")]
    listen: String,
    /// A configuration file applied at start (as `config apply`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Follow a T-Server log (repeatable): read from the start (dedup makes that idempotent),
    /// then follow appends, surviving rotation and truncation.
    #[arg(long, value_name = "FILE")]
    follow: Vec<PathBuf>,
    /// Accept a TCP feed of T-Server printouts or NDJSON lines on ADDR; each committed batch is
    /// acknowledged with a line `{"committed":N}` (the running count for that connection).
    #[arg(long, value_name = "ADDR")]
    feed_listen: Option<String>,
    /// Expose Prometheus text metrics on ADDR (any HTTP GET).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// The T-Server of followed or fed logs that have no `Application name:` header.
    #[arg(long, value_name = "NAME")]
    tserver: Option<String>,
    /// Format of the followed files (default: by extension, as `ingest`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Most GLI connections at once; more are refused (closed at once).
    #[arg(long, default_value_t = 4096)]
    max_clients: usize,
    /// Messages queued per client; a client that falls this far behind is disconnected.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Seconds a new connection may take to send its LoginReq.
    #[arg(long, default_value_t = 30)]
    login_timeout: u64,
    /// Only these ClientNames may log in (repeatable; default: every configured IVR). Others
    /// get NoSuchClient and are disconnected.
    #[arg(long = "allow", value_name = "NAME")]
    allow: Vec<String>,
    /// Serve GLI over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// `relaxed` skips the flush per batch.
    #[arg(long, value_enum, default_value = "full")]
    durability: DurabilityArg,
}

/// A batch for the appender, with where to say how it went.
pub struct Job {
    pub envelopes: Vec<Envelope>,
    pub ack: Option<oneshot::Sender<Result<(u64, u64), String>>>,
}

pub fn run(db: &Path, args: ServeArgs) -> Result<ExitCode> {
    // Read the configuration before anything else: a bad file is a clear error at once.
    let config = match &args.config {
        Some(path) => {
            let name = path.display().to_string();
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
            Some(ivrstate_engine::config::parse(&text, &name)?)
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(db.to_path_buf(), args, config, tls))
}

async fn serve(
    db: PathBuf,
    args: ServeArgs,
    config: Option<ivrstate_engine::Config>,
    tls: Option<TlsConfig>,
) -> Result<ExitCode> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    announce("gli", listener.local_addr()?);
    let hub = Hub::new(HubConfig {
        queue_capacity: args.queue,
        max_clients: args.max_clients,
        login_timeout: Duration::from_secs(args.login_timeout),
        allowed_clients: (!args.allow.is_empty()).then(|| {
            args.allow
                .iter()
                .map(|n| IvrName::from(n.as_str()))
                .collect()
        }),
        ..HubConfig::default()
    });
    let metrics = Arc::new(Metrics::default());

    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(256);
    let stopping = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    let appender = {
        let ctx = Appender {
            db,
            durability: args.durability,
            config,
            hub: hub.clone(),
            metrics: metrics.clone(),
            stopping: stopping.clone(),
        };
        std::thread::Builder::new()
            .name("appender".into())
            .spawn(move || appender(ctx, jobs_rx, ready_tx))
            .context("starting the appender thread")?
    };

    let (requests_tx, mut requests_rx) = mpsc::channel::<ClientRequest>(1024);
    {
        let jobs = jobs_tx.clone();
        tokio::spawn(async move {
            while let Some(request) = requests_rx.recv().await {
                let t = now();
                let envelope = Envelope {
                    time: t,
                    recorded: t,
                    event: Event::Request(request),
                };
                if jobs
                    .send(Job {
                        envelopes: vec![envelope],
                        ack: None,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }

    let tserver = args.tserver.as_deref().map(TServerName::from);
    for path in &args.follow {
        let format = args
            .format
            .unwrap_or_else(|| crate::ingest::guess_format(path));
        let (tx, mut rx) = mpsc::channel::<Vec<Parsed>>(64);
        spawn_follower(path.clone(), format, tserver.clone(), tx, true);
        let jobs = jobs_tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some(parsed) = rx.recv().await {
                let envelopes = metrics.count_parsed(parsed);
                if !envelopes.is_empty()
                    && jobs
                        .send(Job {
                            envelopes,
                            ack: None,
                        })
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
    }

    if let Some(addr) = &args.feed_listen {
        let feed = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--feed-listen)"))?;
        announce("feed", feed.local_addr()?);
        tokio::spawn(feed_listener(
            feed,
            jobs_tx.clone(),
            tserver.clone(),
            metrics.clone(),
        ));
    }
    if let Some(addr) = &args.metrics {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics)"))?;
        announce("metrics", listener.local_addr()?);
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            hub.clone(),
        ));
    }
    let wake_appender = jobs_tx;

    // Opening the store happens on the appender thread; meanwhile logins get InitInProgress.
    // A store that cannot be opened ends serve with its error.
    let startup = async {
        match ready_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => Err(anyhow::anyhow!(
                "the appender stopped while opening the store"
            )),
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(ivrstate_publisher::serve_tls(
        listener,
        hub.clone(),
        requests_tx,
        tls,
        async {
            let _ = stop_rx.await;
        },
    ));
    let outcome = tokio::select! {
        started = startup => match started {
            Ok(()) => {
                shutdown_signal().await;
                tracing::info!("shutting down: no new connections; flushing");
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ = shutdown_signal() => Ok(()),
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    // Sources keep their senders until the runtime ends; tell the appender to commit what is
    // queued and stop, and wake it with an empty job.
    stopping.store(true, Ordering::SeqCst);
    let _ = wake_appender
        .send(Job {
            envelopes: Vec::new(),
            ack: None,
        })
        .await;
    let joined = tokio::task::spawn_blocking(move || appender.join()).await;
    if let Ok(Ok(Err(e))) = joined {
        tracing::error!("appender: {e}");
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

fn announce(what: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    // Tests and scripts read this line to find the port when they asked for port 0.
    println!("{what} listening on {addr}");
    let _ = std::io::stdout().flush();
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What the appender thread works with.
struct Appender {
    db: PathBuf,
    durability: DurabilityArg,
    config: Option<ivrstate_engine::Config>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Set when serve is shutting down: commit what is queued, then stop.
    stopping: Arc<AtomicBool>,
}

/// The appender thread: opens the store (the hub answers InitInProgress meanwhile), applies the
/// configuration, then appends and publishes until told to stop.
fn appender(
    ctx: Appender,
    mut jobs: mpsc::Receiver<Job>,
    ready: oneshot::Sender<Result<(), String>>,
) -> Result<()> {
    let Appender {
        db,
        durability,
        config,
        hub,
        metrics,
        stopping,
    } = ctx;
    let opened = open_engine(&db, durability).and_then(|engine| {
        if let Some(config) = &config {
            let events = engine.apply_config(config, now())?;
            tracing::info!(changes = events.len(), "configuration applied");
        }
        Ok(engine)
    });
    let engine = match opened {
        Ok(engine) => engine,
        Err(e) => {
            let message = format!("{e:#}");
            let _ = ready.send(Err(message.clone()));
            return Err(anyhow::anyhow!(message));
        }
    };
    hub.update(|state| state.clone_from(engine.state()));
    hub.set_ready(true);
    metrics.attach_store(engine.store().clone());
    let _ = ready.send(Ok(()));
    tracing::info!(seq = engine.log().last_seq(), "store open; serving");

    let mut applied = Applied::state_only();
    while let Some(first) = jobs.blocking_recv() {
        // Group commit: everything queued right now goes into one append and one flush.
        let mut batch = vec![first];
        let mut total = batch[0].envelopes.len();
        while total < BATCH * 8 {
            match jobs.try_recv() {
                Ok(job) => {
                    total += job.envelopes.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        commit(engine, &hub, &metrics, batch, &mut applied);
        if stopping.load(Ordering::SeqCst) {
            jobs.close();
            let rest: Vec<Job> = std::iter::from_fn(|| jobs.try_recv().ok()).collect();
            if !rest.is_empty() {
                commit(engine, &hub, &metrics, rest, &mut applied);
            }
            break;
        }
    }
    engine.store().flush()?;
    Ok(())
}

fn commit(
    engine: &mut Engine,
    hub: &Hub,
    metrics: &Metrics,
    batch: Vec<Job>,
    applied: &mut Applied,
) {
    // The jobs' envelopes are moved into one batch; each job keeps its count and its ack.
    let mut envelopes: Vec<Envelope> = Vec::new();
    let mut acks = Vec::with_capacity(batch.len());
    for job in batch {
        acks.push((job.envelopes.len(), job.ack));
        envelopes.extend(job.envelopes);
    }
    let mut records: Vec<Record> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let started = Instant::now();
    let result = engine.append(&envelopes, |record, record_changes| {
        records.push(record.clone());
        changes.extend_from_slice(record_changes);
    });
    match result {
        Ok(report) => {
            metrics.committed(report.appended, report.duplicates, started.elapsed());
            hub.update(|state| {
                for record in &records {
                    applied.clear();
                    state.apply(record, applied);
                }
            });
            hub.publish(&changes);
            let mut outcomes = report.outcomes.iter();
            for (count, ack) in acks {
                let (mut new, mut dup) = (0, 0);
                for outcome in outcomes.by_ref().take(count) {
                    match outcome {
                        AppendOutcome::New(_) => new += 1,
                        AppendOutcome::Duplicate(_) => dup += 1,
                    }
                }
                if let Some(ack) = ack {
                    let _ = ack.send(Ok((new, dup)));
                }
            }
        }
        Err(e) => {
            tracing::error!("append failed, {} events not stored: {e}", envelopes.len());
            for (_, ack) in acks {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Follows `path` and sends what its lines parse to, batch by batch. Runs until the receiver
/// is dropped. `idle_flush`: end a printout when the file goes quiet (live serving).
pub fn spawn_follower(
    path: PathBuf,
    format: Format,
    tserver: Option<TServerName>,
    tx: mpsc::Sender<Vec<Parsed>>,
    idle_flush: bool,
) {
    tokio::spawn(async move {
        let name = path.display().to_string();
        let mut lines = follow_lines(path, FOLLOW_POLL);
        let mut parser = TlogParser::new(&name, tserver, now());
        let mut out: Vec<Parsed> = Vec::new();
        loop {
            let item = match tokio::time::timeout(IDLE_FLUSH, lines.recv()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    if idle_flush {
                        parser.finish(&mut out);
                    }
                    if !out.is_empty() && tx.send(std::mem::take(&mut out)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            feed(&name, format, &item, &mut parser, &mut out);
            while out.len() < BATCH {
                match lines.try_recv() {
                    Ok(item) => feed(&name, format, &item, &mut parser, &mut out),
                    Err(_) => break,
                }
            }
            if out.len() >= BATCH && tx.send(std::mem::take(&mut out)).await.is_err() {
                return;
            }
        }
        parser.finish(&mut out);
        let _ = tx.send(out).await;
    });
}

fn feed(
    name: &str,
    format: Format,
    item: &FollowItem,
    parser: &mut TlogParser,
    out: &mut Vec<Parsed>,
) {
    match (format, item) {
        (Format::Tlog, _) => feed_tlog(item, parser, out),
        (
            Format::Ndjson,
            FollowItem::Line {
                bytes,
                line_no,
                byte_offset,
                ..
            },
        ) => {
            out.extend(parse_ndjson_line(name, bytes, *line_no, *byte_offset));
        }
        (_, FollowItem::Error { message }) => tracing::warn!("{name}: {message}"),
        (_, FollowItem::Reset { reason }) => tracing::info!("{name}: {reason}"),
    }
}

/// Accepts feed connections: each sends T-Server printouts or NDJSON lines (decided by its
/// first non-blank line) and gets one line back per committed batch.
async fn feed_listener(
    listener: TcpListener,
    jobs: mpsc::Sender<Job>,
    tserver: Option<TServerName>,
    metrics: Arc<Metrics>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("feed accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let jobs = jobs.clone();
        let tserver = tserver.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = feed_connection(stream, peer, jobs, tserver, metrics).await {
                tracing::warn!("feed {peer}: {e}");
            }
        });
    }
}

async fn feed_connection(
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    jobs: mpsc::Sender<Job>,
    tserver: Option<TServerName>,
    metrics: Arc<Metrics>,
) -> Result<()> {
    let name = format!("feed {peer}");
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut parser = TlogParser::new(&name, tserver, now());
    let mut format: Option<Format> = None;
    let mut items: Vec<FollowItem> = Vec::new();
    let mut parsed: Vec<Parsed> = Vec::new();
    let mut committed: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout(IDLE_FLUSH, stream.read(&mut buf)).await;
        let eof = match read {
            Ok(Ok(0)) => {
                splitter.flush_partial(&mut items);
                true
            }
            Ok(Ok(n)) => {
                splitter.push(&buf[..n], &mut items);
                false
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                // Quiet: end the printout in progress so its event is committed and acked.
                parser.finish(&mut parsed);
                false
            }
        };
        for item in items.drain(..) {
            if format.is_none() {
                if let FollowItem::Line { bytes, .. } = &item {
                    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                    format = first.map(|&b| {
                        if b == b'{' {
                            Format::Ndjson
                        } else {
                            Format::Tlog
                        }
                    });
                }
            }
            feed(
                &name,
                format.unwrap_or(Format::Tlog),
                &item,
                &mut parser,
                &mut parsed,
            );
        }
        if eof {
            parser.finish(&mut parsed);
        }
        let envelopes = metrics.count_parsed(std::mem::take(&mut parsed));
        if !envelopes.is_empty() {
            let (ack_tx, ack_rx) = oneshot::channel();
            jobs.send(Job {
                envelopes,
                ack: Some(ack_tx),
            })
            .await
            .map_err(|_| anyhow::anyhow!("the store is shutting down"))?;
            match ack_rx.await {
                Ok(Ok((new, dup))) => {
                    committed += new + dup;
                    stream
                        .write_all(format!("{{\"committed\":{committed}}}\n").as_bytes())
                        .await?;
                }
                Ok(Err(e)) => {
                    stream
                        .write_all(
                            format!("{{\"error\":{}}}\n", serde_json::Value::from(e)).as_bytes(),
                        )
                        .await?;
                }
                Err(_) => anyhow::bail!("the store stopped before committing"),
            }
        }
        if eof {
            return Ok(());
        }
    }
}
