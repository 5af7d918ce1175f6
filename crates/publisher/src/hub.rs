//! The hub: the current state, whether the server is ready, and the logged-in clients by IVR.
//!
//! `publish` encodes each MonitorInfo element once and hands the same bytes to every client of
//! that IVR through the client's [outbox](crate::outbox), which wraps them with the client's
//! CallId. For a plain-TCP client that keeps up, that means a non-blocking write straight to its
//! socket, from the publishing thread: no queue and no task wake-up per client, which is what a
//! fan-out to many clients costs otherwise. What the socket does not take waits in the outbox
//! for the connection task to write. More than `queue_capacity` pushes waiting disconnects that
//! client (invariant 8: slow clients never stall the store): `publish` never waits for a client.
//! All the changes of one `publish` go to a client in one write.
//!
//! The price: `publish` pays for the `send` of each client (a few microseconds each) on the
//! calling thread (`serve`'s appender), once per call, however many changes the call carries.
//!
//! Lock order, to keep pushes from being lost at login: a connection handles a LoginReq and
//! registers its client while holding the state read lock; an update takes the write lock and
//! publishes after releasing it. So a client either logged in before the update (and is
//! registered when the change is published) or after it (and saw the new state at login).
//! Locks are taken in the order state -> clients -> outbox, never the other way.

use crate::outbox::{Outbox, Pushed, Scratch};
use crate::view::{Change, StateView};
use crate::xml;
use ivrstate_model::IvrName;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tracing::warn;

/// Limits and timeouts of the server.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Pushes waiting for one client (not yet taken by its socket) before it is disconnected.
    pub queue_capacity: usize,
    /// Connections beyond this are closed at once.
    pub max_clients: usize,
    /// A connection that has sent no LoginReq by then is closed.
    pub login_timeout: Duration,
    /// A connection that has sent nothing for this long is closed. `None` (the default): GLI
    /// clients with keep-alive off are legitimately silent for hours.
    pub idle_timeout: Option<Duration>,
    /// A write that has not completed by then closes the connection (a client that stopped
    /// reading while sending requests, which fills no push queue).
    pub write_timeout: Duration,
    /// Client names (IVR names) that may log in, as the original IVR Server's client list;
    /// any other ClientName is answered `NoSuchClient` and closed. `None` (the default): every
    /// IVR of the configuration may log in.
    pub allowed_clients: Option<Vec<IvrName>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 1024,
            max_clients: 4096,
            login_timeout: Duration::from_secs(30),
            idle_timeout: None,
            write_timeout: Duration::from_secs(30),
            allowed_clients: None,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct HubMetrics {
    /// Open connections (logged in or not).
    pub connected: usize,
    /// Logged-in clients per IVR, sorted by IVR.
    pub logged_in: Vec<(IvrName, usize)>,
    /// Frames sent to clients (handed to the socket or waiting for it).
    pub messages_sent: u64,
    /// Clients disconnected because their queue was full.
    pub queue_drops: u64,
    /// Connections refused over `max_clients`.
    pub refused: u64,
}

/// What a fan-out did: pushes sent, and the clients to take off the list (killed or gone).
#[derive(Default)]
struct FanOut {
    sent: u64,
    dropped: Vec<u64>,
}

/// A connected client as the hub sees it.
pub(crate) struct ClientEntry {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) outbox: Outbox,
}

pub struct Hub<S = ivrstate_projection::State> {
    config: HubConfig,
    /// `config.allowed_clients` as a set, shared by every session.
    allowed: Option<Arc<HashSet<IvrName>>>,
    state: RwLock<S>,
    ready: AtomicBool,
    clients: Mutex<HashMap<IvrName, Vec<Arc<ClientEntry>>>>,
    next_id: AtomicU64,
    pub(crate) connected: AtomicUsize,
    pub(crate) messages_sent: AtomicU64,
    queue_drops: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Set to true when `serve` shuts down: every connection closes.
    pub(crate) closing: watch::Sender<bool>,
}

impl<S: StateView + Default> Hub<S> {
    pub fn new(config: HubConfig) -> Arc<Self> {
        Self::with_state(config, S::default())
    }
}

