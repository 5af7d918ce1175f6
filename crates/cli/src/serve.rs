//! `ivrstate serve`: the IVR Server side of GLI, live.
//!
//! Threads and tasks, and why:
//! - the **appender** thread opens the engine, then takes jobs (batches of envelopes from
//!   followers, the feed and client requests), appends everything queued as ONE group commit to
//!   the log, folds the new records into the hub's state and publishes the changes. Events are
//!   therefore stored (flushed) before any client hears of them;
//! - the **engine** thread owns the engine from then on (sled is synchronous): it folds what the
//!   log gained into derived data, and answers the HTTP API's queries (closures) in between,
//!   each after catching up with the log. A long query delays derived data only, never a
//!   commit, an acknowledgement or a push;
//! - tokio tasks: the GLI server (publisher crate), one per followed file, the feed listener and
//!   its connections, the HTTP API and metrics (`ivrstate-http`). None of them touches the store.

mod replicated;

use crate::cluster::ClusterArgs;
use crate::{format_of, now, open_engine, DurabilityArg, Format};
use anyhow::{Context, Result};
use clap::Args;
use ivrstate_cluster::consume::consume;
use ivrstate_cluster::{Cluster, ClusterConfig};
use ivrstate_engine::Engine;
use ivrstate_http::{ChangeEvent, EngineQuery, EventHub, Metrics};
use ivrstate_ingest::appender::{self, Job};
use ivrstate_ingest::feed::{self, FeedConfig, FeedTokens};
use ivrstate_ingest::follow::spawn_follower;
use ivrstate_ingest::parse::Parsed;
use ivrstate_model::{ClientRequest, Envelope, Event, IvrName, Record, TServerName, Zone};
use ivrstate_projection::{Applied, Change};
use ivrstate_publisher::hub::{Hub, HubConfig};
use ivrstate_publisher::TlsConfig;
use ivrstate_store::{AppendReport, EventLog, SourceRun, StoreError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

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
    /// acknowledged with a line `{"committed":N}` (the running count for that connection). An
    /// address other than loopback needs --feed-token-file or --feed-client-ca (or
    /// --feed-insecure).
    #[arg(long, value_name = "ADDR")]
    feed_listen: Option<String>,
    /// Feed connections must start with the line `AUTH <token>`, a token of FILE (one per line:
    /// `TOKEN` or `NAME TOKEN`); others are closed unread.
    #[arg(long, value_name = "FILE", requires = "feed_listen")]
    feed_token_file: Option<PathBuf>,
    /// Serve the feed over TLS with this PEM certificate chain (needs --feed-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["feed_tls_key", "feed_listen"])]
    feed_tls_cert: Option<PathBuf>,
    /// The PEM private key of --feed-tls-cert.
    #[arg(long, value_name = "FILE", requires = "feed_tls_cert")]
    feed_tls_key: Option<PathBuf>,
    /// Mutual TLS on the feed: only clients with a certificate signed by a CA in FILE (PEM).
    #[arg(long, value_name = "FILE", requires = "feed_tls_cert")]
    feed_client_ca: Option<PathBuf>,
    /// Allow --feed-listen on an address other than loopback without a token or client CA:
    /// anyone who reaches it can then write to the log.
    #[arg(long, requires = "feed_listen")]
    feed_insecure: bool,
    /// Expose Prometheus text metrics on ADDR (any HTTP GET; `--http` serves them too, at
    /// `/metrics`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Serve the HTTP API, the SSE stream of changes, metrics and the wallboard on ADDR
    /// (read-only; loopback unless told otherwise).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on the API and metrics of `--http`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "IVRSTATE_HTTP_TOKEN",
        requires = "http"
    )]
    http_token: Option<String>,
    /// Seconds one HTTP request may take.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    http_timeout: u64,
    /// The T-Server of followed or fed logs that have no `Application name:` header.
    #[arg(long, value_name = "NAME")]
    tserver: Option<String>,
    /// The zone of the followed logs' times when their header does not say (as `ingest
    /// --log-tz`).
    #[arg(long, value_name = "ZONE", value_parser = |s: &str| crate::ingest::parse_zone(s).map(Box::new))]
    log_tz: Option<Box<Zone>>,
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
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(db: &Path, args: ServeArgs) -> Result<ExitCode> {
    if let Some(addr) = &args.http {
        check_http_bind(addr, args.http_token.is_some(), args.cluster.insecure)?;
    }
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
    let cluster = args.cluster.config()?;
    let feed = feed_protection(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(db.to_path_buf(), args, config, tls, feed, cluster))
}

