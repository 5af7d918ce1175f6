//! The tokio server: the only code in the crate that touches sockets.
//!
//! One task per connection, which reads, drives the [`Session`], writes its answers and drains
//! the client's push queue. A single task (rather than a reader and a writer) keeps an idle
//! client small (one future with a 2 KiB read buffer) and an AgentQuery answer free of a task
//! hop. Answers are written after the pushes already queued, so a client sees messages in the
//! order they were produced.

use crate::frame::{self, FrameDecoder, FrameKind};
use crate::hub::{ClientEntry, Hub, Push};
use crate::session::{Output, Session};
use crate::tls::TlsConfig;
use crate::view::StateView;
use crate::xml;
use ivrstate_model::ClientRequest;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 2048;
/// Pushes are coalesced into one write up to about this many bytes.
const WRITE_BATCH: usize = 16 * 1024;

/// Accepts GLI clients until `shutdown` completes, then closes every connection and returns.
/// Requests to record (agent control, LogMsg) go to `requests`.
pub async fn serve<S>(
    listener: TcpListener,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: StateView + Send + Sync + 'static,
{
    serve_tls(listener, hub, requests, None, shutdown).await
}

/// [`serve`], with every connection wrapped in TLS when `tls` is given. The handshake runs in
/// the connection's own task (a slow handshake holds up no one else) and must complete within
/// the login timeout.
pub async fn serve_tls<S>(
    listener: TcpListener,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
    tls: Option<TlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: StateView + Send + Sync + 'static,
{
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let max = hub.config().max_clients;
                if hub.connected.load(Ordering::Relaxed) >= max {
                    hub.refused.fetch_add(1, Ordering::Relaxed);
                    warn!(client = %addr, max, "connection refused: too many clients");
                    drop(stream);
                    continue;
                }
                // Answers are small and latency matters more than packet count.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(client = %addr, "set_nodelay: {e}");
                }
                let guard = ConnectedGuard::new(hub.clone());
                let hub = hub.clone();
                let requests = requests.clone();
                let tls = tls.clone();
                tasks.spawn(async move {
                    let _guard = guard;
                    match tls {
                        None => serve_connection(stream, addr, hub, requests).await,
                        Some(tls) => {
                            if let Some(stream) = handshake(&tls, stream, addr, &hub).await {
                                serve_connection(stream, addr, hub, requests).await;
                            }
                        }
                    }
                });
            }
        }
    }
    info!("GLI server stopping: closing {} connection(s)", tasks.len());
    hub.closing.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The server side of a TLS handshake, bounded by the login timeout and the shutdown.
async fn handshake<S: StateView>(
    tls: &TlsConfig,
    stream: TcpStream,
    addr: SocketAddr,
    hub: &Hub<S>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut closing = hub.closing.subscribe();
    let limit = hub.config().login_timeout;
    tokio::select! {
        r = tokio::time::timeout(limit, tls.acceptor().accept(stream)) => match r {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                info!(client = %addr, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                info!(client = %addr, "TLS handshake not completed within the login timeout");
                None
            }
        },
        _ = closing.changed() => None,
    }
}

/// Counts a connection as open for as long as it lives.
struct ConnectedGuard<S>(Arc<Hub<S>>);

impl<S> ConnectedGuard<S> {
    fn new(hub: Arc<Hub<S>>) -> Self {
        hub.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(hub)
    }
}

impl<S> Drop for ConnectedGuard<S> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection ended.
enum End {
    Closed(String),
    Io(io::Error),
}

/// Drives one connection over any byte stream (TCP, or TLS wrapped around it) until it ends.
/// It is not counted against `max_clients` (the caller does that).
pub async fn serve_connection<S, IO>(
    io: IO,
    addr: SocketAddr,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
) where
    S: StateView + Send + Sync + 'static,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (entry, rx) = hub.new_client(addr.to_string());
    let mut conn = Connection {
        io,
        hub: hub.clone(),
        requests,
        entry: entry.clone(),
        rx,
        session: Session::new(addr.to_string()).with_allowed_clients(hub.allowed_clients()),
        decoder: FrameDecoder::new(),
        out: Vec::new(),
        prefix: Vec::new(),
        prefix_call_id: String::new(),
        registered: None,
        closing: hub.closing.subscribe(),
    };
    debug!(client = %addr, "connected");
    let end = conn.run().await;
    let registered = conn.registered.take();
    hub.reregister(&entry, registered.as_ref(), None);
    match end {
        End::Closed(reason) => info!(client = %addr, "disconnected: {reason}"),
        End::Io(e) => info!(client = %addr, "disconnected: {e}"),
    }
    let _ = conn.io.shutdown().await;
}

