//! One client's outbox: the bytes owed to it, in the order they were produced, and who writes
//! them to its socket.
//!
//! Two parties produce bytes for a client: [`Hub::publish`](crate::Hub::publish) (pushes) and
//! the connection task (answers). Both append under the outbox's lock, so frames never
//! interleave and go out in the order they were produced.
//!
//! **Who writes.** `publish`, when nobody is writing, hands its pushes to the socket at once,
//! with a non-blocking write, still under the lock (plain TCP only). That is the common case — a
//! client that keeps up — and it costs `publish` one `send` per client: no task wake-up, no
//! queue, no second thread touching the bytes. When the socket does not take
//! everything (its buffer is full), or the connection is TLS (whose stream only its task can
//! drive), the rest stays here and the connection task becomes *the writer*: it is woken, takes
//! the bytes and writes them, waiting for the socket as long as it must. While it is the writer
//! everyone else only appends — a direct write then would overtake the bytes it holds — until it
//! finds the outbox empty and gives the role back.
//!
//! **Slow clients.** A push is never waited for: when more than `capacity` pushes are waiting
//! here (the client is not reading), the client is disconnected (*killed*) and its bytes are
//! dropped; `publish` moves on.
//!
//! **Logins.** Pushes are wrapped in the envelope of the login they are for (its CallId), and a
//! push for an IVR the client is no longer logged in to is refused (*stale*). The connection task
//! changes the login in the same critical section as it appends the answer that goes with it
//! (LoginResp), before the hub registers the new login, and writes the answer only after: so no
//! push for the new IVR can overtake the LoginResp, none for the old one follows it, and a
//! client that has its LoginResp is registered.

use crate::frame::{self, FrameKind};
use crate::xml;
use ivrstate_model::IvrName;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tracing::warn;

/// An outbox's buffer keeps at most this much capacity once empty, so an idle client stays small.
const KEEP_CAPACITY: usize = 32 * 1024;

/// What became of a push.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pushed {
    /// Handed to the socket whole.
    Written,
    /// (Partly) waiting here; the connection task writes it.
    Queued,
    /// The client is not logged in to that IVR (any more): nothing done.
    Stale,
    /// More than `capacity` pushes were waiting: the client is now disconnected.
    Killed,
    /// The connection has ended (or was killed before).
    Ended,
}

/// What the connection task is to do after [`Outbox::take`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Take {
    /// Write the bytes just taken; then take again.
    Write,
    /// Nothing is waiting: the task is no longer the writer.
    Done,
    /// The hub disconnected the client.
    Killed,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Tells the connection task that it has become the writer.
    pub(crate) wake: Notify,
    /// Tells the connection task that the client was killed (it may be waiting on the socket).
    pub(crate) kill: Notify,
}

#[derive(Default)]
struct State {
    /// Bytes produced and not yet handed to the socket (nor taken by the task), in order.
    buf: Vec<u8>,
    /// Pushes (whole or in part) in `buf`.
    pushes: usize,
    /// The connection task is the writer. Always set while `buf` is not empty.
    task_writes: bool,
    /// The login pushes are for; `None` while not logged in.
    login: Option<Login>,
    /// Plain TCP: the socket's write side, for non-blocking writes by whoever appends.
    direct: Option<Arc<OwnedWriteHalf>>,
    end: Option<Ended>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Killed,
    Closed,
}

struct Login {
    ivr: IvrName,
    /// The envelope up to and including the CallId (see [`xml::envelope_prefix`]).
    prefix: Vec<u8>,
}

/// `publish`'s working space, reused from one client to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    bytes: Vec<u8>,
    /// Where each frame in `bytes` ends.
    ends: Vec<usize>,
}