/// What guards the feed: its tokens and TLS, checked before anything starts. A feed that
/// anyone on the network could write to is refused unless asked for with --feed-insecure.
fn feed_protection(args: &ServeArgs) -> Result<(Option<Arc<FeedTokens>>, Option<TlsConfig>)> {
    let Some(addr) = &args.feed_listen else {
        return Ok((None, None));
    };
    let tokens = match &args.feed_token_file {
        Some(path) => Some(Arc::new(FeedTokens::from_file(path)?)),
        None => None,
    };
    let tls = match (&args.feed_tls_cert, &args.feed_tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::with_client_ca(
            cert,
            key,
            args.feed_client_ca.as_deref(),
        )?),
        _ => None,
    };
    let protected = tokens.is_some() || args.feed_client_ca.is_some();
    if !protected && !is_loopback(addr) {
        if !args.feed_insecure {
            return Err(crate::usage(format!(
                "--feed-listen {addr} is reachable from other machines and anyone there could \
                 write to the log: add --feed-token-file FILE or --feed-client-ca FILE (with \
                 --feed-tls-cert), or --feed-insecure to allow it"
            )));
        }
        tracing::warn!(
            "--feed-insecure: the feed on {addr} accepts writes from anyone who can reach it"
        );
    }
    Ok((tokens, tls))
}

/// Whether every address `addr` names is a loopback address (an unresolvable one is not).
fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// An API open to the network without a token is refused at start, unless `--insecure`.
fn check_http_bind(addr: &str, token: bool, insecure: bool) -> Result<()> {
    use std::net::ToSocketAddrs;
    let resolved: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| crate::usage(format!("--http {addr}: {e}")))?
        .collect();
    let exposed = resolved.iter().any(|a| !a.ip().is_loopback());
    if exposed && !token && !insecure {
        return Err(crate::usage(format!(
            "--http {addr} is reachable from the network: give --http-token TOKEN (or --insecure to serve it open)"
        )));
    }
    Ok(())
}