impl<S: StateView> Hub<S> {
    pub fn with_state(config: HubConfig, state: S) -> Arc<Self> {
        let allowed = config
            .allowed_clients
            .as_ref()
            .map(|l| Arc::new(l.iter().cloned().collect()));
        Arc::new(Hub {
            config,
            allowed,
            state: RwLock::new(state),
            ready: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connected: AtomicUsize::new(0),
            messages_sent: AtomicU64::new(0),
            queue_drops: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            closing: watch::Sender::new(false),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The allow-list of client names, for a new session.
    pub(crate) fn allowed_clients(&self) -> Option<Arc<HashSet<IvrName>>> {
        self.allowed.clone()
    }

    /// Changes the state (e.g. folds new records). Publish the resulting changes afterwards.
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        // A panic elsewhere while holding the lock must not take the server down with it.
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.read_state())
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, S> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Until ready, logins are answered `InitInProgress`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sends each change to the logged-in clients of its IVR, and only to them.
    pub fn publish(&self, changes: &[Change]) {
        let capacity = self.config.queue_capacity.max(1);
        let mut clients = self.lock_clients();
        // Each change encoded once and grouped by IVR, in order: a client is logged in to one
        // IVR, so it gets its changes in the order given, all in one write.
        let mut groups: Vec<(&IvrName, Vec<Vec<u8>>)> = Vec::new();
        let mut group_of: HashMap<&IvrName, usize> = HashMap::new();
        for change in changes {
            match clients.get(&change.ivr) {
                Some(list) if !list.is_empty() => {}
                _ => continue,
            }
            let element = xml::encode_monitor_info(None, &change.info);
            let i = *group_of.entry(&change.ivr).or_insert_with(|| {
                groups.push((&change.ivr, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(element);
        }
        let mut sent = 0u64;
        for (ivr, elements) in &groups {
            let Some(list) = clients.get_mut(*ivr) else {
                continue;
            };
            let done = push_to(list, ivr, elements, capacity, &self.queue_drops);
            sent += done.sent;
            if !done.dropped.is_empty() {
                list.retain(|c| !done.dropped.contains(&c.id));
            }
        }
        self.messages_sent.fetch_add(sent, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> HubMetrics {
        let mut logged_in: Vec<(IvrName, usize)> = self
            .lock_clients()
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(ivr, l)| (ivr.clone(), l.len()))
            .collect();
        logged_in.sort();
        HubMetrics {
            connected: self.connected.load(Ordering::Relaxed),
            logged_in,
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            queue_drops: self.queue_drops.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// A new connection; `direct`: its socket's write side, when `publish` may write to it.
    pub(crate) fn new_client(
        &self,
        addr: String,
        direct: Option<Arc<OwnedWriteHalf>>,
    ) -> Arc<ClientEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(ClientEntry {
            id,
            addr,
            outbox: Outbox::new(direct),
        })
    }

    /// Moves a client from the IVR it was registered under to `now` (either may be none).
    pub(crate) fn reregister(
        &self,
        client: &Arc<ClientEntry>,
        before: Option<&IvrName>,
        now: Option<&IvrName>,
    ) {
        if before == now {
            return;
        }
        let mut clients = self.lock_clients();
        if let Some(b) = before {
            if let Some(list) = clients.get_mut(b) {
                list.retain(|c| c.id != client.id);
                if list.is_empty() {
                    clients.remove(b);
                }
            }
        }
        if let Some(n) = now {
            clients.entry(n.clone()).or_default().push(client.clone());
        }
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<IvrName, Vec<Arc<ClientEntry>>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pushes `elements` to each of `clients`, on this thread.
fn push_to(
    clients: &[Arc<ClientEntry>],
    ivr: &IvrName,
    elements: &[Vec<u8>],
    capacity: usize,
    queue_drops: &AtomicU64,
) -> FanOut {
    let mut scratch = Scratch::default();
    let mut done = FanOut::default();
    for c in clients {
        match c.outbox.push(ivr, elements, capacity, &mut scratch) {
            Pushed::Written | Pushed::Queued => done.sent += elements.len() as u64,
            // Re-logged in elsewhere: its connection moves it.
            Pushed::Stale => {}
            Pushed::Killed => {
                warn!(client = %c.addr, ivr = %ivr, "outbound queue full; disconnecting the client");
                queue_drops.fetch_add(1, Ordering::Relaxed);
                done.dropped.push(c.id);
            }
            Pushed::Ended => done.dropped.push(c.id),
        }
    }
    done
}