struct Connection<S, IO> {
    io: IO,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
    entry: Arc<ClientEntry>,
    rx: mpsc::Receiver<Arc<Push>>,
    session: Session,
    decoder: FrameDecoder,
    /// Bytes waiting to be written (reused).
    out: Vec<u8>,
    /// The envelope up to the CallId for pushes, for `prefix_call_id`.
    prefix: Vec<u8>,
    prefix_call_id: String,
    /// The IVR the hub has this client under.
    registered: Option<ivrstate_model::IvrName>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl<S, IO> Connection<S, IO>
where
    S: StateView + Send + Sync + 'static,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(&mut self) -> End {
        let cfg = self.hub.config().clone();
        let login_deadline = Instant::now() + cfg.login_timeout;
        let mut logged_in_once = false;
        let mut last_read = Instant::now();
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let idle_deadline = cfg.idle_timeout.map(|d| last_read + d);
            let deadline = match (logged_in_once, idle_deadline) {
                (false, Some(i)) => Some(login_deadline.min(i)),
                (false, None) => Some(login_deadline),
                (true, i) => i,
            };
            tokio::select! {
                biased;
                _ = self.entry.kill.notified() => return End::Closed("outbound queue full".into()),
                _ = self.closing.changed() => return End::Closed("server shutting down".into()),
                Some(push) = self.rx.recv() => {
                    self.push_element(&push);
                    if let Err(e) = self.flush_queue().await {
                        return e;
                    }
                }
                read = self.io.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return End::Closed("client closed the connection".into()),
                        Ok(n) => n,
                        Err(e) => return End::Io(e),
                    };
                    last_read = Instant::now();
                    self.decoder.push(&buf[..n]);
                    if let Err(e) = self.handle_input(&mut logged_in_once).await {
                        return e;
                    }
                }
                _ = sleep_or_never(deadline) => {
                    return End::Closed(if logged_in_once { "idle timeout" } else { "no LoginReq before the login timeout" }.into());
                }
            }
        }
    }

    /// Handles every whole frame buffered.
    async fn handle_input(&mut self, logged_in_once: &mut bool) -> Result<(), End> {
        while let Some(next) = self.decoder.next_frame() {
            let outputs = match next {
                Err(e) => {
                    warn!(client = %self.session.client(), "{e}");
                    self.session.on_frame_error(&e)
                }
                Ok(frame) => {
                    // Pushes queued so far belong to the login they were queued under.
                    self.drain_queue();
                    // Session and registration under the state read lock: see hub.rs.
                    let state = self.hub.read_state();
                    let outputs = self.session.on_frame(frame, &*state, self.hub.is_ready());
                    let now = self.session.logged_in_ivr().cloned();
                    self.hub
                        .reregister(&self.entry, self.registered.as_ref(), now.as_ref());
                    self.registered = now;
                    drop(state);
                    *logged_in_once = self.session.logins() > 0;
                    outputs
                }
            };
            // Pushes queued before these answers go first.
            self.drain_queue();
            let mut close = None;
            for o in outputs {
                match o {
                    Output::Send(bytes) => {
                        self.out.extend_from_slice(&bytes);
                        self.hub.messages_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Output::Record(r) => {
                        // Waiting here slows only this client; a shutdown still ends it.
                        tokio::select! {
                            sent = self.requests.send(r) => if sent.is_err() {
                                warn!(client = %self.session.client(), "request not recorded: the recorder has stopped");
                            },
                            _ = self.closing.changed() => return Err(End::Closed("server shutting down".into())),
                        }
                    }
                    Output::Close { reason } => close = Some(reason),
                }
            }
            self.write_out().await?;
            if let Some(reason) = close {
                return Err(End::Closed(reason));
            }
        }
        Ok(())
    }

    /// Wraps a pushed MonitorInfo element with this session's CallId into `out`.
    fn push_element(&mut self, push: &Push) {
        // Logged out, or logged in to another IVR, since it was queued: not for us any more.
        if self.session.logged_in_ivr() != Some(&push.ivr) {
            return;
        }
        let Some(call_id) = self.session.call_id() else {
            return;
        };
        let element = &push.element;
        if self.prefix.is_empty() || self.prefix_call_id != call_id {
            self.prefix = xml::envelope_prefix(call_id);
            self.prefix_call_id = call_id.to_owned();
        }
        let body_len = self.prefix.len() + element.len() + xml::ENVELOPE_SUFFIX.len();
        if frame::write_header(FrameKind::Data, body_len, &mut self.out).is_err() {
            warn!(client = %self.session.client(), "push too large for a frame; not sent");
            return;
        }
        self.out.extend_from_slice(&self.prefix);
        self.out.extend_from_slice(element);
        self.out.extend_from_slice(xml::ENVELOPE_SUFFIX);
        self.hub.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves what is queued now into `out`, up to a batch.
    fn drain_queue(&mut self) {
        while self.out.len() < WRITE_BATCH {
            match self.rx.try_recv() {
                Ok(push) => self.push_element(&push),
                Err(_) => break,
            }
        }
    }

    async fn flush_queue(&mut self) -> Result<(), End> {
        loop {
            self.drain_queue();
            if self.out.is_empty() {
                return Ok(());
            }
            self.write_out().await?;
        }
    }

    /// Writes `out`, giving up on a kill, a shutdown or the write timeout.
    async fn write_out(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.hub.config().write_timeout;
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, self.io.write_all(&self.out)) => r,
            _ = self.entry.kill.notified() => return Err(End::Closed("outbound queue full".into())),
            _ = self.closing.changed() => return Err(End::Closed("server shutting down".into())),
        };
        self.out.clear();
        // An idle client keeps no big buffer.
        if self.out.capacity() > 2 * WRITE_BATCH {
            self.out = Vec::new();
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Closed(
                "write timed out: the client does not read".into(),
            )),
        }
    }
}

async fn sleep_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
