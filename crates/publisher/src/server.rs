//! The tokio server: the only code in the crate that touches sockets.
//!
//! One task per connection, which reads, drives the [`Session`] and writes its answers. Every
//! byte for a client — answers and pushes alike — goes through the client's outbox
//! (`outbox.rs`), which keeps them in the order they were produced and decides who writes:
//! whoever produced them, at once and without waiting, when the socket takes them (plain TCP),
//! or else this task, woken to write what is waiting. So a plain-TCP client that keeps up costs
//! `publish` one `send` and its task nothing; the task is woken only for a client that fell
//! behind, and for TLS. A single task per connection (rather than a reader and a writer) keeps
//! an idle client small (one future with a 2 KiB read buffer) and an AgentQuery answer free of a
//! task hop.

use crate::hub::{ClientEntry, Hub};
use crate::outbox::Take;
use crate::session::{Session, SessionEvent, Timers};
use crate::tls::TlsConfig;
use crate::view::StateView;
use ivrstate_model::{ClientRequest, IvrName};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

/// The session's clock: tokio's (so tests with a paused clock drive the session's timers too).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}
use tracing::{debug, info, warn};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 2048;
/// The task's write buffer keeps at most this much capacity between writes.
const KEEP_CAPACITY: usize = 32 * 1024;

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
                        None => serve_tcp(stream, addr, hub, requests).await,
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
/// It is not counted against `max_clients` (the caller does that). Only this task writes to
/// `io`: pushes wait in the outbox until it does (`serve` gives plain TCP the direct path).
pub async fn serve_connection<S, IO>(
    io: IO,
    addr: SocketAddr,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
) where
    S: StateView + Send + Sync + 'static,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, writer) = tokio::io::split(io);
    let entry = hub.new_client(addr.to_string(), None);
    drive(reader, writer, entry, addr, hub, requests).await;
}

/// A plain-TCP connection: its socket's write side is shared with `publish`, which writes to it
/// directly when nothing is waiting (see `outbox.rs`).
async fn serve_tcp<S>(
    stream: TcpStream,
    addr: SocketAddr,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
) where
    S: StateView + Send + Sync + 'static,
{
    let (reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    let entry = hub.new_client(addr.to_string(), Some(writer.clone()));
    drive(reader, SharedWrite(writer), entry, addr, hub, requests).await;
}

async fn drive<S, R, W>(
    reader: R,
    writer: W,
    entry: Arc<ClientEntry>,
    addr: SocketAddr,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
) where
    S: StateView + Send + Sync + 'static,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut conn = Connection {
        reader,
        writer,
        hub: hub.clone(),
        requests,
        entry: entry.clone(),
        session: Session::new(
            addr.to_string(),
            now(),
            Timers {
                login_timeout: hub.config().login_timeout,
                idle_timeout: hub.config().idle_timeout,
            },
        )
        .with_allowed_clients(hub.allowed_clients()),
        out: Vec::new(),
        login: None,
        registered: None,
        closing: hub.closing.subscribe(),
    };
    debug!(client = %addr, "connected");
    let end = conn.run().await;
    // Refuse pushes from now on, then leave the hub's lists.
    entry.outbox.close();
    let registered = conn.registered.take();
    hub.reregister(&entry, registered.as_ref(), None);
    match end {
        End::Closed(reason) => info!(client = %addr, "disconnected: {reason}"),
        End::Io(e) => info!(client = %addr, "disconnected: {e}"),
    }
    let _ = conn.writer.shutdown().await;
}

/// The write side of a plain-TCP connection as the connection task uses it; `publish` holds
/// the same socket (through the outbox) for its non-blocking writes. The outbox sees to it that
/// only one of them writes at a time.
struct SharedWrite(Arc<OwnedWriteHalf>);

