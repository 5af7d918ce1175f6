//! The stream of state changes behind `GET /api/v1/events` (Server-Sent Events).
//!
//! The appender publishes here after a commit is durable and published to GLI clients, so an
//! SSE reader never hears of an event before it is stored. Publishing never waits for a reader:
//! events go into a ring of the most recent ones (for `Last-Event-ID` resumption) and a tokio
//! broadcast channel; a reader that falls more than the channel's capacity behind gets `Lagged`
//! and is dropped (its EventSource reconnects with the last id it saw, and resumes from the ring
//! without a gap). Memory is bounded by the ring and the channel, whatever the readers do.

use ivrstate_model::Seq;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How many changes one SSE reader may have waiting before it is dropped.
pub const PER_READER: usize = 4096;

/// One state change: the record's seq (the SSE id) and its JSON (a `status --json` object with
/// only the entities the record changed).
#[derive(Debug)]
pub struct ChangeEvent {
    pub seq: Seq,
    pub json: String,
}

/// Where a new reader starts.
pub struct Subscription {
    /// Events after the reader's last id, from the ring.
    pub backlog: VecDeque<Arc<ChangeEvent>>,
    /// True when the reader's last id is older than the ring: some changes are gone, and the
    /// reader must reload the state (`event: reset`).
    pub gap: bool,
    /// Events published from now on.
    pub live: broadcast::Receiver<Arc<ChangeEvent>>,
    /// The seq the reader has seen up to (live events at or before it are skipped).
    pub after: Seq,
}

pub struct EventHub {
    ring: Mutex<VecDeque<Arc<ChangeEvent>>>,
    ring_capacity: usize,
    live: broadcast::Sender<Arc<ChangeEvent>>,
    /// The last seq published (so that a reader without an id starts at "now").
    last_seq: AtomicU64,
    /// Readers dropped for falling behind.
    pub dropped: AtomicU64,
}

impl EventHub {
    /// `ring`: events kept for resumption; `per_reader`: how far a reader may fall behind.
    pub fn new(ring: usize, per_reader: usize) -> Arc<EventHub> {
        let (live, _) = broadcast::channel(per_reader.max(1));
        Arc::new(EventHub {
            ring: Mutex::new(VecDeque::with_capacity(ring.min(1 << 16))),
            ring_capacity: ring.max(1),
            live,
            last_seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Publishes `events` (in seq order). Never blocks on readers.
    pub fn publish(&self, events: Vec<ChangeEvent>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let event = Arc::new(event);
            self.last_seq.store(event.seq, Relaxed);
            if ring.len() == self.ring_capacity {
                ring.pop_front();
            }
            ring.push_back(event.clone());
            // No receivers is not an error worth reporting.
            let _ = self.live.send(event);
        }
    }

    /// The seq of the newest published change (0 before any).
    pub fn last_seq(&self) -> Seq {
        self.last_seq.load(Relaxed)
    }

    /// A reader that has seen everything up to `after` (None: up to now). Under the ring's lock,
    /// so that no event falls between the backlog and the live receiver.
    pub fn subscribe(&self, after: Option<Seq>) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.subscribe();
        let last = self.last_seq.load(Relaxed);
        let after = after.unwrap_or(last).min(last);
        let backlog: VecDeque<_> = ring.iter().filter(|e| e.seq > after).cloned().collect();
        // Seqs of changes are not contiguous (not every record changes state), so a gap is
        // known only when the ring has already dropped events newer than `after`.
        let oldest_kept = ring.front().map_or(last + 1, |e| e.seq);
        let dropped_any = ring.len() == self.ring_capacity;
        let gap = dropped_any && after + 1 < oldest_kept;
        Subscription {
            backlog,
            gap,
            live,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: Seq) -> ChangeEvent {
        ChangeEvent {
            seq,
            json: format!("{{\"seq\":{seq}}}"),
        }
    }

    #[test]
    fn a_reader_resumes_after_its_last_id_without_a_gap_or_a_repeat() {
        let hub = EventHub::new(100, 100);
        hub.publish((1..=10).map(ev).collect());
        let mut sub = hub.subscribe(Some(4));
        hub.publish((11..=12).map(ev).collect());
        let mut seen: Vec<Seq> = sub.backlog.iter().map(|e| e.seq).collect();
        while let Ok(e) = sub.live.try_recv() {
            if e.seq > sub.after {
                seen.push(e.seq);
            }
        }
        assert_eq!(seen, (5..=12).collect::<Vec<_>>());
        assert!(!sub.gap);
    }

    #[test]
    fn an_id_older_than_the_ring_is_a_gap_and_a_new_reader_starts_now() {
        let hub = EventHub::new(5, 100);
        hub.publish((1..=20).map(ev).collect());
        assert!(hub.subscribe(Some(3)).gap);
        assert!(!hub.subscribe(Some(15)).gap);
        let now = hub.subscribe(None);
        assert!(now.backlog.is_empty() && now.after == 20 && !now.gap);
    }

    #[test]
    fn a_reader_that_falls_behind_lags_and_publishing_never_waits() {
        let hub = EventHub::new(10, 4);
        let mut slow = hub.subscribe(None);
        hub.publish((1..=1000).map(ev).collect());
        assert!(matches!(
            slow.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