async fn serve(
    db: PathBuf,
    args: ServeArgs,
    config: Option<ivrstate_engine::Config>,
    tls: Option<TlsConfig>,
    (feed_tokens, feed_tls): (Option<Arc<FeedTokens>>, Option<TlsConfig>),
    cluster: Option<ClusterConfig>,
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
    // The HTTP API's queries wait here for the engine thread.
    let (queries_tx, queries_rx) = mpsc::channel::<EngineQuery>(64);
    let events = args
        .http
        .is_some()
        .then(|| EventHub::new(16_384, ivrstate_http::events::PER_READER));
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    // Served from the start, as GLI is: until the store is open (in cluster mode: until the
    // node has caught up with the stream) `/readyz` and the API say 503.
    if let (Some(addr), Some(events)) = (&args.http, &events) {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--http)"))?;
        announce("http", listener.local_addr()?);
        let api = ivrstate_http::Api {
            hub: hub.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            queries: Arc::new(move |query| queries_tx.try_send(query).is_ok()),
            token: args.http_token.clone(),
            timeout: Duration::from_secs(args.http_timeout),
        };
        let router = ivrstate_http::router(Arc::new(api));
        // Not shut down gracefully: SSE readers never end on their own.
        tokio::spawn(ivrstate_http::serve(
            listener,
            router,
            std::future::pending(),
        ));
    }
    // Cluster mode: the sources' jobs go to the stream, and the appender applies the stream.
    let mut consumer = None;
    let config_source = args.config.as_ref().map_or_else(String::new, |path| {
        format!("ivrstate serve --config {}", path.display())
    });
    let appender = match cluster {
        None => {
            let ctx = Appender {
                db,
                durability: args.durability,
                config,
                config_source: config_source.clone(),
                hub: hub.clone(),
                metrics: metrics.clone(),
                stopping: stopping.clone(),
                queries: queries_rx,
                events: events.clone(),
                runtime: tokio::runtime::Handle::current(),
            };
            std::thread::Builder::new()
                .name("appender".into())
                .spawn(move || appender(ctx, jobs_rx, ready_tx))
                .context("starting the appender thread")?
        }
        Some(cluster) => {
            let cluster = Cluster::connect(cluster).await?;
            if let Some(config) = &config {
                let events =
                    crate::cluster::apply_config(&cluster, config, now(), &config_source).await?;
                tracing::info!(changes = events.len(), "configuration published");
            }
            // What the stream holds now: the node answers InitInProgress until it applied it.
            let target = cluster.last_sequence().await;
            let held = ivrstate_cluster::presence::Held::default();
            tokio::spawn(replicated::publish_jobs(
                cluster.clone(),
                jobs_rx,
                held.clone(),
            ));
            // Announces the T-Servers this node holds; records those of a node that died.
            let node = format!("{}-{}", std::process::id(), now().0);
            tokio::spawn(ivrstate_cluster::presence::run(
                cluster.clone(),
                node,
                held,
                now,
            ));
            let (deliveries_tx, deliveries_rx) = mpsc::channel(replicated::QUEUED_MESSAGES);
            let (start_tx, start_rx) = oneshot::channel::<u64>();
            let ctx = replicated::Replicating {
                db,
                durability: args.durability,
                hub: hub.clone(),
                metrics: metrics.clone(),
                target,
                queries: queries_rx,
                events: events.clone(),
                runtime: tokio::runtime::Handle::current(),
            };
            let thread = std::thread::Builder::new()
                .name("appender".into())
                .spawn(move || replicated::apply(ctx, deliveries_rx, start_tx, ready_tx))
                .context("starting the appender thread")?;
            // The consumer starts where the store's checkpoint says, once the store is open
            // (if it cannot be opened, the ready channel says why).
            consumer = Some(tokio::spawn(async move {
                if let Ok(from) = start_rx.await {
                    consume(cluster, from, deliveries_tx).await;
                }
            }));
            thread
        }
    };

    let (requests_tx, mut requests_rx) = mpsc::channel::<ClientRequest>(1024);
    {
        let jobs = jobs_tx.clone();
        tokio::spawn(async move {
            while let Some(request) = requests_rx.recv().await {
                let t = now();
                let source = Arc::from(format!(
                    "GLI client {} at {}",
                    request.ivr.as_str(),
                    request.client
                ));
                let envelope = Envelope {
                    time: t,
                    recorded: t,
                    event: Event::Request(request),
                };
                if jobs
                    .send(Job::unacknowledged(vec![envelope], source))
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
        let format = format_of(args.format, path);
        let (tx, mut rx) = mpsc::channel::<Vec<Parsed>>(64);
        spawn_follower(
            path.clone(),
            format,
            tserver.clone(),
            args.log_tz.as_deref().cloned(),
            tx,
        );
        let jobs = jobs_tx.clone();
        let counters = metrics.sources.clone();
        let source: Arc<str> = Arc::from(format!("file {} (followed)", path.display()));
        tokio::spawn(async move {
            while let Some(parsed) = rx.recv().await {
                let (envelopes, lines) = counters.count(parsed);
                if !envelopes.is_empty()
                    && jobs
                        .send(Job::unacknowledged(envelopes, source.clone()).at_lines(lines))
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
        tokio::spawn(feed::listen(
            feed,
            FeedConfig {
                tserver: tserver.clone(),
                jobs: jobs_tx.clone(),
                counters: metrics.sources.clone(),
                tokens: feed_tokens,
                tls: feed_tls.map(|t| t.acceptor().clone()),
            },
        ));
    }
    if let Some(addr) = &args.metrics {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics)"))?;
        announce("metrics", listener.local_addr()?);
        let router = ivrstate_http::metrics_router(metrics.clone(), hub.clone());
        tokio::spawn(ivrstate_http::serve(
            listener,
            router,
            std::future::pending(),
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
        .send(Job::unacknowledged(Vec::new(), Arc::from("")))
        .await;
    // In cluster mode the appender stops when the consumer (its only sender) is gone.
    if let Some(consumer) = consumer {
        consumer.abort();
    }
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
    /// The command that brought the configuration, recorded as its source.
    config_source: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Set when serve is shutting down: commit what is queued, then stop.
    stopping: Arc<AtomicBool>,
    /// Questions of the HTTP API, for the engine thread.
    queries: mpsc::Receiver<EngineQuery>,
    /// Where state changes go for SSE readers (with `--http`).
    events: Option<Arc<EventHub>>,
    /// serve's runtime: the engine thread waits on its channels through it.
    runtime: tokio::runtime::Handle,
}

/// The appender thread: opens the store (the hub answers InitInProgress meanwhile), applies the
/// configuration, hands the engine to the engine thread, then appends and publishes until told
/// to stop.
fn appender(
    ctx: Appender,
    jobs: mpsc::Receiver<Job>,
    ready: oneshot::Sender<Result<(), String>>,
) -> Result<()> {
    let Appender {
        db,
        durability,
        config,
        config_source,
        hub,
        metrics,
        stopping,
        queries,
        events,
        runtime,
    } = ctx;
    let opened = open_engine(&db, durability).and_then(|engine| {
        if let Some(config) = &config {
            let events = engine.apply_config_from(config, now(), &config_source)?;
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
    tracing::info!(seq = engine.log().last_seq(), "store open; serving");
    let log = engine.log().clone();
    let (stop_engine, engine_stopped) = oneshot::channel::<()>();
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || derive_and_answer(engine, queries, engine_stopped, &runtime))
        .context("starting the engine thread")?;
    let _ = ready.send(Ok(()));

    let mut applied = Applied::new();
    appender::run(
        jobs,
        &stopping,
        &mut |envelopes: &[Envelope], sources: &[SourceRun<'_>]| {
            commit(
                &log,
                &hub,
                &metrics,
                events.as_deref(),
                envelopes,
                sources,
                &mut applied,
            )
        },
    );
    let _ = stop_engine.send(());
    match engine_thread.join() {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("the engine thread panicked")),
    }
}

/// The engine thread: folds every record the log gains into derived data, and answers the
/// HTTP API's queries one at a time, each after catching up with the log. So a query sees
/// exactly the derived data of the log's durable records when it starts (every acknowledged
/// event included), never part of a commit: only this thread writes derived data, and not
/// while a query runs. Stops when told, after a last catch-up and a flush.
fn derive_and_answer(
    engine: &mut Engine,
    mut queries: mpsc::Receiver<EngineQuery>,
    mut stop: oneshot::Receiver<()>,
    runtime: &tokio::runtime::Handle,
) -> Result<()> {
    enum Next {
        Query(EngineQuery),
        CatchUp,
        Stop,
    }
    let mut tail = engine.log().subscribe();
    // Without --http nobody asks: the queue's sender is gone from the start.
    let mut asking = true;
    loop {
        let next = runtime.block_on(async {
            tokio::select! {
                biased;
                _ = &mut stop => Next::Stop,
                query = queries.recv(), if asking => match query {
                    Some(query) => Next::Query(query),
                    None => {
                        asking = false;
                        Next::CatchUp
                    }
                },
                grown = tail.changed() => match grown {
                    Ok(()) => Next::CatchUp,
                    Err(_) => Next::Stop,
                },
            }
        });
        if let Err(e) = engine.catch_up(|_, _| {}) {
            // Queries then answer from the derived data as it was; the log is unharmed.
            tracing::error!("deriving data from the log: {e}");
        }
        match next {
            Next::Query(query) => query(engine),
            Next::CatchUp => {}
            Next::Stop => break,
        }
    }
    engine.catch_up(|_, _| {})?;
    engine.store().flush()?;
    Ok(())
}

/// One group commit for the appender: append to the log (durably), then fold the new records
/// into the hub's state and publish the changes, so that every ack means stored and published.
/// Derived data follows on the engine thread.
pub(crate) fn commit(
    log: &EventLog,
    hub: &Hub,
    metrics: &Metrics,
    events: Option<&EventHub>,
    envelopes: &[Envelope],
    sources: &[SourceRun<'_>],
    applied: &mut Applied,
) -> Result<AppendReport, StoreError> {
    let started = Instant::now();
    let folded = hub.read(|state| state.last_seq());
    let report = log.append_from(envelopes, sources)?;
    metrics.committed(report.appended, report.duplicates, started.elapsed());
    // Read back from the log, which is the truth: the hub folds exactly the stored records.
    let records = log
        .read(folded + 1, report.last_seq)
        .collect::<Result<Vec<Record>, StoreError>>()?;
    let mut changes: Vec<Change> = Vec::new();
    let mut changed = Vec::new();
    hub.update(|state| {
        for record in &records {
            applied.clear();
            state.apply(record, applied);
            changes.append(&mut applied.changes);
            if events.is_some() && !applied.touched.is_empty() {
                changed.push(ivrstate_engine::changed_view(
                    state,
                    record.seq,
                    record.envelope.time,
                    &applied.touched,
                ));
            }
        }
    });
    hub.publish(&changes);
    if let Some(events) = events {
        events.publish(
            changed
                .iter()
                .filter_map(|view| {
                    let json = serde_json::to_string(view).ok()?;
                    Some(ChangeEvent {
                        seq: view.seq,
                        json,
                    })
                })
                .collect(),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivrstate_ingest::appender::Committed;
    use ivrstate_model::{Micros, TLibEvent, TLibKind};

    fn link_connected(tserver: &str, source_seq: u64) -> Envelope {
        Envelope {
            time: Micros(1_700_000_000_000_000 + source_seq as i64),
            recorded: Micros(1_700_000_000_000_000),
            event: Event::TLib(TLibEvent {
                tserver: TServerName::from(tserver),
                source_seq: Some(source_seq),
                kind: TLibKind::LinkConnected,
            }),
        }
    }

    /// `future`'s output, failing the test when it takes more than 10 s.
    fn within<F: std::future::Future>(
        runtime: &tokio::runtime::Runtime,
        what: &str,
        future: F,
    ) -> F::Output {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), future).await })
            .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
    }

    /// A query held running on the engine thread does not hold back a commit: the append is
    /// acknowledged and published (hub state and SSE) meanwhile, and the next query sees it.
    #[test]
    fn a_query_held_running_does_not_delay_commits_acks_or_pushes() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::new(HubConfig::default());
        let events = EventHub::new(64, 64);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(16);
        let (queries_tx, queries_rx) = mpsc::channel::<EngineQuery>(16);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let ctx = Appender {
            db: dir.path().to_path_buf(),
            durability: DurabilityArg::Full,
            config: None,
            config_source: String::new(),
            hub: hub.clone(),
            metrics: Arc::new(Metrics::default()),
            stopping: stopping.clone(),
            queries: queries_rx,
            events: Some(events.clone()),
            runtime: runtime.handle().clone(),
        };
        let thread = std::thread::spawn(move || appender(ctx, jobs_rx, ready_tx));
        let wait = Duration::from_secs(10);
        within(&runtime, "open", ready_rx).unwrap().unwrap();

        // A query that runs until the test lets it go.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<u64>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        queries_tx
            .blocking_send(Box::new(move |engine: &Engine| {
                started_tx.send(engine.log().last_seq()).unwrap();
                release_rx.recv().unwrap();
            }))
            .map_err(|_| ())
            .unwrap();
        assert_eq!(started_rx.recv_timeout(wait).unwrap(), 0);

        let mut sse = events.subscribe(None);
        let (ack_tx, ack_rx) = oneshot::channel();
        jobs_tx
            .blocking_send(Job {
                envelopes: vec![link_connected("TS1", 1)],
                source: Arc::from("test"),
                lines: Vec::new(),
                ack: Some(ack_tx),
            })
            .map_err(|_| ())
            .unwrap();
        let acked = within(&runtime, "the ack while a query runs", ack_rx)
            .unwrap()
            .unwrap();
        assert_eq!(
            acked,
            Committed {
                new: 1,
                duplicates: 0
            }
        );
        assert_eq!(hub.read(|s| s.last_seq()), 1, "the hub's state has it");
        let pushed = within(
            &runtime,
            "the SSE change while a query runs",
            sse.live.recv(),
        )
        .unwrap();
        assert_eq!(pushed.seq, 1);
        assert!(pushed.json.contains("TS1"), "{}", pushed.json);

        // Once the query is let go, the next one sees the acknowledged event in derived data.
        release_tx.send(()).unwrap();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel();
        queries_tx
            .blocking_send(Box::new(move |engine: &Engine| {
                let servers = engine.status().servers;
                answer_tx
                    .send((engine.derived_seq(), servers.len()))
                    .unwrap();
            }))
            .map_err(|_| ())
            .unwrap();
        assert_eq!(answer_rx.recv_timeout(wait).unwrap(), (1, 1));

        stopping.store(true, Ordering::SeqCst);
        jobs_tx
            .blocking_send(Job::unacknowledged(Vec::new(), Arc::from("")))
            .map_err(|_| ())
            .unwrap();
        thread.join().unwrap().unwrap();
    }
}