impl Outbox {
    /// `direct`: the socket's write side when `publish` may write to it (plain TCP).
    pub(crate) fn new(direct: Option<Arc<OwnedWriteHalf>>) -> Self {
        Outbox {
            state: Mutex::new(State {
                direct,
                ..State::default()
            }),
            wake: Notify::new(),
            kill: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here can panic half-way through a change that matters; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes MonitorInfo `elements` (each encoded once for all clients) for `ivr`, wrapped in
    /// this client's envelope; never waits.
    pub(crate) fn push(
        &self,
        ivr: &IvrName,
        elements: &[Vec<u8>],
        capacity: usize,
        scratch: &mut Scratch,
    ) -> Pushed {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.end.is_some() {
            return Pushed::Ended;
        }
        let Some(login) = st.login.as_ref().filter(|l| &l.ivr == ivr) else {
            return Pushed::Stale;
        };
        scratch.ends.clear();
        let left = match (&st.direct, st.task_writes) {
            // Nobody is writing, so nothing is waiting: straight to the socket.
            (Some(direct), false) => {
                scratch.bytes.clear();
                compose(
                    &login.prefix,
                    elements,
                    &mut scratch.bytes,
                    &mut scratch.ends,
                );
                let written = write_now(direct, &scratch.bytes);
                if written == scratch.bytes.len() {
                    return Pushed::Written;
                }
                st.buf.extend_from_slice(&scratch.bytes[written..]);
                scratch.ends.iter().filter(|&&end| end > written).count()
            }
            // TLS, or the task is writing: after what is waiting.
            _ => {
                let start = st.buf.len();
                compose(&login.prefix, elements, &mut st.buf, &mut scratch.ends);
                if st.buf.len() == start {
                    return Pushed::Written; // nothing fitted a frame: nothing to send
                }
                scratch.ends.len()
            }
        };
        st.pushes += left;
        if st.pushes > capacity {
            st.end = Some(Ended::Killed);
            st.buf = Vec::new();
            st.pushes = 0;
            drop(guard);
            self.kill.notify_one();
            self.wake.notify_one();
            return Pushed::Killed;
        }
        let wake = !st.task_writes;
        st.task_writes = true;
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
        Pushed::Queued
    }

    /// The connection task's answers, after everything produced before them. With `login`
    /// (`Some`), the login is now that one (IVR and CallId; `None`: logged out): from here on
    /// pushes are wrapped for it and pushes for any other IVR are refused.
    ///
    /// The answers are not written here: the task becomes the writer and writes them with
    /// [`Outbox::take`] once the hub has the client under its new login. So a client that has
    /// read its LoginResp is registered, and gets every change published from then on; pushes
    /// published meanwhile queue behind the LoginResp.
    pub(crate) fn answer<'a>(
        &self,
        login: Option<Option<(&IvrName, &str)>>,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.end.is_some() {
            return;
        }
        if let Some(login) = login {
            st.login = login.map(|(ivr, call_id)| Login {
                ivr: ivr.clone(),
                prefix: xml::envelope_prefix(call_id),
            });
        }
        let start = st.buf.len();
        for f in frames {
            st.buf.extend_from_slice(f);
        }
        if st.buf.len() > start {
            st.task_writes = true;
        }
    }

    /// For the connection task, the writer: moves what is waiting into `into` (cleared first).
    pub(crate) fn take(&self, into: &mut Vec<u8>) -> Take {
        let mut st = self.lock();
        if st.end == Some(Ended::Killed) {
            return Take::Killed;
        }
        if st.buf.is_empty() {
            st.task_writes = false;
            shrink(&mut st.buf);
            return Take::Done;
        }
        into.clear();
        std::mem::swap(&mut st.buf, into);
        st.pushes = 0;
        Take::Write
    }

    /// The connection has ended: nothing more is accepted, and the socket is let go (the last
    /// owner of its write side shuts it down).
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.end.get_or_insert(Ended::Closed);
        st.buf = Vec::new();
        st.pushes = 0;
        st.login = None;
        st.direct = None;
    }
}

/// Appends one Data frame per element, `prefix + element + suffix`, to `out`, and where each
/// ends to `ends`. An element too large for a frame is left out (it would be for any client).
fn compose(prefix: &[u8], elements: &[Vec<u8>], out: &mut Vec<u8>, ends: &mut Vec<usize>) {
    for element in elements {
        let body_len = prefix.len() + element.len() + xml::ENVELOPE_SUFFIX.len();
        if frame::write_header(FrameKind::Data, body_len, out).is_err() {
            warn!(len = body_len, "push too large for a frame; not sent");
            continue;
        }
        out.extend_from_slice(prefix);
        out.extend_from_slice(element);
        out.extend_from_slice(xml::ENVELOPE_SUFFIX);
        ends.push(out.len());
    }
}

/// Writes as much of `bytes` as the socket takes now, without waiting; returns how much. An
/// error is not handled here: the connection task meets it again when it writes the rest, and
/// ends the connection.
fn write_now(direct: &OwnedWriteHalf, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match direct.try_write(&bytes[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    done
}

fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests;