impl AsyncWrite for SharedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream: &TcpStream = (*self.0).as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write(buf) {
                // The readiness was stale and is now cleared: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The write side is shut down when its last owner drops it (the outbox lets go of it when
    /// the connection ends).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Connection<S, R, W> {
    reader: R,
    writer: W,
    hub: Arc<Hub<S>>,
    requests: mpsc::Sender<ClientRequest>,
    entry: Arc<ClientEntry>,
    session: Session,
    /// Bytes taken from the outbox, being written (reused).
    out: Vec<u8>,
    /// The login the outbox was last given: IVR and CallId.
    login: Option<(IvrName, String)>,
    /// The IVR the hub has this client under.
    registered: Option<IvrName>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl<S, R, W> Connection<S, R, W>
where
    S: StateView + Send + Sync + 'static,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async fn run(&mut self) -> End {
        let mut buf = [0u8; READ_CHUNK];
        // One wake-up future for the connection's life rather than one per loop: a permit given
        // while it is not polled is kept for it.
        let entry = self.entry.clone();
        let wake = entry.outbox.wake.notified();
        tokio::pin!(wake);
        loop {
            let deadline = self.session.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut wake => {
                    wake.set(entry.outbox.wake.notified());
                    if let Err(e) = self.flush().await {
                        return e;
                    }
                }
                _ = self.closing.changed() => return End::Closed("server shutting down".into()),
                read = self.reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return End::Closed("client closed the connection".into()),
                        Ok(n) => n,
                        Err(e) => return End::Io(e),
                    };
                    self.handle_bytes(buf.get(..n).unwrap_or_default());
                    if let Err(e) = self.carry_out().await {
                        return e;
                    }
                }
                _ = sleep_or_never(deadline) => {
                    self.session.handle_timeout(now());
                    self.commit();
                    if let Err(e) = self.carry_out().await {
                        return e;
                    }
                }
            }
        }
    }

    /// Hands the bytes read to the session and its answers to the outbox.
    fn handle_bytes(&mut self, input: &[u8]) {
        // Session and registration under the state read lock: see hub.rs.
        let hub = self.hub.clone();
        let state = hub.read_state();
        self.session
            .handle_bytes(now(), input, &*state, hub.is_ready());
        // The answers (and the login that goes with them) are in the outbox before the hub has
        // the client under a new IVR: no push for it can overtake the LoginResp, and none for
        // the IVR left is taken any more.
        self.commit();
        let logged_in = self.session.logged_in_ivr().cloned();
        hub.reregister(&self.entry, self.registered.as_ref(), logged_in.as_ref());
        self.registered = logged_in;
    }

    /// Records what the session asks to record, writes what waits in the outbox, and ends the
    /// connection when the session closed it.
    async fn carry_out(&mut self) -> Result<(), End> {
        let mut close = None;
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Record(r) => {
                    // Waiting here slows only this client; a shutdown still ends it.
                    tokio::select! {
                        sent = self.requests.send(r) => if sent.is_err() {
                            warn!(client = %self.session.client(), "request not recorded: the recorder has stopped");
                        },
                        _ = self.closing.changed() => return Err(End::Closed("server shutting down".into())),
                    }
                }
                SessionEvent::Close { reason } => close = Some(reason),
            }
        }
        self.flush().await?;
        match close {
            Some(reason) => Err(End::Closed(reason)),
            None => Ok(()),
        }
    }

    /// Puts the session's answers in the outbox, with the session's login when it changed.
    fn commit(&mut self) {
        let login = self.session.logged_in_ivr().zip(self.session.call_id());
        let changed = login != self.login.as_ref().map(|(ivr, c)| (ivr, c.as_str()));
        let login = login.map(|(ivr, c)| (ivr.clone(), c.to_owned()));
        let mut frames = Vec::new();
        while let Some(frame) = self.session.poll_transmit() {
            frames.push(frame);
        }
        self.hub
            .messages_sent
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        self.entry.outbox.answer(
            changed.then(|| login.as_ref().map(|(ivr, c)| (ivr, c.as_str()))),
            refs,
        );
        if changed {
            self.login = login;
        }
    }

    /// Writes what is waiting in the outbox, if this task is the writer, until nothing is.
    async fn flush(&mut self) -> Result<(), End> {
        loop {
            match self.entry.outbox.take(&mut self.out) {
                Take::Write => self.write_out().await?,
                Take::Done => {
                    // An idle client keeps no big buffer.
                    if self.out.capacity() > KEEP_CAPACITY {
                        self.out = Vec::new();
                    }
                    return Ok(());
                }
                Take::Killed => return Err(End::Closed("outbound queue full".into())),
            }
        }
    }

    /// Writes `out`, giving up on a kill, a shutdown or the write timeout.
    async fn write_out(&mut self) -> Result<(), End> {
        let timeout = self.hub.config().write_timeout;
        let (writer, out) = (&mut self.writer, &self.out);
        let write = async move {
            writer.write_all(out).await?;
            // TLS may hold the end of what it was given.
            writer.flush().await
        };
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, write) => r,
            _ = self.entry.outbox.kill.notified() => return Err(End::Closed("outbound queue full".into())),
            _ = self.closing.changed() => return Err(End::Closed("server shutting down".into())),
        };
        self.out.clear();
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
